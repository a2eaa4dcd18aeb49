"""``worldgen`` command line: build | info | render.

Library code raises typed exceptions (worldgen.errors); only this module turns them into a
one-line message on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

EXIT_USAGE = 2
EXIT_INTERNAL = 70
EXIT_INTERRUPTED = 130

# options whose values may start with "-" (negative numbers): `--pose -0.5,0,0`
_NUMERIC_LIST_OPTS = ("--pose", "--principal", "--focal-px", "--camera-height", "--seed")
_NUMBERS = re.compile(r"^-?[\d.]+(e-?\d+)?(,-?[\d.]*(e-?\d+)?)*$", re.IGNORECASE)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, no usage dump
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message} (see --help)\n")


def _join_negative_values(argv: list[str]) -> list[str]:
    out, i = [], 0
    while i < len(argv):
        a = argv[i]
        if a in _NUMERIC_LIST_OPTS and i + 1 < len(argv) and _NUMBERS.match(argv[i + 1]):
            out.append(f"{a}={argv[i + 1]}")
            i += 2
            continue
        out.append(a)
        i += 1
    return out


def _floats(text: str, n_min: int, n_max: int, what: str) -> list[float]:
    try:
        vals = [float(v) for v in text.split(",")]
    except ValueError:
        msg = f"{what} must be comma-separated numbers, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if not (n_min <= len(vals) <= n_max) or not all(map(_finite, vals)):
        want = f"{n_min}" if n_min == n_max else f"{n_min} to {n_max}"
        raise argparse.ArgumentTypeError(f"{what} needs {want} finite numbers, got {text!r}")
    return vals


def _finite(v: float) -> bool:
    return v == v and abs(v) != float("inf")


def _pose(text: str):
    return _floats(text, 3, 6, "--pose TX,TY,TZ[,YAW,PITCH,ROLL]")


def _principal(text: str):
    return tuple(_floats(text, 2, 2, "--principal CX,CY"))


def _size(text: str):
    m = re.fullmatch(r"(\d+)[xX](\d+)", text.strip())
    if not m:
        raise argparse.ArgumentTypeError(f"--size must be WIDTHxHEIGHT, got {text!r}")
    return int(m.group(1)), int(m.group(2))


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and _finite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="worldgen", description="Turn one photo into an explorable 3D world.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("build", help="build a world bundle from a photo")
    b.add_argument("image", help="photo (JPEG, PNG, WebP, TIFF)")
    b.add_argument("-o", "--output", help="output world folder (default: ./<image stem>.world)")
    b.add_argument("--preset", default="default", help="fast | default | quality | FILE.yaml")
    b.add_argument("--depth", default=None, help="depth backend: auto | popup | file")
    b.add_argument("--depth-map", help="z-depth map: .npy metres or 16-bit PNG millimetres")
    b.add_argument("--focal-px", type=_positive, help="focal length in pixels of the original")
    b.add_argument("--principal", type=_principal, help="CX,CY in pixels of the original image")
    b.add_argument("--camera-height", type=_positive, help="camera height in metres (1.6)")
    b.add_argument("--seed", type=int, help="random seed (default 0)")
    b.add_argument("--no-cache", action="store_true", help="ignore and don't write the cache")
    b.add_argument("--force", action="store_true", help="replace an existing world")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    i = sub.add_parser("info", help="print a world's manifest")
    i.add_argument("world")
    i.add_argument("--json", action="store_true", help="print the whole world.json")

    r = sub.add_parser("render", help="render a world from a pose (headless)")
    r.add_argument("world")
    r.add_argument("-o", "--output", required=True, help="output PNG")
    r.add_argument(
        "--pose",
        type=_pose,
        help="TX,TY,TZ[,YAW,PITCH,ROLL]: metres in the source camera's axes (x right, "
        "y down, z forward), degrees; yaw>0 turns right, pitch>0 looks up",
    )
    r.add_argument("--size", type=_size, help="WIDTHxHEIGHT (default: the source's)")
    r.add_argument("--focal-px", type=_positive, help="focal length in pixels of the render")
    r.add_argument("--principal", type=_principal, help="CX,CY in pixels of the render")
    r.add_argument("--force", action="store_true", help="replace an existing output file")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")
    return p


def _cmd_build(a) -> int:
    from .config import load_preset
    from .pipeline import STAGES, build
    from .progress import Reporter, RichReporter

    cfg = load_preset(a.preset)
    over: dict = {}
    if a.depth is not None:
        over.setdefault("depth", {})["backend"] = a.depth
    if a.depth_map is not None:
        over.setdefault("depth", {})["depth_map"] = str(a.depth_map)
    if a.camera_height is not None:
        over.setdefault("depth", {})["camera_height"] = a.camera_height
    if a.focal_px is not None:
        over.setdefault("camera", {})["focal_px"] = a.focal_px
    if a.principal is not None:
        over.setdefault("camera", {})["principal"] = list(a.principal)
    if a.seed is not None:
        over["seed"] = a.seed
    if over:
        cfg = cfg.replace(**over)
    quiet = a.quiet or a.json
    rep = Reporter() if quiet else RichReporter(total=len(STAGES), title=f"building {a.image}")
    try:
        res = build(a.image, a.output, cfg, force=a.force, use_cache=not a.no_cache, reporter=rep)
    finally:
        rep.close()
    if a.json:
        print(json.dumps(res.summary(), indent=2))
    elif not a.quiet:
        total = sum(res.timings.values())
        print(f"wrote {res.path} ({res.splat_count:,} splats) in {total:.1f} s")
    return 0


def _cmd_info(a) -> int:
    from .world import load_world

    w = load_world(a.world)
    m = w.manifest
    if a.json:
        print(json.dumps(m, indent=2))
        return 0
    intr = m["camera"]["intrinsics"]
    g = m["ground"]
    lines = [
        f"world      {w.path}",
        f"source     {m['source']['path']} ({m['source']['width']}x{m['source']['height']}, "
        f"sha256 {m['source']['sha256'][:12]}…)",
        f"camera     {intr['width']}x{intr['height']}, f={intr['fx']:.1f} px "
        f"({m['camera']['intrinsics_source']})",
        f"depth      {m['depth']['backend']} ({m['depth']['kind']}) — {m['depth']['reason']}",
        f"ground     camera {g['camera_height']:.2f} m above ground, scale from "
        f"{g['scale_source']}",
        f"splats     {m['splats']['count']:,} (SH degree {m['splats']['sh_degree']})",
        "layers     "
        + ", ".join(f"{x['id']}:{x['name']} ({x['splat_count']:,})" for x in m["layers"]),
        f"bounds     {_fmt3(m['bounds']['min'])} .. {_fmt3(m['bounds']['max'])} m",
        f"spawn      {_fmt3(m['spawn']['position'])}, yaw {m['spawn']['yaw_deg']:.0f}°",
        f"models     {', '.join(x.get('id', '?') for x in m['models']) or 'none (no weights)'}",
        f"build      preset {m['config'].get('preset')}, seed {m['seed']}, "
        f"{sum(m['timings'].values()):.1f} s",
    ]
    print("\n".join(lines))
    return 0


def _fmt3(v) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"


def _cmd_render(a) -> int:
    import time

    from .camera import Pose
    from .errors import OutputError
    from .image import save_png
    from .render import render_intrinsics, render_world
    from .world import load_world

    out = Path(a.output)
    if out.suffix.lower() != ".png":
        raise OutputError(f"{out}: render output must be a .png file")
    if out.exists() and not a.force:
        raise OutputError(f"{out}: already exists (use --force to replace it)")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: output folder is not writable")
    w = load_world(a.world)
    intr = render_intrinsics(w, a.size, a.focal_px, a.principal)
    pose = Pose.from_cli(*a.pose) if a.pose else Pose.identity()
    t0 = time.perf_counter()
    res = render_world(w, pose, intr)
    dt = time.perf_counter() - t0
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        save_png(res.rgb.numpy(), tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    empty = float((res.alpha < 0.5).float().mean())
    if a.json:
        print(
            json.dumps(
                {
                    "output": str(out),
                    "width": intr.width,
                    "height": intr.height,
                    "seconds": round(dt, 4),
                    "empty_fraction": round(empty, 6),
                }
            )
        )
    elif not a.quiet:
        print(f"wrote {out} ({intr.width}x{intr.height}, {dt:.2f} s, {empty:.1%} empty)")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = make_parser()
    args = parser.parse_args(_join_negative_values(argv))
    if args.version:
        from . import __version__

        print(f"worldgen {__version__}")
        return 0
    if not args.command:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    from .errors import WorldgenError

    handlers = {"build": _cmd_build, "info": _cmd_info, "render": _cmd_render}
    try:
        return handlers[args.command](args)
    except WorldgenError as e:
        print(f"worldgen {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"worldgen {args.command}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except MemoryError:
        print(f"worldgen {args.command}: error: out of memory (try --preset fast)", file=sys.stderr)
        return EXIT_INTERNAL
    except Exception as e:  # never a traceback for users; WORLDGEN_DEBUG=1 shows it
        if os.environ.get("WORLDGEN_DEBUG"):
            raise
        msg = str(e).splitlines()[0] if str(e) else ""
        print(
            f"worldgen {args.command}: internal error: {type(e).__name__}: {msg} "
            "(set WORLDGEN_DEBUG=1 for details)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


if __name__ == "__main__":
    sys.exit(main())
