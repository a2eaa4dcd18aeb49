"""Lifting: a depth map and its colours become flat Gaussian discs, one per (sub-sampled) pixel.

Each splat covers exactly its pixel's footprint on the local surface: the pixel's square is
pushed through the inverse projection onto the tangent plane (normal from the depth map), so
``Sigma = s^2 (J_u J_u^T + J_v J_v^T) + thin n n^T`` with ``J = dX/d(u, v)`` on that plane. At
the source camera every splat projects to an isotropic Gaussian of ``s`` pixels; seen from the
side it is a thin disc. Splats are never stretched across depth edges: each is sized by its own
pixel.
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
) -> Splats:
    """Lift a layer to splats.

    image: [H, W, 3] float32 sRGB; depth: [H, W] float32 z-depth (NaN = no splat);
    alpha: [H, W] float32 opacity in [0, 1] (None = opaque). Returns splats in camera axes.
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
    return make_discs(X, Ju * sigma_px, Jv * sigma_px, rgb[valid], opac, config.thickness, layer_id)


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
