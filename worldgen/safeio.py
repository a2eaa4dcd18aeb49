"""Readers that distrust their input: every file of a world bundle may come from a stranger.

Each reader checks sizes and counts against the file's length *before* allocating, reads with
no code execution (``allow_pickle=False``, JSON, our own PLY header parser), and turns every
failure into a ``BundleError`` (exit code 4) naming the file. ``benchmarks/fuzz.py`` and
``tests/test_fuzz.py`` feed them mutated files.

Limits (a world this tool builds is far below each):

- ``MAX_SPLATS`` splats in a PLY / SPZ / .splat / glTF file;
- ``MAX_JSON_BYTES`` for ``world.json`` and the layers' small JSON files, nesting bounded;
- ``MAX_IMAGE_PIXELS`` for a layer's PNG (decompression bombs refused before decoding);
- ``MAX_GLB_BYTES`` for ``collision.glb``.
"""

from __future__ import annotations

import io
import json
import struct
import warnings
from pathlib import Path

import numpy as np

from .errors import BundleError

MAX_SPLATS = 100_000_000
MAX_JSON_BYTES = 16 * 2**20
MAX_IMAGE_PIXELS = 64 * 2**20
MAX_GLB_BYTES = 512 * 2**20

_PLY_TYPES = {
    "char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
    "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
    "float": "f4", "float32": "f4", "double": "f8", "float64": "f8",
}  # fmt: skip


def _read(path: Path, limit: int, what: str) -> bytes:
    try:
        size = path.stat().st_size
        if size > limit:
            raise BundleError(f"{path}: {what} of {size:,} bytes is over the {limit:,} limit")
        return path.read_bytes()
    except OSError as e:
        raise BundleError(f"{path}: cannot read {what} ({e.strerror or e})") from None


def read_json(path: str | Path, what: str = "JSON file", limit: int = MAX_JSON_BYTES):
    """Parsed JSON of a small file (size and nesting bounded)."""
    path = Path(path)
    data = _read(path, limit, what)
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError, ValueError) as e:
        msg = "nested too deeply" if isinstance(e, RecursionError) else str(e).splitlines()[0]
        raise BundleError(f"{path}: unreadable {what} ({msg})") from None


def parse_ply_header(data: bytes, where: str = "PLY") -> tuple[int, np.dtype, int]:
    """(vertex count, little-endian structured dtype, offset of the body) of a binary PLY
    whose only element is ``vertex``; the count is checked against the body's length."""
    end = data.find(b"end_header\n", 0, 1 << 16)
    if not data.startswith(b"ply\n") or end < 0:
        raise BundleError(f"{where}: not a PLY file (no 'ply' / 'end_header' in its first 64 KB)")
    try:
        lines = data[4:end].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise BundleError(f"{where}: PLY header is not ASCII") from None
    fmt, count, fields = None, None, []
    for line in lines:
        parts = line.split()
        if not parts or parts[0] in ("comment", "obj_info"):
            continue
        if parts[0] == "format" and len(parts) == 3:
            fmt = parts[1]
        elif parts[0] == "element" and len(parts) == 3:
            if count is not None or parts[1] != "vertex" or not parts[2].isdigit():
                raise BundleError(f"{where}: only one 'element vertex N' is read, got {line!r}")
            count = int(parts[2])
        elif parts[0] == "property" and len(parts) == 3 and count is not None:
            t, name = parts[1], parts[2]
            if t not in _PLY_TYPES:
                raise BundleError(f"{where}: unsupported PLY property type {t!r}")
            if name in (f[0] for f in fields) or len(fields) >= 256:
                raise BundleError(f"{where}: repeated property or too many properties")
            fields.append((name, "<" + _PLY_TYPES[t]))
        else:
            raise BundleError(f"{where}: unexpected PLY header line {line[:60]!r}")
    if fmt != "binary_little_endian":
        raise BundleError(f"{where}: PLY format {fmt!r} is not read (binary_little_endian only)")
    if count is None or not fields:
        raise BundleError(f"{where}: PLY header declares no vertex properties")
    if count > MAX_SPLATS:
        raise BundleError(f"{where}: {count:,} splats is over the {MAX_SPLATS:,} limit")
    dtype = np.dtype(fields)
    body = end + len(b"end_header\n")
    if len(data) - body != count * dtype.itemsize:
        raise BundleError(
            f"{where}: header declares {count:,} splats of {dtype.itemsize} bytes, the body "
            f"has {len(data) - body:,} bytes"
        )
    return count, dtype, body


def read_ply_array(path: str | Path) -> np.ndarray:
    """The vertex records of a binary little-endian PLY as a structured array."""
    path = Path(path)
    data = _read(path, 64 + MAX_SPLATS * 1024, "PLY file")
    n, dtype, off = parse_ply_header(data, str(path))
    return np.frombuffer(data, dtype, n, off).copy()  # writable, owns its memory


def load_npy(
    path: str | Path, what: str, kinds: str, ndim: int, max_items: int, header_only: bool = False
) -> np.ndarray:
    """An ``.npy`` array (no pickle) of dtype kind in ``kinds`` ('f', 'u', ...), ``ndim``
    dimensions and at most ``max_items`` elements; the header is checked before reading
    (``header_only``: and against the file's size; a zero-strided stand-in of that shape and
    dtype returned, nothing read)."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, _, dtype = np.lib.format.read_array_header_2_0(f)
            body = f.tell()
    except Exception as e:  # numpy's header parser raises ValueError, TokenError, ...
        msg = (str(e).splitlines() or [type(e).__name__])[0][:120]
        raise BundleError(f"{path}: unreadable {what} ({msg})") from None
    if not isinstance(shape, tuple) or not all(isinstance(k, int) and k >= 0 for k in shape):
        raise BundleError(f"{path}: {what} has an invalid shape {shape!r}")
    if dtype.hasobject or dtype.kind not in kinds or len(shape) != ndim:
        raise BundleError(f"{path}: {what} must be a {ndim}-D {kinds!r} array, got {dtype} {shape}")
    if int(np.prod(shape, dtype=np.float64)) > max_items:
        raise BundleError(f"{path}: {what} of shape {shape} is over the size limit")
    if header_only:
        size = path.stat().st_size - body
        if size != int(np.prod(shape, dtype=np.int64)) * dtype.itemsize:
            raise BundleError(f"{path}: {what} is {size} bytes, its header says {shape} {dtype}")
        return np.lib.stride_tricks.as_strided(np.zeros(1, dtype), shape, (0,) * len(shape))
    try:
        a = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise BundleError(f"{path}: unreadable {what} ({str(e).splitlines()[0][:120]})") from None
    return a


def load_png(path: str | Path, what: str, mode: str | None = None) -> np.ndarray:
    """A PNG's pixels (``mode``: convert to it), decompression bombs refused first."""
    from PIL import Image

    path = Path(path)
    data = _read(path, 1 << 30, what)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(data))
            if im.format != "PNG":
                raise BundleError(f"{path}: {what} is not a PNG ({im.format})")
            if im.width * im.height > MAX_IMAGE_PIXELS:
                raise BundleError(f"{path}: {what} of {im.width}x{im.height} is over the limit")
            im.load()
            if mode is not None and im.mode != mode:
                im = im.convert(mode)
            return np.asarray(im)
    except BundleError:
        raise
    except Exception as e:  # Pillow raises many kinds on malformed data
        raise BundleError(f"{path}: unreadable {what} ({type(e).__name__})") from None


def check_glb(data: bytes, where: str) -> None:
    """A glTF 2.0 binary container: header, chunk lengths, a JSON chunk of the right size."""
    if len(data) < 20 or data[:4] != b"glTF":
        raise BundleError(f"{where}: not a GLB")
    version, total = struct.unpack_from("<II", data, 4)
    if version != 2 or total != len(data):
        raise BundleError(f"{where}: GLB header says version {version}, {total} bytes")
    off, chunks = 12, 0
    while off + 8 <= len(data):
        length, _ = struct.unpack_from("<II", data, off)
        if off + 8 + length > len(data):
            raise BundleError(f"{where}: GLB chunk runs past the end of the file")
        if chunks == 0:
            try:
                gltf = json.loads(data[off + 8 : off + 8 + length].decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
                raise BundleError(f"{where}: GLB JSON chunk is not valid JSON") from None
            if not isinstance(gltf, dict):
                raise BundleError(f"{where}: GLB JSON is not an object")
        chunks += 1
        off += 8 + length
    if chunks == 0:
        raise BundleError(f"{where}: GLB has no chunks")


def load_collision_scene(path: str | Path):
    """``collision.glb`` as a ``trimesh.Scene``; any malformed file is a BundleError."""
    import trimesh

    path = Path(path)
    data = _read(path, MAX_GLB_BYTES, "collision mesh")
    check_glb(data, str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    except Exception as e:  # trimesh raises many kinds on malformed data
        raise BundleError(f"{path}: unreadable collision mesh ({type(e).__name__})") from None
