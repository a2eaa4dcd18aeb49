"""The canvas margin (worldgen/fill/margin.py, scene.compose_layers): beyond the frame the world
continues the surfaces at its edge -- planes as planes, open ground and sky -- and never a copy
of a near object touching the edge."""

from __future__ import annotations

import numpy as np

from benchmarks.scenes import render_scene, render_scene_hits
from tests.test_layers import CAM_H, ray_cast, split
from worldgen.camera import Intrinsics, Pose
from worldgen.depth.base import GROUND, SKY, VERTICAL
from worldgen.fill import GroundPlane, get_fill_backend
from worldgen.fill.margin import blend_edge_colours, continue_labels, fit_planes, margin_depth
from worldgen.scene import compose_layers


def test_fit_planes_finds_two_planes():
    rng = np.random.default_rng(0)
    u = rng.uniform(0, 100, 600)
    v = rng.uniform(0, 80, 600)
    a = (0.01, 0.002, 0.3)
    b = (-0.004, 0.0, 0.9)
    first = u < 50
    disp = np.where(first, a[0] * u + a[1] * v + a[2], b[0] * u + b[1] * v + b[2])
    planes = fit_planes(u, v, disp, seed=1)
    assert len(planes) == 2
    found = sorted(tuple(c) for c, _ in planes)
    assert np.allclose(found, sorted([a, b]), atol=2e-3)
    # (points of one plane that lie within the tolerance of the other may go to either)
    counts = sorted(len(i) for _, i in planes)
    assert np.allclose(counts, sorted([first.sum(), (~first).sum()]), rtol=0.1)


def test_a_rooms_walls_floor_and_ceiling_continue_as_planes():
    """room_walls (benchmarks/scenes.py): every margin pixel gets the depth of the wall, floor or
    ceiling the ray really meets, creases included."""
    intr = Intrinsics.from_hfov(60, 96, 72)
    m = 12
    canvas = intr.with_size(96 + 2 * m, 72 + 2 * m)
    _, depth = render_scene("room_walls", intr)
    _, truth = render_scene("room_walls", canvas)
    ids = render_scene_hits("room_walls", canvas).ids.reshape(truth.shape)
    floor = ids == 0
    labels = np.where(floor, GROUND, VERTICAL).astype(np.uint8)
    frame = (slice(m, m + 72), slice(m, m + 96))
    known = np.zeros(truth.shape, bool)
    known[frame] = True
    d = np.full(truth.shape, np.nan, np.float32)
    d[frame] = depth
    border = ~known
    ground = GroundPlane(np.array([0.0, -1.0, 0.0]), 1.6)
    out, lab = margin_depth(d, labels, known, frame, border, canvas, ground, band_px=2 * m)
    rel = np.abs(out[border] - truth[border]) / truth[border]
    assert np.isfinite(out[border]).all()
    assert np.median(rel) < 1e-4 and np.percentile(rel, 98) < 0.01
    assert (lab[border] == GROUND).mean() > 0.9 * floor[border].mean()  # the floor is ground
    assert np.isnan(out[known]).all()


def test_an_object_at_the_frame_edge_is_not_copied_beyond_it():
    """A box cut by the frame's left side in front of open ground: beside the frame the
    background goes on as ground, the sky as sky; the box is not copied there."""
    box = (-3.0, -0.4, 0.6, 2.0, 2.6)  # its front face 2 m away, cut by the left frame edge
    scene = ray_cast([box], wall_z=None)
    res = split(scene)
    names = [L.name for L in res.layers]
    assert names[:3] == ["sky", "background", "foreground-1"]
    assert (scene.ids[:, 0] == 2).any()  # the box touches the left edge
    m = 16
    layers, _ = compose_layers(
        scene.image,
        scene.depth,
        scene.labels,
        scene.intr,
        scene.ground,
        res,
        get_fill_backend("classical"),
        margin_px=m,
        seed=0,
    )
    bg = next(L for L in layers if L.name == "background")
    fg = next(L for L in layers if L.name == "foreground-1")
    H, W = scene.depth.shape
    assert bg.depth.shape == (H + 2 * m, W + 2 * m)
    rows = np.nonzero(scene.ids[:, 0] == 2)[0] + m  # canvas rows where the box meets the edge
    left = bg.depth[rows, :m]
    has = np.isfinite(left)
    # below the horizon: the ground plane, exactly; above it: nothing (the sky dome's)
    intr = bg.intrinsics
    v = rows[:, None] - intr.cy
    plane = np.where(v > 0, CAM_H * intr.fy / np.maximum(v, 1e-9), np.nan) * np.ones((1, m))
    assert has.any()
    assert np.allclose(left[has], plane[has], rtol=1e-3)
    assert not has[(v <= 0)[:, 0]].any()
    assert (bg.labels[rows, :m][has] == GROUND).all()
    # never the box's depth (2.0 - 2.6 m) beside the frame on the background layer
    assert not ((left[has] > 1.9) & (left[has] < 2.7)).any()
    # beside the frame above the horizon: no perspective layer (the surround's sky dome is
    # there); the sky layer ends at the frame
    sky = next(L for L in layers if L.name == "sky")
    up = np.arange(m, m + H)
    up = up[up < intr.cy - 2]
    assert len(up) > 10 and np.isnan(bg.depth[up, :m]).all()
    assert sky.depth.shape == (H, W)
    # the box is not continued (its own layer ends at the frame)
    assert fg.depth.shape == (H, W)


def test_continued_labels_run_on_at_their_height():
    lab = np.full((40, 60), GROUND, np.uint8)
    lab[:15] = SKY
    lab[15:20] = VERTICAL
    known = np.zeros((40, 60), bool)
    known[:, 30:] = True  # the left half is hidden (an object, a margin)
    out = continue_labels(lab, known)
    assert (out[:14, :30] == SKY).all() and (out[21:, :30] == GROUND).all()
    assert (out[17, 10:30] == VERTICAL).all()


def test_edge_colours_fade_into_the_texture():
    image = np.zeros((10, 30, 3), np.float32)
    image[:, 10:] = [1.0, 0.0, 0.0]
    known = np.zeros((10, 30), bool)
    known[:, 10:] = True
    filled = np.zeros((10, 30, 3), np.float32)
    filled[:, :10] = [0.0, 0.0, 1.0]
    labels = np.zeros((10, 30), np.uint8)
    out = blend_edge_colours(filled, image, labels, known, ~known, scale=4.0)
    assert out[:, 9, 0].min() > 0.7  # next to the edge: the edge's colour
    assert out[:, 0, 2].min() > 0.8  # far out: the texture
    assert np.all(np.diff(out[0, :10, 0]) > 0)
    assert np.array_equal(out[:, 10:], filled[:, 10:])


def test_margin_depth_is_nan_without_anything_to_continue():
    d = np.full((20, 20), np.nan, np.float32)
    known = np.zeros((20, 20), bool)
    frame = (slice(4, 16), slice(4, 16))
    intr = Intrinsics.from_hfov(60, 20, 20)
    out, _ = margin_depth(d, np.full((20, 20), VERTICAL, np.uint8), known, frame, ~known, intr,
                          None, band_px=8)  # fmt: skip
    assert np.isnan(out).all()
    assert Pose.identity() is not None
