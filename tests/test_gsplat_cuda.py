"""The gsplat backend on a CUDA device against the float64 reference (forward and gradients):
runs only where CUDA is present (``scripts/gpu_check.sh``); CI has no GPU, so these are extra
checks, not coverage. The conventions are covered on CPU by ``test_gsplat_conventions.py``."""

from __future__ import annotations

import pytest
import torch

from tests.test_raster import CASES, random_scene
from tests.test_raster_cpu import check

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA device (extra GPU check, not coverage)"
)


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_gsplat_matches_reference(case, deg):
    n, seed, kw = CASES[case]
    splats, cam = random_scene(n, seed * 10 + deg, deg=deg, **kw)
    bg = (0.1, 0.3, 0.7) if deg % 2 else None
    check(splats, cam, bg, seed=seed, backend="gsplat")


def test_gsplat_is_auto_with_cuda():
    from worldgen.raster import resolve_backend

    assert resolve_backend("auto").name == "gsplat"
