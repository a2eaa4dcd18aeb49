"""Fuzz every reader of a world bundle and of our splat formats with mutated valid files.

For each loader: N byte-mutated cases of its valid seed files (tests/fuzz_targets.py: bit
flips, interesting values over the headers, truncation, insertion, deletion, duplication;
SPZ also with its gzip payload mutated and re-compressed). Reports cases, cases the loader
accepted, typed errors (WorldgenError), untyped exceptions (bugs), hangs (> 10 s), the slowest
case and the process's peak RSS after the loader's cases.

    .venv/bin/python benchmarks/fuzz.py [--cases 5000] [--seed 0] \
        [--json benchmarks/results/fuzz.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cases", type=int, default=5000, help="mutated inputs per loader")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, help="write the figures here")
    a = ap.parse_args()

    from tests.fuzz_targets import run, targets_and_seeds, tiny_world

    tmp = Path(tempfile.mkdtemp(prefix="worldgen-fuzz-bench-"))
    try:
        world = tiny_world(tmp)
        targets = targets_and_seeds(world, tmp)
        rows = []
        print(f"{'loader':26} {'cases':>6} {'accepted':>8} {'typed':>6} {'untyped':>7} "
              f"{'hangs':>5} {'max s':>7} {'RSS MB':>7} {'wall s':>7}")  # fmt: skip
        for k, (name, (fn, seeds)) in enumerate(targets.items()):
            t0 = time.perf_counter()
            t = run(fn, seeds, a.cases, seed=a.seed + k, timeout_s=10.0)
            wall = time.perf_counter() - t0
            rows.append({"loader": name, "cases": t.cases, "accepted": t.accepted,
                         "typed_errors": t.typed, "untyped": len(t.untyped), "hangs": t.hangs,
                         "max_seconds": round(t.max_seconds, 4),
                         "max_rss_mb": round(t.max_rss_mb, 1), "wall_seconds": round(wall, 1),
                         "untyped_examples": sorted(set(t.untyped))[:5]})  # fmt: skip
            print(f"{name:26} {t.cases:6d} {t.accepted:8d} {t.typed:6d} {len(t.untyped):7d} "
                  f"{t.hangs:5d} {t.max_seconds:7.3f} {t.max_rss_mb:7.0f} {wall:7.1f}")  # fmt: skip
            for u in sorted(set(t.untyped))[:3]:
                print(f"    untyped: {u}")
        cmd = f".venv/bin/python benchmarks/fuzz.py --cases {a.cases} --seed {a.seed}"
        print(f"\nreproduce: {cmd}")
        if a.json:
            a.json.parent.mkdir(parents=True, exist_ok=True)
            a.json.write_text(json.dumps({"command": cmd, "loaders": rows}, indent=2) + "\n")
        return 1 if any(r["untyped"] or r["hangs"] for r in rows) else 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
