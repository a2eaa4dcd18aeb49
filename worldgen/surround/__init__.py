"""The world all around the spawn: ground, distant band, sky (or a room's walls and ceiling).

Stages of the surround (one module each)::

    layout   where every direction's surface is (ground plane, band ring, sky / ceiling)
    lift     splats for the surround and the sky dome

Frames and the equirectangular convention: ``geometry``.
"""

from .config import SurroundConfig
from .geometry import directions
from .layout import Panorama, extend
from .lift import lift_sky, lift_surround

__all__ = ["Panorama", "SurroundConfig", "directions", "extend", "lift_sky", "lift_surround"]
