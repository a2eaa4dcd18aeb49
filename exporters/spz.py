"""Niantic SPZ export (``--to spz``): gzip-compressed, quantised splats (~10x smaller than PLY).

Layout (github.com/nianticlabs/spz, versions 2 and 3): gzip of a 16-byte header
``{u32 magic 0x5053474e, u32 version, u32 numPoints, u8 shDegree, u8 fractionalBits, u8 flags,
u8 reserved}`` followed by the columns, each for all splats in turn:

* positions: 3 x signed 24-bit fixed point, ``round(p * 2^fractionalBits)`` (12 fractional bits,
  0.24 mm, as Niantic's writer; fewer only if a coordinate exceeds +-2048 m);
* alphas: u8 ``round(sigmoid(logit) 255)``;
* colours: u8 ``round(f_dc 0.15 255 + 127.5)`` (SH DC coefficient, not colour);
* scales: u8 ``round((log s + 10) 16)`` (so ``exp(-10)`` to ``exp(5.9)`` m);
* rotations: version 2: x, y, z of the unit quaternion with w >= 0 as u8
  ``round(c 127.5 + 127.5)``; version 3: "smallest three": the index of the largest component
  in the top 2 bits, then the other three as sign + 9-bit magnitude of ``|c| / sqrt(1/2)``;
* SH degree 1-3: i8-like u8 ``round(c 128) + 128``, coefficient-major, channel-minor, bucketed
  to 5 bits (degree 1) and 4 bits (degrees 2-3) like Niantic's default ``PackOptions``.

Version 2 is the default because Unity's importer (aras-p UnityGaussianSplatting) reads only
version 2; version 3 (``--spz-version 3``) has more accurate rotations at +1 B/splat.

Frame: SPZ stores splats in RUB axes (x right, y up, z back: Niantic's README, "Coordinate
System"). The scene is the one our PLY export holds in its levelled OpenCV = RDF axes (x right,
y down, z front); converting RDF -> RUB flips y and z, which gives worldgen's *world frame*
(+Y up, the source camera facing -Z). So the file holds world-frame coordinates, and a reader
that converts to RDF (Niantic's ``UnpackOptions{to: RDF}``, ``read_spz(..., frame="rdf")``)
gets exactly the PLY export. Readers that ignore SPZ's axes and decode raw (PlayCanvas
splat-transform 3.7.0, aras-p's Unity importer) see the world frame, Y up: relative to the
PLY export the scene is rotated 180 degrees about X there.
"""

from __future__ import annotations

import gzip
import struct
import zlib

import numpy as np

from worldgen.errors import InputError, OutputError
from worldgen.splats import SH_C0

from .common import prepare
from .registry import Exporter, ExportOptions, register_exporter

FRAME = "world"  # = RUB axes of the levelled scene (see the module docstring)
MAGIC = 0x5053474E  # "NGSP"
HEADER = struct.Struct("<IIIBBBB")
VERSIONS = (2, 3)
COLOR_SCALE = 0.15
FRACTIONAL_BITS = 12
SH1_BITS, SH_REST_BITS = 5, 4
_SQRT1_2 = np.float32(0.7071067811865476)

#: RUB <-> RDF (flip y and z) sign of each of the 15 higher SH coefficients, in the basis order
#: of ``exporters.common.sh_basis``: Niantic's ``coordinateConverter`` table with x=1, y=z=-1
RDF_SH_FLIP = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], np.float32)


def export_spz(world, options: ExportOptions, version: int | None = None) -> bytes:
    """The world's splats as an SPZ file of ``version`` 2 or 3 (default:
    ``options.extra["spz_version"]``, else 2)."""
    if version is None:
        version = options.extra.get("spz_version", 2)
    if version not in VERSIONS:
        raise InputError(f"--spz-version must be 2 or 3, got {version}")
    s = prepare(world, options, FRAME)
    n = len(s)
    means = s.means.double().numpy()
    deg = s.sh_degree

    maxabs = float(np.abs(means).max()) if n else 0.0
    limit = 2**23 - 1
    bits = FRACTIONAL_BITS
    while bits > 0 and round(maxabs * 2**bits) > limit:
        bits -= 1
    if round(maxabs * 2**bits) > limit:
        raise OutputError(f"a splat lies {maxabs:.3g} m out: beyond SPZ's 24-bit positions")
    fixed = np.rint(means * 2**bits).astype("<i4")
    positions = fixed.view(np.uint8).reshape(n, 3, 4)[:, :, :3]

    alphas = _u8(255.0 / (1.0 + np.exp(-s.logit_opacities.double().numpy())))
    colors = _u8(s.sh[:, 0].double().numpy() * (COLOR_SCALE * 255.0) + 127.5)
    scales = _u8((s.log_scales.double().numpy() + 10.0) * 16.0)
    q = s.quats.double().numpy()[:, [1, 2, 3, 0]]  # unit (prepare), xyzw as SPZ
    rotations = _pack_first_three(q) if version == 2 else _pack_smallest_three(q)

    parts = [
        HEADER.pack(MAGIC, version, n, deg, bits, 0, 0),
        positions.tobytes(),
        alphas.tobytes(),
        colors.tobytes(),
        scales.tobytes(),
        rotations.tobytes(),
    ]
    if deg > 0:
        rest = s.sh[:, 1:, :].double().numpy()  # [N, K-1, 3]: coefficient-major, channel-minor
        bucket = np.full(rest.shape[1], 1 << (8 - SH_REST_BITS))
        bucket[:3] = 1 << (8 - SH1_BITS)
        qsh = np.clip(np.rint(rest * 128.0) + 128.0, 0, 255).astype(np.int32)
        b = bucket[None, :, None]
        qsh = np.clip((qsh + b // 2) // b * b, 0, 255).astype(np.uint8)
        parts.append(qsh.tobytes())
    return gzip.compress(b"".join(parts), compresslevel=6, mtime=0)


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def _pack_first_three(q: np.ndarray) -> np.ndarray:
    """v2: [N, 3] u8 of x, y, z with w made non-negative."""
    q = np.where(q[:, 3:4] < 0, -q, q)
    return _u8(q[:, :3] * 127.5 + 127.5)


def _pack_smallest_three(q: np.ndarray) -> np.ndarray:
    """v3: [N, 4] u8, little-endian u32 ``largest << 30 | (sign << 9 | mag) << 10k ...``."""
    n = len(q)
    q = q.astype(np.float32)
    largest = np.argmax(np.abs(q), axis=1)
    negate = q[np.arange(n), largest] < 0
    comp = largest.astype(np.uint32)
    for i in range(4):
        keep = largest != i
        negbit = ((q[:, i] < 0) ^ negate).astype(np.uint32)
        mag = np.floor(np.float32(511) * (np.abs(q[:, i]) / _SQRT1_2) + np.float32(0.5))
        mag = np.minimum(mag, 511).astype(np.uint32)
        comp = np.where(keep, (comp << 10) | (negbit << 9) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(n, 4)


def read_spz(data: bytes, frame: str = "rub") -> dict:
    """Decode an SPZ file of version 2 or 3 (gzip).

    ``frame``: "rub" (as stored: for our exports, worldgen's world frame) or "rdf" (converted
    like Niantic's ``UnpackOptions{to: RDF}``: for our exports, the PLY export's frame; the
    rotations are converted Niantic's way, ``(w, x, -y, -z)``, which gives the same ellipsoid
    as the PLY's quaternion, possibly turned 180 degrees about one of its own axes).
    Returns ``version``, ``sh_degree``, ``fractional_bits``, ``flags`` and arrays ``means
    [N, 3]``, ``quats [N, 4]`` (w, x, y, z, unit), ``log_scales``/``scales [N, 3]``,
    ``opacities [N]``, ``sh [N, K, 3]`` (``sh[:, 0]`` the DC coefficient) and ``rgb [N, 3]``.
    """
    if frame not in ("rub", "rdf"):
        raise InputError(f"frame must be 'rub' or 'rdf', got {frame!r}")
    if data[:2] != b"\x1f\x8b":
        what = "version 4 (ZSTD)" if data[:4] == b"NGSP" else "not gzip"
        raise InputError(f"not a readable SPZ file: {what}; only versions 2 and 3 are read")
    try:
        raw = gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as e:
        raise InputError(f"not a readable SPZ file ({e})") from None
    if len(raw) < HEADER.size:
        raise InputError("not a readable SPZ file: too short")
    magic, version, n, deg, bits, flags, _ = HEADER.unpack_from(raw)
    if magic != MAGIC:
        raise InputError(f"not an SPZ file (magic {magic:#x})")
    if version not in VERSIONS:
        raise InputError(f"SPZ version {version} is not read (only 2 and 3)")
    if deg > 3:
        raise InputError(f"SPZ SH degree {deg} is not supported (0 to 3)")
    k = (deg + 1) ** 2
    rot_size = 3 if version == 2 else 4
    sizes = [9 * n, n, 3 * n, 3 * n, rot_size * n, 3 * (k - 1) * n]
    if len(raw) < HEADER.size + sum(sizes):
        raise InputError(f"SPZ file is truncated: {len(raw)} bytes for {n} splats")
    cols, off = [], HEADER.size
    for size in sizes:
        cols.append(np.frombuffer(raw, np.uint8, size, off))
        off += size
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = cols

    p = pos_b.reshape(n, 3, 3).astype(np.int32)
    fixed = p[..., 0] | (p[..., 1] << 8) | (p[..., 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    means = fixed.astype(np.float64) / (1 << bits)
    log_scales = scale_b.reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    opacities = alpha_b.astype(np.float64) / 255.0
    dc = (color_b.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / COLOR_SCALE
    if version == 2:
        xyz = rot_b.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - (xyz**2).sum(1)))
        qxyzw = np.concatenate([xyz, w[:, None]], 1)
    else:
        qxyzw = _unpack_smallest_three(rot_b.reshape(n, 4))
    qxyzw /= np.linalg.norm(qxyzw, axis=1, keepdims=True)
    sh = np.zeros((n, k, 3))
    sh[:, 0] = dc
    if k > 1:
        sh[:, 1:] = (sh_b.reshape(n, k - 1, 3).astype(np.float64) - 128.0) / 128.0
    if frame == "rdf":
        means = means * np.array([1.0, -1.0, -1.0])
        qxyzw = qxyzw * np.array([1.0, -1.0, -1.0, 1.0])
        if k > 1:
            sh[:, 1:] *= RDF_SH_FLIP[: k - 1, None]
    f32 = np.float32
    return {
        "version": version,
        "sh_degree": deg,
        "fractional_bits": bits,
        "flags": flags,
        "means": means.astype(f32),
        "quats": qxyzw[:, [3, 0, 1, 2]].astype(f32),
        "log_scales": log_scales.astype(f32),
        "scales": np.exp(log_scales).astype(f32),
        "opacities": opacities.astype(f32),
        "sh": sh.astype(f32),
        "rgb": (0.5 + SH_C0 * dc).astype(f32),
    }


def _unpack_smallest_three(b: np.ndarray) -> np.ndarray:
    comp = b.astype(np.uint32)
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    largest = (comp >> 30).astype(np.int64)
    q = np.zeros((len(b), 4))
    for j in (3, 2, 1, 0):
        here = largest != j
        mag = (comp & 511).astype(np.float64)
        neg = (comp >> 9) & 1
        v = np.sqrt(0.5) * mag / 511.0
        q[:, j] = np.where(here, np.where(neg == 1, -v, v), 0.0)
        comp = np.where(here, comp >> 10, comp)
    rows = np.arange(len(b))
    q[rows, largest] = np.sqrt(np.maximum(0.0, 1.0 - (q**2).sum(1)))
    return q


def _export(world, options: ExportOptions) -> bytes:
    return export_spz(world, options)


register_exporter(
    Exporter(
        name="spz",
        kind="file",
        extension=".spz",
        description="Niantic SPZ v2 (v3 with --spz-version 3), gzip, RUB axes (= world frame)",
        export=_export,
    )
)
