"""Brute-force reference rasterizer: every pixel x every splat, float64, one splat at a time.

Slow and obviously correct; the ground truth of the tests. It follows the rules written in
``common.py`` literally and uses no bounding boxes: whether a splat reaches a pixel is decided by
the alpha test alone. Differentiable by autograd (w.r.t. every splat parameter) when the splat
tensors require grad: the ground truth of the gradient tests too.
"""

from __future__ import annotations

import torch

from ..camera import Camera
from ..errors import BackendError
from ..splats import Splats
from .common import T_MIN, RasterSettings, RenderOutput, finish, pair_alpha, project

#: refuse scenes with more pixel x splat pairs than this
MAX_PAIRS = 4_000_000


def rasterize_reference(splats: Splats, camera: Camera, settings: RasterSettings) -> RenderOutput:
    W, H = settings.width, settings.height
    P, N = W * H, len(splats)
    if P * N > MAX_PAIRS:
        raise BackendError(
            f"the reference rasterizer is for tiny scenes: {P} pixels x {N} splats "
            f"> {MAX_PAIRS} pairs"
        )
    dev = splats.means.device
    f64 = torch.float64
    grad = torch.is_grad_enabled() and any(
        t.requires_grad
        for t in (splats.means, splats.quats, splats.log_scales, splats.logit_opacities, splats.sh)
    )
    proj = project(splats, camera, settings, grad=grad)

    # pixel centres: column i at u = i, row j at v = j; flat index j * W + i
    v, u = torch.meshgrid(
        torch.arange(H, dtype=f64, device=dev),
        torch.arange(W, dtype=f64, device=dev),
        indexing="ij",
    )
    u, v = u.reshape(-1, 1), v.reshape(-1, 1)  # [P, 1]
    dx = proj.mean2d[None, :, 0] - u  # [P, N]
    dy = proj.mean2d[None, :, 1] - v
    a, b, c = proj.conic.unbind(-1)
    alpha, counted = pair_alpha(dx, dy, a, b, c, proj.opacity)  # [P, N]
    counted &= proj.valid[None, :]

    order = torch.argsort(proj.depth, stable=True)  # front to back, ties by splat index
    T = torch.ones(P, dtype=f64, device=dev)
    done = torch.zeros(P, dtype=torch.bool, device=dev)
    rgb = torch.zeros(P, 3, dtype=f64, device=dev)
    depth = torch.zeros(P, dtype=f64, device=dev)
    for s in order.tolist():
        if not bool(proj.valid[s]):
            continue
        a_s = alpha[:, s]
        live = counted[:, s] & ~done
        next_T = T * (1.0 - a_s)
        stop = live & (next_T <= T_MIN)  # this splat is not composited; the pixel is finished
        done = done | stop
        comp = live & ~stop
        w = torch.where(comp, a_s * T, torch.zeros_like(T))
        rgb = rgb + w[:, None] * proj.color[s]
        depth = depth + w * proj.depth[s]
        T = torch.where(comp, next_T, T)
    return finish(rgb, depth, T, settings)
