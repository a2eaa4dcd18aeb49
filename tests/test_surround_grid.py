"""No grid in the sky: the sky layers alone, seen wide and sharp, have no spectral peak. No
seam at the photo's frame: where the photo's content meets the surround, the image is no
sharper than beside it.

The splats of the sky dome (and the photo's sky) sit on a regular lattice; where they neither
overlap enough nor blend, the lattice shows as a faint grid, which the benchmark's
``grid_peak_ratio`` measures (acceptance < 3; ``benchmarks/surround_eval.py``).
"""

import numpy as np
import pytest

from benchmarks.surround_eval import (
    GRID_MAX,
    GRID_PITCH,
    GRID_YAWS,
    SEAM_MAX,
    VIEW,
    grid_peak_ratio,
    seam_ratio,
)
from tests.conftest import save_rgb
from tests.test_surround import ground_sky_scene
from worldgen.camera import Intrinsics, Pose
from worldgen.config import BuildConfig
from worldgen.pipeline import build
from worldgen.render import render_world
from worldgen.world import load_world

SIZE = (1920, 1080)


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    """A tiny outdoor world (textured ground, clear sky) built by the default pipeline, and the
    photo's intrinsics."""
    d = tmp_path_factory.mktemp("grid")
    img, _, _, intr, _ = ground_sky_scene()
    p = save_rgb(img, d / "gs.png")  # the popup prior finds its sky (a depth map would not)
    cfg = BuildConfig().replace(camera={"focal_px": intr.fx})
    return load_world(build(p, d / "gs.world", cfg, use_cache=False).path), intr


@pytest.fixture(scope="module")
def sky_renders(tiny_world):
    """The sky layers (kind "sky": the photo's sky and the dome) of the tiny world,
    1920x1080, hfov 90, pitch 20, at the benchmark's yaws (CPU rasterizer, float)."""
    w, _ = tiny_world
    assert {x["name"] for x in w.manifest["layers"] if x["kind"] == "sky"} >= {"sky", "sky-dome"}
    K = Intrinsics.from_hfov(90, *SIZE)
    out = {}
    for yaw in GRID_YAWS:
        r = render_world(
            w, Pose.from_cli(0, 0, 0, yaw, GRID_PITCH, 0), K, layers="sky", backend="cpu"
        )
        out[yaw] = (r.rgb.numpy().astype(np.float64), r.alpha.numpy() >= 0.5)
    return out


def test_the_measure_sees_a_grid_in_these_renders(sky_renders):
    """The renders are covered enough to measure, and a faint lattice on them is found."""
    rgb, covered = sky_renders[0]
    assert covered.mean() > 0.5
    yy, xx = np.mgrid[0 : SIZE[1], 0 : SIZE[0]]
    lattice = 1 - 0.03 * ((xx % 12 < 2) | (yy % 12 < 2))
    peak = grid_peak_ratio(rgb * lattice[..., None], covered)
    assert peak.tiles >= 40 and peak.ratio > 2 * GRID_MAX, peak


def test_no_grid_in_the_sky(sky_renders):
    peaks = {yaw: grid_peak_ratio(rgb, covered) for yaw, (rgb, covered) in sky_renders.items()}
    assert all(p.tiles >= 40 for p in peaks.values()), peaks
    worst = max(peaks.values(), key=lambda p: p.ratio)
    assert worst.ratio < GRID_MAX, peaks


@pytest.mark.parametrize("yaw", [30, -30])
def test_no_seam_at_the_frame_edge(tiny_world, yaw):
    """The benchmark's seam criterion (acceptance: <= 1.5) with the frame's edge at the view's
    centre (the tiny photo's hfov is 60 degrees, so +-30 is the panoramas' +-45)."""
    w, intr = tiny_world
    r = render_world(w, Pose.from_cli(0, 0, 0, yaw, 0, 0), VIEW, backend="cpu")
    assert float((r.alpha < 0.5).float().mean()) == 0.0
    ratio = seam_ratio(r.rgb.numpy().astype(np.float64), yaw, src=intr, view=VIEW)
    assert ratio <= SEAM_MAX, ratio
