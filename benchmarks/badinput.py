"""The bad-input corpus (tests/badinput.py): exit code, wall time and peak RSS per case.

Every case runs the real CLI in a process forked from one that imported worldgen (so the
times exclude the interpreter's start; the peak RSS includes the ~230 MB of the imported
modules). Needs root for the full-disk and read-only cases (small tmpfs mounts); without it
the full-disk case is left out and the read-only folder is a chmod.

    .venv/bin/python benchmarks/badinput.py [--json benchmarks/results/badinput.json]
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path)
    a = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="worldgen-badinput-"))
    try:
        r = subprocess.run([sys.executable, "-m", "tests.badinput", str(root)], cwd=REPO,
                           capture_output=True, text=True, timeout=3600)  # fmt: skip
        if r.returncode:
            print(r.stderr[-3000:], file=sys.stderr)
            return 1
        results = json.loads(r.stdout)
        cases = {c["name"]: c for c in json.loads((root / "cases.json").read_text())}
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"{'case':30} {'expect':6} {'exit':>4} {'seconds':>8} {'peak RSS MB':>11}  message")
    rows = []
    for x in results:
        c = cases[x["name"]]
        msg = (x["stderr"].strip().splitlines() or [""])[-1]
        msg = msg.split("error: ", 1)[-1]
        print(f"{x['name']:30} {c['expect']:6} {x['rc']:4d} {x['seconds']:8.2f} "
              f"{x['max_rss_mb']:11.0f}  {msg[:70]}")  # fmt: skip
        rows.append({k: x[k] for k in ("name", "rc", "seconds", "max_rss_mb", "timed_out")}
                    | {"expect": c["expect"], "message": msg})  # fmt: skip
    n = len(rows)
    worst_t = max(rows, key=lambda r: r["seconds"])
    worst_m = max(rows, key=lambda r: r["max_rss_mb"])
    print(f"\n{n} cases; slowest {worst_t['name']} {worst_t['seconds']:.2f} s; largest peak "
          f"{worst_m['name']} {worst_m['max_rss_mb']:.0f} MB")  # fmt: skip
    print("reproduce: .venv/bin/python benchmarks/badinput.py")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"command": "benchmarks/badinput.py", "cases": rows},
                                     indent=2) + "\n")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
