import math

import numpy as np
import pytest

from worldgen.camera import (
    Intrinsics,
    Pose,
    focal_from_35mm,
    resolve_intrinsics,
    rotation_ypr,
    world_from_camera,
)
from worldgen.errors import InputError


def project(K, X):
    x = K @ X
    return x[:2] / x[2]


def test_default_fov_is_60_degrees_horizontal():
    c = resolve_intrinsics(1200, 800, 600, 400)
    assert c.source == "default-fov"
    assert c.intrinsics.hfov_deg == pytest.approx(60.0)
    assert (c.intrinsics.cx, c.intrinsics.cy) == pytest.approx((299.5, 199.5))


def test_intrinsics_precedence_user_model_exif_default():
    args = (1000, 500, 500, 250)
    user = resolve_intrinsics(*args, focal_px=800, model_focal_px=300, exif_focal_35mm=50)
    assert user.source == "user" and user.intrinsics.fx == pytest.approx(400)
    model = resolve_intrinsics(*args, model_focal_px=300, exif_focal_35mm=50)
    assert model.source == "depth-model" and model.intrinsics.fx == pytest.approx(300)
    exif = resolve_intrinsics(*args, exif_focal_35mm=50)
    assert exif.source == "exif"
    assert exif.intrinsics.fx == pytest.approx(focal_from_35mm(50, 1000, 500) / 2)
    assert resolve_intrinsics(*args).source == "default-fov"


def test_35mm_equivalent_uses_the_diagonal():
    # a 36x24 mm sensor imaged at 3600x2400 px: 1 mm = 100 px, so f = 50 mm -> 5000 px
    assert focal_from_35mm(50, 3600, 2400) == pytest.approx(5000.0)


def test_principal_point_scales_with_pixel_centres():
    c = resolve_intrinsics(1000, 500, 500, 250, focal_px=1000, principal=(499.5, 249.5))
    assert (c.intrinsics.cx, c.intrinsics.cy) == pytest.approx((249.5, 124.5))
    # the pixel-edge origin -0.5 stays at -0.5
    c = resolve_intrinsics(1000, 500, 500, 250, focal_px=1000, principal=(-0.5, -0.5))
    assert (c.intrinsics.cx, c.intrinsics.cy) == pytest.approx((-0.5, -0.5))


def test_bad_intrinsics_raise_input_error():
    with pytest.raises(InputError):
        resolve_intrinsics(100, 100, 100, 100, focal_px=-3)
    with pytest.raises(InputError):
        Intrinsics(0, 1, 0, 0, 10, 10)
    with pytest.raises(InputError):
        Intrinsics.from_hfov(200, 10, 10)


@pytest.mark.parametrize(
    "yaw,pitch,roll,point,expect",
    [
        # yaw > 0 turns right: a point straight ahead moves to the LEFT of the image
        (10, 0, 0, (0, 0, 5), "left"),
        # pitch > 0 looks up: a point ahead moves DOWN in the image
        (0, 10, 0, (0, 0, 5), "down"),
        # roll > 0 turns +x toward +y: a point on the right of the image moves UP
        (0, 0, 10, (1, 0, 5), "up"),
    ],
)
def test_pose_sign_conventions(yaw, pitch, roll, point, expect):
    K = Intrinsics.from_hfov(60, 640, 480).K
    X = np.array(point, float)
    base = project(K, Pose.identity().viewmat()[:3, :3] @ X)
    V = Pose.from_cli(0, 0, 0, yaw, pitch, roll).viewmat()
    moved = project(K, V[:3, :3] @ X + V[:3, 3])
    du, dv = moved - base
    if expect == "left":
        assert du < -10 and abs(dv) < 1e-6
    elif expect == "down":
        assert dv > 10
    elif expect == "up":
        assert dv < -10


def test_pose_is_RT_of_X_minus_T():
    R = rotation_ypr(0.3, -0.2, 0.1)
    assert np.allclose(R, np.array(_ry(0.3)) @ _rx(-0.2) @ _rz(0.1))
    p = Pose.from_cli(0.5, -0.2, 1.0, 20, 5, -3)
    X = np.array([1.0, 2.0, 7.0])
    V = p.viewmat()
    assert np.allclose(V[:3, :3] @ X + V[:3, 3], p.R.T @ (X - p.T))
    # translation: moving the camera +x (right) shifts the scene left
    V = Pose.from_cli(1.0, 0, 0).viewmat()
    assert np.allclose(V[:3, :3] @ X + V[:3, 3], X - [1, 0, 0])


def _rx(a):
    c, s = math.cos(a), math.sin(a)
    return [[1, 0, 0], [0, c, -s], [0, s, c]]


def _ry(a):
    c, s = math.cos(a), math.sin(a)
    return [[c, 0, s], [0, 1, 0], [-s, 0, c]]


def _rz(a):
    c, s = math.cos(a), math.sin(a)
    return [[c, -s, 0], [s, c, 0], [0, 0, 1]]


def test_world_frame_level_camera():
    M = world_from_camera(np.array([0.0, -1.0, 0.0]))
    # camera x right -> +X, camera y down -> -Y, camera forward -> -Z
    assert np.allclose(M[:3, :3] @ [1, 0, 0], [1, 0, 0])
    assert np.allclose(M[:3, :3] @ [0, 1, 0], [0, -1, 0])
    assert np.allclose(M[:3, :3] @ [0, 0, 1], [0, 0, -1])
    assert np.isclose(np.linalg.det(M[:3, :3]), 1.0)


def test_world_frame_keeps_pitch():
    # camera pitched down by 20 degrees: its forward axis points below the horizon
    up = rotation_ypr(0, math.radians(-20), 0).T @ np.array([0.0, -1.0, 0.0])
    M = world_from_camera(up)
    fwd = M[:3, :3] @ [0, 0, 1]
    assert fwd[1] == pytest.approx(-math.sin(math.radians(20)))
    assert fwd[0] == pytest.approx(0, abs=1e-9)
    assert fwd[2] < 0
    assert np.isclose(np.linalg.det(M[:3, :3]), 1.0)
