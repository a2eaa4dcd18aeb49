"""Time the classical hidden-region fill on a synthetic 768x512 scene.

    .venv/bin/python benchmarks/fill.py [--repeat 3] [--fractions 0.05 0.15 0.25] [--no-cold]

Scene: a textured ground plane 1.6 m below the camera (60 deg horizontal FOV), a brick wall at
8 m standing on it, a gradient sky above the wall; exact depth and labels (ground / vertical /
sky). Holes: "objects" (ellipses and boxes standing on random points of the image) added until
they cover 5 %, 15 % and 25 % of the image, in several blobs.

Reports, per hole size: the best of ``--repeat`` warm runs (after one warm-up) of the whole
fill (labels + depth + colour) with its depth and colour parts, the same for ``colour=diffusion``
and, if OpenCV is installed, cv2.inpaint TELEA for reference. Then the first call in a fresh
process (import excluded, reported apart) at 15 %: with an empty numba cache (JIT compile
included) and with the on-disk cache that the first run wrote.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

W, H = 768, 512


def scene(seed: int = 0):
    """image [H, W, 3], depth [H, W], labels [H, W], intrinsics, ground plane."""
    from scipy.ndimage import gaussian_filter

    from worldgen.camera import Intrinsics
    from worldgen.depth.base import GROUND, SKY, VERTICAL
    from worldgen.fill import GroundPlane

    rng = np.random.default_rng(seed)
    intr = Intrinsics.from_hfov(60, W, H)
    normal = np.array([0.0, -1.0, 0.0])
    height = 1.6
    u = (np.arange(W) - intr.cx) / intr.fx
    v = (np.arange(H) - intr.cy) / intr.fy
    uu, vv = np.meshgrid(u, v)
    with np.errstate(divide="ignore"):
        zg = np.where(vv > 0, height / vv, np.inf)
    z_wall = 8.0
    wall_top = -2.4  # camera-axes Y of the wall's top (y down): 2.4 m above the camera
    is_ground = zg < z_wall
    is_wall = ~is_ground & (vv * z_wall > wall_top)
    depth = np.where(is_ground, zg, np.where(is_wall, z_wall, 1000.0)).astype(np.float32)
    labels = np.where(is_ground, GROUND, np.where(is_wall, VERTICAL, SKY)).astype(np.uint8)
    # textures glued to the surfaces
    noise = gaussian_filter(rng.random((H, W, 3)), (1.5, 1.5, 0))
    X, Z = uu * zg, zg
    Xg, Zg = np.where(is_ground, X, 0), np.where(is_ground, Z, 0)
    tiles = ((np.floor(Xg * 2) + np.floor(Zg * 2)) % 2)[..., None]
    ground = np.array([0.45, 0.4, 0.3]) + 0.12 * tiles + 0.5 * (noise - 0.5)
    Xw, Yw = uu * z_wall, vv * z_wall
    row = np.floor(Yw / 0.25)
    mortar = (np.abs((Yw / 0.25) % 1) < 0.12) | (np.abs(((Xw / 0.5) + 0.5 * (row % 2)) % 1) < 0.06)
    wall = np.where(mortar[..., None], 0.8, np.array([0.6, 0.3, 0.22])) + 0.3 * (noise - 0.5)
    sky = np.array([0.5, 0.7, 0.95]) - 0.3 * (vv[..., None] + 0.5) + 0.02 * (noise - 0.5)
    img = np.where(is_ground[..., None], ground, np.where(is_wall[..., None], wall, sky))
    img = np.clip(img, 0, 1).astype(np.float32)
    return img, depth, labels, intr, GroundPlane(normal, height)


def holes(fraction: float, seed: int = 1) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    m = np.zeros((H, W), bool)
    while m.mean() < fraction:
        cy, cx = rng.integers(H // 5, H - 20), rng.integers(20, W - 20)
        hh, ww = rng.integers(30, 110), rng.integers(20, 70)
        if rng.random() < 0.5:
            blob = (np.abs(yy - cy) < hh) & (np.abs(xx - cx) < ww)
        else:
            blob = ((yy - cy) / hh) ** 2 + ((xx - cx) / ww) ** 2 < 1
        m |= blob
    return m


def run_fill(fraction: float, **options) -> dict:
    from worldgen.fill import get_fill_backend

    img, depth, labels, intr, ground = scene()
    mask = holes(fraction)
    t = time.perf_counter()
    r = get_fill_backend("classical").fill(
        img, mask, depth=depth, labels=labels, intrinsics=intr, ground=ground, seed=0, **options
    )
    total = time.perf_counter() - t
    return {"total_s": total, **r.info["timings"], "hole_fraction": float(mask.mean())}


def child(fraction: float) -> None:
    """Fresh-process run: import time, first and second fill."""
    t = time.perf_counter()
    import worldgen.fill.classical  # noqa: F401

    imp = time.perf_counter() - t
    first = run_fill(fraction)
    second = run_fill(fraction)
    print(json.dumps({"import_s": imp, "first": first, "second": second}))


def fresh_process(fraction: float, cache_dir: str | None) -> dict:
    env = dict(os.environ)
    if cache_dir is not None:
        env["NUMBA_CACHE_DIR"] = cache_dir
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(fraction)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.05, 0.15, 0.25])
    ap.add_argument("--no-cold", action="store_true", help="skip the fresh-process runs")
    ap.add_argument("--child", type=float, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child is not None:
        child(args.child)
        return

    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, {W}x{H}")
    if not args.no_cold:
        with tempfile.TemporaryDirectory() as tmp:
            nocache = fresh_process(0.15, tmp)
            cached = fresh_process(0.15, tmp)
        print("fresh process, 15 % hole (import of worldgen.fill.classical reported apart):")
        for name, r in (("empty numba cache (JIT)", nocache), ("on-disk numba cache", cached)):
            first, second = r["first"], r["second"]
            print(
                f"  {name:26s} import {r['import_s']:.2f} s, first fill {first['total_s']:.2f} s"
                f" (colour {first['colour_s']:.2f} s), second {second['total_s']:.2f} s"
            )
    run_fill(0.05)  # warm-up (JIT or cache load)
    try:
        import cv2
    except ImportError:
        cv2 = None
    header = f"{'hole':>6} {'fill s':>7} {'depth s':>8} {'colour s':>9} {'diffusion s':>12}"
    if cv2 is not None:
        header += f" {'cv2 TELEA s':>12}"
    print("warm, best of", args.repeat)
    print(header)
    for f in args.fractions:
        runs = [run_fill(f) for _ in range(args.repeat)]
        best = min(runs, key=lambda r: r["total_s"])
        diff = min(run_fill(f, colour="diffusion")["total_s"] for _ in range(args.repeat))
        line = (
            f"{best['hole_fraction'] * 100:5.1f}% {best['total_s']:7.2f} {best['depth_s']:8.2f}"
            f" {best['colour_s']:9.2f} {diff:12.2f}"
        )
        if cv2 is not None:
            img, *_ = scene()
            m = holes(f).astype(np.uint8)
            u8 = (img * 255).astype(np.uint8)
            ts = []
            for _ in range(args.repeat):
                t = time.perf_counter()
                cv2.inpaint(u8, m, 3, cv2.INPAINT_TELEA)
                ts.append(time.perf_counter() - t)
            line += f" {min(ts):12.2f}"
        print(line)
    print("reproduce: .venv/bin/python benchmarks/fill.py " + " ".join(sys.argv[1:]))


if __name__ == "__main__":
    main()
