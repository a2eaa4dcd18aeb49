"""Splat rasterization: ``rasterize`` (image) and ``render_weights`` (sparse compositing weights).

Backends behind one API: "gsplat" (CUDA), "cpu" (numba/C++ tiles with a hand-written backward),
"torch" (vectorised pure PyTorch), "reference" (brute force, tests only); ``auto`` picks the
first of gsplat, cpu, torch that can run here;
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
