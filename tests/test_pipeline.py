"""End-to-end builds: bundle contents, reproduction of the photo, moved-pose geometry."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import save_rgb, textured
from tests.scenes import find_dots, psnr, slanted_plane_scene
from worldgen.camera import Intrinsics, Pose
from worldgen.config import BuildConfig, load_preset
from worldgen.errors import BundleError, InputError, OutputError
from worldgen.pipeline import build
from worldgen.render import render_world
from worldgen.world import load_world


@pytest.fixture(scope="module")
def plane(tmp_path_factory):
    d = tmp_path_factory.mktemp("plane")
    sc = slanted_plane_scene()
    img = save_rgb(sc.image, d / "plane.png")
    np.save(d / "depth.npy", sc.depth)
    cfg = load_preset("default").replace(
        depth={"depth_map": str(d / "depth.npy")},
        camera={"focal_px": sc.intr.fx},
    )
    res = build(img, d / "plane.world", cfg, use_cache=False)
    return sc, res, load_world(res.path)


def test_bundle_is_complete_and_valid(plane):
    sc, res, w = plane
    names = {p.name for p in res.path.iterdir()}
    assert {
        "world.json",
        "splats.ply",
        "splat_layers.npy",
        "layers",
        "collision.glb",
        "preview.png",
    } <= names
    m = w.manifest
    assert m["splats"]["count"] == len(w.splats)
    # one splat per pixel of the photo and of its outpainted frame (plus a few bridges where
    # neighbouring discs of the oblique plane do not meet), plus the surroundings
    assert [x["name"] for x in m["layers"]] == ["background", "surroundings"]
    bg = w.layers[0]
    assert bg.intrinsics.width > 240 and bg.intrinsics.cx > sc.intr.cx  # extended canvas
    pixels = int((bg.alpha > 0).sum())
    assert pixels >= 240 * 180
    assert pixels <= m["layers"][0]["splat_count"] <= 1.02 * pixels
    assert sum(x["splat_count"] for x in m["layers"]) == len(w.splats)
    assert m["depth"]["backend"] == "file" and m["ground"]["scale_source"] == "user-depth-map"
    assert m["camera"]["intrinsics_source"] == "user"
    assert m["config"]["depth"]["depth_map"].endswith("depth.npy")
    layer = w.layers[0]
    m0 = int(round(layer.intrinsics.cx - sc.intr.cx))
    inner = layer.depth[m0 : m0 + 180, m0 : m0 + 240]
    assert inner.shape == (180, 240)
    assert np.allclose(inner, sc.depth, rtol=1e-6)
    ids = np.load(res.path / "splat_layers.npy", allow_pickle=False)
    assert ids.dtype == np.uint8 and ids.shape == (len(w.splats),)
    assert set(m["timings"]) >= {"load", "depth", "lift", "colour", "collision", "preview"}
    assert not [p for p in res.path.parent.iterdir() if ".tmp-" in p.name]


def test_source_view_reproduces_the_photo(plane):
    sc, res, w = plane
    out = render_world(w).rgb.numpy()
    assert psnr(out, w.source_rgb) >= 28.0
    prev = np.asarray(Image.open(res.path / "preview.png"), np.float32) / 255
    assert psnr(prev, w.source_rgb) >= 28.0


@pytest.mark.parametrize(
    "pose", [(0.3, -0.1, 0.4, 5, 0, 0), (-0.4, 0.2, -0.3, -4, 3, 2), (0.0, 0.0, 1.0, 0, -5, 0)]
)
def test_moved_pose_is_geometrically_right(plane, pose):
    sc, res, w = plane
    p = Pose.from_cli(*pose)
    out = render_world(w, p).rgb.numpy()
    found = find_dots(out, sc.dot_colours)
    V = p.viewmat()
    Xc = sc.dots @ V[:3, :3].T + V[:3, 3]
    K = w.intrinsics.K
    proj = (Xc @ K.T)[:, :2] / Xc[:, 2:3]
    inside = (proj[:, 0] > 5) & (proj[:, 0] < 235) & (proj[:, 1] > 5) & (proj[:, 1] < 175)
    assert inside.sum() >= 6
    err = np.linalg.norm(found[inside] - proj[inside], axis=1)
    assert np.all(np.isfinite(err))
    print("dot errors px", np.round(err, 3))
    assert np.median(err) <= 0.5 and err.max() <= 1.0, err


def test_same_seed_same_world(tmp_path):
    img = save_rgb(textured(60, 80, seed=3), tmp_path / "t.png")
    cfg = BuildConfig().replace(seed=7)
    a = build(img, tmp_path / "a.world", cfg, use_cache=False)
    b = build(img, tmp_path / "b.world", cfg, use_cache=False)
    assert (a.path / "splats.ply").read_bytes() == (b.path / "splats.ply").read_bytes()
    assert (a.path / "collision.glb").read_bytes() == (b.path / "collision.glb").read_bytes()
    ma = json.loads((a.path / "world.json").read_text())
    assert ma["seed"] == 7 and ma["config"]["seed"] == 7


def test_cache_resumes_and_no_cache_bypasses(tmp_path):
    img = save_rgb(textured(60, 80, seed=4), tmp_path / "t.png")
    first = build(img, tmp_path / "a.world")
    assert first.cache_hits == []
    again = build(img, tmp_path / "b.world")
    assert again.cache_hits == ["depth", "layers", "surround", "lift", "colour"]
    assert again.resumed_from == "collision"
    assert (first.path / "splats.ply").read_bytes() == (again.path / "splats.ply").read_bytes()
    changed = build(img, tmp_path / "c.world", BuildConfig().replace(lift={"stride": 2}))
    assert changed.cache_hits == ["depth", "layers", "surround"]
    assert changed.resumed_from == "lift"
    assert build(img, tmp_path / "d.world", use_cache=False).cache_hits == []


def test_existing_world_replaced_only_with_force(tmp_path):
    img = save_rgb(textured(40, 50), tmp_path / "t.png")
    out = tmp_path / "w.world"
    build(img, out)
    before = (out / "world.json").read_text()
    with pytest.raises(OutputError, match="already exists"):
        build(img, out)
    assert (out / "world.json").read_text() == before
    build(img, out, BuildConfig().replace(seed=1), force=True)
    assert json.loads((out / "world.json").read_text())["seed"] == 1
    other = tmp_path / "notaworld"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(OutputError, match="not a world bundle"):
        build(img, other, force=True)
    assert (other / "keep.txt").read_text() == "mine"


def test_failure_leaves_nothing_behind(tmp_path):
    img = save_rgb(textured(40, 50), tmp_path / "t.png")
    np.save(tmp_path / "bad.npy", np.full((40, 50), np.nan, np.float32))
    cfg = BuildConfig().replace(depth={"depth_map": str(tmp_path / "bad.npy")})
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(InputError):
        build(img, tmp_path / "w.world", cfg)
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_load_world_rejects_bad_bundles(tmp_path):
    img = save_rgb(textured(40, 50), tmp_path / "t.png")
    out = build(img, tmp_path / "w.world").path
    m = json.loads((out / "world.json").read_text())
    m["splats"]["count"] = -1
    (out / "world.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="splats/count"):
        load_world(out)
    m["splats"]["count"] = 5
    (out / "world.json").write_text(json.dumps(m))
    with pytest.raises(BundleError, match="splat_layers.npy"):
        load_world(out)
    m["layers"][0]["path"] = "../../etc"
    (out / "world.json").write_text(json.dumps(m))
    with pytest.raises(BundleError):
        load_world(out)
    (out / "world.json").write_text("{not json")
    with pytest.raises(BundleError, match="unreadable"):
        load_world(out)
    with pytest.raises(BundleError, match="no such world"):
        load_world(tmp_path / "nope.world")


def test_render_intrinsics_follow_the_size():
    from worldgen.render import render_intrinsics

    class W:
        intrinsics = Intrinsics(500, 500, 319.5, 239.5, 640, 480)

    i = render_intrinsics(W(), (320, 240))
    assert (i.fx, i.cx, i.cy) == pytest.approx((250, 159.5, 119.5))
    i = render_intrinsics(W(), None, 800, (300, 200))
    assert (i.fx, i.cx, i.cy, i.width) == (800, 300, 200, 640)
