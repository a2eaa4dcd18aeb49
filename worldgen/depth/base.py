"""Depth backend protocol and result type."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from ..camera import Intrinsics

# semantic labels shared by depth backends, layering and collision
GROUND, VERTICAL, SKY, CEILING = 0, 1, 2, 3


@dataclass(frozen=True)
class DepthConfig:
    backend: str = "auto"
    """Depth backend: auto, popup, file, depth-anything-v2, depth-pro (see `worldgen models`)."""
    model: str | None = None
    """Learned depth model: a hub id or a local folder (default: the backend's own)."""
    device: str = "auto"
    """Device for the learned depth model: auto (cuda > mps > cpu), cpu, cuda, mps."""
    depth_map: str | None = None
    """User depth map (.npy float32 metres or 16-bit PNG millimetres); implies backend=file."""
    camera_height: float = 1.6
    """Camera height above the ground in metres; sets the metric scale of relative depth."""
    sky_distance: float = 200.0
    """Radius of the far sky dome in metres."""
    max_depth: float = 80.0
    """Farthest distance given to ground and vertical surfaces in metres."""
    popup_segments: int = 400
    """Number of superpixels the popup backend segments the image into."""


LABEL_NAMES = {GROUND: "ground", VERTICAL: "vertical", SKY: "sky", CEILING: "ceiling"}


@dataclass
class DepthEstimate:
    """What a depth backend returns, at working resolution.

    depth:         [H, W] float32 z-depth along the optical axis; NaN = unknown
    kind:          "metric" (metres), "relative" (z-depth up to scale) or "disparity"
                   (affine-invariant inverse depth; converted by the scale stage)
    labels:        [H, W] uint8 GROUND / VERTICAL / SKY / CEILING, or None if unknown
    focal_px:      focal length predicted by the model, working pixels, or None
    ground_normal: [3] up direction (against gravity) in camera axes, or None
    info:          backend-specific facts for world.json (JSON-serialisable)
    """

    depth: np.ndarray
    kind: str
    labels: np.ndarray | None = None
    focal_px: float | None = None
    ground_normal: np.ndarray | None = None
    info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        assert self.depth.ndim == 2, self.depth.shape
        assert self.kind in ("metric", "relative", "disparity"), self.kind
        if self.labels is not None:
            assert self.labels.shape == self.depth.shape and self.labels.dtype == np.uint8


class DepthBackend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]:
        """Whether it can run here, and why (or why not)."""
        ...

    def estimate(self, image: np.ndarray, intrinsics: Intrinsics, **options) -> DepthEstimate:
        """image: [H, W, 3] float32 sRGB in [0, 1]."""
        ...
