"""The layered scene: layer split -> hidden-region fill -> outpaint -> per-layer lifting.

``compose_layers`` turns the photo, its metric depth and the layer split into the layers of the
world bundle (far to near, then the surroundings); ``lift_layers`` lifts each with its own alpha
and layer id. With ``layers.enabled = false`` and ``surround.enabled = false`` this is the
single-layer skeleton: one "scene" layer, the photo's depth surface.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .camera import Intrinsics
from .config import BuildConfig
from .depth.base import SKY
from .fill import GroundPlane
from .fill.margin import blend_edge_colours, continue_labels, margin_depth
from .ground import GroundFit
from .layers import FILL_CONTEXT_PX, LayerSplit
from .lift import lift
from .splats import Splats
from .surround import Panorama, lift_sky, lift_surround


@dataclass
class BundleLayer:
    """One layer of the world bundle (``layers/<id>/``).

    projection "perspective": an image in the source camera's intrinsics, depth = camera z;
    projection "equirectangular": a full-sphere image in the world frame, depth = distance along
    the ray (surround/geometry.py). rgb [h, w, 3]; depth [h, w] (NaN = no surface); alpha [h, w];
    labels [h, w] uint8 or None.
    """

    name: str
    kind: str  # sky | background | foreground | surroundings | scene
    projection: str
    rgb: np.ndarray
    depth: np.ndarray
    alpha: np.ndarray
    labels: np.ndarray | None = None
    intrinsics: Intrinsics | None = None  # perspective layers: the layer's own canvas


#: the margin's colour fades from the surface's colour at the frame's edge to the synthesised
#: texture over this many canvas margins (``fill.margin.blend_edge_colours``)
EDGE_BLEND = 3.0


def _extend_depth(depth: np.ndarray, source: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Copy the nearest ``source`` pixel's depth into ``where`` (silhouette ramps)."""
    if not where.any() or not source.any():
        return depth
    _, (iy, ix) = ndimage.distance_transform_edt(~source, return_indices=True)
    out = depth.copy()
    out[where] = depth[iy[where], ix[where]]
    return out


def _frame_edge_reach(nearer: np.ndarray, depth: np.ndarray, f_walk: float, z_far: float):
    """[H, W] bool: the ``nearer`` pixels a sideways walk uncovers behind objects the frame
    cuts: within ``ceil(f_walk * (1/z - 1/z_far)) + 2`` px of the frame's edge where a nearer
    pixel touches it, ``z`` the depth of the nearest such edge pixel (``f_walk`` = focal length
    in pixels times the walk radius in metres, as the split's parallax margins)."""
    edge = np.zeros_like(nearer)
    edge[0], edge[-1] = nearer[0], nearer[-1]
    edge[:, 0] |= nearer[:, 0]
    edge[:, -1] |= nearer[:, -1]
    if not edge.any():
        return edge
    dist, (iy, ix) = ndimage.distance_transform_edt(~edge, return_indices=True)
    z = depth[iy, ix].astype(np.float64)
    margin = np.ceil(f_walk * np.maximum(0.0, 1.0 / z - 1.0 / z_far)) + 2
    return nearer & (dist <= margin)


def _pad(a: np.ndarray, m: int, value) -> np.ndarray:
    widths = [(m, m), (m, m)] + [(0, 0)] * (a.ndim - 2)
    return np.pad(a, widths, constant_values=value)


def compose_layers(
    image: np.ndarray,
    depth: np.ndarray,
    labels: np.ndarray | None,
    intr: Intrinsics,
    ground: GroundFit,
    split: LayerSplit,
    fill,
    *,
    margin_px: int = 0,
    sky_distance: float = 200.0,
    walk_radius: float = 1.0,
    seed: int = 0,
    margin_fade: bool = True,
) -> tuple[list[BundleLayer], dict]:
    """Per layer of ``split``: its visible pixels, plus colour and depth synthesised (by
    ``fill``) where nearer layers hide it. The background layer's canvas is extended by
    ``margin_px`` on every side (outpainted: a sideways step sees past the photo's frame), which
    shifts its principal point (the sky's is not: beyond the frame the sky is the surround's
    dome).
    ``fill/margin.py`` says how the surfaces at the frame's edge are continued: never as a copy
    of a nearer object touching the edge (the background behind it continues). With
    ``margin_fade`` the margin's opacity falls to 0 toward the canvas's edge (``_margin_fade``):
    the surround lies behind it, so the canvas ends in a blend, not a rectangle's edge. Returns
    (perspective layers far to near, facts)."""
    out: list[BundleLayer] = []
    facts: dict = {}
    plane = GroundPlane(np.asarray(ground.normal, float), float(ground.height))
    H, W = depth.shape
    if labels is None:  # a user depth map: use the labels the split derived from geometry
        labels = split.labels
    # the labels behind the nearer objects: those of the background and the sky, continued past
    # the objects and beyond the frame (fill/margin.py); they say where the background goes on
    # and where the sky does
    base = next((L for L in split.layers if L.kind in ("background", "scene")), None)
    behind = None
    if labels is not None and base is not None:
        behind = continue_labels(
            _pad(labels, margin_px, 0), _pad(base.known | (labels == SKY), margin_px, False)
        )
    f_px = max(intr.fx, intr.fy)
    for k, layer in enumerate(split.layers):
        # (the sky beyond the frame is the surround's dome, joined to the photo's sky in the
        # gradient domain: a sky canvas continued here by the nearest sky colours showed as a
        # lighter rectangle in front of it)
        m = margin_px if layer.kind in ("background", "scene") else 0
        L_intr = intr.with_size(W + 2 * m, H + 2 * m) if m else intr
        vis = _pad(layer.known, m, False)
        hid = _pad(layer.hidden, m, False)
        alpha_in = _pad(layer.alpha, m, 0.0)
        img = _pad(image, m, 0.0)
        lab = _pad(labels, m, 0) if labels is not None else None
        d0 = _pad(depth, m, np.nan)
        border = np.zeros(vis.shape, bool)
        margin = None
        cut = None  # the labels behind, on this layer's canvas
        edge = np.zeros(vis.shape, bool)
        if behind is not None:
            o = margin_px - m
            cut = behind[o : o + H + 2 * m, o : o + W + 2 * m]
        if cut is not None and layer.kind in ("background", "sky"):
            # what a step sideways sees behind a nearer object the frame cuts: the frame's edge
            # is its silhouette there (the split found none), with the parallax margin of a walk
            nearer = np.zeros((H, W), bool)
            for L in split.layers[k + 1 :]:
                nearer |= L.visible
            zs = depth[layer.visible] if layer.kind != "sky" else np.array([sky_distance])
            z_far = float(np.percentile(zs, 90)) if zs.size else sky_distance
            edge = _pad(_frame_edge_reach(nearer, depth, f_px * walk_radius, z_far), m, False)
            edge &= (cut == SKY) if layer.kind == "sky" else (cut != SKY)
            hid |= edge
        if m:
            border[:] = True
            border[m:-m, m:-m] = False
            if cut is not None:
                # the surfaces at the frame's edge go on beyond it (fill/margin.py), never as a
                # copy of an object touching the edge; beside the frame and behind an object
                # against the sky, the sky is the sky layer's
                border &= cut != SKY
                hid &= cut != SKY
                margin = margin_depth(
                    np.where(vis, d0, np.nan),
                    cut,
                    vis,
                    (slice(m, m + H), slice(m, m + W)),
                    border | edge,
                    L_intr,
                    plane,
                    band_px=max(2 * m, 16),
                    seed=seed,
                )
                lab = np.where(border | edge, margin[1], lab).astype(lab.dtype)
        todo = hid | border
        shown = _pad(layer.visible, m, False)
        ramp = (alpha_in > 0) & ~vis & ~todo
        rgb = img.copy()
        d = np.where(vis, d0, np.nan).astype(np.float32)
        if todo.any() and layer.kind != "sky":
            # everything this layer does not show is unknown to the fill; keep its result only
            # where the layer needs it
            # only the neighbourhood of what is needed is solved for (far-away unknown pixels,
            # e.g. the sky above a background layer, carry no depth and act as boundaries)
            near = ndimage.binary_dilation(todo, iterations=FILL_CONTEXT_PX)
            mask = ~vis & near
            # pixels outside the mask that this layer does not show (a nearer object's interior,
            # the sky above) must not lend their colours or labels to the fill: they take those
            # of the nearest pixel the layer shows
            src_img, src_lab = img, lab
            foreign = ~vis & ~mask
            if foreign.any() and vis.any():
                _, (iy, ix) = ndimage.distance_transform_edt(~vis, return_indices=True)
                src_img = np.where(foreign[..., None], img[iy, ix], img)
                if lab is not None:
                    src_lab = np.where(foreign, lab[iy, ix], lab)
            res = fill.fill(
                src_img,
                mask,
                depth=d,
                labels=src_lab,
                intrinsics=L_intr,
                ground=plane,
                seed=seed,
                sources=vis,  # never the smeared stand-ins of what the layer does not show
                hole_labels=None if cut is None else np.where(border | edge, lab, 255),
            )
            rgb[todo] = res.rgb[todo]
            d[todo] = res.depth[todo]
            if margin is not None:
                d[border | edge] = margin[0][border | edge]
                rgb = blend_edge_colours(rgb, img, lab, vis, border, scale=EDGE_BLEND * m)
            facts[layer.name] = dict(res.info)
        elif todo.any() and vis.any():
            # sky behind a silhouette: the dome, coloured like the nearest visible sky
            _, (iy, ix) = ndimage.distance_transform_edt(~vis, return_indices=True)
            rgb[todo] = img[iy[todo], ix[todo]]
            ty, tx = np.nonzero(todo)
            ray = np.stack(
                [(tx - L_intr.cx) / L_intr.fx, (ty - L_intr.cy) / L_intr.fy, np.ones(len(tx))], -1
            )
            d[todo] = sky_distance / np.linalg.norm(ray, axis=-1)
        d = _extend_depth(d, vis, ramp)
        alpha = np.where(todo, 1.0, alpha_in).astype(np.float32)
        if m and margin_fade:
            alpha *= _margin_fade(H, W, m)
        # (an occluded layer shows nothing of the photo: only what it synthesised is lifted)
        keep = (shown | todo | ramp) & np.isfinite(d)
        d[~keep] = np.nan
        alpha[~keep] = 0.0
        out.append(BundleLayer(layer.name, layer.kind, "perspective", rgb, d, alpha, lab, L_intr))
    return out, facts


def _margin_fade(H: int, W: int, m: int, start: float = 0.25) -> np.ndarray:
    """[H + 2m, W + 2m] opacity factor of a canvas extended by ``m`` px around an H x W frame:
    1 inside the frame and up to ``start`` of the margin beyond it, then a smoothstep down to 0
    at the canvas's edge (px beyond the frame: the larger of the row and column overshoot)."""
    yy = np.arange(H + 2 * m, dtype=np.float32)
    xx = np.arange(W + 2 * m, dtype=np.float32)
    oy = np.maximum(np.maximum(m - yy, yy - (m + H - 1)), 0.0)
    ox = np.maximum(np.maximum(m - xx, xx - (m + W - 1)), 0.0)
    beyond = np.maximum(oy[:, None], ox[None, :]) / m
    t = np.clip((beyond - start) / (1.0 - start), 0.0, 1.0)
    return (1.0 - t * t * (3.0 - 2.0 * t)).astype(np.float32)


def surroundings_layers(pano: Panorama, sky_distance: float) -> list[BundleLayer]:
    """The equirectangular layers of the panorama: the sky dome (outdoors) and the
    surroundings (ground, wall ring, ceiling beyond the photo)."""
    layers = []
    if pano.sky_rgb is not None:
        Hs, Ws = pano.sky_rgb.shape[:2]
        layers.append(
            BundleLayer(
                "sky-dome",
                "sky",
                "equirectangular",
                pano.sky_rgb,
                np.full((Hs, Ws), sky_distance, np.float32),
                np.ones((Hs, Ws), np.float32),
                np.full((Hs, Ws), SKY, np.uint8),
            )
        )
    layers.append(
        BundleLayer(
            "surroundings",
            "surroundings",
            "equirectangular",
            pano.rgb,
            np.where(pano.lift, pano.distance, np.nan).astype(np.float32),
            pano.lift.astype(np.float32),
            pano.labels,
        )
    )
    return layers


def lift_layers(
    layers: list[BundleLayer],
    intr: Intrinsics,
    world_from_camera: np.ndarray,
    config: BuildConfig,
    pano: Panorama | None,
) -> Splats:
    """Lift every bundle layer with its own alpha; layer id = index in ``layers``."""
    parts = []
    for k, L in enumerate(layers):
        if L.projection == "perspective":
            lcfg, jitter = config.lift, 0.0
            if L.kind == "sky":  # the photo's sky, seen magnified, must not show its lattice
                fs = max(lcfg.footprint_scale, config.surround.footprint_scale)
                lcfg = dataclasses.replace(lcfg, footprint_scale=fs)
                jitter = config.surround.sky_jitter
            parts.append(
                lift(
                    L.rgb,
                    L.depth,
                    L.intrinsics or intr,
                    lcfg,
                    alpha=L.alpha,
                    layer_id=k,
                    jitter=jitter,
                    seed=config.seed,
                )  # fmt: skip
            )
        elif L.kind == "sky":
            radius = config.depth.sky_distance * config.surround.sky_radius_factor
            parts.append(
                lift_sky(
                    L.rgb,
                    world_from_camera,
                    radius,
                    k,
                    config.surround.footprint_scale,
                    seed=config.seed,
                    jitter=config.surround.sky_jitter,
                )  # fmt: skip
            )
        else:
            assert pano is not None
            parts.append(lift_surround(pano, world_from_camera, config.surround, k))
    return Splats.cat(parts)
