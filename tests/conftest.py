"""Shared fixtures: tiny synthetic scenes made on the fly (no binaries committed)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent
DEMOS = sorted((REPO / "demos").glob("*.jpg"))


def default_sigint() -> None:
    """``preexec_fn`` for a child a test sends SIGINT: Ctrl-C's default disposition, whatever
    the suite inherited (a shell running it in the background without job control ignores
    SIGINT, and so would every child: a Ctrl-C test would pass or fail by how CI was
    started)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Every test gets its own stage cache and an empty, offline Hugging Face cache (never the
    user's ~/.cache: `auto` must not find real weights, nothing is downloaded)."""
    monkeypatch.setenv("WORLDGEN_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    """[h, w, 3] float32: smooth random colours plus a fine pattern (features to track)."""
    rng = np.random.default_rng(seed)
    from scipy.ndimage import gaussian_filter

    base = gaussian_filter(rng.random((h, w, 3)), sigma=(6, 6, 0))
    base = (base - base.min()) / (base.max() - base.min())
    yy, xx = np.mgrid[0:h, 0:w]
    check = ((xx // 8 + yy // 8) % 2).astype(np.float32)[..., None]
    return (0.15 + 0.55 * base + 0.3 * check).clip(0, 1).astype(np.float32)


def save_rgb(a: np.ndarray, path: Path, **kw) -> Path:
    from PIL import Image

    Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)).save(path, **kw)
    return path


def tool(name: str) -> str:
    """Path of a third-party validator installed by tools/setup.sh --test (node_modules).

    Missing tools fail the test: set WORLDGEN_ALLOW_MISSING_TOOLS=1 to skip instead (local dev
    only; CI installs them).
    """
    p = REPO / "node_modules" / ".bin" / name
    if not p.exists():
        p = REPO / "node_modules" / name  # a library, not a command
    if p.exists() and shutil.which("node"):
        return str(p)
    if os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
        pytest.skip(f"{name} not installed (run tools/setup.sh --test)")
    pytest.fail(f"{name} not installed: run `bash tools/setup.sh --test`")


@pytest.fixture(scope="session")
def small_world(tmp_path_factory) -> Path:
    """A small layered world bundle (96x72 synthetic photo, default preset) shared by the
    exporter and viewer tests. Read-only: tests copy it before changing anything."""
    from worldgen.pipeline import build

    d = tmp_path_factory.mktemp("small_world")
    img = save_rgb(textured(72, 96, seed=3), d / "photo.png")
    return build(img, d / "small.world", use_cache=False).path
