"""Metric scale and the ground plane.

Relative depth is scaled so the fitted ground plane lies ``camera_height`` below the camera;
metric depth keeps its scale and the fit measures the camera height. The plane's normal is the
up direction (against gravity) in camera axes and defines the world frame.

Affine-invariant disparity (Depth Anything V2 relative, MiDaS/DPT: ``d = a / z + b`` with unknown
``a > 0`` and ``b``) is converted by :func:`disparity_to_depth`, never by inverting it blindly.
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
    details: dict | None = None  # how disparity was converted (disparity_to_depth), if it was

    def to_dict(self) -> dict:
        extra = {"disparity_conversion": self.details} if self.details else {}
        return extra | {
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
    far: float = 200.0,
) -> tuple[np.ndarray, GroundFit]:
    """Scale ``est.depth`` to metres and fit the ground. Returns (depth [H, W], GroundFit).

    ``far``: the farthest z-depth in metres a disparity map may be given (its sky)."""
    depth = est.depth.astype(np.float32)
    if est.kind == "disparity":
        return disparity_to_depth(
            depth, intr, camera_height=camera_height, labels=est.labels, seed=seed, far=far
        )
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


# ----------------------------------------------------------------------------- disparity

#: largest camera pitch (up or down) the disparity conversion may imply, degrees
MAX_PITCH_DEG = 30.0


def _fit_disparity_plane(
    x: np.ndarray,
    y: np.ndarray,
    d: np.ndarray,
    gx: np.ndarray,
    gy: np.ndarray,
    tol: float,
    rng: np.random.Generator,
    iters: int = 300,
) -> tuple[np.ndarray, np.ndarray] | None:
    """RANSAC fit of ``d = alpha x + beta y + gamma`` (x, y normalised image coordinates) to
    ground candidates: beta > 0 (disparity grows downwards: the surface faces up), roll within
    MAX_TILT_DEG, and a point is an inlier only if its own disparity gradient (gx, gy) matches
    the plane's (walls facing the camera have gy ~ 0 and are left out). Returns
    ((alpha, beta, gamma), inlier mask) or None."""
    n = len(d)
    if n < 50:
        return None
    A = np.stack([x, y, np.ones_like(x)], 1)
    tan_roll = np.tan(np.radians(MAX_TILT_DEG))

    def inliers(c: np.ndarray) -> np.ndarray:
        ok = np.abs(A @ c - d) < tol
        return ok & (np.abs(gy - c[1]) < 0.5 * c[1]) & (np.abs(gx - c[0]) < 0.5 * c[1])

    best, best_count = None, 0
    idx = rng.integers(0, n, size=(iters, 3))
    for i in range(iters):
        try:
            c = np.linalg.solve(A[idx[i]], d[idx[i]])
        except np.linalg.LinAlgError:
            continue
        if not (c[1] > 0 and abs(c[0]) <= tan_roll * c[1]):
            continue
        count = int(np.count_nonzero(inliers(c)))
        if count > best_count:
            best, best_count = c, count
    if best is None:
        return None
    for _ in range(2):  # least-squares refinement on the inliers
        inl = inliers(best)
        if inl.sum() < 3:
            break
        c = np.linalg.lstsq(A[inl], d[inl], rcond=None)[0]
        if not (c[1] > 0 and abs(c[0]) <= tan_roll * c[1]):
            break
        best = c
    return best, inliers(best)


def disparity_to_depth(
    disp: np.ndarray,  # [H, W] affine-invariant disparity d = a / z + b (NaN = unknown)
    intr: Intrinsics,
    *,
    camera_height: float,
    labels: np.ndarray | None = None,
    seed: int = 0,
    far: float = 200.0,
    max_pitch_deg: float = MAX_PITCH_DEG,
) -> tuple[np.ndarray, GroundFit]:
    """Metric z-depth from affine-invariant disparity with the ground-plane prior.

    The ground plane {X : n . X = -h} seen along the ray r = (x, y, 1) has inverse depth
    1/z = -(n . r) / h: *linear* in the normalised image coordinates. So on the ground the
    model's disparity is a plane too, d = alpha x + beta y + gamma, with
    (alpha, beta, gamma - b) = -(a / h) n. Method:

    1. Fit that plane robustly (:func:`_fit_disparity_plane`) to the ground candidates: pixels
       labelled ground, else the lower 45 % of the photo whose disparity gradient points down.
    2. The shift ``b`` (the disparity of infinity, i.e. the horizon line) is the one ambiguity
       left: every ``b`` gives a valid scale ``a = h |(alpha, beta, gamma - b)|`` and up vector
       ``n = -(alpha, beta, gamma - b) / |.|``, and only trades camera pitch (sin p = n_z)
       against where infinity is. It is chosen as the one closest to a level camera (b = gamma,
       horizon through the principal point) among those that (i) keep |pitch| <= max_pitch_deg
       and (ii) put every pixel in front of the camera no farther than ``far``
       (d_min - b >= a / far, d_min the 0.5th percentile): a photo whose sky or far wall has a
       disparity below the level-camera horizon's thus gets its horizon at that content.
    3. ``z = a / (d - b)``, clamped to ``far``; the ground is exactly ``h`` below the camera.

    Limits: with nothing at infinity in view the horizon (hence pitch) comes from the level-camera
    prior alone; a camera pitched *up* at a sky is read as level (the sky then ends up at a
    finite distance, clamped to ``far``). Both are exact for a level camera.

    Without enough ground (fewer than 15 % inliers) the map is inverted with ``b`` 5 % of the
    disparity range below its minimum (far/near ratio <= 21) and scaled as relative depth (the
    lowest surface as the floor, level camera). Returns (depth [H, W] float32, GroundFit whose
    ``details`` record the conversion).
    """
    from scipy import ndimage

    H, W = disp.shape
    d = disp.astype(np.float64)
    fin = np.isfinite(d)
    if not fin.any():
        raise ValueError("disparity map has no finite value")
    d_lo, d_hi = np.percentile(d[fin], [0.5, 99.5])
    spread = max(float(d_hi - d_lo), 1e-9)
    xs = (np.arange(W) - intr.cx) / intr.fx
    ys = (np.arange(H) - intr.cy) / intr.fy
    X, Y = np.meshgrid(xs, ys)
    sm = ndimage.gaussian_filter(np.where(fin, d, np.nanmedian(d)), 1.0)
    gy = np.gradient(sm, axis=0) * intr.fy if H > 1 else np.zeros_like(sm)
    gx = np.gradient(sm, axis=1) * intr.fx if W > 1 else np.zeros_like(sm)
    from .depth.base import GROUND as _G

    if labels is not None and np.count_nonzero(labels == _G) > 100:
        cand = (labels == _G) & fin
        source = "ground labels"
    else:
        cand = np.zeros((H, W), bool)
        cand[int(H * 0.55) :, :] = True
        cand &= fin & (gy > 0)
        source = "lower 45 % of the photo, disparity increasing downwards"
    rng = np.random.default_rng(seed)
    sel = np.flatnonzero(cand.ravel())
    if len(sel) > 20000:
        sel = rng.choice(sel, 20000, replace=False)
    fit = _fit_disparity_plane(
        X.ravel()[sel], Y.ravel()[sel], d.ravel()[sel], gx.ravel()[sel], gy.ravel()[sel],
        0.02 * spread, rng,
    )  # fmt: skip
    details: dict = {
        "model": "d = a / z + b",
        "ground_candidates": source,
        "disparity_percentiles_0.5_99.5": [float(d_lo), float(d_hi)],
    }
    if fit is None or fit[1].mean() < 0.15 or fit[1].sum() < 50:
        b = float(d_lo - 0.05 * spread)
        rel = (1.0 / np.maximum(d - b, 0.05 * spread / 20.0)).astype(np.float32)
        rel[~fin] = np.nan
        details.update(method="no ground found: shift below the minimum, relative depth",
                       shift_b=b)  # fmt: skip
        depth, g = fit_ground(
            DepthEstimate(rel, "relative", labels=labels), intr, camera_height=camera_height,
            seed=seed,
        )  # fmt: skip
        return depth, GroundFit(g.normal, g.height, g.scale, g.scale_source,
                                "disparity-" + g.method, g.inlier_fraction, details)  # fmt: skip
    (alpha, beta, gamma), inl = fit
    h = float(camera_height)
    r = float(np.hypot(alpha, beta))
    t = np.tan(np.radians(max_pitch_deg))
    bs = gamma + np.linspace(-t * r, t * r, 801)  # |pitch| <= max_pitch_deg
    a = h * np.sqrt(alpha**2 + beta**2 + (gamma - bs) ** 2)
    margin = (d_lo - bs) - a / far
    feasible = margin >= 0
    if feasible.any():
        k = int(np.argmin(np.where(feasible, np.abs(bs - gamma), np.inf)))
        rule = "closest to a level camera with every pixel within `far`"
    else:
        k = int(np.argmax(margin))
        rule = (
            f"no pitch within {max_pitch_deg} deg keeps every pixel within `far`: least violation"
        )
    b, a_k = float(bs[k]), float(a[k])
    v = np.array([alpha, beta, gamma - b])
    n = -v / np.linalg.norm(v)
    depth = a_k / np.maximum(d - b, a_k / far)
    depth = np.where(fin, depth, np.nan).astype(np.float32)
    details.update(
        method="ground plane fitted in disparity, shift by the level-camera prior",
        plane_alpha_beta_gamma=[float(alpha), float(beta), float(gamma)],
        scale_a=a_k,
        shift_b=b,
        shift_rule=rule,
        pitch_deg=float(np.degrees(np.arcsin(np.clip(n[2], -1, 1)))),
        far=float(far),
    )
    frac = float(inl.mean())
    return depth, GroundFit(n, h, a_k, "ground-plane-prior", "disparity-ground-plane", frac,
                            details)  # fmt: skip
