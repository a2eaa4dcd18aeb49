"""Equirectangular geometry of the surround, in the **world frame** (+Y up, the source camera at
the origin facing -Z).

Longitude ``lon`` in [-pi, pi), 0 = straight ahead (-Z), positive to the right (+X); latitude
``lat`` in [-pi/2, pi/2], positive up. Direction::

    d(lon, lat) = (sin(lon) cos(lat), sin(lat), -cos(lon) cos(lat))

An equirectangular grid of ``W x H`` pixels has its pixel centres at
``lon = -pi + (i + 0.5) 2 pi / W`` and ``lat = pi/2 - (j + 0.5) pi / H``.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage


def directions(width: int, height: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lon [H, W], lat [H, W], d [H, W, 3]) of the pixel centres of an equirectangular grid."""
    lon = -math.pi + (np.arange(width) + 0.5) * 2 * math.pi / width
    lat = math.pi / 2 - (np.arange(height) + 0.5) * math.pi / height
    LON, LAT = np.meshgrid(lon, lat)
    d = np.stack([np.sin(LON) * np.cos(LAT), np.sin(LAT), -np.cos(LON) * np.cos(LAT)], -1)
    return LON, LAT, d


def project_to_photo(d_world, R_wc, intr):
    """Pixel coordinates (u, v) of world directions d [..., 3] in the source photo and an inside
    mask; R_wc [3, 3] is world_from_camera's rotation."""
    d_cam = d_world @ R_wc  # rows: R_wc^T d
    z = d_cam[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr.fx * d_cam[..., 0] / z + intr.cx
        v = intr.fy * d_cam[..., 1] / z + intr.cy
    inside = (z > 1e-6) & (u >= -0.5) & (u <= intr.width - 0.5)
    inside &= (v >= -0.5) & (v <= intr.height - 0.5)
    return u, v, inside


def sample(img: np.ndarray, u: np.ndarray, v: np.ndarray, order: int = 1) -> np.ndarray:
    coords = [np.clip(v, 0, img.shape[0] - 1), np.clip(u, 0, img.shape[1] - 1)]
    if img.ndim == 2:
        return ndimage.map_coordinates(img, coords, order=order, mode="nearest")
    return np.stack(
        [
            ndimage.map_coordinates(img[..., c], coords, order=order, mode="nearest")
            for c in range(img.shape[2])
        ],
        -1,
    )


def lonlat_to_pixel(lon: np.ndarray, lat: np.ndarray, width: int, height: int):
    """Continuous pixel coordinates (x, y) of (lon, lat) in a ``width x height`` equirect grid."""
    x = (lon + math.pi) / (2 * math.pi) * width - 0.5
    y = (math.pi / 2 - lat) / math.pi * height - 0.5
    return x, y


def direction_to_lonlat(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(lon, lat) of world directions d [..., 3] (need not be unit length)."""
    lon = np.arctan2(d[..., 0], -d[..., 2])
    lat = np.arctan2(d[..., 1], np.hypot(d[..., 0], d[..., 2]))
    return lon, lat


def sample_equirect(img: np.ndarray, lon: np.ndarray, lat: np.ndarray, order: int = 1):
    """Sample an equirect image [H, W] or [H, W, C] at (lon, lat), wrapping in longitude."""
    H, W = img.shape[:2]
    x, y = lonlat_to_pixel(lon, lat, W, H)
    pad = 2
    # wrap by padding columns on both sides, clamp rows at the poles
    ext = np.concatenate([img[:, -pad:], img, img[:, :pad]], axis=1)
    coords = [np.clip(y, 0, H - 1), np.mod(x + 0.5, W) - 0.5 + pad]
    if img.ndim == 2:
        return ndimage.map_coordinates(ext, coords, order=order, mode="nearest")
    return np.stack(
        [
            ndimage.map_coordinates(ext[..., c], coords, order=order, mode="nearest")
            for c in range(img.shape[2])
        ],
        -1,
    )
