"""Hidden-region fill (worldgen.fill.classical) on small synthetic scenes with known answers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldgen.camera import Intrinsics
from worldgen.depth.base import GROUND, SKY, VERTICAL
from worldgen.errors import InputError
from worldgen.fill import GroundPlane, get_fill_backend
from worldgen.fill.classical import ClassicalFill, fill_depth, harmonic_fill, hole_labels

W, H = 160, 120
PERIOD = 10  # stripe period, px


def striped_wall(seed: int = 0) -> np.ndarray:
    """[H, W, 3]: vertical stripes (period PERIOD) in a warm tint plus a little noise."""
    rng = np.random.default_rng(seed)
    x = np.arange(W)[None, :, None]
    s = 0.5 + 0.35 * np.sin(2 * np.pi * x / PERIOD)
    img = s * np.array([1.0, 0.8, 0.55]) + 0.03 * rng.standard_normal((H, W, 3))
    return np.clip(img, 0, 1).astype(np.float32)


def box_scene():
    """A striped wall at 4 m with a box at 2 m in front of it; mask = the box's pixels."""
    img = striped_wall()
    depth = np.full((H, W), 4.0, np.float32)
    box = np.zeros((H, W), bool)
    box[35:85, 55:105] = True
    img[box] = [0.9, 0.1, 0.1]  # the foreground: must not leak into the fill
    depth[box] = 2.0
    return img, depth, box


def lag_corr(a: np.ndarray, m: np.ndarray, lag: int) -> float:
    """Correlation of a[y, x] and a[y, x + lag] over pixel pairs both inside m."""
    both = m[:, :-lag] & m[:, lag:]
    u, v = a[:, :-lag][both], a[:, lag:][both]
    return float(np.corrcoef(u, v)[0, 1])


def test_registry_and_available():
    fb = get_fill_backend("classical")
    assert isinstance(fb, ClassicalFill) and fb.name == "classical"
    assert get_fill_backend("auto").name == "classical"
    assert fb.available() == (True, "embedded, no weights")


def test_box_in_front_of_wall_continues_wall():
    img, depth, box = box_scene()
    r = ClassicalFill().fill(img, box, depth=depth, seed=0)
    # depth: the wall's (4 m) behind the box, never the box's 2 m
    assert np.all(np.isfinite(r.depth[box]))
    np.testing.assert_allclose(r.depth[box], 4.0, rtol=0.02)
    # colour: wall statistics, none of the box's red
    wall = img[~box]
    fill = r.rgb[box]
    assert np.all(np.abs(fill.mean(0) - wall.mean(0)) < 0.05), (fill.mean(0), wall.mean(0))
    ratio = fill.std(0) / wall.std(0)
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio
    # patches come from the known background only: no trace of the box's red
    assert np.all(np.abs(fill - [0.9, 0.1, 0.1]).max(axis=1) > 0.15)
    assert r.info["colour_method"] == "patchmatch"
    assert np.array_equal(r.filled, box) and r.filled is not box
    json.dumps(r.info)  # facts for world.json


def test_patches_continue_stripes_where_diffusion_blurs():
    img, depth, box = box_scene()
    fb = ClassicalFill()
    patch = fb.fill(img, box, depth=depth, seed=0).rgb[..., 0]
    diff = fb.fill(img, box, depth=depth, colour="diffusion").rgb[..., 0]
    wall_std = img[~box, 0].std()
    # the stripes go on inside the hole: same contrast, and anti-correlated half a period apart
    assert patch[box].std() > 0.75 * wall_std
    assert lag_corr(patch, box, PERIOD // 2) < -0.6
    assert lag_corr(patch, box, PERIOD) > 0.6
    # plain diffusion washes them out (a check that the two tests above can fail)
    assert diff[box].std() < 0.5 * wall_std
    assert lag_corr(diff, box, PERIOD // 2) > 0.0


def ground_wall_scene(pitch_deg: float = 4.0):
    """Ground plane 1.6 m below a slightly pitched camera, a fronto-parallel wall at z = 6 m."""
    intr = Intrinsics.from_hfov(60, W, H)
    p = np.radians(pitch_deg)
    normal = np.array([0.0, -np.cos(p), -np.sin(p)])  # up, in camera axes (camera pitched down)
    height = 1.6
    u = (np.arange(W) - intr.cx) / intr.fx
    v = (np.arange(H) - intr.cy) / intr.fy
    ndotr = normal[0] * u[None, :] + normal[1] * v[:, None] + normal[2]
    with np.errstate(divide="ignore"):
        zg = np.where(ndotr < 0, -height / ndotr, np.inf)
    z_wall = 6.0
    is_ground = zg < z_wall
    depth = np.where(is_ground, zg, z_wall).astype(np.float32)
    labels = np.where(is_ground, GROUND, VERTICAL).astype(np.uint8)
    rng = np.random.default_rng(1)
    img = np.where(
        is_ground[..., None],
        np.array([0.35, 0.55, 0.25]) + 0.08 * rng.standard_normal((H, W, 3)),
        np.array([0.7, 0.6, 0.5]) + 0.05 * rng.standard_normal((H, W, 3)),
    ).astype(np.float32)
    rows = np.nonzero(is_ground.any(axis=1))[0]
    contact = int(rows.min())  # first image row with ground in it
    mask = np.zeros((H, W), bool)
    mask[contact - 25 : contact + 20, 40:95] = True
    ground = GroundPlane(normal=normal, height=height)
    return img, depth, labels, intr, ground, mask, zg, is_ground


def test_ground_continues_as_plane_and_wall_as_wall():
    img, depth, labels, intr, ground, mask, zg, is_ground = ground_wall_scene()
    # the foreground's depth and labels under the mask must be ignored
    depth_in = depth.copy()
    depth_in[mask] = 1.0
    labels_in = labels.copy()
    labels_in[mask] = VERTICAL
    r = ClassicalFill().fill(
        img, mask, depth=depth_in, labels=labels_in, intrinsics=intr, ground=ground, seed=3
    )
    g = mask & is_ground
    w = mask & ~is_ground
    assert g.sum() > 300 and w.sum() > 300
    np.testing.assert_allclose(r.depth[g], zg[g], rtol=1e-4)
    np.testing.assert_allclose(r.depth[w], 6.0, rtol=0.02)
    assert r.info["depth"]["ground_px"] == g.sum()
    # the labels follow the same split
    _, lab, _ = fill_depth(mask, depth_in, labels_in, intr, ground)
    assert np.array_equal(lab[mask] == GROUND, is_ground[mask])
    # colour: ground texture below the contact line, wall colour above it
    assert abs(r.rgb[g].mean(0) - img[~mask & is_ground].mean(0)).max() < 0.08
    assert abs(r.rgb[w].mean(0) - img[~mask & ~is_ground].mean(0)).max() < 0.08
    ratio = r.rgb[g].std(0) / img[~mask & is_ground].std(0)
    assert np.all((ratio > 0.6) & (ratio < 1.6)), ratio


def test_ground_plane_without_labels():
    img, depth, labels, intr, ground, mask, zg, is_ground = ground_wall_scene(pitch_deg=0.0)
    out, lab, info = fill_depth(mask, depth, None, intr, ground)
    g = mask & is_ground
    np.testing.assert_allclose(out[g], zg[g], rtol=1e-4)
    np.testing.assert_allclose(out[mask & ~is_ground], 6.0, rtol=0.02)
    assert info["ground_plane"]


def test_known_pixels_bit_exact_and_deterministic():
    img, depth, box = box_scene()
    depth = depth.copy()
    depth[0, :5] = np.nan  # unknown depth outside the mask stays unknown
    fb = ClassicalFill()
    a = fb.fill(img, box, depth=depth, seed=7, some_pipeline_option=1)
    b = fb.fill(img, box, depth=depth, seed=7)
    assert np.array_equal(a.rgb[~box], img[~box])
    assert np.array_equal(a.depth[~box], depth[~box], equal_nan=True)
    assert np.array_equal(a.rgb, b.rgb)
    assert np.array_equal(a.depth, b.depth, equal_nan=True)
    assert a.rgb.dtype == np.float32 and a.depth.dtype == np.float32
    assert a.rgb.min() >= 0 and a.rgb.max() <= 1


def test_no_depth_gives_nan_depth():
    img, _, box = box_scene()
    r = ClassicalFill().fill(img, box)
    assert r.depth.shape == (H, W) and np.all(np.isnan(r.depth))
    assert np.array_equal(r.rgb[~box], img[~box])


def test_empty_mask_is_noop():
    img, depth, _ = box_scene()
    r = ClassicalFill().fill(img, np.zeros((H, W), bool), depth=depth)
    assert np.array_equal(r.rgb, img) and np.array_equal(r.depth, depth)
    assert not r.filled.any()


def test_bad_inputs_raise_input_error():
    img, depth, box = box_scene()
    fb = ClassicalFill()
    with pytest.raises(InputError, match="whole image"):
        fb.fill(img, np.ones((H, W), bool))
    with pytest.raises(InputError, match="mask shape"):
        fb.fill(img, box[:-1])
    with pytest.raises(InputError, match="depth shape"):
        fb.fill(img, box, depth=depth[:, :-1])
    with pytest.raises(InputError, match="labels shape"):
        fb.fill(img, box, labels=np.zeros((H + 1, W), np.uint8))
    with pytest.raises(InputError, match="intrinsics"):
        fb.fill(img, box, intrinsics=Intrinsics.from_hfov(60, W + 2, H))
    with pytest.raises(InputError, match=r"\[H, W, 3\]"):
        fb.fill(img[..., :2], box)
    with pytest.raises(InputError, match="float"):
        fb.fill((img * 255).astype(np.uint8), box)
    with pytest.raises(InputError, match="no finite positive"):
        fb.fill(img, box, depth=np.where(box, 2.0, np.nan).astype(np.float32))


def test_tiny_image_falls_back_to_diffusion():
    rng = np.random.default_rng(0)
    img = rng.random((10, 10, 3)).astype(np.float32)
    m = np.zeros((10, 10), bool)
    m[4:7, 4:7] = True
    r = ClassicalFill().fill(img, m, depth=np.full((10, 10), 3.0, np.float32))
    assert r.info["colour_method"] == "diffusion"  # no 7x7 patch is fully known
    assert np.all(np.isfinite(r.rgb)) and np.array_equal(r.rgb[~m], img[~m])
    np.testing.assert_allclose(r.depth[m], 3.0, rtol=1e-5)


def test_harmonic_fill_keeps_planes_in_disparity():
    yy, xx = np.mgrid[0:H, 0:W]
    disp = 0.2 + 0.001 * xx + 0.0005 * yy  # a slanted plane is linear in disparity
    hole = np.zeros((H, W), bool)
    hole[20:90, 30:130] = True
    out = harmonic_fill(np.where(hole, 0.0, disp), hole, ~hole)
    np.testing.assert_allclose(out[hole], disp[hole], rtol=1e-5)


def test_hole_labels_join_transitions():
    # sky above row 40, vertical below; a hole across the skyline continues it
    lab = np.where(np.arange(H)[:, None] < 40, SKY, VERTICAL).astype(np.uint8) * np.ones(
        (1, W), np.uint8
    )
    hole = np.zeros((H, W), bool)
    hole[20:70, 50:110] = True
    out = hole_labels(hole, np.where(hole, GROUND, lab).astype(np.uint8))
    assert np.array_equal(out[hole], lab[hole])


def test_only_ground_known():
    img, depth, labels, intr, ground, mask, zg, is_ground = ground_wall_scene()
    lab = np.full((H, W), GROUND, np.uint8)
    hole = np.zeros((H, W), bool)
    hole[90:110, 20:60] = True  # a hole in the ground; everything else called ground
    depth_g = np.where(is_ground, depth, np.nan).astype(np.float32)
    out, lab_out, _ = fill_depth(hole, depth_g, lab, intr, ground)
    np.testing.assert_allclose(out[hole], zg[hole], rtol=1e-4)
    assert np.all(lab_out[hole] == GROUND)
