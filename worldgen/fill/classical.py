"""Classical hidden-region fill: label-aware background depth + patch-based colour, no weights.

When a foreground object is cut out, the background layer behind it has a hole. This backend
continues the *background* into it (everything under the mask, the foreground's depth and
labels included, is ignored):

* **labels** (``hole_labels``): the argmax of the harmonic interpolation of each label's
  indicator from the known pixels, anisotropic (rows couple 20x more weakly than columns) so a
  skyline or a wall's foot crossing the hole stays at its height. When the ground plane and
  intrinsics are given, hole components that touch known ground decide ground vs. the rest by
  occlusion: a pixel is ground where the plane is in front of the continued non-ground surface
  (walls stand on the floor: above their contact line the wall hides the floor, below it the
  floor is what the camera sees; behind a tree on a field the ground runs up to the sky). Where
  that continued surface would hide a known ground pixel next to the hole, it is made to pass
  through it (an obstacle constraint, re-solved), so the contact line joins up across the hole.
* **depth** (``fill_depth``): ground pixels take the exact ray/plane intersection
  ``z = -h / (n . K^-1 [u v 1])``; the others a harmonic (Laplace) fill of *disparity* 1/z from
  the known depth of their own label (other labels are no-flux boundaries), so planes stay
  planes (exactly with Dirichlet data all round) and the foreground's depth never enters.
  Without labels but with a plane, known pixels within 2% of the plane count as ground.
* **colour**: multi-scale PatchMatch completion (``patchmatch.complete``: numba kernels, sources
  from the known background only, same-label sources preferred), initialised by diffusion at
  the coarsest level and finished with a clamped Poisson-style seam correction;
  ``colour="diffusion"`` (or no numba, or no fully known patch) gives the smooth harmonic fill.

Known pixels are returned bit-exact; the result is deterministic for a given seed.
"""

from __future__ import annotations

import importlib.util
import time

import numpy as np
import scipy.sparse as sp
import scipy.sparse.linalg as sla
from scipy import ndimage

from ..camera import Intrinsics
from ..depth.base import GROUND, VERTICAL
from ..errors import InputError
from .base import FillResult, GroundPlane

#: known pixels whose depth is within this relative distance of the plane count as ground when
#: no labels are given
PLANE_TOLERANCE = 0.02
#: fewer violations of the ground-occlusion constraint than this are left alone
OBSTACLE_MIN_PX = 16


# --------------------------------------------------------------------------------------------
# harmonic (Laplace) fill


def harmonic_fill(
    values: np.ndarray,
    solve: np.ndarray,
    fixed: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    prior: np.ndarray | None = None,
    eps: float = 1e-7,
    vertical_weight: float = 1.0,
) -> np.ndarray:
    """Discrete Laplace equation on the ``solve`` pixels (5-point stencil).

    values: [H, W] or [H, W, C]; Dirichlet values where ``fixed``. A ``solve`` pixel couples to
    its 4-neighbours that are ``solve`` or ``fixed`` pixels of the same ``group`` (if given);
    all other neighbours are no-flux (Neumann) boundaries. A weak pull ``eps`` towards ``prior``
    (default: the nearest fixed value) keeps components without Dirichlet neighbours well-posed.
    ``vertical_weight`` < 1 couples rows more weakly than columns (anisotropic diffusion: values
    travel along rows). Linear functions solve it whatever the weight.

    Returns float64 values with the ``solve`` pixels replaced.
    """
    vals = np.asarray(values, dtype=np.float64)
    squeeze = vals.ndim == 2
    if squeeze:
        vals = vals[..., None]
    out = vals.copy()
    H, W = solve.shape
    n = int(solve.sum())
    if n == 0:
        return out[..., 0] if squeeze else out
    if prior is None:
        if fixed.any():
            _, (iy, ix) = ndimage.distance_transform_edt(~fixed, return_indices=True)
            prior = vals[iy, ix]
        else:
            prior = np.zeros_like(vals)
    prior = np.asarray(prior, dtype=np.float64).reshape(vals.shape)
    idx = np.full((H, W), -1, np.int64)
    idx[solve] = np.arange(n)
    ys, xs = np.nonzero(solve)
    C = vals.shape[2]
    diag = np.full(n, eps)
    rhs = eps * prior[ys, xs]
    rows, cols, offd = [], [], []
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        wgt = float(vertical_weight) if dy else 1.0
        qy, qx = ys + dy, xs + dx
        inside = (qy >= 0) & (qy < H) & (qx >= 0) & (qx < W)
        p = np.nonzero(inside)[0]
        qy, qx = qy[inside], qx[inside]
        ok = solve[qy, qx] | fixed[qy, qx]
        if groups is not None:
            ok &= groups[qy, qx] == groups[ys[p], xs[p]]
        p, qy, qx = p[ok], qy[ok], qx[ok]
        diag[p] += wgt
        q = idx[qy, qx]
        coupled = q >= 0
        rows.append(p[coupled])
        cols.append(q[coupled])
        offd.append(np.full(int(coupled.sum()), -wgt))
        np.add.at(rhs, p[~coupled], wgt * vals[qy[~coupled], qx[~coupled]])
    rows_a = np.concatenate(rows + [np.arange(n)])
    cols_a = np.concatenate(cols + [np.arange(n)])
    data = np.concatenate(offd + [diag])
    A = sp.csc_matrix((data, (rows_a, cols_a)), shape=(n, n))
    x = sla.splu(A, permc_spec="MMD_AT_PLUS_A").solve(rhs.reshape(n, C))
    out[ys, xs] = x
    return out[..., 0] if squeeze else out


def diffuse_colour(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """Smooth fill of ``hole`` from the known pixels (harmonic in each channel), float32."""
    out = harmonic_fill(image, hole, ~hole).astype(np.float32)
    out[~hole] = image[~hole]
    return out


# --------------------------------------------------------------------------------------------
# labels and depth


def _plane_disparity(ground: GroundPlane, intr: Intrinsics, H: int, W: int) -> np.ndarray:
    """1/z of the ray/plane intersection per pixel, float64; <= 0 where the ray misses it."""
    n = np.asarray(ground.normal, dtype=np.float64).reshape(3)
    u = (np.arange(W, dtype=np.float64) - intr.cx) / intr.fx
    v = (np.arange(H, dtype=np.float64) - intr.cy) / intr.fy
    ndotr = n[0] * u[None, :] + n[1] * v[:, None] + n[2]
    return -ndotr / float(ground.height)


def hole_labels(
    mask: np.ndarray,
    labels: np.ndarray,
    candidates=None,
    *,
    max_unknowns: int = 12_000,
    vertical_weight: float = 0.05,
) -> np.ndarray:
    """Labels continued into the ``mask`` pixels: the argmax of the harmonic interpolation of
    each label's indicator from the known pixels (restricted to ``candidates``; the others are
    no-flux boundaries). Transitions across the hole join up smoothly, like level-set
    inpainting. The semantic labels are stacked vertically (ceiling, walls or sky, ground), so
    the diffusion is anisotropic (``vertical_weight``): a skyline or a wall's foot crossing the
    hole stays at its height instead of bending towards the hole's middle. Solved on a grid
    coarsened by 2^k so that it has at most ``max_unknowns`` unknowns, then interpolated
    bilinearly. Returns a copy of ``labels``, hole assigned."""
    out = labels.astype(np.uint8, copy=True)
    known = ~mask
    present = np.unique(labels[known])
    if candidates is not None:
        present = present[np.isin(present, np.asarray(list(candidates)))]
    if present.size == 0 or not mask.any():
        return out
    if present.size == 1:
        out[mask] = present[0]
        return out
    fixed = known & np.isin(labels, present)
    onehot = (labels[..., None] == present[None, None, :]).astype(np.float64)
    f = 1
    while mask.sum() / f**2 > max_unknowns:
        f *= 2
    if f == 1:
        field = harmonic_fill(onehot, mask, fixed, vertical_weight=vertical_weight)[mask]
    else:
        H, W = mask.shape
        h, w = -(-H // f), -(-W // f)

        def blocks(a):
            a = np.pad(a, ((0, h * f - H), (0, w * f - W)) + ((0, 0),) * (a.ndim - 2))
            return a.reshape(h, f, w, f, *a.shape[2:])

        hole_c = blocks(mask).any(axis=(1, 3))
        count = blocks(fixed.astype(np.float64)).sum(axis=(1, 3))
        fixed_c = ~hole_c & (count > 0)
        val_c = blocks(onehot * fixed[..., None]).sum(axis=(1, 3)) / np.maximum(count, 1)[..., None]
        field_c = harmonic_fill(val_c, hole_c, fixed_c, vertical_weight=vertical_weight)
        ys, xs = np.nonzero(mask)
        coords = np.stack([(ys - (f - 1) / 2) / f, (xs - (f - 1) / 2) / f])
        field = np.stack(
            [
                ndimage.map_coordinates(field_c[..., k], coords, order=1, mode="nearest")
                for k in range(present.size)
            ],
            axis=1,
        )
    out[mask] = present[np.argmax(field, axis=1)]
    return out


def _neighbour_shifts(H: int, W: int):
    """(dst, src) slice pairs of the four 4-neighbour shifts."""
    full = slice(None)
    for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
        ys = (slice(0, H - dy), slice(dy, H)) if dy >= 0 else (slice(-dy, H), slice(0, H + dy))
        xs = (slice(0, W - dx), slice(dx, W)) if dx >= 0 else (slice(-dx, W), slice(0, W + dx))
        yield (
            (ys[0] if dy else full, xs[0] if dx else full),
            (ys[1] if dy else full, xs[1] if dx else full),
        )


def fill_depth(
    mask: np.ndarray,
    depth: np.ndarray,
    labels: np.ndarray | None = None,
    intrinsics: Intrinsics | None = None,
    ground: GroundPlane | None = None,
    *,
    obstacle_iters: int = 4,
) -> tuple[np.ndarray, np.ndarray, dict]:
    """Background depth and labels for the ``mask`` pixels (see the module docstring).

    Returns (depth float32 [H, W] with known pixels unchanged, labels uint8 [H, W] with hole
    pixels assigned, facts). ``labels`` None: one class, or plane-consistent ground if a plane
    is given.
    """
    H, W = mask.shape
    known = ~mask & np.isfinite(depth) & (depth > 0)
    if not known.any():
        raise InputError("depth has no finite positive value outside the fill mask")
    disp = np.zeros((H, W), np.float64)
    disp[known] = 1.0 / depth[known].astype(np.float64)
    plane = None
    if ground is not None and intrinsics is not None and float(ground.height) > 0:
        plane = _plane_disparity(ground, intrinsics, H, W)
    if labels is not None:
        lab = labels.astype(np.uint8, copy=True)
    else:
        lab = np.full((H, W), VERTICAL, np.uint8)
        if plane is not None:
            on_plane = known & (plane > 0)
            on_plane[on_plane] = np.abs(disp[on_plane] / plane[on_plane] - 1) < PLANE_TOLERANCE
            lab[on_plane] = GROUND
    ground_known = ~mask & (lab == GROUND)
    other_known = ~mask & (lab != GROUND)
    is_ground = np.zeros((H, W), bool)
    info: dict = {"ground_plane": False}
    if plane is not None and ground_known.any():
        info["ground_plane"] = True
        # hole components touching known ground: ground where the plane is in front of the
        # continued non-ground surface
        comp, _ = ndimage.label(mask)
        touch = np.unique(comp[ndimage.binary_dilation(ground_known, np.ones((3, 3))) & mask])
        near_ground = np.isin(comp, touch[touch > 0])
        valid = mask & (plane > 0)
        out = disp.copy()
        if other_known.any():
            lab = hole_labels(mask, lab, candidates=np.setdiff1d(np.unique(lab), [GROUND]))
            groups = np.where(other_known | mask, lab.astype(np.int16), -1).astype(np.int16)
            vals = disp.copy()
            fixed = known & other_known
            # obstacle constraint: where the continued surface would stand in front of a known
            # ground pixel next to the hole (and so hide it), it passes through that pixel
            active = 0
            for it in range(max(obstacle_iters, 1)):
                other = harmonic_fill(vals, mask, fixed, groups=groups)
                viol = np.zeros((H, W), bool)
                for dst, src in _neighbour_shifts(H, W):
                    g = ground_known[dst] & known[dst] & (plane[dst] > 0) & ~fixed[dst]
                    v = g & mask[src] & (other[src] > plane[dst] * (1 + PLANE_TOLERANCE / 2))
                    if v.any():
                        viol[dst] |= v
                        gsub = groups[dst]
                        gsub[v] = groups[src][v]
                # a handful of pixels do not change the picture: not worth another solve
                if viol.sum() < OBSTACLE_MIN_PX or it == obstacle_iters - 1:
                    break
                vals[viol] = plane[viol]
                fixed |= viol
                active += int(viol.sum())
            info["obstacle_px"] = active
            is_ground = valid & near_ground & (plane >= other)
            keep = mask & ~is_ground
            out[keep] = other[keep]
        else:
            is_ground = valid & near_ground
            rest = mask & ~is_ground
            lab[rest] = GROUND  # only ground is known
            if rest.any():  # above the horizon: continue the known ground disparity
                out = harmonic_fill(out, rest, known)
        lab[is_ground] = GROUND
        out[is_ground] = plane[is_ground]
    else:
        lab = hole_labels(mask, lab)
        out = harmonic_fill(disp, mask, known, groups=lab)
    d = np.maximum(out[mask], 1e-9)
    result = depth.astype(np.float32, copy=True)
    result[mask] = (1.0 / d).astype(np.float32)
    info["ground_px"] = int(is_ground.sum())
    return result, lab, info


# --------------------------------------------------------------------------------------------
# backend


def _validate(image, mask, depth, labels, intrinsics, ground):
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"fill image must be [H, W, 3], got shape {image.shape}")
    if image.dtype.kind != "f":
        raise InputError(f"fill image must be float in [0, 1], got {image.dtype}")
    H, W = image.shape[:2]
    mask = np.asarray(mask)
    if mask.shape != (H, W):
        raise InputError(f"fill mask shape {mask.shape} does not match the image's {(H, W)}")
    mask = mask.astype(bool)
    if depth is not None:
        depth = np.asarray(depth)
        if depth.shape != (H, W):
            raise InputError(f"fill depth shape {depth.shape} does not match the image's {(H, W)}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (H, W):
            raise InputError(
                f"fill labels shape {labels.shape} does not match the image's {(H, W)}"
            )
        if labels.dtype.kind not in "ui" or (labels.size and labels.min() < 0):
            raise InputError(f"fill labels must be non-negative integers, got {labels.dtype}")
    if intrinsics is not None and (intrinsics.width, intrinsics.height) != (W, H):
        raise InputError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height}, the image is {W}x{H}"
        )
    if ground is not None:
        n = np.asarray(ground.normal, dtype=np.float64)
        if n.shape != (3,) or not np.all(np.isfinite(n)) or not np.isfinite(ground.height):
            raise InputError(f"bad ground plane: normal {n}, height {ground.height}")
    if mask.any() and mask.all():
        raise InputError("fill mask covers the whole image: nothing to continue from")
    known_rgb = image[~mask]
    if not np.all(np.isfinite(known_rgb)):
        raise InputError("fill image has non-finite values outside the mask")
    return image, mask, depth, labels


class ClassicalFill:
    """Embedded hidden-region fill: ground plane + harmonic disparity, PatchMatch colour."""

    name = "classical"

    def available(self) -> tuple[bool, str]:
        return True, "embedded, no weights"

    def fill(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        depth: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        intrinsics: Intrinsics | None = None,
        ground: GroundPlane | None = None,
        seed: int = 0,
        **options,
    ) -> FillResult:
        """Options: ``colour`` "patch" (default) | "diffusion"; ``patch_size`` (7);
        ``label_penalty`` (0.5, per patch pixel); ``max_search_targets`` (120000);
        ``sources`` ([H, W] bool: the known pixels patches may be copied from; default all);
        ``hole_labels`` ([H, W] uint8: the labels the colours of the hole continue, where
        given (< 255), instead of those inferred with the depth). Others are ignored."""
        t0 = time.perf_counter()
        image, mask, depth, labels = _validate(image, mask, depth, labels, intrinsics, ground)
        H, W = mask.shape
        n_hole = int(mask.sum())
        info: dict = {"backend": self.name, "hole_px": n_hole, "hole_fraction": n_hole / (H * W)}
        img = image.astype(np.float32, copy=True)
        if n_hole == 0:
            out_depth = (
                np.full((H, W), np.nan, np.float32)
                if depth is None
                else depth.astype(np.float32, copy=True)
            )
            info.update(colour_method="none", timings={"total_s": time.perf_counter() - t0})
            return FillResult(img, out_depth, mask.copy(), info)
        timings = {}
        t = time.perf_counter()
        if depth is not None:
            out_depth, lab, dinfo = fill_depth(mask, depth, labels, intrinsics, ground)
            info["depth"] = {"method": "ground plane + harmonic disparity", **dinfo}
        else:
            out_depth = np.full((H, W), np.nan, np.float32)
            lab = np.zeros((H, W), np.uint8) if labels is None else hole_labels(mask, labels)
            info["depth"] = {"method": "none (no depth given)"}
        info["hole_labels"] = {
            str(k): int(v) for k, v in zip(*np.unique(lab[mask], return_counts=True), strict=True)
        }
        given = options.get("hole_labels")
        if given is not None:
            given = np.asarray(given)
            if given.shape != (H, W):
                raise InputError(f"hole_labels shape {given.shape} does not match {(H, W)}")
            use = mask & (given < 255)
            lab = lab.copy()
            lab[use] = given[use]
        sources = options.get("sources")
        if sources is not None:
            sources = np.asarray(sources, bool)
            if sources.shape != (H, W):
                raise InputError(f"sources shape {sources.shape} does not match {(H, W)}")
        timings["depth_s"] = time.perf_counter() - t
        t = time.perf_counter()
        img[mask] = 0.0
        colour = str(options.get("colour", "patch"))
        if colour not in ("patch", "diffusion"):
            raise InputError(f"unknown colour fill {colour!r}; valid: patch, diffusion")
        if colour == "patch" and importlib.util.find_spec("numba") is None:
            colour = "diffusion"
            info["colour_note"] = "numba not installed: diffusion only"
        if colour == "patch":
            from . import patchmatch  # imports numba (~0.5 s): only when needed

            filled, pinfo = patchmatch.complete(
                img,
                mask,
                lab.astype(np.int32),
                diffuse_colour,
                blend=harmonic_fill if options.get("seam_blend", True) else None,
                seed=int(seed),
                patch=int(options.get("patch_size", 7)),
                label_penalty=float(options.get("label_penalty", 0.5)),
                max_search_targets=int(options.get("max_search_targets", 120_000)),
                sources=sources,
            )
            info["colour_method"] = "patchmatch" if pinfo["searched_levels"] else "diffusion"
            info["patchmatch"] = pinfo
        else:
            filled = diffuse_colour(img, mask)
            info["colour_method"] = "diffusion"
        rgb = image.astype(np.float32, copy=True)
        rgb[mask] = np.clip(filled[mask], 0.0, 1.0)
        timings["colour_s"] = time.perf_counter() - t
        timings["total_s"] = time.perf_counter() - t0
        info["timings"] = timings
        return FillResult(rgb, out_depth, mask.copy(), info)
