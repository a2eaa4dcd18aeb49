"""The fast CPU rasterizer: 16x16 tiles, per-tile depth-sorted lists, numba kernels for the
forward pass and a hand-written backward pass, parallel over tiles.

The rules are ``common.py``'s (gsplat's): the same projection (``common.project``, here in
float32 torch with autograd, so gradients reach means, quaternions, scales, opacities and SH),
the same alpha test, clamp and transmittance cut-off, front to back in increasing splat depth
(ties by splat index). Only the pixel loop differs from the torch backend:

1. **Binning** (serial, ~1 ms per 100k splats): every valid splat, in front-to-back order, is
   appended to the list of each 16x16 tile its box of ``alpha >= 1/255`` touches (so each list
   is already depth-sorted: no per-tile sort).
2. **Forward** (``prange`` over tiles): per tile, the lists' splats in order, every pixel of the
   tile in the inner loop (16 x 16 transmittances in registers/L1). A pixel stops at the first
   splat that would take its transmittance to ``<= 1e-4``; the tile stops when all its pixels
   have. Per pixel it keeps the final transmittance and the count of list entries it went
   through (``last``), which is all the backward pass needs.
3. **Backward** (``prange`` over tiles): back to front from each tile's largest ``last``,
   recovering ``T_i = T_(i+1) / (1 - alpha_i)`` and the colour behind ``S_i``:
   ``d rgb / d alpha_i = T_i c_i - S_i / (1 - alpha_i)``,
   ``d (1 - T_final) / d alpha_i = T_final / (1 - alpha_i)``; then through
   ``alpha = min(ALPHA_MAX, o exp(-sigma))`` (no gradient where clamped) to the opacity, the
   conic and the 2D mean. Gradients are written per (tile, splat) pair -- no two threads write
   the same slot -- and summed per splat afterwards.

The depth output (expected camera z) is not differentiated.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from ..camera import Camera
from ..splats import Splats
from .common import (
    ALPHA_MAX,
    ALPHA_MIN,
    T_MIN,
    RasterSettings,
    RenderOutput,
    project,
)

TILE = 16

try:
    import numba
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a declared dependency
    HAVE_NUMBA = False


def available() -> bool:
    return HAVE_NUMBA


if HAVE_NUMBA:

    @njit(cache=True)
    def _bin(order, mx, my, hx, hy, W, H, tiles_x, tiles_y):
        """Tile lists: (starts [T+1] int64, entries [M] int32 splat ids, front to back)."""
        n_t = tiles_x * tiles_y
        n = order.size
        rect = np.empty((n, 4), np.int32)
        counts = np.zeros(n_t + 1, np.int64)
        for k in range(n):
            i = order[k]
            pad_x = hx[i] * (1.0 + 1e-6) + 1e-6
            pad_y = hy[i] * (1.0 + 1e-6) + 1e-6
            u0 = max(0.0, math.ceil(mx[i] - pad_x))
            u1 = min(W - 1.0, math.floor(mx[i] + pad_x))
            v0 = max(0.0, math.ceil(my[i] - pad_y))
            v1 = min(H - 1.0, math.floor(my[i] + pad_y))
            if u0 > u1 or v0 > v1:
                rect[k, 0] = 1
                rect[k, 1] = 0
                rect[k, 2] = 1
                rect[k, 3] = 0
                continue
            tx0, tx1 = int(u0) // TILE, int(u1) // TILE
            ty0, ty1 = int(v0) // TILE, int(v1) // TILE
            rect[k, 0] = tx0
            rect[k, 1] = tx1
            rect[k, 2] = ty0
            rect[k, 3] = ty1
            for ty in range(ty0, ty1 + 1):
                for tx in range(tx0, tx1 + 1):
                    counts[ty * tiles_x + tx + 1] += 1
        for t in range(n_t):
            counts[t + 1] += counts[t]
        entries = np.empty(counts[n_t], np.int32)
        cursor = counts[:n_t].copy()
        for k in range(n):
            i = order[k]
            for ty in range(rect[k, 2], rect[k, 3] + 1):
                for tx in range(rect[k, 0], rect[k, 1] + 1):
                    t = ty * tiles_x + tx
                    entries[cursor[t]] = i
                    cursor[t] += 1
        return counts, entries

    @njit(cache=True, inline="always")
    def _span(m, h, lo, n):
        """Tile-local pixel range [a, b] of the box centred at ``m`` (tile-local) +- ``h``."""
        pad = h * np.float32(1.000001) + np.float32(1e-6)
        a = max(0, int(math.ceil(m - pad)))
        b = min(n - 1, int(math.floor(m + pad)))
        return a, b

    @njit(parallel=True, cache=True, fastmath=False)
    def _forward(
        starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z, bg, W, H, tiles_x, tiles_y
    ):
        n_t = tiles_x * tiles_y
        out = np.zeros((H, W, 5), np.float32)  # r, g, b, T, depth
        last = np.zeros((H, W), np.int32)
        for t in prange(n_t):
            ty = t // tiles_x
            tx = t - ty * tiles_x
            x0 = tx * TILE
            y0 = ty * TILE
            tw = min(TILE, W - x0)
            th = min(TILE, H - y0)
            T = np.ones(TILE * TILE, np.float32)
            acc = np.zeros((TILE * TILE, 4), np.float32)
            lst = np.zeros(TILE * TILE, np.int32)
            done = np.zeros(TILE * TILE, np.bool_)
            n_live = tw * th
            s0 = starts[t]
            for k in range(s0, starts[t + 1]):
                if n_live == 0:
                    break
                i = entries[k]
                a = ca[i]
                b = cb[i]
                c = cc[i]
                o = op[i]
                # alpha >= 1/255 needs sigma <= log(255 o) (slack: the exact test follows)
                tau = np.float32(math.log(o / ALPHA_MIN) + 1e-4)
                mxi = mx[i] - x0
                myi = my[i] - y0
                ua, ub = _span(mxi, hx[i], 0, tw)
                va, vb = _span(myi, hy[i], 0, th)
                cr = col[i, 0]
                cg = col[i, 1]
                cbl = col[i, 2]
                zi = z[i]
                for py in range(va, vb + 1):
                    dy = myi - np.float32(py)
                    for px in range(ua, ub + 1):
                        p = py * TILE + px
                        if done[p]:
                            continue
                        dx = mxi - np.float32(px)
                        sigma = np.float32(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy
                        if sigma > tau:
                            continue
                        if sigma < 0:
                            sigma = np.float32(0.0)
                        alpha = min(np.float32(ALPHA_MAX), o * np.exp(-sigma))
                        if alpha < np.float32(ALPHA_MIN):
                            continue
                        nT = T[p] * (np.float32(1.0) - alpha)
                        if nT <= np.float32(T_MIN):
                            done[p] = True
                            n_live -= 1
                            continue
                        w = alpha * T[p]
                        acc[p, 0] += w * cr
                        acc[p, 1] += w * cg
                        acc[p, 2] += w * cbl
                        acc[p, 3] += w * zi
                        T[p] = nT
                        lst[p] = k - s0 + 1
            for py in range(th):
                for px in range(tw):
                    p = py * TILE + px
                    u = x0 + px
                    v = y0 + py
                    Tp = T[p]
                    out[v, u, 0] = acc[p, 0] + Tp * bg[0]
                    out[v, u, 1] = acc[p, 1] + Tp * bg[1]
                    out[v, u, 2] = acc[p, 2] + Tp * bg[2]
                    out[v, u, 3] = Tp
                    a_out = np.float32(1.0) - Tp
                    out[v, u, 4] = acc[p, 3] / a_out if a_out > 0 else np.float32(0.0)
                    last[v, u] = lst[p]
        return out, last

    @njit(parallel=True, cache=True, fastmath=False)
    def _backward(
        starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last, g_rgb, g_alpha,
        W, H, tiles_x, tiles_y,
    ):  # fmt: skip
        """Per list entry k: gradients (mx, my, a, b, c, o, r, g, b) in ``gp[k]``."""
        n_t = tiles_x * tiles_y
        gp = np.zeros((entries.size, 9), np.float32)
        for t in prange(n_t):
            ty = t // tiles_x
            tx = t - ty * tiles_x
            x0 = tx * TILE
            y0 = ty * TILE
            tw = min(TILE, W - x0)
            th = min(TILE, H - y0)
            s0 = starts[t]
            P = TILE * TILE
            T = np.zeros(P, np.float32)  # transmittance after the entry being undone
            Tf = np.zeros(P, np.float32)
            S = np.zeros((P, 3), np.float32)  # colour composited behind (incl. background)
            G = np.zeros((P, 3), np.float32)
            GA = np.zeros(P, np.float32)
            L = np.zeros(P, np.int32)
            kmax = 0
            for py in range(th):
                for px in range(tw):
                    p = py * TILE + px
                    u = x0 + px
                    v = y0 + py
                    T[p] = T_fin[v, u]
                    Tf[p] = T_fin[v, u]
                    S[p, 0] = T[p] * bg[0]
                    S[p, 1] = T[p] * bg[1]
                    S[p, 2] = T[p] * bg[2]
                    G[p, 0] = g_rgb[v, u, 0]
                    G[p, 1] = g_rgb[v, u, 1]
                    G[p, 2] = g_rgb[v, u, 2]
                    GA[p] = g_alpha[v, u]
                    L[p] = last[v, u]
                    kmax = max(kmax, L[p])
            for kk in range(kmax - 1, -1, -1):
                k = s0 + kk
                i = entries[k]
                a = ca[i]
                b = cb[i]
                c = cc[i]
                o = op[i]
                tau = np.float32(math.log(o / ALPHA_MIN) + 1e-4)
                mxi = mx[i] - x0
                myi = my[i] - y0
                ua, ub = _span(mxi, hx[i], 0, tw)
                va, vb = _span(myi, hy[i], 0, th)
                cr = col[i, 0]
                cg = col[i, 1]
                cbl = col[i, 2]
                g_mx = np.float32(0.0)
                g_my = np.float32(0.0)
                g_a = np.float32(0.0)
                g_b = np.float32(0.0)
                g_c = np.float32(0.0)
                g_o = np.float32(0.0)
                g_r = np.float32(0.0)
                g_g = np.float32(0.0)
                g_bl = np.float32(0.0)
                for py in range(va, vb + 1):
                    dy = myi - np.float32(py)
                    for px in range(ua, ub + 1):
                        p = py * TILE + px
                        if kk >= L[p]:
                            continue
                        dx = mxi - np.float32(px)
                        sigma = np.float32(0.5) * (a * dx * dx + c * dy * dy) + b * dx * dy
                        if sigma > tau:
                            continue
                        pos = sigma > 0
                        if not pos:
                            sigma = np.float32(0.0)
                        g_exp = np.exp(-sigma)
                        raw = o * g_exp
                        alpha = min(np.float32(ALPHA_MAX), raw)
                        if alpha < np.float32(ALPHA_MIN):
                            continue
                        one_m = np.float32(1.0) - alpha
                        Ti = T[p] / one_m
                        w = alpha * Ti
                        g_r += w * G[p, 0]
                        g_g += w * G[p, 1]
                        g_bl += w * G[p, 2]
                        behind = S[p, 0] * G[p, 0] + S[p, 1] * G[p, 1] + S[p, 2] * G[p, 2]
                        mine = cr * G[p, 0] + cg * G[p, 1] + cbl * G[p, 2]
                        dA = Ti * mine - behind / one_m + GA[p] * Tf[p] / one_m
                        S[p, 0] += w * cr
                        S[p, 1] += w * cg
                        S[p, 2] += w * cbl
                        T[p] = Ti
                        if raw < np.float32(ALPHA_MAX):
                            g_o += g_exp * dA
                            if pos:
                                gs = -alpha * dA
                                g_a += gs * np.float32(0.5) * dx * dx
                                g_b += gs * dx * dy
                                g_c += gs * np.float32(0.5) * dy * dy
                                g_mx += gs * (a * dx + b * dy)
                                g_my += gs * (c * dy + b * dx)
                gp[k, 0] = g_mx
                gp[k, 1] = g_my
                gp[k, 2] = g_a
                gp[k, 3] = g_b
                gp[k, 4] = g_c
                gp[k, 5] = g_o
                gp[k, 6] = g_r
                gp[k, 7] = g_g
                gp[k, 8] = g_bl
        return gp

    @njit(cache=True)
    def _reduce(entries, gp, n):
        out = np.zeros((n, 9), np.float32)
        for k in range(entries.size):
            i = entries[k]
            for j in range(9):
                out[i, j] += gp[k, j]
        return out


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


class _RasterizeTiles(torch.autograd.Function):
    """(mean2d [n,2], conic [n,3], color [n,3], opacity [n]) -> (rgb, alpha, depth, pairs)."""

    @staticmethod
    def forward(ctx, mean2d, conic, color, opacity, depth, order, half_extent, settings):
        W, H = settings.width, settings.height
        tiles_x = (W + TILE - 1) // TILE
        tiles_y = (H + TILE - 1) // TILE
        mx, my = _f32(mean2d[:, 0]), _f32(mean2d[:, 1])
        hx, hy = _f32(half_extent[:, 0]), _f32(half_extent[:, 1])
        starts, entries = _bin(order.numpy(), mx, my, hx, hy, W, H, tiles_x, tiles_y)
        ca, cb, cc = _f32(conic[:, 0]), _f32(conic[:, 1]), _f32(conic[:, 2])
        op, col, z = _f32(opacity), _f32(color), _f32(depth)
        bg = _f32(settings.background)
        out, last = _forward(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z, bg, W, H,
                             tiles_x, tiles_y)  # fmt: skip
        T_fin = out[..., 3].copy()
        ctx.saved = (starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last)
        ctx.dims = (W, H, tiles_x, tiles_y, mean2d.shape[0], mean2d.dtype)
        rgb = torch.from_numpy(out[..., :3].copy())
        alpha = torch.from_numpy(1.0 - out[..., 3])
        dep = torch.from_numpy(out[..., 4].copy())
        ctx.mark_non_differentiable(dep)
        ctx.pairs = int(entries.size)
        return rgb, alpha, dep

    @staticmethod
    def backward(ctx, g_rgb, g_alpha, g_depth):
        starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last = ctx.saved
        W, H, tiles_x, tiles_y, n, dtype = ctx.dims
        g_rgb = _f32(g_rgb) if g_rgb is not None else np.zeros((H, W, 3), np.float32)
        g_alpha = _f32(g_alpha) if g_alpha is not None else np.zeros((H, W), np.float32)
        gp = _backward(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last,
                       g_rgb, g_alpha, W, H, tiles_x, tiles_y)  # fmt: skip
        g = torch.from_numpy(_reduce(entries, gp, n)).to(dtype)
        return g[:, 0:2], g[:, 2:5], g[:, 6:9], g[:, 5], None, None, None, None


def count_pairs(splats: Splats, camera: Camera, settings: RasterSettings) -> int:
    """Splat-tile pairs of this view (the work the tile kernels do)."""
    proj = project(splats, camera, settings, dtype=torch.float32)
    order = _order(proj)
    W, H = settings.width, settings.height
    _, entries = _bin(
        order.numpy(),
        _f32(proj.mean2d[:, 0]),
        _f32(proj.mean2d[:, 1]),
        _f32(proj.half_extent[:, 0]),
        _f32(proj.half_extent[:, 1]),
        W,
        H,
        (W + TILE - 1) // TILE,
        (H + TILE - 1) // TILE,
    )
    return int(entries.size)


def _order(proj) -> torch.Tensor:
    ids = torch.nonzero(proj.valid).squeeze(1)
    return ids[torch.argsort(proj.depth.detach()[ids], stable=True)].to(torch.int64)


def rasterize_cpu(splats: Splats, camera: Camera, settings: RasterSettings) -> RenderOutput:
    """Tile rasterizer (numba); differentiable w.r.t. the splat parameters."""
    grad = torch.is_grad_enabled() and any(
        t.requires_grad
        for t in (splats.means, splats.quats, splats.log_scales, splats.logit_opacities, splats.sh)
    )
    proj = project(splats, camera, settings, dtype=torch.float32, grad=grad)
    order = _order(proj)
    rgb, alpha, depth = _RasterizeTiles.apply(
        proj.mean2d,
        proj.conic,
        proj.color,
        proj.opacity,
        proj.depth.detach(),
        order,
        proj.half_extent,
        settings,
    )
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


def set_threads(n: int) -> None:
    """Threads the tile kernels use (numba)."""
    if HAVE_NUMBA:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
