"""Lifting: a depth map and its colours become flat Gaussian discs, one per (sub-sampled) pixel.

Each splat covers exactly its pixel's footprint on the local surface: the pixel's square is
pushed through the inverse projection onto the tangent plane (normal from the depth map), so
``Sigma = s^2 (J_u J_u^T + J_v J_v^T) + thin n n^T`` with ``J = dX/d(u, v)`` on that plane. At
the source camera every splat projects to an isotropic Gaussian of ``s`` pixels; seen from the
side it is a thin disc. Splats are never stretched across depth edges: each is sized by its own
pixel.

**Bridges.** Where two 4-neighbouring pixels lie on one surface but their discs do not meet --
a small depth step (below a depth edge: the layer split leaves it inside the layer) or a surface
more oblique than ``max_normal_angle_deg`` -- a moved camera would look through the crack
between them at whatever lies behind (on a mountain photo: the sky, in front of the grass). So
the segment between the two centres is covered where neither disc covers it (the disc's
half-opacity ellipsoid) by a row of flat splats (``bridge_splats``): a strip from one pixel to
the other, as wide as the pixels, coloured from one end to the other -- what a triangle mesh
over the pixels would draw there. Seen from the source camera the strip is edge-on (it lies
along the rays between the two pixels), so the photo does not change. A pair whose relative
disparity jump exceeds ``bridge_max_step`` is a depth edge and is never bridged: what it opens is
another layer's content.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from .camera import Camera, Intrinsics, Pose
from .ground import unproject
from .splats import Splats, rgb_to_sh0


@dataclass(frozen=True)
class LiftConfig:
    stride: int = 1
    """Keep one splat per `stride` x `stride` pixels of the working image."""
    footprint_scale: float = 0.5
    """In-plane splat standard deviation as a fraction of the pixel footprint (times stride)."""
    thickness: float = 0.1
    """Out-of-plane standard deviation relative to the in-plane one (flat discs)."""
    max_normal_angle_deg: float = 80.0
    """Surfaces seen more obliquely than this are treated as facing the camera at that angle."""
    edge_threshold: float = 0.08
    """Relative change of the disparity slope between neighbours that marks a depth edge."""
    colour_solve_iters: int = 8
    """Iterations of the linear solve that makes the source view reproduce the photo (0 = off)."""
    bridge: bool = True
    """Close the cracks between neighbouring pixels whose discs do not meet (a small depth step,
    a very oblique surface) with strips of splats, so that a moved camera sees no gap there."""
    bridge_max_step: float = 0.12
    """Neighbours whose disparity differs by more than this fraction are a depth edge: never
    bridged (the layer split's edge threshold)."""


OPACITY = 0.99


def _block_reduce(a: np.ndarray, s: int, fn) -> np.ndarray:
    """Reduce [H, W, ...] over s x s blocks (cropping the remainder)."""
    H, W = a.shape[:2]
    h, w = H // s, W // s
    a = a[: h * s, : w * s]
    a = a.reshape(h, s, w, s, *a.shape[2:])
    return fn(a, axis=(1, 3))


def estimate_normals(depth: np.ndarray, intr: Intrinsics, edge_threshold: float) -> np.ndarray:
    """[H, W] z-depth -> [H, W, 3] unit normals facing the camera.

    Disparity (1/z) is linear in image coordinates on any plane, so a pixel whose backward and
    forward disparity differences agree (relative to its disparity, within ``edge_threshold``)
    lies inside a smooth surface and gets central differences; otherwise it sits at a depth edge
    and uses the one-sided difference with the smaller disparity change. Unknown neighbours are
    never used; with neither side usable the normal points back at the camera.
    """
    P = unproject(depth, intr).astype(np.float64)
    disp = 1.0 / depth.astype(np.float64)

    def derivative(axis: int) -> np.ndarray:
        Pm = np.moveaxis(P, axis, 0)
        Dm = np.moveaxis(disp, axis, 0)
        n = Pm.shape[0]
        nanP = np.full_like(Pm[:1], np.nan)
        nanD = np.full_like(Dm[:1], np.nan)
        fwdP = np.concatenate([Pm[1:] - Pm[:-1], nanP])  # P[i+1] - P[i]
        backP = np.concatenate([nanP, Pm[1:] - Pm[:-1]])  # P[i] - P[i-1]
        fwdD = np.concatenate([Dm[1:] - Dm[:-1], nanD])
        backD = np.concatenate([nanD, Dm[1:] - Dm[:-1]])
        ok_f, ok_b = np.isfinite(fwdD), np.isfinite(backD)
        smooth = ok_f & ok_b & (np.abs(fwdD - backD) <= edge_threshold * np.abs(Dm))
        use_f = ok_f & ~smooth & (~ok_b | (np.abs(fwdD) <= np.abs(backD)))
        use_b = ok_b & ~smooth & ~use_f
        d = np.full_like(Pm, np.nan)
        d = np.where(smooth[..., None], 0.5 * (fwdP + backP), d)
        d = np.where(use_f[..., None], fwdP, d)
        d = np.where(use_b[..., None], backP, d)
        assert d.shape[0] == n
        return np.moveaxis(d, 0, axis)

    du = derivative(1)
    dv = derivative(0)
    n = np.cross(dv, du)  # camera axes: faces the camera for a fronto-parallel surface
    norm = np.linalg.norm(n, axis=-1, keepdims=True)
    good = np.isfinite(norm[..., 0]) & (norm[..., 0] > 1e-12)
    n = np.where(good[..., None], n / np.where(good, norm[..., 0], 1.0)[..., None], np.nan)
    ray = P / np.linalg.norm(P, axis=-1, keepdims=True)
    flip = np.sum(n * ray, axis=-1) > 0
    n = np.where(flip[..., None], -n, n)
    n = np.where(good[..., None], n, -ray)
    return n.astype(np.float32)


def _clamp_obliqueness(n: np.ndarray, ray: np.ndarray, max_angle: float) -> np.ndarray:
    """Tilt normals [N, 3] so they are at most ``max_angle`` from the view direction -ray."""
    v = -ray
    c = np.sum(n * v, axis=-1)
    cmin = math.cos(max_angle)
    bad = c < cmin
    if not bad.any():
        return n
    perp = n[bad] - c[bad, None] * v[bad]
    perp /= np.maximum(np.linalg.norm(perp, axis=-1, keepdims=True), 1e-12)
    out = n.copy()
    out[bad] = cmin * v[bad] + math.sin(max_angle) * perp
    return out


def rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """[N, 3, 3] proper rotations -> [N, 4] unit quaternions (w, x, y, z)."""
    m = R
    t = m[:, 0, 0] + m[:, 1, 1] + m[:, 2, 2]
    cands = np.stack(
        [
            np.stack(
                [1 + t, m[:, 2, 1] - m[:, 1, 2], m[:, 0, 2] - m[:, 2, 0], m[:, 1, 0] - m[:, 0, 1]],
                -1,
            ),
            np.stack(
                [
                    m[:, 2, 1] - m[:, 1, 2],
                    1 + m[:, 0, 0] - m[:, 1, 1] - m[:, 2, 2],
                    m[:, 0, 1] + m[:, 1, 0],
                    m[:, 0, 2] + m[:, 2, 0],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 0, 2] - m[:, 2, 0],
                    m[:, 0, 1] + m[:, 1, 0],
                    1 - m[:, 0, 0] + m[:, 1, 1] - m[:, 2, 2],
                    m[:, 1, 2] + m[:, 2, 1],
                ],
                -1,
            ),
            np.stack(
                [
                    m[:, 1, 0] - m[:, 0, 1],
                    m[:, 0, 2] + m[:, 2, 0],
                    m[:, 1, 2] + m[:, 2, 1],
                    1 - m[:, 0, 0] - m[:, 1, 1] + m[:, 2, 2],
                ],
                -1,
            ),
        ],
        axis=1,
    )  # [N, 4 candidates, 4]
    diag = np.stack([t, m[:, 0, 0], m[:, 1, 1], m[:, 2, 2]], -1)
    pick = np.argmax(diag, axis=1)
    q = cands[np.arange(len(m)), pick]
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    q *= np.where(q[:, :1] < 0, -1.0, 1.0)
    return q


def lift(
    image: np.ndarray,
    depth: np.ndarray,
    intr: Intrinsics,
    config: LiftConfig,
    *,
    alpha: np.ndarray | None = None,
    layer_id: int = 0,
    jitter: float = 0.0,
    seed: int = 0,
) -> Splats:
    """Lift a layer to splats.

    image: [H, W, 3] float32 sRGB; depth: [H, W] float32 z-depth (NaN = no splat);
    alpha: [H, W] float32 opacity in [0, 1] (None = opaque). Returns splats in camera axes.
    ``jitter`` > 0 moves every splat's pixel position by up to that fraction of its cell in u and
    v (seeded by ``seed``): a smooth far surface seen magnified (the photo's sky) then shows no
    lattice; its depth stays the pixel's and no bridges are made (a jittered layer has no
    cracks to close).
    """
    H, W = depth.shape
    assert image.shape == (H, W, 3), (image.shape, depth.shape)
    assert intr.width == W and intr.height == H, (intr, depth.shape)
    s = int(config.stride)
    normals = estimate_normals(depth, intr, config.edge_threshold)
    if s > 1:
        rgb = _block_reduce(image, s, np.mean)
        z = _block_reduce(np.where(np.isfinite(depth), depth, np.inf), s, np.median)
        z[~np.isfinite(z)] = np.nan
        nrm = _block_reduce(np.nan_to_num(normals), s, np.mean)
        a = _block_reduce(alpha, s, np.mean) if alpha is not None else None
        h, w = z.shape
        u = s * np.arange(w) + (s - 1) / 2.0
        v = s * np.arange(h) + (s - 1) / 2.0
    else:
        rgb, z, nrm, a = image, depth, normals, alpha
        u = np.arange(W, dtype=np.float64)
        v = np.arange(H, dtype=np.float64)
    valid = np.isfinite(z) & (z > 0)
    if a is not None:
        valid &= a > 1.0 / 255.0
    uu, vv = np.meshgrid(u, v)
    uu, vv, zz = uu[valid], vv[valid], z[valid].astype(np.float64)
    if jitter > 0:
        rng = np.random.default_rng(seed)
        uu = uu + rng.uniform(-jitter, jitter, uu.shape) * s
        vv = vv + rng.uniform(-jitter, jitter, vv.shape) * s
    ray = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1)
    X = ray * zz[:, None]
    rn = ray / np.linalg.norm(ray, axis=-1, keepdims=True)
    n = nrm[valid].astype(np.float64)
    nn = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(nn > 1e-6, n / np.maximum(nn, 1e-12), -rn)
    n = _clamp_obliqueness(n, rn, math.radians(config.max_normal_angle_deg))

    # Jacobian of the unprojection onto the tangent plane n.X = c
    c = np.sum(n * X, -1)
    nr = np.sum(n * ray, -1)
    r_u = np.array([1.0 / intr.fx, 0.0, 0.0])
    r_v = np.array([0.0, 1.0 / intr.fy, 0.0])
    Ju = (c / nr**2)[:, None] * (r_u[None] * nr[:, None] - ray * (n @ r_u)[:, None])
    Jv = (c / nr**2)[:, None] * (r_v[None] * nr[:, None] - ray * (n @ r_v)[:, None])
    sigma_px = config.footprint_scale * s
    opac = None if a is None else a[valid]
    discs = make_discs(
        X, Ju * sigma_px, Jv * sigma_px, rgb[valid], opac, config.thickness, layer_id
    )
    if not config.bridge or jitter > 0 or len(X) == 0:
        return discs

    def grid(values: np.ndarray, fill: float = np.nan) -> np.ndarray:
        out = np.full(valid.shape + values.shape[1:], fill, np.float64)
        out[valid] = values
        return out

    bridges = bridge_splats(
        grid(X),
        grid(Ju * sigma_px),
        grid(Jv * sigma_px),
        grid(rgb[valid].astype(np.float64)),
        grid(np.full(len(X), OPACITY) if opac is None else opac, 0.0),
        thickness=config.thickness,
        max_step=config.bridge_max_step,
        layer_id=layer_id,
        focal=max(intr.fx, intr.fy) / s,
    )
    return Splats.cat([discs, bridges]) if len(bridges) else discs


#: distance from a splat's centre, in standard deviations, at which an opaque splat's alpha
#: falls to 0.5 (``OPACITY * exp(-k^2 / 2) = 0.5``)
HALF_ALPHA_SIGMAS = math.sqrt(2.0 * math.log(2.0 * OPACITY))
#: neighbours are bridged when their distance exceeds this multiple of the sum of their discs'
#: reach towards each other (below it the two half-transparent rims still look closed)
BRIDGE_GAP_RATIO = 1.5
#: metres of sideways walk whose view of a crack decides whether it is bridged: a crack that
#: would show less than a pixel from there (far away, seen nearly along its ray) is left open
BRIDGE_WALK_M = 2.0


def _reach(a: np.ndarray, b: np.ndarray, thin: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Distance along unit directions ``t`` [M, 3] from the centre of the discs with in-plane
    axes ``a``, ``b`` [M, 3] and out-of-plane deviation ``thin`` [M] at which alpha falls to 0.5
    (the half-opacity ellipsoid's radius in that direction)."""
    n = np.cross(a, b)
    m = n * (thin / np.maximum(np.linalg.norm(n, axis=-1), 1e-30))[:, None]
    # Sigma = F F^T with F = [a b m]; |F^-1 t| by the rows of F^-1 (cross products / det)
    det = np.sum(a * np.cross(b, m), axis=-1)
    c = (
        np.stack(
            [
                np.sum(np.cross(b, m) * t, axis=-1),
                np.sum(np.cross(m, a) * t, axis=-1),
                np.sum(n * t, axis=-1),
            ],
            axis=-1,
        )
        / np.where(det != 0, det, 1e-30)[:, None]
    )
    return HALF_ALPHA_SIGMAS / np.maximum(np.linalg.norm(c, axis=-1), 1e-30)


def bridge_splats(
    X: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rgb: np.ndarray,
    opacity: np.ndarray,
    *,
    thickness: float,
    max_step: float,
    layer_id: int,
    focal: float,
    max_per_pair: int = 64,
) -> Splats:
    """Strips of splats over the cracks between 4-neighbouring discs (see the module docstring).

    X: [h, w, 3] disc centres (NaN = no disc); a, b: [h, w, 3] in-plane standard-deviation
    vectors of each disc along the grid's columns and rows; rgb: [h, w, 3]; opacity: [h, w];
    focal: the grid's focal length in pixels. A pair of neighbours is bridged unless it is a
    depth edge (relative disparity jump > ``max_step``, or > ``2 max_step`` over one of the two
    spans of three pixels that contain the pair: an edge blurred over two pixels), when the
    distance between the centres exceeds ``BRIDGE_GAP_RATIO`` times what the two discs'
    half-opacity ellipsoids reach of it, and when the crack would show at least a pixel from
    ``BRIDGE_WALK_M`` to the side. The uncovered part of the segment (from half-way into one
    disc's reach to half-way into the other's) gets ``ceil(length / (8 sigma))`` splats (at most
    ``max_per_pair``), ``sigma`` the pair's mean deviation across the segment: that deviation
    across, 0.6 of their spacing along, colour and opacity interpolated between the two pixels.
    """
    with np.errstate(invalid="ignore", divide="ignore"):
        disp = 1.0 / X[..., 2]
    parts = []
    for axis, along, across in ((1, a, b), (0, b, a)):
        grids = [np.moveaxis(g, axis, 0) for g in (X, along, across, rgb, opacity, disp)]
        part = _bridge_pairs(*grids, thickness, max_step, layer_id, max_per_pair, focal)
        if part is not None:
            parts.append(part)
    if not parts:
        return make_discs(
            np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), np.zeros((0, 3)), None, 0.1, 0
        )
    return Splats.cat(parts)


def _bridge_pairs(
    X, along, across, rgb, opacity, disp, thickness, max_step, layer_id, max_per_pair, focal
) -> Splats | None:
    """``bridge_splats`` for the pairs (i, j...) - (i + 1, j...) along the first grid axis."""
    n = X.shape[0]
    if n < 2:
        return None
    with np.errstate(invalid="ignore"):
        jump = np.abs(disp[1:] - disp[:-1]) / np.maximum(disp[1:], disp[:-1])
        ok = np.isfinite(X[:-1, ..., 0]) & np.isfinite(X[1:, ..., 0]) & (jump <= max_step)
        if n >= 3:  # the spans of three pixels that contain the pair (i-1..i+1, i..i+2)
            j3 = np.abs(disp[2:] - disp[:-2]) / np.maximum(disp[2:], disp[:-2]) > 2 * max_step
            ok[1:] &= ~j3
            ok[:-1] &= ~j3
    i0 = np.nonzero(ok)
    i1 = (i0[0] + 1,) + i0[1:]
    P0, P1 = X[i0], X[i1]
    d = P1 - P0
    L = np.linalg.norm(d, axis=-1)
    t = d / np.maximum(L, 1e-30)[:, None]
    a0, b0, a1, b1 = along[i0], across[i0], along[i1], across[i1]

    def thin(u, v):
        return thickness * np.minimum(np.linalg.norm(u, axis=-1), np.linalg.norm(v, axis=-1))

    r0 = _reach(a0, b0, thin(a0, b0), t)
    r1 = _reach(a1, b1, thin(a1, b1), t)
    gap = L - r0 - r1
    # a crack matters where a walk shows it: at least a pixel from BRIDGE_WALK_M to the side
    z = 0.5 * (P0[:, 2] + P1[:, 2])
    shown = gap * BRIDGE_WALK_M * focal >= np.maximum(z, 1e-9) ** 2
    need = (L > 0) & (L > BRIDGE_GAP_RATIO * (r0 + r1)) & shown
    if not need.any():
        return None
    P0, d, L, t, r0, r1 = P0[need], d[need], L[need], t[need], r0[need], r1[need]
    # the strip starts and ends half-way into the discs' reach, so that it overlaps them
    s0 = 0.5 * r0
    seg = L - 0.5 * r1 - s0
    cross = 0.5 * (b0[need] + b1[need])
    cross -= np.sum(cross * t, -1, keepdims=True) * t  # across, perpendicular to the strip
    sig = np.linalg.norm(cross, axis=-1)
    count = np.clip(np.ceil(seg / np.maximum(8.0 * sig, 1e-12)), 1, max_per_pair).astype(int)
    pair = np.repeat(np.arange(len(seg)), count)
    k = np.arange(len(pair)) - np.repeat(np.cumsum(count) - count, count)
    spacing = seg / count
    frac = (s0[pair] + (k + 0.5) * spacing[pair]) / L[pair]
    c0, c1 = rgb[i0][need][pair], rgb[i1][need][pair]
    o0, o1 = opacity[i0][need][pair], opacity[i1][need][pair]
    return make_discs(
        P0[pair] + frac[:, None] * d[pair],
        t[pair] * (0.6 * spacing[pair])[:, None],
        cross[pair],
        c0 + frac[:, None] * (c1 - c0),
        np.minimum(o0, o1),
        thickness,
        layer_id,
    )


def make_discs(
    X: np.ndarray,
    a: np.ndarray,
    b: np.ndarray,
    rgb: np.ndarray,
    opacity: np.ndarray | None,
    thickness: float,
    layer_id: int,
) -> Splats:
    """Flat Gaussians with covariance ``a a^T + b b^T`` (plus ``thickness`` along the normal).

    X: [N, 3] centres; a, b: [N, 3] in-plane standard-deviation vectors; rgb: [N, 3];
    opacity: [N] in (0, 1] or None (opaque).
    """
    cov = a[:, :, None] * a[:, None, :] + b[:, :, None] * b[:, None, :]
    evals, evecs = np.linalg.eigh(cov)  # ascending; evecs[:, :, 0] ~ the normal
    lam_in = np.maximum(evals[:, 1:], 1e-18)
    lam_n = lam_in[:, 0] * thickness**2
    scales = np.sqrt(np.concatenate([lam_n[:, None], lam_in], axis=1))
    R = evecs.copy()
    det = np.linalg.det(R)
    R[det < 0, :, 0] *= -1
    quats = rotmat_to_quat(R)
    n_spl = len(X)
    opac = np.full(n_spl, OPACITY) if opacity is None else np.clip(opacity, 1e-4, OPACITY)
    return Splats(
        means=torch.from_numpy(X.astype(np.float32)),
        quats=torch.from_numpy(quats.astype(np.float32)),
        log_scales=torch.from_numpy(np.log(scales).astype(np.float32)),
        logit_opacities=torch.from_numpy(np.log(opac / (1 - opac)).astype(np.float32)),
        sh=rgb_to_sh0(torch.from_numpy(rgb.astype(np.float32)))[:, None, :].contiguous(),
        layers=torch.full((n_spl,), layer_id, dtype=torch.uint8),
    )


@torch.no_grad()
def solve_colours(
    splats: Splats,
    intr: Intrinsics,
    image: np.ndarray,
    iters: int,
    *,
    background: tuple[float, float, float] = (0.0, 0.0, 0.0),
    min_visibility: float = 0.05,
) -> Splats:
    """Make the source view reproduce ``image`` [H, W, 3]: the colours that minimise
    ``|W c + T bg - image|^2`` (W: the fixed compositing weights at the source camera), by
    ``iters`` Jacobi steps with the majorising diagonal ``W^T W 1`` (monotone), clamped to [0, 1].
    Splats whose total weight in the view is below ``min_visibility`` keep their colours.
    """
    if iters <= 0 or len(splats) == 0:
        return splats
    from .raster import render_weights

    H, W = image.shape[:2]
    cam = Camera(intr, Pose.identity())
    rw = render_weights(splats, cam, W, H)
    target = torch.from_numpy(image.reshape(-1, 3).astype(np.float32))
    bg = torch.tensor(background, dtype=torch.float32)
    target = target - rw.final_T.reshape(-1, 1) * bg
    pix, idx, w = rw.pix, rw.splat, rw.weight[:, None]
    N = len(splats)
    row_sum = torch.zeros(H * W).index_add_(0, pix, rw.weight)  # W 1
    diag = torch.zeros(N).index_add_(0, idx, rw.weight * row_sum[pix])  # W^T W 1
    # only splats that really show in this view are solved for: a splat hidden behind others
    # (a filled background behind a foreground object) keeps its own colour
    seen = torch.zeros(N).index_add_(0, idx, rw.weight)
    touched = (diag > 1e-8) & (seen > min_visibility)
    c = splats.rgb.clone()
    for _ in range(iters):
        render = torch.zeros(H * W, 3).index_add_(0, pix, w * c[idx])
        resid = target - render
        grad = torch.zeros(N, 3).index_add_(0, idx, w * resid[pix])
        c = torch.where(touched[:, None], c + grad / diag.clamp_min(1e-8)[:, None], c)
        c = c.clamp(0.0, 1.0)
    sh = splats.sh.clone()
    sh[:, 0] = rgb_to_sh0(c)
    return Splats(
        splats.means, splats.quats, splats.log_scales, splats.logit_opacities, sh, splats.layers
    )
