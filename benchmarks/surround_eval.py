"""Surround benchmark: real 360° panoramas as ground truth for the world around the photo.

Defined by the reference metrics ``shared/tools/surround_metrics.py`` (beside the clone:
``<repo>/../shared``; ``--metrics PATH`` to override), which this script runs and imports,
never copies, so that figures compare. For each panorama (``shared/data/panos/*.jpg`` and any
``--pano-dir``):

1. the photo: ``surround_metrics.py crop PANO photo.png`` (768x512, hfov 90, f = 384);
2. ``worldgen build photo.png -o W.world --focal-px 384 --preset P --seed S --force --quiet
   --json`` (with a fresh, empty ``WORLDGEN_CACHE_DIR``: no cache hits, honest timings);
3. ``worldgen render W.world -o DIR/yaw{Y}.png --pose=0,0,0,{Y},0,0 --size 384x256 --focal-px
   192 --principal 191.5,127.5`` for the 8 yaws (plus ``--json``, which only prints the
   summary with the empty share) and ``surround_metrics.py score PANO DIR``;
4. void checks, the same render at pitch +-30 at each yaw and after level walks of 2 m forward
   / back / left / right from the spawn (``--pose=0,0,2,Y,0,0``: +Z forward, +X right, source
   camera axes) at each yaw; void = share of pixels with rendered alpha < 0.5 (``--json``'s
   ``empty_fraction``), max per kind of view (level yaws, pitch, walks);
5. the demo photos (``demos/*.jpg``, no ground truth, no ``--focal-px``): steps 2-4;
6. "no grid" in the sky: ``worldgen render W.world --layers sky --size 1920x1080 --fov 90
   --pose=0,0,0,Y,20,0`` at yaws 0, 90, 180, -90 -> ``grid_peak_ratio`` (acceptance < 3);
7. the seam: in the +-45° views, mean luminance gradient on a 3-px band along the projected
   frame edge of the photo over that of the bands 8-16 px either side (``seam_ratio``;
   acceptance <= 1.5);
8. image sheets in ``docs/images/surround/`` (per panorama the 8 yaws as render | panorama
   pairs, per demo the 8 renders) and the metrics in ``benchmarks/results/surround_eval.json``.

Run serially (one build or render at a time); a full run takes ~3-4 min per world.

    .venv/bin/python benchmarks/surround_eval.py [--preset P] [--seed S] [--only NAME]
        [--no-demos] [--pano-dir DIR] [--out DIR] [--json]
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import math
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/surround_eval.py` from anywhere
    sys.path.insert(0, str(REPO))

from worldgen.camera import Intrinsics, Pose  # noqa: E402

SHARED = REPO.parent / "shared"
METRICS = SHARED / "tools" / "surround_metrics.py"
PANOS = SHARED / "data" / "panos"
YAWS = (0, 45, -45, 90, -90, 135, -135, 180)  # the metric script's order
SHEET_YAWS = (-135, -90, -45, 0, 45, 90, 135, 180)  # left to right around the spawn
PITCHES = (30, -30)
WALKS = {"forward": (0, 0, 2), "back": (0, 0, -2), "left": (-2, 0, 0), "right": (2, 0, 0)}
GRID_YAWS = (0, 90, 180, -90)
GRID_PITCH = 20
OUT_OF_FRAME = tuple(y for y in YAWS if abs(y) >= 90)
#: the photo the metric script crops (768x512, hfov 90) and the views it scores (384x256, f 192)
PHOTO = Intrinsics(384.0, 384.0, 383.5, 255.5, 768, 512)
VIEW = Intrinsics(192.0, 192.0, 191.5, 127.5, 384, 256)
VIEW_ARGS = ("--size", "384x256", "--focal-px", "192", "--principal", "191.5,127.5")
GRID_MAX = 3.0
SEAM_MAX = 1.5
LUMA = np.array([0.299, 0.587, 0.114])
METRIC_KEYS = ("layout", "layout_rows", "layout_gain", "colour", "texture", "sharp")


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# ----------------------------------------------------------------------------- reference metrics


def load_metrics(path: Path = METRICS):
    """The reference metrics module (``surround_metrics.py``), imported from its file."""
    path = Path(path)
    if not path.is_file():
        raise SystemExit(f"{path}: no surround_metrics.py (give --metrics PATH)")
    spec = importlib.util.spec_from_file_location("surround_metrics", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def luminance(rgb: np.ndarray) -> np.ndarray:
    """[H, W, 3] float RGB in [0, 1] -> [H, W] luminance (0.299, 0.587, 0.114)."""
    return np.asarray(rgb, np.float64) @ LUMA


def read_rgb(path: Path) -> np.ndarray:
    """[H, W, 3] float64 in [0, 1]."""
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), np.float64) / 255.0


def covered_png(rgb: np.ndarray) -> np.ndarray:
    """[H, W] bool: not near-black (the metric script's void: RGB sum < 0.03)."""
    return np.asarray(rgb).sum(-1) >= 0.03


# ----------------------------------------------------------------------------- grid peaks


@dataclass(frozen=True)
class GridPeak:
    ratio: float  # max over rings of amplitude / max(ring median, 8-bit floor); nan: no tile
    radius: int  # tile frequency bins of the peak
    period_px: float  # tile / radius
    angle_deg: float  # direction of the frequency: 0 = varies along x (vertical stripes)
    tiles: int  # fully covered tiles averaged


@functools.lru_cache(maxsize=4)
def _rings(tile: int, min_radius: int) -> tuple[np.ndarray, list, list]:
    """Integer radius of every bin of a ``tile`` x ``tile`` FFT, and per radius b in
    (min_radius, tile/2) the flat indices of radius b and of radii b-1..b+1 (its ring)."""
    f = np.fft.fftfreq(tile) * tile
    fy, fx = np.meshgrid(f, f, indexing="ij")
    r = np.rint(np.hypot(fy, fx)).astype(int).ravel()
    radii = range(min_radius + 1, tile // 2)
    own = [np.flatnonzero(r == b) for b in radii]
    ring = [np.flatnonzero(np.abs(r - b) <= 1) for b in radii]
    return np.asarray(list(radii)), own, ring


def grid_peak_ratio(
    rgb: np.ndarray,
    covered: np.ndarray | None = None,
    *,
    tile: int = 256,
    min_radius: int = 4,
) -> GridPeak:
    """How far the luminance spectrum of ``rgb`` [H, W, 3] (or [H, W]) peaks above its radial
    neighbours: a regular grid (a splat lattice showing through) is a few sharp peaks; clouds,
    gradients and noise are smooth along each ring. Acceptance: < 3.

    The amplitude spectrum is a Welch estimate: Hann-windowed ``tile`` x ``tile`` tiles at half
    a tile's step, only tiles fully inside ``covered`` [H, W] (default: not near-black, the
    metric script's void), each minus its mean, power averaged, square root. A single
    periodogram of any noise peaks ~4.5x above its ring median (Rayleigh tails over ~1e6
    bins); the average over tiles does not, a lattice does in every tile. For each radius
    b > ``min_radius`` bins (periods < tile / min_radius px) up to tile / 2 - 1 (full rings),
    the largest amplitude at b over the median of the ring b-1..b+1; the median is floored at
    the amplitude of 8-bit quantisation noise (what a PNG cannot show is no peak: a smooth
    float sky's rings are ~0)."""
    a = np.asarray(rgb, np.float64)
    L = luminance(a) if a.ndim == 3 else a
    if covered is None:
        covered = covered_png(a) if a.ndim == 3 else np.ones(L.shape, bool)
    H, W = L.shape
    w = np.hanning(tile)
    win = np.outer(w, w)
    step = tile // 2
    yy, xx = np.mgrid[0:tile, 0:tile] / tile - 0.5
    plane = np.stack([np.ones_like(xx), xx, yy], -1).reshape(-1, 3)
    power = np.zeros((tile, tile))
    n = 0
    for y in range(0, H - tile + 1, step):
        for x in range(0, W - tile + 1, step):
            if not covered[y : y + tile, x : x + tile].all():
                continue
            t = L[y : y + tile, x : x + tile].ravel()
            t = t - plane @ np.linalg.lstsq(plane, t, rcond=None)[0]  # a gradient is no peak
            power += np.abs(np.fft.fft2(t.reshape(tile, tile) * win)) ** 2
            n += 1
    if n == 0:
        return GridPeak(math.nan, 0, math.nan, math.nan, 0)
    amp = np.sqrt(power / n).ravel()
    floor = math.sqrt(float((LUMA**2).sum()) * (1 / 255) ** 2 / 12 * float((win**2).sum()))
    radii, own, ring = _rings(tile, min_radius)
    best, at = 0.0, (0, 0)
    for b, i_own, i_ring in zip(radii, own, ring, strict=True):
        med = max(float(np.median(amp[i_ring])), floor)
        k = int(i_own[np.argmax(amp[i_own])])
        if amp[k] / med > best:
            best, at = amp[k] / med, (int(b), k)
    b, k = at
    fy, fx = np.fft.fftfreq(tile)[k // tile], np.fft.fftfreq(tile)[k % tile]
    angle = math.degrees(math.atan2(fy, fx)) % 180.0
    return GridPeak(float(best), b, tile / b if b else math.nan, angle, n)


# ----------------------------------------------------------------------------- seam


def frame_edge_segments(
    src: Intrinsics, view: Intrinsics, yaw_deg: float, *, near: float = 1e-3
) -> list[tuple[np.ndarray, np.ndarray]]:
    """The source photo's frame (its outer pixel edges: u = -0.5 and W - 0.5, v = -0.5 and
    H - 0.5) seen from the spawn turned ``yaw_deg`` (pose 0,0,0,yaw,0,0) with ``view``: the
    part of each of the 4 edges in front of the view camera, as 2-D segments (u0, v0), (u1, v1)
    in view pixels (they may reach outside the view)."""
    R = Pose.from_cli(0, 0, 0, yaw_deg, 0, 0).R
    u0, u1, v0, v1 = -0.5, src.width - 0.5, -0.5, src.height - 0.5
    corners = [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    rays = [np.array([(u - src.cx) / src.fx, (v - src.cy) / src.fy, 1.0]) @ R for u, v in corners]
    out = []
    for i in range(4):
        a, b = rays[i], rays[(i + 1) % 4]  # the camera-space points R^T d of two corners
        if a[2] < near and b[2] < near:
            continue
        if a[2] < near or b[2] < near:  # clip the 3-D segment at z = near
            t = (near - a[2]) / (b[2] - a[2])
            c = a + t * (b - a)
            a, b = (c, b) if a[2] < near else (a, c)
        p, q = (
            np.array([view.fx * r[0] / r[2] + view.cx, view.fy * r[1] / r[2] + view.cy])
            for r in (a, b)
        )
        out.append((p, q))
    return out


def distance_to_segments(shape: tuple[int, int], segments) -> np.ndarray:
    """[H, W] distance (px) of every pixel centre to the nearest segment (inf: none)."""
    H, W = shape
    vv, uu = np.mgrid[0:H, 0:W].astype(np.float64)
    d = np.full((H, W), np.inf)
    for p, q in segments:
        e = q - p
        ee = float(e @ e)
        t = np.zeros_like(uu) if ee == 0 else ((uu - p[0]) * e[0] + (vv - p[1]) * e[1]) / ee
        t = np.clip(t, 0.0, 1.0)
        d = np.minimum(d, np.hypot(uu - (p[0] + t * e[0]), vv - (p[1] + t * e[1])))
    return d


def seam_ratio(
    rgb: np.ndarray,
    yaw_deg: float,
    *,
    src: Intrinsics = PHOTO,
    view: Intrinsics = VIEW,
    band: float = 1.5,
    ref: tuple[float, float] = (8.0, 16.0),
) -> float:
    """Mean luminance gradient magnitude (central differences) on the band within ``band`` px
    of the photo's projected frame edge (``frame_edge_segments``) over that of the pixels
    ``ref`` px away on either side. ~1: the seam is invisible; acceptance <= 1.5. nan: the
    frame does not show in this view."""
    L = luminance(rgb)
    assert L.shape == (view.height, view.width), (L.shape, view)
    gy, gx = np.gradient(L)
    g = np.hypot(gx, gy)
    d = distance_to_segments(L.shape, frame_edge_segments(src, view, yaw_deg))
    on, near = d < band, (d >= ref[0]) & (d <= ref[1])
    if not on.any() or not near.any():
        return math.nan
    return float(g[on].mean() / max(float(g[near].mean()), 1e-9))


# ----------------------------------------------------------------------------- worldgen CLI


def run(cmd: list, *, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run ``cmd`` in the repository (``-m worldgen`` imports this checkout's worldgen)."""
    cmd = [str(c) for c in cmd]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-1:] or ["(no message)"]
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(map(str, cmd))}: {tail[0]}")
    return proc


WORLDGEN = [sys.executable, "-m", "worldgen"]


def build(photo: Path, world: Path, preset: str, seed: int, focal_px: float | None) -> dict:
    """``worldgen build`` with an empty stage cache; its --json summary plus ``wall_s``."""
    cache = world.parent / "cache"
    shutil.rmtree(cache, ignore_errors=True)
    env = dict(os.environ, WORLDGEN_CACHE_DIR=str(cache))
    cmd = [*WORLDGEN, "build", photo, "-o", world]
    if focal_px is not None:
        cmd += ["--focal-px", f"{focal_px:g}"]
    cmd += ["--preset", preset, "--seed", str(seed), "--force", "--quiet", "--json"]
    t0 = time.perf_counter()
    proc = run(cmd, env=env)
    wall = time.perf_counter() - t0
    shutil.rmtree(cache, ignore_errors=True)
    return {**json.loads(proc.stdout), "wall_s": round(wall, 3)}


def render(world: Path, out: Path, pose, *extra) -> dict:
    """``worldgen render WORLD -o OUT --pose=... EXTRA --json``: its summary (empty_fraction)."""
    pose_arg = "--pose=" + ",".join(f"{v:g}" for v in pose)
    proc = run([*WORLDGEN, "render", world, "-o", out, pose_arg, *extra, "--json"])
    return json.loads(proc.stdout)


def has_sky(world: Path) -> bool:
    layers = json.loads((world / "world.json").read_text())["layers"]
    return any(x.get("kind") == "sky" for x in layers)


# ----------------------------------------------------------------------------- one world


def eval_world(world: Path, work: Path, *, seam_src: Intrinsics) -> dict:
    """Renders of a built world: the 8 level yaws (``work/yaw{Y}.png``), the void checks, the
    sky's grid check and the seam ratios of the +-45° views."""
    res: dict = {"void": {}, "views": {}}
    void = {"yaw": [], "pitch": [], "walk": []}
    for y in YAWS:
        s = render(world, work / f"yaw{y}.png", (0, 0, 0, y, 0, 0), *VIEW_ARGS)
        res["views"][f"yaw{y}"] = s["empty_fraction"]
        void["yaw"].append(s["empty_fraction"])
    for p in PITCHES:
        for y in YAWS:
            s = render(world, work / f"pitch{p}_yaw{y}.png", (0, 0, 0, y, p, 0), *VIEW_ARGS)
            res["views"][f"pitch{p}_yaw{y}"] = s["empty_fraction"]
            void["pitch"].append(s["empty_fraction"])
    for name, t in WALKS.items():
        for y in YAWS:
            s = render(world, work / f"{name}_yaw{y}.png", (*t, y, 0, 0), *VIEW_ARGS)
            res["views"][f"{name}_yaw{y}"] = s["empty_fraction"]
            void["walk"].append(s["empty_fraction"])
    res["void"] = {k: max(v) for k, v in void.items()}
    log("  void max: " + ", ".join(f"{k} {100 * v:.2f}%" for k, v in res["void"].items()))
    res["seam"] = {
        str(y): seam_ratio(read_rgb(work / f"yaw{y}.png"), y, src=seam_src) for y in (45, -45)
    }
    res["seam_max"] = max(res["seam"].values())
    grid = {}
    if has_sky(world):
        for y in GRID_YAWS:
            out = work / f"grid_sky_yaw{y}.png"
            render(world, out, (0, 0, 0, y, GRID_PITCH, 0), "--layers", "sky",
                   "--size", "1920x1080", "--fov", "90")  # fmt: skip
            grid[str(y)] = asdict(grid_peak_ratio(read_rgb(out)))
    res["grid"] = grid
    ratios = [g["ratio"] for g in grid.values() if math.isfinite(g["ratio"])]
    res["grid_max"] = max(ratios) if ratios else math.nan
    log(f"  seam {res['seam_max']:.2f}, grid {res['grid_max']:.2f}")
    return res


def source_intrinsics(world: Path) -> Intrinsics:
    d = json.loads((world / "world.json").read_text())["camera"]["intrinsics"]
    return Intrinsics(d["fx"], d["fy"], d["cx"], d["cy"], d["width"], d["height"])


def eval_pano(pano: Path, work: Path, metrics_path: Path, preset: str, seed: int) -> dict:
    work.mkdir(parents=True)
    photo = work / "photo.png"
    run([sys.executable, metrics_path, "crop", pano, photo])
    world = work / "W.world"
    b = build(photo, world, preset, seed, focal_px=PHOTO.fx)
    log(f"{pano.stem}: built {b['splats']:,} splats in {b['total_seconds']:.1f} s")
    res = eval_world(world, work, seam_src=PHOTO)
    score = json.loads(run([sys.executable, metrics_path, "score", pano, work]).stdout)
    for s in score.values():
        s["layout_gain"] = round(s["layout"] - s["layout_rows"], 2)
    res["score"] = score
    res["out_of_frame"] = {
        k: float(np.mean([score[str(y)][k] for y in OUT_OF_FRAME])) for k in METRIC_KEYS
    }
    res["build"] = _build_facts(b)
    return res


def eval_demo(photo: Path, work: Path, preset: str, seed: int) -> dict:
    work.mkdir(parents=True)
    world = work / "W.world"
    b = build(photo, world, preset, seed, focal_px=None)
    log(f"{photo.stem}: built {b['splats']:,} splats in {b['total_seconds']:.1f} s")
    res = eval_world(world, work, seam_src=source_intrinsics(world))
    res["build"] = _build_facts(b)
    return res


def _build_facts(b: dict) -> dict:
    return {
        "total_seconds": b["total_seconds"],
        "wall_s": b["wall_s"],
        "timings": b["timings"],
        "surround_seconds": round(
            sum(v for k, v in b["timings"].items() if "surround" in k or "layers" in k), 4
        ),
        "splats": b["splats"],
        "cache_hits": b.get("cache_hits"),
    }


# ----------------------------------------------------------------------------- image sheets


def _label(img, text: str):
    from PIL import ImageDraw

    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = d.textbbox((4, 3), text)
    d.rectangle((x0 - 3, y0 - 2, x1 + 3, y1 + 2), fill=(0, 0, 0))
    d.text((4, 3), text, fill=(255, 255, 255))
    return img


def _tile(img_array: np.ndarray, text: str):
    from PIL import Image

    a = (np.clip(img_array, 0, 1) * 255 + 0.5).astype(np.uint8)
    return _label(Image.fromarray(a), text)


def sheet(cells: list, cols: int, gap: int = 4):
    """Paste equal-size PIL images row-major into a grid with ``gap`` px of white between."""
    from PIL import Image

    w, h = cells[0].size
    rows = math.ceil(len(cells) / cols)
    out = Image.new("RGB", (cols * w + (cols - 1) * gap, rows * h + (rows - 1) * gap), "white")
    for i, c in enumerate(cells):
        out.paste(c, ((i % cols) * (w + gap), (i // cols) * (h + gap)))
    return out


def pano_sheet(work: Path, pano: Path, metrics):
    """The 8 yaws as (render | panorama view) pairs, two pairs a row."""
    from PIL import Image

    P = metrics.load(pano)
    pairs = []
    for y in SHEET_YAWS:
        r = _tile(read_rgb(work / f"yaw{y}.png"), f"yaw {y}: render")
        g = _tile(metrics.view(P, y, VIEW.width, VIEW.height, VIEW.fx), f"yaw {y}: panorama")
        pair = Image.new("RGB", (2 * VIEW.width, VIEW.height))
        pair.paste(r, (0, 0))
        pair.paste(g, (VIEW.width, 0))
        pairs.append(pair)
    return sheet(pairs, cols=2, gap=6)


def demo_sheet(work: Path):
    return sheet([_tile(read_rgb(work / f"yaw{y}.png"), f"yaw {y}") for y in SHEET_YAWS], 4)


def save_sheet(img, stem: Path, *, png_max: int = 400_000, max_bytes: int = 900_000) -> Path:
    """PNG, or JPEG quality 85 when the PNG is over ``png_max`` bytes; halved until the file
    is under ``max_bytes``. Returns the path written (the other format's file is removed)."""
    import io

    for _ in range(4):
        buf = io.BytesIO()
        img.save(buf, "PNG", optimize=True)
        ext = ".png"
        if buf.tell() > png_max:
            buf = io.BytesIO()
            img.save(buf, "JPEG", quality=85, optimize=True)
            ext = ".jpg"
        if buf.tell() <= max_bytes:
            break
        img = img.resize((img.width // 2, img.height // 2), resample=3)  # bicubic
    stem.parent.mkdir(parents=True, exist_ok=True)
    for old in (".png", ".jpg"):
        stem.with_suffix(old).unlink(missing_ok=True)
    path = stem.with_suffix(ext)
    path.write_bytes(buf.getvalue())
    return path


# ----------------------------------------------------------------------------- report


def _f(x, fmt: str = ".2f") -> str:
    return "–" if x is None or (isinstance(x, float) and not math.isfinite(x)) else format(x, fmt)


def _pct(x) -> str:
    return _f(None if x is None else 100 * x, ".2f")


def pano_table(panos: dict) -> str:
    head = [
        "panorama", "layout", "layout_rows", "layout − rows", "colour", "texture", "sharp",
        "void yaw %", "void pitch %", "void walks %", "seam", "grid", "build s",
    ]  # fmt: skip
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]

    def row(name, o, v, seam, grid, secs):
        return (
            f"| {name} | {_f(o['layout'])} | {_f(o['layout_rows'])} | {_f(o['layout_gain'])} | "
            f"{_f(o['colour'], '.3f')} | {_f(o['texture'], '.3f')} | {_f(o['sharp'], '.3f')} | "
            f"{_pct(v['yaw'])} | {_pct(v['pitch'])} | {_pct(v['walk'])} | {_f(seam)} | "
            f"{_f(grid)} | {_f(secs, '.1f')} |"
        )

    for name, r in panos.items():
        lines.append(
            row(name, r["out_of_frame"], r["void"], r["seam_max"], r["grid_max"],
                r["build"]["total_seconds"])
        )  # fmt: skip
    if panos:
        rs = list(panos.values())

        def mean(get):
            vals = [get(r) for r in rs]
            vals = [v for v in vals if v is not None and math.isfinite(v)]
            return float(np.mean(vals)) if vals else math.nan

        o = {k: mean(lambda r, k=k: r["out_of_frame"][k]) for k in METRIC_KEYS}
        v = {k: mean(lambda r, k=k: r["void"][k]) for k in ("yaw", "pitch", "walk")}
        lines.append(
            row("**MEAN**", o, v, mean(lambda r: r["seam_max"]), mean(lambda r: r["grid_max"]),
                mean(lambda r: r["build"]["total_seconds"]))
        )  # fmt: skip
    return "\n".join(lines)


def demo_table(demos: dict) -> str:
    head = ["photo", "void yaw %", "void pitch %", "void walks %", "seam", "grid", "build s"]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    for name, r in demos.items():
        v = r["void"]
        secs = r["build"]["total_seconds"]
        lines.append(
            f"| {name} | {_pct(v['yaw'])} | {_pct(v['pitch'])} | {_pct(v['walk'])} | "
            f"{_f(r['seam_max'])} | {_f(r['grid_max'])} | {_f(secs, '.1f')} |"
        )
    return "\n".join(lines)


def stage_lines(results: dict) -> str:
    return "\n".join(
        f"- {name}: "
        + ", ".join(f"{k} {v:.2f}" for k, v in r["build"]["timings"].items())
        + f" (total {r['build']['total_seconds']:.1f} s, surround/layers "
        f"{r['build']['surround_seconds']:.1f} s)"
        for name, r in results.items()
    )


def _json_safe(x):
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


# ----------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="default", help="build preset (default: default)")
    ap.add_argument("--seed", type=int, default=0, help="build seed (default 0)")
    ap.add_argument(
        "--only", action="append", metavar="NAME", help="a panorama or demo stem (repeatable)"
    )
    ap.add_argument("--no-demos", action="store_true", help="panoramas only")
    ap.add_argument("--pano-dir", action="append", type=Path, default=[], metavar="DIR",
                    help="another folder of equirectangular JPEGs (repeatable)")  # fmt: skip
    ap.add_argument("--metrics", type=Path, default=METRICS, metavar="PATH",
                    help="surround_metrics.py (default: <repo>/../shared/tools/)")  # fmt: skip
    ap.add_argument("--out", type=Path, metavar="DIR", help="work folder (default: temporary)")
    ap.add_argument("--sheets", type=Path, default=REPO / "docs" / "images" / "surround",
                    metavar="DIR", help="image sheets (default: docs/images/surround)")  # fmt: skip
    ap.add_argument("--results", type=Path, metavar="FILE",
                    default=REPO / "benchmarks" / "results" / "surround_eval.json",
                    help="metrics JSON (default: benchmarks/results/)")  # fmt: skip
    ap.add_argument("--json", action="store_true", help="print the results as JSON on stdout")
    a = ap.parse_args(argv)

    a.metrics = a.metrics.resolve()  # the worldgen and metric commands run in REPO
    metrics = load_metrics(a.metrics)
    assert tuple(metrics.YAWS) == YAWS, metrics.YAWS
    panos = sorted(PANOS.glob("*.jpg"))
    panos += [p.resolve() for d in a.pano_dir for p in sorted(d.glob("*.jpg"))]
    demos = [] if a.no_demos else sorted((REPO / "demos").glob("*.jpg"))
    if a.only:
        panos = [p for p in panos if p.stem in a.only]
        demos = [p for p in demos if p.stem in a.only]
        if not panos and not demos:
            raise SystemExit(f"--only {' '.join(a.only)}: no such panorama or demo photo")
    cmd = "benchmarks/surround_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict = {
        "command": f".venv/bin/python {cmd.strip()}",
        "preset": a.preset,
        "seed": a.seed,
        "metrics": str(a.metrics),
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "cores": os.cpu_count(),
        },
        "panoramas": {},
        "demos": {},
    }
    t_all = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="surround_eval-") as tmp:
        root = (a.out or Path(tmp)).resolve()
        root.mkdir(parents=True, exist_ok=True)
        for pano in panos:
            work = root / f"pano_{pano.stem}"
            shutil.rmtree(work, ignore_errors=True)
            r = eval_pano(pano, work, a.metrics, a.preset, a.seed)
            r["sheet"] = str(save_sheet(pano_sheet(work, pano, metrics), a.sheets / pano.stem))
            result["panoramas"][pano.stem] = r
        for photo in demos:
            work = root / f"demo_{photo.stem}"
            shutil.rmtree(work, ignore_errors=True)
            r = eval_demo(photo, work, a.preset, a.seed)
            r["sheet"] = str(save_sheet(demo_sheet(work), a.sheets / photo.stem))
            result["demos"][photo.stem] = r
    result["seconds"] = round(time.perf_counter() - t_all, 1)
    result = _json_safe(result)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    if a.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"## Surround: out-of-frame means (|yaw| >= 90) and checks, preset {a.preset}, "
        f"seed {a.seed}\n"
    )
    if result["panoramas"]:
        print(pano_table(result["panoramas"]))
        print(
            f"\nlayout, layout_rows: PSNR dB of 24x16 box averages (layout − rows > 0: better "
            f"than the photo's row means); void: max share of alpha < 0.5 over the 8 level "
            f"yaws, pitch ±30 and 2 m walks; seam: max over yaw ±45 (≤ {SEAM_MAX}); grid: "
            f"max spectral peak of the sky over yaws {', '.join(map(str, GRID_YAWS))} "
            f"(< {GRID_MAX}); build s: sum of the stage timings\n"
        )
    if result["demos"]:
        print("## Demo photos (no ground truth)\n")
        print(demo_table(result["demos"]))
        print()
    print("Stage timings (s):\n")
    print(stage_lines({**result["panoramas"], **result["demos"]}))
    print(f"\nsheets: {a.sheets}; metrics: {a.results}; {result['seconds']:.0f} s in all")
    print(f"reproduce: {result['command']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
