"""Shared maths of every raster backend: projection, SH colour, result types, constants.

The conventions are gsplat's (``rasterization(..., rasterize_mode="classic")``, pinhole, as of
gsplat 1.5, which bounds each splat by its opacity-aware box), with one deliberate change of pixel
coordinates:

Pixel coordinates
    worldgen puts the *centre* of pixel column ``i`` at ``u = i`` (and of row ``j`` at ``v = j``),
    the convention of ``worldgen.camera``. gsplat puts the centre of pixel ``px`` at ``px + 0.5``
    and expects its principal point in that "pixel edge" frame. The two agree when gsplat is given
    ``cx_gsplat = cx + 0.5`` (and likewise for ``cy``): then gsplat's ``mean2d - (px + 0.5)`` equals
    our ``mean2d - px``. We therefore evaluate every Gaussian at the integer pixel centre
    ``(i, j)`` with the caller's ``cx, cy``, and we use ``cx + 0.5`` wherever gsplat uses its own
    ``cx`` for something other than the offset (only the clamping limits of the EWA Jacobian).
    A CUDA backend must pass ``K`` with ``cx + 0.5, cy + 0.5`` to gsplat.

Per splat (``project``), in float64:
    * ``Sigma = R S S^T R^T``, ``R`` from the normalised quaternion (w, x, y, z),
      ``S = diag(exp(log_scales))``.
    * camera coordinates ``x_c = V[:3, :3] x + V[:3, 3]``; culled unless ``near <= z <= far``.
    * EWA: ``J = [[fx/z, 0, -fx tx/z^2], [0, fy/z, -fy ty/z^2]]`` where ``tx = z * clamp(x/z,
      -lim_x_neg, lim_x_pos)``, ``lim_x_pos = (W - cx_e)/fx + 0.3 tan_fovx``, ``lim_x_neg = cx_e/fx
      + 0.3 tan_fovx``, ``tan_fovx = 0.5 W / fx``, ``cx_e = cx + 0.5`` (same for y);
      ``cov2d = J Sigma_c J^T + 0.3 I`` (gsplat's ``eps2d`` low-pass; no antialiasing compensation).
    * ``mean2d = (fx x/z + cx, fy y/z + cy)``; ``conic = cov2d^-1``; culled if ``det(cov2d) <= 0``.
    * ``opacity = sigmoid(logit)``; culled if ``opacity < 1/255`` (it could never reach a pixel).
    * colour: SH of degree ``sh_degree`` (gsplat's ``_eval_sh_bases_fast`` constants) evaluated at
      ``normalize(mean - camera_centre)`` in the splats' frame, then ``max(c + 0.5, 0)``.
    * screen extent: gsplat's opacity-aware box, half-size ``extend * sqrt(cov2d[k, k])`` per axis
      with ``extend = sqrt(2 ln(255 opacity))``. That is exactly the bounding box of the ellipse
      where ``alpha >= 1/255``, so it is an acceleration structure only: which pixels a splat
      reaches is decided by the alpha test alone (also in gsplat >= 1.5, whatever its tiles;
      gsplat < 1.5 used ``ceil(3 sqrt(max eigenvalue))`` and so cut faint tails, tile-dependently).

Per (pixel, splat) pair, front to back in increasing camera z of the splat centre (ties: lower
splat index first, a stable sort), per pixel:
    * ``d = mean2d - (i, j)``, ``sigma = max(0, 0.5 (a dx^2 + c dy^2) + b dx dy)`` for ``conic =
      [[a, b], [b, c]]``; ``alpha = min(ALPHA_MAX, opacity exp(-sigma))``.
    * pairs with ``alpha < 1/255`` are skipped (they neither composite nor attenuate).
    * ``T`` starts at 1; ``next_T = T (1 - alpha)``; if ``next_T <= 1e-4`` the pixel stops and that
      splat is *not* composited (gsplat's kernel); otherwise ``w = alpha T``, accumulate, ``T =
      next_T``.
    * ``rgb = sum w c + T_final background``; ``alpha = 1 - T_final``; ``depth = sum(w z) / alpha``
      (0 where alpha is 0), ``z`` the splat centre's camera z (gsplat's "ED" render mode).

``ALPHA_MAX`` is 0.999 as in gsplat's kernels (the original INRIA 3DGS code uses 0.99).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..camera import Camera
from ..errors import InputError
from ..splats import Splats

#: alpha of one splat at one pixel is clamped to this (gsplat: ``min(0.999f, ...)``)
ALPHA_MAX = 0.999
#: pairs with a smaller alpha are skipped
ALPHA_MIN = 1.0 / 255.0
#: a pixel stops when its transmittance would fall to this or below
T_MIN = 1e-4
#: gsplat's eps2d low-pass added to the diagonal of the 2D covariance
EPS2D = 0.3
#: gsplat's cap on the extent of the box, in standard deviations (sqrt(2 ln 255) < 3.33)
EXTEND_MAX = 3.33

# gsplat's _eval_sh_bases_fast / sh_coeffs_to_color_fast constants
_SH_C0 = 0.2820947917738781
_SH_C1 = 0.48860251190292
_SH_C2 = (1.092548430592079, 0.9461746957575601, 0.3153915652525201, 0.5462742152960395)
_SH_C3 = (
    2.285228997322329,
    0.4570457994644658,
    1.445305721320277,
    0.5900435899266435,
    1.865881662950577,
    1.119528997770346,
)


@dataclass
class RenderOutput:
    rgb: torch.Tensor  # [H, W, 3] float32
    alpha: torch.Tensor  # [H, W] float32, accumulated opacity (1 - final transmittance)
    depth: torch.Tensor  # [H, W] float32, expected camera z, 0 where alpha == 0


@dataclass
class RenderWeights:
    """The sparse compositing weights of one view: ``rgb = scatter_add(weight * colour[splat])
    + final_T * background`` over the flat pixel index ``pix = y * width + x``.

    Only composited pairs are listed (``weight = alpha_i * T_i > 0``); ``splat`` indexes the
    ``Splats`` that was rendered (original order).
    """

    pix: torch.Tensor  # [M] int64
    splat: torch.Tensor  # [M] int64
    weight: torch.Tensor  # [M] float32
    final_T: torch.Tensor  # [H, W] float32
    width: int
    height: int

    def composite(self, values: torch.Tensor, background=None) -> torch.Tensor:
        """``[H, W, C]`` image of per-splat ``values [N, C]`` (e.g. colours), plus background."""
        v = values.to(self.weight.dtype)
        out = torch.zeros(self.height * self.width, v.shape[1], dtype=v.dtype, device=v.device)
        out.index_add_(0, self.pix, self.weight[:, None] * v[self.splat])
        if background is not None:
            bg = torch.as_tensor(background, dtype=v.dtype, device=v.device).reshape(1, -1)
            out += self.final_T.reshape(-1, 1).to(v.dtype) * bg
        return out.reshape(self.height, self.width, v.shape[1])


@dataclass(frozen=True)
class RasterSettings:
    """Everything a backend needs besides the splats and the camera."""

    width: int
    height: int
    sh_degree: int
    background: torch.Tensor  # [3] float32
    near: float = 0.01
    far: float = 1e10


@dataclass
class Projected:
    """Per-splat screen-space quantities, float64, for all N splats (``valid`` marks the kept)."""

    mean2d: torch.Tensor  # [N, 2] pixel coordinates (centre of pixel i at i)
    conic: torch.Tensor  # [N, 3] (a, b, c) of the inverse 2D covariance [[a, b], [b, c]]
    depth: torch.Tensor  # [N] camera z
    opacity: torch.Tensor  # [N]
    color: torch.Tensor  # [N, 3] after SH, +0.5, clamp_min(0)
    half_extent: torch.Tensor  # [N, 2] half-size of the box of alpha >= 1/255 (x, y), pixels
    valid: torch.Tensor  # [N] bool


def make_settings(
    splats: Splats,
    camera: Camera,
    width: int | None,
    height: int | None,
    *,
    sh_degree: int | None,
    background,
    near: float,
    far: float,
) -> RasterSettings:
    W = int(camera.intrinsics.width if width is None else width)
    H = int(camera.intrinsics.height if height is None else height)
    if W < 1 or H < 1:
        raise InputError(f"image size must be positive, got {W}x{H}")
    deg = splats.sh_degree if sh_degree is None else int(sh_degree)
    if not 0 <= deg <= splats.sh_degree:
        raise InputError(
            f"sh_degree must be in [0, {splats.sh_degree}] for these splats, got {deg}"
        )
    if background is None:
        bg = torch.zeros(3, dtype=torch.float32)
    else:
        bg = torch.as_tensor(background, dtype=torch.float32).detach().cpu().reshape(-1)
        if bg.numel() != 3:
            raise InputError(f"background must have 3 values, got {tuple(bg.shape)}")
    if not (0.0 <= near < far):
        raise InputError(f"need 0 <= near < far, got near={near}, far={far}")
    return RasterSettings(W, H, deg, bg, float(near), float(far))


def quat_to_rotmat(quats: torch.Tensor) -> torch.Tensor:
    """[N, 4] (w, x, y, z), any norm -> [N, 3, 3] rotation matrices."""
    q = quats / quats.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    w, x, y, z = q.unbind(-1)
    R = torch.stack(
        [
            1 - 2 * (y * y + z * z),
            2 * (x * y - w * z),
            2 * (x * z + w * y),
            2 * (x * y + w * z),
            1 - 2 * (x * x + z * z),
            2 * (y * z - w * x),
            2 * (x * z - w * y),
            2 * (y * z + w * x),
            1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )
    return R.reshape(q.shape[:-1] + (3, 3))


def sh_bases(degree: int, dirs: torch.Tensor) -> torch.Tensor:
    """[..., (degree+1)^2] real SH bases at unit ``dirs [..., 3]`` (gsplat's ordering/signs)."""
    out = torch.empty(dirs.shape[:-1] + ((degree + 1) ** 2,), dtype=dirs.dtype, device=dirs.device)
    out[..., 0] = _SH_C0
    if degree < 1:
        return out
    x, y, z = dirs.unbind(-1)
    out[..., 1] = -_SH_C1 * y
    out[..., 2] = _SH_C1 * z
    out[..., 3] = -_SH_C1 * x
    if degree < 2:
        return out
    z2 = z * z
    tb = -_SH_C2[0] * z
    c1 = x * x - y * y
    s1 = 2 * x * y
    out[..., 4] = _SH_C2[3] * s1
    out[..., 5] = tb * y
    out[..., 6] = _SH_C2[1] * z2 - _SH_C2[2]
    out[..., 7] = tb * x
    out[..., 8] = _SH_C2[3] * c1
    if degree < 3:
        return out
    tc = -_SH_C3[0] * z2 + _SH_C3[1]
    tb3 = _SH_C3[2] * z
    c2 = x * c1 - y * s1
    s2 = x * s1 + y * c1
    out[..., 9] = -_SH_C3[3] * s2
    out[..., 10] = tb3 * s1
    out[..., 11] = tc * y
    out[..., 12] = z * (_SH_C3[4] * z2 - _SH_C3[5])
    out[..., 13] = tc * x
    out[..., 14] = tb3 * c1
    out[..., 15] = -_SH_C3[3] * c2
    return out


def sh_colors(
    sh: torch.Tensor, means: torch.Tensor, cam_centre: torch.Tensor, degree: int
) -> torch.Tensor:
    """[N, 3] colours: SH ``sh [N, K, 3]`` up to ``degree`` seen from ``cam_centre``, +0.5, >= 0."""
    k = (degree + 1) ** 2
    dirs = means - cam_centre
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    bases = sh_bases(degree, dirs)  # [N, k]
    c = (bases[:, :, None] * sh[:, :k, :]).sum(dim=1)
    return (c + 0.5).clamp_min(0.0)


def camera_tensors(camera: Camera, device, dtype=torch.float64):
    """(K [3, 3], viewmat [4, 4]) as tensors."""
    K = torch.as_tensor(camera.K, dtype=dtype, device=device)
    V = torch.as_tensor(camera.viewmat, dtype=dtype, device=device)
    return K, V


def project(
    splats: Splats,
    camera: Camera,
    settings: RasterSettings,
    *,
    dtype: torch.dtype = torch.float64,
    grad: bool = False,
) -> Projected:
    """gsplat's fully fused projection (pinhole, classic mode) for every splat, in ``dtype``.

    ``grad=True`` keeps the autograd graph from the splat parameters to ``mean2d``, ``conic``,
    ``depth``, ``opacity`` and ``color`` (``half_extent`` and ``valid`` are never differentiated:
    they only decide which pairs are looked at)."""
    f64 = dtype

    def src(t: torch.Tensor) -> torch.Tensor:
        return (t if grad else t.detach()).to(f64)

    dev = splats.means.device
    W, H = settings.width, settings.height
    K, V = camera_tensors(camera, dev, dtype=f64)
    means = src(splats.means)
    Rv, tv = V[:3, :3], V[:3, 3]
    mc = means @ Rv.T + tv
    x, y, z = mc.unbind(-1)
    in_depth = (z >= settings.near) & (z <= settings.far)
    zs = torch.where(in_depth, z, torch.ones_like(z))

    Rq = quat_to_rotmat(src(splats.quats))
    M = Rq * torch.exp(src(splats.log_scales))[:, None, :]
    cov_c = Rv @ (M @ M.transpose(1, 2)) @ Rv.T  # [N, 3, 3]

    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    tan_fovx = 0.5 * W / fx
    tan_fovy = 0.5 * H / fy
    cxe, cye = cx + 0.5, cy + 0.5  # gsplat's principal point (pixel-edge convention)
    lim_x_pos = (W - cxe) / fx + 0.3 * tan_fovx
    lim_x_neg = cxe / fx + 0.3 * tan_fovx
    lim_y_pos = (H - cye) / fy + 0.3 * tan_fovy
    lim_y_neg = cye / fy + 0.3 * tan_fovy
    tx = zs * torch.clamp(x / zs, min=-lim_x_neg, max=lim_x_pos)
    ty = zs * torch.clamp(y / zs, min=-lim_y_neg, max=lim_y_pos)
    zero = torch.zeros_like(zs)
    J = torch.stack(
        [fx / zs, zero, -fx * tx / (zs * zs), zero, fy / zs, -fy * ty / (zs * zs)], dim=-1
    ).reshape(-1, 2, 3)
    cov2d = J @ cov_c @ J.transpose(1, 2)
    c00 = cov2d[:, 0, 0] + EPS2D
    c01 = 0.5 * (cov2d[:, 0, 1] + cov2d[:, 1, 0])
    c11 = cov2d[:, 1, 1] + EPS2D
    det = c00 * c11 - c01 * c01
    det_safe = torch.where(det > 0, det, torch.ones_like(det))
    conic = torch.stack([c11 / det_safe, -c01 / det_safe, c00 / det_safe], dim=-1)
    mean2d = torch.stack([fx * x / zs + cx, fy * y / zs + cy], dim=-1)

    opacity = torch.sigmoid(src(splats.logit_opacities))
    valid = in_depth & (det > 0) & (opacity >= ALPHA_MIN)
    valid &= torch.isfinite(mean2d).all(-1) & torch.isfinite(conic).all(-1)
    # the ellipse where opacity * exp(-sigma) >= 1/255 is {d : d^T conic d <= 2 ln(255 opacity)}
    with torch.no_grad():
        extend = torch.sqrt(2.0 * torch.log(opacity.clamp_min(ALPHA_MIN) / ALPHA_MIN)).clamp(
            max=EXTEND_MAX
        )
        half_extent = extend[:, None] * torch.stack([c00, c11], dim=-1).clamp_min(0).sqrt()
    # gsplat also drops splats whose box misses the image; those reach no pixel anyway
    valid &= torch.isfinite(half_extent).all(-1)

    cam_centre = -Rv.T @ tv
    color = sh_colors(src(splats.sh), means, cam_centre, settings.sh_degree)
    return Projected(mean2d, conic, z, opacity, color, half_extent, valid)


def pair_alpha(
    dx: torch.Tensor, dy: torch.Tensor, a, b, c, opacity
) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, counted) of pairs with offset ``d = mean2d - pixel`` (broadcasting)."""
    sigma = (0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy).clamp_min(0.0)
    alpha = (opacity * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    return alpha, alpha >= ALPHA_MIN


LOG_T_MIN = math.log(T_MIN)


def finish(
    rgb_acc: torch.Tensor,
    depth_acc: torch.Tensor,
    final_T: torch.Tensor,
    settings: RasterSettings,
) -> RenderOutput:
    """RenderOutput from flat accumulators ``sum w c`` [P, 3], ``sum w z`` [P], ``T`` [P]."""
    H, W = settings.height, settings.width
    bg = settings.background.to(device=rgb_acc.device, dtype=rgb_acc.dtype)
    rgb = rgb_acc + final_T[:, None].to(rgb_acc.dtype) * bg
    alpha = 1.0 - final_T
    depth = torch.where(alpha > 0, depth_acc / alpha.clamp_min(1e-30), torch.zeros_like(alpha))
    return RenderOutput(
        rgb=rgb.reshape(H, W, 3).to(torch.float32),
        alpha=alpha.reshape(H, W).to(torch.float32),
        depth=depth.reshape(H, W).to(torch.float32),
    )
