"""Build time and peak memory of `worldgen build` on the demo photos.

Each run is a fresh process (imports and any JIT included) with --no-cache; for every photo the
median of N runs is reported with the peak resident memory of that process (os.wait4) and
the source-view PSNR/SSIM the build records (``world.json`` ``quality``: the world rendered from
the source camera against the working-resolution photo; ``refine`` has it before refinement).
Budgets (max over photos of the median, with the full surround): ``fast`` <= 20 s,
``default`` <= 45 s (with its refinement); ``quality`` has none. Every stage's time is
printed (the surround is its own stage). Quality targets: ``default`` >= 30 dB,
``quality`` >= 33 dB.

    .venv/bin/python benchmarks/build.py [--runs 5] [--preset default] [PHOTO ...]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BUDGET_S = {"fast": 20.0, "default": 45.0}
PSNR_TARGET_DB = {"default": 30.0, "quality": 33.0}


def run_once(photo: Path, preset: str, out: Path) -> tuple[float, float, dict]:
    cmd = [
        sys.executable,
        "-m",
        "worldgen",
        "build",
        str(photo),
        "-o",
        str(out),
        "--preset",
        preset,
        "--no-cache",
        "--force",
        "--json",
    ]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{photo}: build failed: {stderr.decode().strip()}")
    return wall, usage.ru_maxrss / 1024.0, json.loads(stdout)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="*", type=Path)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--preset", default="default")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    photos = a.photos or sorted((REPO / "demos").glob("*.jpg"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for photo in photos:
            walls, mems, summary = [], [], None
            for i in range(a.runs):
                wall, mem, summary = run_once(photo, a.preset, Path(tmp) / f"w{i}.world")
                walls.append(wall)
                mems.append(mem)
            rows.append(
                {
                    "photo": photo.name,
                    "splats": summary["splats"],
                    "median_s": statistics.median(walls),
                    "min_s": min(walls),
                    "max_s": max(walls),
                    "peak_rss_mib": max(mems),
                    "stages_s": summary["timings"],
                    "psnr_db": summary["quality"]["source_psnr_db"],
                    "ssim": summary["quality"]["source_ssim"],
                    "psnr_before_refine_db": summary["refine"].get("source_psnr_before"),
                    "refine_steps": summary["refine"].get("iters", 0),
                }
            )
            r = rows[-1]
            print(
                f"{photo.name}: median {r['median_s']:.2f} s, peak {r['peak_rss_mib']:.0f} MiB",
                file=sys.stderr,
            )
    cpu = platform.processor() or platform.machine()
    print(
        f"\n`worldgen build --preset {a.preset} --no-cache`, fresh process, "
        f"median of {a.runs} runs, {os.cpu_count()} cores ({cpu}), no GPU\n"
    )
    print(
        "| photo | splats | median s | min–max s | surround s | peak RSS MiB | source PSNR dB "
        "(before refine) | SSIM | slowest stages |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for r in rows:
        top = sorted(r["stages_s"].items(), key=lambda kv: -kv[1])[:3]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in top)
        before = r["psnr_before_refine_db"]
        before = f" ({before:.2f})" if before is not None else ""
        print(
            f"| {r['photo']} | {r['splats']:,} | {r['median_s']:.2f} | "
            f"{r['min_s']:.2f}–{r['max_s']:.2f} | {r['stages_s'].get('surround', 0.0):.1f} | "
            f"{r['peak_rss_mib']:.0f} | "
            f"{r['psnr_db']:.2f}{before} | {r['ssim']:.3f} | {stages} |"
        )
    worst = max(rows, key=lambda r: r["median_s"])
    budget = BUDGET_S.get(a.preset)
    verdict = (
        f"budget {budget:.0f} s: {'OK' if worst['median_s'] <= budget else 'OVER'}"
        if (budget)
        else "no budget"
    )
    print(
        f"\nmax over photos of the median: {worst['median_s']:.2f} s ({worst['photo']}); {verdict}"
    )
    low = min(rows, key=lambda r: r["psnr_db"])
    target = PSNR_TARGET_DB.get(a.preset)
    if target is not None:
        ok = "OK" if low["psnr_db"] >= target else "BELOW"
        print(
            f"min source PSNR: {low['psnr_db']:.2f} dB ({low['photo']}); target {target} dB: {ok}"
        )
    print(f"reproduce: .venv/bin/python benchmarks/build.py --runs {a.runs} --preset {a.preset}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
