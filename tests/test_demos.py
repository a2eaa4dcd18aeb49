"""Every demo photo builds, with the default preset (refinement included), into a complete,
valid world that reproduces the photo at >= 30 dB PSNR (the optimisation issue's target)."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import DEMOS
from tests.scenes import psnr
from tests.test_formats import splat_transform_json
from worldgen.config import load_preset
from worldgen.pipeline import build
from worldgen.world import load_world

assert len(DEMOS) >= 3, "demos/ must hold the demo photos"


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    d = tmp_path_factory.mktemp("demos")
    cfg = load_preset("default")
    assert cfg.refine.iters > 0
    return {p.name: build(p, d / f"{p.stem}.world", cfg, use_cache=False).path for p in DEMOS}


@pytest.mark.parametrize("name", [p.name for p in DEMOS])
def test_demo_world_is_complete_and_reproduces_the_photo(worlds, name):
    w = load_world(worlds[name])
    m = w.manifest
    assert m["splats"]["count"] == len(w.splats) > 50_000
    src = w.source_rgb
    assert max(src.shape[:2]) <= 768
    preview = np.asarray(Image.open(w.path / "preview.png"), np.float32) / 255.0
    p = psnr(preview, src)
    assert p >= 30.0, f"{name}: PSNR {p:.2f} dB"
    # the recorded figures are the preview's, and refinement did not make the photo worse
    # (the PNGs' 8-bit rounding lowers high PSNRs: 48.2 dB recorded reads 47.7 from the PNGs)
    assert p - 0.1 <= m["quality"]["source_psnr_db"] <= p + 1.0
    r = m["refine"]
    assert r["iters"] == load_preset("default").refine.iters
    assert r["source_psnr_after"] >= r["source_psnr_before"] - 0.05, r
    for layer in w.layers:  # every splat-bearing pixel has a positive depth
        d, a = layer.depth, layer.alpha
        assert np.all(np.isfinite(d[a > 0])) and np.all(d[np.isfinite(d)] > 0), layer.name
    # the photo is covered: every pixel belongs to some perspective layer
    cover = np.zeros(src.shape[:2], bool)
    for layer in w.layers:
        if layer.projection == "perspective":
            li = layer.intrinsics
            oy, ox = int(round(li.cy - w.intrinsics.cy)), int(round(li.cx - w.intrinsics.cx))
            a = layer.alpha[oy : oy + src.shape[0], ox : ox + src.shape[1]]
            cover |= a > 0.5
    assert cover.all()
    info = splat_transform_json(w.path / "splats.ply", "--info")
    assert info["gaussian"] is True and info["numGaussians"] == len(w.splats)


def test_outdoor_demo_has_ground_and_sky(worlds):
    w = load_world(worlds["mountain_path.jpg"])
    names = [layer.name for layer in w.layers]
    assert {"sky", "background", "sky-dome", "surroundings"} <= set(names), names
    H, W = w.source_rgb.shape[:2]

    def crop(layer, a):  # a perspective layer's array over the photo's frame
        oy = int(round(layer.intrinsics.cy - w.intrinsics.cy))
        ox = int(round(layer.intrinsics.cx - w.intrinsics.cx))
        return a[oy : oy + H, ox : ox + W]

    sky = w.layers[names.index("sky")]
    assert (crop(sky, sky.alpha) > 0.5).mean() > 0.1
    # a walkable layout: the nearest visible surface gets farther from the bottom of the frame
    # toward the horizon
    z = np.full((H, W), np.inf)
    for layer in w.layers:
        if layer.projection == "perspective":
            d = crop(layer, layer.depth)
            vis = crop(layer, layer.alpha) > 0.5
            z = np.where(vis & (d < z), d, z)
    assert np.isfinite(z).all()
    bottom = np.median(z[int(0.95 * H) :])
    middle = np.median(z[int(0.55 * H) : int(0.65 * H)])
    assert bottom < middle
    assert 1.0 < bottom < 10.0


def test_demo_collision_meshes_are_valid_gltf_with_walls(worlds):
    import trimesh

    from tests.test_formats import validate_gltf

    for name in ("mountain_path.jpg", "living_room.jpg"):
        path = worlds[name] / "collision.glb"
        report = validate_gltf(path)
        assert report["issues"]["numErrors"] == 0, (name, report["issues"]["messages"][:5])
        scene = trimesh.load(path, force="scene")
        names = set(scene.graph.nodes_geometry)
        assert {"ground", "boundary", "walls"} <= names, (name, names)
        walls = scene.geometry[scene.graph["walls"][1]]
        assert len(walls.faces) >= 20
        # walls stand on the ground: their lowest points are near the ground plane
        m = json.loads((worlds[name] / "world.json").read_text())
        assert walls.bounds[0][1] < -m["ground"]["camera_height"] + 1.0


def test_gl_renderer_matches_the_rasterizer_on_a_demo_world(worlds):
    """The viewer's GL splat renderer (headless EGL, Mesa llvmpipe here) and the CPU rasterizer
    agree on a real demo world seen from a moved camera (issue: PSNR >= 35 dB)."""
    pytest.importorskip("moderngl")
    from renderer.offscreen import OffscreenRenderer, create_context
    from worldgen.camera import Camera, Pose
    from worldgen.raster import rasterize

    w = load_world(worlds["mountain_path.jpg"])
    intr = w.intrinsics.scaled_to(256, int(round(256 * w.intrinsics.height / w.intrinsics.width)))
    cam = Camera(intr, Pose.from_cli(0.3, 0, 0.5, 20, 0, 0))
    bg = (0.2, 0.3, 0.4)
    ref = rasterize(w.splats, cam, background=bg).rgb.numpy()
    ctx = create_context()
    try:
        with OffscreenRenderer(w.splats, ctx=ctx) as r:
            gl = r.render(cam, background=bg).rgb
    finally:
        ctx.release()
    p = psnr(np.clip(gl, 0, 1).astype(np.float32), np.clip(ref, 0, 1).astype(np.float32))
    assert p >= 35.0, f"GL vs CPU rasterizer: {p:.2f} dB"
