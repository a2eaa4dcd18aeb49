"""Resource limits: config values within sane ranges, and a memory / splat-count estimate made
before a build allocates anything.

``check_ranges(config)`` refuses (InputError, one line) NaN/inf numbers, negative counts and
absurd values (a 10^9 px working image, 10^8 refinement steps) in a preset or on the CLI.

``estimate(width, height, config)`` predicts a build's splat count and peak memory from the
working image size and the config alone: the photo's layers give at most ``(W / stride) x
(H / stride)`` splats each (the background's canvas with its margin, a hidden layer and up to
``layers.max_foreground_layers`` more, each bounded by the photo), the surround
``surround.width^2 / 2`` plus the sky ``sky_width^2 / 2`` (reduced grids: upper bounds), and
``refine.max_splats`` caps densification. Peak memory: ``BYTES_PER_SPLAT`` per splat (the
parameters, the colour solve's and the refinement's gradients and Adam moments, the PLY being
written) plus ``BYTES_PER_PIXEL`` per working pixel (the layers' images, depth maps, labels).
Both constants are measured (``benchmarks/soak.py --estimate`` prints predicted vs measured).
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass

from .errors import InputError

#: (min, max) of config values whose size a user could make absurd; ``None`` = no bound
RANGES: dict[str, tuple[float | None, float | None]] = {
    "image.max_side": (8, 16384),
    "camera.default_hfov_deg": (1, 179),
    "depth.camera_height": (1e-3, 1e4),
    "depth.sky_distance": (1e-2, 1e7),
    "depth.max_depth": (1e-2, 1e7),
    "depth.popup_segments": (1, 100_000),
    "lift.stride": (1, 64),
    "lift.colour_solve_iters": (0, 1000),
    "layers.max_levels": (1, 1000),
    "layers.max_foreground_layers": (0, 32),
    "fill.steps": (1, 1000),
    "surround.width": (16, 16384),
    "surround.sky_width": (16, 16384),
    "surround.ground_size": (8, 8192),
    "surround.learned_views": (1, 64),
    "surround.learned_view_size": (64, 4096),
    "collision.grid": (2, 4096),
    "refine.iters": (0, 100_000),
    "refine.max_splats": (1, 200_000_000),
}

BYTES_PER_SPLAT = 1400
"""Peak bytes per splat over a build (measured on the demos: parameters ~250 B, optimiser state
and gradients, rasterizer buffers, the PLY written)."""
BYTES_PER_PIXEL = 400
"""Peak bytes per working-image pixel besides the splats (layers, depth, labels, fill)."""
BASE_BYTES = 600 * 2**20
"""The interpreter with torch, numpy and worldgen imported."""


def _walk(d: dict, prefix: str = ""):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from _walk(v, f"{prefix}{k}.")
        else:
            yield f"{prefix}{k}", v


def check_ranges(config) -> None:
    """InputError for a non-finite number, a negative count or a value out of ``RANGES``."""
    for name, v in _walk(dataclasses.asdict(config)):
        if isinstance(v, bool) or not isinstance(v, int | float):
            continue
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(f"config: {name} must be a finite number, got {v}")
        lo, hi = RANGES.get(name, (None, None))
        if lo is None and isinstance(v, int) and name != "seed" and v < 0:
            raise InputError(f"config: {name} must be >= 0, got {v}")
        if lo is not None and v < lo:
            raise InputError(f"config: {name} must be >= {lo}, got {v}")
        if hi is not None and v > hi:
            raise InputError(f"config: {name} must be <= {hi}, got {v}")


@dataclass(frozen=True)
class Estimate:
    splats: int
    """Upper bound of the world's splat count."""
    bytes: int
    """Predicted peak resident memory of the build."""

    def describe(self) -> str:
        return f"~{self.splats:,} splats, ~{self.bytes / 2**30:.1f} GiB peak"


def estimate(width: int, height: int, config) -> Estimate:
    """Splat count and peak memory of a build of a ``width`` x ``height`` working image."""
    s = config.lift.stride
    margin = 1 + 2 * config.surround.canvas_margin if config.surround.enabled else 1.0
    per_layer = math.ceil(width * margin / s) * math.ceil(height * margin / s)
    n_layers = 2 + (config.layers.max_foreground_layers if config.layers.enabled else 0)
    n = per_layer * n_layers
    if config.surround.enabled:
        n += config.surround.width**2 // 2 + config.surround.sky_width**2 // 2
    if config.refine.iters > 0 and config.refine.densify_every > 0:
        n = max(n, min(config.refine.max_splats, 2 * n))
    pixels = width * height * margin**2 * n_layers
    return Estimate(int(n), int(BASE_BYTES + n * BYTES_PER_SPLAT + pixels * BYTES_PER_PIXEL))


def available_memory() -> int | None:
    """Bytes of memory available to this process (MemAvailable, or a cgroup's limit if
    lower); None where unknown."""
    avail = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except OSError:
        pass
    for p in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = open(p).read().strip()
        except OSError:
            continue
        if text.isdigit() and int(text) < (avail or 1 << 62):
            avail = int(text)
    return avail


def parse_bytes(text: str) -> int:
    """'8G', '512M', '2.5GiB', '1000000' -> bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 2**10, "M": 2**20, "G": 2**30, "T": 2**40}.get(t[-1:], 1)
    num = t[:-1] if t[-1:] in "KMGT" else t
    try:
        v = float(num) * mult
    except ValueError:
        raise InputError(f"--max-memory must be a size like 8G or 512M, got {text!r}") from None
    if not (v > 0 and math.isfinite(v)):
        raise InputError(f"--max-memory must be positive, got {text!r}")
    return int(v)


def check_memory(est: Estimate, max_memory: int | None) -> None:
    """InputError when the estimate exceeds ``max_memory`` (or, if None, the memory available
    here by more than 50 %: the estimate is conservative)."""
    limit, what = max_memory, "--max-memory"
    if limit is None:
        avail = available_memory()
        if avail is None or os.environ.get("WORLDGEN_NO_MEMORY_CHECK"):
            return
        limit, what = int(avail * 1.5), "the memory available here"
    if est.bytes > limit:
        raise InputError(
            f"this build needs {est.describe()}, over {what} ({limit / 2**30:.1f} GiB): use "
            "--preset fast, --max-splats N or a smaller photo"
        )


def importance(splats):
    """[N] torch float64: opacity x ellipsoid volume (up to a constant), the ranking
    ``export --max-splats`` keeps by (``exporters.common.importance``)."""
    import torch

    op = torch.sigmoid(splats.logit_opacities.detach().double())
    return op * torch.exp(splats.log_scales.detach().double().sum(dim=1))
