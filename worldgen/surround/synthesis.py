"""Texture synthesis and blending primitives of the surround (no weights, CPU).

* ``random_phase_texture``: asymptotic discrete spot noise (Galerne, Gousseau, Morel 2011): a
  Gaussian texture with the exemplar's mean and power spectrum, **periodic** in both axes, so it
  tiles a ground plane and closes the 360° wrap exactly. Good for stochastic textures (sand,
  grass, gravel, haze, cloud noise); structure is not kept.
* ``complete_wrapped``: PatchMatch completion (``fill.patchmatch.complete``) of an image that
  wraps around in x (an equirect strip): padded with its own columns so patches see across the
  seam, and the two copies of each padded column are averaged back.
* ``screened_correction``: the gradient-domain (Poisson) seam fix: the mismatch between the
  photo and the synthesised content on the photo's boundary, spread into the synthesised region
  by a screened Laplace equation (decays over ``decay_px``), periodic in x when asked.
* ``smoothstep``; ``quilt_ring``: image quilting along an x-periodic strip (the band).

Shapes: images are [H, W, C] float32 (C = 3 colours unless said), masks [H, W] bool.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def smoothstep(x: np.ndarray) -> np.ndarray:
    t = np.clip(x, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def periodic_component(u: np.ndarray) -> np.ndarray:
    """Moisan's periodic + smooth decomposition: the periodic component of ``u`` [h, w, C]
    (the exemplar without the cross-shaped spectral artefacts of its borders)."""
    h, w = u.shape[:2]
    v = np.zeros_like(u, dtype=np.float64)
    v[0] += u[-1] - u[0]
    v[-1] += u[0] - u[-1]
    v[:, 0] += u[:, -1] - u[:, 0]
    v[:, -1] += u[:, 0] - u[:, -1]
    q = np.arange(h)[:, None]
    r = np.arange(w)[None, :]
    den = 2 * np.cos(2 * np.pi * q / h) + 2 * np.cos(2 * np.pi * r / w) - 4
    den[0, 0] = 1.0
    V = np.fft.fft2(v, axes=(0, 1))
    S = V / den[..., None]
    S[0, 0] = 0
    smooth = np.real(np.fft.ifft2(S, axes=(0, 1)))
    return (u - smooth).astype(np.float32)


def random_phase_texture(
    exemplar: np.ndarray, out_shape: tuple[int, int], rng: np.random.Generator
) -> np.ndarray:
    """A periodic Gaussian texture [H, W, C] with the exemplar's ([h, w, C], h <= H, w <= W)
    mean colour and power spectrum (ADSN: white noise convolved with the normalised exemplar;
    one noise field for all channels keeps the colours' correlation)."""
    H, W = out_shape
    ex = np.asarray(exemplar, np.float64)
    if ex.ndim == 2:
        ex = ex[..., None]
    h, w = ex.shape[:2]
    if h > H or w > W:
        ex = ex[:H, :W]
        h, w = ex.shape[:2]
    ex = periodic_component(ex).astype(np.float64)
    mean = ex.reshape(-1, ex.shape[2]).mean(0)
    spot = np.zeros((H, W, ex.shape[2]))
    spot[:h, :w] = (ex - mean) / np.sqrt(h * w)
    noise = rng.standard_normal((H, W))
    out = np.real(
        np.fft.ifft2(np.fft.fft2(spot, axes=(0, 1)) * np.fft.fft2(noise)[..., None], axes=(0, 1))
    )
    return (out + mean).astype(np.float32)


def screened_correction(
    mismatch: np.ndarray,
    fixed: np.ndarray,
    region: np.ndarray,
    decay_px: float,
    *,
    wrap_x: bool = False,
) -> np.ndarray:
    """Spread ``mismatch`` ([H, W, C], meaningful where ``fixed``) into ``region`` ([H, W]
    bool): the solution of the screened Laplace equation (Δc = c / decay_px²) on ``region``
    with c = mismatch on the fixed pixels; zero elsewhere. Adding it to synthesised content
    whose gradients are kept makes it meet the fixed (photo) values exactly and fade back to
    itself ``decay_px`` pixels away: gradient-domain blending with a decaying membrane."""
    from ..fill.classical import harmonic_fill

    H, W = region.shape
    pad = 0
    if wrap_x:
        pad = min(W, int(np.ceil(3 * decay_px)) + 2)
        mismatch = np.concatenate([mismatch[:, -pad:], mismatch, mismatch[:, :pad]], 1)
        fixed = np.concatenate([fixed[:, -pad:], fixed, fixed[:, :pad]], 1)
        region = np.concatenate([region[:, -pad:], region, region[:, :pad]], 1)
    solve = region & ~fixed
    # only the pixels within reach of a fixed pixel matter; the rest stay 0
    near = ndimage.distance_transform_edt(~fixed) <= 4 * decay_px
    solve &= near
    vals = np.where(fixed[..., None], mismatch, 0.0)
    eps = 1.0 / max(decay_px, 1e-3) ** 2
    out = harmonic_fill(vals, solve, fixed, prior=np.zeros_like(vals), eps=eps)
    out = np.where((solve | fixed)[..., None], out, 0.0)
    if pad:
        out = out[:, pad:-pad]
    return out.astype(np.float32)


def complete_wrapped(
    image: np.ndarray,
    hole: np.ndarray,
    labels: np.ndarray | None = None,
    *,
    seed: int = 0,
    patch: int = 7,
    pad: int | None = None,
) -> np.ndarray:
    """PatchMatch completion of an x-periodic image [H, W, 3] (hole [H, W] bool). Returns
    float32 [H, W, 3], the known pixels untouched."""
    from ..fill.classical import diffuse_colour
    from ..fill.patchmatch import complete

    H, W = hole.shape
    pad = min(W // 4, pad if pad is not None else max(2 * patch, W // 16))
    ext = lambda a: np.concatenate([a[:, -pad:], a, a[:, :pad]], 1)  # noqa: E731
    lab = np.zeros((H, W), np.int32) if labels is None else labels.astype(np.int32)
    out, _ = complete(
        ext(image.astype(np.float32)),
        ext(hole),
        ext(lab),
        diffuse_colour,
        seed=seed,
        patch=patch,
    )
    core = out[:, pad:-pad].copy()
    # the padded copies of the seam columns: average them with the core's own
    left, right = out[:, :pad], out[:, -pad:]
    core[:, -pad:] = np.where(hole[:, -pad:, None], 0.5 * (core[:, -pad:] + left), core[:, -pad:])
    core[:, :pad] = np.where(hole[:, :pad, None], 0.5 * (core[:, :pad] + right), core[:, :pad])
    core[~hole] = image[~hole]
    return core.astype(np.float32)


def _min_cut_columns(err: np.ndarray) -> np.ndarray:
    """Per row, the overlap column where a vertical seam crosses the error surface err [h, ov]
    at least total cost (dynamic programming; a step of at most one column between rows)."""
    h, ov = err.shape
    cost = err.copy()
    for y in range(1, h):
        prev = cost[y - 1]
        left = np.concatenate([[np.inf], prev[:-1]])
        right = np.concatenate([prev[1:], [np.inf]])
        cost[y] += np.minimum(prev, np.minimum(left, right))
    path = np.zeros(h, int)
    path[-1] = int(np.argmin(cost[-1]))
    for y in range(h - 2, -1, -1):
        c = path[y + 1]
        lo, hi = max(0, c - 1), min(ov, c + 2)
        path[y] = lo + int(np.argmin(cost[y, lo:hi]))
    return path


def quilt_ring(
    src: np.ndarray,
    src_valid: np.ndarray,
    out: np.ndarray,
    known: np.ndarray,
    rng: np.random.Generator,
    *,
    block: int,
    overlap: int,
    tolerance: float = 0.15,
    reuse: float = 0.5,
) -> tuple[np.ndarray, dict]:
    """Image quilting (Efros & Freeman 2001) along x of an x-periodic strip.

    src [h, Ws, C] with src_valid [h, Ws] (an invalid source pixel costs a mismatch of 1 per
    channel); out [h, W, C] holds the known columns (``known`` [W] bool: one contiguous run on
    the ring, the photo). Blocks of ``block`` columns (``overlap`` shared with the previous
    one) are cut from the source at the offset whose overlap matches best (a random pick among
    those within ``tolerance`` of the way from the best to the median cost; never the last two
    blocks' sources again; every earlier use of a source column adds ``reuse`` times the spread
    of the costs, so the picks spread over the source), starting at the known run's right end
    and joined
    along the least-cost vertical seam; the last block also matches the known run's left end,
    so the ring closes. Returns (out [h, W, C], facts)."""
    h, W, C = out.shape
    Ws = src.shape[1]
    if known.all() or not known.any():
        return out, {"blocks": 0}
    block = int(min(block, Ws))
    overlap = int(max(1, min(overlap, block // 3)))
    step = block - overlap
    # roll the ring so that the gap of unknown columns is [g0, g0 + G), known on both sides
    first = int(np.nonzero(~known & np.roll(known, 1))[0][0])
    shift = overlap - first
    res = np.roll(out.astype(np.float64), shift, axis=1)
    kn = np.roll(known, shift)
    G = int((~kn).sum())
    g0 = overlap
    srcf = src.astype(np.float64)
    valid = src_valid.astype(np.float64)
    invalid_cols = np.concatenate([[0.0], np.cumsum((1 - valid).sum(0))])
    n_blocks, p = 0, g0 - overlap
    recent: list[int] = []
    uses = np.zeros(Ws)
    while p < g0 + G:
        remaining = g0 + G - (p + overlap)
        closing = remaining + overlap <= block
        width = remaining + 2 * overlap if closing else block
        width = min(width, Ws)
        cand = np.arange(0, Ws - width + 1)
        left = res[:, p : p + overlap]
        cost = _overlap_cost(srcf, valid, cand, left, 0, overlap)
        if closing:
            right = res[:, (p + width - overlap) % W : (p + width - overlap) % W + overlap]
            if right.shape[1] == overlap:
                cost = cost + _overlap_cost(srcf, valid, cand, right, width - overlap, overlap)
        cost = cost + (invalid_cols[cand + width] - invalid_cols[cand]) * C
        # no block twice in a row (a self-matching block would repeat all around)
        for q in recent:
            cost[np.abs(cand - q) < block] = np.inf
        if not np.isfinite(cost).any():
            cost[:] = 0.0
        # spread the picks over the whole source: a source column already used costs a share
        # of the spread of the match costs per use (a distinctive block, the best match for
        # many overlaps, would otherwise come back every few blocks)
        fin = np.isfinite(cost)
        spread = float(np.median(cost[fin]) - cost[fin].min())
        worn = np.concatenate([[0.0], np.cumsum(uses)])
        cost = cost + reuse * spread * (worn[cand + width] - worn[cand]) / width
        best, med = cost.min(), np.median(cost[np.isfinite(cost)])
        ok = np.nonzero(cost <= best + tolerance * (med - best) + 1e-9)[0]
        pick = int(cand[rng.choice(ok)])
        recent = (recent + [pick])[-2:]
        uses[pick : pick + width] += 1.0
        blk = srcf[:, pick : pick + width]
        seam = _min_cut_columns(np.abs(blk[:, :overlap] - left).sum(-1))
        take = np.arange(width)[None, :] >= seam[:, None]
        if closing and right.shape[1] == overlap:
            seam2 = _min_cut_columns(np.abs(blk[:, -overlap:] - right).sum(-1))
            take &= np.arange(width)[None, :] < (width - overlap + seam2)[:, None]
        cols = np.arange(p, p + width) % W
        region = res[:, cols]
        region = np.where(take[..., None], blk, region)
        region[:, kn[cols] & ~_overlap_cols(width, overlap, closing)] = res[:, cols][
            :, kn[cols] & ~_overlap_cols(width, overlap, closing)
        ]
        res[:, cols] = region
        n_blocks += 1
        p += step
        if closing:
            break
    return np.roll(res, -shift, axis=1).astype(out.dtype), {
        "blocks": n_blocks, "block": block, "overlap": overlap,
    }  # fmt: skip


def _overlap_cols(width: int, overlap: int, closing: bool) -> np.ndarray:
    """Columns of a block that lie in its seam overlaps (may replace known pixels)."""
    m = np.zeros(width, bool)
    m[:overlap] = True
    if closing:
        m[-overlap:] = True
    return m


def _overlap_cost(src, valid, cand, target, off: int, ov: int) -> np.ndarray:
    """SSD between ``target`` [h, ov, C] and the source columns cand + off .. + ov for every
    candidate offset (invalid source pixels cost C)."""
    C = src.shape[2]
    out = np.zeros(len(cand))
    for k in range(ov):
        cols = cand + off + k
        d = ((src[:, cols] - target[:, k][:, None]) ** 2).sum(-1)  # [h, n]
        v = valid[:, cols]
        out += (d * v + (1 - v) * C).sum(0)
    return out
