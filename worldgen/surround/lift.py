"""Splats for the surround: flat discs on the ground, the distant band and the ceiling, and the
sky dome, each covering its equirect pixel's footprint (source-camera axes out)."""

from __future__ import annotations

import math

import numpy as np

from ..lift import make_discs
from ..splats import Splats
from .config import SurroundConfig
from .geometry import directions
from .layout import Panorama


def lift_surround(
    pano: Panorama, world_from_camera: np.ndarray, config: SurroundConfig, layer_id: int
) -> Splats:
    """Splats (source camera axes) for the panorama's lifted directions: flat discs on the
    ground, the wall ring and the ceiling, each covering its pixel's footprint."""

    Hp, Wp = pano.labels.shape
    _, _, d = directions(Wp, Hp)
    P = d * pano.distance.astype(np.float64)[..., None]

    # in-plane footprint vectors from neighbouring pixels on the same surface
    def neighbour_diff(axis):
        fwd = np.roll(P, -1, axis=axis) - P
        back = P - np.roll(P, 1, axis=axis)
        lab = pano.labels
        same_f = np.roll(lab, -1, axis=axis) == lab
        same_b = np.roll(lab, 1, axis=axis) == lab
        if axis == 0:  # no wrap at the poles
            same_f[-1] = False
            same_b[0] = False
        both = same_f & same_b
        out = np.where(both[..., None], 0.5 * (fwd + back), np.where(same_f[..., None], fwd, back))
        return out

    a = neighbour_diff(1) * config.footprint_scale
    b = neighbour_diff(0) * config.footprint_scale
    m = pano.lift
    R_wc = world_from_camera[:3, :3]
    Xc = P[m] @ R_wc  # world -> camera: R_wc^T X
    return make_discs(Xc, a[m] @ R_wc, b[m] @ R_wc, pano.rgb[m], None, 0.1, layer_id)


def lift_sky(
    sky_rgb: np.ndarray,
    world_from_camera: np.ndarray,
    sky_distance: float,
    layer_id: int,
    footprint_scale: float = 0.6,
) -> Splats:
    """The sky dome (upper hemisphere plus a few degrees below the horizon) as splats facing
    the spawn point, in source camera axes."""

    Hs, Ws = sky_rgb.shape[:2]
    _, LAT, d = directions(Ws, Hs)
    keep = LAT > -math.radians(5)
    P = d * sky_distance
    dlon = 2 * math.pi / Ws
    dlat = math.pi / Hs
    east = np.stack(
        [
            np.cos(np.arctan2(d[..., 0], -d[..., 2])),
            np.zeros_like(LAT),
            np.sin(np.arctan2(d[..., 0], -d[..., 2])),
        ],
        -1,
    )
    north = np.cross(d, east)
    a = east * (sky_distance * np.cos(LAT) * dlon * footprint_scale)[..., None]
    b = north * (sky_distance * dlat * footprint_scale)
    R_wc = world_from_camera[:3, :3]
    return make_discs(
        P[keep] @ R_wc, a[keep] @ R_wc, b[keep] @ R_wc, sky_rgb[keep], None, 0.1, layer_id
    )
