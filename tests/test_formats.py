"""World files read back by tools we did not write: plyfile, PlayCanvas splat-transform,
the Khronos glTF validator, trimesh."""

import json
import subprocess

import numpy as np
import pytest
import torch

from tests.conftest import save_rgb, textured, tool
from worldgen.pipeline import build
from worldgen.splats import Splats, inria_property_names, read_ply, write_ply


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    d = tmp_path_factory.mktemp("fmt")
    img = save_rgb(textured(48, 64, seed=9), d / "t.png")
    return build(img, d / "t.world", use_cache=False).path


def test_ply_has_exact_inria_properties(world):
    from plyfile import PlyData

    ply = PlyData.read(str(world / "splats.ply"))
    assert ply.text is False and ply.byte_order == "<"
    el = ply["vertex"]
    names = [p.name for p in el.properties]
    assert names == inria_property_names(0)
    assert names[:9] == ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
    assert names[-8:] == [
        "opacity",
        "scale_0",
        "scale_1",
        "scale_2",
        "rot_0",
        "rot_1",
        "rot_2",
        "rot_3",
    ]
    assert all(p.val_dtype in ("f4", "float32") for p in el.properties)
    assert len(el.data) == json.loads((world / "world.json").read_text())["splats"]["count"]


@pytest.mark.parametrize("degree", [0, 1, 2, 3])
def test_ply_round_trip_all_sh_degrees(tmp_path, degree):
    n, k = 50, (degree + 1) ** 2
    g = torch.Generator().manual_seed(degree)
    s = Splats(
        torch.randn(n, 3, generator=g),
        torch.randn(n, 4, generator=g),
        torch.randn(n, 3, generator=g),
        torch.randn(n, generator=g),
        torch.randn(n, k, 3, generator=g),
        torch.zeros(n, dtype=torch.uint8),
    )
    write_ply(s, tmp_path / "s.ply")
    r = read_ply(tmp_path / "s.ply")
    for f in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        assert torch.equal(getattr(r, f), getattr(s, f)), f
    from plyfile import PlyData

    names = [p.name for p in PlyData.read(str(tmp_path / "s.ply"))["vertex"].properties]
    assert names == inria_property_names(degree)
    assert len(names) == 17 + 3 * (k - 1)
    # f_rest is channel-major: f_rest_0 is R of coefficient 1, f_rest_{k-1} is G of coefficient 1
    if degree:
        v = PlyData.read(str(tmp_path / "s.ply"))["vertex"]
        assert np.allclose(v["f_rest_0"], s.sh[:, 1, 0].numpy())
        assert np.allclose(v[f"f_rest_{k - 1}"], s.sh[:, 1, 1].numpy())


def splat_transform_json(ply, flag: str) -> dict:
    """PlayCanvas splat-transform's JSON report (``--info`` or ``--stats``) of a splat file."""
    r = subprocess.run(
        [tool("splat-transform"), str(ply), "null", flag, "json"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout[r.stdout.index("{") :])


def test_splat_transform_reads_it_as_gaussians(world):
    info = splat_transform_json(world / "splats.ply", "--info")
    assert info.get("gaussian") is True, info
    n = json.loads((world / "world.json").read_text())["splats"]["count"]
    assert info["numGaussians"] == n, info


def test_splat_transform_decodes_our_values(world):
    """The independent decoder sees the positions, colours, opacities and scales we meant
    (its stats are of activated values: colour = 0.5 + C0 f_dc, sigmoid opacity, exp scale)."""
    info = splat_transform_json(world / "splats.ply", "--stats")
    st = info["stats"][0]
    cols, data = st["columns"], st["data"]
    s = read_ply(world / "splats.ply")
    assert st["numGaussians"] == len(s)
    expect = {
        "x": s.means[:, 0],
        "y": s.means[:, 1],
        "z": s.means[:, 2],
        "f_dc_0": s.rgb[:, 0],
        "f_dc_2": s.rgb[:, 2],
        "opacity": s.opacities,
        "scale_2": s.scales[:, 2],
    }
    for name, ref in expect.items():
        i = cols.index(name)
        assert data["min"][i] == pytest.approx(float(ref.min()), rel=1e-4, abs=1e-5), name
        assert data["max"][i] == pytest.approx(float(ref.max()), rel=1e-4, abs=1e-5), name


def validate_gltf(path) -> dict:
    """Run the Khronos glTF validator (npm gltf-validator) on a .glb; returns its report."""
    tool("gltf-validator")  # presence check (node_modules)
    from tests.conftest import REPO

    js = (
        "const v=require('gltf-validator');const fs=require('fs');"
        "const f=process.argv[1];"
        "v.validateBytes(new Uint8Array(fs.readFileSync(f)),{uri:f})"
        ".then(r=>{console.log(JSON.stringify(r));}).catch(e=>{console.error(e);process.exit(2);});"
    )
    r = subprocess.run(
        ["node", "-e", js, str(path)], capture_output=True, text=True, cwd=REPO, timeout=120
    )
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def test_collision_glb_passes_the_khronos_validator(world):
    report = validate_gltf(world / "collision.glb")
    assert report["issues"]["numErrors"] == 0, report["issues"]["messages"][:5]
    import trimesh

    scene = trimesh.load(world / "collision.glb", force="scene")
    names = set(scene.graph.nodes_geometry)
    assert {"ground", "boundary"} <= names, names
    m = json.loads((world / "world.json").read_text())
    lo, hi = np.array(m["bounds"]["min"]), np.array(m["bounds"]["max"])
    ground = scene.geometry[scene.graph["ground"][1]]
    assert np.allclose(ground.vertices[:, 1], -m["ground"]["camera_height"], atol=1e-5)
    # the ground covers the bounds, and the boundary closes them
    assert ground.bounds[0][0] <= lo[0] + 1e-6 and ground.bounds[1][2] >= hi[2] - 1e-6
    boundary = scene.geometry[scene.graph["boundary"][1]]
    assert boundary.bounds[1][1] - boundary.bounds[0][1] >= 2.0
