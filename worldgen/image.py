"""Image loading: any common file and colour mode to float32 sRGB [H, W, 3] in [0, 1].

EXIF orientation is applied (the image is the upright original), EXIF focal length is read when
present, and the working copy is downscaled so its long side is at most ``max_side`` (never
upscaled).
"""

from __future__ import annotations

import hashlib
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from .errors import InputError


@dataclass(frozen=True)
class ImageConfig:
    max_side: int = 768
    """Long side of the working image in pixels (never upscaled)."""


SUPPORTED = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "MPO")
MIN_SIDE = 8

# EXIF tags
_EXIF_IFD = 0x8769
_FOCAL_LENGTH = 0x920A
_FOCAL_35MM = 0xA405


@dataclass
class LoadedImage:
    """An upright photo and what its file said about the camera.

    rgb:            [H, W, 3] float32 sRGB in [0, 1], full (original) resolution
    path:           the file it came from
    sha256:         hex digest of the file's bytes
    format:         Pillow's format name
    focal_35mm:     EXIF FocalLengthIn35mmFilm (mm), or None
    focal_mm:       EXIF FocalLength (mm), or None
    exif_orientation: the EXIF orientation tag that was applied (1 = none)
    """

    rgb: np.ndarray
    path: Path
    sha256: str
    format: str
    focal_35mm: float | None
    focal_mm: float | None
    exif_orientation: int

    @property
    def width(self) -> int:
        return self.rgb.shape[1]

    @property
    def height(self) -> int:
        return self.rgb.shape[0]


def _to_rgb_float(im: Image.Image) -> np.ndarray:
    """Any Pillow mode to float32 RGB in [0, 1]; alpha is composited over white."""
    mode = im.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        peak = 65535.0 if mode.startswith("I;16") or a.max() > 255 else 255.0
        g = np.clip(a / peak, 0, 1).astype(np.float32)
        return np.repeat(g[..., None], 3, axis=2)
    if mode == "F":
        a = np.asarray(im, dtype=np.float32)
        g = np.clip(a / max(float(np.nanmax(a)), 1e-12), 0, 1) if a.max() > 1 else np.clip(a, 0, 1)
        return np.repeat(g[..., None], 3, axis=2).astype(np.float32)
    if mode in ("RGBA", "LA", "PA") or (mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        a = np.asarray(im, dtype=np.float32) / 255.0
        alpha = a[..., 3:4]
        return (a[..., :3] * alpha + (1.0 - alpha)).astype(np.float32)
    if mode != "RGB":
        im = im.convert("RGB")  # L, 1, P, CMYK, YCbCr, LAB, HSV, RGBX ...
    return np.asarray(im, dtype=np.float32) / 255.0


def _read_16bit_rgb(path: Path, fmt: str) -> np.ndarray | None:
    """Pillow reduces 16-bit RGB(A) PNG/TIFF to 8 bits: read those at full depth.

    Returns [H, W, 3] float32 (alpha composited over white) or None if the file is not 16-bit
    colour.
    """
    try:
        if fmt == "PNG":
            import png

            w, h, rows, info = png.Reader(filename=str(path)).asDirect()
            if info["bitdepth"] != 16 or info["greyscale"]:
                return None
            a = np.vstack([np.asarray(r, dtype=np.uint16) for r in rows])
            a = a.reshape(h, w, info["planes"])
        else:
            import tifffile

            a = tifffile.imread(path)
            if a.dtype != np.uint16 or a.ndim != 3 or a.shape[2] not in (3, 4):
                return None
    except Exception:
        return None
    f = a.astype(np.float32) / 65535.0
    if f.shape[2] == 4:
        f = f[..., :3] * f[..., 3:4] + (1.0 - f[..., 3:4])
    return f


def _orient(a: np.ndarray, orientation: int) -> np.ndarray:
    """Apply an EXIF orientation tag to an [H, W, C] array (as ImageOps.exif_transpose)."""
    ops = {
        2: lambda x: x[:, ::-1],
        3: lambda x: x[::-1, ::-1],
        4: lambda x: x[::-1],
        5: lambda x: x.transpose(1, 0, 2),
        6: lambda x: np.rot90(x, -1),
        7: lambda x: x[::-1, ::-1].transpose(1, 0, 2),
        8: lambda x: np.rot90(x, 1),
    }
    return np.ascontiguousarray(ops[orientation](a)) if orientation in ops else a


def load_image(path: str | Path) -> LoadedImage:
    """Read an image file into an upright float32 sRGB array. Raises InputError on bad input."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: no such file")
    if path.is_dir():
        raise InputError(f"{path}: is a directory, expected an image file")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(path)
            fmt = im.format or "?"
            if fmt not in SUPPORTED:
                raise InputError(
                    f"{path}: {fmt} images are not supported (use JPEG, PNG, WebP or TIFF)"
                )
            exif = im.getexif()
            orientation = int(exif.get(0x0112, 1) or 1)
            im.load()  # decode everything now: truncated files fail here
            upright = ImageOps.exif_transpose(im)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (unrecognised format)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombWarning) as e:
        raise InputError(f"{path}: cannot decode image ({e})") from None
    rgb = None
    if upright.mode in ("RGB", "RGBA") and fmt in ("PNG", "TIFF"):
        rgb16 = _read_16bit_rgb(path, fmt)
        if rgb16 is not None and rgb16.shape[:2] == (im.height, im.width):
            rgb = _orient(rgb16, orientation)
    if rgb is None:
        rgb = _to_rgb_float(upright)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{path}: image is {w}x{h} pixels, need at least {MIN_SIDE} on each side")
    ifd = exif.get_ifd(_EXIF_IFD) if exif else {}
    f35 = _positive_float(ifd.get(_FOCAL_35MM))
    fmm = _positive_float(ifd.get(_FOCAL_LENGTH))
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        focal_35mm=f35,
        focal_mm=fmm,
        exif_orientation=orientation,
    )


def _positive_float(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError, ZeroDivisionError):
        return None
    return f if f > 0 and np.isfinite(f) else None


def working_size(width: int, height: int, max_side: int) -> tuple[int, int]:
    """Size of the working image: long side at most ``max_side``, never upscaled."""
    if max_side <= 0:
        raise InputError(f"working resolution must be positive, got {max_side}")
    s = min(1.0, max_side / max(width, height))
    return max(1, round(width * s)), max(1, round(height * s))


def resize(rgb: np.ndarray, width: int, height: int) -> np.ndarray:
    """Area-correct downscale of a float RGB image ([H, W, 3] -> [height, width, 3])."""
    h, w = rgb.shape[:2]
    if (w, h) == (width, height):
        return rgb
    chans = [
        np.asarray(
            Image.fromarray(rgb[..., c], mode="F").resize(
                (width, height), Image.Resampling.LANCZOS, reducing_gap=3.0
            )
        )
        for c in range(3)
    ]
    return np.clip(np.stack(chans, axis=2), 0.0, 1.0).astype(np.float32)


def save_png(rgb: np.ndarray, path: str | Path) -> None:
    """Write a float [H, W, 3] or [H, W] array in [0, 1] as an 8-bit PNG."""
    a = np.clip(np.asarray(rgb, dtype=np.float32), 0, 1)
    Image.fromarray((a * 255.0 + 0.5).astype(np.uint8)).save(path, format="PNG")
