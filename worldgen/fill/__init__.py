"""Fill backends (registry): ``classical`` (embedded, no weights) and ``diffusion`` (Stable
Diffusion inpainting, the ``[ml]`` extra; ``fill.diffusion``)."""

from __future__ import annotations

from collections.abc import Callable

from ..backends import first_runnable
from ..errors import BackendError
from .base import FillBackend, FillResult, GroundPlane

__all__ = [
    "FillBackend",
    "FillResult",
    "GroundPlane",
    "get_fill_backend",
    "register_fill",
    "resolve_fill_backend",
]

_REGISTRY: dict[str, Callable[..., FillBackend]] = {}
#: order in which `auto` tries fill backends
_AUTO_ORDER = ("diffusion", "classical")


def register_fill(name: str, factory: Callable[..., FillBackend]) -> None:
    """Add a backend; ``factory(**options)`` builds it (options a backend does not take are
    not passed: see :func:`resolve_fill_backend`)."""
    _REGISTRY[name] = factory


def available_fill_backends() -> list[str]:
    return sorted(_REGISTRY)


def get_fill_backend(name: str = "classical", **options) -> FillBackend:
    if name == "auto":
        name = "classical"
    try:
        factory = _REGISTRY[name]
    except KeyError:
        valid = ", ".join(["auto", *available_fill_backends()])
        raise BackendError(f"unknown fill backend {name!r}; valid: {valid}") from None
    return factory(**options)


def resolve_fill_backend(
    name: str = "auto",
    *,
    model: str | None = None,
    device: str = "auto",
    **learned_options,
) -> tuple[FillBackend, str]:
    """The fill backend to use and a one-line reason.

    ``auto`` picks ``diffusion`` only when its weights are already cached and the device is a
    GPU (never on a CPU unless asked for with ``--inpaint diffusion``), else ``classical``.
    ``model`` (``--inpaint-model``) without an explicit backend means ``diffusion``.
    ``learned_options`` (prompt, negative_prompt, steps, guidance, depth_model) go to learned
    backends only.
    """
    if model is not None and name == "auto":
        name = "diffusion"
    if model is not None and name == "classical":
        raise BackendError("--inpaint-model needs --inpaint diffusion, not classical")
    if name != "auto":
        if name == "classical":
            return get_fill_backend("classical"), "chosen with --inpaint"
        backend = get_fill_backend(name, model=model, device=device, **learned_options)
        ok, why = backend.available()
        if not ok:
            raise BackendError(f"fill backend {name!r} cannot run here: {why}")
        return backend, "chosen with --inpaint" + (" (--inpaint-model)" if model else "")
    candidates = (
        (
            cand,
            get_fill_backend("classical")
            if cand == "classical"
            else get_fill_backend(cand, model=model, device=device, **learned_options),
        )
        for cand in _AUTO_ORDER
    )
    return first_runnable(candidates, device, "fill")


def _register_builtins() -> None:
    from .classical import ClassicalFill
    from .diffusion import DiffusionFill

    register_fill("classical", ClassicalFill)
    register_fill("diffusion", DiffusionFill)


_register_builtins()
