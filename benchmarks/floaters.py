"""Floaters on a walk: sky showing where a surface should be, and splats off every surface.

For every demo photo (or the worlds given with ``--world``), a world is built (``--preset``,
``default`` unless told; ``--no-cache``) and rendered on short walks from the spawn point:
2, 3 and 5 m forward, 1 m left and right (horizontal in the world frame, the source camera's
orientation kept), a turn of ±30° on the spot and 3 m forward then ±30°. Two measures, goal 0:

**(a) sky in front of the world** (per view). The splats of the sky layers (kind ``sky``: the
photo's sky layer and the sky dome) and of all other layers are rendered apart in one pass, each
splat coloured by its group, so the two channels are each group's exact compositing weight in
the full render (``sky_weight`` + ``solid_weight`` = alpha). A pixel *should show a non-sky
surface* when its ray in the world frame is more than ``HORIZON_TOL_DEG`` below the horizon
(the ground plane runs to it: nothing there is sky), or when it meets a non-sky layer's surface:
each non-sky layer's depth map (``layers/<k>/depth.npy``, its own intrinsics, or the
equirectangular projection in the world frame) as a triangle mesh over its pixels with alpha
>= 0.5, without the cells that span a depth edge (a relative disparity jump > ``EDGE_JUMP`` along
a side), rasterized into the view (z > ``NEAR``). **(a)** is the share of those pixels whose
colour comes mostly from sky splats (``sky_weight > 0.5``). A crack in a surface that lets the
sky behind show through, a sky-coloured dome below the horizon, the sky hanging in front of a
wall: all count.

**(b) splats off every surface** (per world). A splat centre lies on layer L's surface when,
projected into L (its intrinsics, or the equirectangular grid in the world frame), one of the
2 x 2 pixels around it has a finite depth within ``OFF_TOL`` (10 %) of the splat's own depth
along that projection (z-depth for a perspective layer, distance for an equirectangular one).
**(b)** is the share of splats on no layer's surface, with the count per layer of the splat.

    .venv/bin/python benchmarks/floaters.py [--preset default] [--world W.world ...]
        [PHOTO ...] [--json benchmarks/results/floaters.json] [--save-dir DIR]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numba
import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/floaters.py` from anywhere
    sys.path.insert(0, str(REPO))

from worldgen.camera import Intrinsics, Pose  # noqa: E402

#: a ray more than this far below the horizon must meet the ground, never the sky
HORIZON_TOL_DEG = 1.0
#: relative disparity jump along a mesh cell's side that marks a depth edge (no surface there);
#: the layer split's own edge threshold
EDGE_JUMP = 0.12
#: mesh vertices nearer than this (metres, camera z) are not rasterized
NEAR = 0.05
#: a splat farther than this fraction of its depth from every layer's surface is a floater
OFF_TOL = 0.10


# ----------------------------------------------------------------------------- surfaces


@dataclass
class Surface:
    """One layer's surface. projection "perspective": ``depth`` [h, w] z-depth in the source
    camera's axes through ``intrinsics``; "equirectangular": distance along the ray of the world
    frame direction of each pixel (``worldgen.surround.geometry``). ``alpha`` [h, w] in [0, 1];
    NaN depth = no surface."""

    name: str
    kind: str
    projection: str
    depth: np.ndarray
    alpha: np.ndarray
    intrinsics: Intrinsics | None = None

    @property
    def is_sky(self) -> bool:
        return self.kind == "sky"


def world_surfaces(world) -> list[Surface]:
    """The layers of a loaded world bundle as ``Surface``s, in layer-id order."""
    out = []
    for L in sorted(world.layers, key=lambda L: L.id):
        intr = L.intrinsics if L.projection == "perspective" else None
        out.append(Surface(L.name, L.kind, L.projection, L.depth, L.alpha, intr))
    return out


def _equirect_dirs(w: int, h: int) -> np.ndarray:
    """[h, w, 3] world directions of an equirectangular grid's pixel centres."""
    lon = -math.pi + (np.arange(w) + 0.5) * 2 * math.pi / w
    lat = math.pi / 2 - (np.arange(h) + 0.5) * math.pi / h
    LON, LAT = np.meshgrid(lon, lat)
    return np.stack([np.sin(LON) * np.cos(LAT), np.sin(LAT), -np.cos(LON) * np.cos(LAT)], -1)


def surface_points(s: Surface, world_from_camera: np.ndarray) -> np.ndarray:
    """[h, w, 3] source-camera points of a surface's pixels (NaN where no surface)."""
    d = s.depth.astype(np.float64)
    if s.projection == "perspective":
        i = s.intrinsics
        vv, uu = np.mgrid[0 : d.shape[0], 0 : d.shape[1]].astype(np.float64)
        return np.stack([(uu - i.cx) / i.fx * d, (vv - i.cy) / i.fy * d, d], -1)
    R = np.asarray(world_from_camera, np.float64)[:3, :3]
    Pw = _equirect_dirs(d.shape[1], d.shape[0]) * d[..., None]
    return Pw @ R  # rows: R^T X_world


@numba.njit(cache=True)
def _raster(u, v, ok, tris, H, W, out):  # pragma: no cover - numba
    """Mark in ``out`` [H, W] the pixel centres inside the triangles ``tris`` [T, 3] of the
    projected vertices (u, v) whose three vertices are ``ok``."""
    for t in range(tris.shape[0]):
        a, b, c = tris[t, 0], tris[t, 1], tris[t, 2]
        if not (ok[a] and ok[b] and ok[c]):
            continue
        ax, ay, bx, by, cx, cy = u[a], v[a], u[b], v[b], u[c], v[c]
        area = (bx - ax) * (cy - ay) - (by - ay) * (cx - ax)
        if area == 0.0:
            continue
        x0 = max(int(math.ceil(min(ax, bx, cx))), 0)
        x1 = min(int(math.floor(max(ax, bx, cx))), W - 1)
        y0 = max(int(math.ceil(min(ay, by, cy))), 0)
        y1 = min(int(math.floor(max(ay, by, cy))), H - 1)
        for y in range(y0, y1 + 1):
            for x in range(x0, x1 + 1):
                w0 = (bx - x) * (cy - y) - (by - y) * (cx - x)
                w1 = (cx - x) * (ay - y) - (cy - y) * (ax - x)
                w2 = (ax - x) * (by - y) - (ay - y) * (bx - x)
                if area > 0:
                    inside = w0 >= 0 and w1 >= 0 and w2 >= 0
                else:
                    inside = w0 <= 0 and w1 <= 0 and w2 <= 0
                if inside:
                    out[y, x] = True


def surface_coverage(
    surfaces: list[Surface], world_from_camera: np.ndarray, pose: Pose, intr: Intrinsics
) -> np.ndarray:
    """[H, W] bool: the pixels of the camera (``pose``, ``intr``) whose ray meets one of the
    ``surfaces``, each a triangle mesh over its pixels with alpha >= 0.5 and finite depth, cells
    across a depth edge (relative disparity jump > ``EDGE_JUMP`` on a side) left out; an
    equirectangular surface wraps around in longitude."""
    H, W = intr.height, intr.width
    out = np.zeros((H, W), bool)
    R, T = np.asarray(pose.R, np.float64), np.asarray(pose.T, np.float64)
    for s in surfaces:
        P = surface_points(s, world_from_camera)
        valid = np.isfinite(s.depth) & (s.depth > 0) & (s.alpha >= 0.5)
        if s.projection == "equirectangular":  # wrap: repeat the first column at the end
            P = np.concatenate([P, P[:, :1]], axis=1)
            valid = np.concatenate([valid, valid[:, :1]], axis=1)
            dist = np.concatenate([s.depth, s.depth[:, :1]], axis=1)
        else:
            dist = s.depth
        h, w = valid.shape
        if h < 2 or w < 2 or not valid.any():
            continue
        with np.errstate(invalid="ignore", divide="ignore"):
            disp = np.where(valid, 1.0 / dist.astype(np.float64), np.nan)

        def smooth(a, b):
            with np.errstate(invalid="ignore"):
                return np.abs(a - b) <= EDGE_JUMP * np.maximum(a, b)

        tl, tr, bl, br = disp[:-1, :-1], disp[:-1, 1:], disp[1:, :-1], disp[1:, 1:]
        cell = smooth(tl, tr) & smooth(bl, br) & smooth(tl, bl) & smooth(tr, br)
        cy, cx = np.nonzero(cell)
        if not len(cy):
            continue
        idx = np.arange(h * w).reshape(h, w)
        a, b, c, d = idx[cy, cx], idx[cy, cx + 1], idx[cy + 1, cx], idx[cy + 1, cx + 1]
        tris = np.concatenate([np.stack([a, b, c], 1), np.stack([b, d, c], 1)]).astype(np.int64)
        Xn = (P.reshape(-1, 3) - T) @ R  # R^T (X - T)
        z = Xn[:, 2]
        ok = np.isfinite(z) & (z > NEAR)
        zs = np.where(ok, z, 1.0)
        u = intr.fx * Xn[:, 0] / zs + intr.cx
        v = intr.fy * Xn[:, 1] / zs + intr.cy
        ok &= np.isfinite(u) & np.isfinite(v)
        _raster(np.nan_to_num(u), np.nan_to_num(v), ok, tris, H, W, out)
    return out


def below_horizon(
    world_from_camera: np.ndarray, pose: Pose, intr: Intrinsics, tol_deg: float = HORIZON_TOL_DEG
) -> np.ndarray:
    """[H, W] bool: pixels whose ray points more than ``tol_deg`` below the world's horizon."""
    vv, uu = np.mgrid[0 : intr.height, 0 : intr.width].astype(np.float64)
    d = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1)
    dw = d @ np.asarray(pose.R, np.float64).T @ np.asarray(world_from_camera)[:3, :3].T
    elev = np.degrees(np.arcsin(dw[..., 1] / np.linalg.norm(dw, axis=-1)))
    return elev < -tol_deg


def group_weights(splats, is_sky: np.ndarray, pose: Pose, intr: Intrinsics):
    """(sky_weight, solid_weight), each [H, W]: the compositing weight of the sky splats
    (``is_sky`` [N] bool) and of all the others in the render from ``pose``."""
    import torch

    from worldgen.camera import Camera
    from worldgen.raster import rasterize
    from worldgen.splats import Splats, rgb_to_sh0

    rgb = np.zeros((len(splats), 3), np.float32)
    rgb[is_sky, 0] = 1.0
    rgb[~is_sky, 1] = 1.0
    sh = rgb_to_sh0(torch.from_numpy(rgb))[:, None, :].contiguous()
    flat = Splats(
        splats.means, splats.quats, splats.log_scales, splats.logit_opacities, sh, splats.layers
    )
    out = rasterize(flat, Camera(intr, pose), intr.width, intr.height, background=(0, 0, 0))
    w = out.rgb.numpy().astype(np.float64)
    return w[..., 0], w[..., 1]


def sky_floater_share(sky_weight: np.ndarray, should_be_solid: np.ndarray) -> tuple[float, int]:
    """(share, count) of the ``should_be_solid`` pixels whose colour is mostly sky
    (``sky_weight > 0.5``); share 0 when there is no such pixel to judge."""
    bad = should_be_solid & (sky_weight > 0.5)
    n = int(should_be_solid.sum())
    return (float(bad.sum()) / n if n else 0.0), int(bad.sum())


def off_surface(
    means: np.ndarray, surfaces: list[Surface], world_from_camera: np.ndarray, tol: float = OFF_TOL
) -> np.ndarray:
    """[N] bool: splat centres (``means`` [N, 3], source-camera axes) farther than ``tol`` of
    their depth from every surface (see the module docstring)."""
    X = np.asarray(means, np.float64)
    on = np.zeros(len(X), bool)
    R = np.asarray(world_from_camera, np.float64)[:3, :3]
    Xw = X @ R.T
    for s in surfaces:
        d = s.depth.astype(np.float64)
        h, w = d.shape
        if s.projection == "perspective":
            i = s.intrinsics
            z = X[:, 2]
            zs = np.where(z > 1e-9, z, 1.0)
            x, y = i.fx * X[:, 0] / zs + i.cx, i.fy * X[:, 1] / zs + i.cy
            own = z
            front = z > 1e-9
        else:
            own = np.linalg.norm(Xw, axis=1)
            lon = np.arctan2(Xw[:, 0], -Xw[:, 2])
            lat = np.arctan2(Xw[:, 1], np.hypot(Xw[:, 0], Xw[:, 2]))
            x = (lon + math.pi) / (2 * math.pi) * w - 0.5
            y = (math.pi / 2 - lat) / math.pi * h - 0.5
            front = own > 1e-9
        x0, y0 = np.floor(x).astype(np.int64), np.floor(y).astype(np.int64)
        for dy in (0, 1):
            for dx in (0, 1):
                yy = y0 + dy
                xx = x0 + dx
                if s.projection == "equirectangular":
                    xx = np.mod(xx, w)
                inside = front & (yy >= 0) & (yy < h) & (xx >= 0) & (xx < w) & ~on
                ref = np.full(len(X), np.nan)
                ref[inside] = d[yy[inside], xx[inside]]
                with np.errstate(invalid="ignore"):
                    on |= np.abs(own - ref) <= tol * ref
    return ~on


# ----------------------------------------------------------------------------- walks


def _axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    a = np.asarray(axis, np.float64) / np.linalg.norm(axis)
    K = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    return np.eye(3) + math.sin(angle) * K + (1 - math.cos(angle)) * K @ K


def walk_pose(
    world_from_camera: np.ndarray, forward: float = 0.0, right: float = 0.0, yaw_deg: float = 0.0
) -> Pose:
    """The source camera moved ``forward`` / ``right`` metres on the ground (horizontal in the
    world frame) and turned ``yaw_deg`` about the world's vertical (> 0: right), as a Pose in the
    source camera's axes."""
    Rwc = np.asarray(world_from_camera, np.float64)[:3, :3]
    T = Rwc.T @ np.array([right, 0.0, -forward])
    down = Rwc.T @ np.array([0.0, -1.0, 0.0])  # yaw about "down" turns right, like R_y
    return Pose(_axis_rotation(down, math.radians(yaw_deg)), T)


WALKS: dict[str, tuple[float, float, float]] = {
    "source": (0.0, 0.0, 0.0),
    "forward 2 m": (2.0, 0.0, 0.0),
    "forward 3 m": (3.0, 0.0, 0.0),
    "forward 5 m": (5.0, 0.0, 0.0),
    "left 1 m": (0.0, -1.0, 0.0),
    "right 1 m": (0.0, 1.0, 0.0),
    "yaw -30°": (0.0, 0.0, -30.0),
    "yaw +30°": (0.0, 0.0, 30.0),
    "forward 3 m, yaw -30°": (3.0, 0.0, -30.0),
    "forward 3 m, yaw +30°": (3.0, 0.0, 30.0),
}


def measure_world(world, walks=None, *, save_dir: Path | None = None, log=print) -> dict:
    """Both measures on one loaded world: per-view rows of (a) and the (b) summary."""
    walks = WALKS if walks is None else walks
    surfaces = world_surfaces(world)
    M = world.world_from_camera
    intr = world.intrinsics
    splats = world.splats
    layer_of = splats.layers.numpy()
    sky_ids = [k for k, s in enumerate(surfaces) if s.is_sky]
    is_sky = np.isin(layer_of, sky_ids)
    solid = [s for s in surfaces if not s.is_sky]
    rows = []
    for name, (fwd, right, yaw) in walks.items():
        pose = walk_pose(M, fwd, right, yaw)
        t0 = time.perf_counter()
        sky_w, solid_w = group_weights(splats, is_sky, pose, intr)
        should = below_horizon(M, pose, intr) | surface_coverage(solid, M, pose, intr)
        share, count = sky_floater_share(sky_w, should)
        rows.append(
            {
                "view": name,
                "pose": {"forward_m": fwd, "right_m": right, "yaw_deg": yaw},
                "sky_in_front": share,
                "sky_in_front_px": count,
                "judged_px": int(should.sum()),
                "seconds": time.perf_counter() - t0,
            }
        )
        log(f"{world.path.name}: {name}: sky in front {100 * share:.3f} % ({count} px)")
        if save_dir is not None:
            _save_view(world, pose, intr, sky_w, solid_w, should, save_dir, name)
    off = off_surface(splats.means.numpy(), surfaces, M)
    per_layer = {s.name: int(off[layer_of == k].sum()) for k, s in enumerate(surfaces) if off.size}
    return {
        "world": str(world.path),
        "splats": len(splats),
        "views": rows,
        "off_surface": float(off.mean()) if off.size else 0.0,
        "off_surface_count": int(off.sum()),
        "off_surface_per_layer": {k: v for k, v in per_layer.items() if v},
    }


def _save_view(world, pose, intr, sky_w, solid_w, should, save_dir: Path, name: str) -> None:
    from PIL import Image

    from worldgen.render import render_world

    save_dir.mkdir(parents=True, exist_ok=True)
    name = name.replace("+", "plus").replace("-", "minus")
    tag = world.path.stem + "_" + "".join(c if c.isalnum() else "_" for c in name)
    rgb = render_world(world, pose, intr).rgb.numpy()
    bad = should & (sky_w > 0.5)
    mark = rgb.copy()
    mark[bad] = [1.0, 0.0, 1.0]
    pic = np.concatenate([rgb, mark], axis=1)
    Image.fromarray((np.clip(pic, 0, 1) * 255 + 0.5).astype(np.uint8)).save(save_dir / f"{tag}.png")


# ----------------------------------------------------------------------------- report


def table(results: list[dict]) -> str:
    views = [r["view"] for r in results[0]["views"]] if results else []
    lines = [
        "| world | splats off every surface | "
        + " | ".join(f"sky in front, {v}" for v in views)
        + " |",
        "|---|---:|" + "---:|" * len(views),
    ]
    for res in results:
        cells = [
            Path(res["world"]).stem,
            f"{100 * res['off_surface']:.3f} % ({res['off_surface_count']})",
        ]
        cells += [f"{100 * r['sky_in_front']:.3f} %" for r in res["views"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("photos", nargs="*", type=Path, help="photos to build (default: demos/*.jpg)")
    ap.add_argument("--world", action="append", type=Path, default=[], help="measure this world")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--out-dir", type=Path, help="keep the built worlds here")
    ap.add_argument("--save-dir", type=Path, help="write each view (render | sky marked) here")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args(argv)

    from worldgen.config import load_preset
    from worldgen.pipeline import build
    from worldgen.world import load_world

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    photos = list(a.photos)
    if not photos and not a.world:
        photos = sorted((REPO / "demos").glob("*.jpg"))
    results = []
    with tempfile.TemporaryDirectory(prefix="floaters-") as tmp:
        out_dir = a.out_dir or Path(tmp)
        out_dir.mkdir(parents=True, exist_ok=True)
        worlds = list(a.world)
        for photo in photos:
            out = out_dir / f"{photo.stem}.world"
            t0 = time.perf_counter()
            build(photo, out, load_preset(a.preset), force=True, use_cache=False)
            log(f"{photo.stem}: built ({a.preset}) in {time.perf_counter() - t0:.1f} s")
            worlds.append(out)
        for w in worlds:
            results.append(measure_world(load_world(w), save_dir=a.save_dir, log=log))
    cmd = "python benchmarks/floaters.py " + " ".join(argv if argv is not None else sys.argv[1:])
    print(f"## Floaters on a walk (preset {a.preset}; goal 0)\n")
    print(table(results))
    print(f"\nReproduce: `.venv/bin/{cmd.strip()}`")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        doc = {
            "command": cmd.strip(),
            "preset": a.preset,
            "horizon_tol_deg": HORIZON_TOL_DEG,
            "edge_jump": EDGE_JUMP,
            "off_tol": OFF_TOL,
            "machine": {"python": platform.python_version(), "platform": platform.platform()},
            "worlds": results,
        }
        a.json.write_text(json.dumps(doc, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
