"""Vectorised pure-torch rasterizer (no Python loop over splats or pixels; device-agnostic code,
tested on CPU).

Pipeline (the rules are in ``common.py``):

1. ``project`` every splat (float64); keep the valid ones, stably sorted front to back.
2. Cut that list into depth-ordered chunks of about ``max_pairs`` (splat, pixel) candidates, so
   memory stays bounded (and the arrays stay small enough for the allocator to reuse). Per chunk:

   a. *spans*: for each splat and each image row of its box, the run of columns where
      ``alpha >= 1/255`` (the chord of the alpha ellipse, widened by 1e-6 px; the exact alpha test
      below decides). Spans of equal width are expanded together as dense blocks.
   b. alpha of every candidate pair (float64); drop pairs with ``alpha < 1/255`` and pairs whose
      pixel an earlier chunk already finished.
   c. one int64 sort by ``pixel << b | depth_rank``: a contiguous run per pixel, front to back.
   d. segmented front-to-back transmittance: the float64 cumulative sum of ``log(1 - alpha)``
      minus its value before each run, plus the pixel's ``log T`` carried from earlier chunks. A
      pair is composited iff its inclusive ``T > 1e-4``; a pixel with a pair that is not is
      finished (later chunks skip it).
   e. ``w = alpha * T_exclusive`` of the composited pairs; carry ``log T`` forward.

``render_weights_torch`` returns the (pixel, splat, weight) triplets and ``rasterize_torch``
scatters them into the image chunk by chunk; both consume ``PairStream``.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import torch

from ..camera import Camera
from ..splats import Splats
from .common import (
    ALPHA_MAX,
    ALPHA_MIN,
    LOG_T_MIN,
    Projected,
    RasterSettings,
    RenderOutput,
    RenderWeights,
    finish,
    project,
)

#: default bound on the (splat, pixel) candidates handled at once. About 1M keeps every
#: temporary under glibc's mmap threshold; much larger chunks are slower (page faults), not faster.
MAX_PAIRS = 1_000_000
#: span ends are widened by this many pixels so rounding never drops a pixel (exact test after)
_SPAN_PAD = 1e-6
#: spans up to this width are expanded in blocks of exactly their width; wider ones in
#: power-of-two blocks with the unused tail masked
_EXACT_WIDTHS = 16


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    return t.index_select(0, idx)


@dataclass
class WeightChunk:
    pix: torch.Tensor  # [M] int64 flat pixel index y * W + x
    rank: torch.Tensor  # [M] int64 position in PairStream.ids (front-to-back order)
    weight: torch.Tensor  # [M] float64 alpha * T


class PairStream:
    """The composited (pixel, splat, weight) pairs of one view, produced chunk by chunk.

    ``ids`` [n] are the indices of the splats that can reach the image, front to back; chunks
    refer to them by ``rank``. Iterate once; afterwards ``log_T`` [H*W] float64 is the log of
    every pixel's final transmittance.
    """

    def __init__(self, proj: Projected, settings: RasterSettings, max_pairs: int = MAX_PAIRS):
        self.settings = settings
        self.max_pairs = int(max_pairs)
        W, H = settings.width, settings.height
        dev = proj.mean2d.device
        self.log_T = torch.zeros(W * H, dtype=torch.float64, device=dev)
        self._done: torch.Tensor | None = None  # [H*W] bool once some pixel has finished
        self._consumed = False

        ids = torch.nonzero(proj.valid).squeeze(1)
        ids = _take(ids, torch.argsort(_take(proj.depth, ids), stable=True))  # ties: lower index
        mx, my = _take(proj.mean2d, ids).unbind(-1)
        hx, hy = _take(proj.half_extent, ids).unbind(-1)
        pad_x = hx * (1 + 1e-9) + _SPAN_PAD
        pad_y = hy * (1 + 1e-9) + _SPAN_PAD
        y0 = torch.ceil(my - pad_y).clamp(min=0, max=H)
        y1 = torch.floor(my + pad_y).clamp(min=-1, max=H - 1)
        x0 = torch.ceil(mx - pad_x).clamp(min=0, max=W)
        x1 = torch.floor(mx + pad_x).clamp(min=-1, max=W - 1)
        nrow = (y1 - y0 + 1).clamp_min(0).long()
        bound = nrow * (x1 - x0 + 1).clamp_min(0).long()  # candidates per splat, upper bound
        hit = torch.nonzero(bound > 0).squeeze(1)
        self.ids = _take(ids, hit)
        self.mx, self.my = _take(mx, hit), _take(my, hit)
        ca, cb, cc = _take(proj.conic, self.ids).unbind(-1)
        self.ca, self.cb, self.cc = ca.contiguous(), cb.contiguous(), cc.contiguous()
        self.log_op = torch.log(_take(proj.opacity, self.ids))
        self.y0 = _take(y0, hit).long()
        self.nrow = _take(nrow, hit)
        self.cum = torch.cumsum(_take(bound, hit), 0)

    def __len__(self) -> int:
        return self.ids.numel()

    def __iter__(self) -> Iterator[WeightChunk]:
        if self._consumed:
            raise RuntimeError("a PairStream can be iterated only once")
        self._consumed = True
        n = len(self)
        s0 = 0
        while s0 < n:
            if self._done is not None and bool(self._done.all()):
                break  # every pixel has finished
            before = int(self.cum[s0 - 1]) if s0 > 0 else 0
            s1 = int(torch.searchsorted(self.cum, before + self.max_pairs, right=True))
            s1 = min(max(s1, s0 + 1), n)
            chunk = self._chunk(s0, s1)
            if chunk is not None:
                yield chunk
            s0 = s1

    # ------------------------------------------------------------------ one chunk
    def _spans(self, s0: int, s1: int):
        """Per (splat, row): chunk-local splat j, first pixel, width, and the coefficients of
        ``log(opacity * exp(-sigma)) = -((qa k + qb) k + qc)`` at the span's k-th pixel."""
        W = self.settings.width
        dev = self.mx.device
        ns = s1 - s0
        nrow = self.nrow[s0:s1]
        j = torch.repeat_interleave(torch.arange(ns, device=dev), nrow)
        first = torch.cumsum(nrow, 0) - nrow
        row = _take(self.y0[s0:s1], j) + (torch.arange(j.numel(), device=dev) - _take(first, j))
        a = _take(self.ca[s0:s1], j)
        b = _take(self.cb[s0:s1], j)
        c = _take(self.cc[s0:s1], j)
        mx = _take(self.mx[s0:s1], j)
        dy = _take(self.my[s0:s1], j) - row.double()
        tau = _take(self.log_op[s0:s1], j) - math.log(ALPHA_MIN)
        # sigma = 0.5 a dx^2 + (b dy) dx + 0.5 c dy^2 <= tau, with dx = mx - x
        bdy = b * dy
        disc = bdy * bdy - a * (c * dy * dy - 2.0 * tau)
        root = torch.sqrt(disc.clamp_min(0.0))
        x_lo = torch.ceil(mx - (root - bdy) / a - _SPAN_PAD).clamp(min=0)
        x_hi = torch.floor(mx + (root + bdy) / a + _SPAN_PAD).clamp(max=W - 1)
        width = torch.where(disc >= 0, x_hi - x_lo + 1, torch.zeros_like(x_lo)).clamp_min(0).long()
        keep = torch.nonzero(width > 0).squeeze(1)
        j, row, width = _take(j, keep), _take(row, keep), _take(width, keep)
        a, b, c, dy, x_lo = (_take(t, keep) for t in (a, b, c, dy, x_lo))
        e = _take(mx, keep) - x_lo  # dx at k = 0; dx = e - k
        # sigma(k) = 0.5 a (e - k)^2 + b dy (e - k) + 0.5 c dy^2
        qa = 0.5 * a
        qb = -(a * e + b * dy)
        qc = (0.5 * a * e + b * dy) * e + 0.5 * c * dy * dy - _take(self.log_op[s0:s1], j)
        pix0 = row * W + x_lo.long()
        return j, pix0, width, qa, qb, qc

    def _chunk(self, s0: int, s1: int) -> WeightChunk | None:
        dev = self.mx.device
        j, pix0, width, qa, qb, qc = self._spans(s0, s1)
        if width.numel() == 0:
            return None
        bits = max(1, (s1 - s0 - 1).bit_length())
        if (self.settings.width * self.settings.height).bit_length() + bits > 62:
            raise ValueError("image and chunk too large for the int64 sort key; lower max_pairs")

        # --- a/b. expand spans (grouped by width) to pairs; alpha; drop skipped/finished pairs
        order = torch.argsort(width)
        wsorted = _take(width, order)
        keys, alphas = [], []
        for g0, g1, wb in _width_groups(wsorted):
            sel = order[g0:g1]
            k = torch.arange(wb, device=dev)
            kf = k.double()
            logv = -(
                (_take(qa, sel)[:, None] * kf + _take(qb, sel)[:, None]) * kf
                + _take(qc, sel)[:, None]
            )
            alpha = torch.exp(logv).clamp_(max=ALPHA_MAX)
            pix = _take(pix0, sel)[:, None] + k
            ok = alpha >= ALPHA_MIN
            if wb > _EXACT_WIDTHS:
                ok &= k < wsorted[g0:g1, None]
                pix = torch.where(ok, pix, 0)  # the masked tail may run off the image
            ok &= ~self._done_at(pix)
            key = (pix << bits) | _take(j, sel)[:, None]
            if bool(ok.all()):
                keys.append(key.reshape(-1))
                alphas.append(alpha.reshape(-1))
            else:
                idx = torch.nonzero(ok.reshape(-1)).squeeze(1)
                keys.append(_take(key.reshape(-1), idx))
                alphas.append(_take(alpha.reshape(-1), idx))
        key = torch.cat(keys)
        if key.numel() == 0:
            return None
        alpha = torch.cat(alphas)
        del keys, alphas

        # --- c. sort by (pixel, depth rank)
        key, perm = torch.sort(key)
        alpha = _take(alpha, perm)
        del perm
        pix = key >> bits
        jj = key & ((1 << bits) - 1)
        del key

        # --- d. segmented transmittance in log space (float64)
        lg = torch.log1p(-alpha)
        cs = torch.cumsum(lg, 0)
        new = torch.ones_like(pix, dtype=torch.bool)
        torch.ne(pix[1:], pix[:-1], out=new[1:])
        st = torch.nonzero(new).squeeze(1)
        # log T before each run = carried log T of its pixel; cs before the run = cs - lg there
        base = _take(cs, st) - _take(lg, st) - _take(self.log_T, _take(pix, st))
        seg = torch.cumsum(new, 0) - 1
        del new, st
        log_t = cs - _take(base, seg)  # inclusive: log T after this pair
        del cs, seg, base
        comp = log_t > LOG_T_MIN
        if not bool(comp.all()):
            self._finish_pixels(_take(pix, torch.nonzero(~comp).squeeze(1)))
            idx = torch.nonzero(comp).squeeze(1)
            pix, jj, alpha, lg, log_t = (_take(t, idx) for t in (pix, jj, alpha, lg, log_t))
        del comp
        if pix.numel() == 0:
            return None

        # --- e. weights, carry
        w = alpha * torch.exp(log_t - lg)
        self.log_T.index_add_(0, pix, lg)
        return WeightChunk(pix, jj + s0, w)

    def _done_at(self, pix: torch.Tensor) -> torch.Tensor:
        if self._done is None:
            return torch.zeros_like(pix, dtype=torch.bool)
        return self._done.index_select(0, pix.reshape(-1)).reshape(pix.shape)

    def _finish_pixels(self, pix: torch.Tensor) -> None:
        if self._done is None:
            self._done = torch.zeros_like(self.log_T, dtype=torch.bool)
        self._done[pix] = True


def _width_groups(wsorted: torch.Tensor) -> list[tuple[int, int, int]]:
    """``(start, end, block_width)`` runs of the ascending span widths ``wsorted``: one run per
    width up to ``_EXACT_WIDTHS``, then one per power-of-two bucket (block = bucket width)."""
    uniq, counts = torch.unique_consecutive(wsorted, return_counts=True)
    groups: list[tuple[int, int, int]] = []
    start = 0
    for w, cnt in zip(uniq.tolist(), counts.tolist(), strict=True):
        block = w if w <= _EXACT_WIDTHS else 1 << (w - 1).bit_length()
        if groups and groups[-1][2] == block:
            groups[-1] = (groups[-1][0], start + cnt, block)
        else:
            groups.append((start, start + cnt, block))
        start += cnt
    return groups


@torch.no_grad()
def render_weights_torch(
    splats: Splats, camera: Camera, settings: RasterSettings, max_pairs: int = MAX_PAIRS
) -> RenderWeights:
    stream = PairStream(project(splats, camera, settings), settings, max_pairs)
    dev = splats.means.device
    pix, splat, weight = [], [], []
    for ch in stream:
        pix.append(ch.pix)
        splat.append(_take(stream.ids, ch.rank))
        weight.append(ch.weight.float())
    if pix:
        pix_t, splat_t, weight_t = torch.cat(pix), torch.cat(splat), torch.cat(weight)
    else:
        pix_t = torch.zeros(0, dtype=torch.int64, device=dev)
        splat_t = torch.zeros(0, dtype=torch.int64, device=dev)
        weight_t = torch.zeros(0, dtype=torch.float32, device=dev)
    final_T = torch.exp(stream.log_T).float().reshape(settings.height, settings.width)
    return RenderWeights(pix_t, splat_t, weight_t, final_T, settings.width, settings.height)


def _needs_grad(splats: Splats) -> bool:
    return torch.is_grad_enabled() and any(
        t.requires_grad
        for t in (splats.means, splats.quats, splats.log_scales, splats.logit_opacities, splats.sh)
    )


def rasterize_torch_autograd(
    splats: Splats, camera: Camera, settings: RasterSettings
) -> RenderOutput:
    """The differentiable path (autograd, float64): every splat paired with the pixels of its
    alpha >= 1/255 box (as gsplat's ``_torch_impl``), pairs sorted by (pixel, depth rank), the
    segmented front-to-back transmittance by a cumulative sum of ``log(1 - alpha)``. All pairs
    are held at once: the portable baseline for small and medium scenes, not for big ones."""
    W, H = settings.width, settings.height
    P = W * H
    dev = splats.means.device
    proj = project(splats, camera, settings, grad=True)
    ids = torch.nonzero(proj.valid).squeeze(1)
    ids = ids[torch.argsort(proj.depth.detach()[ids], stable=True)]
    zero = torch.zeros((), dtype=torch.float64, device=dev)
    if ids.numel() == 0:
        empty = torch.zeros(P, dtype=torch.float64, device=dev)
        return finish(empty[:, None].expand(P, 3) + zero, empty, torch.ones_like(empty), settings)
    with torch.no_grad():
        mx, my = proj.mean2d[ids].unbind(-1)
        hx, hy = proj.half_extent[ids].unbind(-1)
        x0 = torch.ceil(mx - hx * (1 + 1e-9) - _SPAN_PAD).clamp(0, W).long()
        x1 = torch.floor(mx + hx * (1 + 1e-9) + _SPAN_PAD).clamp(-1, W - 1).long()
        y0 = torch.ceil(my - hy * (1 + 1e-9) - _SPAN_PAD).clamp(0, H).long()
        y1 = torch.floor(my + hy * (1 + 1e-9) + _SPAN_PAD).clamp(-1, H - 1).long()
        nx = (x1 - x0 + 1).clamp_min(0)
        ny = (y1 - y0 + 1).clamp_min(0)
        count = nx * ny
        rank = torch.repeat_interleave(torch.arange(ids.numel(), device=dev), count)
        first = torch.cumsum(count, 0) - count
        local = torch.arange(rank.numel(), device=dev) - first[rank]
        px = x0[rank] + local % nx[rank].clamp_min(1)
        py = y0[rank] + local // nx[rank].clamp_min(1)
    splat = ids[rank]
    dx = proj.mean2d[splat, 0] - px.double()
    dy = proj.mean2d[splat, 1] - py.double()
    a, b, c = proj.conic[splat].unbind(-1)
    sigma = (0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy).clamp_min(0.0)
    alpha = (proj.opacity[splat] * torch.exp(-sigma)).clamp(max=ALPHA_MAX)
    keep = torch.nonzero(alpha.detach() >= ALPHA_MIN).squeeze(1)
    alpha, rank, splat = alpha[keep], rank[keep], splat[keep]
    pix = (py * W + px)[keep]
    with torch.no_grad():
        order = torch.argsort(pix * ids.numel() + rank)
        pix = pix[order]
        new = torch.ones_like(pix, dtype=torch.bool)
        new[1:] = pix[1:] != pix[:-1]
        seg = torch.cumsum(new, 0) - 1
        starts = torch.nonzero(new).squeeze(1)
    alpha, splat = alpha[order], splat[order]
    lg = torch.log1p(-alpha)
    cs = torch.cumsum(lg, 0)
    base = (cs - lg)[starts]  # cumulative sum before each pixel's run
    incl = cs - base[seg]  # log T after each pair
    comp = (incl.detach() > LOG_T_MIN).to(alpha.dtype)  # the pixel stops at the first that is not
    w = alpha * torch.exp(incl - lg) * comp
    feat = torch.cat([proj.color[splat], proj.depth.detach()[splat, None]], dim=1)
    acc = torch.zeros(P, 4, dtype=torch.float64, device=dev).index_add(0, pix, w[:, None] * feat)
    log_T = torch.zeros(P, dtype=torch.float64, device=dev).index_add(0, pix, lg * comp)
    return finish(acc[:, :3], acc[:, 3].detach(), torch.exp(log_T), settings)


def rasterize_torch(
    splats: Splats, camera: Camera, settings: RasterSettings, max_pairs: int = MAX_PAIRS
) -> RenderOutput:
    """Forward in bounded chunks (``PairStream``); with gradients needed, the autograd path."""
    if _needs_grad(splats):
        return rasterize_torch_autograd(splats, camera, settings)
    with torch.no_grad():
        return _rasterize_torch_chunked(splats, camera, settings, max_pairs)


def _rasterize_torch_chunked(
    splats: Splats, camera: Camera, settings: RasterSettings, max_pairs: int
) -> RenderOutput:
    proj = project(splats, camera, settings)
    stream = PairStream(proj, settings, max_pairs)
    P = settings.width * settings.height
    acc = torch.zeros(P, 4, dtype=torch.float64, device=proj.depth.device)  # sum w (r, g, b, z)
    feat = _take(torch.cat([proj.color, proj.depth[:, None]], dim=1), stream.ids)  # by rank
    for ch in stream:
        acc.index_add_(0, ch.pix, ch.weight[:, None] * _take(feat, ch.rank))
    return finish(acc[:, :3], acc[:, 3], torch.exp(stream.log_T), settings)
