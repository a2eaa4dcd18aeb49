"""What the backend registries (depth, fill) share: ``auto``'s walk down a preference list."""

from __future__ import annotations

from collections.abc import Iterable

from .errors import BackendError


def first_runnable(candidates: Iterable[tuple[str, object]], device: str, what: str):
    """The first (name, backend) of ``candidates`` that can run here, and a one-line reason
    naming what was skipped and why. A backend's ``auto_available(device=)`` (learned ones:
    weights cached, device fit) is asked when it has one, else its ``available()``. The
    candidates are consumed lazily, so later backends are not even built once one fits."""
    skipped = []
    for name, backend in candidates:
        check = getattr(backend, "auto_available", None)
        ok, why = check(device=device) if check else backend.available()
        if ok:
            reason = f"auto: {name} ({why})"
            if skipped:
                reason += "; skipped " + "; ".join(skipped)
            return backend, reason
        skipped.append(f"{name}: {why}")
    raise BackendError(f"no {what} backend can run here: " + "; ".join(skipped))
