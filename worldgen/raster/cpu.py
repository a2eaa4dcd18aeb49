"""The fast CPU rasterizer: 16x16 tiles, per-tile depth-sorted lists, numba kernels for the
forward pass and a hand-written backward pass, parallel over tiles.

The two tile kernels (forward, backward) also exist in C++ (``native/tiles.cpp``: SIMD over
the pixels of a tile row, ~5x faster, same results up to float32 rounding), built with the
system's C++ compiler on first use and then used instead of the numba ones (``kernel_impl()``);
without a compiler, or with ``WORLDGEN_NATIVE=0``, the numba kernels run. So do the projection
kernels (``_project_fwd``, ``_project_bwd``) for float32 parameters: 4 splats per AVX vector,
~3x faster, numba's float64 arithmetic but for an ulp of exp/log (float64 parameters: numba).

The rules are ``common.py``'s (gsplat's): the same projection (``common.project``, here per
splat in float64 with a hand-derived backward pass, so gradients reach means, quaternions,
scales, opacities and SH),
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
from dataclasses import dataclass

import numpy as np
import torch

from ..camera import Camera
from ..splats import Splats
from . import native
from .common import (
    _SH_C0,
    _SH_C1,
    _SH_C2,
    _SH_C3,
    ALPHA_MAX,
    ALPHA_MIN,
    EPS2D,
    EXTEND_MAX,
    T_MIN,
    RasterSettings,
    RenderOutput,
    project,
)

TILE = 16
#: splats per scratch allocation in the projection kernels
_CHUNK = 256

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

    @njit(cache=True, inline="always")
    def _chord(a, b, c, dy, tau, mxi, ua, ub):
        """Columns [r0, r1] (within [ua, ub]) of the row at offset ``dy`` where
        ``sigma = 0.5 a dx^2 + b dy dx + 0.5 c dy^2 <= tau`` (dx = mxi - px), widened by 1e-3 px
        (the exact alpha test follows); r0 > r1 when the row misses the ellipse."""
        bdy = b * dy
        disc = bdy * bdy - a * (c * dy * dy - np.float32(2.0) * tau)
        if disc < 0 or a <= 0:
            return 1, 0
        root = math.sqrt(disc)
        # dx in [(-bdy - root) / a, (-bdy + root) / a]  ->  px = mxi - dx
        lo = mxi - (root - bdy) / a - 1e-3
        hi = mxi + (root + bdy) / a + 1e-3
        return max(ua, int(math.ceil(lo))), min(ub, int(math.floor(hi)))

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
                    r0, r1 = _chord(a, b, c, dy, tau, mxi, ua, ub)
                    for px in range(r0, r1 + 1):
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
            S = np.zeros((P, 3), np.float32)  # colour composited behind (incl. background)
            G = np.zeros((P, 3), np.float32)
            GT = np.zeros(P, np.float32)  # g_alpha * T_final
            L = np.zeros(P, np.int32)
            kmax = 0
            for py in range(th):
                for px in range(tw):
                    p = py * TILE + px
                    u = x0 + px
                    v = y0 + py
                    T[p] = T_fin[v, u]
                    S[p, 0] = T[p] * bg[0]
                    S[p, 1] = T[p] * bg[1]
                    S[p, 2] = T[p] * bg[2]
                    G[p, 0] = g_rgb[v, u, 0]
                    G[p, 1] = g_rgb[v, u, 1]
                    G[p, 2] = g_rgb[v, u, 2]
                    GT[p] = g_alpha[v, u] * T_fin[v, u]
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
                    r0, r1 = _chord(a, b, c, dy, tau, mxi, ua, ub)
                    for px in range(r0, r1 + 1):
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
                        dA = Ti * mine - (behind - GT[p]) / one_m
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


if HAVE_NUMBA:
    # gsplat's SH constants, shared with the torch path
    _C0, _C1, _C2, _C3 = _SH_C0, _SH_C1, _SH_C2, _SH_C3

    @njit(cache=True, inline="always")
    def _sh_basis(deg, x, y, z, out, dout):
        """Real SH bases (gsplat's) at the unit direction (x, y, z) and their derivatives
        d b_k / d (x, y, z) in ``dout [16, 3]``."""
        out[0] = _C0
        for k in range(16):
            dout[k, 0] = 0.0
            dout[k, 1] = 0.0
            dout[k, 2] = 0.0
        if deg < 1:
            return
        out[1] = -_C1 * y
        dout[1, 1] = -_C1
        out[2] = _C1 * z
        dout[2, 2] = _C1
        out[3] = -_C1 * x
        dout[3, 0] = -_C1
        if deg < 2:
            return
        out[4] = _C2[3] * 2.0 * x * y
        dout[4, 0] = 2.0 * _C2[3] * y
        dout[4, 1] = 2.0 * _C2[3] * x
        out[5] = -_C2[0] * z * y
        dout[5, 1] = -_C2[0] * z
        dout[5, 2] = -_C2[0] * y
        out[6] = _C2[1] * z * z - _C2[2]
        dout[6, 2] = 2.0 * _C2[1] * z
        out[7] = -_C2[0] * z * x
        dout[7, 0] = -_C2[0] * z
        dout[7, 2] = -_C2[0] * x
        out[8] = _C2[3] * (x * x - y * y)
        dout[8, 0] = 2.0 * _C2[3] * x
        dout[8, 1] = -2.0 * _C2[3] * y
        if deg < 3:
            return
        tc = -_C3[0] * z * z + _C3[1]
        out[9] = -_C3[3] * (3.0 * x * x * y - y * y * y)
        dout[9, 0] = -_C3[3] * 6.0 * x * y
        dout[9, 1] = -_C3[3] * (3.0 * x * x - 3.0 * y * y)
        out[10] = _C3[2] * z * 2.0 * x * y
        dout[10, 0] = 2.0 * _C3[2] * z * y
        dout[10, 1] = 2.0 * _C3[2] * z * x
        dout[10, 2] = 2.0 * _C3[2] * x * y
        out[11] = tc * y
        dout[11, 1] = tc
        dout[11, 2] = -2.0 * _C3[0] * z * y
        out[12] = z * (_C3[4] * z * z - _C3[5])
        dout[12, 2] = 3.0 * _C3[4] * z * z - _C3[5]
        out[13] = tc * x
        dout[13, 0] = tc
        dout[13, 2] = -2.0 * _C3[0] * z * x
        out[14] = _C3[2] * z * (x * x - y * y)
        dout[14, 0] = 2.0 * _C3[2] * z * x
        dout[14, 1] = -2.0 * _C3[2] * z * y
        dout[14, 2] = _C3[2] * (x * x - y * y)
        out[15] = -_C3[3] * (x * x * x - 3.0 * x * y * y)
        dout[15, 0] = -_C3[3] * (3.0 * x * x - 3.0 * y * y)
        dout[15, 1] = 6.0 * _C3[3] * x * y

    @njit(cache=True, inline="always")
    def _rotmat(qw, qx, qy, qz, R):
        R[0, 0] = 1.0 - 2.0 * (qy * qy + qz * qz)
        R[0, 1] = 2.0 * (qx * qy - qw * qz)
        R[0, 2] = 2.0 * (qx * qz + qw * qy)
        R[1, 0] = 2.0 * (qx * qy + qw * qz)
        R[1, 1] = 1.0 - 2.0 * (qx * qx + qz * qz)
        R[1, 2] = 2.0 * (qy * qz - qw * qx)
        R[2, 0] = 2.0 * (qx * qz - qw * qy)
        R[2, 1] = 2.0 * (qy * qz + qw * qx)
        R[2, 2] = 1.0 - 2.0 * (qx * qx + qy * qy)

    @njit(cache=True, inline="always")
    def _camera_point(means, i, Rv, tv):
        """Splat i's centre (float64 even from float32 arrays: numba's float() would keep
        float32) and that point in the camera: (mx, my, mz, x, y, z)."""
        mx, my, mz = np.float64(means[i, 0]), np.float64(means[i, 1]), np.float64(means[i, 2])
        x = Rv[0, 0] * mx + Rv[0, 1] * my + Rv[0, 2] * mz + tv[0]
        y = Rv[1, 0] * mx + Rv[1, 1] * my + Rv[1, 2] * mz + tv[1]
        z = Rv[2, 0] * mx + Rv[2, 1] * my + Rv[2, 2] * mz + tv[2]
        return mx, my, mz, x, y, z

    @njit(cache=True, inline="always")
    def _splat_frame(quats, log_scales, i, R):
        """Splat i's rotation into R; returns the unit quaternion, its norm and the scales:
        (qw, qx, qy, qz, qn, sc0, sc1, sc2)."""
        q0, q1 = np.float64(quats[i, 0]), np.float64(quats[i, 1])
        q2, q3 = np.float64(quats[i, 2]), np.float64(quats[i, 3])
        qn = max(math.sqrt(q0**2 + q1**2 + q2**2 + q3**2), 1e-12)
        qw, qx, qy, qz = q0 / qn, q1 / qn, q2 / qn, q3 / qn
        _rotmat(qw, qx, qy, qz, R)
        sc0 = math.exp(np.float64(log_scales[i, 0]))
        sc1 = math.exp(np.float64(log_scales[i, 1]))
        sc2 = math.exp(np.float64(log_scales[i, 2]))
        return qw, qx, qy, qz, qn, sc0, sc1, sc2

    @njit(cache=True, inline="always")
    def _cov_in_camera(R, sc0, sc1, sc2, Rv, M, S, T1, Sc):
        """Scratch filled in place: M = R diag(s), S = M M^T, Sc = Rv S Rv^T."""
        for a in range(3):
            M[a, 0] = R[a, 0] * sc0
            M[a, 1] = R[a, 1] * sc1
            M[a, 2] = R[a, 2] * sc2
        for a in range(3):
            for b in range(3):
                S[a, b] = M[a, 0] * M[b, 0] + M[a, 1] * M[b, 1] + M[a, 2] * M[b, 2]
        for a in range(3):  # T1 = Rv S
            for b in range(3):
                T1[a, b] = Rv[a, 0] * S[0, b] + Rv[a, 1] * S[1, b] + Rv[a, 2] * S[2, b]
        for a in range(3):  # Sc = T1 Rv^T
            for b in range(3):
                Sc[a, b] = T1[a, 0] * Rv[b, 0] + T1[a, 1] * Rv[b, 1] + T1[a, 2] * Rv[b, 2]

    @njit(cache=True, inline="always")
    def _cov2d(Sc, j00, j02, j11, j12):
        """C = J Sc J^T + eps2d I with J = [[j00, 0, j02], [0, j11, j12]]: (c00, c01, c11)."""
        c00 = j00 * j00 * Sc[0, 0] + 2.0 * j00 * j02 * Sc[0, 2] + j02 * j02 * Sc[2, 2] + EPS2D
        c11 = j11 * j11 * Sc[1, 1] + 2.0 * j11 * j12 * Sc[1, 2] + j12 * j12 * Sc[2, 2] + EPS2D
        c01 = j00 * j11 * Sc[0, 1] + j00 * j12 * Sc[0, 2]
        c01 += j02 * j11 * Sc[2, 1] + j02 * j12 * Sc[2, 2]
        return c00, c01, c11

    @njit(parallel=True, cache=True)
    def _project_fwd(means, quats, log_scales, logits, sh, deg, Rv, tv, cam, W, H, near, far):
        """gsplat's projection (common.project) per splat, float64 inside.

        cam = (fx, fy, cx, cy). Returns float32 [n, 12]: mean2d (2), conic (3), depth,
        opacity, color (3), half extent (2), and valid [n] bool."""
        n = means.shape[0]
        out = np.zeros((n, 12), np.float32)
        valid = np.zeros(n, np.bool_)
        fx, fy, cx, cy = cam[0], cam[1], cam[2], cam[3]
        tan_fx = 0.5 * W / fx
        tan_fy = 0.5 * H / fy
        lxp = (W - cx - 0.5) / fx + 0.3 * tan_fx
        lxn = (cx + 0.5) / fx + 0.3 * tan_fx
        lyp = (H - cy - 0.5) / fy + 0.3 * tan_fy
        lyn = (cy + 0.5) / fy + 0.3 * tan_fy
        # camera centre in the splats' frame: -Rv^T tv
        ccx = -(Rv[0, 0] * tv[0] + Rv[1, 0] * tv[1] + Rv[2, 0] * tv[2])
        ccy = -(Rv[0, 1] * tv[0] + Rv[1, 1] * tv[1] + Rv[2, 1] * tv[2])
        ccz = -(Rv[0, 2] * tv[0] + Rv[1, 2] * tv[1] + Rv[2, 2] * tv[2])
        K = (deg + 1) * (deg + 1)
        # scratch per chunk of splats, not per splat (a heap allocation each otherwise)
        n_chunks = (n + _CHUNK - 1) // _CHUNK
        for ci in prange(n_chunks):
            R = np.empty((3, 3))
            M = np.empty((3, 3))
            S = np.empty((3, 3))
            Sc = np.empty((3, 3))
            T1 = np.empty((3, 3))
            basis = np.empty(16)
            dbasis = np.empty((16, 3))
            for i in range(ci * _CHUNK, min(n, (ci + 1) * _CHUNK)):
                mx, my, mz, x, y, z = _camera_point(means, i, Rv, tv)
                op = 1.0 / (1.0 + math.exp(-np.float64(logits[i])))
                out[i, 5] = z
                out[i, 6] = op
                if not (z >= near and z <= far) or op < ALPHA_MIN:
                    continue
                _, _, _, _, _, sc0, sc1, sc2 = _splat_frame(quats, log_scales, i, R)
                _cov_in_camera(R, sc0, sc1, sc2, Rv, M, S, T1, Sc)
                tx = z * min(max(x / z, -lxn), lxp)
                ty = z * min(max(y / z, -lyn), lyp)
                j00 = fx / z
                j02 = -fx * tx / (z * z)
                j11 = fy / z
                j12 = -fy * ty / (z * z)
                c00, c01, c11 = _cov2d(Sc, j00, j02, j11, j12)
                det = c00 * c11 - c01 * c01
                if not det > 0:
                    continue
                u = fx * x / z + cx
                v = fy * y / z + cy
                ext = min(math.sqrt(2.0 * math.log(max(op, ALPHA_MIN) / ALPHA_MIN)), EXTEND_MAX)
                out[i, 0] = u
                out[i, 1] = v
                out[i, 2] = c11 / det
                out[i, 3] = -c01 / det
                out[i, 4] = c00 / det
                out[i, 10] = ext * math.sqrt(c00)
                out[i, 11] = ext * math.sqrt(c11)
                dx, dy, dz = mx - ccx, my - ccy, mz - ccz
                dn = max(math.sqrt(dx * dx + dy * dy + dz * dz), 1e-12)
                _sh_basis(deg, dx / dn, dy / dn, dz / dn, basis, dbasis)
                for ch in range(3):
                    acc = 0.0
                    for k in range(K):
                        acc += basis[k] * sh[i, k, ch]
                    out[i, 7 + ch] = max(acc + 0.5, 0.0)
                valid[i] = np.isfinite(u) and np.isfinite(v)
        return out, valid

    @njit(parallel=True, cache=True)
    def _project_bwd(
        means, quats, log_scales, logits, sh, deg, Rv, tv, cam, W, H, valid, g_uv, g_conic,
        g_opacity, g_color, g_sh
    ):  # fmt: skip
        """Gradients of (mean2d [n,2], conic [n,3], opacity [n], color [n,3]) = (g_uv, g_conic,
        g_opacity, g_color) w.r.t. means [n,3], quats [n,4], log_scales [n,3], logits [n]
        (returned, float64) and sh (written into g_sh [n,k,3] of the caller's dtype, every
        element: it may come uninitialised)."""
        n = means.shape[0]
        K = (deg + 1) * (deg + 1)
        g_means = np.zeros((n, 3))
        g_quats = np.zeros((n, 4))
        g_ls = np.zeros((n, 3))
        g_logit = np.zeros(n)
        fx, fy, cx, cy = cam[0], cam[1], cam[2], cam[3]
        tan_fx = 0.5 * W / fx
        tan_fy = 0.5 * H / fy
        lxp = (W - cx - 0.5) / fx + 0.3 * tan_fx
        lxn = (cx + 0.5) / fx + 0.3 * tan_fx
        lyp = (H - cy - 0.5) / fy + 0.3 * tan_fy
        lyn = (cy + 0.5) / fy + 0.3 * tan_fy
        ccx = -(Rv[0, 0] * tv[0] + Rv[1, 0] * tv[1] + Rv[2, 0] * tv[2])
        ccy = -(Rv[0, 1] * tv[0] + Rv[1, 1] * tv[1] + Rv[2, 1] * tv[2])
        ccz = -(Rv[0, 2] * tv[0] + Rv[1, 2] * tv[1] + Rv[2, 2] * tv[2])
        # scratch per chunk of splats, not per splat (a heap allocation each otherwise)
        n_chunks = (n + _CHUNK - 1) // _CHUNK
        for ci in prange(n_chunks):
            R = np.empty((3, 3))
            M = np.empty((3, 3))
            S = np.empty((3, 3))
            Sc = np.empty((3, 3))
            T1 = np.empty((3, 3))
            gSc = np.empty((3, 3))
            gS = np.empty((3, 3))
            gM = np.empty((3, 3))
            basis = np.empty(16)
            dbasis = np.empty((16, 3))
            for i in range(ci * _CHUNK, min(n, (ci + 1) * _CHUNK)):
                if not valid[i]:
                    g_sh[i] = 0.0
                    continue
                g_sh[i, K:] = 0.0
                mx, my, mz, x, y, z = _camera_point(means, i, Rv, tv)
                op = 1.0 / (1.0 + math.exp(-np.float64(logits[i])))
                g_logit[i] = g_opacity[i] * op * (1.0 - op)
                qw, qx, qy, qz, qn, sc0, sc1, sc2 = _splat_frame(quats, log_scales, i, R)
                _cov_in_camera(R, sc0, sc1, sc2, Rv, M, S, T1, Sc)
                clx = x / z
                cly = y / z
                free_x = -lxn <= clx <= lxp
                free_y = -lyn <= cly <= lyp
                clx = min(max(clx, -lxn), lxp)
                cly = min(max(cly, -lyn), lyp)
                tx = z * clx
                ty = z * cly
                j00 = fx / z
                j02 = -fx * tx / (z * z)
                j11 = fy / z
                j12 = -fy * ty / (z * z)
                c00, c01, c11 = _cov2d(Sc, j00, j02, j11, j12)
                det = c00 * c11 - c01 * c01
                ga, gb, gc = g_conic[i, 0], g_conic[i, 1], g_conic[i, 2]
                # conic = (c11, -c01, c00) / det
                g_det = -(ga * c11 - gb * c01 + gc * c00) / (det * det)
                g00 = gc / det + g_det * c11
                g11 = ga / det + g_det * c00
                g01 = -gb / det - 2.0 * g_det * c01  # w.r.t. the symmetric off-diagonal value
                # C = J Sc J^T: with Gc = [[g00, g01/2], [g01/2, g11]],
                # g_J = 2 Gc J Sc and g_Sc = J^T Gc J
                h = 0.5 * g01
                # rows of Gc J (2 x 3): J = [[j00, 0, j02], [0, j11, j12]]
                gj0 = (g00 * j00, h * j11, g00 * j02 + h * j12)
                gj1 = (h * j00, g11 * j11, h * j02 + g11 * j12)
                # g_J = 2 (Gc J) Sc; only entries 00, 02, 11, 12 of J vary
                gJ00 = 2.0 * (gj0[0] * Sc[0, 0] + gj0[1] * Sc[1, 0] + gj0[2] * Sc[2, 0])
                gJ02 = 2.0 * (gj0[0] * Sc[0, 2] + gj0[1] * Sc[1, 2] + gj0[2] * Sc[2, 2])
                gJ11 = 2.0 * (gj1[0] * Sc[0, 1] + gj1[1] * Sc[1, 1] + gj1[2] * Sc[2, 1])
                gJ12 = 2.0 * (gj1[0] * Sc[0, 2] + gj1[1] * Sc[1, 2] + gj1[2] * Sc[2, 2])
                # g_Sc = J^T (Gc J): column k of J^T times rows of Gc J
                Jt = ((j00, 0.0), (0.0, j11), (j02, j12))
                for a in range(3):
                    for b in range(3):
                        gSc[a, b] = Jt[a][0] * gj0[b] + Jt[a][1] * gj1[b]
                # mean2d
                gu, gv = g_uv[i, 0], g_uv[i, 1]
                g_x = gu * fx / z
                g_y = gv * fy / z
                g_z = -(gu * fx * x + gv * fy * y) / (z * z)
                # J entries
                g_z += -gJ00 * fx / (z * z) - gJ11 * fy / (z * z)
                g_tx = -gJ02 * fx / (z * z)
                g_z += gJ02 * 2.0 * fx * tx / (z * z * z)
                g_ty = -gJ12 * fy / (z * z)
                g_z += gJ12 * 2.0 * fy * ty / (z * z * z)
                if free_x:
                    g_x += g_tx
                else:
                    g_z += g_tx * clx
                if free_y:
                    g_y += g_ty
                else:
                    g_z += g_ty * cly
                # camera point -> means
                for a in range(3):
                    g_means[i, a] += Rv[0, a] * g_x + Rv[1, a] * g_y + Rv[2, a] * g_z
                # Sc = Rv S Rv^T -> g_S = Rv^T g_Sc Rv (symmetrised)
                for a in range(3):
                    for b in range(3):
                        acc = 0.0
                        for c in range(3):
                            for d in range(3):
                                acc += Rv[c, a] * gSc[c, d] * Rv[d, b]
                        gS[a, b] = acc
                # S = M M^T -> g_M = (g_S + g_S^T) M
                for a in range(3):
                    for b in range(3):
                        gM[a, b] = (
                            (gS[a, 0] + gS[0, a]) * M[0, b]
                            + (gS[a, 1] + gS[1, a]) * M[1, b]
                            + (gS[a, 2] + gS[2, a]) * M[2, b]
                        )
                # M = R diag(s)
                scs = (sc0, sc1, sc2)
                for b in range(3):
                    acc = 0.0
                    for a in range(3):
                        acc += gM[a, b] * R[a, b]
                    g_ls[i, b] = acc * scs[b]
                G00, G01, G02 = gM[0, 0] * sc0, gM[0, 1] * sc1, gM[0, 2] * sc2
                G10, G11, G12 = gM[1, 0] * sc0, gM[1, 1] * sc1, gM[1, 2] * sc2
                G20, G21, G22 = gM[2, 0] * sc0, gM[2, 1] * sc1, gM[2, 2] * sc2
                gw = 2.0 * (-qz * G01 + qy * G02 + qz * G10 - qx * G12 - qy * G20 + qx * G21)
                gx = 2.0 * (
                    qy * G01 + qz * G02 + qy * G10 - 2.0 * qx * G11 - qw * G12 + qz * G20
                    + qw * G21 - 2.0 * qx * G22
                )  # fmt: skip
                gy = 2.0 * (
                    -2.0 * qy * G00 + qx * G01 + qw * G02 + qx * G10 + qz * G12 - qw * G20
                    + qz * G21 - 2.0 * qy * G22
                )  # fmt: skip
                gz = 2.0 * (
                    -2.0 * qz * G00 - qw * G01 + qx * G02 + qw * G10 - 2.0 * qz * G11 + qy * G12
                    + qx * G20 + qy * G21
                )  # fmt: skip
                dot = qw * gw + qx * gx + qy * gy + qz * gz
                g_quats[i, 0] = (gw - qw * dot) / qn
                g_quats[i, 1] = (gx - qx * dot) / qn
                g_quats[i, 2] = (gy - qy * dot) / qn
                g_quats[i, 3] = (gz - qz * dot) / qn
                # colour: SH at the view direction, +0.5, clamp_min 0
                ddx, ddy, ddz = mx - ccx, my - ccy, mz - ccz
                dn = max(math.sqrt(ddx * ddx + ddy * ddy + ddz * ddz), 1e-12)
                ux, uy, uz = ddx / dn, ddy / dn, ddz / dn
                _sh_basis(deg, ux, uy, uz, basis, dbasis)
                gdx = 0.0
                gdy = 0.0
                gdz = 0.0
                for ch in range(3):
                    acc = 0.5
                    for k in range(K):
                        acc += basis[k] * sh[i, k, ch]
                    if acc < 0.0:
                        for k in range(K):
                            g_sh[i, k, ch] = 0.0
                        continue
                    gcol = g_color[i, ch]
                    for k in range(K):
                        g_sh[i, k, ch] = basis[k] * gcol
                        w = sh[i, k, ch] * gcol
                        gdx += dbasis[k, 0] * w
                        gdy += dbasis[k, 1] * w
                        gdz += dbasis[k, 2] * w
                if deg > 0:
                    dd = ux * gdx + uy * gdy + uz * gdz
                    g_means[i, 0] += (gdx - ux * dd) / dn
                    g_means[i, 1] += (gdy - uy * dd) / dn
                    g_means[i, 2] += (gdz - uz * dd) / dn
        return g_means, g_quats, g_ls, g_logit


def _f32(t: torch.Tensor) -> np.ndarray:
    return np.ascontiguousarray(t.detach().to(torch.float32).cpu().numpy())


def _f32_cols(t: torch.Tensor) -> np.ndarray:
    """The columns of [n, k] as the rows of a contiguous float32 [k, n] (one blocked transpose:
    the projection's outputs are strided views of one [n, 12] array)."""
    return t.detach().to(torch.float32).cpu().T.contiguous().numpy()


class _RasterizeTiles(torch.autograd.Function):
    """(mean2d [n,2], conic [n,3], color [n,3], opacity [n]) -> (rgb, alpha, depth, pairs)."""

    @staticmethod
    def forward(ctx, mean2d, conic, color, opacity, depth, order, half_extent, settings):
        W, H = settings.width, settings.height
        tiles_x = (W + TILE - 1) // TILE
        tiles_y = (H + TILE - 1) // TILE
        mx, my = _f32_cols(mean2d)
        hx, hy = _f32_cols(half_extent)
        starts, entries = _bin(order.numpy(), mx, my, hx, hy, W, H, tiles_x, tiles_y)
        ca, cb, cc = _f32_cols(conic)
        op, col, z = _f32(opacity), _f32(color), _f32(depth)
        bg = _f32(settings.background)
        args = (starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z, bg, W, H, tiles_x,
                tiles_y)  # fmt: skip
        ctx.native = native.load() is not None
        if ctx.native:
            rgb, T_fin, dep, last = native.forward_planes(*args)
        else:
            out, last = _forward(*args)
            rgb, T_fin, dep = out[..., :3].copy(), out[..., 3].copy(), out[..., 4].copy()
        ctx.saved = (starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last)
        ctx.dims = (W, H, tiles_x, tiles_y, mean2d.shape[0], mean2d.dtype)
        rgb = torch.from_numpy(rgb)
        alpha = torch.from_numpy(1.0 - T_fin)
        dep = torch.from_numpy(dep)
        ctx.mark_non_differentiable(dep)
        ctx.pairs = int(entries.size)
        return rgb, alpha, dep

    @staticmethod
    def backward(ctx, g_rgb, g_alpha, g_depth):
        starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last = ctx.saved
        W, H, tiles_x, tiles_y, n, dtype = ctx.dims
        g_rgb = _f32(g_rgb) if g_rgb is not None else np.zeros((H, W, 3), np.float32)
        g_alpha = _f32(g_alpha) if g_alpha is not None else np.zeros((H, W), np.float32)
        args = (starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last, g_rgb,
                g_alpha, W, H, tiles_x, tiles_y)  # fmt: skip
        if ctx.native:
            g = native.backward(*args, per_splat=True)
        else:
            g = _reduce(entries, _backward(*args), n)
        g = torch.from_numpy(g).to(dtype)
        return g[:, 0:2], g[:, 2:5], g[:, 6:9], g[:, 5], None, None, None, None


def _np_params(*ts: torch.Tensor) -> list[np.ndarray]:
    """numba views of parameters, float32 or float64 as they are (the projection kernels read
    every element as float64): no float64 copy of the ~50 floats of SH per splat."""
    return [
        t.detach().contiguous().numpy()
        if t.dtype in (torch.float32, torch.float64)
        else t.detach().to(torch.float64).contiguous().numpy()
        for t in ts
    ]


class _ProjectCPU(torch.autograd.Function):
    """Splat parameters -> (mean2d, conic, color, opacity, depth, half_extent, valid): the native
    kernels (``native/tiles.cpp``) for float32 parameters where they load, numba otherwise."""

    @staticmethod
    def forward(ctx, means, quats, log_scales, logits, sh, camera, settings):
        deg = settings.sh_degree
        params = (means, quats, log_scales, logits, sh)
        arrs = _np_params(*params)
        Rv = np.ascontiguousarray(camera.viewmat[:3, :3], np.float64)
        tv = np.ascontiguousarray(camera.viewmat[:3, 3], np.float64)
        intr = camera.intrinsics
        cam = np.array([intr.fx, intr.fy, intr.cx, intr.cy], np.float64)
        W, H = settings.width, settings.height
        # numba's results but for an ulp of exp/log, ~3x faster; float32 parameters only (the
        # native kernels read float32 rows)
        ctx.native = all(t.dtype == torch.float32 for t in params) and native.load() is not None
        project = native.project_fwd if ctx.native else _project_fwd
        out, valid = project(*arrs, deg, Rv, tv, cam, W, H, settings.near, settings.far)
        # the parameters themselves, not copies: autograd then refuses a backward pass after
        # they were changed in place
        ctx.save_for_backward(*params)
        ctx.arrs = (deg, Rv, tv, cam, W, H, valid)
        o = torch.from_numpy(out)
        v = torch.from_numpy(valid)
        ctx.mark_non_differentiable(o[:, 5], o[:, 10:12], v)
        return o[:, 0:2], o[:, 2:5], o[:, 7:10], o[:, 6], o[:, 5], o[:, 10:12], v

    @staticmethod
    def backward(ctx, g_mean2d, g_conic, g_color, g_opacity, *_):
        deg, Rv, tv, cam, W, H, valid = ctx.arrs
        means, quats, log_scales, logits, sh = ctx.saved_tensors
        arrs = _np_params(means, quats, log_scales, logits, sh)
        n = means.shape[0]
        dtype = means.dtype
        grads = [
            _f32(g) if g is not None else np.zeros(shape, np.float32)
            for g, shape in ((g_mean2d, (n, 2)), (g_conic, (n, 3)), (g_opacity, (n,)),
                             (g_color, (n, 3)))
        ]  # fmt: skip
        if ctx.native:  # float32 gradients, every element written
            gs = native.project_bwd(*arrs, deg, Rv, tv, cam, W, H, valid, *grads)
            return (*(torch.from_numpy(g) for g in gs), None, None)
        # in the parameters' dtype (one rounding of the kernel's float64 value), every element
        # written by the kernel
        g_sh = native.empty(sh.shape, np.float32 if dtype == torch.float32 else np.float64)
        gm, gq, gl, go = _project_bwd(*arrs, deg, Rv, tv, cam, W, H, valid, *grads, g_sh)
        return (
            torch.from_numpy(gm).to(dtype),
            torch.from_numpy(gq).to(dtype),
            torch.from_numpy(gl).to(dtype),
            torch.from_numpy(go).to(dtype),
            torch.from_numpy(g_sh).to(dtype),
            None,
            None,
        )


@dataclass
class _Proj:
    mean2d: torch.Tensor
    conic: torch.Tensor
    color: torch.Tensor
    opacity: torch.Tensor
    depth: torch.Tensor
    half_extent: torch.Tensor
    valid: torch.Tensor


def project_cpu(splats: Splats, camera: Camera, settings: RasterSettings) -> _Proj:
    """``common.project`` in numba (float64 inside, float32 out), differentiable."""
    return _Proj(
        *_ProjectCPU.apply(
            splats.means,
            splats.quats,
            splats.log_scales,
            splats.logit_opacities,
            splats.sh,
            camera,
            settings,
        )
    )


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
    """The valid splats, front to back: by increasing depth, ties by index (a stable sort)."""
    depth = proj.depth.detach()
    if depth.dtype == torch.float32 and native.load() is not None:  # a radix sort, ~10x faster
        valid = proj.valid.contiguous().numpy()
        return torch.from_numpy(native.order(depth.contiguous().numpy(), valid))
    ids = torch.nonzero(proj.valid).squeeze(1)
    return ids[torch.argsort(depth[ids], stable=True)].to(torch.int64)


def rasterize_cpu(splats: Splats, camera: Camera, settings: RasterSettings) -> RenderOutput:
    """Tile rasterizer (numba); differentiable w.r.t. the splat parameters."""
    grad = torch.is_grad_enabled() and any(
        t.requires_grad
        for t in (splats.means, splats.quats, splats.log_scales, splats.logit_opacities, splats.sh)
    )
    if grad:
        proj = project_cpu(splats, camera, settings)
    else:
        with torch.no_grad():
            proj = project_cpu(splats, camera, settings)
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
    """Threads the kernels use (numba's, and the native tile kernels' own setting)."""
    if HAVE_NUMBA:
        numba.set_num_threads(max(1, min(int(n), numba.config.NUMBA_NUM_THREADS)))
    native.set_threads(n)


def kernel_impl() -> str:
    """Which tile kernels rasterize here: "native" (``native/tiles.cpp``, built on first use) or
    "numba" (no C++ compiler, a failed build, or ``WORLDGEN_NATIVE=0``; ``native.reason()``)."""
    return "native" if native.load() is not None else "numba"


def warmup() -> None:
    """Compile the kernels (or load them from numba's on-disk cache; build or load the native
    ones) on a tiny scene, forward and backward, e.g. at install time so the first real render
    does not pay the JIT."""
    if not HAVE_NUMBA:
        return
    from ..camera import Intrinsics, Pose
    from .common import make_settings

    g = torch.Generator().manual_seed(0)
    n = 8
    z = torch.rand(n, generator=g) + 1.0
    splats = Splats(
        means=torch.stack(
            [torch.rand(n, generator=g) - 0.5, torch.rand(n, generator=g) - 0.5, z], 1
        ),
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.full((n, 3), -2.0),
        logit_opacities=torch.zeros(n),
        sh=torch.randn(n, 4, 3, generator=g) * 0.1,
        layers=torch.zeros(n, dtype=torch.uint8),
    )
    cam = Camera(Intrinsics(20.0, 20.0, 9.5, 9.5, 20, 20), Pose.identity())
    settings = make_settings(
        splats, cam, None, None, sh_degree=None, background=None, near=0.01, far=1e10
    )
    with torch.no_grad():
        rasterize_cpu(splats, cam, settings)
    params = {k: getattr(splats, k).clone().requires_grad_(True) for k in
              ("means", "quats", "log_scales", "logit_opacities", "sh")}  # fmt: skip
    out = rasterize_cpu(Splats(**params, layers=splats.layers), cam, settings)
    (out.rgb.sum() + out.alpha.sum()).backward()
