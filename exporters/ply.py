"""INRIA 3DGS PLY export (``--to ply``): the format every splat tool reads.

Binary little-endian, one ``vertex`` element of ``float`` properties in the exact INRIA order
``x y z nx ny nz f_dc_0..2 f_rest_* opacity scale_0..2 rot_0..3`` (``worldgen.splats``), values
pre-activation (logit opacity, log scale, SH coefficients; ``rot_0`` = w of a unit
quaternion). SH degree selectable (``--sh-degree``): 0 -> 17 floats = 68 B/splat, 1 -> 26,
2 -> 41, 3 -> 62 floats = 248 B/splat (never more than the world has).

Frame: the gravity-levelled OpenCV frame (``exporters.common``, "opencv"): x right, y down,
z forward, i.e. worldgen's world frame as ``(X, -Y, -Z)``. Splats are ordered by importance,
largest first (``exporters.common.prepare``).
"""

from __future__ import annotations

from worldgen.splats import ply_bytes

from .common import prepare
from .registry import Exporter, ExportOptions, register_exporter

FRAME = "opencv"


def export_ply(world, options: ExportOptions) -> bytes:
    """The world's splats as an INRIA 3DGS PLY (levelled OpenCV frame)."""
    return ply_bytes(prepare(world, options, FRAME))


register_exporter(
    Exporter(
        name="ply",
        kind="file",
        extension=".ply",
        description="INRIA 3DGS PLY (levelled OpenCV axes: x right, y down, z forward)",
        export=export_ply,
    )
)
