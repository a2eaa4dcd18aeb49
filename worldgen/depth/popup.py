"""``popup``: the embedded, no-weights depth backend.

A geometric scene-layout prior in the spirit of Hoiem, Efros & Hebert, *Automatic Photo
Pop-up* (SIGGRAPH 2005):

1. superpixels (SLIC) on a downscaled copy of the photo;
2. each superpixel is scored as ground / vertical / sky (or ceiling indoors) from its colour,
   texture, edge orientation and position relative to the horizon; the scores are smoothed by
   mean-field on the superpixel adjacency graph, then sky (and ceiling) must connect to the top
   border and ground to the bottom border;
3. the horizon row, hence the camera pitch, comes from the sky / ground boundary (with a
   plausible-extent prior for the far edge of the ground when no sky is seen), clamped to a sane
   range; labels and horizon are alternated twice;
4. ground (and ceiling) depth is the exact ray / plane intersection for a camera
   ``camera_height`` metres above the ground;
5. vertical regions stand on the ground: each column of each vertical region gets the horizontal
   distance of its ground contact (a folded billboard); columns without a visible contact are
   interpolated from the region's other columns, or stand on what they occlude;
6. sky is a dome at ``sky_distance`` metres along every ray.

The result is metric under the camera-height prior, finite and positive everywhere.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np
from scipy import ndimage as ndi

from ..camera import Intrinsics
from ..errors import InputError
from .base import CEILING, GROUND, SKY, VERTICAL, DepthEstimate

N_CLASSES = 4  # GROUND, VERTICAL, SKY, CEILING (the label values are the class indices)


@dataclass(frozen=True)
class PopupConfig:
    """Settings of the ``popup`` depth backend (geometric scene-layout prior, no weights)."""

    camera_height: float = 1.6
    """Metres of the camera above the ground plane; sets the metric scale of the whole scene."""

    n_segments: int = 400
    """Number of superpixels the photo is cut into before labelling (more: finer, slower)."""

    sky_distance: float = 200.0
    """Metres from the camera to the sky dome (constant distance along every sky ray)."""

    ceiling_height: float = 2.7
    """Metres of an indoor ceiling above the floor (used when no sky is found)."""

    max_depth: float = 80.0
    """Farthest z-depth in metres given to ground and vertical surfaces outdoors."""

    indoor_max_depth: float = 20.0
    """Farthest z-depth in metres of any surface in an indoor scene (keeps rooms closed)."""

    indoor_far_floor: float = 5.0
    """Metres to the far edge of the visible floor assumed indoors when nothing else tells the
    horizon; sets the camera pitch of indoor and close-up photos."""

    max_pitch_deg: float = 25.0
    """Largest camera pitch (up or down) the horizon estimate may imply, in degrees."""

    work_size: int = 320
    """Long side in pixels of the downscaled copy used for segmentation and labelling."""

    compactness: float = 10.0
    """SLIC compactness: higher gives more regular, less colour-faithful superpixels."""

    smoothness: float = 2.5
    """Strength of the label agreement between similar neighbouring superpixels."""

    min_depth: float = 0.3
    """Nearest z-depth in metres given to any pixel."""

    @classmethod
    def from_options(cls, options: dict) -> PopupConfig:
        """A config from backend options; unknown keys raise :class:`InputError`."""
        known = {f.name: f for f in fields(cls)}
        kw = {}
        for key, value in options.items():
            if value is None:
                continue
            if key not in known:
                raise InputError(f"unknown option {key!r} for the popup depth backend")
            kind = int if known[key].type in ("int", int) else float
            try:
                kw[key] = kind(value)
            except (TypeError, ValueError) as e:
                raise InputError(f"popup option {key} must be a number, got {value!r}") from e
        cfg = cls(**kw)
        cfg.validate()
        return cfg

    def validate(self) -> None:
        def positive(name: str) -> None:
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise InputError(f"popup {name} must be a positive number, got {v}")

        for name in (
            "camera_height",
            "sky_distance",
            "max_depth",
            "indoor_max_depth",
            "indoor_far_floor",
            "compactness",
            "min_depth",
        ):
            positive(name)
        if not self.ceiling_height > self.camera_height:
            raise InputError(
                f"popup ceiling_height ({self.ceiling_height}) must be above camera_height "
                f"({self.camera_height})"
            )
        if not self.sky_distance > self.max_depth:
            raise InputError("popup sky_distance must be beyond max_depth")
        if not 0.0 <= self.max_pitch_deg < 80.0:
            raise InputError(f"popup max_pitch_deg must be in [0, 80), got {self.max_pitch_deg}")
        if self.n_segments < 16 or self.work_size < 32:
            raise InputError("popup n_segments must be >= 16 and work_size >= 32")
        if not (math.isfinite(self.smoothness) and self.smoothness >= 0):
            raise InputError("popup smoothness must be >= 0")


# ----------------------------------------------------------------------------- geometry


def up_vector(pitch: float) -> np.ndarray:
    """Up direction (against gravity) in OpenCV camera axes for a camera pitched up by
    ``pitch`` radians (no roll)."""
    return np.array([0.0, -math.cos(pitch), math.sin(pitch)])


def _rays(K: Intrinsics, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised-plane coordinates (x, y) of pixel centres; the ray is (x, y, 1)."""
    x = (np.asarray(cols, dtype=np.float64) - K.cx) / K.fx
    y = (np.asarray(rows, dtype=np.float64) - K.cy) / K.fy
    return x, y


def _ground_z(n: np.ndarray, h: float, y: np.ndarray, x: np.ndarray | float = 0.0) -> np.ndarray:
    """z-depth of the ground plane {X: n.X = -h}; +inf where the ray misses it."""
    nr = n[0] * x + n[1] * y + n[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(nr < -1e-9, -h / np.minimum(nr, -1e-9), np.inf)
    return z


def _ceiling_z(n: np.ndarray, hc: float, y: np.ndarray, x: np.ndarray | float = 0.0) -> np.ndarray:
    """z-depth of the ceiling plane {X: n.X = hc}; +inf where the ray misses it."""
    nr = n[0] * x + n[1] * y + n[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(nr > 1e-9, hc / np.maximum(nr, 1e-9), np.inf)
    return z


def _forward_dot(pitch: float, y: np.ndarray) -> np.ndarray:
    """m . r for the horizontal forward direction m and ray r = (x, y, 1): a vertical plane with
    normal m at horizontal distance d has z-depth d / (m . r)."""
    return np.maximum(math.sin(pitch) * y + math.cos(pitch), 0.05)


# ----------------------------------------------------------------------------- features


@dataclass
class _Segments:
    seg: np.ndarray  # [h, w] int segment ids 0..n-1
    n: int
    area: np.ndarray
    lab: np.ndarray  # [n, 3] mean L*a*b*
    chroma: np.ndarray
    grad: np.ndarray  # mean gradient magnitude of L*
    std: np.ndarray  # std of L* inside the segment
    vfrac: np.ndarray  # share of gradient energy on vertical edges
    hfrac: np.ndarray  # share of gradient energy on horizontal edges
    row_mean: np.ndarray
    row_min: np.ndarray
    row_max: np.ndarray
    top: np.ndarray  # pixels on the top border
    bottom: np.ndarray  # pixels on the bottom border
    adj: np.ndarray  # [n, n] shared boundary length
    weights: np.ndarray  # [n, n] row-normalised affinity


def _segment(small: np.ndarray, cfg: PopupConfig) -> _Segments:
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    h, w = small.shape[:2]
    lab = rgb2lab(small).astype(np.float32)
    seg = slic(
        lab,
        n_segments=cfg.n_segments,
        compactness=cfg.compactness,
        start_label=0,
        convert2lab=False,
        enforce_connectivity=True,
        channel_axis=-1,
    )
    # make ids dense (SLIC may skip some)
    _, seg = np.unique(seg, return_inverse=True)
    seg = seg.reshape(h, w).astype(np.int64)
    n = int(seg.max()) + 1
    flat = seg.ravel()
    area = np.bincount(flat, minlength=n).astype(np.float64)

    def mean(v: np.ndarray) -> np.ndarray:
        return np.bincount(flat, weights=v.ravel().astype(np.float64), minlength=n) / area

    L = lab[..., 0].astype(np.float64)
    mlab = np.stack([mean(lab[..., c]) for c in range(3)], axis=1)
    std = np.sqrt(np.maximum(mean(L * L) - mlab[:, 0] ** 2, 0.0))
    gx = ndi.sobel(L, axis=1) / 8.0
    gy = ndi.sobel(L, axis=0) / 8.0
    g2 = gx * gx + gy * gy
    grad = mean(np.sqrt(g2))
    e = np.bincount(flat, weights=g2.ravel(), minlength=n) + 1e-6 * area + 1e-9
    vert_edge = np.abs(gx) > 2.0 * np.abs(gy)  # intensity changes along x: a vertical edge
    horiz_edge = np.abs(gy) > 2.0 * np.abs(gx)
    vfrac = np.bincount(flat, weights=(g2 * vert_edge).ravel(), minlength=n) / e
    hfrac = np.bincount(flat, weights=(g2 * horiz_edge).ravel(), minlength=n) / e

    rows = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w))
    row_mean = mean(rows)
    row_min = ndi.minimum(rows, seg, index=np.arange(n))
    row_max = ndi.maximum(rows, seg, index=np.arange(n))
    top = np.bincount(seg[0], minlength=n).astype(np.float64)
    bottom = np.bincount(seg[-1], minlength=n).astype(np.float64)

    # adjacency (shared boundary length) over 4-neighbours
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    m = a != b
    adj = np.bincount(a[m] * n + b[m], minlength=n * n).reshape(n, n).astype(np.float64)
    adj = adj + adj.T
    # affinity: boundary length x colour similarity
    d2 = ((mlab[:, None, :] - mlab[None, :, :]) ** 2).sum(-1)
    aff = adj * np.exp(-d2 / (2.0 * 12.0**2))
    weights = aff / np.maximum(adj.sum(1, keepdims=True), 1e-9)
    chroma = np.hypot(mlab[:, 1], mlab[:, 2])
    return _Segments(
        seg, n, area, mlab, chroma, grad, std, vfrac, hfrac, row_mean, np.asarray(row_min),
        np.asarray(row_max), top, bottom, adj, weights,
    )  # fmt: skip


# ----------------------------------------------------------------------------- labelling


def _sky_colour(S: _Segments) -> np.ndarray:
    """0..1.5 how sky-coloured each segment is (blue, or bright and neutral)."""
    L, b = S.lab[:, 0], S.lab[:, 2]
    blue = np.clip((-b - 4.0) / 10.0, 0.0, 1.5) * np.clip(L / 10.0, 0.0, 1.0)
    neutral = np.clip((L - 72.0) / 12.0, 0.0, 1.0) * np.clip((14.0 - S.chroma) / 8.0, 0.0, 1.0)
    return np.maximum(blue, neutral)


def _unaries(S: _Segments, vh: float, f: float, h: int, indoor: bool) -> np.ndarray:
    """[n, 4] log-potentials of GROUND, VERTICAL, SKY, CEILING per segment."""
    t = (S.row_mean - vh) / f  # tangent of the angle below the horizon (centroid)
    t_bot = (S.row_max - vh) / f
    t_top = (S.row_min - vh) / f
    smooth = np.exp(-S.grad / 1.0)
    skyc = _sky_colour(S)
    blue = np.clip((-S.lab[:, 2] - 4.0) / 10.0, 0.0, 1.5)
    at_top = S.top > 0
    at_bottom = S.bottom > 0
    U = np.zeros((S.n, N_CLASSES))
    # ground: below the horizon, not blue, not dominated by vertical edges
    U[:, GROUND] = (
        6.0 * np.clip(t / 0.12, -2.0, 1.0)
        + 1.0 * at_bottom
        - 1.5 * blue
        - 3.0 * np.clip(S.vfrac - 0.35, 0.0, 1.0)
        + 1.0 * np.clip(S.hfrac - 0.3, 0.0, 0.5)
        - 0.5
    )
    # vertical: the default class; favoured by vertical edges and texture
    U[:, VERTICAL] = 2.0 * S.vfrac + 0.15 * np.clip(S.grad, 0.0, 8.0) + 0.5
    # sky: sky-coloured, smooth, above the horizon
    U[:, SKY] = (
        3.0 * skyc
        + 3.0 * smooth
        - 3.0
        - 12.0 * np.clip(t_bot + 0.02, 0.0, 1.0)
        + 0.5 * at_top
        - 1.0 * np.clip(S.grad - 2.0, 0.0, 5.0)
    )
    # ceiling (indoors): smooth, low chroma, well above the horizon
    U[:, CEILING] = (
        3.0 * smooth
        + 1.0 * np.clip((20.0 - S.chroma) / 15.0, 0.0, 1.0)
        - 2.5
        - 12.0 * np.clip(t_bot + 0.05, 0.0, 1.0)
        + 1.0 * at_top
        + 0.0 * t_top
    )
    if indoor:
        U[:, SKY] = -np.inf
    else:
        U[:, CEILING] = -np.inf
    return U


def _softmax(U: np.ndarray) -> np.ndarray:
    m = np.max(U, axis=1, keepdims=True)
    e = np.exp(U - m)
    return e / e.sum(1, keepdims=True)


def _mean_field(S: _Segments, U: np.ndarray, lam: float, iters: int = 6) -> np.ndarray:
    Q = _softmax(U)
    for _ in range(iters):
        Q = _softmax(U + lam * (S.weights @ Q))
    return Q


def _connected_to(S: _Segments, member: np.ndarray, seeds: np.ndarray) -> np.ndarray:
    """Segments in ``member`` reachable from ``seeds & member`` through ``member`` neighbours."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    idx = np.flatnonzero(member)
    if idx.size == 0:
        return np.zeros(S.n, dtype=bool)
    sub = S.adj[np.ix_(idx, idx)] > 0
    _, comp = connected_components(csr_matrix(sub), directed=False)
    good = np.unique(comp[seeds[idx]])
    out = np.zeros(S.n, dtype=bool)
    out[idx[np.isin(comp, good)]] = True
    return out


def _classify(S: _Segments, vh: float, f: float, h: int, indoor: bool, cfg) -> np.ndarray:
    U = _unaries(S, vh, f, h, indoor)
    Q = _mean_field(S, U, cfg.smoothness)
    lab = np.argmax(Q, axis=1)
    at_top = S.top > 0
    at_bottom = S.bottom > 0
    for cls, seeds in ((SKY, at_top), (CEILING, at_top), (GROUND, at_bottom)):
        member = lab == cls
        ok = _connected_to(S, member, seeds)
        lab[member & ~ok] = VERTICAL
    return lab


# ----------------------------------------------------------------------------- horizon


def _horizon(
    lab_px: np.ndarray, f: float, cy: float, cfg: PopupConfig, indoor: bool, pitch_lim: float
) -> tuple[float, str]:
    """Horizon row (working pixels) from the labels, and what decided it."""
    h, w = lab_px.shape
    rows = np.arange(h)[:, None]
    sky = lab_px == SKY
    ground = lab_px == GROUND
    lo, hi = -np.inf, np.inf
    cols_sky = sky.any(0)
    cols_ground = ground.any(0)
    if cols_sky.sum() >= max(3, 0.05 * w):
        sky_bottom = np.where(sky, rows, -1).max(0)[cols_sky]
        lo = float(np.percentile(sky_bottom, 90))
    if cols_ground.sum() >= max(3, 0.05 * w):
        ground_top = np.where(ground, rows, h).min(0)[cols_ground]
        far = cfg.indoor_far_floor if indoor else cfg.max_depth
        hi = float(np.percentile(ground_top, 10)) - f * cfg.camera_height / far
    vmin = cy - f * math.tan(pitch_lim)
    vmax = cy + f * math.tan(pitch_lim)
    if math.isfinite(lo) and math.isfinite(hi):
        vh = min(max(cy, lo), hi) if lo <= hi else 0.5 * (lo + hi)
        source = "sky+ground"
    elif math.isfinite(lo):
        vh, source = max(cy, lo), "sky"
    elif math.isfinite(hi):
        vh, source = min(cy, hi), "ground"
    else:
        vh, source = cy, "default"
    return float(np.clip(vh, vmin, vmax)), source


# ----------------------------------------------------------------------------- vertical depth


def _vertical_groups(S: _Segments, seg_lab: np.ndarray) -> np.ndarray:
    """Group id per segment for vertical segments (-1 otherwise): similar-coloured vertical
    neighbours share a group, so each group is one folded billboard."""
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    vert = seg_lab == VERTICAL
    d2 = ((S.lab[:, None, :] - S.lab[None, :, :]) ** 2).sum(-1)
    link = (S.adj > 0) & (d2 < 14.0**2) & vert[:, None] & vert[None, :]
    _, comp = connected_components(csr_matrix(link), directed=False)
    return np.where(vert, comp, -1)


def _vertical_distance(
    lab_px: np.ndarray,
    group_px: np.ndarray,
    K: Intrinsics,
    n: np.ndarray,
    pitch: float,
    cfg: PopupConfig,
    hc: float,
    far: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per group and column, the horizontal distance of the billboard (working resolution).

    Returns (table [G, w] float64, group ids [G]).
    """
    h, w = lab_px.shape
    gids = np.unique(group_px[group_px >= 0])
    G = gids.size
    if G == 0:
        return np.zeros((0, w)), gids
    gindex = np.full(int(group_px.max()) + 1, -1)
    gindex[gids] = np.arange(G)
    gp = np.where(group_px >= 0, gindex[np.maximum(group_px, 0)], -1)
    cols = np.arange(w)
    x_col = (cols - K.cx) / K.fx
    sp, cp = math.sin(pitch), math.cos(pitch)

    def hdist_ground(row: np.ndarray, c: np.ndarray) -> np.ndarray:
        y = (row - K.cy) / K.fy
        z = _ground_z(n, cfg.camera_height, y, x_col[c])
        z = np.minimum(z, far)
        return z * (sp * y + cp)  # m . P with P = z r

    def hdist_ceiling(row: np.ndarray, c: np.ndarray) -> np.ndarray:
        y = (row - K.cy) / K.fy
        z = np.minimum(_ceiling_z(n, hc, y, x_col[c]), far)
        return z * (sp * y + cp)

    # fallback: the nearest possible contact, the ground seen at the bottom edge of the image
    y_bot = (h - 0.5 - K.cy) / K.fy
    z_bot = float(_ground_z(n, cfg.camera_height, np.array(y_bot))[()])
    if not math.isfinite(z_bot):  # the bottom edge looks above the horizon
        z_bot = cfg.indoor_far_floor
    d_bottom = min(z_bot, far) * (sp * y_bot + cp)

    # the lowest / highest pixels of each group run in each column, and what lies beyond them
    below = np.vstack([lab_px[1:], np.full((1, w), 255, lab_px.dtype)])
    above = np.vstack([np.full((1, w), 255, lab_px.dtype), lab_px[:-1]])
    gbelow = np.vstack([gp[1:], np.full((1, w), -2)])
    gabove = np.vstack([np.full((1, w), -2), gp[:-1]])
    rr, cc = np.nonzero((gp >= 0) & (gbelow != gp))
    gg = gp[rr, cc]
    t_ground = np.full((G, w), np.inf)  # nearest ground contact
    m = below[rr, cc] == GROUND
    np.minimum.at(t_ground, (gg[m], cc[m]), hdist_ground(rr[m] + 0.5, cc[m]))
    t_bottom = np.full((G, w), np.inf)  # reaches the bottom border: the nearest possible
    m = rr == h - 1
    t_bottom[gg[m], cc[m]] = d_bottom
    t_ceil = np.full((G, w), np.inf)  # indoors: meets the ceiling at its top
    rr2, cc2 = np.nonzero((gp >= 0) & (gabove != gp))
    m = above[rr2, cc2] == CEILING
    np.minimum.at(t_ceil, (gp[rr2[m], cc2[m]], cc2[m]), hdist_ceiling(rr2[m] - 0.5, cc2[m]))
    table = np.where(
        np.isfinite(t_ground), t_ground, np.where(np.isfinite(t_ceil), t_ceil, t_bottom)
    )
    table[~np.isfinite(table)] = np.nan

    # groups without a contact stand on what they occlude: process bottom-up
    present = np.zeros((G, w), dtype=bool)
    present[gp[gp >= 0], np.nonzero(gp >= 0)[1]] = True
    lowest = np.where(gp >= 0, np.arange(h)[:, None], -1)
    g_low = np.full(G, -1)
    np.maximum.at(g_low, gp[gp >= 0], lowest[gp >= 0])
    order = np.argsort(-g_low, kind="stable")
    resolved = np.zeros(G, dtype=bool)
    for gi in order:
        known = np.isfinite(table[gi]) & present[gi]
        if not known.any():
            # what is below this group's lowest pixels: another (already resolved) group
            mm = (gg == gi) & (gbelow[rr, cc] >= 0)
            other = gbelow[rr[mm], cc[mm]]
            oc = cc[mm]
            vals = []
            for o, c in zip(other, oc, strict=True):
                if resolved[o] and np.isfinite(table[o, c]):
                    vals.append(table[o, c])
            if vals:
                table[gi, present[gi]] = float(np.median(vals)) * 1.15
            else:
                table[gi, present[gi]] = d_bottom
            known = present[gi]
        # fill the group's other columns from its known columns; robust along columns
        kc = np.flatnonzero(known)
        row = np.interp(cols, kc, table[gi, kc])
        span = present[gi]
        if span.sum() >= 5:
            sm = np.exp(ndi.median_filter(np.log(np.maximum(row, 1e-3)), size=5, mode="nearest"))
            row = np.where(span, sm, row)
        table[gi] = row
        resolved[gi] = True
    return table, gids


# ----------------------------------------------------------------------------- main entry


def _check_image(image: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be [H, W, 3], got shape {tuple(image.shape)}")
    H, W = image.shape[:2]
    if H < 8 or W < 8:
        raise InputError(f"image too small for the popup depth backend: {W}x{H}")
    if (intrinsics.width, intrinsics.height) != (W, H):
        raise InputError(
            f"intrinsics are for {intrinsics.width}x{intrinsics.height}, image is {W}x{H}"
        )
    img = np.asarray(image, dtype=np.float32)
    if not np.isfinite(img).all():
        raise InputError("image has NaN or infinite values")
    return np.clip(img, 0.0, 1.0)


def popup_depth(
    image: np.ndarray, intrinsics: Intrinsics, config: PopupConfig | None = None
) -> DepthEstimate:
    """Depth, labels and ground normal of one photo from the Photo Pop-up layout prior.

    image: [H, W, 3] float32 sRGB in [0, 1]; intrinsics at the image's resolution.
    """
    from skimage.transform import resize

    cfg = config or PopupConfig()
    cfg.validate()
    img = _check_image(image, intrinsics)
    H, W = img.shape[:2]
    s = min(1.0, cfg.work_size / max(H, W))
    h, w = max(8, round(H * s)), max(8, round(W * s))
    small = img if (h, w) == (H, W) else resize(img, (h, w), anti_aliasing=True, order=1)
    Ks = intrinsics.scaled_to(w, h)
    f = Ks.fy
    pitch_lim = math.radians(cfg.max_pitch_deg)
    S = _segment(small.astype(np.float32), cfg)

    # outdoor pass (sky allowed); fall back to indoor (ceiling) if no convincing sky
    def run(indoor: bool) -> tuple[np.ndarray, float, str]:
        vh, src = Ks.cy, "default"
        for _ in range(3):
            seg_lab = _classify(S, vh, f, h, indoor, cfg)
            vh, src = _horizon(seg_lab[S.seg], f, Ks.cy, cfg, indoor, pitch_lim)
        seg_lab = _classify(S, vh, f, h, indoor, cfg)
        return seg_lab, vh, src

    seg_lab, vh, src = run(indoor=False)
    sky = seg_lab == SKY
    sky_area = S.area[sky].sum() / (h * w)
    sky_top = S.top[sky].sum() / w
    sky_blue = float(np.average(_sky_colour(S)[sky], weights=S.area[sky])) if sky.any() else 0.0
    indoor = not (sky_area >= 0.02 and (sky_top >= 0.35 or (sky_blue >= 0.5 and sky_top >= 0.1)))
    if indoor:
        seg_lab, vh, src = run(indoor=True)
        ceil = seg_lab == CEILING
        if S.top[ceil].sum() < 0.3 * w:  # a small bright patch at the top is not a ceiling
            seg_lab[ceil] = VERTICAL

    pitch = math.atan2(vh - Ks.cy, f)
    n = up_vector(pitch)
    hc = cfg.ceiling_height - cfg.camera_height
    far = cfg.indoor_max_depth if indoor else cfg.max_depth
    lab_small = seg_lab[S.seg].astype(np.uint8)

    # ground above (or at) the horizon cannot meet the plane: it is vertical
    y_small = (np.arange(h) - Ks.cy) / Ks.fy
    nr_row = n[1] * y_small + n[2]  # roll-free: n.r does not depend on x
    lab_small[(lab_small == GROUND) & (nr_row[:, None] > -1e-3)] = VERTICAL
    lab_small[(lab_small == CEILING) & (nr_row[:, None] < 1e-3)] = VERTICAL

    groups = _vertical_groups(S, seg_lab)
    group_small = np.where(lab_small == VERTICAL, groups[S.seg], -1)
    # pixels turned vertical above need a group: give them their segment's own id offset
    orphan = (lab_small == VERTICAL) & (group_small < 0)
    group_small[orphan] = S.n + S.seg[orphan]
    table, gids = _vertical_distance(lab_small, group_small, Ks, n, pitch, cfg, hc, far)

    # ------------------------------------------------------------ full resolution
    ri = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    ci = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    labels = lab_small[ri][:, ci]
    gfull = group_small[ri][:, ci]
    x = (np.arange(W, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    y = (np.arange(H, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    X, Y = np.meshgrid(x, y)
    depth = np.empty((H, W), dtype=np.float64)

    g = labels == GROUND
    depth[g] = _ground_z(n, cfg.camera_height, Y[g], X[g])
    c = labels == CEILING
    depth[c] = _ceiling_z(n, hc, Y[c], X[c])
    sk = labels == SKY
    depth[sk] = cfg.sky_distance / np.sqrt(X[sk] ** 2 + Y[sk] ** 2 + 1.0)
    v = labels == VERTICAL
    if v.any():
        gmap = np.full(int(gfull.max()) + 1, 0)
        gmap[gids] = np.arange(gids.size)
        # linear interpolation of each group's per-column distance at full-res columns
        xs = np.clip((np.arange(W) + 0.5) * w / W - 0.5, 0, w - 1)
        i0 = np.floor(xs).astype(np.int64)
        i1 = np.minimum(i0 + 1, w - 1)
        a = xs - i0
        tab = np.log(np.maximum(table, 1e-6))
        gi = gmap[gfull[v]]
        cols = np.broadcast_to(np.arange(W), (H, W))[v]
        dist = np.exp(tab[gi, i0[cols]] * (1 - a[cols]) + tab[gi, i1[cols]] * a[cols])
        depth[v] = dist / _forward_dot(pitch, Y[v])
    solid = ~sk
    depth[solid] = np.clip(np.nan_to_num(depth[solid], nan=far, posinf=far), cfg.min_depth, far)
    depth = depth.astype(np.float32)

    info = {
        "backend": "popup",
        "horizon_row": float((vh + 0.5) * H / h - 0.5),
        "horizon_source": src,
        "pitch_deg": math.degrees(pitch),
        "indoor": bool(indoor),
        "camera_height": cfg.camera_height,
        "sky_distance": cfg.sky_distance,
        "n_segments": int(S.n),
        "label_fractions": {
            name: float((labels == k).mean())
            for k, name in ((GROUND, "ground"), (VERTICAL, "vertical"), (SKY, "sky"))
        }
        | {"ceiling": float((labels == CEILING).mean())},
    }
    return DepthEstimate(
        depth=depth,
        kind="metric",
        labels=labels.astype(np.uint8),
        focal_px=None,
        ground_normal=n.astype(np.float64),
        info=info,
    )


class PopupBackend:
    """The default depth backend: a Photo Pop-up style layout prior, no weights needed."""

    name = "popup"

    def available(self) -> tuple[bool, str]:
        return True, "embedded, no weights"

    def estimate(self, image: np.ndarray, intrinsics: Intrinsics, **options) -> DepthEstimate:
        return popup_depth(image, intrinsics, PopupConfig.from_options(options))
