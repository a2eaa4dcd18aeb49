"""worldgen: one photo in, an explorable 3D Gaussian-splat world out."""

__version__ = "0.3.0"
