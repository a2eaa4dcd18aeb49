"""The layer split of the layered scene: cut the photo at depth discontinuities into ordered
layers (sky, background, foreground-1, foreground-2, ...), each with a soft alpha and the
region it must synthesise because nearer layers hide it.

A single depth surface stretched over the photo becomes a rubber sheet when the camera moves:
foreground silhouettes smear into what is behind them. Splitting at depth edges lets each layer
be lifted on its own and the region a foreground hides be filled on the layer behind it.

Method (``split_layers``):

1. **Depth edges** on disparity ``d = 1/z``. On any plane ``d`` is linear in image coordinates,
   so a jump between 4-neighbours is a depth edge only when it is large relative to the larger
   disparity (``edge_threshold``) *and* lies outside the range of the local disparity slopes on
   either side by ``edge_threshold`` too. The slopes are sampled one pixel further out (so a
   single mixed-depth pixel at a silhouette cannot explain the jump away). A steep but smooth
   surface -- the far, grazing ground -- has large relative jumps that match its slope; a crease
   (floor meets wall) or a kink (the far ground clamped to a plateau) lies between the slopes
   of its two sides; neither is an edge. The same test over spans of up to ``edge_span`` pixels
   finds edges blurred over a few pixels (the steepest pair of the span is cut). Ground-sky and
   ceiling-sky pairs are never edges (the ground runs to the horizon; its depth is merely
   clamped there), and slopes are never sampled across the sky boundary. Edge fragments of
   fewer than ``min_edge_px`` pixels are noise and dropped. ``edges`` holds the near-side pixel
   of every cut pair.
2. **Objects**: regions of the non-sky, non-ground (and non-ceiling) pixels, the 4-neighbour
   graph cut at depth edges, whose silhouette is mostly depth edges with the region in front.
   Plain connected components leak: one smooth path (a pixel gap in a silhouette, a patch of
   floor the labels missed, a bench leg touching the floor near the wall) merges a motorbike
   with the wall behind it. So the regions are found by sweeping a depth threshold ``t`` over
   ``max_levels`` steps (geometric, about ``edge_threshold / 2`` apart): the components of the
   candidates nearer than ``t`` are the possible objects, and what lies behind them is simply
   not there yet. A component's *score* is the share of its boundary that is a depth edge with
   it in front; edges where it is behind and smooth seams (a threshold cutting through a
   surface, or touching other candidates) count against it; smooth contact with the ground,
   contact with the sky and the image border are neutral -- an object standing on the ground
   connects smoothly to it at its bottom. Along a nested chain of components the score peaks
   when ``t`` lies just behind a whole object, so (as in MSER) a component is kept where its
   score beats its parent's and its qualifying children's, except where it merges two or more
   qualifying regions (a leak). Kept components may nest (a bike in front of a bench in front
   of the wall): an outer one keeps only what the inner ones don't, and leftovers joined
   smoothly to an inner object go to it. To stop one- or two-pixel gaps in a silhouette from
   leaking, the near-side edge pixels, morphologically closed, are kept out of the graph while
   components form and then join their smoothly connected neighbour of most similar disparity.
   Finally each object must pass the foreground test on its own: nearer across depth edges
   (sky excepted) for at least ``min_edge_fraction`` of its boundary, at least
   ``min_area_px`` pixels, and at most ``max_object_fraction`` of the non-sky pixels (not the
   dominant background).
3. **Foreground layers**: objects are grouped by depth into at most ``max_foreground_layers``
   layers (the area-weighted split of log depth with the least within-layer variance, found
   exactly by dynamic programming; layers whose depths differ by less than
   ``layer_depth_ratio`` are merged), then an object seen in front of another foreground object
   (more cut pairs nearer than farther, and at least ``layer_depth_ratio`` nearer) is pushed
   into a nearer layer than that object, in topological order; when the layers run out the
   conflict is counted in ``info``.
4. **Sky** = the SKY pixels; **background** = every other pixel not in a foreground layer.
   Layers are ordered far -> near: sky (if any), background, foreground-1, foreground-2, ...
5. **Soft alpha**: a layer's alpha is 1 on its pixels (and on its hidden pixels, which are
   opaque once filled) and ramps from 1 to 0 over ``feather_px`` beyond its silhouette where it
   is the near side of a depth edge against a farther layer, so silhouette splats get partial
   opacity (``spread_to_ramp`` carries depth/colour into the ramp). The farther layer stays
   opaque under the ramp. The skyline is soft only where vertical content meets the sky (the
   background's ramp over the sky); the horizon of the ground is not an edge. Pixels of the
   farther layer within ``halo_px`` of such a silhouette have mixed colours: they are removed
   from its ``visible`` and added to its ``hidden``, so no foreground halo stays behind.
   Silhouettes are depth edges only: a smooth seam between layers, or an object's contact with
   the ground, opens nothing when the camera moves.
6. **Hidden region** of a layer: the pixels of nearer layers within a margin of the
   silhouettes they form against this layer, wide enough for the parallax a sideways walk of
   ``walk_radius`` metres reveals: ``margin = ceil(f * walk_radius * (1/z_near - 1/z_far)) +
   halo_px``, per nearer object (the background counts as one when the layer is the sky), with
   ``z_near`` / ``z_far`` the medians of the depths on either side of that object's silhouette.
   Small objects thus get their whole area. A foreground layer is assumed to continue behind
   what hides it only within the convex hull of its objects; the background and the sky
   continue everywhere. The nearest layer hides nothing. The sky's hidden region (what nearer
   content hides of the sky near the skyline) is filled like any other; the outpaint step
   handles the dome beyond the photo.
7. **Occluded layers**: a depth edge with the same layer on both sides (an object the split
   left in the background because the image border cuts it or it rests against a wall, a
   self-occluding shape) opens too when the camera moves. For such edges of layer ``L`` an
   extra layer ``L-occluded`` (kind ``occluded``, right after ``L``) holds the surface behind
   their near side: its hidden region is the near side within the parallax margin of each edge
   fragment (as in 6., per 8-connected fragment), where the nearest far-side pixel of any cut is
   in ``L`` (above a box the sky's own hidden region covers it). It shows no photo pixel; the
   fill continues ``L``'s pixels away from those near sides (``SceneLayer.context``).
8. ``enabled=False``: one layer ``scene`` (kind ``background``) with every pixel visible.

Without labels (a user depth map), sky is the far plateau at ``>= sky_depth_ratio`` of the
largest depth when a clear gap separates it from the rest (a dome), ground is what lies within
``ground_tolerance`` of the fitted ground plane and faces up, everything else is vertical.
"""

from __future__ import annotations

import heapq
import math
import time
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage as ndi
from skimage.morphology import convex_hull_image

from .camera import Intrinsics
from .depth.base import CEILING, GROUND, SKY, VERTICAL
from .errors import InputError
from .ground import GroundFit, unproject

#: unknown pixels within this distance of a region to synthesise are synthesised with it (the
#: context a fill sees around a hidden region)
FILL_CONTEXT_PX = 16

_FOUR = ndi.generate_binary_structure(2, 1)
_EIGHT = ndi.generate_binary_structure(2, 2)


@dataclass(frozen=True)
class LayerConfig:
    """Settings of the layer split (depth edges, foreground objects, soft alpha, hidden regions)."""

    enabled: bool = True
    """Split the scene into layers; false keeps one layer ("scene") with every pixel."""
    edge_threshold: float = 0.12
    """Relative disparity jump between neighbours (and its disagreement with the local disparity
    slope), as a fraction of the larger disparity, that marks a depth edge."""
    edge_span: int = 2
    """Also detect depth edges blurred over up to this many pixels (1 = only sharp ones)."""
    min_edge_px: int = 4
    """Connected depth-edge fragments with fewer pixels than this are noise and dropped."""
    min_edge_fraction: float = 0.35
    """Fraction of a region's cut boundary (across depth edges, sky excepted) on which it must be
    the nearer side to be a foreground object."""
    min_area_px: int = 64
    """Smallest foreground object, in pixels."""
    max_object_fraction: float = 0.6
    """A region larger than this fraction of the non-sky pixels is background, never an object."""
    max_levels: int = 40
    """Depth thresholds swept to find objects enclosed by depth edges (more: finer, slower)."""
    max_foreground_layers: int = 2
    """At most this many foreground layers; objects are grouped into them by depth."""
    layer_depth_ratio: float = 1.25
    """Objects are put in separate foreground layers only where their depths differ by more than
    this factor (occlusion between objects always separates them when layers remain)."""
    feather_px: float = 1.5
    """Width in pixels of the soft alpha ramp beyond a silhouette against a farther layer."""
    halo_px: int = 2
    """Pixels of the farther layer this close to a silhouette (mixed colours) are resynthesised."""
    walk_radius: float = 1.0
    """Metres of sideways walk whose parallax the hidden region behind each object must cover."""
    sky_depth_ratio: float = 0.9
    """Without labels: pixels at least this fraction of the largest depth are sky, if they form a
    far plateau (a dome) clearly separated from the rest of the scene."""
    ground_tolerance: float = 0.03
    """Without labels: distance from the fitted ground plane, as a fraction of the depth, within
    which an up-facing pixel is ground."""
    ground_max_slope_deg: float = 35.0
    """Without labels: the surface normal of a ground pixel is at most this far from vertical."""

    def __post_init__(self) -> None:
        def check(ok: bool, name: str, what: str) -> None:
            if not ok:
                raise InputError(f"layers.{name} must be {what}, got {getattr(self, name)!r}")

        check(0 < self.edge_threshold < 1, "edge_threshold", "in (0, 1)")
        check(self.edge_span >= 1, "edge_span", ">= 1")
        check(self.min_edge_px >= 1, "min_edge_px", ">= 1")
        check(0 <= self.min_edge_fraction <= 1, "min_edge_fraction", "in [0, 1]")
        check(self.min_area_px >= 1, "min_area_px", ">= 1")
        check(0 < self.max_object_fraction <= 1, "max_object_fraction", "in (0, 1]")
        check(self.max_levels >= 1, "max_levels", ">= 1")
        check(self.max_foreground_layers >= 0, "max_foreground_layers", ">= 0")
        check(self.layer_depth_ratio >= 1, "layer_depth_ratio", ">= 1")
        check(self.feather_px >= 0, "feather_px", ">= 0")
        check(self.halo_px >= 0, "halo_px", ">= 0")
        check(self.walk_radius >= 0, "walk_radius", ">= 0")
        check(0 < self.sky_depth_ratio <= 1, "sky_depth_ratio", "in (0, 1]")
        check(self.ground_tolerance >= 0, "ground_tolerance", ">= 0")
        check(0 <= self.ground_max_slope_deg <= 90, "ground_max_slope_deg", "in [0, 90]")


@dataclass
class SceneLayer:
    """One layer of the layered scene.

    name:    "sky", "background", "foreground-1" (farther), "foreground-2" (nearer), ... or
             "scene" when layering is disabled
    kind:    "sky" | "background" | "foreground" | "occluded" (the surface behind depth edges
             inside another layer: "<base>-occluded", right after its base layer)
    visible: [H, W] bool, the pixels of the photo this layer shows
    alpha:   [H, W] float32 in [0, 1]: 1 on visible and hidden pixels, a ramp beyond the
             silhouette where the layer borders a farther layer across a depth edge, 0 elsewhere
    hidden:  [H, W] bool, the pixels this layer must synthesise (hidden by nearer layers within the
             parallax margin, plus the halo of mixed colours next to their silhouettes)
    context: [H, W] bool, the photo pixels a fill may continue into ``hidden`` (None: ``visible``);
             an "occluded" layer shows nothing (``visible`` empty) but continues its base layer
    """

    name: str
    kind: str
    visible: np.ndarray
    alpha: np.ndarray
    hidden: np.ndarray
    context: np.ndarray | None = None

    @property
    def known(self) -> np.ndarray:
        """[H, W] bool, the pixels whose photo colour and depth this layer continues."""
        return self.visible if self.context is None else self.context

    @property
    def ramp(self) -> np.ndarray:
        """[H, W] bool, the soft pixels beyond the silhouette (0 < alpha, not visible/hidden)."""
        return (self.alpha > 0) & ~self.visible & ~self.hidden


@dataclass
class LayerSplit:
    """layers: far -> near (sky if any, background, foreground-1, ...); edges: [H, W] bool
    near-side depth-edge pixels; owner: [H, W] int16 index into ``layers`` of the layer each photo
    pixel belongs to (before the halo is removed); info: facts for world.json; labels: the
    semantic labels the split used (the backend's or derived from geometry)."""

    layers: list[SceneLayer]
    edges: np.ndarray
    info: dict
    owner: np.ndarray = field(default=None)  # type: ignore[assignment]
    #: [H, W] uint8 semantic labels used (the backend's, or derived from geometry), or None
    labels: np.ndarray | None = None


# ----------------------------------------------------------------------------- helpers


def _validate(image, depth, labels, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray]:
    depth = np.asarray(depth)
    if depth.ndim != 2 or depth.size == 0:
        raise InputError(f"depth must be a non-empty [H, W] array, got shape {depth.shape}")
    H, W = depth.shape
    image = np.asarray(image)
    if image.shape != (H, W, 3):
        raise InputError(f"image must be [H, W, 3] = [{H}, {W}, 3], got shape {image.shape}")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (H, W):
            raise InputError(f"labels must be [H, W] = [{H}, {W}], got shape {labels.shape}")
    if (intr.width, intr.height) != (W, H):
        raise InputError(
            f"intrinsics are for {intr.width}x{intr.height} but the depth map is {W}x{H}"
        )
    d = depth.astype(np.float64)
    if not np.all(np.isfinite(d) & (d > 0)):
        raise InputError("depth must be finite and positive everywhere")
    return d, labels


def _derive_labels(
    depth: np.ndarray, intr: Intrinsics, ground: GroundFit, cfg: LayerConfig
) -> np.ndarray:
    """GROUND / VERTICAL / SKY from geometry alone (a user depth map has no labels)."""
    H, W = depth.shape
    labels = np.full((H, W), VERTICAL, np.uint8)
    P = unproject(depth.astype(np.float32), intr)
    dist = np.linalg.norm(P, axis=-1)  # a dome is at a constant distance, not z-depth
    rmax = float(dist.max())
    far = dist >= cfg.sky_depth_ratio * rmax
    rest = dist[~far]
    # a dome: a far plateau with a clear gap to everything else
    if far.any() and rest.size and float(rest.max()) <= 0.6 * rmax:
        labels[far] = SKY
    n = np.asarray(ground.normal, np.float64)
    n = (n / np.linalg.norm(n)).astype(np.float32)
    off = np.abs(P @ n + np.float32(ground.height))
    Ps = ndi.uniform_filter(P, size=(3, 3, 1), mode="nearest")
    du = np.gradient(Ps, axis=1) if W > 1 else np.zeros_like(Ps)
    dv = np.gradient(Ps, axis=0) if H > 1 else np.zeros_like(Ps)
    nrm = np.cross(du, dv)
    nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
    up = np.abs(nrm @ n) >= math.cos(math.radians(cfg.ground_max_slope_deg))
    ground_px = (off <= cfg.ground_tolerance * depth) & up & (labels != SKY)
    labels[ground_px] = GROUND
    return labels


def _pair_cuts(disp: np.ndarray, axis: int, thr: float, span: int, sky: np.ndarray) -> np.ndarray:
    """Depth-edge cuts between neighbours along ``axis``: [H, W-1] (axis 1) or [H-1, W] (axis 0).

    Pair i joins pixels i and i+1. A span of k pixels (i .. i+k) is an edge when its disparity
    change is large relative to the larger end disparity and lies outside the range of k times
    the slopes sampled one pixel beyond either end; the steepest pair of the span is cut. Slopes
    into or out of the sky (a dome, unrelated to the surface next to it) are not used.
    """
    D = np.moveaxis(disp, axis, -1).astype(np.float32)
    S = np.moveaxis(sky, axis, -1)
    n = D.shape[-1]
    lead = D.shape[:-1]
    if n < 2:
        return np.moveaxis(np.zeros((*lead, 0), bool), -1, axis)
    J = D[..., 1:] - D[..., :-1]  # [..., n-1]
    Js = np.where(S[..., 1:] != S[..., :-1], np.nan, J)  # slope samples
    cut = np.zeros(J.shape, bool)
    for k in range(1, max(1, span) + 1):
        if n - k < 1:
            break
        Dk = D[..., k:] - D[..., :-k]  # span starting at i, [..., n-k]
        mx = np.maximum(D[..., k:], D[..., :-k])
        nanpad = np.full((*lead, 2), np.nan, np.float32)
        Jp = np.concatenate([nanpad, Js, np.full((*lead, k + 2), np.nan, np.float32)], axis=-1)
        # the slope beyond one skipped pixel (a mixed-depth pixel at a silhouette must not
        # explain the jump), the adjacent one where that is unavailable
        back = Jp[..., 0 : n - k]  # J[i-2]
        back = np.where(np.isnan(back), Jp[..., 1 : n - k + 1], back)  # J[i-1]
        fwd = Jp[..., k + 3 : n + 3]  # J[i+k+1]
        fwd = np.where(np.isnan(fwd), Jp[..., k + 2 : n + 2], fwd)  # J[i+k]
        # distance of the change from the range the slopes on either side allow: a crease or
        # a kink (the far ground clamped to a plateau) falls inside it, an occlusion does not
        lo = np.fmin(back, fwd) * k
        hi = np.fmax(back, fwd) * k
        res = np.maximum(lo - Dk, Dk - hi).clip(min=0.0)
        res = np.where(np.isnan(res), np.abs(Dk), res)
        edge = (np.abs(Dk) > thr * mx) & (res > thr * mx)
        if k == 1:
            cut |= edge
            continue
        if not edge.any():
            continue
        steps = np.stack([np.abs(J[..., j : j + n - k]) for j in range(k)], axis=0)
        pick = np.argmax(steps, axis=0)
        for j in range(k):
            sel = edge & (pick == j)
            cut[..., j : j + n - k] |= sel
    return np.moveaxis(cut, -1, axis)


class _CutGraph:
    """The 4-neighbour graph of the candidate (non-sky, non-ground) pixels, cut at depth edges.

    All arrays are flat (index = y * W + x). ``barrier`` pixels (the near side of depth edges,
    morphologically closed so one- or two-pixel gaps in a silhouette do not leak) are left out
    while components are formed and then take the label of ``parent``, their smoothly joined
    neighbour of most similar disparity.
    """

    def __init__(self, H, W, cand, barrier, cut_h, cut_v, disp, depth, support, sky):
        self.H, self.W = H, W
        idx = np.arange(H * W).reshape(H, W)
        a = np.concatenate([idx[:, :-1].ravel(), idx[:-1, :].ravel()])
        b = np.concatenate([idx[:, 1:].ravel(), idx[1:, :].ravel()])
        cut = np.concatenate([cut_h.ravel(), cut_v.ravel()])
        self.a, self.b, self.cut = a, b, cut
        self.disp = disp.ravel()
        self.depth = depth.ravel()
        self.cand = cand.ravel()
        self.barrier = barrier.ravel()
        self.support = support.ravel()
        self.sky = sky.ravel()
        self.a_near = self.disp[a] > self.disp[b]
        ca, cb = self.cand[a], self.cand[b]
        # pairs that can be on a region's boundary: cuts with a candidate pixel and not the sky,
        # and smooth candidate-candidate pairs (a threshold or a barrier may separate those)
        sky_pair = self.sky[a] | self.sky[b]
        c_sel = np.flatnonzero(cut & (ca | cb) & ~sky_pair)
        zmin = np.minimum(self.depth[a[c_sel]], self.depth[b[c_sel]])
        srt = np.argsort(zmin, kind="stable")
        self.c_sel, self.c_zmin = c_sel[srt], zmin[srt]  # by the depth of their nearer pixel
        smooth = np.flatnonzero(~cut & ca & cb)
        self.s_a, self.s_b = a[smooth], b[smooth]
        za, zb = self.depth[self.s_a], self.depth[self.s_b]
        self.s_lo, self.s_hi = np.minimum(za, zb), np.maximum(za, zb)
        self.s_bar = self.barrier[self.s_a] | self.barrier[self.s_b]
        self.s_bar_idx = np.flatnonzero(self.s_bar)
        # parent of each barrier pixel: the uncut candidate neighbour of most similar disparity
        bar = np.flatnonzero(self.barrier)
        self.bar = bar
        best = np.full(bar.size, -1)
        cost = np.full(bar.size, np.inf)
        y, x = bar // W, bar % W
        for dy, dx in ((0, 1), (0, -1), (1, 0), (-1, 0)):
            ny, nx = y + dy, x + dx
            ok = (ny >= 0) & (ny < H) & (nx >= 0) & (nx < W)
            nb = np.where(ok, ny * W + nx, 0)
            if dx:
                pc = cut_h[y, np.minimum(x, x + dx).clip(0, max(W - 2, 0))] if W > 1 else ok
            else:
                pc = cut_v[np.minimum(y, y + dy).clip(0, max(H - 2, 0)), x] if H > 1 else ok
            # a core neighbour always beats a barrier one (chains must end in the core)
            c = np.abs(self.disp[bar] - self.disp[nb]) / np.maximum(self.disp[bar], 1e-12)
            c = c + np.where(self.barrier[nb], 10.0, 0.0)
            ok &= ~pc & self.cand[nb] & (c < cost)
            best = np.where(ok, nb, best)
            cost = np.where(ok, c, cost)
        self.parent = best
        self.bar_orphan = bar[best < 0]

    def label(self, mask: np.ndarray) -> tuple[np.ndarray, int]:
        """Components of the flat ``mask`` (a subset of the candidates): [H * W] int32, count."""
        core = mask & ~self.barrier
        lab, n = ndi.label(core.reshape(self.H, self.W), structure=_FOUR)
        lab = lab.ravel()
        bar, par = self.bar, self.parent
        todo = mask[bar] & (par >= 0)
        bar, par = bar[todo], par[todo]
        for _ in range(4):
            if not bar.size:
                break
            lp = lab[par]
            ok = (lp > 0) & mask[par]
            lab[bar[ok]] = lp[ok]
            bar, par = bar[~ok], par[~ok]
        if bar.size:  # barrier pixels with no way into the core: one label each
            rest = bar[mask[bar] & (lab[bar] == 0)]
            lab[rest] = n + 1 + np.arange(rest.size)
            n += rest.size
        rest = self.bar_orphan[mask[self.bar_orphan] & (lab[self.bar_orphan] == 0)]
        lab[rest] = n + 1 + np.arange(rest.size)
        n += rest.size
        return lab.astype(np.int32, copy=False), int(n)

    def stats(self, lab: np.ndarray, n: int, smooth: np.ndarray | None = None, t: float = np.inf):
        """Per label: (n_near, n_far, n_smooth) boundary pairs. Cut pairs count near or far
        (against anything but the sky); uncut pairs with candidate pixels of another label (or
        none) count as smooth; uncut contact with the ground, the sky or the border is neutral.
        ``smooth``: indices into the smooth pairs to consider (default: all); ``t``: only pixels
        nearer than ``t`` are labelled."""
        c = self.c_sel[: np.searchsorted(self.c_zmin, t)]  # pairs with a pixel nearer than t
        la, lb = lab[self.a[c]], lab[self.b[c]]
        an = self.a_near[c]
        d = la != lb
        la, lb, an = la[d], lb[d], an[d]
        mn = n + 1
        n_near = np.bincount(la[an & (la > 0)], minlength=mn)
        n_near += np.bincount(lb[~an & (lb > 0)], minlength=mn)
        n_far = np.bincount(la[~an & (la > 0)], minlength=mn)
        n_far += np.bincount(lb[an & (lb > 0)], minlength=mn)
        sa, sb = (self.s_a, self.s_b) if smooth is None else (self.s_a[smooth], self.s_b[smooth])
        ma, mb = lab[sa], lab[sb]
        d = ma != mb
        ma, mb = ma[d], mb[d]
        n_smooth = np.bincount(ma[ma > 0], minlength=mn) + np.bincount(mb[mb > 0], minlength=mn)
        return n_near, n_far, n_smooth


def _qualifies(cfg, area, n_near, n_far, n_smooth, nonsky: int):
    bound = n_near + n_far + n_smooth
    score = np.where(bound > 0, n_near / np.maximum(bound, 1), 0.0)
    ok = (
        (area >= cfg.min_area_px)
        & (score >= cfg.min_edge_fraction)
        & (n_near >= cfg.min_edge_px)
        & (area <= cfg.max_object_fraction * nonsky)
    )
    ok[0] = False
    return score, ok


def _find_objects(G: _CutGraph, cfg: LayerConfig, nonsky: int) -> tuple[np.ndarray, int, dict]:
    """Foreground objects as a flat [H * W] int32 map (0 = none) and their count.

    Sweeps a depth threshold t: the components of the candidates nearer than t (in the cut
    graph) are the possible objects. A threshold through a surface leaves a smooth seam, which
    counts against the region, so along a nested chain the score (share of the boundary that is
    a depth edge with the region in front) peaks when t lies just behind a whole object. A node
    is kept when its score beats its parent's and its qualifying children's, except where it
    merges two or more qualifying regions (a leak). Kept nodes may nest; an outer node keeps
    only what the inner ones don't, and its leftovers joined smoothly to an inner object go to it.
    """
    n_px = G.depth.size
    zc = G.depth[G.cand]
    if zc.size == 0:
        return np.zeros(n_px, np.int32), 0, {"levels": 0}
    zmin, zmax = float(zc.min()), float(zc.max())
    ratio = 1.0 + 0.5 * cfg.edge_threshold
    n_lv = int(min(cfg.max_levels, max(1, math.ceil(math.log(zmax / zmin) / math.log(ratio)))))
    ts = list(zmin * np.exp(np.linspace(0, math.log(zmax / zmin), n_lv + 1)[1:] * 1.0))
    ts[-1] = np.inf  # the last level holds every candidate
    # smooth pairs that some threshold separates (depth < t on one side only) or that touch a
    # barrier pixel: the only smooth pairs that can lie on a component's boundary
    ts_arr = np.asarray(ts)
    i_lo = np.searchsorted(ts_arr, G.s_lo, side="right")  # first level holding the near pixel
    i_hi = np.searchsorted(ts_arr, G.s_hi, side="right")  # ... and the far one
    straddle = np.flatnonzero((i_lo < i_hi) & ~G.s_bar)  # (barrier pairs are always in)
    st_lo, st_hi = i_lo[straddle], i_hi[straddle]
    levels: list[dict] = []  # per level: threshold, count, scores, qualifying nodes, parents
    for li, t in enumerate(ts):
        mask = G.cand & (G.depth < t)
        lab, n = G.label(mask)
        on = straddle[(st_lo <= li) & (st_hi > li)]
        sm = np.concatenate([on, G.s_bar_idx])
        n_near, n_far, n_smooth = G.stats(lab, n, sm, t)
        area = np.bincount(lab, minlength=n + 1)
        score, qual = _qualifies(cfg, area, n_near, n_far, n_smooth, nonsky)
        q = np.flatnonzero(qual)
        if levels:
            # parent of each qualifying node of the previous level: the component here holding
            # any of its core pixels (core components only grow with t)
            prev = levels[-1]
            r = prev["rep"]
            prev["parent"] = np.where(r >= 0, lab[np.maximum(r, 0)], 0)
        core = np.flatnonzero((lab > 0) & ~G.barrier)
        rep_all = np.full(n + 1, -1)
        rep_all[lab[core]] = core  # some core pixel of each label
        levels.append({"t": t, "n": n, "score": score, "qual": qual, "q": q, "rep": rep_all[q]})
    levels[-1]["parent"] = np.zeros(levels[-1]["q"].size, np.int64)
    selected: list[tuple[int, int]] = []
    n_merge = 0
    for i, lv in enumerate(levels):
        nxt = levels[i + 1] if i + 1 < len(levels) else None
        prv = levels[i - 1] if i > 0 else None
        child_best: dict[int, float] = {}
        child_count: dict[int, int] = {}
        if prv is not None:
            for c, p in zip(prv["q"].tolist(), prv["parent"].tolist(), strict=True):
                child_best[p] = max(child_best.get(p, -1.0), float(prv["score"][c]))
                child_count[p] = child_count.get(p, 0) + 1
        merges_next: set[int] = set()
        if nxt is not None:
            cnt: dict[int, int] = {}
            for p in lv["parent"].tolist():
                cnt[p] = cnt.get(p, 0) + 1
            merges_next = {p for p, k in cnt.items() if k >= 2}
        for node, p in zip(lv["q"].tolist(), lv["parent"].tolist(), strict=True):
            sc = float(lv["score"][node])
            if child_count.get(node, 0) >= 2:
                n_merge += 1
                continue  # merges two or more qualifying regions: keep them apart
            if sc < child_best.get(node, -1.0):
                continue
            if nxt is not None and p > 0 and nxt["qual"][p] and p not in merges_next:
                if sc <= float(nxt["score"][p]):
                    continue
            selected.append((i, node))
    # objects, inner (nearer thresholds) first; the nodes of one level are disjoint
    obj = np.zeros(n_px, np.int32)
    n_obj = 0
    by_level: dict[int, list[int]] = {}
    for i, node in selected:
        by_level.setdefault(i, []).append(node)
    for i in sorted(by_level):
        lv = levels[i]
        lv_lab, _ = G.label(G.cand & (G.depth < lv["t"]))  # the same labels as in the sweep
        keep = np.zeros(lv["n"] + 1, bool)
        keep[by_level[i]] = True
        px = keep[lv_lab] & (obj == 0)
        if not px.any():
            continue
        # split what the inner objects don't take; leftovers joined smoothly to one go to it
        lab, n = G.label(px)
        area = np.bincount(lab, minlength=n + 1)
        # smooth contact of each leftover component with the inner objects: the best one
        best_o = np.zeros(n + 1, np.int64)
        best_c = np.zeros(n + 1, np.int64)
        if n_obj:
            la, lb = lab[G.s_a], lab[G.s_b]
            oa, ob = obj[G.s_a], obj[G.s_b]
            sa = (la > 0) & (ob > 0)
            sb = (lb > 0) & (oa > 0)
            mine = np.concatenate([la[sa], lb[sb]]).astype(np.int64)
            other = np.concatenate([ob[sa], oa[sb]]).astype(np.int64)
            if mine.size:
                keys, cnts = np.unique(mine * (n_obj + 1) + other, return_counts=True)
                km, ko = keys // (n_obj + 1), keys % (n_obj + 1)
                order = np.lexsort((-cnts, km))  # per component, the largest contact first
                km, ko, kc = km[order], ko[order], cnts[order]
                first = np.r_[True, km[1:] != km[:-1]]
                best_o[km[first]] = ko[first]
                best_c[km[first]] = kc[first]
        n_near, n_far, n_smooth = G.stats(lab, n)
        bound = n_near + n_far + n_smooth
        join = (best_c > 0) & ((best_c >= 0.25 * bound) | (area < cfg.min_area_px))
        new = ~join & (area >= cfg.min_area_px)
        new[0] = False
        new_id = np.where(join, best_o, 0).astype(np.int32)
        new_id[new] = n_obj + 1 + np.arange(int(new.sum()), dtype=np.int32)
        n_obj += int(new.sum())
        obj = np.where(lab > 0, new_id[lab], obj)
    # the final test, on the objects as they now are
    if n_obj:
        n_near, n_far, n_smooth = G.stats(obj, n_obj)
        area = np.bincount(obj, minlength=n_obj + 1)
        _, ok = _qualifies(cfg, area, n_near, n_far, n_smooth, nonsky)
        keep = np.zeros(n_obj + 1, np.int32)
        ids = np.flatnonzero(ok)
        keep[ids] = np.arange(1, ids.size + 1)
        obj = keep[obj]
        n_obj = int(ids.size)
    info = {"levels": len(levels), "nodes_kept": len(selected), "merges_split": n_merge}
    return obj, n_obj, info


def _edt(mask: np.ndarray, radius: float | None = None) -> np.ndarray:
    """Euclidean distance of every pixel to the nearest True pixel of ``mask`` (inf if none).

    With ``radius``, only distances up to ``radius`` are exact (the rest may be inf): the
    transform runs on the bounding box of ``mask`` grown by ``radius``.
    """
    out = np.full(mask.shape, np.inf)
    if not mask.any():
        return out
    if radius is None:
        return ndi.distance_transform_edt(~mask)
    ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    r = int(math.ceil(radius)) + 1
    sl = (
        slice(max(0, ys[0] - r), ys[-1] + r + 1),
        slice(max(0, xs[0] - r), xs[-1] + r + 1),
    )
    out[sl] = ndi.distance_transform_edt(~mask[sl])
    return out


def _median_groups(keys: np.ndarray, values: np.ndarray, q: float = 50.0) -> dict[int, float]:
    """Median (or the ``q``-th percentile) of ``values`` per distinct key."""
    if keys.size == 0:
        return {}
    order = np.lexsort((values, keys))
    k, v = keys[order], values[order]
    starts = np.flatnonzero(np.r_[True, k[1:] != k[:-1]])
    ends = np.r_[starts[1:], len(k)]
    return {int(k[s]): float(np.percentile(v[s:e], q)) for s, e in zip(starts, ends, strict=True)}


def spread_to_ramp(values: np.ndarray, layer: SceneLayer) -> np.ndarray:
    """Copy ``values`` ([H, W] or [H, W, C]) into the layer's ramp pixels from the nearest visible
    pixel (a silhouette splat takes its object's depth and colour, not the background's)."""
    ramp = layer.ramp
    if not ramp.any() or not layer.visible.any():
        return values
    _, (iy, ix) = ndi.distance_transform_edt(~layer.visible, return_indices=True)
    out = values.copy()
    out[ramp] = values[iy[ramp], ix[ramp]]
    return out


# ----------------------------------------------------------------------------- the split


def _single_layer(H: int, W: int, info: dict) -> LayerSplit:
    layer = SceneLayer(
        "scene",
        "background",
        np.ones((H, W), bool),
        np.ones((H, W), np.float32),
        np.zeros((H, W), bool),
    )
    return LayerSplit([layer], np.zeros((H, W), bool), info, np.zeros((H, W), np.int16))


def _depth_edges(disp, sky, support, cfg: LayerConfig):
    """Cut pairs ([H, W-1] horizontal, [H-1, W] vertical) and the near-side edge pixels."""
    H, W = disp.shape
    cut_h = _pair_cuts(disp, 1, cfg.edge_threshold, cfg.edge_span, sky)
    cut_v = _pair_cuts(disp, 0, cfg.edge_threshold, cfg.edge_span, sky)
    # the ground (or ceiling) meeting the sky is a horizon, not an occlusion; the dome is smooth
    cut_h &= ~((support[:, :-1] | sky[:, :-1]) & sky[:, 1:])
    cut_h &= ~(sky[:, :-1] & support[:, 1:])
    cut_v &= ~((support[:-1, :] | sky[:-1, :]) & sky[1:, :])
    cut_v &= ~(sky[:-1, :] & support[1:, :])
    near_right = disp[:, 1:] > disp[:, :-1]  # the right pixel of the pair is the near one
    near_down = disp[1:, :] > disp[:-1, :]

    def near_pixels() -> np.ndarray:
        E = np.zeros((H, W), bool)
        E[:, 1:] |= cut_h & near_right
        E[:, :-1] |= cut_h & ~near_right
        E[1:, :] |= cut_v & near_down
        E[:-1, :] |= cut_v & ~near_down
        return E

    E = near_pixels()
    n_raw = int(E.sum())
    if E.any() and cfg.min_edge_px > 1:  # drop tiny fragments (noise in the depth map)
        frag, nfrag = ndi.label(E, structure=_EIGHT)
        keep = np.bincount(frag.ravel(), minlength=nfrag + 1) >= cfg.min_edge_px
        keep[0] = False
        keep_px = keep[frag]
        cut_h &= np.where(near_right, keep_px[:, 1:], keep_px[:, :-1])
        cut_v &= np.where(near_down, keep_px[1:, :], keep_px[:-1, :])
        E = near_pixels()
    return cut_h, cut_v, E, n_raw


def _group_by_depth(x: np.ndarray, w: np.ndarray, k: int, min_gap: float) -> np.ndarray:
    """Split sorted values ``x`` (weights ``w``) into at most ``k`` contiguous groups with the
    least weighted within-group variance (exact, by dynamic programming), then merge neighbouring
    groups whose weighted means are less than ``min_gap`` apart. Returns the group of each value,
    0-based, in the order of ``x``."""
    n = x.size
    k = max(1, min(k, n))
    cw = np.concatenate([[0.0], np.cumsum(w)])
    cx = np.concatenate([[0.0], np.cumsum(w * x)])
    cxx = np.concatenate([[0.0], np.cumsum(w * x * x)])

    best = np.full((k + 1, n + 1), np.inf)
    arg = np.zeros((k + 1, n + 1), int)
    best[0, 0] = 0.0
    for g in range(1, k + 1):
        for j in range(g, n + 1):
            i = np.arange(g - 1, j)  # the last group holds items i .. j-1
            sw = cw[j] - cw[i]
            sx = cx[j] - cx[i]
            cost = cxx[j] - cxx[i] - np.where(sw > 0, sx * sx / np.maximum(sw, 1e-300), 0.0)
            c = best[g - 1, i] + cost
            m = int(np.argmin(c))
            best[g, j], arg[g, j] = c[m], i[m]
    bounds = [n]
    for g in range(k, 0, -1):
        bounds.append(arg[g, bounds[-1]])
    bounds = bounds[::-1]  # 0 = b0 < b1 < ... < bk = n
    groups = [[bounds[g], bounds[g + 1]] for g in range(k)]

    def mean(gr) -> float:
        i, j = gr
        return float((cx[j] - cx[i]) / max(cw[j] - cw[i], 1e-12))

    merged = True
    while merged and len(groups) > 1:
        merged = False
        gaps = [abs(mean(groups[g + 1]) - mean(groups[g])) for g in range(len(groups) - 1)]
        g = int(np.argmin(gaps))
        if gaps[g] < min_gap:
            groups[g] = [groups[g][0], groups[g + 1][1]]
            del groups[g + 1]
            merged = True
    out = np.zeros(n, int)
    for g, (i, j) in enumerate(groups):
        out[i:j] = g
    return out


def _object_levels(
    G: _CutGraph, obj: np.ndarray, n_obj: int, cfg: LayerConfig
) -> tuple[dict[int, int], int]:
    """Foreground layer (1 = farthest) of each object id, and the occlusions left unresolved."""
    L = int(cfg.max_foreground_layers)
    if not n_obj or L < 1:
        return {}, 0
    ratio = cfg.layer_depth_ratio
    in_obj = obj > 0
    obj_depth = _median_groups(obj[in_obj], G.depth[in_obj])
    area = np.bincount(obj, minlength=n_obj + 1)
    order = sorted(obj_depth, key=lambda o: -obj_depth[o])  # far -> near
    logz = np.array([math.log(obj_depth[o]) for o in order])
    gid = _group_by_depth(-logz, area[order].astype(np.float64), L, math.log(cfg.layer_depth_ratio))
    group = {o: int(g) + 1 for o, g in zip(order, gid, strict=True)}
    # occlusion between objects: f is in front of b across (more) depth-edge pairs
    la, lb = obj[G.a], obj[G.b]
    both = (la > 0) & (lb > 0) & (la != lb) & G.cut
    an = G.a_near[both]
    front = np.where(an, la[both], lb[both])
    back = np.where(an, lb[both], la[both])
    occ: dict[tuple[int, int], int] = {}
    if front.size:
        keys, counts = np.unique(np.stack([front, back], 1), axis=0, return_counts=True)
        occ = {(int(f), int(b)): int(c) for (f, b), c in zip(keys, counts, strict=True)}
    behind: dict[int, list[int]] = {o: [] for o in order}
    for (f, b), c in occ.items():
        # objects at about the same depth may share a layer even where one hides the other
        if c >= 3 and c > occ.get((b, f), 0) and obj_depth[b] >= ratio * obj_depth[f]:
            behind[f].append(b)
    # topological order (Kahn), far objects first; a cycle releases the farthest object
    indeg = {o: len(behind[o]) for o in order}
    in_front: dict[int, list[int]] = {o: [] for o in order}
    for f, bs in behind.items():
        for b in bs:
            in_front[b].append(f)
    pos = {o: i for i, o in enumerate(order)}
    ready = [pos[o] for o in order if indeg[o] == 0]
    heapq.heapify(ready)
    done: set[int] = set()
    topo: list[int] = []
    while len(topo) < len(order):
        if not ready:  # a cycle: release the farthest object left
            ready = [next(pos[o] for o in order if o not in done)]
        o = order[heapq.heappop(ready)]
        if o in done:
            continue
        done.add(o)
        topo.append(o)
        for f in in_front[o]:
            indeg[f] -= 1
            if indeg[f] == 0 and f not in done:
                heapq.heappush(ready, pos[f])
    level: dict[int, int] = {}
    conflicts = 0
    for o in topo:
        need = max([level[b] + 1 for b in behind[o] if b in level], default=1)
        lv = max(group[o], need)
        if lv > L:
            conflicts += 1
            lv = L
        level[o] = lv
    remap = {lv: i + 1 for i, lv in enumerate(sorted(set(level.values())))}
    return {o: remap[lv] for o, lv in level.items()}, conflicts


def _layer_name(k: int) -> str:
    """Name of the layer of order ``k`` (0 sky, 1 background, 1 + i foreground-i)."""
    return "sky" if k == 0 else ("background" if k == 1 else f"foreground-{k - 1}")


def _occluded_layer(
    k: int,
    base: SceneLayer,
    G: _CutGraph,
    order_map: np.ndarray,
    depth: np.ndarray,
    f_px: float,
    cfg: LayerConfig,
    extent=None,
) -> tuple[SceneLayer, dict] | None:
    """The surface behind the depth edges inside layer ``k`` (both sides of the cut in it).

    Its hidden region is the near side of those edges within the parallax margin of each edge
    fragment (``f * walk_radius * (1/z_near - 1/z_far)`` with the fragment's median near depth
    and 90th-percentile far depth, plus ``halo_px``), where a pixel is on the near side when it
    is nearer than the far side's nearest edge pixel. It shows nothing of the photo: its
    ``visible`` pixels are the context a fill continues (the layer's pixels minus the near side
    around those edges), its alpha is 1 on the hidden region only. ``extent(p_far)``, if given,
    bounds the hidden region given the far-side pixels of the cuts (flat indices).
    """
    H, W = order_map.shape
    flat = order_map.ravel()
    inner = G.cut & (flat[G.a] == k) & (flat[G.b] == k)
    if not inner.any():
        return None
    p_near = np.where(G.a_near, G.a, G.b)[inner]
    p_far = np.where(G.a_near, G.b, G.a)[inner]
    near_px = np.zeros(H * W, bool)
    near_px[p_near] = True
    near_px = near_px.reshape(H, W)
    # the far side of every depth edge whose near side is in this layer, whatever layer is
    # behind: where the nearest one is another layer (the sky above a box's top), that layer's
    # own hidden region already covers the near side
    out = G.cut & ((flat[G.a] == k) & G.a_near | (flat[G.b] == k) & ~G.a_near)
    far_all = np.where(G.a_near, G.b, G.a)[out]
    far_px = np.zeros(H * W, bool)
    far_px[far_all] = True
    far_px = far_px.reshape(H, W)
    frag, n_frag = ndi.label(near_px, structure=_EIGHT)
    fr = frag.ravel()[p_near]
    zn = _median_groups(fr, G.depth[p_near])
    zf = _median_groups(fr, G.depth[p_far], q=90.0)
    lut = np.zeros(n_frag + 1)
    for f in range(1, n_frag + 1):
        if f in zn:
            inv = max(0.0, 1.0 / zn[f] - 1.0 / zf[f])
            lut[f] = math.ceil(f_px * cfg.walk_radius * inv) + cfg.halo_px
    reach = float(lut.max()) + FILL_CONTEXT_PX + 2
    dist, (iy, ix) = ndi.distance_transform_edt(~near_px, return_indices=True)
    margin = lut[frag[iy, ix]]
    _, (fy, fx) = ndi.distance_transform_edt(~far_px, return_indices=True)
    near_side = (
        (order_map >= k)
        & (order_map[fy, fx] == k)
        & (depth * (1.0 + 0.5 * cfg.edge_threshold) < depth[fy, fx])
    )
    hidden = near_side & (dist <= margin)
    if extent is not None:  # where the layer may continue (a foreground object's hull)
        hidden &= extent(p_far)
    if not hidden.any():
        return None
    context = base.visible & ~(
        near_side & (dist <= np.minimum(margin + FILL_CONTEXT_PX + 2, reach))
    )
    alpha = hidden.astype(np.float32)
    facts = {
        "pixels": 0,
        "visible": 0,
        "hidden": int(hidden.sum()),
        "soft": 0,
        "median_depth": None,
        "objects": 0,
        "edge_fragments": int(n_frag),
        "margins_px": {"max": int(lut.max())},
    }
    return (
        SceneLayer(
            f"{base.name}-occluded", "occluded", np.zeros_like(hidden), alpha, hidden, context
        ),
        facts,
    )


def split_layers(
    image: np.ndarray,
    depth: np.ndarray,
    labels: np.ndarray | None,
    intrinsics: Intrinsics,
    ground: GroundFit,
    config: LayerConfig,
) -> LayerSplit:
    """Split a photo into far -> near layers at depth discontinuities (see the module docstring).

    image: [H, W, 3] float32; depth: [H, W] metric z-depth (finite, > 0); labels: [H, W] uint8
    GROUND / VERTICAL / SKY / CEILING, or None to derive them from the depth and ``ground``.
    Raises InputError on inputs of the wrong shape or non-positive depth.
    """
    t0 = time.perf_counter()
    cfg = config
    depth64, labels = _validate(image, depth, labels, intrinsics)
    H, W = depth64.shape
    if not cfg.enabled:
        return _single_layer(H, W, {"enabled": False, "layers": 1})

    labels_source = "backend" if labels is not None else "geometry"
    if labels is None:
        labels = _derive_labels(depth64, intrinsics, ground, cfg)
    labels = labels.astype(np.uint8)
    sky = labels == SKY
    support = (labels == GROUND) | (labels == CEILING)
    cand = ~sky & ~support
    disp = 1.0 / depth64

    # 1. depth edges
    cut_h, cut_v, E, n_raw = _depth_edges(disp, sky, support, cfg)
    # 2. objects: regions of the cut graph enclosed by depth edges
    barrier = (ndi.binary_closing(E, structure=_EIGHT) | E) & cand
    G = _CutGraph(H, W, cand, barrier, cut_h, cut_v, disp, depth64, support, sky)
    nonsky = int((~sky).sum())
    obj, n_obj, sweep_info = _find_objects(G, cfg, nonsky)
    # 3. foreground layers
    level, conflicts = _object_levels(G, obj, n_obj, cfg)
    n_fg = max(level.values(), default=0)
    comp = obj.reshape(H, W)
    lvl_of = np.zeros(n_obj + 1, np.int16)
    for o, lv in level.items():
        lvl_of[o] = lv
    # order: 0 sky, 1 background, 1 + k foreground-k (objects left out of every layer: background)
    order_map = np.where(sky, 0, 1 + lvl_of[comp]).astype(np.int16)
    # unit: the object for foreground pixels, -1 for the background, 0 for the sky
    unit = np.where(order_map >= 2, comp, np.where(order_map == 1, -1, 0))

    # silhouettes: depth-edge pairs between layers (a smooth seam, or an object's contact with
    # the ground, is not one: nothing opens there when the camera moves)
    flat_order = order_map.ravel()
    flat_unit = unit.ravel()
    oa, ob = flat_order[G.a], flat_order[G.b]
    sil = (oa != ob) & G.cut
    a_front = oa > ob
    p_near = np.where(a_front, G.a, G.b)[sil]
    p_far = np.where(a_front, G.b, G.a)[sil]
    near_lv, far_lv = flat_order[p_near], flat_order[p_far]
    # per (nearer unit, farther layer): median depths either side of that silhouette
    n_lv = 3 + n_fg
    keys = (flat_unit[p_near].astype(np.int64) + 1) * n_lv + far_lv
    zn = _median_groups(keys, G.depth[p_near])
    # the far side's 90th percentile: an object standing on the floor borders the floor right
    # behind it and the wall far behind; a walk reveals the floor *and* the wall
    zf = _median_groups(keys, G.depth[p_far], q=90.0)
    f_px = max(intrinsics.fx, intrinsics.fy)
    boxes = ndi.find_objects(comp) if n_obj else []

    def hull_of(objects: np.ndarray) -> np.ndarray:
        out = np.zeros((H, W), bool)
        for o in objects.tolist():
            if o <= 0 or boxes[o - 1] is None:
                continue
            sl = boxes[o - 1]
            m = comp[sl] == o
            try:
                out[sl] |= convex_hull_image(m)
            except (ValueError, RuntimeError):  # degenerate (a line): the object itself
                out[sl] |= m
        return out

    def flat_mask(idx: np.ndarray) -> np.ndarray:
        m = np.zeros(H * W, bool)
        m[idx] = True
        return m.reshape(H, W)

    layers: list[SceneLayer] = []
    owner = np.zeros((H, W), np.int16)
    layer_info = []
    for k in range(0 if sky.any() else 1, 2 + n_fg):
        mine = order_map == k
        # 5. soft alpha: a ramp beyond this layer's silhouettes against farther layers
        alpha = np.zeros((H, W), np.float32)
        src = flat_mask(p_near[near_lv == k])
        if src.any() and cfg.feather_px > 0:
            d = _edt(src, cfg.feather_px + 1.0)
            ramp = np.clip(1.0 - (d - 0.5) / cfg.feather_px, 0.0, 1.0)
            alpha = np.where(order_map < k, ramp, 0.0).astype(np.float32)
        # halo: this layer's mixed-colour pixels next to nearer layers' silhouettes
        at_k = far_lv == k
        halo = np.zeros((H, W), bool)
        if cfg.halo_px > 0 and at_k.any():
            halo = mine & (_edt(flat_mask(p_near[at_k]), cfg.halo_px) <= cfg.halo_px)
        hidden = halo.copy()
        # 6. hidden region: nearer pixels within the parallax margin of the silhouettes
        margins: dict[int, int] = {}
        if at_k.any():
            nearer = order_map > k
            lut = np.full(n_obj + 2, -1.0)  # margin per unit + 1
            for u in np.unique(flat_unit[p_near[at_k]]).tolist():
                key = (u + 1) * n_lv + k
                inv = max(0.0, 1.0 / zn[key] - 1.0 / zf[key])
                m = math.ceil(f_px * cfg.walk_radius * inv) + cfg.halo_px
                margins[u] = m
                lut[u + 1] = m
            # nearer units with no silhouette against this layer take the largest margin
            lut[lut < 0] = max(margins.values())
            margin_map = np.where(nearer, lut[unit + 1], -1.0)
            rim = flat_mask(p_far[at_k])
            reach = nearer & (_edt(rim, float(margin_map.max())) <= margin_map)
            if k >= 2:
                # a foreground object continues behind what hides it only within its convex
                # hull (the background and the sky continue everywhere)
                reach &= hull_of(np.unique(comp.ravel()[p_far[at_k]]))
            hidden |= reach
        alpha[mine | hidden] = 1.0
        visible = mine & ~halo
        kind = "sky" if k == 0 else ("background" if k == 1 else "foreground")
        name = _layer_name(k)
        owner[mine] = len(layers)
        layers.append(SceneLayer(name, kind, visible, alpha, hidden))
        zs = depth64[mine]
        layer_info.append(
            {
                "name": name,
                "kind": kind,
                "pixels": int(mine.sum()),
                "visible": int(visible.sum()),
                "hidden": int(hidden.sum()),
                "soft": int(((alpha > 0) & (alpha < 1)).sum()),
                "median_depth": round(float(np.median(zs)), 4) if zs.size else None,
                "objects": sum(1 for lv in level.values() if lv + 1 == k),
                "margins_px": {
                    ("background" if u < 0 else f"object-{u}"): int(m) for u, m in margins.items()
                },
            }
        )

    # 7. occluded layers: depth edges inside one layer (an object the split left in the
    # background, e.g. one cut by the image border or resting against a wall) still open when
    # the camera moves; the surface behind their near side goes on an extra layer
    for k in range(2 + n_fg - 1, 0, -1):  # nearest first: insertions keep lower indices
        pos = next((i for i, L in enumerate(layers) if L.name == _layer_name(k)), None)
        extent = None
        if k >= 2:  # a foreground layer continues only within the hull of its objects

            def extent(p_far: np.ndarray) -> np.ndarray:
                return hull_of(np.unique(comp.ravel()[p_far]))

        occ = (
            None
            if pos is None
            else _occluded_layer(k, layers[pos], G, order_map, depth64, f_px, cfg, extent)
        )
        if occ is None:
            continue
        layer, facts = occ
        layers.insert(pos + 1, layer)
        layer_info.insert(pos + 1, {"name": layer.name, "kind": layer.kind, **facts})
        owner[owner > pos] += 1

    info = {
        "enabled": True,
        "labels_source": labels_source,
        "layers": len(layers),
        "foreground_layers": n_fg,
        "foreground_objects": len(level),
        "edge_pixels": int(E.sum()),
        "edge_pixels_raw": n_raw,
        **sweep_info,
        "occlusion_conflicts": conflicts,
        "edge_threshold": cfg.edge_threshold,
        "min_edge_fraction": cfg.min_edge_fraction,
        "per_layer": layer_info,
        "seconds": round(time.perf_counter() - t0, 4),
    }
    return LayerSplit(layers, E, info, owner, labels)
