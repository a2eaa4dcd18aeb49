"""``worldgen`` command line: build | info | render | export | view.

Library code raises typed exceptions (worldgen.errors); only this module turns them into a
one-line message on stderr and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import signal
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


def _names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise argparse.ArgumentTypeError(f"expected NAME[,NAME...], got {text!r}")
    return names


def _int_at_least(lo: int, what: str):
    """An argparse type: a whole number >= ``lo`` (``what`` names that range in the error)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
        if v < lo:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return v

    return parse


_count = _int_at_least(1, "a positive whole number")
_whole = _int_at_least(0, "0 or more")


def _positive(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v > 0 and _finite(v)):
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}")
    return v


def _add_build_options(b: argparse.ArgumentParser) -> None:
    """The options that shape a build (``build`` and ``batch`` share them)."""
    b.add_argument("--preset", default="default", help="fast | default | quality | FILE.yaml")
    b.add_argument(
        "--depth", default=None, help="depth backend: auto | popup | file | depth-anything-v2 | "
        "depth-pro (see `worldgen models`)",
    )  # fmt: skip
    b.add_argument("--depth-map", help="z-depth map: .npy metres or 16-bit PNG millimetres")
    b.add_argument("--depth-model", help="learned depth model: hub id or local folder")
    b.add_argument("--inpaint", default=None, help="fill backend: auto | classical | diffusion")
    b.add_argument("--inpaint-model", help="diffusers inpainting model: hub id or local folder")
    b.add_argument("--prompt", help="text prompt for the diffusion fill (default: none)")
    b.add_argument("--negative-prompt", help="negative prompt for the diffusion fill")
    b.add_argument("--steps", type=_count, help="denoising steps of the diffusion fill (30)")
    b.add_argument("--guidance", type=_positive, help="guidance scale of the diffusion fill (7.5)")
    b.add_argument(
        "--device", choices=("auto", "cpu", "cuda", "mps"), help="device for learned models"
    )
    b.add_argument("--focal-px", type=_positive, help="focal length in pixels of the original")
    b.add_argument("--principal", type=_principal, help="CX,CY in pixels of the original image")
    b.add_argument("--camera-height", type=_positive, help="camera height in metres (1.6)")
    b.add_argument("--seed", type=int, help="random seed (default 0)")
    b.add_argument(
        "--max-splats", type=_count, help="at most N splats: coarser lifting, then the N most "
        "important kept (as export --max-splats)",
    )  # fmt: skip
    b.add_argument(
        "--max-memory", help="refuse if the estimated peak memory exceeds this (e.g. 8G; "
        "default: refuse only far beyond the memory available)",
    )  # fmt: skip
    b.add_argument("--no-cache", action="store_true", help="ignore and don't write the cache")


def _nonnegative(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not (v >= 0 and _finite(v)):
        raise argparse.ArgumentTypeError(f"expected 0 or a positive number, got {text!r}")
    return v


_UNITS = {"": 1, "b": 1, "k": 1e3, "kb": 1e3, "m": 1e6, "mb": 1e6, "g": 1e9, "gb": 1e9,
          "kib": 2**10, "mib": 2**20, "gib": 2**30, "tib": 2**40}  # fmt: skip


def _bytes(text: str) -> int:
    m = re.fullmatch(r"\s*([\d.]+)\s*([a-zA-Z]*)\s*", text)
    unit = m.group(2).lower() if m else ""
    if not m or unit not in _UNITS or not _finite(float(m.group(1) or "nan")):
        raise argparse.ArgumentTypeError(f"expected a size like 2GiB or 1500MB, got {text!r}")
    v = int(float(m.group(1)) * _UNITS[unit])
    if v <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive size, got {text!r}")
    return v


def make_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="worldgen", description="Turn one photo into an explorable 3D world.")
    p.add_argument("--version", action="store_true", help="print the version and exit")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    b = sub.add_parser("build", help="build a world bundle from a photo")
    b.add_argument("image", help="photo (JPEG, PNG, WebP, TIFF)")
    b.add_argument("-o", "--output", help="output world folder (default: ./<image stem>.world)")
    _add_build_options(b)
    b.add_argument("--force", action="store_true", help="replace an existing world")
    b.add_argument("--quiet", action="store_true", help="no progress output")
    b.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    ba = sub.add_parser(
        "batch",
        help="build one world per photo for many photos, on Ray (local, or a cluster)",
        description="Photos, folders (recursive) or CSV lists (a 'path' column, optional "
        "focal_px, depth_map, prompt, seed) -> OUTDIR/<relative path>.world. Complete worlds "
        "are skipped, so re-running finishes what is missing; OUTDIR/batch.json records every "
        "item. Needs the [batch] extra (Ray).",
    )
    ba.add_argument("inputs", nargs="+", metavar="INPUT", help="photo, folder or list.csv")
    ba.add_argument("-o", "--output", required=True, metavar="OUTDIR", help="output folder")
    _add_build_options(ba)
    ba.add_argument(
        "--address",
        default="local",
        help="local (a fresh embedded Ray instance, default) | auto | HOST:PORT | "
        "ray://HOST:PORT (a cluster: inputs and OUTDIR on storage every node sees)",
    )
    ba.add_argument("--cpus-per-task", type=_positive, default=1.0, help="CPUs per item (1)")
    ba.add_argument("--gpus-per-task", type=_nonnegative, default=0.0, help="GPUs per item (0)")
    ba.add_argument(
        "--memory-per-task",
        type=_bytes,
        help="memory per item, e.g. 3GiB (default: the preset's measured peak)",
    )
    ba.add_argument("--max-in-flight", type=_count, help="items submitted at once")
    ba.add_argument(
        "--retries", type=_whole, default=1, help="re-runs of an item whose worker died (1)"
    )
    ba.add_argument(
        "--actors",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run items in model-holding actors (default: with GPUs or a learned backend)",
    )
    ba.add_argument("--force", action="store_true", help="rebuild stale worlds")
    ba.add_argument("--quiet", action="store_true", help="no progress output")
    ba.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    i = sub.add_parser("info", help="print a world's manifest")
    i.add_argument("world")
    i.add_argument("--json", action="store_true", help="print the whole world.json")

    mo = sub.add_parser("models", help="list learned models (cached?, licence, size); download")
    mo.add_argument("action", nargs="?", choices=("list", "download"), default="list")
    mo.add_argument("id", nargs="?", help="model id to download (for an offline machine)")
    mo.add_argument("--json", action="store_true", help="print the table as JSON")

    r = sub.add_parser("render", help="render a world from a pose or a path (headless)")
    r.add_argument("world")
    r.add_argument(
        "-o", "--output", required=True, help="output PNG; with --path a folder of PNGs or .mp4"
    )
    r.add_argument(
        "--pose",
        type=_pose,
        help="TX,TY,TZ[,YAW,PITCH,ROLL]: metres in the source camera's axes (x right, "
        "y down, z forward), degrees; yaw>0 turns right, pitch>0 looks up",
    )
    r.add_argument("--size", type=_size, help="WIDTHxHEIGHT (default: the source's)")
    r.add_argument("--focal-px", type=_positive, help="focal length in pixels of the render")
    r.add_argument("--principal", type=_principal, help="CX,CY in pixels of the render")
    r.add_argument("--fov", type=_positive, help="horizontal field of view in degrees")
    r.add_argument(
        "--backend",
        choices=("auto", "gl", "cpu"),
        default="auto",
        help="gl (headless EGL) or cpu (the rasterizer); auto: gl where EGL works",
    )
    r.add_argument(
        "--path",
        help="camera path: a JSON list of poses [TX,TY,TZ,YAW,PITCH,ROLL] (the --pose "
        "convention, or an object with 'poses' and 'fps'), or 'default' (walk in from the "
        "spawn point and look around)",
    )
    r.add_argument(
        "--layers",
        type=_names,
        help="NAME[,NAME...]: only the splats of these layers, each a layer name "
        "(sky-dome, foreground-1, ...: `worldgen info`) or a kind (sky, background, occluded, "
        "foreground, surroundings, scene: all its layers)",
    )
    r.add_argument("--fps", type=_positive, help="frames per second of an .mp4 (default 30)")
    r.add_argument(
        "--stereo", choices=("sbs",), help="sbs: left and right eye side by side (64 mm IPD)"
    )
    r.add_argument(
        "--pano",
        choices=("stereo",),
        help="stereo: 360 degree omni-directional stereo panorama from the spawn point, "
        "top-bottom equirectangular (left eye on top); --size WxW (default 2048x2048)",
    )
    r.add_argument("--force", action="store_true", help="replace an existing output file")
    r.add_argument("--quiet", action="store_true")
    r.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    v = sub.add_parser(
        "view",
        help="walk through a world in a window (first person)",
        description="Mouse looks, WASD moves, Shift runs, Space jumps, F toggles fly (Q/Ctrl "
        "down, E/Space up), R resets, C shows the collision mesh, Esc frees the cursor and "
        "quits on a second press.",
    )
    v.add_argument("world")
    v.add_argument("--fov", type=_positive, help="horizontal field of view, degrees (the photo's)")
    v.add_argument("--size", type=_size, default=(1280, 720), help="window WIDTHxHEIGHT")
    v.add_argument(
        "--vsync",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="wait for the display's refresh",
    )
    v.add_argument("--fly", action="store_true", help="start in fly mode (F toggles)")
    v.add_argument("--stereo", choices=("sbs",), help="side-by-side stereo")
    v.add_argument("--layers", type=_names, help="NAME[,NAME...]: only these layers or kinds")
    v.add_argument("--speed", type=_positive, help="walking speed in m/s (default 1.4)")
    v.add_argument("--frames", type=_count, help="run N frames, then quit")
    v.add_argument("--screenshot", help="save the last frame as PNG")
    v.add_argument("--collision", action="store_true", help="show the collision wireframe (C)")
    v.add_argument("--script", help="scripted input, JSON (a testing aid; see renderer.viewer)")
    v.add_argument("--json", action="store_true", help="print a JSON summary on exit")

    from exporters.registry import TARGETS

    e = sub.add_parser("export", help="export a world for game engines and splat viewers")
    e.add_argument("world")
    e.add_argument("-o", "--output", required=True, help="output file or folder")
    e.add_argument(
        "--to",
        help="format: ply | splat | spz | gltf-splats | ... (default: from OUT's extension)",
    )
    e.add_argument("--sh-degree", type=int, help="SH degree 0-3 (default: the target's)")
    e.add_argument("--max-splats", type=int, help="keep the N most important splats")
    e.add_argument("--target", choices=sorted(TARGETS), help="budget preset (default desktop)")
    e.add_argument("--spz-version", type=int, choices=(2, 3), help="SPZ version (default 2)")
    e.add_argument("--force", action="store_true", help="replace an existing output")
    e.add_argument("--quiet", action="store_true")
    e.add_argument("--json", action="store_true", help="print a JSON summary on stdout")

    sv = sub.add_parser(
        "serve",
        help="serve a web export (or a world, exported first) read-only on 127.0.0.1",
        description="Serves SITE (a folder with index.html from `export --to web`) or WORLD "
        "(exported to a temporary site) until Ctrl-C. Only files inside the folder are served.",
    )
    sv.add_argument("target", metavar="WORLD|SITE")
    sv.add_argument("--port", type=int, default=8000, help="TCP port (default 8000; 0: any free)")
    sv.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default 127.0.0.1; 0.0.0.0: LAN)"
    )
    sv.add_argument(
        "--https", action="store_true", help="TLS, self-signed certificate (WebXR on a headset)"
    )
    sv.add_argument("--quiet", action="store_true", help="no request log")
    sv.add_argument("--json", action="store_true", help="print the URLs as JSON on stdout")
    return p


def _build_config(a):
    """The BuildConfig of a build's options (``_add_build_options``)."""
    from .config import load_preset

    cfg = load_preset(a.preset)
    over: dict = {}
    if a.depth is not None:
        over.setdefault("depth", {})["backend"] = a.depth
    if a.depth_map is not None:
        over.setdefault("depth", {})["depth_map"] = str(a.depth_map)
    if a.depth_model is not None:
        over.setdefault("depth", {})["model"] = a.depth_model
    if a.device is not None:
        over.setdefault("depth", {})["device"] = a.device
        over.setdefault("fill", {})["device"] = a.device
    for opt, key in (("inpaint", "backend"), ("inpaint_model", "model"), ("prompt", "prompt"),
                     ("negative_prompt", "negative_prompt"), ("steps", "steps"),
                     ("guidance", "guidance")):  # fmt: skip
        if getattr(a, opt) is not None:
            over.setdefault("fill", {})[key] = getattr(a, opt)
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
    return cfg


def _cmd_build(a) -> int:
    from .pipeline import STAGES, build
    from .progress import Reporter, RichReporter

    cfg = _build_config(a)
    quiet = a.quiet or a.json
    rep = Reporter() if quiet else RichReporter(total=len(STAGES), title=f"building {a.image}")
    from .limits import parse_bytes

    max_memory = parse_bytes(a.max_memory) if a.max_memory else None
    try:
        res = build(
            a.image, a.output, cfg, force=a.force, use_cache=not a.no_cache, reporter=rep,
            max_splats=a.max_splats, max_memory=max_memory,
        )  # fmt: skip
    finally:
        rep.close()
    if a.json:
        print(json.dumps(res.summary(), indent=2))
    elif not a.quiet:
        total = sum(res.timings.values())
        print(f"wrote {res.path} ({res.splat_count:,} splats) in {total:.1f} s")
    return 0


def _cmd_batch(a) -> int:
    from .batch import BatchOptions, discover, run_batch
    from .batch.report import BatchProgress
    from .errors import BatchFailed

    cfg = _build_config(a)
    items = discover(a.inputs, Path(a.output))
    opts = BatchOptions(
        address=a.address,
        cpus_per_task=a.cpus_per_task,
        gpus_per_task=a.gpus_per_task,
        memory_per_task=a.memory_per_task,
        max_in_flight=a.max_in_flight,
        retries=a.retries,
        force=a.force,
        use_cache=not a.no_cache,
        actors=a.actors,
    )
    bar = None if (a.quiet or a.json) else BatchProgress(len(items), f"batch -> {a.output}")
    try:
        res = run_batch(items, cfg, Path(a.output), opts, on_update=bar and bar.update)
    finally:
        if bar:
            bar.close()
    c = res.counts
    if a.json:
        summary = {"output": str(Path(a.output).absolute() / "batch.json"), "counts": c,
                   "seconds": round(res.seconds, 3), "ray": res.ray,
                   "failed": [r for r in res.records if r["status"] == "failed"]}  # fmt: skip
        print(json.dumps(summary, indent=2))
    elif not a.quiet:
        parts = [f"{c.get(k, 0)} {k}" for k in ("built", "skipped", "stale", "failed") if c.get(k)]
        print(f"{len(items)} items: {', '.join(parts) or 'nothing to do'} in {res.seconds:.1f} s"
              f" ({Path(a.output) / 'batch.json'})")  # fmt: skip
        if c.get("stale"):
            print(f"{c['stale']} stale worlds (other photo or settings) kept: --force rebuilds")
    if res.failed:
        raise BatchFailed(f"{res.failed} of {len(items)} items failed (see batch.json)")
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
        f"fill       {_fill_line(m)}",
        f"models     {_models_line(m['models'])}",
        f"build      preset {m['config'].get('preset')}, seed {m['seed']}, "
        f"{sum(m['timings'].values()):.1f} s",
    ]
    print("\n".join(lines))
    return 0


def _fill_line(m: dict) -> str:
    f = m.get("fill")
    if not f:
        return "classical"
    methods = sorted(
        {str(x.get("depth", {}).get("method", "")).split(" (")[0] for x in f["layers"].values()}
        - {""}
    )
    depth = f"; depth of new content: {', '.join(methods)}" if methods else ""
    return f"{f['backend']} — {f['reason']}{depth}"


def _models_line(models: list[dict]) -> str:
    if not models:
        return "none (no weights)"
    return "; ".join(
        f"{x['role']} {x['id']} (licence: {x.get('licence', 'unknown')})" for x in models
    )


def _cmd_models(a) -> int:
    from . import hf

    if a.action == "download":
        if not a.id:
            from .errors import InputError

            raise InputError("models download needs a model id (see `worldgen models`)")
        path = hf.download(a.id)
        print(f"downloaded {a.id} to {path}")
        return 0
    if a.id:
        from .errors import InputError

        raise InputError("models list takes no model id")
    ml = not hf.missing_ml_modules()
    rows = []
    for km in hf.KNOWN_MODELS:
        cached = ml and hf.is_cached(km.id, km.role)
        rows.append({"role": km.role, "backend": km.backend, "id": km.id, "cached": cached,
                     "licence": km.licence, "commercial_use": km.commercial,
                     "params": km.params, "download": km.download, "note": km.note})  # fmt: skip
    if a.json:
        print(json.dumps({"ml_extra": ml, "cache": str(hf.hub_cache_dir()), "models": rows}))
        return 0
    print("embedded (no weights): depth popup, file; inpaint classical")
    print(f"[ml] extra: {'installed' if ml else 'missing (pip install -e .[ml])'}; "
          f"cache: {hf.hub_cache_dir()}{' (offline)' if hf.offline() else ''}")  # fmt: skip
    for r in rows:
        nc = "" if r["commercial_use"] else " NON-COMMERCIAL"
        print(f"{r['role']:8} {r['backend']:18} {'cached ' if r['cached'] else '       '}"
              f"{r['id']:57} {r['params']:>5} {r['download']:>7}  {r['licence']}{nc}")  # fmt: skip
    return 0


def _fmt3(v) -> str:
    return "(" + ", ".join(f"{x:.2f}" for x in v) + ")"


def _cmd_render(a) -> int:
    import time

    from renderer import offscreen as off

    from .camera import Camera, Intrinsics, Pose
    from .errors import InputError
    from .render import render_intrinsics
    from .world import load_world

    given = {
        "--path": a.path,
        "--stereo": a.stereo,
        "--pose": a.pose,
        "--fov": a.fov,
        "--focal-px": a.focal_px,
        "--principal": a.principal,
    }
    if a.pano:
        bad = [k for k, v in given.items() if v is not None]
        if bad:
            raise InputError(f"--pano renders from the spawn point; drop {', '.join(bad)}")
    if a.fov is not None and a.focal_px is not None:
        raise InputError("give --fov or --focal-px, not both")
    if a.path is not None and a.pose is not None:
        raise InputError("give --pose or --path, not both")
    pano_width, pano_height = a.size or (2048, 2048)
    if a.pano and (pano_width != pano_height or pano_width % 2 or pano_width < 4):
        raise InputError(
            "--pano stereo is two 2:1 equirectangular images stacked: --size must be square "
            f"with an even side (e.g. 2048x2048), got {pano_width}x{pano_height}"
        )
    out = Path(a.output)
    kind = off.output_kind(out, many=a.path is not None)
    off.check_output(out, kind, a.force)
    w = load_world(a.world)
    shown = w.select_layers(a.layers) if a.layers else w  # paths still come from the whole world
    fps = a.fps
    if a.path is None:
        poses = None
    elif a.path == "default":
        poses = off.default_path(w)
    else:
        poses, path_fps = off.read_path(a.path)
        fps = fps or path_fps
    fps = fps or 30.0
    t0 = time.perf_counter()
    empty = None
    with off.FrameSource(shown.splats, a.backend) as src:
        if not (a.quiet or a.json):
            print(f"render backend: {src.backend} ({src.reason})")
        if a.pano:
            frames = [off.render_ods(src, off.spawn_pose(w), pano_width)]
        else:
            intr = render_intrinsics(w, a.size, a.focal_px, a.principal)
            if a.fov is not None:  # of each eye's image with --stereo sbs
                f = Intrinsics.from_hfov(
                    a.fov, intr.width // 2 if a.stereo else intr.width, intr.height
                ).fx
                intr = Intrinsics(f, f, intr.cx, intr.cy, intr.width, intr.height)
            if poses is None and a.stereo is None:  # one image: also report its coverage
                pose = Pose.from_cli(*a.pose) if a.pose else Pose.identity()
                res = src.render(Camera(intr, pose))
                empty = float((res.alpha < 0.5).mean())
                frames = [res.rgb]
            else:
                poses = poses or [Pose.from_cli(*a.pose) if a.pose else Pose.identity()]
                frames = (off.render_view(src, Camera(intr, p), stereo=a.stereo) for p in poses)
        n, (width, height) = off.write_frames(frames, out, kind, fps=fps)
        backend = src.backend
    dt = time.perf_counter() - t0
    if a.json:
        summary = {
            "output": str(out),
            "backend": backend,
            "frames": n,
            "width": width,
            "height": height,
            "seconds": round(dt, 4),
        }
        if empty is not None:
            summary["empty_fraction"] = round(empty, 6)
        print(json.dumps(summary))
    elif not a.quiet:
        what = f"{n} frames, " if kind != "png" else ""
        cover = f", {empty:.1%} empty" if empty is not None else ""
        print(f"wrote {out} ({what}{width}x{height}, {dt:.2f} s{cover})")
    return 0


def _cmd_export(a) -> int:
    import time

    from exporters.registry import (
        ExportOptions,
        available_exporters,
        exporter_for_path,
        get_exporter,
        write_export,
    )

    from .errors import InputError, OutputError
    from .world import load_world

    out = Path(a.output)
    if out.exists() and not a.force:
        raise OutputError(f"{out}: already exists (use --force to replace it)")
    if a.to:
        exporter = get_exporter(a.to)
    else:
        exporter = exporter_for_path(out)
        if exporter is None:
            fits = [x.name for x in available_exporters() if x.kind == "file"]
            fits = [n for n in fits if out.name.endswith(get_exporter(n).extension)]
            why = f"several formats write it ({', '.join(fits)})" if fits else "no format"
            raise InputError(f"{out}: cannot tell the format from the name: {why}; give --to")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: output folder is not writable")
    extra = {} if a.spz_version is None else {"spz_version": a.spz_version}
    options = ExportOptions(
        sh_degree=a.sh_degree, max_splats=a.max_splats, target=a.target, extra=extra
    )
    w = load_world(a.world)
    t0 = time.perf_counter()
    files = write_export(exporter.export(w, options), out, force=a.force)
    dt = time.perf_counter() - t0
    size = sum(f.stat().st_size for f in files)
    count = w.manifest["splats"]["count"]
    sh_degree, budget = options.resolved(w.manifest["splats"]["sh_degree"])
    splats = count if budget is None else min(count, budget)
    per = size / max(splats, 1)
    if a.json:
        summary = {
            "output": str(out),
            "format": exporter.name,
            "files": [str(f) for f in files],
            "bytes": size,
            "splats": splats,
            "bytes_per_splat": round(per, 3),
            "sh_degree": sh_degree,
            "seconds": round(dt, 4),
        }
        if exporter.name == "spz":
            summary["spz_version"] = extra.get("spz_version", 2)
        print(json.dumps(summary, indent=2))
    elif not a.quiet:
        what = f"{len(files)} files, " if exporter.kind == "folder" else ""
        print(
            f"wrote {out} ({exporter.name}, {what}{splats:,} splats, SH {sh_degree}, "
            f"{_fmt_bytes(size)}, {per:.1f} B/splat) in {dt:.2f} s"
        )
    return 0


def _fmt_bytes(n: int) -> str:
    if n < 1000:
        return f"{n} B"
    k = min(int(math.log10(n) // 3), 3)
    return f"{n / 1000**k:.1f} {('KB', 'MB', 'GB')[k - 1]}"


def _cmd_view(a) -> int:
    from renderer.viewer import ViewerOptions, view

    opts = ViewerOptions(
        fov_deg=a.fov,
        size=a.size,
        vsync=a.vsync,
        fly=a.fly,
        stereo=a.stereo,
        frames=a.frames,
        screenshot=Path(a.screenshot) if a.screenshot else None,
        speed=a.speed,
        script=Path(a.script) if a.script else None,
        collision=a.collision,
        layers=tuple(a.layers) if a.layers else None,
    )
    res = view(a.world, opts)
    if a.json:
        print(json.dumps(res.summary()))
    return 0


def _cmd_serve(a) -> int:
    from .serve import ServeOptions, serve

    opts = ServeOptions(host=a.host, port=a.port, https=a.https, quiet=a.quiet)

    def ready(urls: list[str]) -> None:
        if a.json:
            print(json.dumps({"urls": urls}), flush=True)
        else:
            lan = " (LAN: " + ", ".join(urls[1:]) + ")" if len(urls) > 1 else ""
            print(f"serving {a.target} at {urls[0]}{lan}; Ctrl-C stops", flush=True)

    serve(a.target, opts, ready=ready)
    if not (a.quiet or a.json):
        print("stopped")
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

    if not os.environ.get("WORLDGEN_DEBUG"):  # library warnings are not a user's messages
        import warnings

        warnings.simplefilter("ignore")
    handlers = {
        "build": _cmd_build,
        "batch": _cmd_batch,
        "info": _cmd_info,
        "models": _cmd_models,
        "render": _cmd_render,
        "view": _cmd_view,
        "export": _cmd_export,
        "serve": _cmd_serve,
    }
    previous = _raise_on_sigterm()
    try:
        return handlers[args.command](args)
    except WorldgenError as e:
        print(f"worldgen {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:  # SIGINT, or SIGTERM (below): outputs are left as they were
        print(f"worldgen {args.command}: interrupted; outputs left as they were", file=sys.stderr)
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
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _raise_on_sigterm():
    """SIGTERM interrupts like Ctrl-C (KeyboardInterrupt: temp outputs removed, exit 130).
    Returns the previous handler (None off the main thread, where it cannot be set)."""

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    try:
        return signal.signal(signal.SIGTERM, interrupt)
    except ValueError:
        return None


if __name__ == "__main__":
    sys.exit(main())
