"""Public entry points and the backend registry.

A backend is a function ``(splats, camera, settings: RasterSettings) -> RenderOutput``; register
more with ``register_backend``. ``auto`` picks gsplat (CUDA) when it can run, else the fast
``cpu`` tiles, else ``torch``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..camera import Camera
from ..errors import BackendError
from ..splats import Splats
from .common import RasterSettings, RenderOutput, RenderWeights, make_settings
from .cpu import available as cpu_available
from .cpu import rasterize_cpu
from .gsplat_backend import available as gsplat_available
from .gsplat_backend import rasterize_gsplat
from .reference import rasterize_reference
from .torch_backend import rasterize_torch, render_weights_torch

BackendFn = Callable[[Splats, Camera, RasterSettings], RenderOutput]


@dataclass(frozen=True)
class Backend:
    name: str
    fn: BackendFn
    #: whether it can run here (e.g. numba importable, a CUDA device present)
    is_available: Callable[[], bool] = lambda: True
    #: rank for backend="auto": the available backend with the highest priority wins
    auto_priority: int | None = None


_BACKENDS: dict[str, Backend] = {}


def register_backend(
    name: str,
    fn: BackendFn,
    *,
    is_available: Callable[[], bool] = lambda: True,
    auto_priority: int | None = None,
) -> None:
    """Add (or replace) a backend. ``auto_priority=None`` keeps it out of ``backend="auto"``."""
    if name == "auto":
        raise ValueError('"auto" is reserved')
    _BACKENDS[name] = Backend(name, fn, is_available, auto_priority)


register_backend("torch", rasterize_torch, auto_priority=0)
register_backend("reference", rasterize_reference)
register_backend("cpu", rasterize_cpu, is_available=cpu_available, auto_priority=10)
register_backend("gsplat", rasterize_gsplat, is_available=gsplat_available, auto_priority=20)


def available_backends() -> list[str]:
    """Names of the registered backends that can run on this machine."""
    return [name for name, b in _BACKENDS.items() if b.is_available()]


def resolve_backend(name: str) -> Backend:
    if name == "auto":
        cands = [b for b in _BACKENDS.values() if b.auto_priority is not None and b.is_available()]
        if not cands:
            raise BackendError("no raster backend is available")
        return max(cands, key=lambda b: b.auto_priority)
    b = _BACKENDS.get(name)
    if b is None:
        valid = ", ".join(["auto", *_BACKENDS])
        raise BackendError(f"unknown raster backend {name!r}; valid names: {valid}")
    if not b.is_available():
        raise BackendError(
            f"raster backend {name!r} cannot run here; available: {', '.join(available_backends())}"
        )
    return b


def rasterize(
    splats: Splats,
    camera: Camera,
    width: int | None = None,
    height: int | None = None,
    *,
    backend: str = "auto",
    sh_degree: int | None = None,
    background=None,
    near: float = 0.01,
    far: float = 1e10,
) -> RenderOutput:
    """Render ``splats`` seen by ``camera`` into a ``height x width`` image (default: the
    camera's size). ``background``: None (black), 3 floats or a [3] tensor. ``sh_degree``: None
    uses all of ``splats.sh_degree``; lower uses fewer coefficients. Conventions: ``common.py``.
    """
    b = resolve_backend(backend)
    settings = make_settings(
        splats,
        camera,
        width,
        height,
        sh_degree=sh_degree,
        background=background,
        near=near,
        far=far,
    )
    return b.fn(splats, camera, settings)


def render_weights(
    splats: Splats,
    camera: Camera,
    width: int | None = None,
    height: int | None = None,
    *,
    near: float = 0.01,
    far: float = 1e10,
) -> RenderWeights:
    """The sparse compositing weights of this view (torch backend): ``rasterize(...).rgb ==
    scatter_add(weight * colour[splat]) + final_T * background`` for the view's colours."""
    settings = make_settings(
        splats, camera, width, height, sh_degree=0, background=None, near=near, far=far
    )
    return render_weights_torch(splats, camera, settings)
