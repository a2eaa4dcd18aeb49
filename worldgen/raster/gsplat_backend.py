"""The CUDA backend: ``gsplat.rasterization`` (gsplat >= 1.5, "classic" mode, pinhole).

gsplat implements the conventions of ``common.py`` (they were written from it) except for pixel
coordinates: gsplat puts pixel centres at ``i + 0.5``, worldgen at ``i``, so gsplat gets the
principal point shifted by +0.5 px. ``gsplat_arguments`` builds everything gsplat is given; it
runs anywhere, and the test suite checks it on CPU against gsplat's own pure-torch projection
and SH functions (``tests/test_gsplat_conventions.py``). The rasterization itself needs CUDA:
``available()`` is true only with a CUDA device and gsplat importable, and ``auto`` then prefers
this backend. Inputs may live on the CPU (they are moved, differentiably); outputs come back on
the device of ``splats.means``, so callers need not care where the work ran.
"""

from __future__ import annotations

import importlib.util

import torch

from ..camera import Camera
from ..splats import Splats
from .common import EPS2D, RasterSettings, RenderOutput


def available() -> bool:
    """gsplat importable and a CUDA device present."""
    return torch.cuda.is_available() and importlib.util.find_spec("gsplat") is not None


def gsplat_arguments(
    splats: Splats, camera: Camera, settings: RasterSettings, device: torch.device | str
) -> dict:
    """Keyword arguments of ``gsplat.rasterization`` for one view, on ``device``."""
    dev = torch.device(device)
    deg = settings.sh_degree
    K = torch.as_tensor(camera.K, dtype=torch.float32).clone()
    K[0, 2] += 0.5  # gsplat's pixel-edge principal point (see common.py)
    K[1, 2] += 0.5
    return {
        "means": splats.means.float().to(dev),
        "quats": splats.quats.float().to(dev),  # gsplat normalises them
        "scales": torch.exp(splats.log_scales.float()).to(dev),
        "opacities": torch.sigmoid(splats.logit_opacities.float()).to(dev),
        "colors": splats.sh[:, : (deg + 1) ** 2].float().to(dev),
        "sh_degree": deg,
        "viewmats": torch.as_tensor(camera.viewmat, dtype=torch.float32)[None].to(dev),
        "Ks": K[None].to(dev),
        "width": settings.width,
        "height": settings.height,
        "near_plane": settings.near,
        "far_plane": settings.far,
        "eps2d": EPS2D,
        "backgrounds": settings.background.float()[None].to(dev),
        "render_mode": "RGB+ED",
        "rasterize_mode": "classic",
        "packed": False,
        "tile_size": 16,
        "radius_clip": 0.0,
    }


def rasterize_gsplat(splats: Splats, camera: Camera, settings: RasterSettings) -> RenderOutput:
    """``gsplat.rasterization`` on the CUDA device; differentiable (gsplat's CUDA backward)."""
    import gsplat

    out_dev = splats.means.device
    colors, alphas, _ = gsplat.rasterization(**gsplat_arguments(splats, camera, settings, "cuda"))
    rgb = colors[0, ..., :3]
    depth = colors[0, ..., 3].detach()
    alpha = alphas[0, ..., 0]
    return RenderOutput(rgb=rgb.to(out_dev), alpha=alpha.to(out_dev), depth=depth.to(out_dev))
