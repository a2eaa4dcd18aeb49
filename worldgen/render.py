"""Headless rendering of a world from any pose (CPU rasterizer)."""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from .camera import Camera, Intrinsics, Pose
from .errors import InputError
from .world import World

MAX_RENDER_SIDE = 8192


def render_intrinsics(
    world: World,
    size: tuple[int, int] | None = None,
    focal_px: float | None = None,
    principal: tuple[float, float] | None = None,
) -> Intrinsics:
    """Intrinsics of the rendered image: the source camera's (working resolution), rescaled to
    ``size`` if given, with ``focal_px`` / ``principal`` (pixels of the rendered image) on top."""
    intr = world.intrinsics
    if size is not None:
        w, h = size
        if not (1 <= w <= MAX_RENDER_SIDE and 1 <= h <= MAX_RENDER_SIDE):
            raise InputError(f"--size must be within 1..{MAX_RENDER_SIDE} pixels, got {w}x{h}")
        intr = intr.scaled_to(w, h)
    if focal_px is not None:
        if not (focal_px > 0 and np.isfinite(focal_px)):
            raise InputError(f"--focal-px must be a positive number, got {focal_px}")
        intr = Intrinsics(focal_px, focal_px, intr.cx, intr.cy, intr.width, intr.height)
    if principal is not None:
        intr = Intrinsics(intr.fx, intr.fy, principal[0], principal[1], intr.width, intr.height)
    return intr


def render_world(
    world: World,
    pose: Pose | None = None,
    intrinsics: Intrinsics | None = None,
    *,
    backend: str = "auto",
    background=None,
    layers: Iterable[str] | str | None = None,
):
    """Render ``world`` from ``pose`` (source-camera axes, Conventions). Returns RenderOutput.

    ``layers``: only the splats of these layers (names or kinds, ``World.select_layers``)."""
    from .raster import rasterize

    if layers is not None:
        world = world.select_layers(layers)
    intr = intrinsics or world.intrinsics
    cam = Camera(intr, pose or Pose.identity())
    return rasterize(
        world.splats, cam, intr.width, intr.height, backend=backend, background=background
    )
