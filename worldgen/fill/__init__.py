"""Fill backends (registry): ``classical`` (embedded, no weights); learned ones register too."""

from __future__ import annotations

from collections.abc import Callable

from ..errors import BackendError
from .base import FillBackend, FillResult, GroundPlane

__all__ = ["FillBackend", "FillResult", "GroundPlane", "get_fill_backend", "register_fill"]

_REGISTRY: dict[str, Callable[[], FillBackend]] = {}


def register_fill(name: str, factory: Callable[[], FillBackend]) -> None:
    _REGISTRY[name] = factory


def available_fill_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_fill_backend(name: str = "classical") -> FillBackend:
    if name == "auto":
        name = "classical"
    try:
        return _REGISTRY[name]()
    except KeyError:
        valid = ", ".join(["auto", *available_fill_backends()])
        raise BackendError(f"unknown fill backend {name!r}; valid: {valid}") from None


def _register_builtins() -> None:
    from .classical import ClassicalFill

    register_fill("classical", ClassicalFill)


_register_builtins()
