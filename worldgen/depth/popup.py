"""``popup``: the embedded, no-weights depth backend (the default).

A geometric scene-layout prior in the spirit of Hoiem, Efros & Hebert, *Automatic Photo
Pop-up* (SIGGRAPH 2005). Everything runs on a copy downscaled to ``work_size`` pixels:

1. SLIC superpixels, with per-superpixel colour (L*a*b*), texture (gradient energy), share of
   vertical edges, position, border contact and a boundary-sharpness-aware adjacency graph.
2. Labels: a hand-tuned score per class and superpixel -- ground: low in the frame, looks like
   the rest of the bottom border, few vertical edges, not blue; sky: blue or bright-neutral,
   smooth, high; ceiling (indoors): smooth, low chroma, high; vertical is the reference --
   smoothed by mean-field on the adjacency graph (alike neighbours, or neighbours joined by a
   boundary no sharper than their texture, agree). Sky and ceiling must connect to the top
   border, ground to the bottom one. The sky must be convincing (blue, or a bright grey that
   spans the top and is the brightest thing in view); otherwise the scene is indoors and the
   top may become ceiling instead. Label boundaries are then refined per pixel by colour.
3. Horizon: at or below the lowest sky, above the highest ground by the distance the far
   ground may have (``max_depth`` outdoors, ``indoor_far_floor`` indoors), otherwise the
   principal point; clamped to +-``max_pitch_deg``. It gives the pitch, hence the up vector
   ``(0, -cos p, sin p)`` in camera axes (p > 0 looks up).
4. Ground and ceiling: exact ray / plane intersection, the camera ``camera_height`` metres
   above the ground, the ceiling at ``ceiling_height``.
5. Vertical: every vertical superpixel is a facet standing upright at one horizontal distance,
   solved jointly (sparse least squares in log distance): a facet sitting on the ground takes
   its contact distance (folded billboards, as in Photo Pop-up), one reaching the bottom border
   the nearest possible one; a facet follows what supports it from below and its look-alike
   neighbours; what stands above a grounded facet across a colour edge may not come in front
   of it. An edge-aware filter removes the facet seams; nothing goes below the floor or above
   an indoor ceiling.
6. Sky: a dome ``sky_distance`` metres away along every ray.

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
    """Metres of an indoor ceiling above the floor (used when no sky is found; kept at least
    0.3 m above the camera)."""

    max_depth: float = 80.0
    """Farthest z-depth in metres given to ground and vertical surfaces outdoors."""

    indoor_max_depth: float = 20.0
    """Farthest z-depth in metres of any surface in an indoor scene (keeps rooms closed)."""

    indoor_far_floor: float = 6.0
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
            "ceiling_height",
            "sky_distance",
            "max_depth",
            "indoor_max_depth",
            "indoor_far_floor",
            "compactness",
            "min_depth",
        ):
            positive(name)
        if not self.min_depth < min(self.max_depth, self.indoor_max_depth):
            raise InputError("popup min_depth must be below max_depth and indoor_max_depth")
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


def _ceiling_above_camera(cfg: PopupConfig) -> float:
    """Metres from the camera up to the ceiling plane (at least 0.3 m)."""
    return max(cfg.ceiling_height - cfg.camera_height, 0.3)


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
    vfrac: np.ndarray  # share of gradient energy on vertical edges
    row_mean: np.ndarray
    row_max: np.ndarray
    top: np.ndarray  # pixels on the top border
    bottom: np.ndarray  # pixels on the bottom border
    adj: np.ndarray  # [n, n] shared boundary length
    weights: np.ndarray  # [n, n] row-normalised affinity
    image_lab: np.ndarray  # [h, w, 3] L*a*b* of the working image


def _segment(small: np.ndarray, cfg: PopupConfig) -> _Segments:
    from skimage.color import rgb2lab
    from skimage.segmentation import slic

    h, w = small.shape[:2]
    lab = rgb2lab(small).astype(np.float32)
    seg = slic(
        small,
        n_segments=cfg.n_segments,
        compactness=cfg.compactness,
        start_label=0,
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
    gx = ndi.sobel(L, axis=1) / 8.0
    gy = ndi.sobel(L, axis=0) / 8.0
    g2 = gx * gx + gy * gy
    grad = mean(np.sqrt(g2))
    e = np.bincount(flat, weights=g2.ravel(), minlength=n) + 1e-6 * area + 1e-9
    vert_edge = np.abs(gx) > 2.0 * np.abs(gy)  # intensity changes along x: a vertical edge
    vfrac = np.bincount(flat, weights=(g2 * vert_edge).ravel(), minlength=n) / e

    rows = np.broadcast_to(np.arange(h, dtype=np.float64)[:, None], (h, w))
    row_mean = mean(rows)
    row_max = ndi.maximum(rows, seg, index=np.arange(n))
    top = np.bincount(seg[0], minlength=n).astype(np.float64)
    bottom = np.bincount(seg[-1], minlength=n).astype(np.float64)

    # adjacency (shared boundary length) over 4-neighbours, and how sharp each boundary is
    a = np.concatenate([seg[:, :-1].ravel(), seg[:-1, :].ravel()])
    b = np.concatenate([seg[:, 1:].ravel(), seg[1:, :].ravel()])
    lab64 = lab.astype(np.float64)
    step = np.concatenate(
        [
            np.linalg.norm(lab64[:, 1:] - lab64[:, :-1], axis=-1).ravel(),
            np.linalg.norm(lab64[1:] - lab64[:-1], axis=-1).ravel(),
        ]
    )
    m = a != b
    pair = a[m] * n + b[m]
    adj = np.bincount(pair, minlength=n * n).reshape(n, n).astype(np.float64)
    jump = np.bincount(pair, weights=step[m], minlength=n * n).reshape(n, n)
    adj = adj + adj.T
    jump = (jump + jump.T) / np.maximum(adj, 1.0)  # mean colour step across the boundary
    inner = np.bincount(a[~m], weights=step[~m], minlength=n) / np.maximum(
        np.bincount(a[~m], minlength=n), 1.0
    )  # mean colour step between neighbours inside a segment (its texture)
    texture = 0.5 * (inner[:, None] + inner[None, :])
    # affinity: alike on average, or joined by a boundary no sharper than their texture
    # (soft shadows and shading gradients do not split a surface)
    d2 = ((mlab[:, None, :] - mlab[None, :, :]) ** 2).sum(-1)
    soft = np.exp(-np.maximum(jump - 1.5 * texture - 1.0, 0.0) / 2.0)
    aff = adj * np.maximum(np.exp(-d2 / (2.0 * 12.0**2)), soft)
    weights = aff / np.maximum(adj.sum(1, keepdims=True), 1e-9)
    chroma = np.hypot(mlab[:, 1], mlab[:, 2])
    return _Segments(
        seg, n, area, mlab, chroma, grad, vfrac, row_mean, np.asarray(row_max), top, bottom, adj,
        weights, lab,
    )  # fmt: skip


# ----------------------------------------------------------------------------- labelling


def _sky_colour(S: _Segments) -> np.ndarray:
    """0..1.5 how sky-coloured each segment is (blue, or bright and neutral)."""
    L, b = S.lab[:, 0], S.lab[:, 2]
    blue = np.clip((-b - 4.0) / 10.0, 0.0, 1.5) * np.clip(L / 10.0, 0.0, 1.0)
    neutral = np.clip((L - 72.0) / 12.0, 0.0, 1.0) * np.clip((14.0 - S.chroma) / 8.0, 0.0, 1.0)
    return np.maximum(blue, neutral)


def _bottom_similarity(S: _Segments) -> np.ndarray:
    """0..1 how much each segment looks like the *other* segments on the bottom border (which
    are mostly ground in ordinary photos)."""
    wts = S.bottom / max(S.bottom.sum(), 1.0)
    dl = S.lab[:, None, :] - S.lab[None, :, :]
    d2 = 0.4 * dl[..., 0] ** 2 + dl[..., 1] ** 2 + dl[..., 2] ** 2
    dg = (S.grad[:, None] - S.grad[None, :]) / 2.0
    sim = np.exp(-(d2 / (2.0 * 10.0**2) + 0.5 * dg**2))
    np.fill_diagonal(sim, 0.0)
    others = np.maximum(1.0 - wts, 1e-9)  # weight of the bottom border outside the segment
    return np.clip(sim @ wts / others, 0.0, 1.0)


def _unaries(S: _Segments, vh: float, bsim: np.ndarray, indoor: bool) -> np.ndarray:
    """[n, 4] log-potentials of GROUND, VERTICAL, SKY, CEILING per segment.

    ``vh`` is the prior horizon row: positions are soft cues, the horizon is fitted afterwards.
    """
    # position below the prior horizon in half image heights (image-relative like the photos'
    # framing, not angular, so narrow and wide lenses behave alike)
    h = float(S.seg.shape[0])
    p = (S.row_mean - vh) / (0.5 * h)
    p_bot = (S.row_max - vh) / (0.5 * h)
    smooth = np.exp(-S.grad / 1.0)
    skyc = _sky_colour(S)
    blue = np.clip((-S.lab[:, 2] - 6.0) / 10.0, 0.0, 1.5)
    at_top = (S.top > 0).astype(np.float64)
    at_bottom = (S.bottom > 0).astype(np.float64)
    # edge orientation only means something on textured segments; vertical edges (poles,
    # corners, trunks, window frames) mark upright surfaces, horizontal ones are everywhere
    vert_edges = S.vfrac * np.clip(S.grad / 3.0, 0.0, 1.0)
    U = np.zeros((S.n, N_CLASSES))
    # ground (relative to vertical): low in the view, looks like the bottom border, few vertical
    # edges, not blue, not cluttered
    U[:, GROUND] = (
        2.0 * np.clip(p, -1.5, 1.0)
        - 3.0 * (vert_edges - 0.1)
        + 3.0 * (bsim - 0.25)
        + 0.5 * at_bottom
        - 3.0 * blue
        - 0.3 * np.clip(S.grad - 3.0, 0.0, 5.0)
        - 0.8
    )
    U[:, VERTICAL] = 0.0
    # sky: sky-coloured, smooth, high in the view
    U[:, SKY] = (
        3.0 * skyc
        + 2.5 * smooth
        - 3.0
        - 1.0 * np.clip(S.grad - 2.0, 0.0, 5.0)
        - 1.5 * np.clip(p_bot, 0.0, 2.0)
        + 0.5 * at_top
        - 1.5 * vert_edges
    )
    # ceiling (indoors): smooth, low chroma, high in the view
    U[:, CEILING] = (
        3.0 * smooth
        + 1.0 * np.clip((20.0 - S.chroma) / 15.0, 0.0, 1.0)
        - 3.0
        - 4.0 * np.clip(p_bot / 0.3 + 0.5, 0.0, 2.0)
        + 1.0 * at_top
        - 1.5 * vert_edges
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


def _classify(
    S: _Segments, vh: float, bsim: np.ndarray, indoor: bool, cfg: PopupConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Class per segment (scores, mean-field smoothing, connectivity to the borders) and the
    mean-field probability of that class [n]."""
    U = _unaries(S, vh, bsim, indoor)
    Q = _mean_field(S, U, cfg.smoothness)
    lab = np.argmax(Q, axis=1)
    conf = Q[np.arange(S.n), lab]
    at_top = S.top > 0
    at_bottom = S.bottom > 0
    for cls, seeds in ((SKY, at_top), (CEILING, at_top), (GROUND, at_bottom)):
        member = lab == cls
        ok = _connected_to(S, member, seeds)
        lab[member & ~ok] = VERTICAL
    return lab, conf


def _refine_boundaries(labels: np.ndarray, lab: np.ndarray, nr_row: np.ndarray) -> np.ndarray:
    """Pixel-accurate label boundaries: near a boundary, each pixel takes the label whose local
    mean colour (7 x 7 window) it is closest to. Ground stays below the horizon, sky and ceiling
    above it; sky and ceiling stay connected to the top border, ground to the bottom one."""
    h, w = labels.shape
    size = 7
    classes = [k for k in range(N_CLASSES) if (labels == k).any()]
    if len(classes) < 2:
        return labels
    lab = lab.astype(np.float64)
    dist = np.full((N_CLASSES, h, w), np.inf)
    below = (nr_row < -1e-3)[:, None]
    above = (nr_row > 1e-3)[:, None]
    for k in classes:
        m = (labels == k).astype(np.float64)
        cnt = ndi.uniform_filter(m, size, mode="nearest")
        ok = cnt > 0.1
        mean = (
            np.stack(
                [ndi.uniform_filter(lab[..., c] * m, size, mode="nearest") for c in range(3)], -1
            )
            / np.maximum(cnt, 1e-9)[..., None]
        )
        d = np.sqrt(((lab - mean) ** 2).sum(-1))
        allowed = ok.copy()
        if k == GROUND:
            allowed &= below
        elif k in (SKY, CEILING):
            allowed &= above
        dist[k] = np.where(allowed, d, np.inf)
    own = np.take_along_axis(dist, labels[None].astype(np.int64), 0)[0]
    best = np.argmin(dist, 0)
    better = np.take_along_axis(dist, best[None], 0)[0] < own - 3.0
    out = np.where(better, best, labels).astype(np.uint8)
    # connectivity to the borders
    for k, row in ((SKY, 0), (CEILING, 0), (GROUND, h - 1)):
        m = out == k
        if not m.any():
            continue
        cc, _ = ndi.label(m)
        keep = np.unique(cc[row][cc[row] > 0])
        out[m & ~np.isin(cc, keep)] = VERTICAL
    return out


# ----------------------------------------------------------------------------- horizon

#: mean-field probability above which a ground segment bounds the horizon (see ``_horizon``)
GROUND_CONFIDENCE = 0.8


def _horizon(
    lab_px: np.ndarray,
    f: float,
    cy: float,
    cfg: PopupConfig,
    indoor: bool,
    pitch_lim: float,
    conf_px: np.ndarray | None = None,
) -> tuple[float, str]:
    """Horizon row (working pixels) from the labels, and what decided it.

    The ground bounds the horizon from below by the highest rows it reaches; only confidently
    labelled ground (mean-field probability >= ``GROUND_CONFIDENCE`` in ``conf_px`` [h, w])
    counts when enough columns have some: grey clouds that look like the grey sand below them
    are labelled ground with a lower confidence, and would tilt the whole world.
    """
    h, w = lab_px.shape
    rows = np.arange(h)[:, None]
    sky = lab_px == SKY
    ground = lab_px == GROUND
    if conf_px is not None:
        sure = ground & (conf_px >= GROUND_CONFIDENCE)
        if sure.any(0).sum() >= max(3, 0.05 * w):
            ground = sure
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


def _plane_hdist(y: np.ndarray, pitch: float, height: float, far: float) -> np.ndarray:
    """Horizontal distance of the point of a horizontal plane seen at normalised row ``y``.

    ``height`` > 0: a ground plane that far below the camera; < 0: a ceiling that far above.
    Rays that miss the plane (or hit it beyond ``far`` z-depth) give the distance at ``far``.
    """
    n = up_vector(pitch)
    nr = n[1] * y + n[2]
    mr = _forward_dot(pitch, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(-nr * np.sign(height) > 1e-9, abs(height) / np.abs(nr), np.inf)
    return np.minimum(z, far) * mr


def _vertical_log_distance(
    lab_px: np.ndarray, S: _Segments, Ks: Intrinsics, pitch: float, cfg: PopupConfig, far: float
) -> np.ndarray:
    """[h, w] log horizontal distance of vertical pixels (NaN elsewhere), working resolution.

    Every vertical superpixel is a fronto-parallel facet at one horizontal distance. Facets that
    sit on the ground (or, indoors, touch the ceiling) take the distance of that contact; facets
    are tied to their neighbours, strongly to what is just below them (things stand on what
    supports them) and more strongly the more alike they look; what lies above another facet is
    kept from coming in front of it. A sparse least-squares solve in log distance.
    """
    from scipy.sparse import coo_matrix, diags
    from scipy.sparse.linalg import spsolve

    h, w = lab_px.shape
    seg = S.seg
    vert = lab_px == VERTICAL
    out = np.full((h, w), np.nan)
    if not vert.any():
        return out
    n = S.n
    yb = (np.arange(h) + 0.5 - Ks.cy) / Ks.fy  # boundary below each row
    log_g = np.log(np.maximum(_plane_hdist(yb, pitch, cfg.camera_height, far), 1e-3))
    hc = _ceiling_above_camera(cfg)
    log_c = np.log(np.maximum(_plane_hdist(yb, pitch, -hc, far), 1e-3))
    y_bot = (h - 0.5 - Ks.cy) / Ks.fy
    d_bot = float(_plane_hdist(np.array(y_bot), pitch, cfg.camera_height, far))
    if d_bot >= far * 0.99:  # the bottom edge looks above the horizon: use a near default
        d_bot = min(cfg.indoor_far_floor, far)

    data_w = np.zeros(n)
    data_t = np.zeros(n)

    def add(ids: np.ndarray, values: np.ndarray, wt: float) -> None:
        np.add.at(data_w, ids, wt)
        np.add.at(data_t, ids, wt * values)

    # ground contacts: a vertical pixel right above a ground pixel
    # (one on the side of a surface that reaches lower right next to it is not a contact)
    contact = vert[:-1] & (lab_px[1:] == GROUND)
    side = _reaches_lower_nearby(vert, k=3)[:-1]
    r_g, c = np.nonzero(contact & ~side)
    add(seg[r_g, c], log_g[r_g], 4.0)
    r_s, c_s = np.nonzero(contact & side)
    add(seg[r_s, c_s], log_g[r_s], 0.2)
    # the bottom border: the nearest place the surface can stand
    c = np.flatnonzero(vert[-1])
    add(seg[-1, c], np.full(c.size, math.log(d_bot)), 1.0)
    # ceiling contacts: a vertical pixel right below a ceiling pixel
    r, c = np.nonzero(vert[1:] & (lab_px[:-1] == CEILING))
    add(seg[r + 1, c], log_c[r], 2.0)

    # pairwise ties between vertical facets
    dl = S.lab[:, None, :] - S.lab[None, :, :]
    sim = np.exp(-(0.5 * dl[..., 0] ** 2 + dl[..., 1] ** 2 + dl[..., 2] ** 2) / (2.0 * 10.0**2))
    up = seg[:-1]
    dn = seg[1:]
    mv = vert[:-1] & vert[1:] & (up != dn)
    vi, vj = up[mv], dn[mv]  # vi is above vj
    pv = np.bincount(vi * n + vj, minlength=n * n).reshape(n, n).astype(np.float64)
    lf = seg[:, :-1]
    rt = seg[:, 1:]
    mh = vert[:, :-1] & vert[:, 1:] & (lf != rt)
    ph = np.bincount(lf[mh] * n + rt[mh], minlength=n * n).reshape(n, n).astype(np.float64)
    ph = ph + ph.T
    # directed ties: a facet follows what supports it from below (strongly, more so when alike)
    # and its look-alike side neighbours (weakly); it is not pulled by what stands on it
    W = pv * (2.0 + sim) + ph * (0.02 + 0.3 * sim)

    active = np.bincount(seg[vert], minlength=n) > 0
    idx = np.flatnonzero(active)
    Wa = W[np.ix_(idx, idx)]
    dw = data_w[idx]
    # a faint prior for facets with no evidence at all: the far end of what stands on the ground
    x0 = float(np.percentile(log_g[r_g], 90)) if r_g.size else math.log(d_bot)
    prior = 1e-4 * S.area[idx]
    tgt = np.where(dw > 0, data_t[idx] / np.maximum(dw, 1e-12), 0.0)
    A = (diags(Wa.sum(1) + dw + prior) - coo_matrix(Wa)).tocsc()
    x = spsolve(A, dw * tgt + prior * x0)
    # what stands above another facet across a colour edge may not come in front of it, when
    # that facet is itself firmly on the ground (three contact pixels or more)
    ab = pv[np.ix_(idx, idx)]
    occl = (ab > 0) & (sim[np.ix_(idx, idx)] < 0.3) & (dw >= 12.0)[None, :]
    extra = np.zeros_like(Wa)
    for _ in range(3):
        viol = occl & (x[:, None] < x[None, :] - 0.01)
        if not viol.any():
            break
        extra = extra + np.where(viol, 10.0 * ab, 0.0)
        Wt = Wa + extra
        A = (diags(Wt.sum(1) + dw + prior) - coo_matrix(Wt)).tocsc()
        x = spsolve(A, dw * tgt + prior * x0)
    val = np.zeros(n)
    val[idx] = x
    out[vert] = val[seg[vert]]
    return _smooth_log_distance(out, vert)


def _reaches_lower_nearby(mask: np.ndarray, k: int) -> np.ndarray:
    """True where ``mask`` has pixels 2..2k+1 rows lower within k columns: a boundary there is
    steep (the side of a surface), not where it meets the ground."""
    h, w = mask.shape
    lower = np.zeros_like(mask)
    for dr in range(2, 2 * k + 2):
        lower[: h - dr] |= mask[dr:]
    return ndi.maximum_filter(lower.astype(np.uint8), size=(1, 2 * k + 1)).astype(bool)


def _smooth_log_distance(logd: np.ndarray, mask: np.ndarray, radius: int = 3) -> np.ndarray:
    """Edge-aware smoothing of the facet mosaic: a bilateral filter on log distance inside the
    mask; steps of more than ~15% stay sharp (occlusion boundaries)."""
    h, w = logd.shape
    v = np.where(mask, logd, 0.0)
    pad = radius
    vp = np.pad(v, pad, mode="edge")
    mp = np.pad(mask, pad, mode="constant")
    num = np.zeros((h, w))
    den = np.zeros((h, w))
    sig_s2 = 2.0 * (radius / 1.5) ** 2
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            ws = math.exp(-(dx * dx + dy * dy) / sig_s2)
            vv = vp[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
            mm = mp[pad + dy : pad + dy + h, pad + dx : pad + dx + w]
            wr = ws * mm * np.exp(-((vv - v) ** 2) / (2.0 * 0.07**2))
            num += wr * vv
            den += wr
    out = np.where(mask & (den > 0), num / np.maximum(den, 1e-12), np.nan)
    return out


# ----------------------------------------------------------------------------- main entry


def _upsample_masked(values: np.ndarray, mask: np.ndarray, H: int, W: int) -> np.ndarray:
    """Bilinear upsampling of ``values`` that only mixes pixels inside ``mask`` (no bleeding
    across labels); pixels whose neighbourhood is empty fall back to nearest."""
    from skimage.transform import resize

    h, w = values.shape
    v = np.where(mask, values, 0.0)
    num = resize(v, (H, W), order=1, mode="edge", anti_aliasing=False)
    den = resize(mask.astype(np.float64), (H, W), order=1, mode="edge", anti_aliasing=False)
    ri = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    ci = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    near = v[ri][:, ci]
    return np.where(den > 1e-3, num / np.maximum(den, 1e-3), near)


def _sky_is_convincing(S: _Segments, sky: np.ndarray, area: float, top: float) -> bool:
    """Whether the sky-labelled segments are really sky (else the photo is taken indoors).

    Blue sky needs a little of the top border; a grey or white one (overcast, or a white
    ceiling, wall or backdrop) must span much of the top border and be the brightest thing in
    the photo.
    """
    if not sky.any() or area < 0.02 or top < 0.1:
        return False
    wts = S.area[sky]
    blue = float(np.average(np.clip((-S.lab[sky, 2] - 4.0) / 10.0, 0.0, 1.0), weights=wts))
    if blue >= 0.4:
        return True
    L_sky = float(np.average(S.lab[sky, 0], weights=wts))
    rest = ~sky
    L_rest = float(np.percentile(S.lab[rest, 0], 90)) if rest.any() else 0.0
    return top >= 0.35 and L_sky >= max(80.0, L_rest)


def _downscale(img: np.ndarray, h: int, w: int) -> np.ndarray:
    """Area-averaging downscale of an [H, W, 3] float image (exact box filter, fast)."""
    from PIL import Image

    chans = [
        np.asarray(Image.fromarray(np.ascontiguousarray(img[..., c])).resize((w, h), Image.BOX))
        for c in range(3)
    ]
    return np.stack(chans, -1).astype(np.float32)


def _check_image(image: np.ndarray, intrinsics: Intrinsics) -> np.ndarray:
    if not isinstance(image, np.ndarray):
        raise InputError(f"image must be a numpy array, got {type(image).__name__}")
    if image.ndim != 3 or image.shape[2] != 3:
        raise InputError(f"image must be [H, W, 3], got shape {tuple(image.shape)}")
    if not np.issubdtype(image.dtype, np.floating):
        raise InputError(f"image must be float sRGB in [0, 1], got dtype {image.dtype}")
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
    cfg = config or PopupConfig()
    cfg.validate()
    img = _check_image(image, intrinsics)
    H, W = img.shape[:2]
    s = min(1.0, cfg.work_size / max(H, W))
    h, w = max(8, round(H * s)), max(8, round(W * s))
    small = img if (h, w) == (H, W) else _downscale(img, h, w)
    Ks = intrinsics.scaled_to(w, h)
    f = Ks.fy
    pitch_lim = math.radians(cfg.max_pitch_deg)
    S = _segment(small.astype(np.float32), cfg)

    # outdoor pass (sky allowed); fall back to indoor (ceiling) if no convincing sky
    bsim = _bottom_similarity(S)

    def run(indoor: bool) -> tuple[np.ndarray, float, str]:
        seg_lab, conf = _classify(S, Ks.cy, bsim, indoor, cfg)
        vh, src = _horizon(seg_lab[S.seg], f, Ks.cy, cfg, indoor, pitch_lim, conf[S.seg])
        return seg_lab, vh, src

    seg_lab, vh, src = run(indoor=False)
    sky = seg_lab == SKY
    sky_area = S.area[sky].sum() / (h * w)
    sky_top = S.top[sky].sum() / w
    indoor = not _sky_is_convincing(S, sky, sky_area, sky_top)
    if indoor:
        seg_lab, vh, src = run(indoor=True)
        ceil = seg_lab == CEILING
        if S.top[ceil].sum() < 0.3 * w:  # a small bright patch at the top is not a ceiling
            seg_lab[ceil] = VERTICAL

    pitch = math.atan2(vh - Ks.cy, f)
    n = up_vector(pitch)
    hc = _ceiling_above_camera(cfg)
    far = cfg.indoor_max_depth if indoor else cfg.max_depth
    lab_small = seg_lab[S.seg].astype(np.uint8)

    # ground above (or at) the horizon cannot meet the plane: it is vertical
    y_small = (np.arange(h) - Ks.cy) / Ks.fy
    nr_row = n[1] * y_small + n[2]  # roll-free: n.r does not depend on x
    lab_small[(lab_small == GROUND) & (nr_row[:, None] > -1e-3)] = VERTICAL
    lab_small[(lab_small == CEILING) & (nr_row[:, None] < 1e-3)] = VERTICAL
    lab_small = _refine_boundaries(lab_small, S.image_lab, nr_row)

    logd_small = _vertical_log_distance(lab_small, S, Ks, pitch, cfg, far)

    # ------------------------------------------------------------ full resolution
    # (no roll: plane depths depend on the row only)
    ri = np.minimum(((np.arange(H) + 0.5) * h / H).astype(np.int64), h - 1)
    ci = np.minimum(((np.arange(W) + 0.5) * w / W).astype(np.int64), w - 1)
    labels = lab_small[ri][:, ci]
    x = (np.arange(W, dtype=np.float64) - intrinsics.cx) / intrinsics.fx
    y = (np.arange(H, dtype=np.float64) - intrinsics.cy) / intrinsics.fy
    z_ground = np.minimum(_ground_z(n, cfg.camera_height, y), far)[:, None]  # [H, 1]
    z_ceiling = np.minimum(_ceiling_z(n, hc, y), far)[:, None]
    depth = np.where(labels == GROUND, z_ground, 0.0)
    if indoor:
        depth = np.where(labels == CEILING, z_ceiling, depth)
    sk = labels == SKY
    if sk.any():
        ray_len = np.sqrt(x[None, :] ** 2 + y[:, None] ** 2 + 1.0)
        depth = np.where(sk, cfg.sky_distance / ray_len, depth)
    v = labels == VERTICAL
    if v.any():
        zv = np.exp(_upsample_masked(logd_small, lab_small == VERTICAL, H, W))
        zv = zv / _forward_dot(pitch, y)[:, None]
        # nothing stands under the floor (or above an indoor ceiling) along its ray
        zv = np.minimum(zv, z_ground)
        if indoor:
            zv = np.minimum(zv, z_ceiling)
        depth = np.where(v, zv, depth)
    solid = ~sk
    depth = np.where(
        solid, np.clip(np.nan_to_num(depth, nan=far, posinf=far), cfg.min_depth, far), depth
    ).astype(np.float32)

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
