import numpy as np
import pytest
from PIL import Image

from tests.conftest import save_rgb, textured
from worldgen.errors import InputError
from worldgen.image import load_image, resize, working_size


def _asym(h=40, w=60):
    """An image whose corners differ, to check orientation: red top-left, blue bottom-right."""
    a = np.full((h, w, 3), 0.5, np.float32)
    a[:10, :10] = (1, 0, 0)
    a[-10:, -10:] = (0, 0, 1)
    return a


@pytest.mark.parametrize(
    "fmt,ext", [("JPEG", "jpg"), ("PNG", "png"), ("WEBP", "webp"), ("TIFF", "tif")]
)
def test_formats_load_as_float_rgb(tmp_path, fmt, ext):
    a = textured(32, 48)
    p = save_rgb(a, tmp_path / f"x.{ext}", format=fmt, **({"quality": 95} if fmt != "PNG" else {}))
    img = load_image(p)
    assert img.rgb.shape == (32, 48, 3) and img.rgb.dtype == np.float32
    assert 0 <= img.rgb.min() and img.rgb.max() <= 1
    tol = 1e-6 if fmt in ("PNG", "TIFF") else 0.08
    assert np.abs(img.rgb - np.round(a * 255) / 255).mean() < tol or fmt in ("JPEG", "WEBP")
    assert len(img.sha256) == 64


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied(tmp_path, orientation):
    upright = _asym()
    # store the image so that applying `orientation` makes it upright again
    inverse = {
        1: None,
        2: Image.Transpose.FLIP_LEFT_RIGHT,
        3: Image.Transpose.ROTATE_180,
        4: Image.Transpose.FLIP_TOP_BOTTOM,
        5: Image.Transpose.TRANSPOSE,
        6: Image.Transpose.ROTATE_90,
        7: Image.Transpose.TRANSVERSE,
        8: Image.Transpose.ROTATE_270,
    }[orientation]
    im = Image.fromarray((upright * 255).astype(np.uint8))
    if inverse is not None:
        im = im.transpose(inverse)
    exif = Image.Exif()
    exif[0x0112] = orientation
    p = tmp_path / "o.png"
    im.save(p, exif=exif.tobytes())
    img = load_image(p)
    assert img.exif_orientation == orientation
    assert img.rgb.shape == upright.shape
    assert np.allclose(img.rgb[2, 2], (1, 0, 0), atol=0.02)
    assert np.allclose(img.rgb[-3, -3], (0, 0, 1), atol=0.02)


def test_colour_modes(tmp_path):
    a = textured(20, 30)
    u8 = (a * 255).astype(np.uint8)
    # grey
    Image.fromarray(u8[..., 0]).save(tmp_path / "g.png")
    g = load_image(tmp_path / "g.png").rgb
    assert np.allclose(g[..., 0], g[..., 1]) and np.allclose(g[..., 0], u8[..., 0] / 255)
    # palette
    Image.fromarray(u8).quantize(16).save(tmp_path / "p.png")
    assert load_image(tmp_path / "p.png").rgb.shape == (20, 30, 3)
    # RGBA composited over white: fully transparent -> white, opaque -> colour
    rgba = np.zeros((20, 30, 4), np.uint8)
    rgba[..., :3] = (0, 0, 255)
    rgba[:, 15:, 3] = 255
    Image.fromarray(rgba).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png").rgb
    assert np.allclose(x[0, 0], 1) and np.allclose(x[0, 20], (0, 0, 1))
    # CMYK JPEG
    Image.fromarray(u8).convert("CMYK").save(tmp_path / "c.jpg", quality=95)
    c = load_image(tmp_path / "c.jpg").rgb
    assert c.shape == (20, 30, 3) and np.abs(c - a).mean() < 0.1
    # 16-bit grey keeps its precision
    g16 = (np.linspace(0, 65535, 20 * 30).reshape(20, 30)).astype(np.uint16)
    Image.fromarray(g16).save(tmp_path / "g16.png")
    y = load_image(tmp_path / "g16.png").rgb
    assert np.allclose(y[..., 0], g16 / 65535.0, atol=1e-6)


def test_16bit_rgb_png_keeps_precision(tmp_path):
    a = (np.random.default_rng(0).random((12, 16, 3)) * 65535).astype(np.uint16)
    _png16(a, tmp_path / "x.png")
    rgb = load_image(tmp_path / "x.png").rgb
    assert np.allclose(rgb, a / 65535.0, atol=1e-6)


def test_exif_focal_length_is_read(tmp_path):
    im = Image.fromarray((textured(20, 30) * 255).astype(np.uint8))
    exif = Image.Exif()
    ifd = exif.get_ifd(0x8769)
    ifd[0xA405] = 28
    ifd[0x920A] = 4.5
    p = tmp_path / "f.jpg"
    im.save(p, exif=exif.tobytes())
    img = load_image(p)
    assert img.focal_35mm == 28 and img.focal_mm == pytest.approx(4.5)
    plain = save_rgb(textured(20, 30), tmp_path / "n.jpg")
    assert load_image(plain).focal_35mm is None


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda d: d / "missing.jpg", "no such file"),
        (lambda d: d, "is a directory"),
        (lambda d: _write(d / "zero.jpg", b""), "empty file"),
        (lambda d: _write(d / "text.jpg", b"hello, not an image" * 10), "not an image"),
        (lambda d: _truncated_jpeg(d), "cannot decode"),
        (lambda d: save_rgb(np.zeros((1, 1, 3)), d / "one.png"), "at least"),
    ],
)
def test_bad_inputs_raise_one_line_input_error(tmp_path, make, msg):
    p = make(tmp_path)
    with pytest.raises(InputError) as e:
        load_image(p)
    assert msg in str(e.value) and "\n" not in str(e.value)


def _write(p, data):
    p.write_bytes(data)
    return p


def _truncated_jpeg(d):
    p = save_rgb(textured(64, 64), d / "full.jpg")
    data = p.read_bytes()
    return _write(d / "trunc.jpg", data[: len(data) // 2])


def test_working_size_never_upscales():
    assert working_size(4000, 3000, 768) == (768, 576)
    assert working_size(300, 200, 768) == (300, 200)
    assert working_size(500, 2000, 768) == (192, 768)


def test_resize_preserves_mean_colour():
    a = textured(200, 300)
    b = resize(a, 150, 100)
    assert b.shape == (100, 150, 3)
    assert np.allclose(a.mean((0, 1)), b.mean((0, 1)), atol=0.01)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_array_orientation_matches_pillow(orientation):
    from PIL import ImageOps

    from worldgen.image import _orient

    a = (np.random.default_rng(orientation).random((5, 7, 3)) * 255).astype(np.uint8)
    im = Image.fromarray(a)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.info["exif"] = exif.tobytes()
    ref = np.asarray(ImageOps.exif_transpose(im))
    assert np.array_equal(_orient(a, orientation), ref)


def _png16(a, path):
    """Write a 16-bit RGB PNG (Pillow cannot)."""
    import struct
    import zlib

    h, w, _ = a.shape
    raw = b"".join(b"\x00" + a[y].astype(">u2").tobytes() for y in range(h))

    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))

    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(raw))
        + chunk(b"IEND", b"")
    )
    return path


def test_16bit_rgb_tiff_keeps_precision(tmp_path):
    import tifffile

    a = (np.random.default_rng(1).random((12, 16, 3)) * 65535).astype(np.uint16)
    tifffile.imwrite(tmp_path / "x.tif", a)
    assert np.allclose(load_image(tmp_path / "x.tif").rgb, a / 65535.0, atol=1e-6)
