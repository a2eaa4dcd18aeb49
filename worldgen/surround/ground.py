"""The ground all around: texture synthesised in a rectified, top-down metric plane.

1. **Rectify**: a square top-down map of the ground plane (world x right, z back; ``size`` px
   of ``cell`` metres, centred on the spawn) samples the photo wherever the photo sees ground
   finely enough (its pixel footprint on the plane at most ``max_footprint`` cells). ``cell`` is
   the footprint of the photo's near ground (the median over its nearest quarter), so the map
   keeps the photo's texture scale.
2. **Synthesise**: the map's unknown cells are completed by multi-scale PatchMatch (texture
   optimisation, ``fill.patchmatch.complete``) from the rectified photo, started from a
   periodic random-phase texture of the same exemplar; a periodic random-phase *tile* of that
   exemplar covers the ground beyond the map.
3. **Blend**: the completed map keeps the photo exactly where the photo sees (the surround is
   not drawn there) and continues it without a seam (PatchMatch votes from the photo's own
   patches at the boundary, then a screened gradient-domain correction).
4. **Shade with distance**: the photo's mean ground colour as a function of distance (binned
   in log distance, extended flat beyond the farthest bin) replaces the texture's mean far
   away, so the ground fades toward the horizon as the photo's does.

``render`` samples the ground at any plane points with mip filtering by the pixel footprint,
so it keeps the photo's scale and perspective from any yaw.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .sky import _largest_rectangle
from .synthesis import random_phase_texture, screened_correction


@dataclass
class GroundTexture:
    """near: [N, N, 3] sRGB map of the plane around the spawn (row = z, col = x);
    tile: [T, T, 3] periodic texture for the plane beyond it (same cell size);
    cell: metres per texel; half: the map covers |x|, |z| <= half;
    dist_bins / dist_rgb: [B] log-distance bin centres, [B, 3] mean photo ground colour."""

    near: np.ndarray
    tile: np.ndarray
    cell: float
    half: float
    dist_bins: np.ndarray
    dist_rgb: np.ndarray
    info: dict
    detail: np.ndarray | None = None
    detail_cell: float = 1.0

    def render(self, x: np.ndarray, z: np.ndarray, footprint: np.ndarray) -> np.ndarray:
        """sRGB [..., 3] of plane points (x, z) (metres, world) seen with a pixel footprint of
        ``footprint`` metres: trilinear in a Gaussian mip stack of the map / tile."""
        out = np.zeros(x.shape + (3,), np.float32)
        lvl = np.clip(np.log2(np.maximum(footprint / self.cell, 1e-6)), 0, len(self._near_mips) - 1)
        inside = (np.abs(x) < self.half - self.cell) & (np.abs(z) < self.half - self.cell)
        for mips, sel, periodic in (
            (self._near_mips, inside, False),
            (self._tile_mips, ~inside, True),
        ):
            if not sel.any():
                continue
            n = mips[0].shape[0]
            fx = x[sel] / self.cell + (0 if periodic else self.half / self.cell) - 0.5
            fz = z[sel] / self.cell + (0 if periodic else self.half / self.cell) - 0.5
            if periodic:
                fx, fz = np.mod(fx, n), np.mod(fz, n)
            ls = lvl[sel]
            l0 = np.floor(ls).astype(int)
            w1 = (ls - l0)[:, None]
            acc = np.zeros((len(ls), 3), np.float32)
            for k in np.unique(l0):
                m = l0 == k
                a = _bilinear(mips[k], fz[m], fx[m], periodic)
                b = _bilinear(mips[min(k + 1, len(mips) - 1)], fz[m], fx[m], periodic)
                acc[m] = a * (1 - w1[m]) + b * w1[m]
            out[sel] = acc
        if self._detail_mips is not None:  # the fine high-pass detail, mip-filtered away
            out = out + _trilinear(self._detail_mips, x, z, footprint, self.detail_cell)
        # the photo's colour trend with distance replaces the texture's mean far away
        r = np.hypot(x, z)
        trend = self.trend(r)
        # (half of it at most: the photo's far ground may be another material, e.g. the sea)
        w = 0.5 * np.clip((np.log(np.maximum(r, 1e-3)) - math.log(self.half)) / math.log(4), 0, 1)
        out = out + (trend - self._tile_mean) * w[..., None]
        return np.clip(out, 0, 1)

    def trend(self, r: np.ndarray) -> np.ndarray:
        lr = np.log(np.maximum(r, 1e-3))
        return np.stack(
            [np.interp(lr, self.dist_bins, self.dist_rgb[:, c]) for c in range(3)], -1
        ).astype(np.float32)

    def __post_init__(self):
        self._near_mips = _mip_stack(self.near, periodic=False)
        self._tile_mips = _mip_stack(self.tile, periodic=True)
        self._tile_mean = self.tile.reshape(-1, 3).mean(0)
        self._detail_mips = None if self.detail is None else _mip_stack(self.detail, True)


def _trilinear(mips: list[np.ndarray], x, z, footprint, cell: float) -> np.ndarray:
    """A periodic mip stack sampled at plane points (x, z) with a footprint (metres)."""
    n = mips[0].shape[0]
    lvl = np.clip(np.log2(np.maximum(footprint / cell, 1e-6)), 0, len(mips) - 1)
    fx, fz = np.mod(x / cell - 0.5, n), np.mod(z / cell - 0.5, n)
    l0 = np.floor(lvl).astype(int)
    w1 = (lvl - l0)[..., None]
    out = np.zeros(x.shape + (3,), np.float32)
    for k in np.unique(l0):
        m = l0 == k
        a = _bilinear(mips[k], fz[m], fx[m], True)
        b = _bilinear(mips[min(k + 1, len(mips) - 1)], fz[m], fx[m], True)
        out[m] = a * (1 - w1[m]) + b * w1[m]
    return out


class _Rectifier:
    """Top-down maps of the ground plane sampled from the photo (see the module docstring)."""

    def __init__(self, photo, ground_px, footprint, project, y_plane, max_footprint):
        self.photo, self.ground_px, self.footprint = photo, ground_px, footprint
        self.project, self.y, self.max_fp = project, y_plane, max_footprint

    def __call__(self, cell: float, size: int, centre: tuple[float, float]):
        """(map [size, size, 3], known [size, size]) of cells ``cell`` metres around
        ``centre`` (x, z); a cell is known where the photo sees ground at most ``max_fp``
        cells coarse."""
        H, W = self.ground_px.shape
        ax = (np.arange(size) + 0.5) * cell - size * cell / 2
        X, Z = np.meshgrid(ax + centre[0], ax + centre[1])
        u, v, inside = self.project(np.stack([X, np.full_like(X, self.y), Z], -1))
        ui = np.clip(np.round(np.nan_to_num(u)).astype(int), 0, W - 1)
        vi = np.clip(np.round(np.nan_to_num(v)).astype(int), 0, H - 1)
        ok = inside & self.ground_px[vi, ui] & (self.footprint[vi, ui] <= self.max_fp * cell)
        rect = np.zeros((size, size, 3), np.float32)
        if ok.any():
            coords = [np.clip(v[ok], 0, H - 1), np.clip(u[ok], 0, W - 1)]
            rect[ok] = np.stack(
                [ndimage.map_coordinates(self.photo[..., c], coords, order=1, mode="nearest")
                 for c in range(3)], -1,
            )  # fmt: skip
        return rect, ok


def _start_from(texture: np.ndarray):
    """A ``diffuse`` callable for ``patchmatch.complete``: the hole of the coarsest level starts
    as ``texture`` [N, N, 3] resampled to that level (a texture, not a smooth blur)."""

    def start(img: np.ndarray, hole: np.ndarray) -> np.ndarray:
        h, w = hole.shape
        zoom = (h / texture.shape[0], w / texture.shape[1], 1)
        small = ndimage.zoom(texture, zoom, order=1)[:h, :w]
        out = img.copy()
        out[hole] = small[hole]
        return out

    return start


def _mip_stack(img: np.ndarray, periodic: bool, levels: int = 8) -> list[np.ndarray]:
    """Gaussian-blurred copies at sigma 0, 0.5, 1, 2, ... texels (same size: simple sampling)."""
    mode = "wrap" if periodic else "nearest"
    out = [img.astype(np.float32)]
    for k in range(1, levels):
        s = 0.5 * 2 ** (k - 1)
        out.append(ndimage.gaussian_filter(img, (s, s, 0), mode=mode).astype(np.float32))
    return out


def _bilinear(img: np.ndarray, y: np.ndarray, x: np.ndarray, periodic: bool) -> np.ndarray:
    mode = "grid-wrap" if periodic else "nearest"
    return np.stack(
        [ndimage.map_coordinates(img[..., c], [y, x], order=1, mode=mode) for c in range(3)], -1
    )


def synthesise_ground(
    photo: np.ndarray,
    ground_px: np.ndarray,
    points: np.ndarray,
    footprint: np.ndarray,
    project,
    *,
    size: int = 256,
    tile: int = 256,
    max_footprint: float = 2.0,
    seed: int = 0,
    patchmatch: bool = False,
) -> GroundTexture:
    """Build the ground texture from the photo.

    photo [H, W, 3] sRGB; ground_px [H, W] bool, the photo's ground pixels; points [H, W, 3]
    world points of the photo's pixels (y = the plane where ground); footprint [H, W] metres,
    each pixel's footprint on the plane; project(P [..., 3] world) -> (u, v, inside) photo
    pixel coordinates.
    """
    rng = np.random.default_rng(seed)
    H, W = ground_px.shape
    fp = footprint[ground_px]
    dist = np.hypot(points[..., 0], points[..., 2])[ground_px]
    info: dict = {"ground_pixels": int(ground_px.sum())}
    if fp.size < 64:  # next to no ground seen: a flat colour from the photo's bottom rows
        colour = photo[int(H * 0.85) :].reshape(-1, 3).mean(0)
        flat = np.broadcast_to(colour, (8, 8, 3)).astype(np.float32).copy()
        info["method"] = "flat (no ground in the photo)"
        return GroundTexture(flat, flat, 1.0, 4.0, np.array([0.0, 1.0]), np.stack([colour] * 2),
                             info)  # fmt: skip
    near = dist <= np.percentile(dist, 25)
    # texels of the photo's near-ground footprint, but a map reaching well into the photo
    reach = 2.0 * float(np.percentile(dist, 25))
    cell = float(np.clip(max(np.median(fp[near]), 2 * reach / size), 0.005, 0.25))
    half = size * cell / 2
    # --- 1. rectify: every map cell looks up the photo where it sees the plane finely enough
    y_plane = float(np.median(points[..., 1][ground_px]))
    rectify = _Rectifier(photo, ground_px, footprint, project, y_plane, max_footprint)
    rect, ok = rectify(cell, size, (0.0, 0.0))
    info.update(cell_m=cell, map_m=2 * half, rectified_fraction=float(ok.mean()))
    # --- 2. the exemplar: the largest rectangle of rectified cells (else the photo's bottom)
    box = _largest_rectangle(ndimage.binary_erosion(ok, iterations=1)) if ok.any() else None
    if box is not None and min(box[1] - box[0], box[3] - box[2]) >= 16:
        y0, y1, x0, x1 = box
        ex = rect[y0:y1, x0:x1]
        info["exemplar"] = f"rectified {x1 - x0}x{y1 - y0} cells"
    else:
        rows = photo[int(H * 0.8) :]
        ex = rows[:, : min(W, 4 * rows.shape[0])]
        info["exemplar"] = "photo bottom rows (too little rectified ground)"
    # lane markings, railings and stones are structure, not texture: soft-clip the exemplar's
    # outliers (beyond 2.5 robust sigmas) so the random-phase texture does not stripe
    med = np.median(ex.reshape(-1, 3), 0)
    mad = 1.4826 * np.median(np.abs(ex.reshape(-1, 3) - med), 0) + 1e-3
    ex = med + 2.5 * mad * np.tanh((ex - med) / (2.5 * mad))
    tex = random_phase_texture(ex, (tile, tile), rng)
    init = random_phase_texture(ex, (size, size), rng)
    # fine detail: the photo's nearest ground rectified at its own footprint, as a periodic
    # high-pass texture (what the coarse map's texels average away near the player's feet)
    fine = float(np.clip(np.median(fp[near]), 0.004, cell))
    detail = np.zeros((8, 8, 3), np.float32)
    if fine < 0.75 * cell:
        nearest = dist <= np.percentile(dist, 10)
        centre = points[ground_px][nearest].mean(0)
        frect, fok = rectify(fine, 128, (float(centre[0]), float(centre[2])))
        fbox = _largest_rectangle(ndimage.binary_erosion(fok, iterations=1)) if fok.any() else None
        if fbox is not None and min(fbox[1] - fbox[0], fbox[3] - fbox[2]) >= 16:
            y0, y1, x0, x1 = fbox
            fex = frect[y0:y1, x0:x1]
            ftex = random_phase_texture(fex, (tile, tile), rng)
            s_lp = 0.7 * cell / fine
            detail = ftex - ndimage.gaussian_filter(ftex, (s_lp, s_lp, 0), mode="wrap")
            info["detail"] = f"rectified {x1 - x0}x{y1 - y0} cells of {fine * 100:.1f} cm"
    info["detail_cell_m"] = fine
    # --- 3. complete the map from the photo's own patches, blend the boundary
    hole = ~ok
    if ok.sum() > 0.02 * ok.size and hole.any() and patchmatch:
        from ..fill.patchmatch import complete

        near_map, _ = complete(
            np.where(ok[..., None], rect, init), hole, np.zeros((size, size), np.int32),
            _start_from(init), seed=seed, patch=7, em_iters=(4, 3, 2), finest=(1, 1),
        )  # fmt: skip
        info["method"] = "rectified PatchMatch (random-phase start)"
    else:
        near_map = np.where(ok[..., None], rect, init)
        info["method"] = "rectified random phase"
    if ok.any() and hole.any():
        corr = screened_correction(
            np.where(ok[..., None], rect - near_map, 0.0), ok, np.ones_like(ok), size / 16
        )
        near_map = np.where(ok[..., None], rect, near_map + corr)
    # --- 4. the photo's colour with distance (log-distance bins of its ground pixels)
    lr = np.log(np.maximum(dist, 1e-3))
    edges = np.linspace(lr.min(), lr.max() + 1e-6, 9)
    idx = np.digitize(lr, edges) - 1
    cols = photo[ground_px]
    centres, means = [], []
    for b in range(8):
        m = idx == b
        if m.sum() >= 16:
            centres.append(0.5 * (edges[b] + edges[b + 1]))
            means.append(cols[m].mean(0))
    if not means:  # ground pixels spread too thinly over the bins: one bin of them all
        centres, means = [float(np.median(lr))], [cols.mean(0)]
    return GroundTexture(
        np.clip(near_map, 0, 1).astype(np.float32),
        np.clip(tex, 0, 1).astype(np.float32),
        cell,
        half,
        np.array(centres),
        np.array(means, np.float32),
        info,
        detail.astype(np.float32),
        fine,
    )
