"""Learned surround: an outpainting loop of perspective views around the spawn (GPU option).

The equirectangular surround (world frame, see :mod:`.geometry`) is completed view by view on
the horizon ring, LucidDreamer / Text2Room style, with an inpainting model and a depth model
passed in as plain callables:

1. **views** (:func:`view_schedule`): yaw 0 is the photo (already known); ``n_views - 1``
   square perspective views at pitch 0 fill the rest of the ring, 8 positions 45 deg apart with
   90 deg fov by default (each view overlaps each neighbour by half), in the order +-45, +-90,
   +-135 and 180 last, so the closing view has known content on both of its sides.
2. **render** (:func:`render_view`): what the world already shows in a view (colour, z-depth and
   a known mask sampled from the equirect, including views written earlier in the loop).
3. **inpaint**: the mask (:func:`conditioning_mask`) is every unknown pixel, grown ``dilate_px``
   into the known part so the model repaints the seam, with known islands narrower than
   ``erode_px`` dropped. ``inpaint(image, mask, prompt, seed + k)`` for the k-th view.
4. **colour** (:func:`harmonise_colour`): the generated image is matched to the known pixels of
   the view (per-channel mean / std in Lab over the known pixels outside the mask, which the
   model was asked to keep: removes the VAE's colour shift), then the remaining offset at the
   seam is feathered in (``fill.diffusion.feathered_correction``).
5. **depth** (:func:`align_view_depth`): the depth model's relative inverse depth of the
   composed view is aligned to the known (rendered) inverse depth by a robust scale and shift
   (:func:`robust_scale_shift`: Theil-Sen start, Tukey-biweight IRLS); then the new pixels on
   the seam take the known surface's depth continued one pixel (the new surface meets the old
   one exactly, except across depth edges) and that residual is spread into the new region by
   a screened Laplace solve (:func:`boundary_correction`), fading out far from the seam. Optionally
   ground pixels snap to the analytic plane ``y = -camera_height`` and far pixels go to the sky
   dome's distance.
6. **write back** (:func:`write_view`): equirect pixels inside the view's frustum that are not
   yet known take the view's colour and distance and become known.

Camera of a view (:class:`View`): OpenCV-like axes, x right, y down, z forward (along the view's
yaw / pitch); pixel centres at integer coordinates, principal point at the image centre,
``f = (width / 2) / tan(fov / 2)`` (``fov_deg`` is horizontal, square pixels).
Depth in a view is z-depth along its optical axis; depth in the equirect is distance along the
ray (``distance = z / cos(angle to the axis)``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
from scipy import ndimage, sparse
from scipy.sparse import linalg as splinalg

from ..errors import InputError
from .geometry import direction_to_lonlat, directions, sample_equirect

#: inpaint(image [h, w, 3] float in [0, 1], mask [h, w] bool (True = generate), prompt, seed)
#: -> image [h, w, 3] float in [0, 1]
InpaintFn = Callable[[np.ndarray, np.ndarray, str, int], np.ndarray]
#: estimate_depth(image [h, w, 3] float in [0, 1]) -> relative inverse depth [h, w] (any scale
#: and shift: disparity of a relative model, or 1 / z of a metric one)
DepthFn = Callable[[np.ndarray], np.ndarray]


# ----------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class LearnedSurroundConfig:
    """The learned surround loop. Steps, guidance and the negative prompt are the fill
    config's (``FillConfig``): they belong to the inpainting callable (:func:`from_pipelines`)."""

    n_views: int = 8
    """Positions on the horizon ring, the photo's (yaw 0) included: ``n_views - 1`` views are
    generated (even, >= 4)."""
    fov_deg: float = 90.0
    """Horizontal (= vertical) field of view of each square view, degrees."""
    first_yaw_deg: float = 45.0
    """Yaw of the first pair of views (+- this); the others are spread evenly up to 180."""
    pitch_deg: float = 0.0
    """Pitch of every view (> 0 looks up)."""
    size: int = 512
    """Side of each view in pixels (SD 1.5/2 inpainting: 512, SDXL: 1024)."""
    dilate_px: int = 8
    """The inpainting mask grows this far into the known part (the model repaints the seam)."""
    erode_px: int = 4
    """Known islands (and thin known slivers) up to this half-width are regenerated."""
    colour: str = "lab"
    """Colour harmonisation of the generated pixels: lab, rgb (mean/std over the overlap) or
    off."""
    feather_px: float = 8.0
    """Width of the feathered seam colour correction (0 = none)."""
    boundary_decay: float = 0.15
    """The depth boundary correction fades over this fraction of the view side (0 = pure
    harmonic: no fade)."""
    min_fit_px: int = 50
    """Fewest known overlap pixels to align the learned depth; fewer: the prefill's depth."""
    depth_edge_ratio: float = 2.0
    """A new pixel on the seam whose aligned depth differs from its known neighbours' by more
    than this factor is a depth edge: not pulled onto the known surface (0 = never)."""
    ground_plane: bool = True
    """New pixels below the horizon that the aligned depth puts beyond the ground plane, or
    within ``ground_snap`` of it, take the plane's analytic depth (needs ``camera_height``)."""
    ground_snap: float = 0.1
    """Relative distance to the plane within which a new ground pixel snaps to it."""


# ----------------------------------------------------------------------------- views


@dataclass(frozen=True)
class View:
    """One perspective view of the loop (see the module docstring for its camera)."""

    yaw_deg: float
    """> 0 turns right (toward +X); 0 = the photo's direction (-Z)."""
    pitch_deg: float
    """> 0 looks up."""
    fov_deg: float
    """Horizontal field of view."""
    width: int
    height: int
    order: int
    """Position in the loop (0 first); view ``order`` is inpainted with seed + order."""

    @property
    def focal(self) -> float:
        return 0.5 * self.width / math.tan(math.radians(self.fov_deg) / 2)

    def world_from_camera(self) -> np.ndarray:
        """[3, 3] rotation, columns = the camera's x (right), y (down), z (forward) axes in the
        world frame: ``d_world = R @ d_cam``."""
        y, p = math.radians(self.yaw_deg), math.radians(self.pitch_deg)
        fwd = np.array([math.sin(y) * math.cos(p), math.sin(p), -math.cos(y) * math.cos(p)])
        right = np.array([math.cos(y), 0.0, math.sin(y)])
        down = np.cross(fwd, right)
        return np.stack([right, down, fwd], 1)

    def rays(self) -> tuple[np.ndarray, np.ndarray]:
        """(d [h, w, 3] unit world directions of the pixel centres, cos [h, w] = their z
        component in the camera, so ``z_depth = distance * cos``)."""
        f = self.focal
        xs = (np.arange(self.width) - (self.width - 1) / 2) / f
        ys = (np.arange(self.height) - (self.height - 1) / 2) / f
        X, Y = np.meshgrid(xs, ys)
        cam = np.stack([X, Y, np.ones_like(X)], -1)
        n = np.linalg.norm(cam, axis=-1)
        d = (cam / n[..., None]) @ self.world_from_camera().T
        return d, 1.0 / n


def view_schedule(
    n_views: int = 8,
    fov_deg: float = 90.0,
    first_yaw_deg: float = 45.0,
    *,
    pitch_deg: float = 0.0,
    size: int = 512,
) -> list[View]:
    """The views of the loop, in inpainting order.

    ``n_views`` ring positions including the photo's (yaw 0, not generated): views at
    ``+-first_yaw_deg``, then evenly spaced on each side up to 180, which comes last (with the
    defaults: +45, -45, +90, -90, +135, -135, 180). Neighbouring positions must be less than
    ``fov_deg`` apart so every view overlaps both of its neighbours."""
    if isinstance(n_views, bool) or not isinstance(n_views, int) or n_views < 4 or n_views % 2:
        raise InputError(f"n_views must be an even integer >= 4, got {n_views!r}")
    if not 10.0 <= fov_deg <= 150.0:
        raise InputError(f"fov_deg must be in [10, 150] degrees, got {fov_deg}")
    if not 0.0 < first_yaw_deg < 180.0:
        raise InputError(f"first_yaw_deg must be in (0, 180) degrees, got {first_yaw_deg}")
    if not -60.0 <= pitch_deg <= 60.0:
        raise InputError(f"pitch_deg must be in [-60, 60] degrees, got {pitch_deg}")
    if isinstance(size, bool) or not isinstance(size, int) or size < 16:
        raise InputError(f"size must be an integer >= 16 px, got {size!r}")
    pairs = n_views // 2 - 1
    step = (180.0 - first_yaw_deg) / pairs
    side = [first_yaw_deg + j * step for j in range(pairs)]
    gaps = np.diff([0.0, *side, 180.0])
    if gaps.max() >= fov_deg:
        raise InputError(
            f"{n_views} views of {fov_deg:g} deg starting at {first_yaw_deg:g} deg leave "
            f"{gaps.max():g} deg between neighbours: more views, a wider fov or a smaller "
            "first_yaw_deg"
        )
    yaws = [y for a in side for y in (a, -a)] + [180.0]
    return [
        View(float(y), float(pitch_deg), float(fov_deg), size, size, k) for k, y in enumerate(yaws)
    ]


# ----------------------------------------------------------------------------- render / write


class ViewImage(NamedTuple):
    """A perspective view: rgb [h, w, 3] float32 (sampled everywhere, so unknown pixels carry
    the equirect's prefill, NaN as 0), depth [h, w] float32 z-depth (NaN where unknown), known
    [h, w] bool (every equirect pixel it is interpolated from is known)."""

    rgb: np.ndarray
    depth: np.ndarray
    known: np.ndarray


class PanoUpdate(NamedTuple):
    """The equirect after :func:`write_view`: rgb [Hp, Wp, 3], distance [Hp, Wp], known
    [Hp, Wp] and written [Hp, Wp] bool (the pixels this view wrote)."""

    rgb: np.ndarray
    distance: np.ndarray
    known: np.ndarray
    written: np.ndarray


def _check_pano(pano_rgb, pano_dist, known) -> None:
    if pano_rgb.ndim != 3 or pano_rgb.shape[2] != 3:
        raise InputError(f"pano_rgb must be [Hp, Wp, 3], got {pano_rgb.shape}")
    Hp, Wp = pano_rgb.shape[:2]
    if Wp != 2 * Hp:
        raise InputError(f"the equirect must be twice as wide as high, got {Wp}x{Hp}")
    if pano_dist.shape != (Hp, Wp) or known.shape != (Hp, Wp):
        raise InputError(
            f"pano_dist {pano_dist.shape} and known {known.shape} must be [{Hp}, {Wp}]"
        )
    if known.dtype != bool:
        raise InputError(f"known must be bool, got {known.dtype}")


def _inverse_distance(pano_dist: np.ndarray, valid: np.ndarray) -> np.ndarray:
    ok = valid & np.isfinite(pano_dist) & (pano_dist > 0)
    return np.where(ok, 1.0 / np.where(ok, pano_dist, 1.0), 0.0).astype(np.float32)


def render_view(
    pano_rgb: np.ndarray,  # [Hp, Wp, 3] float
    pano_dist: np.ndarray,  # [Hp, Wp] float, distance along the ray (NaN = none)
    known: np.ndarray,  # [Hp, Wp] bool
    view: View,
    size: int | None = None,
) -> ViewImage:
    """The view ``view`` (``size`` overrides its side) sampled bilinearly from the equirect.

    Distance is interpolated as inverse distance (a far sky mixes in as ~0, never as a huge
    number) and converted to z-depth. A view pixel is known where the known mask, interpolated
    the same way, is 1 (all its equirect neighbours are known)."""
    _check_pano(pano_rgb, pano_dist, known)
    if size is not None:
        view = View(view.yaw_deg, view.pitch_deg, view.fov_deg, size, size, view.order)
    d, cos = view.rays()
    lon, lat = direction_to_lonlat(d)
    rgb = sample_equirect(np.nan_to_num(pano_rgb.astype(np.float32)), lon, lat)
    kn = sample_equirect(known.astype(np.float32), lon, lat) > 1.0 - 1e-4
    inv = sample_equirect(_inverse_distance(pano_dist, known), lon, lat)
    ok = kn & (inv > 0)
    depth = np.where(ok, cos / np.where(ok, inv, 1.0), np.nan).astype(np.float32)
    return ViewImage(rgb.astype(np.float32), depth, kn)


def _sample_view(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    coords = [np.clip(v, 0, img.shape[0] - 1), np.clip(u, 0, img.shape[1] - 1)]
    if img.ndim == 2:
        return ndimage.map_coordinates(img, coords, order=1, mode="nearest")
    return np.stack(
        [ndimage.map_coordinates(img[..., c], coords, order=1, mode="nearest") for c in range(3)],
        -1,
    )


def write_view(
    pano_rgb: np.ndarray,  # [Hp, Wp, 3] float
    pano_dist: np.ndarray,  # [Hp, Wp] float
    known: np.ndarray,  # [Hp, Wp] bool
    view: View,
    rgb: np.ndarray,  # [h, w, 3] float, the view's colours
    depth: np.ndarray,  # [h, w] float, the view's z-depth
    valid: np.ndarray | None = None,  # [h, w] bool, pixels that may be written (None = all)
) -> PanoUpdate:
    """The inverse of :func:`render_view`: every equirect pixel that is not yet known and whose
    direction projects inside the view (and onto ``valid`` pixels: all four interpolation
    neighbours valid) takes the view's bilinearly sampled colour and distance (``z / cos``,
    interpolated as 1 / distance like :func:`render_view`) and becomes known. Inputs are not
    modified; a pixel whose sampled depth is not finite and positive gets distance NaN (its
    colour is still written)."""
    _check_pano(pano_rgb, pano_dist, known)
    h, w = depth.shape
    if rgb.shape != (h, w, 3):
        raise InputError(f"view rgb must be [{h}, {w}, 3], got {rgb.shape}")
    if valid is not None and valid.shape != (h, w):
        raise InputError(f"valid must be [{h}, {w}], got {valid.shape}")
    view = View(view.yaw_deg, view.pitch_deg, view.fov_deg, w, h, view.order)
    Hp, Wp = known.shape
    f = view.focal
    R = view.world_from_camera()
    # camera z of every equirect direction, separably (d = (sin lon cos lat, sin lat,
    # -cos lon cos lat)), then the full projection only for the unknown ones in front
    lon = -math.pi + (np.arange(Wp) + 0.5) * 2 * math.pi / Wp
    lat = math.pi / 2 - (np.arange(Hp) + 0.5) * math.pi / Hp
    cl, sl = np.cos(lat)[:, None], np.sin(lat)[:, None]
    z_all = cl * (R[0, 2] * np.sin(lon) - R[2, 2] * np.cos(lon)) + sl * R[1, 2]
    corner = math.hypot((w - 1) / 2 + 0.5, (h - 1) / 2 + 0.5) / f  # tan of the widest angle
    cand = ~known & (z_all > max(1e-6, 1.0 / math.sqrt(1.0 + corner * corner) - 1e-6))
    jj, ii = np.nonzero(cand)
    dt = np.stack([np.sin(lon[ii]) * cl[jj, 0], sl[jj, 0], -np.cos(lon[ii]) * cl[jj, 0]], -1)
    cam = dt @ R  # rows: R^T d
    z = cam[:, 2]
    u = f * cam[:, 0] / z + (w - 1) / 2
    v = f * cam[:, 1] / z + (h - 1) / 2
    inside = (u >= -0.5) & (u <= w - 0.5) & (v >= -0.5) & (v <= h - 0.5)
    u, v = u[inside], v[inside]
    keep = np.ones(len(u), bool)
    if valid is not None:
        keep = _sample_view(valid.astype(np.float32), u, v) > 1.0 - 1e-4
        u, v = u[keep], v[keep]
    ok_d = np.isfinite(depth) & (depth > 0)
    _, cos = view.rays()
    inv = np.where(ok_d, cos / np.where(ok_d, depth, 1.0), 0.0).astype(np.float32)  # 1 / dist
    inv_s = _sample_view(inv, u, v)
    depth_ok = _sample_view(ok_d.astype(np.float32), u, v) > 1.0 - 1e-4
    good = depth_ok & (inv_s > 0)
    dist = np.where(good, 1.0 / np.where(good, inv_s, 1.0), np.nan)
    idx = (jj * Wp + ii)[inside][keep]
    out_rgb = pano_rgb.astype(np.float32, copy=True)
    out_dist = pano_dist.astype(np.float32, copy=True)
    out_known = known.copy()
    written = np.zeros_like(known)
    out_rgb.reshape(-1, 3)[idx] = _sample_view(rgb.astype(np.float32), u, v)
    out_dist.reshape(-1)[idx] = dist
    out_known.reshape(-1)[idx] = True
    written.reshape(-1)[idx] = True
    return PanoUpdate(out_rgb, out_dist, out_known, written)


# ----------------------------------------------------------------------------- mask


def conditioning_mask(known_view: np.ndarray, dilate_px: int, erode_px: int) -> np.ndarray:
    """The inpainting mask [h, w] bool (True = generate) of a view with known pixels
    ``known_view`` [h, w] bool: every unknown pixel; known islands that a disc of radius
    ``erode_px`` does not fit into (a morphological opening of the known part, Euclidean); and
    the known pixels within ``dilate_px`` of the rest (the seam the model repaints)."""
    if known_view.ndim != 2 or known_view.dtype != bool:
        raise InputError(
            f"known_view must be a bool [h, w], got {known_view.dtype} {known_view.shape}"
        )
    if dilate_px < 0 or erode_px < 0:
        raise InputError(f"dilate_px and erode_px must be >= 0, got {dilate_px}, {erode_px}")
    kept = known_view
    if erode_px > 0 and kept.any():
        core = ndimage.distance_transform_edt(kept) > erode_px
        kept = (ndimage.distance_transform_edt(~core) <= erode_px) & kept if core.any() else core
    mask = ~kept
    if dilate_px > 0 and mask.any() and kept.any():
        mask |= ndimage.distance_transform_edt(kept) <= dilate_px
    return mask


# ----------------------------------------------------------------------------- colour


def harmonise_colour(
    gen: np.ndarray,  # [h, w, 3] float, the generated image
    ref: np.ndarray,  # [h, w, 3] float, the known colours (valid on `overlap`)
    overlap: np.ndarray,  # [h, w] bool, pixels where both are meaningful
    mode: str = "lab",
    max_gain: float = 2.0,
) -> tuple[np.ndarray, dict]:
    """``gen`` with each channel (of CIELAB for ``lab``, of RGB for ``rgb``) mapped by the
    affine map that sends its mean / std over ``overlap`` to ``ref``'s there (gain clipped to
    [1 / max_gain, max_gain]); returns it clipped to [0, 1] and facts. Fewer than 16 overlap
    pixels, or ``off``: unchanged."""
    if mode not in ("lab", "rgb", "off"):
        raise InputError(f"colour mode must be lab, rgb or off, got {mode!r}")
    gen = np.clip(gen, 0.0, 1.0).astype(np.float32)
    if mode == "off" or overlap.sum() < 16:
        return gen, {"mode": "off" if mode == "off" else "skipped (no overlap)"}
    from skimage import color

    ref = np.clip(np.nan_to_num(ref), 0.0, 1.0)
    g = color.rgb2lab(gen) if mode == "lab" else gen.astype(np.float64)
    r = color.rgb2lab(ref) if mode == "lab" else ref.astype(np.float64)
    mg, sg = g[overlap].mean(0), g[overlap].std(0)
    mr, sr = r[overlap].mean(0), r[overlap].std(0)
    gain = np.clip(sr / np.maximum(sg, 1e-6), 1.0 / max_gain, max_gain)
    gain = np.where((sg < 1e-6) & (sr < 1e-6), 1.0, gain)
    out = (g - mg) * gain + mr
    out = color.lab2rgb(out) if mode == "lab" else out
    facts = {"mode": mode, "gain": gain.round(4).tolist(), "offset": (mr - mg).round(4).tolist()}
    return np.clip(out, 0.0, 1.0).astype(np.float32), facts


# ----------------------------------------------------------------------------- depth


def robust_scale_shift(
    pred: np.ndarray,  # [N] predicted inverse depth at the overlap
    target: np.ndarray,  # [N] known inverse depth there
    *,
    iters: int = 10,
) -> tuple[float, float, float, float] | None:
    """Robust ``target ~= s * pred + t``: a Theil-Sen start (median slope over all pairs of up
    to 400 evenly spread samples, median intercept), then Tukey-biweight iteratively reweighted
    least squares (c = 4.685 sigma, sigma from the MAD). Robust to ~25 % outliers (another
    surface, a bad prediction). Returns (s, t, median relative residual of the inliers, inlier
    share) or None when ill-posed (fewer than 20 pixels, no spread, s <= 0)."""
    pred = np.asarray(pred, np.float64).ravel()
    target = np.asarray(target, np.float64).ravel()
    if len(pred) < 20 or not (np.isfinite(pred).all() and np.isfinite(target).all()):
        return None
    if np.ptp(pred) <= 1e-6 * np.abs(pred).max():  # a flat prediction says nothing
        return None
    order = np.argsort(pred, kind="stable")
    idx = order[np.linspace(0, len(pred) - 1, min(len(pred), 400)).round().astype(int)]
    p, k = pred[idx], target[idx]
    i, j = np.triu_indices(len(idx), 1)
    dp = p[j] - p[i]
    ok = np.abs(dp) > 1e-9 * np.ptp(pred)
    if not ok.any():
        return None
    s = float(np.median((k[j] - k[i])[ok] / dp[ok]))
    t = float(np.median(target - s * pred))
    w = np.ones_like(pred)
    for _ in range(iters):
        r = target - s * pred - t
        sigma = 1.4826 * np.median(np.abs(r - np.median(r))) + 1e-12 * (np.abs(target).max() + 1)
        u = r / (4.685 * sigma)
        w = np.where(np.abs(u) < 1.0, (1.0 - u * u) ** 2, 0.0)
        if w.sum() < 10:
            return None
        sw = np.sqrt(w)
        A = np.stack([pred * sw, sw], 1)
        s, t = (float(x) for x in np.linalg.lstsq(A, target * sw, rcond=None)[0])
    if not (s > 0 and math.isfinite(s) and math.isfinite(t)):
        return None
    inl = w > 0
    rel = np.abs(s * pred + t - target)[inl] / np.maximum(np.abs(target[inl]), 1e-12)
    return s, t, float(np.median(rel)), float(inl.mean())


_NEIGHBOURS = ((0, 1), (0, -1), (1, 0), (-1, 0))


def boundary_correction(
    residual: np.ndarray,  # [h, w] float, valid on `fixed`
    fixed: np.ndarray,  # [h, w] bool, Dirichlet pixels (the known border)
    free: np.ndarray,  # [h, w] bool, pixels to solve for (the new region)
    decay_px: float = 0.0,
) -> np.ndarray:
    """The correction c [h, w] float64: ``residual`` on ``fixed``, 0 outside ``fixed | free``,
    and on ``free`` the solution of the screened Laplace equation ``(lambda - Laplacian) c = 0``
    (5-point stencil, ``lambda = 1 / decay_px**2``; 0 = harmonic) with c = residual on its
    ``fixed`` 4-neighbours and zero flux across every other edge (image border, other pixels).
    So c equals the border residual at the border and fades like ``exp(-distance / decay_px)``
    away from it. Free pixels without a path to a fixed one get 0."""
    h, w = free.shape
    c = np.where(fixed, residual, 0.0).astype(np.float64)
    free = free & ~fixed
    n = int(free.sum())
    if n == 0 or not fixed.any():
        return c
    index = np.full((h, w), -1, np.int64)
    index[free] = np.arange(n)
    ys, xs = np.nonzero(free)
    lam = 1.0 / decay_px**2 if decay_px > 0 else 1e-9
    diag = np.full(n, lam)
    rhs = np.zeros(n)
    rows, cols = [], []
    for dy, dx in _NEIGHBOURS:
        ny, nx = ys + dy, xs + dx
        inb = (ny >= 0) & (ny < h) & (nx >= 0) & (nx < w)
        ny, nx = np.clip(ny, 0, h - 1), np.clip(nx, 0, w - 1)
        nb_free = inb & free[ny, nx]
        nb_fixed = inb & fixed[ny, nx]
        diag += nb_free | nb_fixed
        rows.append(np.flatnonzero(nb_free))
        cols.append(index[ny, nx][nb_free])
        rhs += np.where(nb_fixed, c[ny, nx], 0.0)
    r = np.concatenate(rows)
    A = sparse.csr_matrix(
        (
            np.concatenate([diag, -np.ones(len(r))]),
            (np.r_[np.arange(n), r], np.r_[np.arange(n), np.concatenate(cols)]),
        ),
        shape=(n, n),
    )
    # a minimum-degree ordering of the symmetric grid matrix: ~2x faster than COLAMD here
    c[free] = splinalg.spsolve(A.tocsc(), rhs, permc_spec="MMD_AT_PLUS_A")
    return c


def align_view_depth(
    pred_inv: np.ndarray,  # [h, w] predicted (relative) inverse depth of the composed view
    known_depth: np.ndarray,  # [h, w] z-depth, valid on `fit`
    fit: np.ndarray,  # [h, w] bool, known pixels to align to (overlap, sky excluded)
    new: np.ndarray,  # [h, w] bool, pixels whose depth is wanted
    *,
    decay_px: float = 0.0,
    min_fit_px: int = 50,
    edge_ratio: float = 2.0,
) -> tuple[np.ndarray, dict] | None:
    """Inverse z-depth [h, w] float64 of the ``new`` pixels (NaN elsewhere), or None when the
    alignment is ill-posed (fewer than ``min_fit_px`` pixels to fit, no spread).

    1. ``s * pred + t`` by :func:`robust_scale_shift` of ``pred_inv`` to ``1 / known_depth``
       over ``fit``;
    2. the seam: each new pixel 4-adjacent to ``fit`` pixels takes the known surface's inverse
       depth continued one pixel from those neighbours (linearly from the next known pixel
       behind each, the step clipped to 10 %), so the new surface meets the old one, unless the
       two differ by more than ``edge_ratio`` (a depth edge the model put there: left alone);
    3. the residual on that seam is spread over the rest of the new region by
       :func:`boundary_correction` (screened Laplace, fading over ``decay_px``)."""
    if int(fit.sum()) < max(min_fit_px, 20):
        return None
    target = 1.0 / known_depth[fit].astype(np.float64)
    res = robust_scale_shift(pred_inv[fit], target)
    if res is None:
        return None
    s, t, rel, inliers = res
    aligned = s * pred_inv.astype(np.float64) + t
    known_inv = np.where(fit, 1.0 / np.where(fit, known_depth, 1.0), 0.0)
    h, w = new.shape
    total = np.zeros((h, w))
    count = np.zeros((h, w))
    pad_inv = np.pad(known_inv, 2)
    pad_fit = np.pad(fit, 2)
    for dy, dx in _NEIGHBOURS:
        # the known surface continued one pixel: from its neighbour b and the next one b2
        b = np.s_[2 + dy : 2 + dy + h, 2 + dx : 2 + dx + w]
        b2 = np.s_[2 + 2 * dy : 2 + 2 * dy + h, 2 + 2 * dx : 2 + 2 * dx + w]
        slope = np.where(pad_fit[b] & pad_fit[b2], pad_inv[b] - pad_inv[b2], 0.0)
        slope = np.clip(slope, -0.1 * pad_inv[b], 0.1 * pad_inv[b])
        total += np.where(pad_fit[b], pad_inv[b] + slope, 0.0)
        count += pad_fit[b]
    seam = new & (count > 0)
    meet = np.where(seam, total / np.maximum(count, 1), 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(seam, meet / aligned, 1.0)
    edge = np.zeros_like(seam)
    if edge_ratio > 0:
        edge = seam & ~((ratio > 1.0 / edge_ratio) & (ratio < edge_ratio))
    seam &= ~edge
    residual = np.where(seam, meet - aligned, 0.0)
    corr = boundary_correction(residual, seam, new, decay_px)
    inv = np.where(new, aligned + corr, np.nan)
    facts = {
        "scale": s,
        "shift": t,
        "median_relative_residual": rel,
        "inlier_share": inliers,
        "fit_px": int(fit.sum()),
        "seam_px": int(seam.sum()),
        "seam_edge_px": int(edge.sum()),
        "seam_residual_median": (
            float(np.median(np.abs(residual[seam]) / np.maximum(meet[seam], 1e-12)))
            if seam.any()
            else 0.0
        ),
    }
    return inv, facts


# ----------------------------------------------------------------------------- the loop


class RingResult(NamedTuple):
    """rgb [Hp, Wp, 3] float32, distance [Hp, Wp] float32, known [Hp, Wp] bool, facts."""

    rgb: np.ndarray
    distance: np.ndarray
    known: np.ndarray
    facts: dict


def _edge_known(known_view: np.ndarray) -> tuple[float, float]:
    band = max(1, known_view.shape[1] // 10)
    return float(known_view[:, :band].mean()), float(known_view[:, -band:].mean())


def _new_depth(
    vi: ViewImage,
    comp: np.ndarray,
    new: np.ndarray,
    prefill_z: np.ndarray,
    estimate_depth: DepthFn | None,
    config: LearnedSurroundConfig,
    camera_height: float | None,
    sky_distance: float | None,
    d: np.ndarray,
    cos: np.ndarray,
) -> tuple[np.ndarray, dict]:
    """z-depth [h, w] of the composed view (known depth where known, new depth on ``new``)."""
    h, w = new.shape
    facts: dict = {}
    inv = None
    if estimate_depth is None:
        facts["why"] = "no depth model"
    else:
        pred = np.asarray(estimate_depth(comp), np.float64)
        if pred.shape != (h, w) or not np.isfinite(pred).all():
            raise InputError(f"estimate_depth must return finite [{h}, {w}], got {pred.shape}")
        known_z = vi.depth
        fit = vi.known & np.isfinite(known_z) & (known_z > 0)
        if sky_distance is not None:  # the sky dome's distance says nothing about the scene
            fit &= known_z / cos < 0.9 * sky_distance
        res = align_view_depth(
            pred, known_z, fit, new,
            decay_px=config.boundary_decay * max(h, w), min_fit_px=config.min_fit_px,
            edge_ratio=config.depth_edge_ratio,
        )  # fmt: skip
        if res is None:
            facts["why"] = (
                f"ill-posed alignment (fewer than {config.min_fit_px} known pixels to align "
                "to, or a flat prediction)"
            )
        else:
            inv, afacts = res
            facts |= {"method": "learned, scale+shift in inverse depth + boundary correction"}
            facts |= afacts
    if inv is None:
        z = prefill_z
        facts["method"] = "prefill (the equirect's distance)"
        missing = new & ~np.isfinite(z)
        if missing.any() and camera_height is not None and sky_distance is not None:
            below = d[..., 1] < -1e-6
            plane = camera_height / np.maximum(-d[..., 1], 1e-6)
            analytic = np.where(below, np.minimum(plane, sky_distance), sky_distance) * cos
            z = np.where(missing, analytic, z)
            facts["method"] += " and the ground plane / sky dome where it has none"
        if not np.isfinite(z[new]).all():
            raise InputError(
                "no depth for the new pixels: pass estimate_depth with known overlap to align "
                "it to, a prefilled pano_dist, or camera_height and sky_distance"
            )
        inv = np.where(new, 1.0 / z, np.nan)
    far = sky_distance if sky_distance is not None else 1e4
    floor = 1.0 / far
    z = 1.0 / np.maximum(np.where(new, inv, 1.0), floor / cos)  # z-depth; inv <= 0: far away
    dist = z / cos
    ground = np.zeros_like(new)
    if config.ground_plane and camera_height is not None:
        below = new & (d[..., 1] < -1e-6)
        plane = np.where(below, camera_height / np.maximum(-d[..., 1], 1e-6), np.inf)
        ground = below & (dist >= plane * (1.0 - config.ground_snap))
        dist = np.where(ground, plane, dist)
    sky = np.zeros_like(new)
    if sky_distance is not None:
        sky = new & ~ground & (dist >= 0.9 * sky_distance)
        dist = np.where(sky, sky_distance, np.minimum(dist, sky_distance))
    facts["ground_px"], facts["sky_px"] = int(ground.sum()), int(sky.sum())
    out = np.where(new, dist * cos, vi.depth).astype(np.float32)
    return out, facts


def outpaint_ring(
    pano_rgb: np.ndarray,  # [Hp, Wp, 3] float in [0, 1]; unknown pixels: a prefill or anything
    pano_dist: np.ndarray,  # [Hp, Wp] float distance along the ray (unknown: a prefill or NaN)
    known: np.ndarray,  # [Hp, Wp] bool, the pixels to keep (the photo, ...)
    inpaint: InpaintFn,
    estimate_depth: DepthFn | None,
    config: LearnedSurroundConfig | None = None,
    *,
    prompt: str = "",
    seed: int = 0,
    camera_height: float | None = None,
    sky_distance: float | None = None,
    progress: Callable[[int, int, View], None] | None = None,
) -> RingResult:
    """Complete the horizon ring of the equirect view by view (see the module docstring).

    View k (``view_schedule`` order) is inpainted with ``seed + k``; each is conditioned on all
    that is known so far (the photo, views written earlier). ``estimate_depth`` None: the new
    pixels keep the prefill's distance (``pano_dist``). ``camera_height``: the ground plane
    ``y = -camera_height`` for the ground snap; ``sky_distance``: the sky dome's radius (known
    pixels that far are left out of the depth alignment; new ones beyond 0.9 of it go to it).
    Returns the completed equirect (only pixels unknown before were changed) and facts: per
    view the hole share, the known share on its left / right edges, colour and depth alignment
    (scale, shift, residuals)."""
    config = config or LearnedSurroundConfig()
    _check_pano(pano_rgb, pano_dist, known)
    if camera_height is not None and not camera_height > 0:
        raise InputError(f"camera_height must be > 0, got {camera_height}")
    if sky_distance is not None and not sky_distance > 0:
        raise InputError(f"sky_distance must be > 0, got {sky_distance}")
    views = view_schedule(
        config.n_views, config.fov_deg, config.first_yaw_deg,
        pitch_deg=config.pitch_deg, size=config.size,
    )  # fmt: skip
    t0 = time.perf_counter()
    rgb = pano_rgb.astype(np.float32, copy=True)
    dist = pano_dist.astype(np.float32, copy=True)
    kn = known.copy()
    all_known = np.ones_like(known)
    view_facts = []
    for view in views:
        if progress is not None:
            progress(view.order, len(views), view)
        tv = time.perf_counter()
        vi = render_view(rgb, dist, kn, view)
        new = ~vi.known
        left, right = _edge_known(vi.known)
        vf: dict = {
            "order": view.order,
            "yaw_deg": view.yaw_deg,
            "pitch_deg": view.pitch_deg,
            "seed": seed + view.order,
            "hole_share": float(new.mean()),
            "known_left": left,
            "known_right": right,
        }
        view_facts.append(vf)
        if not new.any():
            vf["skipped"] = "nothing unknown in this view"
            continue
        mask = conditioning_mask(vi.known, config.dilate_px, config.erode_px)
        vf["mask_share"] = float(mask.mean())
        image = np.clip(vi.rgb, 0.0, 1.0)
        gen = np.asarray(inpaint(image, mask, prompt, seed + view.order), np.float32)
        if gen.shape != image.shape or not np.isfinite(gen).all():
            raise InputError(f"inpaint must return finite {image.shape}, got {gen.shape}")
        # the model's colour shift, measured where it was asked to keep the known colours
        gen, vf["colour"] = harmonise_colour(gen, image, vi.known & ~mask, config.colour)
        if config.feather_px > 0 and vi.known.any():
            from ..fill.diffusion import feathered_correction

            gen = np.clip(gen + feathered_correction(gen, image, new, config.feather_px), 0, 1)
        comp = np.where(new[..., None], gen, image).astype(np.float32)
        d, cos = view.rays()
        lon, lat = direction_to_lonlat(d)
        # the prefill's z-depth (where all four equirect neighbours have one)
        pre_inv = sample_equirect(_inverse_distance(dist, all_known), lon, lat)
        has = sample_equirect((np.isfinite(dist) & (dist > 0)).astype(np.float32), lon, lat)
        pre_ok = (has > 1.0 - 1e-4) & (pre_inv > 0)
        prefill_z = np.where(pre_ok, cos / np.where(pre_ok, pre_inv, 1.0), np.nan)
        depth, vf["depth"] = _new_depth(
            vi, comp, new, prefill_z, estimate_depth, config, camera_height,
            sky_distance, d, cos,
        )  # fmt: skip
        upd = write_view(rgb, dist, kn, view, comp, depth)
        rgb, dist, kn = upd.rgb, upd.distance, upd.known
        vf["written_px"] = int(upd.written.sum())
        vf["time_s"] = round(time.perf_counter() - tv, 3)
    _, lat, _ = directions(kn.shape[1], kn.shape[0])
    band = np.abs(lat) < math.radians(30.0)
    facts = {
        "method": "learned outpainting loop on the horizon ring",
        "n_views": config.n_views,
        "fov_deg": config.fov_deg,
        "size": config.size,
        "views": view_facts,
        "closing_view": {k: view_facts[-1][k] for k in ("yaw_deg", "known_left", "known_right")},
        "horizon_known_share": float(kn[band].mean()),
        "written_share": float((kn & ~known).mean()),
        "time_s": round(time.perf_counter() - t0, 3),
    }
    return RingResult(rgb, dist, kn, facts)


# ----------------------------------------------------------------------------- adapters


def from_pipelines(
    inpaint_model,
    depth_model=None,
    *,
    negative_prompt: str | None = None,
    steps: int | None = None,
    guidance: float | None = None,
) -> tuple[InpaintFn, DepthFn | None]:
    """``(inpaint, estimate_depth)`` callables for :func:`outpaint_ring` from the project's
    loaded models.

    ``inpaint_model``: a ``fill.diffusion.DiffusionFill`` (its model, device, negative prompt,
    steps and guidance; loaded on first use) or a ``fill.diffusion.LoadedInpaint`` (then
    ``steps`` / ``guidance`` / ``negative_prompt`` default to the fill config's defaults).
    ``depth_model``: a ``depth.hf.LoadedDepthModel``, an ``HFDepthBackend`` (its default model,
    loaded), or None (the loop then keeps the prefill's distance). The keyword arguments
    override the fill's settings; an empty prompt in the loop means the fill's prompt."""
    from ..fill.base import FillConfig
    from ..fill.diffusion import DEFAULT_NEGATIVE, DiffusionFill, run_inpaint

    defaults = FillConfig()
    default_prompt = ""
    if isinstance(inpaint_model, DiffusionFill):
        load = inpaint_model.load
        default_prompt = inpaint_model.prompt
        neg = inpaint_model.negative_prompt if negative_prompt is None else negative_prompt
        steps = inpaint_model.steps if steps is None else steps
        guidance = inpaint_model.guidance if guidance is None else guidance
    elif hasattr(inpaint_model, "pipe") and hasattr(inpaint_model, "native"):
        load = lambda: inpaint_model  # noqa: E731
        neg = DEFAULT_NEGATIVE if negative_prompt is None else negative_prompt
        steps = defaults.steps if steps is None else steps
        guidance = defaults.guidance if guidance is None else guidance
    else:
        raise InputError(
            f"inpaint_model must be a DiffusionFill or a LoadedInpaint, got {type(inpaint_model)}"
        )

    def inpaint(image: np.ndarray, mask: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        p = prompt or default_prompt
        return run_inpaint(load(), image, mask, p, neg, int(steps), float(guidance), seed)

    estimate = None
    if depth_model is not None:
        loaded = depth_model.load() if hasattr(depth_model, "load") else depth_model

        def estimate(image: np.ndarray) -> np.ndarray:
            from ..depth.hf import predict

            pred, _ = predict(loaded, image)
            if loaded.kind == "disparity":
                return pred
            return 1.0 / np.maximum(pred, 1e-6)

    return inpaint, estimate
