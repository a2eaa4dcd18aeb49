"""The floater measures of ``benchmarks/floaters.py`` on a tiny synthetic world: ground and sky,
clean (both measures 0) and with planted floaters (each detected)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmarks import floaters as fl
from tests.conftest import textured
from worldgen.camera import Intrinsics, Pose, world_from_camera
from worldgen.config import LiftConfig
from worldgen.lift import lift
from worldgen.splats import Splats

H, W = 60, 80
HEIGHT = 1.6
SKY = 200.0


def _world():
    """A level camera 1.6 m above a ground plane to the horizon, the sky (a 200 m dome) behind
    it all: (splats, surfaces, world_from_camera, intrinsics); layer 0 = sky, 1 = ground, whose
    canvas reaches 40 px beyond the frame (as the background's does)."""
    intr = Intrinsics.from_hfov(60, W, H)
    wide = intr.with_size(W + 80, H + 80)

    def rays(i: Intrinsics) -> np.ndarray:
        vv, uu = np.mgrid[0 : i.height, 0 : i.width].astype(np.float64)
        return np.stack([(uu - i.cx) / i.fx, (vv - i.cy) / i.fy, np.ones_like(uu)], -1)

    ray = rays(wide)
    below = ray[..., 1] > 1e-3
    ground = np.where(below, HEIGHT / np.where(below, ray[..., 1], 1.0), np.nan)
    ground[ground > 150] = np.nan  # the far ground is left to the sky, as a build does
    sky = SKY / np.linalg.norm(rays(wide), axis=-1)  # a dome behind everything
    cfg = LiftConfig()
    parts = [
        lift(textured(H + 80, W + 80, 1), sky.astype(np.float32), wide, cfg, layer_id=0),
        lift(textured(H + 80, W + 80), ground.astype(np.float32), wide, cfg, layer_id=1),
    ]
    surfaces = [
        fl.Surface("sky", "sky", "perspective", sky, np.ones_like(sky), wide),
        fl.Surface("ground", "background", "perspective", ground, np.isfinite(ground) * 1.0, wide),
    ]
    return Splats.cat(parts), surfaces, world_from_camera(np.array([0.0, -1.0, 0.0])), intr


def _sky_share(splats, surfaces, M, intr, pose):
    is_sky = splats.layers.numpy() == 0
    sky_w, solid_w = fl.group_weights(splats, is_sky, pose, intr)
    alpha = sky_w + solid_w
    assert alpha.max() <= 1.0 + 1e-4
    should = fl.below_horizon(M, pose, intr) | fl.surface_coverage(
        [s for s in surfaces if not s.is_sky], M, pose, intr
    )
    return fl.sky_floater_share(sky_w, should)


def _plant(splats: Splats, centres: np.ndarray, layer: int) -> Splats:
    """Opaque sky-blue discs of 5 cm facing the camera at ``centres`` [n, 3] on ``layer``."""
    from worldgen.splats import rgb_to_sh0

    n = len(centres)
    rgb = torch.tensor([[0.4, 0.6, 0.95]]).repeat(n, 1)
    extra = Splats(
        torch.from_numpy(centres.astype(np.float32)),
        torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1),
        torch.log(torch.tensor([[0.05, 0.05, 0.005]])).repeat(n, 1),
        torch.full((n,), 5.0),
        rgb_to_sh0(rgb)[:, None, :].contiguous(),
        torch.full((n,), layer, dtype=torch.uint8),
    )
    return Splats.cat([splats, extra])


@pytest.mark.parametrize("walk", ["source", "forward 2 m", "left 1 m", "yaw +30°"])
def test_clean_world_has_no_floaters(walk):
    splats, surfaces, M, intr = _world()
    pose = fl.walk_pose(M, *fl.WALKS[walk])
    share, count = _sky_share(splats, surfaces, M, intr, pose)
    assert count == 0 and share == 0.0
    assert not fl.off_surface(splats.means.numpy(), surfaces, M).any()


def test_sky_splats_in_front_of_the_ground_are_found():
    splats, surfaces, M, intr = _world()
    # a patch of sky splats hanging 4 m ahead, 1 m below the eye: in front of the ground
    centres = np.array([[x, 1.0, 4.0] for x in np.linspace(-0.3, 0.3, 7)])
    bad = _plant(splats, centres, layer=0)
    share, count = _sky_share(bad, surfaces, M, intr, Pose.identity())
    assert count > 20 and share > 0.005
    off = fl.off_surface(bad.means.numpy(), surfaces, M)
    assert off.sum() == len(centres) and off[-len(centres) :].all()


def test_a_crack_in_the_ground_shows_the_sky_and_is_found():
    splats, surfaces, M, intr = _world()
    X = splats.means.numpy()
    hole = (splats.layers.numpy() == 1) & (np.abs(X[:, 0]) < 0.4) & (X[:, 2] > 5) & (X[:, 2] < 7)
    cracked = splats.index(torch.from_numpy(~hole))
    share, count = _sky_share(cracked, surfaces, M, intr, Pose.identity())
    assert count > 10
    # the crack is in front of the ground's surface (the layer's depth map still has it), and
    # nothing is off a surface
    assert not fl.off_surface(cracked.means.numpy(), surfaces, M).any()


def test_off_surface_on_an_equirectangular_dome():
    dome = fl.Surface(
        "sky-dome", "sky", "equirectangular", np.full((32, 64), SKY), np.ones((32, 64))
    )
    M = world_from_camera(np.array([0.0, -1.0, 0.0]))
    rng = np.random.default_rng(0)
    d = rng.normal(size=(50, 3))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    on = fl.off_surface(d * SKY, [dome], M)
    off = fl.off_surface(d * 0.8 * SKY, [dome], M)
    assert not on.any() and off.all()


def test_walk_poses_are_level_and_turn_right():
    M = world_from_camera(np.array([0.0, -0.99, -0.14]))  # a camera pitched down a little
    p = fl.walk_pose(M, forward=3.0)
    up = M[:3, :3].T @ np.array([0.0, 1.0, 0.0])
    assert abs(float(p.T @ up)) < 1e-9  # stays at eye height
    assert np.allclose(p.R, np.eye(3))
    q = fl.walk_pose(M, yaw_deg=30.0)
    fwd = q.R[:, 2]  # the new optical axis in source axes
    right = M[:3, :3].T @ np.array([1.0, 0.0, 0.0])
    assert float(fwd @ right) > 0.45  # turned right
