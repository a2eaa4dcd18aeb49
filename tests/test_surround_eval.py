"""The surround benchmark's pure measures: the sky's grid peak and the seam band geometry."""

import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from benchmarks import surround_eval as se


def smooth_sky(h=1080, w=1920, seed=0) -> np.ndarray:
    """[h, w, 3]: a vertical gradient with soft cloud-like noise (no period)."""
    rng = np.random.default_rng(seed)
    yy = np.mgrid[0:h, 0:w][0] / h
    clouds = gaussian_filter(rng.standard_normal((h, w)), 6)
    clouds = 0.08 * clouds / clouds.std()
    base = np.stack([0.35 + 0.2 * yy, 0.55 + 0.15 * yy, 0.95 - 0.1 * yy], -1)
    return np.clip(base + clouds[..., None], 0, 1)


def test_grid_peak_finds_a_lattice_and_not_smooth_noise():
    sky = smooth_sky()
    smooth = se.grid_peak_ratio(sky)
    assert smooth.tiles == 98 and smooth.ratio < 2.0, smooth
    # the same sky through a splat lattice: 2 % darker every 16 px in x and y
    yy, xx = np.mgrid[0:1080, 0:1920]
    lattice = 1 - 0.02 * (np.cos(2 * np.pi * xx / 16) * np.cos(2 * np.pi * yy / 16) > 0.5)
    grid = se.grid_peak_ratio(sky * lattice[..., None])
    assert grid.ratio > 3 * se.GRID_MAX, grid
    # horizontal bands (a row lattice) are found too: the frequency varies along y
    bands = se.grid_peak_ratio(sky * (1 - 0.02 * (yy % 13 < 2))[..., None])
    assert bands.ratio > se.GRID_MAX and abs(bands.angle_deg - 90) < 1, bands
    harmonic = 13 / bands.period_px  # the fundamental or one of its harmonics
    assert abs(harmonic - round(harmonic)) < 0.1, bands
    # 8-bit rounding of the smooth sky (what a PNG render holds) is no grid
    png = np.round(sky * 255) / 255
    assert se.grid_peak_ratio(png).ratio < 2.0


def test_grid_peak_only_uses_covered_tiles():
    sky = smooth_sky()
    sky[700:] = 0  # below the horizon: nothing drawn; its edge must not count as a peak
    r = se.grid_peak_ratio(sky)
    assert 0 < r.tiles < 98 and r.ratio < 2.0, r
    empty = se.grid_peak_ratio(np.zeros((300, 300, 3)))
    assert empty.tiles == 0 and math.isnan(empty.ratio)


@pytest.mark.parametrize("yaw", [45, -45])
def test_frame_edge_projects_to_the_view_centre_at_45(yaw):
    segs = se.frame_edge_segments(se.PHOTO, se.VIEW, yaw)
    # hfov 90: the photo's right (yaw 45) / left (yaw -45) edge is the view's centre column
    vertical = [i for i, (p, q) in enumerate(segs) if abs(p[0] - q[0]) < 1e-6]
    assert len(vertical) == 1
    p, q = segs[vertical[0]]
    assert p[0] == pytest.approx(191.5)
    top = 127.5 - 192 * (256 / 384) / math.sqrt(2)  # the corner's elevation seen at 45°
    assert sorted([p[1], q[1]]) == pytest.approx([top, 255 - top])
    # the other edge is behind the camera; top and bottom run off to the photo's side
    assert len(segs) == 3
    side = -1 if yaw > 0 else 1
    for i, (a, b) in enumerate(segs):
        if i != vertical[0]:
            far = a if abs(a[0] - 191.5) > abs(b[0] - 191.5) else b
            assert np.sign(far[0] - 191.5) == side


@pytest.mark.parametrize("yaw", [45, -45])
def test_seam_ratio_sees_a_step_at_the_frame_edge(yaw):
    H, W = se.VIEW.height, se.VIEW.width
    yy, xx = np.mgrid[0:H, 0:W].astype(float)
    ramp = 0.3 + 0.3 * xx / W + 0.1 * yy / H  # constant gradient everywhere
    rgb = np.repeat(ramp[..., None], 3, -1)
    assert se.seam_ratio(rgb, yaw) == pytest.approx(1.0, abs=0.02)
    textured = rgb + 0.02 * gaussian_filter(np.random.default_rng(1).random((H, W)), 1)[..., None]
    assert se.seam_ratio(textured, yaw) == pytest.approx(1.0, abs=0.2)
    step = textured + 0.1 * (xx >= 192)[..., None]  # exactly at the projected edge u = 191.5
    assert se.seam_ratio(step, yaw) > 1.5
    shifted = textured + 0.1 * (xx >= 192 + 12)[..., None]  # 12 px away: in the reference band
    assert se.seam_ratio(shifted, yaw) < 1.0


def test_seam_is_nan_where_the_frame_does_not_show():
    rgb = np.full((se.VIEW.height, se.VIEW.width, 3), 0.5)
    assert math.isnan(se.seam_ratio(rgb, 180))


def test_metrics_script_is_found_beside_the_clone():
    if not se.METRICS.is_file():
        pytest.skip(f"{se.METRICS}: shared/ is not beside this clone")
    m = se.load_metrics()
    assert tuple(m.YAWS) == se.YAWS
    # the crop the benchmark builds from is the photo these intrinsics describe
    pano = np.random.default_rng(0).random((64, 128, 3))
    assert m.view(pano, 0, se.PHOTO.width, se.PHOTO.height, se.PHOTO.fx).shape == (512, 768, 3)
