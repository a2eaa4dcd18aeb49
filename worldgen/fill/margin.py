"""The canvas margin: the surfaces at the photo's edge continued just beyond its frame.

A small step sideways or a turn first looks just past the frame. There the world should go on
as the surfaces at the frame's edge do: a room's walls, floor and ceiling as the planes they are,
open ground and sky outdoors -- and never as a copy of a near object that happens to touch the
edge (that object is on a nearer layer; what lies behind it continues).

* **labels** (``continue_labels``): the semantic labels of the pixels a layer shows, plus the
  sky, continued into everything else (nearer objects, the margin) by ``hole_labels``'
  anisotropic harmonic argmax, so a skyline or a wall's foot runs on at its height. Margin
  pixels that come out sky are left to the sky (the dome beyond the frame).
* **depth** (``margin_depth``): disparity ``1/z`` is linear in the pixel coordinates on any
  plane. The layer's pixels near the frame's edges (not ground, not sky) are segmented into
  planes by sequential RANSAC on (u, v, 1/z); each margin pixel takes the *nearest* of the
  planes found within reach of it (the largest disparity: from inside a room, the wall, floor
  or ceiling a ray meets first is the one it sees, so their creases come out right), and the
  ground plane where it is nearer still (a wall stands on the floor). Where no plane reaches, the
  nearest pixel of the same label in the same row (near the left or right edge) or column (top,
  bottom) lends its disparity: a fronto-parallel continuation. The same holds for the pixels just
  inside the frame behind an object the frame cuts (what a step sideways uncovers there).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..camera import Intrinsics
from ..depth.base import GROUND, SKY
from .base import GroundPlane


def continue_labels(labels: np.ndarray, known: np.ndarray) -> np.ndarray:
    """labels [H, W] uint8 continued from the ``known`` pixels into all others (see the module
    docstring); known pixels keep theirs."""
    from .classical import hole_labels

    if known.all() or not known.any():
        return labels.astype(np.uint8, copy=True)
    return hole_labels(~known, labels)


def _plane_from(points: np.ndarray) -> np.ndarray | None:
    """[3] (a, b, c) with disparity = a u + b v + c through three (u, v, disp) points."""
    A = np.column_stack([points[:, 0], points[:, 1], np.ones(3)])
    if abs(np.linalg.det(A)) < 1e-9:
        return None
    return np.linalg.solve(A, points[:, 2])


def fit_planes(
    u: np.ndarray,
    v: np.ndarray,
    disp: np.ndarray,
    *,
    tol: float = 0.02,
    min_inliers: int = 30,
    max_planes: int = 8,
    hypotheses: int = 256,
    neighbourhood: int = 24,
    seed: int = 0,
) -> list[tuple[np.ndarray, np.ndarray]]:
    """Sequential RANSAC of disparity planes ``disp = a u + b v + c`` over points [N].

    Hypotheses are three points near each other (one random point and two of its
    ``neighbourhood`` nearest), inliers within ``tol`` of their disparity; the best plane is
    refitted (least squares on its inliers) and its inliers removed, until a plane has fewer than
    ``min_inliers``. Returns [(coefficients [3], inlier indices)] largest first."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts = np.column_stack([u, v, disp]).astype(np.float64)
    left = np.arange(len(pts))
    out = []
    while len(left) >= max(min_inliers, 3) and len(out) < max_planes:
        P = pts[left]
        tree = cKDTree(P[:, :2])
        k = min(neighbourhood, len(P))
        seeds = rng.integers(0, len(P), hypotheses)
        _, nb = tree.query(P[seeds, :2], k=k)
        nb = np.atleast_2d(nb)
        pick = rng.integers(1, max(k, 2), (hypotheses, 2)) % k
        best, best_n = None, 0
        for h in range(hypotheses):
            tri = P[[seeds[h], nb[h, pick[h, 0]], nb[h, pick[h, 1]]]]
            coef = _plane_from(tri)
            if coef is None:
                continue
            res = np.abs(P[:, 0] * coef[0] + P[:, 1] * coef[1] + coef[2] - P[:, 2])
            n_in = int(np.count_nonzero(res <= tol * P[:, 2]))
            if n_in > best_n:
                best, best_n = coef, n_in
        if best is None or best_n < min_inliers:
            break
        res = np.abs(P[:, 0] * best[0] + P[:, 1] * best[1] + best[2] - P[:, 2])
        inl = res <= tol * P[:, 2]
        A = np.column_stack([P[inl, 0], P[inl, 1], np.ones(int(inl.sum()))])
        coef = np.linalg.lstsq(A, P[inl, 2], rcond=None)[0]
        res = np.abs(P[:, 0] * coef[0] + P[:, 1] * coef[1] + coef[2] - P[:, 2])
        inl = res <= tol * P[:, 2]
        if inl.sum() < min_inliers:
            break
        out.append((coef, left[inl]))
        left = left[~inl]
    return out


def _plane_disparity(ground: GroundPlane, intr: Intrinsics, H: int, W: int) -> np.ndarray:
    n = np.asarray(ground.normal, np.float64).reshape(3)
    uu = (np.arange(W, dtype=np.float64) - intr.cx) / intr.fx
    vv = (np.arange(H, dtype=np.float64) - intr.cy) / intr.fy
    return -(n[0] * uu[None, :] + n[1] * vv[:, None] + n[2]) / float(ground.height)


def margin_depth(
    depth: np.ndarray,
    labels: np.ndarray,
    known: np.ndarray,
    frame: tuple[slice, slice],
    todo: np.ndarray,
    intr: Intrinsics,
    ground: GroundPlane | None,
    *,
    band_px: int,
    inside: bool = True,
    max_depth: float = 1e4,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Depth and labels for the margin pixels ``todo`` (see the module docstring).

    depth: [H, W] z-depth of the canvas (NaN unknown); labels: [H, W] continued labels (none
    SKY under ``todo``); known: [H, W] the pixels whose depth the continuation may use; frame:
    the photo's slices in the canvas; intr: the canvas intrinsics; band_px: the width of the
    strip inside the frame whose planes are continued, and their reach beyond the frame;
    inside: the surfaces enclose the camera (a room, the ground and what stands on it: the
    nearest plane is seen) or, False, they are the outside of a convex object (a ray enters it
    through the farthest of the planes it crosses).

    Returns (depth [H, W] float32, NaN outside ``todo``; labels [H, W] uint8, GROUND where the
    ground plane came out nearest).
    """
    H, W = depth.shape
    out = np.full((H, W), np.nan, np.float64)
    lab = labels.astype(np.uint8, copy=True)
    if not todo.any():
        return out.astype(np.float32), lab
    in_frame = np.zeros((H, W), bool)
    in_frame[frame] = True
    # distance to the frame from outside / inside
    d_out = ndimage.distance_transform_edt(~in_frame)
    d_in = ndimage.distance_transform_edt(in_frame)
    ok = known & np.isfinite(depth) & (depth > 0)
    disp = np.where(ok, 1.0 / np.where(ok, depth, 1.0), np.nan)
    g = np.full((H, W), -np.inf)
    if ground is not None and float(ground.height) > 0:
        g = _plane_disparity(ground, intr, H, W)
    best = np.full((H, W), -np.inf if inside else np.inf)
    band = ok & (d_in <= band_px) & (labels != GROUND) & (labels != SKY)
    ty, tx = np.nonzero(todo)
    if band.sum() >= 3:
        by, bx = np.nonzero(band)
        planes = fit_planes(
            bx.astype(np.float64),
            by.astype(np.float64),
            disp[by, bx],
            min_inliers=max(30, int(0.01 * len(by))),
            seed=seed,
        )
        for coef, inl in planes:
            support = np.ones((H, W), bool)
            support[by[inl], bx[inl]] = False
            reach = ndimage.distance_transform_edt(support)[ty, tx] <= band_px + d_out[ty, tx]
            val = coef[0] * tx + coef[1] * ty + coef[2]
            better = val > best[ty, tx] if inside else val < best[ty, tx]
            take = reach & (val > 1.0 / max_depth) & better
            best[ty[take], tx[take]] = val[take]
    # no plane reaches: the nearest known pixel of the same label, along the row (left and right
    # margins) or the column (top and bottom), else in 2-D
    missing = ~np.isfinite(best[ty, tx]) & (lab[ty, tx] != GROUND)
    if missing.any():
        # along the row where the nearest side of the frame is the left or the right one
        to_lr = np.minimum(np.abs(tx - frame[1].start), np.abs(tx - (frame[1].stop - 1)))
        to_tb = np.minimum(np.abs(ty - frame[0].start), np.abs(ty - (frame[0].stop - 1)))
        rows = to_lr < to_tb
        for value in np.unique(lab[ty[missing], tx[missing]]):
            src = ok & (labels == value)
            if not src.any():
                src = ok
            sel = missing & (lab[ty, tx] == value)
            best[ty[sel], tx[sel]] = _line_nearest(disp, src, ty[sel], tx[sel], rows[sel])
    gv = g[ty, tx]
    is_ground = (gv > 1.0 / max_depth) & ((lab[ty, tx] == GROUND) | (gv >= best[ty, tx]))
    val = np.where(is_ground, gv, best[ty, tx])
    lab[ty[is_ground], tx[is_ground]] = GROUND
    good = np.isfinite(val) & (val > 0)
    out[ty[good], tx[good]] = 1.0 / np.maximum(val[good], 1.0 / max_depth)
    return out.astype(np.float32), lab


def _nearest_along(src: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Index along ``axis`` of the nearest ``src`` pixel on the same line, and whether the line
    has one: ([H, W] int, [H, W] bool)."""
    S = np.moveaxis(src, axis, -1)
    n = S.shape[-1]
    x = np.arange(n)
    left = np.maximum.accumulate(np.where(S, x, -1), axis=-1)
    right = np.flip(np.minimum.accumulate(np.flip(np.where(S, x, n), -1), axis=-1), -1)
    use_left = (left >= 0) & ((right >= n) | (x - left <= right - x))
    idx = np.where(use_left, left, np.minimum(right, n - 1))
    has = (left >= 0) | (right < n)
    return np.moveaxis(idx, -1, axis), np.moveaxis(has, -1, axis)


def _line_nearest(
    values: np.ndarray, src: np.ndarray, ty: np.ndarray, tx: np.ndarray, along_rows: np.ndarray
) -> np.ndarray:
    """For pixels (ty, tx): the value of the nearest ``src`` pixel in the same row (where
    ``along_rows``) or column (elsewhere); in 2-D when that line has none."""
    _, (iy, ix) = ndimage.distance_transform_edt(~src, return_indices=True)
    out = values[iy[ty, tx], ix[ty, tx]]
    jx, has_r = _nearest_along(src, 1)
    jy, has_c = _nearest_along(src, 0)
    r = along_rows & has_r[ty, tx]
    out[r] = values[ty[r], jx[ty[r], tx[r]]]
    c = ~along_rows & has_c[ty, tx]
    out[c] = values[jy[ty[c], tx[c]], tx[c]]
    return out


def blend_edge_colours(
    filled: np.ndarray,
    image: np.ndarray,
    labels: np.ndarray,
    known: np.ndarray,
    todo: np.ndarray,
    scale: float,
) -> np.ndarray:
    """Colours of the margin pixels ``todo``: the synthesised texture ``filled`` [H, W, 3] faded
    in from the colour of the nearest ``known`` pixel of the same label (the surface's colour at
    the frame's edge drawn out, like a forward warp's nearest fill), with weight
    ``exp(-distance / scale)`` on that colour. Just past the edge, where a small step looks first,
    the surface goes on as it was; farther out its texture takes over (texture placed at random
    costs more than a drawn-out colour where the step reveals only a few pixels). Returns a
    copy of ``filled``."""
    out = filled.copy()
    ty, tx = np.nonzero(todo)
    if not len(ty) or not known.any():
        return out
    for value in np.unique(labels[ty, tx]):
        src = known & (labels == value)
        if not src.any():
            src = known
        sel = labels[ty, tx] == value
        dist, (iy, ix) = ndimage.distance_transform_edt(~src, return_indices=True)
        y, x = ty[sel], tx[sel]
        w = np.exp(-dist[y, x] / max(scale, 1e-6))[:, None]
        out[y, x] = w * image[iy[y, x], ix[y, x]] + (1.0 - w) * filled[y, x]
    return out
