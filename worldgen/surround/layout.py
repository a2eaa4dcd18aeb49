"""A world that surrounds you: the photo extended to a panorama around the spawn point.

The panorama is an equirectangular grid in the **world frame** (+Y up, the source camera at the
origin facing -Z): longitude ``lon`` in [-180, 180) degrees, 0 = straight ahead (-Z), positive
to the right (+X); latitude ``lat`` in [-90, 90], positive up. Direction::

    d(lon, lat) = (sin(lon) cos(lat), sin(lat), -cos(lon) cos(lat))

Every direction gets a surface from a simple layout prior continued from the photo:

* **ground** below the horizon, the fitted ground plane, out to the wall ring;
* a **wall ring** (a vertical cylinder around the spawn) whose radius and top elevation follow the
  photo's vertical content at the photo's left and right edges and blend to their medians away
  from it (outdoors: the distant hills/buildings; indoors: the room's walls up to the ceiling);
* a **ceiling** plane indoors, the **sky dome** outdoors (its own layer, an equirectangular image).

Colours come from the photo where the direction falls inside it, and from the fill backend
(classical: patch synthesis near the photo, smooth diffusion far from it) everywhere else, with
the panorama labels guiding which texture continues where. Pixels inside the photo's frustum are
not lifted (the photo's own layers cover them), except the sky dome, which lies behind
everything and closes any gap above the horizon.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..camera import Intrinsics
from ..depth.base import CEILING, GROUND, SKY, VERTICAL
from ..ground import GroundFit, unproject
from .config import SurroundConfig
from .geometry import directions, project_to_photo, sample


@dataclass
class Panorama:
    """The outpainted surroundings (world frame, equirectangular).

    rgb:      [Hp, Wp, 3] float32 colours of every direction (photo + fill)
    distance: [Hp, Wp] float32 distance along the ray to the surface, metres (sky: the dome)
    labels:   [Hp, Wp] uint8 surface labels (GROUND / VERTICAL / SKY / CEILING)
    lift:     [Hp, Wp] bool, directions to lift as splats (outside the photo, within the yaw
              extent; sky is in the sky layer instead)
    sky_rgb:  [Hs, Ws, 3] float32 full-sphere sky colours, or None indoors
    ring:     [Wp] float32 horizontal distance of the wall ring per longitude column
    covered:  [Wp] bool, columns with a world (the photo's yaw range plus the yaw extent)
    info:     facts for world.json
    """

    rgb: np.ndarray
    distance: np.ndarray
    labels: np.ndarray
    lift: np.ndarray
    sky_rgb: np.ndarray | None
    ring: np.ndarray
    covered: np.ndarray
    info: dict


def _edge_profile(
    values: np.ndarray,
    valid: np.ndarray,
    lon: np.ndarray,
    lon_l: float,
    lon_r: float,
    blend: float,
    default: float,
) -> np.ndarray:
    """Per-column values: measured inside the photo's yaw range, blending from the photo's edge
    values to their median outside it (angles in radians; wraps around the back)."""
    meas = np.where(valid, values, np.nan)
    med = float(np.nanmedian(meas)) if np.isfinite(meas).any() else default
    filled = meas.copy()
    idx = np.nonzero(np.isfinite(meas))[0]
    if len(idx) == 0:
        return np.full_like(values, med)
    # inside the range: interpolate gaps; outside: edge value blended toward the median
    inner = (lon >= lon_l) & (lon <= lon_r)
    filled[inner] = np.interp(lon[inner], lon[idx], meas[idx])
    left_val, right_val = meas[idx[0]], meas[idx[-1]]
    out = ~inner
    # angular distance beyond the nearer photo edge (going around either way)
    dl = np.mod(lon_l - lon, 2 * math.pi)
    dr = np.mod(lon - lon_r, 2 * math.pi)
    near_left = dl < dr
    dist = np.where(near_left, dl, dr)
    edge = np.where(near_left, left_val, right_val)
    w = np.clip(dist / max(blend, 1e-6), 0, 1)
    filled[out] = ((1 - w) * edge + w * med)[out]
    return filled


def extend(
    image: np.ndarray,
    depth: np.ndarray,
    labels: np.ndarray | None,
    intr: Intrinsics,
    ground: GroundFit,
    world_from_camera: np.ndarray,
    config: SurroundConfig,
    *,
    sky_distance: float,
    fill=None,
    seed: int = 0,
) -> Panorama:
    """Build the panorama around the spawn. image [H, W, 3], depth [H, W] metres (camera z),
    labels [H, W] or None; ``fill``: a fill backend (default: classical)."""
    if fill is None:
        from ..fill import get_fill_backend

        fill = get_fill_backend("classical")
    H, W = depth.shape
    assert image.shape == (H, W, 3), image.shape
    R_wc = world_from_camera[:3, :3]
    h = float(ground.height)
    Wp, Hp = int(config.width), int(config.width) // 2
    LON, LAT, d = directions(Wp, Hp)
    lon = LON[0]

    # --- the photo's content in world coordinates ----------------------------------------
    P = unproject(depth, intr).reshape(-1, 3) @ R_wc.T  # world points
    lab = labels.reshape(-1) if labels is not None else None
    horiz = np.hypot(P[:, 0], P[:, 2])
    p_lon = np.arctan2(P[:, 0], -P[:, 2])
    p_lat = np.arctan2(P[:, 1], horiz)
    if lab is not None:
        is_sky = lab == SKY
        is_vert = lab == VERTICAL
        has_ceiling = bool(np.any(lab == CEILING))
    else:
        is_sky = depth.reshape(-1) >= 0.9 * sky_distance
        is_vert = ~is_sky & (P[:, 1] > -h + 0.3)
        has_ceiling = False
    outdoor = bool(is_sky.mean() > 0.02)
    ceiling_y = None
    if lab is not None and has_ceiling:
        ceiling_y = float(np.median(P[lab == CEILING, 1]))
    elif not outdoor:
        ceiling_y = max(config.ceiling_height - h, 0.5)

    # per-column wall distance and top elevation, from the photo's vertical content
    col = np.clip(((p_lon + math.pi) / (2 * math.pi) * Wp).astype(int), 0, Wp - 1)
    R_col = np.full(Wp, np.nan)
    top_col = np.full(Wp, np.nan)
    if is_vert.any():
        order = np.argsort(col[is_vert], kind="stable")
        cv, hv, lv = col[is_vert][order], horiz[is_vert][order], p_lat[is_vert][order]
        starts = np.searchsorted(cv, np.arange(Wp))
        ends = np.searchsorted(cv, np.arange(Wp), side="right")
        for j in np.nonzero(ends > starts)[0]:
            R_col[j] = np.median(hv[starts[j] : ends[j]])
            top_col[j] = np.percentile(lv[starts[j] : ends[j]], 95)
    lon_l, lon_r = float(np.min(p_lon)), float(np.max(p_lon))
    blend = math.radians(config.blend_deg)
    R_default = min(config.max_wall_distance, 0.5 * sky_distance)
    R_ring = _edge_profile(R_col, np.isfinite(R_col), lon, lon_l, lon_r, blend, R_default)
    R_ring = np.clip(R_ring, config.min_wall_distance, config.max_wall_distance)
    top_ring = _edge_profile(
        top_col, np.isfinite(top_col), lon, lon_l, lon_r, blend, math.radians(3.0)
    )
    if ceiling_y is not None:  # indoors: walls reach the ceiling
        top_ring = np.arctan2(ceiling_y, R_ring)
    top_ring = np.maximum(top_ring, math.radians(1.0))

    # --- surfaces of every direction --------------------------------------------------------
    Rr = R_ring[None, :]
    dy = d[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dy < -1e-6, -h / dy, np.inf)
        t_wall = Rr / np.maximum(np.cos(LAT), 1e-6)
        t_ceil = np.where(dy > 1e-6, (ceiling_y or 0.0) / dy, np.inf)
    ground_hit = t_ground * np.cos(LAT) < Rr
    wall_hit = ~ground_hit & (LAT <= top_ring[None, :])
    plab = np.full((Hp, Wp), SKY, np.uint8)
    plab[wall_hit] = VERTICAL
    plab[ground_hit] = GROUND
    dist = np.where(ground_hit, t_ground, np.where(wall_hit, t_wall, sky_distance))
    if ceiling_y is not None:
        ceil = plab == SKY
        plab[ceil] = CEILING
        dist = np.where(ceil, t_ceil, dist)
        dist = np.where(np.isfinite(dist), dist, R_default)

    # --- colours: the photo where it sees, the fill elsewhere --------------------------------
    u, v, inside = project_to_photo(d, R_wc, intr)
    rgb = np.zeros((Hp, Wp, 3), np.float32)
    rgb[inside] = sample(image, u[inside], v[inside])
    if labels is not None:
        plab_known = plab.copy()
        plab_known[inside] = sample(
            labels.astype(np.float32), u[inside], v[inside], order=0
        ).astype(np.uint8)
    else:
        plab_known = plab
    unknown = ~inside
    filled = fill.fill(rgb, unknown, labels=plab_known, seed=seed).rgb if unknown.any() else rgb

    yaw_extent = math.radians(config.yaw_extent_deg)
    dl = np.mod(lon_l - LON, 2 * math.pi)
    dr = np.mod(LON - lon_r, 2 * math.pi)
    within = (np.minimum(dl, dr) <= yaw_extent) | ((LON >= lon_l) & (LON <= lon_r))
    lift_mask = ~inside & within & (plab != SKY)

    sky_rgb = None
    if outdoor:
        Ws, Hs = int(config.sky_width), int(config.sky_width) // 2
        _, _, sd = directions(Ws, Hs)
        su, sv, sin_ = project_to_photo(sd, R_wc, intr)
        sky_px = np.zeros((Hs, Ws), bool)
        if labels is not None:
            sky_px[sin_] = sample(labels.astype(np.float32), su[sin_], sv[sin_], order=0) == SKY
        else:
            sky_px[sin_] = sample(depth, su[sin_], sv[sin_], order=0) >= 0.9 * sky_distance
        srgb = np.zeros((Hs, Ws, 3), np.float32)
        srgb[sky_px] = sample(image, su[sky_px], sv[sky_px])
        if sky_px.any():
            slab = np.full((Hs, Ws), SKY, np.uint8)
            sky_rgb = fill.fill(srgb, ~sky_px, labels=slab, seed=seed).rgb
        else:  # no sky pixels to continue: a plain gradient from the panorama's top rows
            top = filled[: max(1, Hp // 8)].reshape(-1, 3).mean(0)
            sky_rgb = np.broadcast_to(top, (Hs, Ws, 3)).astype(np.float32).copy()

    info = {
        "width": Wp,
        "height": Hp,
        "outdoor": outdoor,
        "ceiling_y": ceiling_y,
        "wall_distance_median": float(np.median(R_ring)),
        "yaw_extent_deg": config.yaw_extent_deg,
        "photo_lon_deg": [math.degrees(lon_l), math.degrees(lon_r)],
        "lifted_pixels": int(lift_mask.sum()),
    }
    return Panorama(
        filled.astype(np.float32),
        dist.astype(np.float32),
        plab,
        lift_mask,
        sky_rgb,
        R_ring.astype(np.float32),
        within[0].copy(),
        info,
    )
