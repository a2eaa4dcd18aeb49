"""``python -m worldgen.raster.native [--force]``: build (or find) the native tile kernels in
the cache directory, check that they load, and print the library's path (tools/setup.sh runs it
at install time). Exit status 1, with the reason, when they cannot be had here."""

from __future__ import annotations

import argparse
import ctypes
import sys

from . import BuildError, _bind, build


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--force", action="store_true", help="rebuild even if cached")
    a = ap.parse_args(argv)
    try:
        path = build(force=a.force)
        _bind(ctypes.CDLL(str(path)))
    except (BuildError, OSError, AttributeError) as e:
        print(f"native tile kernels unavailable: {e}", file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
