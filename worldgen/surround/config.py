"""The surround stage's configuration."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class SurroundConfig:
    enabled: bool = True
    """Extend the world beyond the photo (False = the world ends at the frame)."""
    canvas_margin: float = 0.08
    """The background layer's canvas extends this fraction of the photo's long side beyond each
    edge of the frame (filled like the hidden regions)."""
    yaw_extent_deg: float = 90.0
    """Degrees of yaw covered beside the photo on each side (180 = all around)."""
    width: int = 512
    """Width of the full-sphere panorama in pixels (height = width / 2)."""
    sky_width: int = 256
    """Width of the full-sphere sky image in pixels."""
    min_wall_distance: float = 2.0
    """Nearest the wall ring may come to the spawn point (metres)."""
    max_wall_distance: float = 60.0
    """Farthest wall ring distance (metres)."""
    blend_deg: float = 40.0
    """Angle over which the wall ring goes from the photo's edge values to their medians."""
    ceiling_height: float = 2.7
    """Ceiling height above the floor indoors (metres), when the depth backend gives none."""
    footprint_scale: float = 0.6
    """Splat standard deviation as a fraction of the panorama pixel footprint."""
