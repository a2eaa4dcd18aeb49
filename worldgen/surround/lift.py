"""Splats for the surround: flat discs on the ground, the distant band and the ceiling, and the
sky dome, each covering its equirect pixel's footprint (source-camera axes out).

Equirect rows near the poles hold far more pixels than their solid angle needs; both lifts
keep one splat per ``k`` columns in a row of latitude ``lat`` (k = round(1 / cos lat), a
reduced grid as in weather models), its colour the box mean of those columns and its footprint
``k`` columns wide. Splat standard deviations are ``footprint_scale`` of the footprint: at
>= 0.75 the coverage between four neighbouring splats stays above 99 %, so nothing shows
through (no grid on the sky dome, no void between ground splats).
"""

from __future__ import annotations

import math

import numpy as np

from ..depth.base import CEILING, GROUND
from ..lift import make_discs
from ..splats import Splats
from .config import SurroundConfig
from .geometry import directions
from .layout import Panorama


def row_strides(lat: np.ndarray, max_stride: int = 64) -> np.ndarray:
    """Columns per splat for each row latitude [H] (reduced grid, powers of two so every
    stride divides the width)."""
    k = 1.0 / np.maximum(np.cos(lat), 1e-6)
    p = np.floor(np.log2(np.maximum(k, 1.0)) + 0.5).astype(int)  # nearest power of two
    return np.minimum(2**p, max_stride)


def _reduce(img: np.ndarray, keep: np.ndarray, strides: np.ndarray):
    """Rows' box means over their stride: returns (rows, cols, values [N, ...], k [N]) for the
    kept pixels (``keep`` [H, W]: a reduced pixel is kept when any of its columns is)."""
    H, W = keep.shape
    rows, cols, vals, ks = [], [], [], []
    for r in range(H):
        k = int(strides[r])
        if W % k:
            k = 1
        kr = keep[r].reshape(W // k, k)
        any_ = kr.any(1)
        if not any_.any():
            continue
        v = img[r].reshape(W // k, k, *img.shape[2:])
        w = kr[..., None] if img.ndim == 3 else kr
        # mean over the kept columns of the group (all when none differ)
        mean = (v * w).sum(1) / np.maximum(w.sum(1), 1)
        idx = np.nonzero(any_)[0]
        rows.append(np.full(len(idx), r))
        cols.append(idx * k + (k - 1) / 2.0)
        vals.append(mean[idx])
        ks.append(np.full(len(idx), k))
    if not rows:
        shape = (0,) + img.shape[2:]
        return np.zeros(0, int), np.zeros(0), np.zeros(shape, img.dtype), np.zeros(0, int)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals), np.concatenate(ks)


def _dirs(rows: np.ndarray, cols: np.ndarray, W: int, H: int):
    lon = -math.pi + (cols + 0.5) * 2 * math.pi / W
    lat = math.pi / 2 - (rows + 0.5) * math.pi / H
    d = np.stack([np.sin(lon) * np.cos(lat), np.sin(lat), -np.cos(lon) * np.cos(lat)], -1)
    east = np.stack([np.cos(lon), np.zeros_like(lon), np.sin(lon)], -1)
    north = np.cross(d, east)
    return lon, lat, d, east, north


def lift_surround(
    pano: Panorama, world_from_camera: np.ndarray, config: SurroundConfig, layer_id: int
) -> Splats:
    """Splats (source camera axes) for the panorama's lifted directions: flat discs on the
    ground, the band and the ceiling, each covering its (reduced-grid) pixel's footprint: the
    pixel's angular extent times the distance, projected onto the surface's plane."""
    Hp, Wp = pano.labels.shape
    _, LAT, _ = directions(Wp, Hp)
    strides = row_strides(LAT[:, 0])
    rows, cols, rgb, k = _reduce(pano.rgb, pano.lift, strides)
    dist = pano.distance[rows, np.clip(cols.astype(int), 0, Wp - 1)].astype(np.float64)
    lab = pano.labels[rows, np.clip(cols.astype(int), 0, Wp - 1)]
    lon, lat, d, east, north = _dirs(rows, cols, Wp, Hp)
    P = d * dist[:, None]
    dlon, dlat = 2 * math.pi / Wp * k, math.pi / Hp
    # the footprint: the ray's angular steps east/north, carried to the surface's plane
    inward = -np.stack([np.sin(lon), 0 * lon, -np.cos(lon)], -1)  # the band faces the spawn
    normal = np.where((lab == CEILING)[:, None], [0.0, -1.0, 0.0], inward)
    normal = np.where((lab == GROUND)[:, None], [0.0, 1.0, 0.0], normal)

    def onto_plane(v):  # a ray-perpendicular step v, moved along the ray onto the plane
        dn = np.sum(d * normal, -1)
        dn = np.where(np.abs(dn) < 0.05, np.copysign(0.05, dn), dn)  # grazing: bounded stretch
        return v - d * (np.sum(v * normal, -1) / dn)[:, None]

    s = config.footprint_scale
    a = onto_plane(east * (dist * np.cos(lat) * dlon)[:, None]) * s
    b = onto_plane(north * (dist * dlat)[:, None]) * s
    R_wc = world_from_camera[:3, :3]
    return make_discs(P @ R_wc, a @ R_wc, b @ R_wc, rgb, None, 0.1, layer_id)


def lift_sky(
    sky_rgb: np.ndarray,
    world_from_camera: np.ndarray,
    radius: float,
    layer_id: int,
    footprint_scale: float = 0.8,
    min_lat_deg: float = -10.0,
    *,
    seed: int = 0,
    jitter: float = 0.5,
) -> Splats:
    """The sky dome (upper hemisphere and ``-min_lat_deg`` below the horizon) as splats facing
    the spawn point at about ``radius`` metres, in source camera axes.

    A regular lattice of splats shows as a faint grid on a smooth sky (the front-most of
    overlapping splats wins a little more near its centre, at the lattice's period). So every
    splat is moved by up to ``jitter`` of its cell in longitude and latitude and by up to
    0.2 % in radius (a seeded jittered grid: the lattice's spectral peak becomes broadband
    noise), with its colour sampled where it now sits."""
    from .geometry import sample_equirect

    Hs, Ws = sky_rgb.shape[:2]
    _, LAT, _ = directions(Ws, Hs)
    keep = LAT > math.radians(min_lat_deg)
    rows, cols, _, k = _reduce(sky_rgb, keep, row_strides(LAT[:, 0]))
    rng = np.random.default_rng(seed)
    n = len(rows)
    rows = rows + rng.uniform(-jitter, jitter, n)
    cols = cols + rng.uniform(-jitter, jitter, n) * k
    lon, lat, d, east, north = _dirs(rows, cols, Ws, Hs)
    rgb = sample_equirect(sky_rgb, lon, lat)
    r = radius * (1.0 + rng.uniform(-0.002, 0.002, n))
    dlon, dlat = 2 * math.pi / Ws * k, math.pi / Hs
    a = east * (r * np.cos(lat) * dlon * footprint_scale)[:, None]
    b = north * (r * dlat * footprint_scale)[:, None]
    R_wc = world_from_camera[:3, :3]
    return make_discs((d * r[:, None]) @ R_wc, a @ R_wc, b @ R_wc, rgb, None, 0.1, layer_id)
