"""Soak: many builds and renders in one process must not grow its memory.

20 builds of a small photo back to back (the bad-input corpus's tiny preset, a fresh stage
cache each so every stage runs), then 1000 headless renders of the last world from moving
poses (``renderer.offscreen.FrameSource``: GL where a headless EGL context exists, else the CPU
rasterizer). RSS (``/proc/self/status`` VmRSS) is sampled after each; reported: RSS after the
2nd and the 20th build, after the 100th and the 1000th render, their ratio, and the slope of a
least-squares line over the second half (MB per build / per 100 renders).
Acceptance (issue 15): the 20th build's and the 1000th render's RSS within 5 % of the 2nd's /
100th's.

    .venv/bin/python benchmarks/soak.py [--builds 20] [--renders 1000] [--json FILE]
"""

from __future__ import annotations

import argparse
import gc
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def rss_mb() -> float:
    for line in open("/proc/self/status"):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def slope(ys: list[float]) -> float:
    x = np.arange(len(ys), dtype=np.float64)
    return float(np.polyfit(x, np.asarray(ys), 1)[0]) if len(ys) > 1 else 0.0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--builds", type=int, default=20)
    ap.add_argument("--renders", type=int, default=1000)
    ap.add_argument("--backend", default="auto", choices=("auto", "gl", "cpu"))
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()

    from PIL import Image

    from renderer.offscreen import FrameSource
    from tests.badinput import TINY_PRESET, _photo, _u8
    from worldgen.camera import Camera, Pose
    from worldgen.config import load_preset
    from worldgen.pipeline import build
    from worldgen.progress import Reporter
    from worldgen.render import render_intrinsics
    from worldgen.world import load_world

    tmp = Path(tempfile.mkdtemp(prefix="worldgen-soak-"))
    try:
        Image.fromarray(_u8(_photo(48, 64, seed=7))).save(tmp / "p.png")
        (tmp / "tiny.yaml").write_text(TINY_PRESET)
        cfg = load_preset(str(tmp / "tiny.yaml"))
        from worldgen.cache import StageCache

        build_rss, t0 = [], time.perf_counter()
        for k in range(a.builds):
            cache = StageCache(tmp / f"cache{k}")
            res = build(tmp / "p.png", tmp / "w.world", cfg, force=True, cache=cache,
                        reporter=Reporter())  # fmt: skip
            shutil.rmtree(tmp / f"cache{k}", ignore_errors=True)
            gc.collect()
            build_rss.append(rss_mb())
            print(f"build {k + 1:3d}: {build_rss[-1]:8.1f} MB ({res.splat_count} splats)")
        t_builds = time.perf_counter() - t0
        w = load_world(tmp / "w.world")
        intr = render_intrinsics(w, (160, 120), None, None)
        render_rss, t0 = [], time.perf_counter()
        with FrameSource(w.splats, a.backend) as src:
            backend = src.backend
            for k in range(a.renders):
                t = k / max(a.renders - 1, 1)
                pose = Pose.from_cli(0.3 * np.sin(6 * t), 0.0, 0.5 * t, 40 * np.sin(9 * t), 0, 0)
                src.render(Camera(intr, pose))
                if (k + 1) % 10 == 0:
                    gc.collect()
                    render_rss.append(rss_mb())
        t_renders = time.perf_counter() - t0
        half_b = build_rss[len(build_rss) // 2 :]
        half_r = render_rss[len(render_rss) // 2 :]
        r_100 = render_rss[min(9, len(render_rss) - 1)]
        out = {
            "builds": a.builds,
            "renders": a.renders,
            "render_backend": backend,
            "rss_mb_after_build_2": round(build_rss[min(1, len(build_rss) - 1)], 1),
            "rss_mb_after_last_build": round(build_rss[-1], 1),
            "build_ratio": round(build_rss[-1] / build_rss[min(1, len(build_rss) - 1)], 4),
            "build_slope_mb_per_build_2nd_half": round(slope(half_b), 3),
            "rss_mb_after_render_100": round(r_100, 1),
            "rss_mb_after_last_render": round(render_rss[-1], 1),
            "render_ratio": round(render_rss[-1] / r_100, 4),
            "render_slope_mb_per_100_renders_2nd_half": round(10 * slope(half_r), 3),
            "seconds_builds": round(t_builds, 1),
            "seconds_renders": round(t_renders, 1),
            "command": f".venv/bin/python benchmarks/soak.py --builds {a.builds} "
            f"--renders {a.renders} --backend {a.backend}",
        }
        print(json.dumps(out, indent=2))
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps(out, indent=2) + "\n")
        ok = abs(out["build_ratio"] - 1) <= 0.05 and abs(out["render_ratio"] - 1) <= 0.05
        return 0 if ok else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
