"""Depth backends: a registry, and ``auto`` that picks the best one that can run here.

Built-in: ``popup`` (embedded geometric prior, no weights) and ``file`` (a user depth map).
Learned backends register themselves here too.
"""

from __future__ import annotations

from collections.abc import Callable

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


def resolve_backend(name: str, *, depth_map: str | None = None) -> tuple[DepthBackend, str]:
    """The backend to use and a one-line reason (for the log and world.json)."""
    if depth_map is not None:
        if name not in ("auto", "file"):
            raise BackendError(f"--depth-map needs --depth file or auto, got --depth {name}")
        return get_backend("file"), "user depth map given (--depth-map)"
    if name == "file":
        raise BackendError("--depth file needs --depth-map FILE")
    if name != "auto":
        backend = get_backend(name)
        ok, why = backend.available()
        if not ok:
            raise BackendError(f"depth backend {name!r} cannot run here: {why}")
        return backend, "chosen with --depth"
    skipped = []
    for cand in _AUTO_ORDER:
        backend = get_backend(cand)
        ok, why = backend.available()
        if ok:
            reason = f"auto: {cand} ({why})"
            if skipped:
                reason += "; skipped " + "; ".join(skipped)
            return backend, reason
        skipped.append(f"{cand}: {why}")
    raise BackendError("no depth backend can run here: " + "; ".join(skipped))


def _register_builtins() -> None:
    from .file import FileDepthBackend
    from .popup import PopupBackend

    register("popup", PopupBackend, auto_rank=100)
    register("file", FileDepthBackend)


_register_builtins()
