"""The world around the photo: panorama layout, the sky dome, no void when looking around."""

import math

import numpy as np
import pytest

from tests.conftest import save_rgb
from worldgen.camera import Intrinsics, Pose, world_from_camera
from worldgen.config import BuildConfig
from worldgen.depth.base import CEILING, GROUND, SKY, VERTICAL
from worldgen.ground import GroundFit
from worldgen.pipeline import build
from worldgen.render import render_world
from worldgen.surround import SurroundConfig, directions, extend, lift_sky, lift_surround
from worldgen.world import load_world

H, W = 96, 128
SKY_D = 200.0


def ground_sky_scene(indoor=False):
    """A level camera 1.6 m above a textured ground plane; sky (or a ceiling) above."""
    intr = Intrinsics.from_hfov(60, W, H)
    uu, vv = np.meshgrid(np.arange(W, dtype=float), np.arange(H, dtype=float))
    ry = (vv - intr.cy) / intr.fy
    rx = (uu - intr.cx) / intr.fx
    below = ry > 1e-3
    z_ground = np.where(below, 1.6 / np.maximum(ry, 1e-9), np.inf)
    labels = np.where(below, GROUND, CEILING if indoor else SKY).astype(np.uint8)
    if indoor:
        z = np.where(below, z_ground, 1.1 / np.maximum(-ry, 1e-3))
    else:
        z = np.where(below, z_ground, SKY_D / np.sqrt(1 + rx**2 + ry**2))
    z = np.minimum(z, 80.0).astype(np.float32)
    X = rx * z
    Zc = z
    tex = 0.5 + 0.2 * np.sin(X * 6) * np.cos(Zc * 6)
    img = np.where(
        below[..., None],
        np.stack([0.3 * tex, 0.6 * tex, 0.2 * tex], -1),
        np.array([0.7, 0.7, 0.68]) if indoor else np.array([0.35, 0.55, 0.95]),
    )
    img = img.astype(np.float32)
    g = GroundFit(np.array([0.0, -1.0, 0.0]), 1.6, 1.0, "ground-plane-prior", "test", 1.0)
    return img, z, labels, intr, g


def test_outdoor_panorama_layout_and_sky_dome():
    img, z, labels, intr, g = ground_sky_scene()
    M = world_from_camera(g.normal)
    cfg = SurroundConfig(width=256, sky_width=128)
    pano = extend(img, z, labels, intr, g, M, cfg, sky_distance=SKY_D)
    LON, LAT, d = directions(256, 128)
    assert pano.info["outdoor"] is True and pano.sky_rgb is not None
    # below the horizon: ground at the plane, above: sky; the wall ring in between
    far_below = LAT < -math.radians(20)
    assert np.all(pano.labels[far_below] == GROUND)
    P = d * pano.distance[..., None]
    assert np.allclose(P[far_below][:, 1], -1.6, atol=1e-4)
    assert np.all(pano.labels[LAT > math.radians(30)] == SKY)
    # the sky continues the photo's sky colour all around the upper hemisphere
    up = pano.sky_rgb[: pano.sky_rgb.shape[0] // 3]
    assert np.allclose(up.reshape(-1, 3).mean(0), [0.35, 0.55, 0.95], atol=0.08)
    # sky splats sit on the dome
    dome = lift_sky(pano.sky_rgb, M, SKY_D, 0)
    r = np.linalg.norm(dome.means.numpy(), axis=1)
    assert np.allclose(r, SKY_D, rtol=3e-3)  # (jittered by 0.2 %: no lattice)
    # the surround goes all around; the photo's own view is left to the photo's layers
    assert pano.covered.all()
    assert not pano.lift[(np.abs(LON) < math.radians(25)) & (np.abs(LAT) < math.radians(15))].any()
    assert pano.lift[np.abs(LON) > math.radians(150)].any()
    s = lift_surround(pano, M, cfg, 1)
    # a reduced grid: fewer splats than lifted pixels near the poles, none lost at the horizon
    assert 0.3 * pano.lift.sum() < len(s) <= pano.lift.sum()
    assert np.isfinite(s.means.numpy()).all()
    # every splat sits on its surface: the ground plane or the band's cylinder
    X = s.means.numpy() @ M[:3, :3].T
    on_ground = np.abs(X[:, 1] + 1.6) < 1e-3
    r = np.hypot(X[:, 0], X[:, 2])
    col = np.clip(((np.arctan2(X[:, 0], -X[:, 2]) + np.pi) / (2 * np.pi) * 256).astype(int), 0, 255)
    on_band = np.abs(r - pano.ring[col]) < 0.02 * pano.ring[col] + 0.05
    assert np.all(on_ground | on_band)


def test_same_seed_same_surround_other_seed_other():
    img, z, labels, intr, g = ground_sky_scene()
    M = world_from_camera(g.normal)
    cfg = SurroundConfig(width=256, sky_width=128)
    a = extend(img, z, labels, intr, g, M, cfg, sky_distance=SKY_D, seed=3)
    b = extend(img, z, labels, intr, g, M, cfg, sky_distance=SKY_D, seed=3)
    c = extend(img, z, labels, intr, g, M, cfg, sky_distance=SKY_D, seed=4)
    assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.sky_rgb, b.sky_rgb)
    assert not np.array_equal(a.rgb[a.lift], c.rgb[c.lift])


def test_indoor_panorama_has_a_ceiling_and_no_sky():
    img, z, labels, intr, g = ground_sky_scene(indoor=True)
    M = world_from_camera(g.normal)
    pano = extend(img, z, labels, intr, g, M, SurroundConfig(width=256), sky_distance=SKY_D)
    assert pano.sky_rgb is None and not pano.info["outdoor"]
    assert (pano.labels == CEILING).any() and not (pano.labels == SKY).any()
    assert (pano.labels == VERTICAL).any()
    assert np.isfinite(pano.distance).all() and pano.distance.max() < 100


@pytest.fixture(scope="module")
def outdoor_world(tmp_path_factory):
    d = tmp_path_factory.mktemp("out")
    img, z, labels, intr, g = ground_sky_scene()
    p = save_rgb(img, d / "gs.png")
    np.save(d / "gs.npy", z)
    cfg = BuildConfig().replace(
        camera={"focal_px": intr.fx}, depth={"depth_map": str(d / "gs.npy")}
    )
    return load_world(build(p, d / "gs.world", cfg, use_cache=False).path)


@pytest.mark.parametrize(
    "pose",
    [(0, 0, 0, yaw, 0, 0) for yaw in (45, -45, 90, -90, 135, -135, 180)]
    + [(0, 0, 0, yaw, pitch, 0) for yaw in (0, 90, 180, -90) for pitch in (30, -30)]
    + [(tx, 0, tz, yaw, 0, 0) for tx, tz in ((0, 2), (0, -2), (2, 0), (-2, 0)) for yaw in (0, 180)]
    + [(0.5, 0, 0, 0, 0, 0), (0, 0, 0, 0, -45, 0)],
)
def test_no_void_all_around_and_on_walks(outdoor_world, pose):
    r = render_world(outdoor_world, Pose.from_cli(*pose))
    empty = float((r.alpha < 0.5).float().mean())
    assert empty == 0.0, empty


def test_single_layer_world_ends_at_the_frame(tmp_path):
    img, z, labels, intr, g = ground_sky_scene()
    p = save_rgb(img, tmp_path / "gs.png")
    np.save(tmp_path / "gs.npy", z)
    cfg = BuildConfig().replace(
        camera={"focal_px": intr.fx},
        depth={"depth_map": str(tmp_path / "gs.npy")},
        layers={"enabled": False},
        surround={"enabled": False},
    )
    w = load_world(build(p, tmp_path / "one.world", cfg, use_cache=False).path)
    assert [x["name"] for x in w.manifest["layers"]] == ["scene"]
    r = render_world(w, Pose.from_cli(0, 0, 0, 60, 0, 0))
    assert float((r.alpha < 0.5).float().mean()) > 0.5  # the skeleton: a void


def test_clouds_the_depth_stage_took_for_walls_become_sky_hills_do_not():
    """``_sky_like``: a grey cloud bank that fades into a clear sky (darker than the sky model,
    labelled VERTICAL by the depth stage) is sky; a smooth hill of the same brightness that
    meets the cloud along a sharp skyline stays band."""
    from worldgen.surround.layout import _sky_like

    h, w = 120, 160
    intr = Intrinsics.from_hfov(90, w, h)
    uu, vv = np.meshgrid(np.arange(w, dtype=float), np.arange(h, dtype=float))
    rays = np.stack([(uu - intr.cx) / intr.fx, -(vv - intr.cy) / intr.fy, -np.ones((h, w))], -1)
    Pimg = rays * 100.0  # world axes (y up, forward -z); the horizon is the middle row
    rows = vv[..., None]
    blue = np.array([0.35, 0.55, 0.95]) + 0.002 * rows  # a clear sky, a little lighter below
    grey = np.array([0.55, 0.56, 0.6])
    t = np.clip((rows - 10) / 14.0, 0, 1)  # the cloud bank fades in over rows 10..24
    img = (1 - t) * blue + t * grey
    hill = (vv >= 40) & (vv < 58) & (uu > 60)  # smooth, sharp-edged, above the horizon
    img = np.where(hill[..., None], np.array([0.42, 0.5, 0.3]), img)
    img = np.where((vv >= 60)[..., None], np.array([0.3, 0.45, 0.2]), img).astype(np.float32)
    labels = np.where(vv < 10, SKY, np.where(vv < 60, VERTICAL, GROUND)).astype(np.uint8)
    out, _, n = _sky_like(img, labels, Pimg, 0)
    cloud = (vv >= 26) & (vv < 56) & (uu < 50)
    assert n > 0
    assert (out[cloud] == SKY).mean() > 0.9
    inner_hill = (vv >= 44) & (vv < 55) & (uu > 65)
    assert (out[inner_hill] == VERTICAL).all()
    assert (out[vv >= 60] == GROUND).all()


def test_margin_fades_to_the_canvas_edge():
    from worldgen.scene import _margin_fade

    Hf, Wf, m = 20, 30, 8
    a = _margin_fade(Hf, Wf, m)
    assert a.shape == (Hf + 2 * m, Wf + 2 * m)
    assert (a[m : m + Hf, m : m + Wf] == 1).all()  # the frame
    assert (a[0] == 0).all() and (a[:, -1] == 0).all()  # the canvas's edge
    row = a[m + Hf // 2, : m + 1]  # from the canvas's edge to the frame
    assert (np.diff(row) >= 0).all() and row[m - 2] == 1.0  # a quarter of the margin at 1


def test_a_tiny_photo_whose_ground_is_thin_in_every_distance_bin_builds(tmp_path):
    """48 x 64 noise: the popup prior finds a little ground, too few pixels per log-distance
    bin for the ground's colour trend (it crashed on an empty trend)."""
    from tests.conftest import textured
    from worldgen.config import load_preset

    p = save_rgb(textured(48, 64, seed=7), tmp_path / "t.png")
    res = build(p, tmp_path / "t.world", load_preset("fast"), use_cache=False)
    assert load_world(res.path).splats is not None
