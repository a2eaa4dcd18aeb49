"""Depth backends: a registry, and ``auto`` that picks the best one that can run here.

Built-in: ``popup`` (embedded geometric prior, no weights), ``file`` (a user depth map) and the
learned ``depth-pro`` / ``depth-anything-v2`` (transformers, the ``[ml]`` extra; ``depth.hf``).
"""

from __future__ import annotations

from collections.abc import Callable

from ..backends import first_runnable
from ..errors import BackendError
from .base import CEILING, GROUND, LABEL_NAMES, SKY, VERTICAL, DepthBackend, DepthEstimate

__all__ = [
    "CEILING",
    "GROUND",
    "LABEL_NAMES",
    "SKY",
    "VERTICAL",
    "DepthBackend",
    "DepthEstimate",
    "available_backends",
    "get_backend",
    "register",
    "resolve_backend",
]

_REGISTRY: dict[str, Callable[[], DepthBackend]] = {}
#: order in which `auto` tries backends (learned ones are inserted ahead of popup)
_AUTO_ORDER: list[str] = []


def register(name: str, factory: Callable[[], DepthBackend], *, auto_rank: int | None = None):
    """Add a backend. ``auto_rank``: position in the `auto` preference list (None = never)."""
    _REGISTRY[name] = factory
    if auto_rank is not None and name not in _AUTO_ORDER:
        _AUTO_ORDER.insert(min(auto_rank, len(_AUTO_ORDER)), name)


def available_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_backend(name: str) -> DepthBackend:
    try:
        factory = _REGISTRY[name]
    except KeyError:
        valid = ", ".join(["auto", *available_backends()])
        raise BackendError(f"unknown depth backend {name!r}; valid: {valid}") from None
    return factory()


def resolve_backend(
    name: str,
    *,
    depth_map: str | None = None,
    model: str | None = None,
    device: str = "auto",
) -> tuple[DepthBackend, str]:
    """The backend to use and a one-line reason (for the log and world.json).

    ``model``: a learned model id or folder (``--depth-model``); with ``auto`` it means "use a
    learned backend with this model" (``depth-pro`` for Depth Pro checkpoints, else
    ``depth-anything-v2``, which runs any transformers depth model). ``auto`` without a model
    picks a learned backend only when its weights are already cached and the device runs it in
    reasonable time (backends with an ``auto_available`` method say so), else the next one.
    """
    if depth_map is not None:
        if name not in ("auto", "file"):
            raise BackendError(f"--depth-map needs --depth file or auto, got --depth {name}")
        if model is not None:
            raise BackendError("--depth-model cannot be combined with --depth-map")
        return get_backend("file"), "user depth map given (--depth-map)"
    if name == "file":
        raise BackendError("--depth file needs --depth-map FILE")
    if model is not None and name == "auto":
        name = (
            "depth-pro"
            if "depthpro" in model.replace("_", "").replace("-", "").lower()
            else ("depth-anything-v2")
        )
        backend = get_backend(name)
        ok, why = backend.available()
        if not ok:
            raise BackendError(f"--depth-model {model}: {why}")
        return backend, f"--depth-model given: {name}"
    if model is not None and not hasattr(get_backend(name), "auto_available"):
        raise BackendError(f"--depth-model needs a learned depth backend, not --depth {name}")
    if name != "auto":
        backend = get_backend(name)
        ok, why = backend.available()
        if not ok:
            raise BackendError(f"depth backend {name!r} cannot run here: {why}")
        return backend, "chosen with --depth"
    return first_runnable(((c, get_backend(c)) for c in _AUTO_ORDER), device, "depth")


def _register_builtins() -> None:
    from .file import FileDepthBackend
    from .hf import depth_anything_v2, depth_pro
    from .popup import PopupBackend

    register("popup", PopupBackend, auto_rank=100)
    register("file", FileDepthBackend)
    # learned (transformers; imported lazily when used): ahead of popup in `auto`
    register("depth-pro", depth_pro, auto_rank=0)
    register("depth-anything-v2", depth_anything_v2, auto_rank=1)


_register_builtins()
