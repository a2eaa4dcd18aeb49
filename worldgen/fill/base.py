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


@dataclass(frozen=True)
class FillConfig:
    backend: str = "auto"
    """Fill backend for hidden regions and the outpainted surroundings: auto, classical,
    diffusion (auto: diffusion only with cached weights and a GPU)."""
    model: str | None = None
    """Inpainting model of the diffusion backend: a hub id or a local folder
    (default stable-diffusion-v1-5/stable-diffusion-inpainting)."""
    device: str = "auto"
    """Device for the diffusion backend: auto (cuda > mps > cpu), cpu, cuda, mps."""
    prompt: str | None = None
    """Text prompt for the diffusion fill (default: empty, the context alone decides)."""
    negative_prompt: str | None = None
    """Negative prompt for the diffusion fill (default: blurry, text, watermark, ...)."""
    steps: int = 30
    """Denoising steps of the diffusion fill."""
    guidance: float = 7.5
    """Classifier-free guidance scale of the diffusion fill."""


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
