"""antimatter15 ``.splat`` export (``--to splat``): 32 bytes per splat, no header, no SH.

Per splat, little-endian: position 3 x f32, scale 3 x f32 (linear, ``exp(log_scale)``),
colour RGBA 4 x u8 (``rgb = round(clip(0.5 + C0 f_dc, 0, 1) 255)``, ``a = round(sigmoid(opacity)
255)``), rotation 4 x u8 in the order w, x, y, z (``round(clip(q / |q| 128 + 128, 0, 255))``).
Splats are sorted by ``exp(sum log_scale) * opacity``, largest first (the format's convention;
``exporters.common.importance``).

Frame: the gravity-levelled OpenCV frame (``exporters.common``, "opencv"), as the PLY export:
x right, y down, z forward. Readers treat ``.splat`` like a PLY (PlayCanvas, antimatter15).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from worldgen.errors import InputError
from worldgen.splats import SH_C0

from .common import prepare
from .registry import Exporter, ExportOptions, register_exporter

FRAME = "opencv"
RECORD = np.dtype([("pos", "<f4", 3), ("scale", "<f4", 3), ("rgba", "u1", 4), ("rot", "u1", 4)])
assert RECORD.itemsize == 32


def export_splat(world, options: ExportOptions) -> bytes:
    """The world's splats as an antimatter15 ``.splat`` file (SH degree 0 only)."""
    s = prepare(world, replace(options, sh_degree=0), FRAME)  # the format has no SH
    rec = np.zeros(len(s), RECORD)
    rec["pos"] = s.means.numpy()
    rec["scale"] = np.exp(s.log_scales.double().numpy())
    rgb = 0.5 + SH_C0 * s.sh[:, 0].double().numpy()
    alpha = 1.0 / (1.0 + np.exp(-s.logit_opacities.double().numpy()))
    rec["rgba"][:, :3] = _u8(rgb * 255.0)
    rec["rgba"][:, 3] = _u8(alpha * 255.0)
    rec["rot"] = _u8(s.quats.double().numpy() * 128.0 + 128.0)  # unit (prepare)
    return rec.tobytes()


def _u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(x), 0, 255).astype(np.uint8)


def read_splat(data: bytes) -> dict[str, np.ndarray]:
    """Decode a ``.splat`` file: ``means [N, 3]``, ``scales [N, 3]`` (linear), ``rgba [N, 4]``
    uint8, ``rgb [N, 3]`` and ``opacities [N]`` in [0, 1], ``quats [N, 4]`` (w, x, y, z, unit)."""
    if len(data) == 0 or len(data) % RECORD.itemsize:
        raise InputError(f"not a .splat file: {len(data)} bytes is not a positive multiple of 32")
    rec = np.frombuffer(data, RECORD)
    q = (rec["rot"].astype(np.float64) - 128.0) / 128.0
    n = np.linalg.norm(q, axis=1, keepdims=True)
    q = np.where(n > 0, q / np.where(n > 0, n, 1.0), np.array([1.0, 0, 0, 0]))
    return {
        "means": rec["pos"].astype(np.float32),
        "scales": rec["scale"].astype(np.float32),
        "rgba": rec["rgba"].copy(),
        "rgb": rec["rgba"][:, :3].astype(np.float32) / 255.0,
        "opacities": rec["rgba"][:, 3].astype(np.float32) / 255.0,
        "quats": q.astype(np.float32),
    }


register_exporter(
    Exporter(
        name="splat",
        kind="file",
        extension=".splat",
        description="antimatter15 .splat, 32 B/splat, no SH (levelled OpenCV axes)",
        export=export_splat,
    )
)
