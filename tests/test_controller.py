"""First-person controller: capsule-vs-triangle geometry, gravity, walls, bounds, jumps, fly
mode, frame-rate independence, reset and the eye's pose in the source camera's axes."""

from __future__ import annotations

import math

import numpy as np
import pytest

from renderer.controller import (
    Collider,
    ControlInput,
    Controller,
    ControllerConfig,
    Spawn,
    closest_point_on_triangle,
    closest_points_segment_triangle,
)
from worldgen.camera import rot_x, rot_z
from worldgen.world import load_world

FWD = ControlInput(forward=1.0)
IDLE = ControlInput()


def quad(a, b, c, d) -> list:
    return [[a, b, c], [a, c, d]]


def room(half=5.0, height=3.0, floor=0.0, ledge: float | None = None) -> np.ndarray:
    """[N, 3, 3] a floor [-half, half]^2 at y = floor, four walls; optionally a ledge of that
    height covering z < -1 (its top and its front face at z = -1)."""
    h, y0, y1 = half, floor, floor + height
    T = quad((-h, y0, -h), (-h, y0, h), (h, y0, h), (h, y0, -h))
    corners = [(-h, -h), (h, -h), (h, h), (-h, h)]
    for (ax, az), (bx, bz) in zip(corners, corners[1:] + corners[:1], strict=True):
        T += quad((ax, y0, az), (bx, y0, bz), (bx, y1, bz), (ax, y1, az))
    if ledge is not None:
        e = y0 + ledge
        T += quad((-h, e, -h), (-h, e, -1), (h, e, -1), (h, e, -h))
        T += quad((-h, y0, -1), (h, y0, -1), (h, e, -1), (-h, e, -1))
    return np.array(T, np.float64)


def walker(tris=None, at=(0.0, 0.0, 0.0), eye=1.6, fly=False, **cfg) -> Controller:
    tris = room() if tris is None else tris
    spawn = Spawn(np.array(at, np.float64), eye_height=eye)
    return Controller(Collider(tris), spawn, ControllerConfig(**cfg), fly=fly)


def run(c: Controller, seconds: float, inp=IDLE, fps=60.0) -> None:
    for _ in range(int(round(seconds * fps))):
        c.update(1.0 / fps, inp)


# ----------------------------------------------------------------------------- geometry


def _reference_distance(p, q, tri, n=160) -> float:
    """Slow and obvious: the closest pair among dense samples of the segment and triangle."""
    from scipy.spatial import cKDTree

    s = np.linspace(0, 1, n)
    seg = p + s[:, None] * (q - p)
    u, v = np.meshgrid(s, s)
    m = u + v <= 1
    pts = tri[0] + u[m][:, None] * (tri[1] - tri[0]) + v[m][:, None] * (tri[2] - tri[0])
    return float(cKDTree(pts).query(seg)[0].min())


def test_segment_triangle_distance_matches_a_sampled_reference():
    rng = np.random.default_rng(0)
    n = 60
    P, Q, T = rng.normal(size=(n, 3)), rng.normal(size=(n, 3)), rng.normal(size=(n, 3, 3))
    T[:10, :, 1] = -0.3  # some flat ones under a vertical segment, like the ground
    P[:10], Q[:10] = [0, 0.2, 0], [0, 1.0, 0]
    for i in range(n):
        on_seg, on_tri, d = closest_points_segment_triangle(P[i], Q[i], T[i : i + 1])
        ref = _reference_distance(P[i], Q[i], T[i])
        # the samples are at most ~1/160 of the sizes apart: never closer than the truth
        assert ref - 0.03 <= d[0] <= ref + 1e-9, (i, d[0], ref)
        assert np.linalg.norm(on_seg[0] - on_tri[0]) == pytest.approx(d[0], abs=1e-9)
        # the point on the triangle is its own closest point; the one on the segment lies on it
        back = closest_point_on_triangle(on_tri, *(T[i : i + 1, k] for k in range(3)))
        np.testing.assert_allclose(back, on_tri, atol=1e-9)
        t = np.dot(on_seg[0] - P[i], Q[i] - P[i]) / np.dot(Q[i] - P[i], Q[i] - P[i])
        np.testing.assert_allclose(P[i] + t * (Q[i] - P[i]), on_seg[0], atol=1e-9)
        assert -1e-9 <= t <= 1 + 1e-9


def test_segment_piercing_a_triangle_is_at_distance_zero():
    tri = np.array([[[-1.0, 0.5, -1.0], [-1.0, 0.5, 2.0], [2.0, 0.5, -1.0]]])
    on_seg, on_tri, d = closest_points_segment_triangle([0, 0, 0], [0, 1, 0], tri)
    assert d[0] == 0.0
    np.testing.assert_allclose(on_seg[0], [0, 0.5, 0])


def test_grid_query_finds_what_a_brute_force_box_test_finds():
    rng = np.random.default_rng(1)
    c0 = rng.uniform(-20, 20, size=(3000, 1, 3)) * [1, 0.1, 1]
    tris = c0 + rng.normal(scale=[[1.5, 0.5, 1.5]], size=(3000, 3, 3))
    col = Collider(tris)
    for _ in range(50):
        lo = rng.uniform(-22, 20, 3) * [1, 0.1, 1]
        hi = lo + rng.uniform(0.1, 3, 3)
        want = np.nonzero(np.all((col.lo <= hi) & (col.hi >= lo), axis=1))[0]
        np.testing.assert_array_equal(np.sort(col.query(lo, hi)), want)


# ----------------------------------------------------------------------------- physics


def test_gravity_settles_on_the_floor_at_eye_height():
    c = walker(at=(0.5, 2.0, 0.3), eye=1.7)
    run(c, 2.0)
    assert c.on_ground
    np.testing.assert_allclose(c.position, [0.5, 0.0, 0.3], atol=1e-6)
    assert c.eye_position()[1] == pytest.approx(1.7, abs=1e-6)
    run(c, 1.0)  # and stays there: no creep, no sliding
    np.testing.assert_allclose(c.position, [0.5, 0.0, 0.3], atol=1e-6)


def test_walking_into_a_wall_stops_at_the_radius_and_slides_along_it():
    c = walker()
    run(c, 6.0, FWD)  # the wall is 5 m ahead (-Z)
    np.testing.assert_allclose(c.position, [0.0, 0.0, -5.0 + 0.3], atol=1e-6)
    c.look(30.0, 0.0)  # walk into the wall at an angle: slide to the right along it
    x0 = c.position[0]
    run(c, 1.0, FWD)
    assert c.position[2] == pytest.approx(-4.7, abs=1e-6)
    assert c.position[0] - x0 == pytest.approx(1.4 * math.sin(math.radians(30)), rel=0.02)
    c.look(60.0, 0.0)  # into the corner
    run(c, 10.0, ControlInput(forward=1.0, run=True))
    np.testing.assert_allclose(c.position, [4.7, 0.0, -4.7], atol=1e-6)


def test_a_short_walker_is_a_sphere_and_still_collides():
    c = walker(at=(0.0, 1.0, 0.0), eye=0.3)  # capsule height 0.6 = 2 r: its axis is a point
    run(c, 1.0)
    np.testing.assert_allclose(c.position, [0.0, 0.0, 0.0], atol=1e-6)
    run(c, 5.0, FWD)
    np.testing.assert_allclose(c.position, [0.0, 0.0, -4.7], atol=1e-6)


def test_the_capsule_climbs_a_small_ledge_but_not_a_high_one():
    low = walker(room(ledge=0.1))
    run(low, 4.0, FWD)
    np.testing.assert_allclose(low.position, [0.0, 0.1, -4.7], atol=1e-5)
    high = walker(room(ledge=0.4))
    run(high, 4.0, FWD)
    np.testing.assert_allclose(high.position, [0.0, 0.0, -1.0 + 0.3], atol=1e-5)


def test_no_wall_still_no_way_out_of_the_bounds():
    floor = np.array(quad((-3, 0, -3), (-3, 0, 3), (3, 0, 3), (3, 0, -3)), np.float64)
    for fly in (False, True):
        c = walker(floor, fly=fly, run_speed=6.0)
        for yaw in (0, 135, 250):
            c.reset()
            c.look(yaw, -30.0)  # flying: also downward, into the floor
            run(c, 2.0, ControlInput(forward=1.0, run=True))
            p = c.position
            assert np.all(np.abs(p[[0, 2]]) <= 3 - 0.3 + 1e-9), (fly, yaw, p)
            assert np.max(np.abs(p[[0, 2]])) == pytest.approx(2.7), (fly, yaw, p)
            assert p[1] >= -1e-9, (fly, yaw, p)


def test_jump_apex_is_the_configured_height():
    for h in (1.0, 0.4):
        c = walker(jump_height=h)
        run(c, 0.5)
        ys = []
        c.update(1 / 60, ControlInput(jump=True))
        for _ in range(120):
            c.update(1 / 60)
            ys.append(c.position[1])
        assert max(ys) == pytest.approx(h, rel=0.01)
        assert c.on_ground and c.position[1] == pytest.approx(0.0, abs=1e-6)


def test_fly_mode_ignores_gravity_and_moves_along_the_view():
    c = walker(at=(0.0, 1.0, 0.0), fly=True)
    run(c, 2.0)
    np.testing.assert_allclose(c.position, [0.0, 1.0, 0.0], atol=1e-12)
    run(c, 0.5, ControlInput(up=1.0))
    assert c.position[1] == pytest.approx(1.0 + 0.5 * 1.4, rel=1e-6)
    c.look(0.0, 30.0)  # looking up, forward climbs
    before = c.position
    run(c, 0.5, FWD)
    d = c.position - before
    assert d[1] == pytest.approx(0.7 * math.sin(math.radians(30)), rel=1e-6)
    assert d[2] == pytest.approx(-0.7 * math.cos(math.radians(30)), rel=1e-6)
    c.toggle_fly()  # back to walking: falls to the floor
    run(c, 2.0)
    assert c.on_ground and c.position[1] == pytest.approx(0.0, abs=1e-6)


def test_same_end_state_at_60_and_144_fps():
    def play(fps: float) -> Controller:
        c = walker(room(ledge=0.1), at=(1.0, 0.5, 2.0))
        t, k = 0.0, 0
        while t < 4.0 - 1e-9:
            dt = 1.0 / fps
            inp = ControlInput(forward=1.0, right=0.5, run=t > 1.0, jump=1.5 <= t < 1.6)
            c.update(dt, inp)
            t, k = t + dt, k + 1
        return c

    a, b = play(60.0), play(144.0)
    np.testing.assert_allclose(a.position, b.position, atol=1e-6)
    assert a.position[2] == pytest.approx(-4.7, abs=1e-6)  # it went somewhere: into the wall


def test_a_long_stall_is_capped_and_fast_falls_do_not_tunnel():
    c = walker(at=(0.0, 200.0, 0.0))
    for _ in range(40):
        c.update(1.0)  # one-second frames: each simulates only max_frame_dt
    assert c.position[1] == pytest.approx(0.0, abs=1e-6) and c.on_ground


def test_reset_returns_to_the_spawn():
    c = walker(at=(1.0, 0.0, 1.0))
    c.spawn = Spawn(np.array([1.0, 0.0, 1.0]), math.radians(20), math.radians(-5), 1.6)
    c.reset()
    run(c, 1.0, ControlInput(forward=1.0, right=1.0))
    c.look(50, 40)
    c.toggle_fly()
    run(c, 0.5, ControlInput(up=1.0))
    c.reset()
    np.testing.assert_allclose(c.position, [1.0, 0.0, 1.0])
    np.testing.assert_allclose(c.eye_position(), [1.0, 1.6, 1.0])
    assert c.yaw == pytest.approx(math.radians(20)) and c.pitch == pytest.approx(math.radians(-5))


def test_pitch_is_clamped_and_yaw_wraps():
    c = walker()
    c.look(0, 500)
    assert math.degrees(c.pitch) == pytest.approx(89.0)
    c.look(0, -1000)
    assert math.degrees(c.pitch) == pytest.approx(-89.0)
    c.look(370, 0)
    assert math.degrees(c.yaw) == pytest.approx(10.0)


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="radius"):
        ControllerConfig(radius=0)
    with pytest.raises(ValueError, match="eye height"):
        walker(eye=0.0)
    with pytest.raises(ValueError, match="no triangles"):
        Collider(np.zeros((0, 3, 3)))


# ----------------------------------------------------------------------------- poses


def level_world_from_camera(pitch_deg=0.0, roll_deg=0.0) -> np.ndarray:
    """A source camera at the origin looking down -Z, pitched up and rolled as given."""
    M = np.eye(4)
    M[:3, :3] = (
        np.diag([1.0, -1.0, -1.0]) @ rot_x(math.radians(pitch_deg)) @ rot_z(math.radians(roll_deg))
    )
    return M


def test_pose_at_spawn_is_the_source_camera():
    for pitch in (0.0, -12.0, 7.0):
        M = level_world_from_camera(pitch)
        fwd = M[:3, :3] @ [0, 0, 1]
        spawn = Spawn(np.array([0.0, -1.5, 0.0]), 0.0, math.asin(fwd[1]), 1.5)
        c = Controller(Collider(room(floor=-1.5)), spawn)
        pose = c.camera_pose_in_source(M)
        np.testing.assert_allclose(pose.R, np.eye(3), atol=1e-12)
        np.testing.assert_allclose(pose.T, 0.0, atol=1e-12)
    # turning right looks along the source camera's +x; looking up along its -y (level camera)
    c = Controller(Collider(room(floor=-1.5)), Spawn(np.array([0.0, -1.5, 0.0]), 0.0, 0.0, 1.5))
    M = level_world_from_camera()
    c.look(90, 0)
    np.testing.assert_allclose(c.camera_pose_in_source(M).R[:, 2], [1, 0, 0], atol=1e-12)
    c.look(-90, 89)
    assert c.camera_pose_in_source(M).R[1, 2] < -0.99
    # a step forward (-Z in the world) is +z in the source camera's axes
    c.look(0, -89)
    run(c, 1.0, FWD)
    np.testing.assert_allclose(c.camera_pose_in_source(M).T, [0, 0, 1.4], atol=1e-6)


def test_small_world_spawn_ground_and_pose(small_world):
    w = load_world(small_world)
    c = Controller.from_world(w)
    eye = float(w.manifest["spawn"]["eye_height"])
    assert c.eye_height == eye
    # at the spawn the eye is the source camera, up to the photo's roll
    pose = c.camera_pose_in_source(w.world_from_camera)
    np.testing.assert_allclose(pose.T, 0.0, atol=1e-9)
    np.testing.assert_allclose(pose.R[:, 2], [0, 0, 1], atol=1e-9)
    assert np.linalg.det(pose.R) == pytest.approx(1.0)
    # dropped from above, it lands back on the ground under the spawn
    c.state.position = c.position + [0.0, 0.7, 0.0]
    run(c, 2.0)
    assert c.on_ground
    np.testing.assert_allclose(c.position, w.manifest["spawn"]["position"], atol=1e-6)
    np.testing.assert_allclose(c.eye_position(), [0.0, 0.0, 0.0], atol=1e-6)


def test_a_damaged_collision_mesh_is_a_bundle_error(small_world, tmp_path):
    from worldgen.errors import BundleError
    from worldgen.world import World

    manifest = load_world(small_world).manifest
    (tmp_path / "collision.glb").write_bytes(b"glTF not really")
    with pytest.raises(BundleError, match="collision.glb: unusable collision mesh"):
        Controller.from_world(World(tmp_path, manifest))


def test_small_world_cannot_be_left(small_world):
    w = load_world(small_world)
    lo, hi = (np.array(w.manifest["bounds"][k]) for k in ("min", "max"))
    seconds = float(np.linalg.norm(hi - lo)) / 8.0 + 0.5  # enough to cross it at 8 m/s
    for fly in (False, True):
        c = Controller.from_world(w, ControllerConfig(run_speed=8.0), fly=fly)
        for yaw in (0, 100, 180, 260):
            c.reset()
            c.look(yaw, 20.0 if fly else 0.0)
            inp = ControlInput(forward=1.0, run=True, up=1.0 if fly else 0.0)
            run(c, seconds, inp, fps=30)
            p = c.position
            assert np.all(np.isfinite(p))
            assert np.all(p >= lo - 1e-9) and np.all(p <= hi + 1e-9), (fly, yaw, p)
