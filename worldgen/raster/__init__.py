"""Splat rasterization: ``rasterize`` (image) and ``render_weights`` (sparse compositing weights).

Backends behind one API: "torch" (vectorised, default), "reference" (brute force, tests only);
conventions (gsplat's, pixel centres at integers) are documented in ``common.py``.
"""

from .api import (
    Backend,
    available_backends,
    rasterize,
    register_backend,
    render_weights,
    resolve_backend,
)
from .common import RasterSettings, RenderOutput, RenderWeights

__all__ = [
    "Backend",
    "RasterSettings",
    "RenderOutput",
    "RenderWeights",
    "available_backends",
    "rasterize",
    "register_backend",
    "render_weights",
    "resolve_backend",
]
