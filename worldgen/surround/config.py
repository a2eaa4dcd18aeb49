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
    yaw_extent_deg: float = 180.0
    """Degrees of yaw covered beside the photo on each side (180 = all around)."""
    width: int = 1024
    """Width of the full-sphere surround panorama in pixels (height = width / 2)."""
    sky_width: int = 512
    """Width of the full-sphere sky image in pixels."""
    ground_size: int = 256
    """Side in texels of the rectified ground map around the spawn (texel = the photo's near
    ground footprint)."""
    ground_patchmatch: bool = False
    """Complete the rectified ground map by PatchMatch from the photo's own ground (copies its
    structure: lane markings, railings, stones) instead of the structure-free random-phase
    texture blended in the gradient domain (the default)."""
    min_wall_distance: float = 2.0
    """Nearest the walls may come to the spawn point indoors (metres)."""
    min_band_distance: float = 20.0
    """Nearest the distant band may come to the spawn point outdoors (metres)."""
    max_wall_distance: float = 60.0
    """Farthest band / wall distance (metres)."""
    max_skyline_deg: float = 15.0
    """Highest elevation of the synthesised skyline outdoors (degrees)."""
    blend_deg: float = 40.0
    """Angle over which the band's distance and skyline go from the photo's edge values to the
    synthesised ones."""
    seam_decay_deg: float = 6.0
    """Reach of the gradient-domain correction at the photo's frame (degrees)."""
    ceiling_height: float = 2.7
    """Ceiling height above the floor indoors (metres), when the depth backend gives none."""
    footprint_scale: float = 0.8
    """Splat standard deviation as a fraction of the panorama pixel footprint (>= 0.75 leaves
    no gaps between neighbouring splats)."""
    sky_jitter: float = 0.5
    """Largest move of a sky splat (the dome's and the photo's sky layer's) as a fraction of its
    cell: a jittered lattice shows no grid however magnified (0 = a regular lattice)."""
    presharpen: float = 1.0
    """Unsharp-mask amount applied to the synthesised surround before lifting (compensates the
    splats' own Gaussian blur; 0 = off)."""
    learned_views: int = 8
    """Views around the horizon of the learned surround (the photo's slot included; used with
    the diffusion fill backend)."""
    learned_view_size: int = 512
    """Side in pixels of each learned surround view (the inpainting model's native size)."""
    sky_radius_factor: float = 1.05
    """The sky dome's radius as a multiple of the depth stage's sky distance (just behind the
    photo's own sky, which stays in front of it)."""
