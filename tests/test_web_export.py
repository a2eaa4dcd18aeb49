"""`worldgen export --to web`: the folder's files, one frame for splats and collision, the splat
budget of --target, escaping of world-derived strings, and the one-line error without the
viewer bundle. (The page itself in a browser: tests/test_web_browser.py.)"""

from __future__ import annotations

import json
import re
import shutil
import struct
from pathlib import Path

import numpy as np
import pytest

from exporters import ExportOptions, get_exporter
from exporters import web as webx
from exporters.common import prepare, world_splats
from exporters.spz import read_spz
from tests.conftest import REPO
from worldgen.cli import main
from worldgen.world import load_world

FILES = {
    "index.html",
    "viewer.js",
    "world.spz",
    "collision.glb",
    "site.json",
    "world-data.js",
    "THIRD_PARTY_LICENSES.txt",
}


@pytest.fixture(scope="module")
def bundle_built():
    if not webx.VIEWER.is_file():
        import os

        if os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
            pytest.skip("the web viewer is not built (run tools/setup.sh)")
        pytest.fail("the web viewer is not built: run `bash tools/setup.sh`")


@pytest.fixture(scope="module")
def exported(small_world, bundle_built) -> dict[str, bytes]:
    return get_exporter("web").export(load_world(small_world), ExportOptions())


def test_folder_holds_the_site(exported, small_world):
    assert set(exported) == FILES
    site = json.loads(exported["site.json"])
    w = load_world(small_world)
    assert site["splats"]["count"] == w.manifest["splats"]["count"]
    assert site["splats"]["bytes"] == len(exported["world.spz"])
    assert site["collision"]["bytes"] == len(exported["collision.glb"])
    assert site["spawn"]["eye_height"] == w.manifest["spawn"]["eye_height"]
    assert site["fov"]["horizontal_deg"] == pytest.approx(w.intrinsics.hfov_deg)
    # the collision mesh is the bundle's own (world frame, uncompressed)
    assert exported["collision.glb"] == (small_world / "collision.glb").read_bytes()
    # the data script carries the same bytes for file://
    js = exported["world-data.js"].decode()
    m = re.fullmatch(r'window\.WORLDGEN_DATA = \{"spz":"([^"]*)","glb":"([^"]*)"\};\n', js)
    import base64

    assert base64.b64decode(m.group(1)) == exported["world.spz"]
    assert base64.b64decode(m.group(2)) == exported["collision.glb"]
    # one classic script, loaded from the folder; no other URL on the page
    page = exported["index.html"].decode()
    assert re.findall(r'<script src="([^"]+)"', page) == ["viewer.js"]
    assert 'type="module"' not in page
    assert re.findall(r"(?:src|href)=\"([^\"]+)\"", page) == ["data:,", "viewer.js"]
    lic = exported["THIRD_PARTY_LICENSES.txt"].decode()
    for pkg in ("three", "@sparkjsdev/spark", "three-mesh-bvh", "fflate"):
        assert f"\n{pkg} " in lic and "MIT" in lic


def test_splats_and_collision_in_one_frame(exported, small_world):
    """world.spz holds the world frame (+Y up, where collision.glb is), not splats.ply's
    source-camera axes: decoded raw (as Spark does) it equals the splats moved by
    world_from_camera, and the ground splats under the spawn lie on the collision floor."""
    w = load_world(small_world)
    got = read_spz(exported["world.spz"], frame="rub")
    ref = world_splats(w, "world").means.numpy()
    # the export orders splats by importance (prepare); the same order, same points
    ordered = prepare(w, ExportOptions(), "world").means.numpy()
    assert np.abs(got["means"] - ordered).max() < 2e-3  # SPZ's 12-bit fixed point
    assert np.allclose(np.sort(ordered, axis=0), np.sort(ref, axis=0), atol=1e-5)
    # and not splats.ply's source-camera axes (y down, z forward): those differ
    src = w.splats.means.numpy()
    assert np.abs(np.sort(src[:, 1]) - np.sort(ref[:, 1])).max() > 0.1
    spawn = np.array(w.manifest["spawn"]["position"])
    floor = json.loads(exported["site.json"])["bounds"]["min"][1]
    assert spawn[1] == pytest.approx(floor, abs=0.05)


def test_target_caps_splats(small_world, bundle_built):
    w = load_world(small_world)
    files = get_exporter("web").export(w, ExportOptions(max_splats=1000))
    assert webx.spz_count(files["world.spz"]) == 1000
    assert json.loads(files["site.json"])["splats"]["count"] == 1000
    mobile = get_exporter("web").export(w, ExportOptions(target="mobile"))
    site = json.loads(mobile["site.json"])
    assert site["splats"]["sh_degree"] == 0
    assert site["splats"]["count"] == min(500_000, w.manifest["splats"]["count"])


def test_world_strings_are_escaped(small_world, bundle_built, tmp_path):
    evil = 'x</script><script>alert(1)</script>"\u2028'
    site = {"name": evil + ".world", "source": evil, "nested": {"k": "&<>"}}
    page = webx.render_page(site)
    assert "<script>alert" not in page and "</script><script>" not in page
    assert page.count("</script>") == 2  # the JSON block's and viewer.js's own
    inline = re.search(r'id="worldgen-site">(.*?)</script>', page, re.S).group(1)
    assert json.loads(inline) == site  # the page's JSON still reads back exactly
    assert "\u2028" not in inline  # a line separator ends a JS string in older engines
    title = re.search(r"<title>(.*)</title>", page).group(1)
    assert "<" not in title and "&lt;/script&gt;" in title
    js = webx.script_json({"a": evil})
    assert "<" not in js and ">" not in js and "\u2028" not in js


def test_defaults_agree_with_worldgen_view():
    """site.json's speeds and capsule, and the JS walker's defaults, are `worldgen view`'s."""
    from renderer.controller import ControllerConfig

    c = ControllerConfig()
    assert (webx.WALK_SPEED, webx.RUN_SPEED, webx.JUMP_HEIGHT, webx.GRAVITY) == (
        c.walk_speed,
        c.run_speed,
        c.jump_height,
        c.gravity,
    )
    assert (webx.CAPSULE_RADIUS, webx.HEAD_ROOM) == (c.radius, c.head_room)
    js = (REPO / "exporters" / "web" / "src" / "walker.js").read_text()
    for key, value in {
        "walkSpeed": c.walk_speed,
        "runSpeed": c.run_speed,
        "jumpHeight": c.jump_height,
        "gravity": c.gravity,
        "radius": c.radius,
        "headRoom": c.head_room,
        "maxSlopeDeg": c.max_slope_deg,
        "stepHz": c.step_hz,
        "maxFrameDt": c.max_frame_dt,
        "maxFallSpeed": c.max_fall_speed,
    }.items():
        m = re.search(rf"\b{key}: ([0-9.]+),", js)
        assert m and float(m.group(1)) == value, key


def test_compressed_collision_is_refused():
    gltf = json.dumps(
        {"asset": {"version": "2.0"}, "extensionsRequired": ["KHR_draco_mesh_compression"]}
    )
    body = gltf.encode() + b" " * (-len(gltf) % 4)
    glb = (
        struct.pack("<III", 0x46546C67, 2, 20 + len(body))
        + struct.pack("<II", len(body), 0x4E4F534A)
        + body
    )
    from worldgen.errors import BundleError

    with pytest.raises(BundleError, match="compressed"):
        webx.check_uncompressed_glb(glb, "collision.glb")


def test_cli_export_and_missing_bundle(small_world, bundle_built, tmp_path, monkeypatch, capsys):
    out = tmp_path / "site"
    assert main(["export", str(small_world), "--to", "web", "-o", str(out), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["format"] == "web" and {Path(f).name for f in summary["files"]} == FILES
    # exists: refused without --force, untouched
    before = (out / "site.json").read_bytes()
    assert main(["export", str(small_world), "--to", "web", "-o", str(out)]) == 3
    assert (out / "site.json").read_bytes() == before
    # no viewer bundle (node never ran): one line, exit code of a backend that cannot run
    monkeypatch.setattr(webx, "VIEWER", tmp_path / "nope" / "viewer.js")
    capsys.readouterr()
    code = main(["export", str(small_world), "--to", "web", "-o", str(tmp_path / "s2")])
    err = capsys.readouterr().err
    assert code == 5 and err.count("\n") == 1 and "tools/setup.sh" in err
    assert not (tmp_path / "s2").exists()
    shutil.rmtree(out)


def test_collision_box_distrusts_its_glb():
    """The site's bounds fall back to the collision mesh's box; a hostile GLB there is a
    BundleError (the bundle's exit code), never trimesh's own exception."""
    import trimesh

    from exporters.web import _glb_box
    from worldgen.errors import BundleError

    good = trimesh.creation.box(extents=(2.0, 1.0, 4.0)).export(file_type="glb")
    lo, hi = _glb_box(good)
    assert np.allclose(lo, [-1.0, -0.5, -2.0]) and np.allclose(hi, [1.0, 0.5, 2.0])
    for bad in (b"", b"glTF" + bytes(20), good[:40], good[:12] + bytes(len(good) - 12)):
        with pytest.raises(BundleError):
            _glb_box(bad)
