"""The layered scene: layer split -> hidden-region fill -> outpaint -> per-layer lifting.

``compose_layers`` turns the photo, its metric depth and the layer split into the layers of the
world bundle (far to near, then the surroundings); ``lift_layers`` lifts each with its own alpha
and layer id. With ``layers.enabled = false`` and ``surround.enabled = false`` this is the
single-layer skeleton: one "scene" layer, the photo's depth surface.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .camera import Intrinsics
from .config import BuildConfig
from .depth.base import SKY
from .fill import GroundPlane
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


def _extend_depth(depth: np.ndarray, source: np.ndarray, where: np.ndarray) -> np.ndarray:
    """Copy the nearest ``source`` pixel's depth into ``where`` (silhouette ramps)."""
    if not where.any() or not source.any():
        return depth
    _, (iy, ix) = ndimage.distance_transform_edt(~source, return_indices=True)
    out = depth.copy()
    out[where] = depth[iy[where], ix[where]]
    return out


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
    seed: int = 0,
) -> tuple[list[BundleLayer], dict]:
    """Per layer of ``split``: its visible pixels, plus colour and depth synthesised (by
    ``fill``) where nearer layers hide it. The background layer's canvas is extended by
    ``margin_px`` on every side (outpainted: a sideways step sees past the photo's frame), which
    shifts its principal point. Returns (perspective layers far to near, facts)."""
    out: list[BundleLayer] = []
    facts: dict = {}
    plane = GroundPlane(np.asarray(ground.normal, float), float(ground.height))
    H, W = depth.shape
    if labels is None:  # a user depth map: use the labels the split derived from geometry
        labels = split.labels
    for layer in split.layers:
        m = margin_px if layer.kind in ("background", "scene") else 0
        L_intr = intr.with_size(W + 2 * m, H + 2 * m) if m else intr
        vis = _pad(layer.known, m, False)
        hid = _pad(layer.hidden, m, False)
        alpha_in = _pad(layer.alpha, m, 0.0)
        img = _pad(image, m, 0.0)
        lab = _pad(labels, m, 0) if labels is not None else None
        d0 = _pad(depth, m, np.nan)
        border = np.zeros(vis.shape, bool)
        if m:
            border[:] = True
            border[m:-m, m:-m] = False
            if labels is not None:
                # continue the content beside the frame, not into the sky above it
                yy, xx = np.nonzero(border)
                near = labels[np.clip(yy - m, 0, H - 1), np.clip(xx - m, 0, W - 1)]
                border[yy[near == SKY], xx[near == SKY]] = False
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
            )
            rgb[todo] = res.rgb[todo]
            d[todo] = res.depth[todo]
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
        # (an occluded layer shows nothing of the photo: only what it synthesised is lifted)
        keep = (shown | todo | ramp) & np.isfinite(d)
        d[~keep] = np.nan
        alpha[~keep] = 0.0
        out.append(BundleLayer(layer.name, layer.kind, "perspective", rgb, d, alpha, lab, L_intr))
    return out, facts


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
            parts.append(
                lift(L.rgb, L.depth, L.intrinsics or intr, config.lift, alpha=L.alpha, layer_id=k)
            )
        elif L.kind == "sky":
            radius = config.depth.sky_distance * config.surround.sky_radius_factor
            parts.append(
                lift_sky(
                    L.rgb, world_from_camera, radius, k, config.surround.footprint_scale,
                    seed=config.seed,
                )  # fmt: skip
            )
        else:
            assert pano is not None
            parts.append(lift_surround(pano, world_from_camera, config.surround, k))
    return Splats.cat(parts)
