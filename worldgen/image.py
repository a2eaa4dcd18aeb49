"""Image loading: any common file and colour mode to float32 sRGB [H, W, 3] in [0, 1].

EXIF orientation is applied (the image is the upright original), EXIF focal length is read when
present, and the working copy is downscaled so its long side is at most ``max_side`` (never
upscaled).
"""

from __future__ import annotations

import errno
import hashlib
import io
import os
import stat
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from .errors import InputError


@dataclass(frozen=True)
class ImageConfig:
    max_side: int = 768
    """Long side of the working image in pixels (never upscaled)."""


SUPPORTED = ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "MPO", "GIF")
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
    notes: tuple[str, ...] = ()
    """One-line notices about what was done to read the file (an animated image's first
    frame, an unreadable EXIF block ignored)."""

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
    check_regular_file(path, "an image file")
    notes: list[str] = []
    try:
        data = path.read_bytes()
    except OSError as e:
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if not data:
        raise InputError(f"{path}: empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            fmt = im.format or "?"
            if fmt not in SUPPORTED:
                raise InputError(
                    f"{path}: {fmt} images are not supported (use JPEG, PNG, WebP or TIFF)"
                )
            frames = getattr(im, "n_frames", 1) if getattr(im, "is_animated", False) else 1
            if frames > 1:
                notes.append(f"{path.name}: animated image ({frames} frames): the first frame")
            exif, orientation = _read_exif(im, path, notes)
            im.load()  # decode everything now: truncated files fail here
            upright = _transpose(im, orientation)
    except InputError:
        raise
    except UnidentifiedImageError:
        raise InputError(f"{path}: not an image file (unrecognised format)") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        mp = Image.MAX_IMAGE_PIXELS / 1e6
        raise InputError(
            f"{path}: image is declared as {_declared_size(data)} pixels, over the "
            f"{mp:.0f} MP worldgen decodes (downscale it first)"
        ) from None
    except (OSError, SyntaxError, ValueError, EOFError, struct.error) as e:
        raise InputError(f"{path}: cannot decode image ({_first_line(e)})") from None
    rgb = None
    if upright.mode in ("RGB", "RGBA") and fmt in ("PNG", "TIFF"):
        rgb16 = _read_16bit_rgb(path, fmt)
        if rgb16 is not None and rgb16.shape[:2] == (im.height, im.width):
            rgb = _orient(rgb16, orientation)
    if rgb is None:
        rgb = _to_rgb_float(upright)
    rgb = np.clip(np.nan_to_num(rgb, nan=0.0, posinf=1.0, neginf=0.0), 0.0, 1.0)
    h, w = rgb.shape[:2]
    if min(h, w) < MIN_SIDE:
        raise InputError(f"{path}: image is {w}x{h} pixels, need at least {MIN_SIDE} on each side")
    try:
        ifd = exif.get_ifd(_EXIF_IFD) if exif else {}
        f35 = _positive_float(ifd.get(_FOCAL_35MM))
        fmm = _positive_float(ifd.get(_FOCAL_LENGTH))
    except Exception:  # a corrupt EXIF block: no focal length
        f35 = fmm = None
    return LoadedImage(
        rgb=np.ascontiguousarray(rgb, dtype=np.float32),
        path=path,
        sha256=hashlib.sha256(data).hexdigest(),
        format=fmt,
        focal_35mm=f35,
        focal_mm=fmm,
        exif_orientation=orientation,
        notes=tuple(notes),
    )


def check_regular_file(path: Path, what: str) -> None:
    """InputError unless ``path`` is a readable regular file (not missing, a directory, a
    dangling symlink or loop, a FIFO, socket or device: reading those would block or fail)."""
    try:
        st = path.stat()
    except FileNotFoundError:
        if path.is_symlink():
            raise InputError(f"{path}: dangling symlink (its target does not exist)") from None
        raise InputError(f"{path}: no such file") from None
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise InputError(f"{path}: symlink loop") from None
        raise InputError(f"{path}: cannot read ({e.strerror or e})") from None
    if stat.S_ISDIR(st.st_mode):
        raise InputError(f"{path}: is a directory, expected {what}")
    if not stat.S_ISREG(st.st_mode):
        raise InputError(f"{path}: not a regular file (a FIFO, socket or device); expected {what}")
    if not os.access(path, os.R_OK):
        raise InputError(f"{path}: not readable (permission denied)")


def _read_exif(im: Image.Image, path: Path, notes: list[str]):
    """(exif, orientation); a corrupt EXIF block is ignored with a notice."""
    try:
        exif = im.getexif()
        orientation = int(exif.get(0x0112, 1) or 1)
    except Exception:
        notes.append(f"{path.name}: unreadable EXIF block ignored (upright as stored)")
        return Image.Exif(), 1
    if orientation not in range(1, 9):
        notes.append(f"{path.name}: EXIF orientation {orientation} is not 1-8: ignored")
        orientation = 1
    return exif, orientation


def _transpose(im: Image.Image, orientation: int) -> Image.Image:
    """The image upright (as ImageOps.exif_transpose, from the tag already read)."""
    method = {
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_270,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_90,
    }.get(orientation)
    return im if method is None else im.transpose(method)


def _declared_size(data: bytes) -> str:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            saved, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, None
            try:
                w, h = Image.open(io.BytesIO(data)).size  # the header only
            finally:
                Image.MAX_IMAGE_PIXELS = saved
        return f"{w}x{h}"
    except Exception:
        return "too many"


def _first_line(e: Exception) -> str:
    return (str(e).splitlines() or [type(e).__name__])[0]


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
