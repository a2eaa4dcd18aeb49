"""Frames and splat selection shared by every splat exporter.

Frames (ARCHITECTURE.md, "Conventions")
---------------------------------------
``splats.ply`` holds the splats in the *source camera's* OpenCV axes (x right, y down,
z forward), which are pitched and rolled with the camera. An export uses one of two frames:

``"world"``
    worldgen's world frame: right-handed, metres, +Y up (against gravity), the source camera at
    the origin facing -Z at yaw 0: ``p_world = world_from_camera @ p_camera`` (the 4x4 of
    ``world.json``). This is glTF's frame (+Y up, right-handed), so the glTF exports use it.
    In SPZ's axis names it is RUB (x right, y up, z back).

``"opencv"``
    the *gravity-levelled* OpenCV frame: the world frame rotated 180 degrees about X,
    ``p_opencv = (X, -Y, -Z)``: x right, y down (along gravity), z forward (the source camera's
    heading, levelled). It is what splat tools expect of a 3DGS PLY (RDF: right, down, front),
    without the camera's pitch and roll, so the ground is level in any viewer. The PLY and
    ``.splat`` exports use it; the SPZ export stores the same scene in SPZ's RUB axes, which is
    the world frame (see ``exporters.spz``).

A change of frame is a rigid motion ``p -> R p + t``. Means are transformed, rotations
composed (``q -> q_R * q``, the quaternion of ``R`` applied after the splat's own), scales and
opacities are unchanged, and the SH coefficients of degree 1-3 are rotated so the colour seen
along direction ``R d`` after the change equals the colour seen along ``d`` before it.
"""

from __future__ import annotations

from dataclasses import replace
from functools import lru_cache

import numpy as np
import torch

from worldgen.errors import BundleError, InputError
from worldgen.splats import Splats

FRAMES = ("world", "opencv")

#: world -> levelled OpenCV: 180 degrees about X
OPENCV_FROM_WORLD = np.diag([1.0, -1.0, -1.0, 1.0])


def frame_from_camera(world, frame: str) -> np.ndarray:
    """[4, 4] rigid transform from splats.ply's source-camera axes to ``frame``."""
    if frame not in FRAMES:
        raise InputError(f"unknown frame {frame!r}; valid: {', '.join(FRAMES)}")
    M = np.asarray(world.world_from_camera, dtype=np.float64)
    if M.shape != (4, 4) or not np.all(np.isfinite(M)):
        raise BundleError("world_from_camera must be a finite 4x4 matrix")
    R = M[:3, :3]
    if not np.allclose(R @ R.T, np.eye(3), atol=1e-4) or np.linalg.det(R) < 0:
        raise BundleError("world_from_camera is not a rotation plus a translation")
    if frame == "opencv":
        M = OPENCV_FROM_WORLD @ M
    return M


def world_splats(world, frame: str) -> Splats:
    """The world's splats in ``frame`` ("world" or "opencv"; see the module docstring)."""
    return transform_splats(world.splats, frame_from_camera(world, frame))


def transform_splats(splats: Splats, M: np.ndarray) -> Splats:
    """``splats`` moved by the rigid transform ``M [4, 4]`` (rotation + translation)."""
    M = np.asarray(M, dtype=np.float64)
    R, t = M[:3, :3], M[:3, 3]
    means = splats.means.detach().cpu().double().numpy() @ R.T + t
    q = quat_multiply(quat_from_matrix(R)[None], splats.quats.detach().cpu().double().numpy())
    sh = rotate_sh(splats.sh.detach().cpu().double().numpy(), R)
    f32 = torch.float32
    return replace(
        splats,
        means=torch.from_numpy(means).to(f32),
        quats=torch.from_numpy(q).to(f32),
        sh=torch.from_numpy(sh).to(f32),
        log_scales=splats.log_scales.detach().cpu().to(f32),
        logit_opacities=splats.logit_opacities.detach().cpu().to(f32),
        layers=splats.layers.detach().cpu(),
    )


# ----------------------------------------------------------------------------- quaternions


def quat_from_matrix(R: np.ndarray) -> np.ndarray:
    """Unit quaternion (w, x, y, z) of a rotation matrix ``R [3, 3]`` (w >= 0)."""
    R = np.asarray(R, dtype=np.float64)
    tr = np.trace(R)
    # Shepperd: pick the largest of 4w^2, 4x^2, 4y^2, 4z^2 for a stable square root
    cands = np.array([tr, R[0, 0], R[1, 1], R[2, 2]])
    i = int(np.argmax(cands))
    if i == 0:
        s = 2.0 * np.sqrt(1.0 + tr)
        q = [0.25 * s, (R[2, 1] - R[1, 2]) / s, (R[0, 2] - R[2, 0]) / s, (R[1, 0] - R[0, 1]) / s]
    elif i == 1:
        s = 2.0 * np.sqrt(1.0 + R[0, 0] - R[1, 1] - R[2, 2])
        q = [(R[2, 1] - R[1, 2]) / s, 0.25 * s, (R[0, 1] + R[1, 0]) / s, (R[0, 2] + R[2, 0]) / s]
    elif i == 2:
        s = 2.0 * np.sqrt(1.0 + R[1, 1] - R[0, 0] - R[2, 2])
        q = [(R[0, 2] - R[2, 0]) / s, (R[0, 1] + R[1, 0]) / s, 0.25 * s, (R[1, 2] + R[2, 1]) / s]
    else:
        s = 2.0 * np.sqrt(1.0 + R[2, 2] - R[0, 0] - R[1, 1])
        q = [(R[1, 0] - R[0, 1]) / s, (R[0, 2] + R[2, 0]) / s, (R[1, 2] + R[2, 1]) / s, 0.25 * s]
    q = np.asarray(q)
    q /= np.linalg.norm(q)
    return -q if q[0] < 0 else q


def quat_to_matrix(q: np.ndarray) -> np.ndarray:
    """[..., 3, 3] rotation matrices of quaternions ``q [..., 4]`` (w, x, y, z), normalised
    (the rasterizer's own conversion, in float64)."""
    from worldgen.raster.common import quat_to_rotmat

    return quat_to_rotmat(torch.as_tensor(np.asarray(q, np.float64))).numpy()


def quat_multiply(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamilton product ``a * b`` of quaternions ``[..., 4]`` (w, x, y, z)."""
    aw, ax, ay, az = np.moveaxis(np.asarray(a, dtype=np.float64), -1, 0)
    bw, bx, by, bz = np.moveaxis(np.asarray(b, dtype=np.float64), -1, 0)
    return np.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        axis=-1,
    )


# ----------------------------------------------------------------------------- SH rotation


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """[N, (degree+1)^2] real SH basis at unit ``dirs [N, 3]``: the basis every 3DGS renderer
    uses (INRIA / gsplat / KHR_gaussian_splatting Appendix A: Condon-Shortley phase, so
    ``Y_1 = (-C1 y, C1 z, -C1 x)``). Implemented by ``worldgen.raster.common.sh_bases``."""
    from worldgen.raster.common import sh_bases

    d = torch.from_numpy(np.asarray(dirs, dtype=np.float64))
    return sh_bases(degree, d).numpy()


@lru_cache(maxsize=32)
def _sh_rotation_cached(key: tuple, degree: int) -> np.ndarray:
    R = np.asarray(key, dtype=np.float64).reshape(3, 3)
    # directions well spread over the sphere (a Fibonacci lattice): deterministic, no RNG
    n = 64
    i = np.arange(n) + 0.5
    z = 1 - 2 * i / n
    phi = np.pi * (1 + 5**0.5) * i
    r = np.sqrt(1 - z * z)
    d = np.stack([r * np.cos(phi), r * np.sin(phi), z], 1)
    lo, hi = degree**2, (degree + 1) ** 2
    A = sh_basis(d, degree)[:, lo:hi]  # Y(d)
    B = sh_basis(d @ R.T, degree)[:, lo:hi]  # Y(R d)
    # Y(R d) = D Y(d) for one (2l+1)x(2l+1) matrix D: solve A D^T = B
    Dt, *_ = np.linalg.lstsq(A, B, rcond=None)
    D = Dt.T
    # colour' (R d) = c'^T D Y(d) must equal c^T Y(d): c' = D^-T c (D is orthogonal: D c)
    return np.linalg.inv(D).T


def sh_rotation(R: np.ndarray, degree: int) -> np.ndarray:
    """[(2l+1), (2l+1)] matrix taking the degree-``l`` coefficients of one colour channel to
    the frame rotated by ``R``: ``c' = sh_rotation(R, l) @ c``; then
    ``colour'(R d) == colour(d)`` for every direction ``d``."""
    key = tuple(np.round(np.asarray(R, dtype=np.float64).ravel(), 12).tolist())
    return _sh_rotation_cached(key, degree)


def rotate_sh(sh: np.ndarray, R: np.ndarray) -> np.ndarray:
    """SH coefficients ``sh [N, K, 3]`` (K = 1, 4, 9, 16) rotated by ``R [3, 3]``."""
    out = np.array(sh, dtype=np.float64, copy=True)
    degree = int(round(out.shape[1] ** 0.5)) - 1
    for deg in range(1, degree + 1):
        lo, hi = deg**2, (deg + 1) ** 2
        out[:, lo:hi, :] = np.einsum("ij,njc->nic", sh_rotation(R, deg), out[:, lo:hi, :])
    return out


# ----------------------------------------------------------------------------- selection


def importance(splats: Splats) -> np.ndarray:
    """[N] ``opacity * exp(sum of log-scales)``: opacity times the ellipsoid's volume (up to a
    constant), the ordering convention of antimatter15 ``.splat`` files."""
    op = torch.sigmoid(splats.logit_opacities.detach().double()).cpu().numpy()
    vol = np.exp(splats.log_scales.detach().double().sum(dim=1).cpu().numpy())
    return op * vol


def prepare(world, options, frame: str) -> Splats:
    """The splats an export writes: the ``budget`` most important ones (all if no budget),
    ordered by importance (largest first), SH truncated to the resolved degree, in ``frame``,
    rotations as unit quaternions (every reader normalises them anyway; converters that copy
    them, like splat-transform's PLY -> glTF, then stay within KHR_gaussian_splatting).

    ``options`` is an ``exporters.registry.ExportOptions``.
    """
    s = world.splats
    if len(s) == 0:
        raise InputError(f"{world.path}: the world has no splats to export")
    degree, budget = options.resolved(s.sh_degree)
    imp = importance(s)
    order = np.argsort(-imp, kind="stable")
    if budget is not None:
        order = order[: int(budget)]
    s = s.index(torch.from_numpy(order)).with_sh_degree(degree)
    s = transform_splats(s, frame_from_camera(world, frame))
    return replace(s, quats=torch.from_numpy(unit_quats(s.quats.double().numpy())).float())


def unit_quats(q: np.ndarray) -> np.ndarray:
    """[N, 4] quaternions scaled to unit length (a zero one becomes the identity)."""
    q = np.asarray(q, dtype=np.float64)
    n = np.linalg.norm(q, axis=-1, keepdims=True)
    ident = np.zeros_like(q)
    ident[..., 0] = 1.0
    return np.where(n > 0, q / np.where(n > 0, n, 1.0), ident)
