"""same_world: two builds of one photo are the same world; a changed seed or file is not."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from worldgen.config import load_preset
from worldgen.pipeline import build
from worldgen.sameworld import VOLATILE_FIELDS, same_world, strip_volatile
from worldgen.splats import ply_bytes, read_ply

from .conftest import save_rgb, textured

# the fast preset with a small surround panorama: a few seconds per build
SMALL = {"width": 256, "sky_width": 128, "ground_size": 64}


@pytest.fixture(scope="module")
def worlds(tmp_path_factory):
    """Three builds of one 96x72 photo: a and b with seed 0 (b from another folder and path,
    so the volatile fields differ), c with seed 1."""
    d = tmp_path_factory.mktemp("sameworld")
    img = save_rgb(textured(72, 96, seed=5), d / "photo.png")
    other = d / "elsewhere"
    other.mkdir()
    img2 = shutil.copy(img, other / "copy.png")
    cfg = load_preset("fast").replace(surround=SMALL)
    a = build(img, d / "a.world", cfg, use_cache=False).path
    b = build(img2, d / "b.world", cfg, use_cache=False).path
    c = build(img, d / "c.world", cfg.replace(seed=1), use_cache=False).path
    return a, b, c


def test_two_builds_of_one_photo_are_the_same_world(worlds):
    a, b, _ = worlds
    ma, mb = (json.loads((w / "world.json").read_text()) for w in (a, b))
    assert ma["source"]["path"] != mb["source"]["path"]  # volatile fields really differ
    assert ma["timings"] != mb["timings"]
    assert same_world(a, b) == []
    assert same_world(a, b, rtol=1e-5) == []


def test_a_changed_seed_is_another_world(worlds):
    a, _, c = worlds
    diffs = same_world(a, c)
    assert "world.json: seed: 0 != 1" in diffs
    assert any(d.startswith("splats.ply:") for d in diffs)
    assert any(d.startswith("splats.ply:") for d in same_world(a, c, rtol=1e-5))


def _copy(src, dst):
    return shutil.copytree(src, dst)


def test_splats_bitwise_or_within_rtol(worlds, tmp_path):
    a = worlds[0]
    b = _copy(a, tmp_path / "b.world")
    s = read_ply(b / "splats.ply")
    s.means[0, 0] = s.means[0, 0] * (1 + 1e-6) + 1e-6  # a last-bits difference
    (b / "splats.ply").write_bytes(ply_bytes(s))
    n = (a / "splats.ply").stat().st_size
    assert same_world(a, b) == [f"splats.ply: bytes differ ({n} vs {n} bytes)"]
    assert same_world(a, b, rtol=1e-5) == []
    s.means[1, 2] += 0.5  # a real move
    (b / "splats.ply").write_bytes(ply_bytes(s))
    diffs = same_world(a, b, rtol=1e-5)
    assert len(diffs) == 1 and diffs[0].startswith("splats.ply: z: 1 of ")


def test_volatile_fields_are_ignored_others_are_not(worlds, tmp_path):
    a = worlds[0]
    b = _copy(a, tmp_path / "b.world")
    m = json.loads((b / "world.json").read_text())
    m["timings"] = {"load": 99.0}
    m["source"]["path"] = "/somewhere/else.png"
    m["generator"]["torch"] = "9.9"
    m["depth"]["reason"] = "another cache state"
    (b / "world.json").write_text(json.dumps(m))
    assert same_world(a, b) == []
    m["spawn"]["eye_height"] += 0.01
    m["source"]["sha256"] = "0" * 64
    (b / "world.json").write_text(json.dumps(m))
    diffs = same_world(a, b)
    assert len(diffs) == 2
    assert diffs[0].startswith("world.json: source.sha256: ")
    assert diffs[1].startswith("world.json: spawn.eye_height: ")


def test_other_files_compared(worlds, tmp_path):
    a = worlds[0]
    b = _copy(a, tmp_path / "b.world")
    depth = np.load(b / "layers/0/depth.npy")
    depth[0, 0] = depth[0, 0] + 1.0 if np.isfinite(depth[0, 0]) else 1.0
    np.save(b / "layers/0/depth.npy", depth)
    (b / "preview.png").unlink()
    (b / "extra.txt").write_text("x")
    diffs = same_world(a, b)
    assert f"extra.txt: only in {b}" in diffs
    assert f"preview.png: only in {a}" in diffs
    assert any(d.startswith("layers/0/depth.npy: values: 1 of ") for d in diffs)
    assert len(diffs) == 3


def test_strip_volatile_wildcards():
    m = {"outpaint": {"learned": {"views": [{"time_s": 1, "yaw": 2}], "time_s": 3}}, "seed": 0}
    assert strip_volatile(m) == {"outpaint": {"learned": {"views": [{"yaw": 2}]}}, "seed": 0}
    assert "timings" in VOLATILE_FIELDS and "source.path" in VOLATILE_FIELDS
