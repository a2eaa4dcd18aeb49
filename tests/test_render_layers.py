"""``worldgen render --layers``: only the splats of the named layers (or kinds), on every path."""

import json

import numpy as np
import pytest
from PIL import Image

from tests.conftest import save_rgb
from tests.test_cli import assert_one_line_error, run
from tests.test_surround import ground_sky_scene
from worldgen.camera import Camera, Intrinsics, Pose
from worldgen.cli import main
from worldgen.config import BuildConfig
from worldgen.errors import InputError
from worldgen.pipeline import build
from worldgen.raster import rasterize
from worldgen.render import render_world
from worldgen.world import load_world

POSE = (0, 0, 0, 60, 10, 0)  # turned right and up: sky, dome, surroundings and photo layers
SIZE = (96, 64)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("layers")
    img, _, _, intr, _ = ground_sky_scene()
    p = save_rgb(img, d / "gs.png")
    # the popup prior (not the scene's depth map, whose sky is 200 m of geometry) finds the sky:
    # sky, background, occluded, foreground, sky-dome and surroundings layers
    cfg = BuildConfig().replace(camera={"focal_px": intr.fx}, refine={"iters": 0})
    return load_world(build(p, d / "gs.world", cfg, use_cache=False).path)


def camera(pose=POSE) -> Camera:
    return Camera(Intrinsics.from_hfov(90, *SIZE), Pose.from_cli(*pose))


def by_hand(world, ids, cam):
    """The render with every other layer's splats removed by hand."""
    import torch

    s = world.splats
    keep = torch.from_numpy(np.isin(s.layers.numpy(), list(ids)))
    return rasterize(s.index(keep), cam, cam.intrinsics.width, cam.intrinsics.height)


def ids_of(world, *, names=(), kinds=()):
    return {x["id"] for x in world.manifest["layers"] if x["name"] in names or x["kind"] in kinds}


def png(p) -> np.ndarray:
    return np.asarray(Image.open(p).convert("RGB"))


def cli_render(world, out, *extra, pose=POSE, backend="cpu"):
    args = ["render", str(world.path), "-o", str(out), "--size", f"{SIZE[0]}x{SIZE[1]}"]
    args += ["--fov", "90", "--backend", backend, "--quiet", *extra]
    if pose is not None:
        args.append("--pose=" + ",".join(map(str, pose)))
    assert main(args) == 0
    return None if out.is_dir() else png(out)


def as_png(rgb) -> np.ndarray:
    return (np.clip(np.asarray(rgb), 0, 1) * 255 + 0.5).astype(np.uint8)


def test_world_has_the_layers_this_test_needs(world):
    kinds = {x["kind"] for x in world.manifest["layers"]}
    names = {x["name"] for x in world.manifest["layers"]}
    assert {"sky", "background", "surroundings"} <= kinds
    assert {"sky", "sky-dome", "surroundings"} <= names


@pytest.mark.parametrize("item", ["sky-dome", "surroundings", "background", "sky"])
def test_one_layer_or_kind_renders_exactly_its_splats(world, item, tmp_path):
    ids = ids_of(world, names=[item], kinds=[item])
    assert set(world.layer_ids([item])) == ids
    cam = camera()
    ref = by_hand(world, ids, cam)
    # the Python API
    got = render_world(world, cam.pose, cam.intrinsics, layers=[item])
    assert np.array_equal(got.rgb.numpy(), ref.rgb.numpy())
    assert np.array_equal(got.alpha.numpy(), ref.alpha.numpy())
    # the CLI (CPU rasterizer)
    assert np.array_equal(cli_render(world, tmp_path / "a.png", "--layers", item), as_png(ref.rgb))
    # the layer is really there and really alone
    full = render_world(world, cam.pose, cam.intrinsics)
    assert float((ref.alpha > 0.5).float().mean()) > 0.01
    assert not np.array_equal(ref.rgb.numpy(), full.rgb.numpy())


def test_a_kind_selects_every_layer_of_that_kind(world):
    assert set(world.layer_ids(["sky"])) == ids_of(world, names=["sky", "sky-dome"])
    assert len(world.layer_ids("sky")) == 2  # the photo's sky and the dome
    assert world.layer_ids("sky-dome,surroundings") == world.layer_ids(["surroundings", "sky-dome"])
    sel = world.select_layers(["sky"]).splats
    assert len(sel) == sum(x["splat_count"] for x in world.manifest["layers"] if x["kind"] == "sky")


def test_all_layers_equal_the_plain_render(world, tmp_path):
    names = ",".join(x["name"] for x in world.manifest["layers"])
    kinds = ",".join({x["kind"] for x in world.manifest["layers"]})
    plain = cli_render(world, tmp_path / "plain.png")
    assert np.array_equal(cli_render(world, tmp_path / "names.png", "--layers", names), plain)
    assert np.array_equal(cli_render(world, tmp_path / "kinds.png", "--layers", kinds), plain)


def test_layers_on_a_path_and_in_stereo(world, tmp_path):
    poses = [[0, 0, 0, -60, 5, 0], [0.3, 0, 0.5, 100, 0, 0]]
    path = tmp_path / "path.json"
    path.write_text(json.dumps(poses))
    cli_render(
        world, tmp_path / "frames", "--layers", "surroundings", "--path", str(path), pose=None
    )
    frames = sorted((tmp_path / "frames").glob("*.png"))
    assert len(frames) == 2
    for f, p in zip(frames, poses, strict=True):
        ref = by_hand(world, ids_of(world, names=["surroundings"]), camera(p))
        assert np.array_equal(png(f), as_png(ref.rgb))
    sbs = cli_render(world, tmp_path / "sbs.png", "--layers", "sky-dome", "--stereo", "sbs")
    plain = cli_render(world, tmp_path / "sbs_all.png", "--stereo", "sbs")
    assert sbs.shape == plain.shape and not np.array_equal(sbs, plain)


def test_gl_backend_renders_the_same_selection(world, tmp_path):
    pytest.importorskip("moderngl")
    from renderer.offscreen import render_gl

    cam = camera()
    ids = ids_of(world, kinds=["sky"])
    import torch

    s = world.splats
    hand = s.index(torch.from_numpy(np.isin(s.layers.numpy(), list(ids))))
    rgb, _ = render_gl(hand, cam.pose, cam.intrinsics)
    rgb_api, _ = render_gl(world, cam.pose, cam.intrinsics, layers="sky")
    assert np.array_equal(rgb_api, rgb)
    got = cli_render(world, tmp_path / "gl.png", "--layers", "sky", backend="gl")
    assert np.array_equal(got, as_png(rgb))


def test_unknown_layer_is_a_one_line_input_error(world, tmp_path):
    with pytest.raises(InputError, match="unknown layer 'skyy'"):
        world.layer_ids(["sky", "skyy"])
    out = tmp_path / "x.png"
    r = run("render", world.path, "-o", out, "--layers", "sky,skyy", "--backend", "cpu")
    assert r.returncode == InputError.exit_code
    assert_one_line_error(r, "unknown layer 'skyy'", "sky-dome", "surroundings", "kinds:")
    assert not out.exists()
    r = run("render", world.path, "-o", out, "--layers", "sky,,dome")
    assert r.returncode != 0 and "Traceback" not in r.stderr and not out.exists()
