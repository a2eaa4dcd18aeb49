"""Fill backend protocol: synthesise colour and depth where a mask says "unknown".

Used for the regions foreground layers hide (``hidden-region fill``) and for the canvas beyond
the photo (``outpaint``). The classical backend needs no weights; learned (diffusion) backends
plug into the same registry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np

from ..camera import Intrinsics


@dataclass
class FillResult:
    """rgb: [H, W, 3] float32; depth: [H, W] float32 z-depth (NaN where not synthesised and
    unknown); filled: [H, W] bool, the pixels that were synthesised; info: facts for world.json."""

    rgb: np.ndarray
    depth: np.ndarray
    filled: np.ndarray
    info: dict


@dataclass(frozen=True)
class GroundPlane:
    """The ground in camera axes: {X : normal . X = -height}; normal is the up vector."""

    normal: np.ndarray  # [3]
    height: float


class FillBackend(Protocol):
    name: str

    def available(self) -> tuple[bool, str]: ...

    def fill(
        self,
        image: np.ndarray,  # [H, W, 3] float32 in [0, 1]; values under `mask` are ignored
        mask: np.ndarray,  # [H, W] bool, True = synthesise
        *,
        depth: np.ndarray | None = None,  # [H, W] float32 z-depth; NaN/ignored under `mask`
        labels: np.ndarray | None = None,  # [H, W] uint8 semantic labels (depth.base)
        intrinsics: Intrinsics | None = None,
        ground: GroundPlane | None = None,
        seed: int = 0,
        **options,
    ) -> FillResult: ...
