"""Throughput of `worldgen batch` against a shell loop of `worldgen build`, and Ray's start-up.

Ten inputs: the five demo photos and a copy of each shrunk to 60 % (JPEG, quality 92). Both
runs build all ten with the same preset and ``--no-cache`` into fresh folders:

- loop:  ``for f in INPUTS/*.jpg; do worldgen build "$f" -o loop/<stem>.world --preset P
  --no-cache --quiet; done`` (bash; one process per photo, all cores per build)
- batch: ``worldgen batch INPUTS -o batch --preset P --no-cache --json`` (embedded local Ray,
  one CPU per item, so as many items at once as the machine has cores)

Reported: wall time and worlds/min of each, Ray's start-up (``ray.init`` of the embedded
instance, from batch's own summary, and a bare ``ray.init(address="local")`` + shutdown timed
here), whether batch was within the loop's time plus Ray's start-up (the target), and whether
each batch world is the same world as the loop's (``worldgen.sameworld.same_world`` within
1e-5 relative: the loop's builds use every core's threads, batch items one thread each).

    .venv/bin/python benchmarks/batch.py [--preset fast] [--json benchmarks/results/batch.json]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WORLDGEN = f"{shlex.quote(sys.executable)} -m worldgen"


def make_inputs(folder: Path) -> list[Path]:
    from PIL import Image

    folder.mkdir(parents=True)
    out = []
    for p in sorted((REPO / "demos").glob("*.jpg")):
        dst = folder / p.name
        dst.write_bytes(p.read_bytes())
        im = Image.open(p)
        small = folder / f"{p.stem}_small.jpg"
        im.resize((round(im.width * 0.6), round(im.height * 0.6)), Image.LANCZOS).save(
            small, quality=92
        )
        out += [dst, small]
    return sorted(out)


def ray_start_seconds() -> float:
    code = (
        "import os, time; os.environ['RAY_USAGE_STATS_ENABLED'] = '0'; import ray; "
        "t = time.perf_counter(); ray.init(address='local', include_dashboard=False, "
        "object_store_memory=100_000_000, logging_level='ERROR'); "
        "print(time.perf_counter() - t); ray.shutdown()"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="fast")
    ap.add_argument("--json", type=Path, help="also write the results here")
    a = ap.parse_args()
    from worldgen.sameworld import same_world

    with tempfile.TemporaryDirectory(prefix="wg-batch-bench-") as tmp:
        tmp = Path(tmp)
        inputs = make_inputs(tmp / "inputs")
        env = {**os.environ, "WORLDGEN_CACHE_DIR": str(tmp / "cache")}
        loop_cmd = (
            f'mkdir -p {tmp}/loop; for f in {tmp}/inputs/*.jpg; do {WORLDGEN} build "$f" '
            f'-o {tmp}/loop/$(basename "${{f%.*}}").world --preset {a.preset} --no-cache '
            "--quiet || exit 1; done"
        )
        t0 = time.perf_counter()
        subprocess.run(["bash", "-c", loop_cmd], check=True, env=env)
        loop_s = time.perf_counter() - t0

        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "worldgen", "batch", str(tmp / "inputs"), "-o",
             str(tmp / "batch"), "--preset", a.preset, "--no-cache", "--json"],
            capture_output=True, text=True, env=env,
        )  # fmt: skip
        batch_s = time.perf_counter() - t0
        if r.returncode != 0:
            raise SystemExit(f"batch failed ({r.returncode}): {r.stderr.strip()}")
        summary = json.loads(r.stdout)
        start_s = ray_start_seconds()
        same = bitwise = 0
        for p in inputs:
            b, lp = tmp / "batch" / f"{p.stem}.world", tmp / "loop" / f"{p.stem}.world"
            bitwise += same_world(b, lp) == []
            same += same_world(b, lp, rtol=1e-5) == []
    n = len(inputs)
    ray_in_batch = summary["ray"].get("start_seconds", 0.0)
    res = {
        "preset": a.preset,
        "inputs": n,
        "loop_seconds": round(loop_s, 1),
        "batch_seconds": round(batch_s, 1),
        "loop_worlds_per_min": round(n / loop_s * 60, 2),
        "batch_worlds_per_min": round(n / batch_s * 60, 2),
        "ray_init_in_batch_seconds": ray_in_batch,
        "ray_init_bare_seconds": round(start_s, 2),
        "batch_within_loop_plus_ray_start": batch_s <= loop_s + max(start_s, ray_in_batch),
        "same_world_rtol_1e-5": f"{same}/{n}",
        "same_world_bitwise": f"{bitwise}/{n}",
        "counts": summary["counts"],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python "
        f"{platform.python_version()}",
    }
    print(f"| run | wall (s) | worlds/min |\n|---|---|---|\n"
          f"| shell loop of `worldgen build` | {res['loop_seconds']} | "
          f"{res['loop_worlds_per_min']} |\n"
          f"| `worldgen batch` (embedded Ray) | {res['batch_seconds']} | "
          f"{res['batch_worlds_per_min']} |")  # fmt: skip
    print(f"\nRay start-up: {ray_in_batch} s inside batch, {res['ray_init_bare_seconds']} s bare; "
          f"batch within loop + start-up: {res['batch_within_loop_plus_ray_start']}; same world "
          f"as the loop's: {same}/{n} within 1e-5, {bitwise}/{n} bitwise")  # fmt: skip
    print(f"\nreproduce: .venv/bin/python benchmarks/batch.py --preset {a.preset}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
