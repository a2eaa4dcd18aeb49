"""``file`` depth backend: a user depth map (ARCHITECTURE.md Conventions).

* ``.npy``: float z-depth in metres; NaN, +-inf and values <= 0 are unknown. Loaded with
  ``allow_pickle=False``.
* ``.png`` / ``.tif``: 16-bit, millimetres; 0 is unknown.

The map must have the size of the upright original image or of the working image (or the same
aspect ratio); it is resized with nearest-neighbour. Unknown pixels are filled from the nearest
known depth along rows and columns whose colour matches best (the same surface), preferring the
farther candidate on ties: holes in depth maps are mostly occlusions of the surface behind.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..camera import Intrinsics
from ..errors import InputError
from .base import DepthEstimate

MAX_UNKNOWN_FRACTION = 0.95


def read_depth_map(path: str | Path) -> np.ndarray:
    """[h, w] float32 metres with NaN for unknown."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: depth map not found")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected a depth map file")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            d = np.load(path, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:
            raise InputError(f"{path}: not a readable .npy depth map ({e})") from None
        if d.dtype.kind not in "fiu":
            raise InputError(f"{path}: depth map must hold numbers, got dtype {d.dtype}")
        d = d.astype(np.float64)
        if d.ndim == 3 and d.shape[2] == 1:
            d = d[..., 0]
        if d.ndim != 2:
            raise InputError(f"{path}: depth map must be 2-D [H, W], got shape {d.shape}")
        d[~np.isfinite(d) | (d <= 0)] = np.nan
        return d.astype(np.float32)
    if suffix in (".png", ".tif", ".tiff"):
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as im:
                im.load()
                mode = im.mode
                a = np.asarray(im)
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
            raise InputError(f"{path}: not a readable depth image ({e})") from None
        if a.ndim != 2 or a.dtype not in (np.uint16, np.int32, np.uint32) or mode == "L":
            raise InputError(
                f"{path}: a PNG depth map must be single-channel 16-bit millimetres, "
                f"got mode {mode}"
            )
        d = a.astype(np.float32) / 1000.0
        d[a == 0] = np.nan
        return d
    raise InputError(f"{path}: depth maps must be .npy (metres) or 16-bit .png (millimetres)")


def resize_nearest(d: np.ndarray, width: int, height: int) -> np.ndarray:
    """Nearest-neighbour resize with pixel centres at integer coordinates."""
    h, w = d.shape
    if (w, h) == (width, height):
        return d
    ys = np.clip(np.floor((np.arange(height) + 0.5) * h / height).astype(int), 0, h - 1)
    xs = np.clip(np.floor((np.arange(width) + 0.5) * w / width).astype(int), 0, w - 1)
    return d[ys[:, None], xs[None, :]]


def _nearest_known_along(known: np.ndarray, axis: int, reverse: bool) -> np.ndarray:
    """Index along ``axis`` of the nearest known pixel before (or after) each pixel, -1 if none."""
    k = np.moveaxis(known, axis, -1)
    n = k.shape[-1]
    idx = np.arange(n)
    if reverse:
        k = k[..., ::-1]
    pos = np.where(k, idx, -1)
    pos = np.maximum.accumulate(pos, axis=-1)
    if reverse:
        pos = np.where(pos >= 0, n - 1 - pos, -1)[..., ::-1]
    return np.moveaxis(pos, -1, axis)


def fill_unknown(depth: np.ndarray, image: np.ndarray) -> np.ndarray:
    """Fill NaNs from the best-matching known neighbour of the same surface.

    depth: [H, W] float32 with NaN unknown; image: [H, W, 3] float32. Candidates are the nearest
    known pixels left, right, above and below; the one whose colour is closest wins, with a
    penalty on distance and a slight preference for the farther depth.
    """
    known = np.isfinite(depth)
    if known.all():
        return depth
    H, W = depth.shape
    yy, xx = np.mgrid[0:H, 0:W]
    best_cost = np.full((H, W), np.inf)
    out = depth.copy()
    dmax = np.nanmax(depth)
    for axis in (1, 0):
        for reverse in (False, True):
            pos = _nearest_known_along(known, axis, reverse)
            ok = (pos >= 0) & ~known
            if axis == 1:
                cy, cx = yy, np.where(ok, pos, 0)
            else:
                cy, cx = np.where(ok, pos, 0), xx
            cand = depth[cy, cx]
            dist = np.abs(np.where(axis == 1, cx - xx, cy - yy)).astype(np.float64)
            colour = np.abs(image[cy, cx] - image).sum(-1)
            cost = colour + 0.002 * dist - 0.05 * (cand / dmax)
            better = ok & (cost < best_cost)
            best_cost = np.where(better, cost, best_cost)
            out = np.where(better, cand, out)
    # pixels with no known pixel on any of the 4 lines: nearest known in 2-D
    rest = ~np.isfinite(out)
    if rest.any():
        from scipy.ndimage import distance_transform_edt

        _, (iy, ix) = distance_transform_edt(~known, return_indices=True)
        out[rest] = depth[iy[rest], ix[rest]]
    return out.astype(np.float32)


class FileDepthBackend:
    name = "file"

    def available(self) -> tuple[bool, str]:
        return True, "user depth map"

    def estimate(
        self,
        image: np.ndarray,
        intrinsics: Intrinsics,
        *,
        depth_map: str | Path,
        orig_size: tuple[int, int] | None = None,
        **_,
    ) -> DepthEstimate:
        H, W = image.shape[:2]
        d = read_depth_map(depth_map)
        h, w = d.shape
        sizes = {(W, H)} | ({tuple(orig_size)} if orig_size else set())
        if (w, h) not in sizes:
            ow, oh = orig_size or (W, H)
            if abs(w / h - ow / oh) > 0.01 * (ow / oh):
                raise InputError(
                    f"{depth_map}: depth map is {w}x{h} but the image is {ow}x{oh} "
                    "(sizes or aspect ratios must match)"
                )
        d = resize_nearest(d, W, H)
        unknown = float(np.mean(~np.isfinite(d)))
        if unknown >= 1.0:
            raise InputError(f"{depth_map}: depth map has no valid values (all unknown)")
        if unknown > MAX_UNKNOWN_FRACTION:
            raise InputError(
                f"{depth_map}: {unknown:.0%} of the depth map is unknown "
                f"(at most {MAX_UNKNOWN_FRACTION:.0%} allowed)"
            )
        filled = fill_unknown(d, image)
        return DepthEstimate(
            depth=filled,
            kind="metric",
            info={
                "path": str(depth_map),
                "unknown_fraction": round(unknown, 6),
                "scale_source": "user-depth-map",
            },
        )
