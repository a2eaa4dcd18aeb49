"""Everything that draws for display: the GL splat renderer (shaders, GPU buffers, sorting),
headless rendering on EGL, stereo pairs and omni-directional stereo panoramas, the viewer.

Submodules import moderngl / numba only when used; the names below load on first access.

* ``SplatRenderer(ctx, splats, sort="auto")`` and ``FrameStats``: ``renderer.splat_renderer``
* ``render_gl``, ``OffscreenRenderer``, ``FrameSource``: ``renderer.offscreen``
* ``radix_argsort``, ``CpuSorter``, ``GpuSorter``: ``renderer.sort``
* SBS / ODS geometry (numpy only): ``renderer.stereo``
"""

from __future__ import annotations

import importlib

_LAZY = {
    "SplatRenderer": "splat_renderer",
    "FrameStats": "splat_renderer",
    "render_gl": "offscreen",
    "OffscreenRenderer": "offscreen",
    "FrameSource": "offscreen",
    "radix_argsort": "sort",
    "CpuSorter": "sort",
    "GpuSorter": "sort",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
