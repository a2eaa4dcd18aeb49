"""Bridges (worldgen/lift.py): a small depth step inside a layer must not open a crack when the
camera moves; a depth edge must stay open; the source view must not change."""

from __future__ import annotations

import numpy as np
import pytest

from tests.conftest import textured
from worldgen.camera import Camera, Intrinsics, Pose
from worldgen.config import LiftConfig
from worldgen.lift import lift
from worldgen.raster import rasterize

H, W = 80, 120


def _step(near: float, far: float) -> tuple[np.ndarray, Intrinsics]:
    intr = Intrinsics.from_hfov(60, W, H)
    d = np.full((H, W), near, np.float32)
    d[:, W // 2 :] = far
    return d, intr


def _alpha(splats, intr, pose):
    return rasterize(splats, Camera(intr, pose), W, H).alpha.numpy()


def test_a_small_step_is_bridged_and_stays_closed_from_the_side():
    d, intr = _step(4.0, 4.4)  # 9 %: below a depth edge, one surface for the layer split
    rgb = textured(H, W)
    bare = lift(rgb, d, intr, LiftConfig(bridge=False))
    bridged = lift(rgb, d, intr, LiftConfig())
    assert len(bare) == H * W and len(bridged) > len(bare)
    extra = bridged.means.numpy()[H * W :]
    # the strip lies between the two sides, along the boundary column's rays
    assert np.all((extra[:, 2] > 4.0 - 1e-3) & (extra[:, 2] < 4.4 + 1e-3))
    # 1 m to the right the near (left) half slides left by f * 1 m * (1/4 - 1/4.4) = 2.4 px
    # more than the far half: a crack opens between them, near column W/2 - f / 4.2
    pose = Pose.from_cli(1.0, 0, 0)
    a0, a1 = _alpha(bare, intr, pose), _alpha(bridged, intr, pose)
    rows = slice(10, H - 10)
    c = int(W / 2 - intr.fx / 4.2)
    cols = slice(c - 8, c + 8)
    assert (a0[rows, cols] < 0.5).sum() >= H - 20  # without bridges: a crack down every row
    assert (a1[rows, cols] > 0.5).all()  # bridged: closed
    # the source view is the same picture
    c0 = rasterize(bare, Camera(intr, Pose.identity()), W, H).rgb.numpy()
    c1 = rasterize(bridged, Camera(intr, Pose.identity()), W, H).rgb.numpy()
    assert np.abs(c1 - c0).mean() < 0.01


@pytest.mark.parametrize("stride", [1, 2])
def test_a_depth_edge_is_never_bridged(stride):
    d, intr = _step(2.0, 4.0)  # 50 %: a depth edge; what it opens belongs to another layer
    s = lift(textured(H, W), d, intr, LiftConfig(stride=stride))
    assert len(s) == (H // stride) * (W // stride)


def test_a_far_crack_is_left_alone():
    d, intr = _step(60.0, 64.0)  # shows less than a pixel from 2 m aside: not worth splats
    s = lift(textured(H, W), d, intr, LiftConfig())
    assert len(s) == H * W
