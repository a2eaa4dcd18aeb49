"""Metric scale and the ground plane.

Relative depth is scaled so the fitted ground plane lies ``camera_height`` below the camera;
metric depth keeps its scale and the fit measures the camera height. The plane's normal is the
up direction (against gravity) in camera axes and defines the world frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .camera import Intrinsics
from .depth.base import GROUND, DepthEstimate

#: the ground normal may deviate this much from the camera's -y axis (camera pitch/roll)
MAX_TILT_DEG = 40.0


@dataclass(frozen=True)
class GroundFit:
    """normal: [3] unit up vector in camera axes; the ground is {X : normal . X = -height}."""

    normal: np.ndarray
    height: float
    scale: float
    scale_source: str
    method: str
    inlier_fraction: float

    def to_dict(self) -> dict:
        return {
            "normal_camera": [float(v) for v in self.normal],
            "camera_height": float(self.height),
            "depth_scale": float(self.scale),
            "scale_source": self.scale_source,
            "method": self.method,
            "inlier_fraction": float(self.inlier_fraction),
        }


def unproject(depth: np.ndarray, intr: Intrinsics) -> np.ndarray:
    """[H, W] z-depth -> [H, W, 3] points in camera axes."""
    H, W = depth.shape
    u = np.arange(W, dtype=np.float32)
    v = np.arange(H, dtype=np.float32)
    x = (u[None, :] - intr.cx) / intr.fx
    y = (v[:, None] - intr.cy) / intr.fy
    return np.stack([x * depth, np.broadcast_to(y, (H, W)) * depth, depth], axis=-1).astype(
        np.float32
    )


def surface_normals(pts: np.ndarray) -> np.ndarray:
    """Unit normals [H, W, 3] of an unprojected depth map [H, W, 3] (3x3-smoothed central
    differences; the sign is arbitrary, NaN where the depth is unknown)."""
    from scipy import ndimage

    H, W = pts.shape[:2]
    P = ndimage.uniform_filter(pts.astype(np.float32), size=(3, 3, 1), mode="nearest")
    du = np.gradient(P, axis=1) if W > 1 else np.zeros_like(P)
    dv = np.gradient(P, axis=0) if H > 1 else np.zeros_like(P)
    n = np.cross(du, dv)
    with np.errstate(invalid="ignore", divide="ignore"):
        return n / np.linalg.norm(n, axis=-1, keepdims=True)


def fit_plane_ransac(
    pts: np.ndarray,
    rng: np.random.Generator,
    *,
    iters: int = 300,
    tol: float = 0.02,
    normals: np.ndarray | None = None,
    normal_tol_deg: float = 20.0,
) -> tuple[np.ndarray, float, np.ndarray] | None:
    """Fit an up-facing plane n.X = -d to ``pts`` [N, 3]; tolerance relative to median depth.

    Only planes whose normal is within MAX_TILT_DEG of the camera's up (-y) are considered.
    With ``normals`` ([N, 3], the points' surface normals, any sign) a point is an inlier only
    where its own normal is within ``normal_tol_deg`` of the plane's, so the plane through the
    bottom edges of vertical box fronts, or a wall's foot, does not pass for the floor.
    Returns (normal, d, inlier mask) or None.
    """
    if len(pts) < 50:
        return None
    scale = float(np.median(np.linalg.norm(pts, axis=1)))
    thr = tol * scale
    cos_max = np.cos(np.radians(MAX_TILT_DEG))
    cos_n = np.cos(np.radians(normal_tol_deg))

    def inliers(n: np.ndarray, d: float) -> np.ndarray:
        ok = np.abs(pts @ n + d) < thr
        if normals is not None:
            ok &= np.abs(np.nan_to_num(normals @ n)) >= cos_n
        return ok

    best = None
    best_count = 0
    idx = rng.integers(0, len(pts), size=(iters, 3))
    for i in range(iters):
        a, b, c = pts[idx[i]]
        n = np.cross(b - a, c - a)
        norm = np.linalg.norm(n)
        if norm < 1e-12:
            continue
        n = n / norm
        if n[1] > 0:
            n = -n  # up is -y in camera axes
        if -n[1] < cos_max:
            continue
        d = -float(n @ a)
        if d <= 0:  # plane must be below the camera
            continue
        count = int(np.count_nonzero(inliers(n, d)))
        if count > best_count:
            best_count, best = count, (n, d)
    if best is None:
        return None
    n, d = best
    inl = inliers(n, d)
    # least-squares refinement on the inliers
    P = pts[inl]
    c = P.mean(0)
    _, _, vt = np.linalg.svd(P - c, full_matrices=False)
    n2 = vt[2]
    if n2[1] > 0:
        n2 = -n2
    d2 = -float(n2 @ c)
    if d2 > 0 and -n2[1] >= cos_max:
        n, d = n2, d2
        inl = inliers(n, d)
    return n, d, inl


def fit_ground(
    est: DepthEstimate,
    intr: Intrinsics,
    *,
    camera_height: float,
    seed: int = 0,
) -> tuple[np.ndarray, GroundFit]:
    """Scale ``est.depth`` to metres and fit the ground. Returns (depth [H, W], GroundFit)."""
    depth = est.depth.astype(np.float32)
    if est.kind == "disparity":
        raise NotImplementedError("disparity depth must be converted by its backend")
    if est.kind == "metric" and est.ground_normal is not None:
        # the backend placed the ground itself (popup): the prior *is* the scale
        n = np.asarray(est.ground_normal, dtype=np.float64)
        n /= np.linalg.norm(n)
        return depth, GroundFit(n, camera_height, 1.0, "ground-plane-prior", "backend", 1.0)

    rng = np.random.default_rng(seed)
    H, W = depth.shape
    pts = unproject(depth, intr)
    if est.labels is not None and np.count_nonzero(est.labels == GROUND) > 100:
        cand = (est.labels == GROUND) & np.isfinite(depth)
    else:
        cand = np.zeros((H, W), bool)
        cand[int(H * 0.55) :, :] = True  # the lower part of the photo
        cand &= np.isfinite(depth)
    normals = surface_normals(pts)
    # the ground faces up: leave out the vertical surfaces (box fronts, walls) of the candidates
    up = np.abs(np.nan_to_num(normals[..., 1])) >= np.cos(np.radians(MAX_TILT_DEG))
    if np.count_nonzero(cand & up) >= 200:
        cand &= up
    P = pts[cand]
    N = normals[cand]
    if len(P) > 20000:
        pick = rng.choice(len(P), 20000, replace=False)
        P, N = P[pick], N[pick]
    fit = fit_plane_ransac(P.astype(np.float64), rng, normals=N.astype(np.float64))
    if fit is not None and fit[2].mean() > 0.15:
        n, d, inl = fit
        method, frac = "ransac", float(inl.mean())
    else:
        # no ground visible: assume a level camera and the lowest surface as the floor
        n = np.array([0.0, -1.0, 0.0])
        y = pts[..., 1][np.isfinite(depth)]
        d = float(np.percentile(y, 98)) if y.size else 1.0
        d = d if d > 1e-6 else float(np.nanmedian(depth)) * 0.5
        method, frac = "level-camera-fallback", 0.0
    if est.kind == "metric":
        source = est.info.get("scale_source", "metric-depth")
        return depth, GroundFit(n, d, 1.0, source, method, frac)
    s = camera_height / d
    return depth * s, GroundFit(n, camera_height, s, "ground-plane-prior", method, frac)
