"""The world all around the spawn: ground, distant band, sky (or a room's walls and ceiling).

Modules (one concept each)::

    geometry   the equirect convention in the world frame, photo <-> panorama sampling
    layout     where every direction's surface is, and the composition of the stages below
    ground     the ground: rectified top-down synthesis at the photo's scale
    band       the distant band's distance and skyline (texture: quilting, ``synthesis``)
    sky        the fitted sky model, clouds, the photo's sky blended in
    synthesis  texture synthesis and gradient-domain blending primitives
    learned    the learned surround: diffusion outpainting in perspective views (GPU)
    lift       splats for the surround and the sky dome (reduced, jittered grids)
    config     ``SurroundConfig``

Costs and measurements: README "The world all around" and ``benchmarks/surround_eval.py``.
"""

from .config import SurroundConfig
from .geometry import directions
from .layout import Panorama, extend
from .lift import lift_sky, lift_surround

__all__ = ["Panorama", "SurroundConfig", "directions", "extend", "lift_sky", "lift_surround"]
