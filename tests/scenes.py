"""Procedural test scenes with exact depth (ray-cast with numpy, no binaries committed)."""

from __future__ import annotations

import colorsys
from dataclasses import dataclass

import numpy as np

from worldgen.camera import Intrinsics


@dataclass
class PlaneScene:
    image: np.ndarray  # [H, W, 3]
    depth: np.ndarray  # [H, W] z-depth, metres
    intr: Intrinsics
    dots: np.ndarray  # [K, 3] 3-D centres of the coloured dots (camera axes)
    dot_colours: np.ndarray  # [K, 3]


def slanted_plane_scene(W: int = 240, H: int = 180, seed: int = 0) -> PlaneScene:
    """A grey textured plane, tilted in x and y, with 12 saturated dots of distinct hues."""
    intr = Intrinsics.from_hfov(60, W, H)
    n = np.array([0.25, -0.2, -1.0])
    n /= np.linalg.norm(n)
    c = n @ np.array([0.0, 0.0, 4.0])  # passes through (0, 0, 4)
    uu, vv = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    ray = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1)
    z = c / (ray @ n)
    P = ray * z[..., None]
    # texture in plane coordinates (so it is glued to the surface)
    rng = np.random.default_rng(seed)
    freq = rng.uniform(2, 6, size=(3, 2))
    g = 0.45 + 0.12 * np.sin(freq[0, 0] * P[..., 0] * 3) * np.cos(freq[0, 1] * P[..., 1] * 3)
    g += 0.1 * (((P[..., 0] * 4).astype(int) + (P[..., 1] * 4).astype(int)) % 2)
    img = np.repeat(g[..., None], 3, axis=2)
    dots, cols = [], []
    for k, (fu, fv) in enumerate(
        [(fu, fv) for fv in (0.25, 0.5, 0.75) for fu in (0.2, 0.4, 0.6, 0.8)]
    ):
        u0, v0 = fu * W, fv * H
        col = np.array(colorsys.hsv_to_rgb(k / 12.0, 1.0, 1.0))
        r = np.hypot(uu - u0, vv - v0)
        m = np.clip(3.5 - r, 0, 1)[..., None]  # anti-aliased disc, radius 3 px
        img = img * (1 - m) + col * m
        dots.append(P[int(round(v0)), int(round(u0))] * 0 + _ray_point(intr, u0, v0, n, c))
        cols.append(col)
    return PlaneScene(
        img.astype(np.float32), z.astype(np.float32), intr, np.array(dots), np.array(cols)
    )


def _ray_point(intr, u, v, n, c):
    r = np.array([(u - intr.cx) / intr.fx, (v - intr.cy) / intr.fy, 1.0])
    return r * (c / (r @ n))


def find_dots(img: np.ndarray, colours: np.ndarray, thr: float = 0.35) -> np.ndarray:
    """Centroids [K, 2] (u, v) of the pixels closest in colour to each dot colour (NaN if none)."""
    out = np.full((len(colours), 2), np.nan)
    uu, vv = np.meshgrid(np.arange(img.shape[1]), np.arange(img.shape[0]))
    d = np.linalg.norm(img[None] - colours[:, None, None, :], axis=-1)  # [K, H, W]
    nearest = np.argmin(d, axis=0)
    for k in range(len(colours)):
        m = (nearest == k) & (d[k] < thr)
        if m.sum() >= 3:
            w = thr - d[k][m]
            out[k] = [(uu[m] * w).sum() / w.sum(), (vv[m] * w).sum() / w.sum()]
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(-10 * np.log10(np.mean((a.astype(np.float64) - b) ** 2)))
