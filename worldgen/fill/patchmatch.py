"""Multi-scale PatchMatch image completion (Wexler et al. 2007; Barnes et al. 2009), numba kernels.

``complete(image, hole, labels, ...)`` fills the ``hole`` pixels of an image from patches of the
known pixels:

* an image pyramid (2x2 box averages; a coarse pixel is a hole pixel when any of its four fine
  pixels is), coarsest long side about ``coarsest`` px;
* at the coarsest level the hole starts as a smooth diffusion fill (the ``diffuse`` callable)
  and the nearest-neighbour field (NNF) at random sources of the same label;
* each level runs EM iterations: PatchMatch (propagation from the left/top or right/bottom
  neighbour in alternating scan order, random search in shrinking windows around the current
  match, and one uniform draw from the sources of the target's label), then *voting*: every hole
  pixel becomes the weighted mean of the pixels that the matched source patches of all target
  patches covering it put there, weights ``exp(-ssd / 2 sigma^2)``;
* the NNF is upsampled (coordinates x2) to the next level, which then votes and iterates again;
  levels whose target count exceeds ``max_search_targets`` only vote with the upsampled NNF
  (no search), so the cost stays bounded for large holes;
* optionally (``blend``) a Poisson-style seam correction at full resolution: the harmonic
  interpolation into the hole of the (clamped) mismatch between the known ring around the hole
  and what the matched patches would put there, which removes brightness steps (sky gradients).

Sources are patch centres whose whole patch is known (outside the hole) at that level; a target
patch (a centre whose patch overlaps the hole) pays ``label_penalty`` for a source of another
semantic label, so ground continues ground and walls continue walls when such sources exist.

Everything is deterministic for a given seed (serial kernels, numba's seeded generator).
Kernels are compiled on first use and cached on disk (``cache=True``).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

try:  # numba is a declared dependency, but the classical fill degrades to diffusion without it
    from numba import njit

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is missing
    HAVE_NUMBA = False

    def njit(*args, **kwargs):  # type: ignore[no-redef]
        def wrap(f):
            return f

        return wrap


# --------------------------------------------------------------------------------------------
# kernels


@njit(cache=True, fastmath=True, nogil=True)
def _ssd(img, ty, tx, sy, sx, r, best):
    """Sum of squared differences of the patches at (ty, tx) and (sy, sx); stops past ``best``."""
    d = 0.0
    for dy in range(-r, r + 1):
        a = ty + dy
        b = sy + dy
        for dx in range(-r, r + 1):
            for c in range(3):
                e = img[a, tx + dx, c] - img[b, sx + dx, c]
                d += e * e
        if d >= best:
            return d
    return d


@njit(cache=True, nogil=True)
def _evaluate(img, lab, ty, tx, nny, nnx, nnd, r, penalty):
    for k in range(ty.shape[0]):
        pen = penalty if lab[nny[k], nnx[k]] != lab[ty[k], tx[k]] else 0.0
        nnd[k] = _ssd(img, ty[k], tx[k], nny[k], nnx[k], r, np.inf) + pen


@njit(cache=True, nogil=True)
def _try(img, lab, src_ok, ty, tx, tl, cy, cx, by, bx, bd, r, penalty):
    """Distance of candidate (cy, cx) if valid and better than bd, else bd (and a flag)."""
    H, W = src_ok.shape
    if cy < r or cy >= H - r or cx < r or cx >= W - r:
        return bd, False
    if (cy == by and cx == bx) or not src_ok[cy, cx]:
        return bd, False
    pen = penalty if lab[cy, cx] != tl else 0.0
    if pen >= bd:
        return bd, False
    d = _ssd(img, ty, tx, cy, cx, r, bd - pen) + pen
    if d < bd:
        return d, True
    return bd, False


@njit(cache=True, nogil=True)
def _search(
    img, lab, src_ok, tindex, ty, tx, nny, nnx, nnd, slist_y, slist_x, lab_start, lab_count, r,
    n_iter, penalty, seed, maxw,
):  # fmt: skip
    np.random.seed(seed)
    H, W = src_ok.shape
    T = ty.shape[0]
    S = slist_y.shape[0]
    for it in range(n_iter):
        if it % 2 == 0:
            k0, k1, step = 0, T, 1
        else:
            k0, k1, step = T - 1, -1, -1
        for k in range(k0, k1, step):
            y = ty[k]
            x = tx[k]
            tl = lab[y, x]
            by = nny[k]
            bx = nnx[k]
            bd = nnd[k]
            # propagation from the already-visited horizontal and vertical neighbours
            for j in range(2):
                if j == 0:
                    ny = y
                    nx = x - step
                else:
                    ny = y - step
                    nx = x
                if ny < 0 or ny >= H or nx < 0 or nx >= W:
                    continue
                kn = tindex[ny, nx]
                if kn < 0:
                    continue
                cy = nny[kn] + (y - ny)
                cx = nnx[kn] + (x - nx)
                d, ok = _try(img, lab, src_ok, y, x, tl, cy, cx, by, bx, bd, r, penalty)
                if ok:
                    by = cy
                    bx = cx
                    bd = d
            # random search in windows halving around the current best
            w = maxw
            while w >= 1:
                cy = by + np.random.randint(-w, w + 1)
                cx = bx + np.random.randint(-w, w + 1)
                d, ok = _try(img, lab, src_ok, y, x, tl, cy, cx, by, bx, bd, r, penalty)
                if ok:
                    by = cy
                    bx = cx
                    bd = d
                w //= 2
            # one uniform draw among the sources of the target's label (all if none)
            if tl < lab_count.shape[0] and lab_count[tl] > 0:
                i = lab_start[tl] + np.random.randint(0, lab_count[tl])
            else:
                i = np.random.randint(0, S)
            cy = slist_y[i]
            cx = slist_x[i]
            d, ok = _try(img, lab, src_ok, y, x, tl, cy, cx, by, bx, bd, r, penalty)
            if ok:
                by = cy
                bx = cx
                bd = d
            nny[k] = by
            nnx[k] = bx
            nnd[k] = bd


@njit(cache=True, nogil=True)
def _vote(img, hole, ty, tx, nny, nnx, wgt, r, out):
    """Weighted mean of the source pixels that the matched patches put on each ``hole`` pixel,
    written to ``out`` (may be ``img``: sources are known pixels, never written)."""
    H, W = hole.shape
    acc = np.zeros((H, W, 3), np.float64)
    wsum = np.zeros((H, W), np.float64)
    for k in range(ty.shape[0]):
        w = wgt[k]
        for dy in range(-r, r + 1):
            a = ty[k] + dy
            b = nny[k] + dy
            for dx in range(-r, r + 1):
                if hole[a, tx[k] + dx]:
                    wsum[a, tx[k] + dx] += w
                    for c in range(3):
                        acc[a, tx[k] + dx, c] += w * img[b, nnx[k] + dx, c]
    for y in range(H):
        for x in range(W):
            if hole[y, x] and wsum[y, x] > 0:
                for c in range(3):
                    out[y, x, c] = acc[y, x, c] / wsum[y, x]


def warmup() -> None:
    """Compile the kernels (or load them from numba's on-disk cache) on a tiny problem, e.g.
    at install time so that the first real fill does not pay the JIT (a few seconds)."""
    if not HAVE_NUMBA:
        return
    rng = np.random.default_rng(0)
    img = rng.random((24, 24, 3)).astype(np.float32)
    hole = np.zeros((24, 24), bool)
    hole[9:15, 9:15] = True
    complete(img, hole, np.zeros((24, 24), np.int32), lambda im, h: im, em_iters=(1,))


# --------------------------------------------------------------------------------------------
# driver


class _Level:
    """One pyramid level: image (hole pixels = current estimate), hole, labels, targets, sources."""

    def __init__(
        self,
        img: np.ndarray,
        hole: np.ndarray,
        lab: np.ndarray,
        r: int,
        barred: np.ndarray | None = None,
    ) -> None:
        self.img = np.ascontiguousarray(img, dtype=np.float32)
        self.hole = hole
        self.lab = np.ascontiguousarray(lab, dtype=np.int32)
        H, W = hole.shape
        p = 2 * r + 1
        interior = np.zeros((H, W), bool)
        if H >= p and W >= p:
            interior[r : H - r, r : W - r] = True
        # targets: interior centres whose patch overlaps the hole
        near = _box_any(hole, r)
        tmask = near & interior
        self.ty, self.tx = (a.astype(np.int64) for a in np.nonzero(tmask))
        self.tindex = np.full((H, W), -1, np.int64)
        self.tindex[self.ty, self.tx] = np.arange(self.ty.size)
        # sources: interior centres whose whole patch is known (and none of it barred)
        self.src_ok = interior & ~near
        if barred is not None and barred.any():
            self.src_ok &= ~_box_any(barred, r)
        sy, sx = np.nonzero(self.src_ok)
        sl = self.lab[sy, sx]
        order = np.argsort(sl, kind="stable")
        self.sy = sy[order].astype(np.int64)
        self.sx = sx[order].astype(np.int64)
        nlab = int(max(self.lab.max(), 0)) + 1
        self.lab_count = np.bincount(sl, minlength=nlab).astype(np.int64)
        self.lab_start = np.concatenate([[0], np.cumsum(self.lab_count)[:-1]]).astype(np.int64)
        self.nny = np.zeros(self.ty.size, np.int64)
        self.nnx = np.zeros(self.ty.size, np.int64)
        self.nnd = np.zeros(self.ty.size, np.float32)

    @property
    def usable(self) -> bool:
        return self.ty.size > 0 and self.sy.size > 0

    def random_sources(self, idx: np.ndarray, rng: np.random.Generator) -> None:
        """Point the NNF of targets ``idx`` at random sources of their own label."""
        tl = self.lab[self.ty[idx], self.tx[idx]]
        cnt = np.where(
            tl < self.lab_count.size, self.lab_count[np.minimum(tl, self.lab_count.size - 1)], 0
        )
        u = rng.random(idx.size)
        pick = np.where(
            cnt > 0,
            self.lab_start[np.minimum(tl, self.lab_start.size - 1)] + (u * cnt).astype(np.int64),
            (u * self.sy.size).astype(np.int64),
        )
        pick = np.minimum(pick, self.sy.size - 1)
        self.nny[idx] = self.sy[pick]
        self.nnx[idx] = self.sx[pick]


def _box_any(mask: np.ndarray, r: int) -> np.ndarray:
    """Pixels within a (2r+1)^2 box of a True pixel (binary dilation with a square)."""
    from scipy.ndimage import maximum_filter

    return maximum_filter(mask.astype(np.uint8), size=2 * r + 1, mode="constant") > 0


def _downsample(img: np.ndarray, hole: np.ndarray, lab: np.ndarray, barred: np.ndarray):
    H, W = hole.shape
    ph, pw = H % 2, W % 2
    if ph or pw:
        img = np.pad(img, ((0, ph), (0, pw), (0, 0)), mode="edge")
        hole = np.pad(hole, ((0, ph), (0, pw)), mode="edge")
        lab = np.pad(lab, ((0, ph), (0, pw)), mode="edge")
        barred = np.pad(barred, ((0, ph), (0, pw)), mode="edge")
    h2, w2 = hole.shape[0] // 2, hole.shape[1] // 2
    img2 = img.reshape(h2, 2, w2, 2, 3).mean(axis=(1, 3), dtype=np.float64).astype(np.float32)
    hole2 = hole.reshape(h2, 2, w2, 2).any(axis=(1, 3))
    lab2 = lab[::2, ::2]
    barred2 = barred.reshape(h2, 2, w2, 2).any(axis=(1, 3))
    return img2, hole2, lab2, barred2


def _weights(lv: _Level, penalty: float, npix: int) -> np.ndarray:
    ssd = lv.nnd.astype(np.float64)
    other = lv.lab[lv.nny, lv.nnx] != lv.lab[lv.ty, lv.tx]
    ssd = np.where(other, ssd - penalty, ssd) / npix
    ssd = np.maximum(ssd, 0.0)
    s2 = max(float(np.percentile(ssd, 75)), 1e-5)
    return np.exp(-ssd / (2.0 * s2))


def complete(
    image: np.ndarray,
    hole: np.ndarray,
    labels: np.ndarray,
    diffuse: Callable[[np.ndarray, np.ndarray], np.ndarray],
    *,
    blend: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None,
    clamp: float = 0.1,
    seed: int = 0,
    patch: int = 7,
    coarsest: int = 64,
    label_penalty: float = 0.5,
    max_search_targets: int = 120_000,
    em_iters: tuple[int, ...] = (8, 5, 4, 3),
    pm_iters: int = 2,
    finest: tuple[int, int] = (1, 1),
    search_window: int = 24,
    sources: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Fill ``hole`` pixels of ``image`` [H, W, 3] from patches of the known pixels.

    labels: [H, W] int semantic labels (hole pixels: the labels they should continue).
    diffuse(img, hole) -> img: a smooth fill used to initialise the coarsest level.
    blend(values, solve, fixed) -> values: a harmonic solver (``classical.harmonic_fill``); if
    given, the result gets a Poisson-style correction that removes low-frequency seams (the
    harmonic interpolation into the hole of the mismatch between the known pixels just outside
    it and what the matched patches would have put there, clamped to +-``clamp``).
    label_penalty: added to a patch's SSD (summed over its pixels and channels) for a source
    centre of another label. em_iters: EM iterations per level, coarsest first (the last value
    repeats), each with ``pm_iters`` PatchMatch sweeps; the full-resolution level runs
    ``finest`` = (EM, PatchMatch) iterations instead. Random search starts with the whole
    image at the coarsest level and ``search_window`` px (plus one draw among all sources of
    the label) at the finer ones, whose NNF comes from the coarser level. sources: [H, W] bool
    or None: the known pixels a source patch may contain (default: all of them); the others
    are context for the target patches only.

    Returns the completed image (float32; known pixels untouched) and facts.
    """
    if not HAVE_NUMBA:
        raise RuntimeError("numba is not installed")
    r = patch // 2
    npix = (2 * r + 1) ** 2 * 3
    penalty = float(label_penalty) * (2 * r + 1) ** 2
    H, W = hole.shape
    n_down = max(0, int(np.floor(np.log2(max(H, W) / float(coarsest)))))
    barred = np.zeros_like(hole) if sources is None else (~hole & ~sources)
    pyr = [(image.astype(np.float32), hole, labels.astype(np.int32), barred)]
    for _ in range(n_down):
        nxt = _downsample(*pyr[-1])
        if min(nxt[1].shape) < 2 * patch:
            break
        pyr.append(nxt)
    levels = [_Level(im, ho, la, r, ba) for im, ho, la, ba in pyr]
    # start where there are both targets and sources (a coarse level may have no known patch)
    start = len(levels) - 1
    while start > 0 and not levels[start].usable:
        start -= 1
    if not levels[start].usable:
        return diffuse(image, hole), {"levels": 0, "searched_levels": 0, "note": "no source"}
    rng = np.random.default_rng(seed)
    info = {"levels": start + 1, "searched_levels": 0, "targets": [], "patch": 2 * r + 1}
    prev: _Level | None = None
    for li in range(start, -1, -1):
        lv = levels[li]
        depth_from_top = start - li
        n_em = em_iters[min(depth_from_top, len(em_iters) - 1)]
        n_pm = pm_iters
        if li == 0 and start > 0:
            n_em, n_pm = finest
        window = max(lv.hole.shape) if prev is None else int(search_window)
        if prev is None:
            lv.img[:] = diffuse(lv.img, lv.hole)
            lv.random_sources(np.arange(lv.ty.size), rng)
        else:
            # hole estimate from the coarser level, NNF upsampled (x2 coordinates)
            h, w = lv.hole.shape
            up = np.repeat(np.repeat(prev.img, 2, axis=0), 2, axis=1)[:h, :w]
            lv.img[lv.hole] = up[lv.hole]
            cy, cx = (
                np.minimum(lv.ty // 2, prev.hole.shape[0] - 1),
                np.minimum(lv.tx // 2, prev.hole.shape[1] - 1),
            )
            kc = prev.tindex[cy, cx]
            have = kc >= 0
            sy = np.where(have, 2 * prev.nny[np.maximum(kc, 0)] + (lv.ty % 2), -1)
            sx = np.where(have, 2 * prev.nnx[np.maximum(kc, 0)] + (lv.tx % 2), -1)
            inside = (sy >= r) & (sy < h - r) & (sx >= r) & (sx < w - r)
            ok = np.zeros_like(inside)
            ok[inside] = lv.src_ok[sy[inside], sx[inside]]
            lv.nny[ok], lv.nnx[ok] = sy[ok], sx[ok]
            lv.random_sources(np.nonzero(~ok)[0], rng)
            _evaluate(lv.img, lv.lab, lv.ty, lv.tx, lv.nny, lv.nnx, lv.nnd, r, penalty)
            _vote(
                lv.img, lv.hole, lv.ty, lv.tx, lv.nny, lv.nnx, _weights(lv, penalty, npix), r,
                lv.img,
            )  # fmt: skip
        search = lv.ty.size <= max_search_targets
        info["targets"].append(int(lv.ty.size))
        if search:
            info["searched_levels"] += 1
            for em in range(n_em):
                _evaluate(lv.img, lv.lab, lv.ty, lv.tx, lv.nny, lv.nnx, lv.nnd, r, penalty)
                _search(
                    lv.img, lv.lab, lv.src_ok, lv.tindex, lv.ty, lv.tx, lv.nny, lv.nnx, lv.nnd,
                    lv.sy, lv.sx, lv.lab_start, lv.lab_count, r,
                    n_pm + (2 if (prev is None and em == 0) else 0), penalty,
                    int(rng.integers(0, 2**31 - 1)), window,
                )  # fmt: skip
                _vote(
                lv.img, lv.hole, lv.ty, lv.tx, lv.nny, lv.nnx, _weights(lv, penalty, npix), r,
                lv.img,
            )  # fmt: skip
        prev = lv
    out = levels[0].img
    if blend is not None:
        # Poisson-style seam removal: what the matched patches put on the known ring around the
        # hole vs. what is there; the harmonic interpolation of that mismatch corrects the hole
        lv = levels[0]
        ring = _box_any(lv.hole, 1) & ~lv.hole
        if lv.usable:
            voted = np.zeros_like(lv.img)
            voted[:] = np.nan
            _vote(lv.img, ring, lv.ty, lv.tx, lv.nny, lv.nnx, _weights(lv, penalty, npix), r, voted)
            # clamped: a seam of brightness is corrected, an object edge that ends at the hole
            # (a legitimate jump) does not bleed into it
            mismatch = np.clip(np.where(ring[..., None], image - voted, 0.0), -clamp, clamp)
            fixed = ring & np.all(np.isfinite(mismatch), axis=2)
            mismatch[~fixed] = 0.0
            corr = blend(mismatch, lv.hole, fixed)
            out = out.copy()
            out[lv.hole] += corr[lv.hole].astype(np.float32)
            info["seam_correction"] = float(np.abs(corr[lv.hole]).mean())
    return out, info
