"""Build time and peak memory of `worldgen build` on the demo photos.

Each run is a fresh process (imports and any JIT included) with --no-cache; for every photo the
median of N runs is reported with the peak resident memory of that process (os.wait4). The
budget of the build-skeleton issue is max over photos of the median <= 30 s (default preset).

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
    print("| photo | splats | median s | min–max s | peak RSS MiB | slowest stages |")
    print("|---|---:|---:|---:|---:|---|")
    for r in rows:
        top = sorted(r["stages_s"].items(), key=lambda kv: -kv[1])[:3]
        stages = ", ".join(f"{k} {v:.1f}" for k, v in top)
        print(
            f"| {r['photo']} | {r['splats']:,} | {r['median_s']:.2f} | "
            f"{r['min_s']:.2f}–{r['max_s']:.2f} | {r['peak_rss_mib']:.0f} | {stages} |"
        )
    worst = max(rows, key=lambda r: r["median_s"])
    print(
        f"\nmax over photos of the median: {worst['median_s']:.2f} s ({worst['photo']}); "
        f"budget 30 s: {'OK' if worst['median_s'] <= 30 else 'OVER'}"
    )
    print(f"reproduce: .venv/bin/python benchmarks/build.py --runs {a.runs} --preset {a.preset}")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
