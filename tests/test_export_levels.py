"""Level and engine exports (level-glb, skybox, godot, unity) read back by tools we did not
write: the Khronos glTF validator, Godot 3 headless (imports level.glb like a game project
would), mono's C# compiler (the Unity editor script, against stub classes), and structural
checks of what cannot run here (the Godot 4 project, the Unity folder)."""

from __future__ import annotations

import gzip
import io
import json
import math
import os
import re
import shutil
import struct
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exporters import ExportOptions, get_exporter
from tests.test_formats import validate_gltf
from worldgen.world import load_world

#: small images keep the exports fast; the conventions do not depend on sizes
FAST = ExportOptions(extra={"sky_width": 256})


# ----------------------------------------------------------------------------- helpers


def external(name: str) -> str:
    """Path of a Debian-installed validator (tools/setup.sh --test); missing fails the test
    unless WORLDGEN_ALLOW_MISSING_TOOLS is set (then it skips), like ``tests.conftest.tool``."""
    p = shutil.which(name)
    if p:
        return p
    if os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
        pytest.skip(f"{name} not installed (run tools/setup.sh --test)")
    pytest.fail(f"{name} not installed: run `bash tools/setup.sh --test`")


def read_glb(data: bytes) -> tuple[dict, bytes]:
    magic, version, length = struct.unpack_from("<III", data, 0)
    assert (magic, version, length) == (0x46546C67, 2, len(data))
    jlen, jtype = struct.unpack_from("<II", data, 12)
    assert jtype == 0x4E4F534A
    gltf = json.loads(data[20 : 20 + jlen])
    blen, btype = struct.unpack_from("<II", data, 20 + jlen)
    assert btype == 0x004E4942
    return gltf, data[28 + jlen : 28 + jlen + blen]


def accessor(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = {5126: "<f4", 5125: "<u4", 5123: "<u2"}[acc["componentType"]]
    n = {"SCALAR": 1, "VEC2": 2, "VEC3": 3}[acc["type"]]
    start = view["byteOffset"] + acc.get("byteOffset", 0)
    a = np.frombuffer(binary, dtype, acc["count"] * n, start)
    return a.reshape(acc["count"], n) if n > 1 else a


def node(gltf: dict, name: str) -> dict:
    hits = [n for n in gltf["nodes"] if n.get("name") == name]
    assert len(hits) == 1, f"{name}: {len(hits)} nodes"
    return hits[0]


def validate(data: bytes, tmp_path: Path, name: str = "x.glb") -> dict:
    p = tmp_path / name
    p.write_bytes(data)
    report = validate_gltf(p)
    issues = report["issues"]
    assert issues["numErrors"] == 0, issues["messages"][:5]
    return report


# ----------------------------------------------------------------------------- Godot 3

CHECK_GD = r"""
extends SceneTree

func _v(v):
	return [v.x, v.y, v.z]

func _aabb(points):
	if points.size() == 0:
		return null
	var lo = points[0]
	var hi = points[0]
	for p in points:
		lo = Vector3(min(lo.x, p.x), min(lo.y, p.y), min(lo.z, p.z))
		hi = Vector3(max(hi.x, p.x), max(hi.y, p.y), max(hi.z, p.z))
	return [_v(lo), _v(hi)]

func _colour_key(c):
	if c.r > 0.7 and c.g < 0.3 and c.b < 0.3:
		return "r"
	if c.g > 0.7 and c.r < 0.3 and c.b < 0.3:
		return "g"
	if c.b > 0.7 and c.r < 0.3 and c.g < 0.3:
		return "b"
	return ""

func _walk(node, parent_xf, path, out):
	var xf = parent_xf
	if node is Spatial:
		xf = parent_xf * node.transform
	var info = {"path": path, "class": node.get_class(), "origin": _v(xf.origin),
		"forward": _v(-xf.basis.z), "up": _v(xf.basis.y)}
	if node is CollisionShape and node.shape != null:
		info["shape"] = node.shape.get_class()
		if node.shape is ConcavePolygonShape:
			var faces = []
			for p in node.shape.get_faces():
				faces.append(xf.xform(p))
			info["faces"] = faces.size() / 3
			info["aabb"] = _aabb(faces)
	if node is NavigationMeshInstance and node.navmesh != null:
		var verts = []
		for p in node.navmesh.get_vertices():
			verts.append(xf.xform(p))
		info["polygons"] = node.navmesh.get_polygon_count()
		info["aabb"] = _aabb(verts)
	if node is MeshInstance and node.mesh != null:
		var arrays = node.mesh.surface_get_arrays(0)
		var verts = arrays[Mesh.ARRAY_VERTEX]
		var uvs = arrays[Mesh.ARRAY_TEX_UV]
		var world = []
		for p in verts:
			world.append(xf.xform(p))
		info["vertices"] = verts.size()
		info["aabb"] = _aabb(world)
		var mat = node.get_surface_material(0)
		if mat == null:
			mat = node.mesh.surface_get_material(0)
		if mat != null and mat is SpatialMaterial and mat.albedo_texture != null:
			var img = mat.albedo_texture.get_data()
			if img.is_compressed():
				img.decompress()
			info["texture"] = [img.get_width(), img.get_height()]
			img.lock()
			var sums = {}
			var counts = {}
			for i in range(verts.size()):
				var w = img.get_width()
				var h = img.get_height()
				var x = int(clamp(floor(fposmod(uvs[i].x, 1.0) * w), 0, w - 1))
				var y = int(clamp(floor(uvs[i].y * h), 0, h - 1))
				var key = _colour_key(img.get_pixel(x, y))
				if key != "":
					sums[key] = sums.get(key, Vector3()) + world[i]
					counts[key] = counts.get(key, 0) + 1
			img.unlock()
			var cent = {}
			for k in sums.keys():
				cent[k] = _v(sums[k] / counts[k])
			info["colour_centroids"] = cent
			info["colour_counts"] = counts
	out.append(info)
	for child in node.get_children():
		_walk(child, xf, path + "/" + child.name, out)

func _init():
	var packed = load("res://level.glb")
	if packed == null:
		print("WORLDGEN_JSON " + to_json({"error": "could not load res://level.glb"}))
	else:
		var root = packed.instance()
		var out = []
		_walk(root, Transform(), root.name, out)
		print("WORLDGEN_JSON " + to_json({"nodes": out}))
		root.free()
	quit()
"""

# Import settings: materials embedded in the scene (with external .material files the 3.2
# editor never quits after ``--editor --quit``), meshes uncompressed (exact positions / UVs).
LEVEL_IMPORT = """[remap]

importer="scene"

[params]

materials/location=1
materials/storage=0
meshes/compress=false
meshes/ensure_tangents=false
"""


def godot3_level(glb: bytes, tmp_path: Path) -> dict[str, dict]:
    """Import ``glb`` in a fresh Godot 3 project and return its instanced nodes by path."""
    godot = external("godot3-server")
    proj = tmp_path / "godot3"
    proj.mkdir()
    (proj / "project.godot").write_text('config_version=4\n\n[application]\n\nconfig/name="t"\n')
    (proj / "level.glb").write_bytes(glb)
    (proj / "level.glb.import").write_text(LEVEL_IMPORT)
    (proj / "check.gd").write_text(CHECK_GD.lstrip())
    env = {**os.environ, "HOME": str(tmp_path)}  # editor settings go to tmp, not ~/.config
    r = subprocess.run(
        [godot, "--path", str(proj), "--editor", "--quit"],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert list((proj / ".import").glob("level.glb-*.scn")), "Godot did not import level.glb"
    r = subprocess.run(
        [godot, "--path", str(proj), "-s", "check.gd"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    lines = [x for x in r.stdout.splitlines() if x.startswith("WORLDGEN_JSON ")]
    assert lines, r.stdout[-2000:] + r.stderr[-2000:]
    report = json.loads(lines[-1][len("WORLDGEN_JSON ") :])
    assert "error" not in report, report
    return {n["path"].split("/", 1)[1] if "/" in n["path"] else "": n for n in report["nodes"]}


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def world(small_world):
    return load_world(small_world)


@pytest.fixture(scope="module")
def level(world) -> bytes:
    return get_exporter("level-glb").export(world, FAST)


def _equirect_dirs(w: int, h: int) -> np.ndarray:
    """Directions of the pixel centres, (worldgen/surround/geometry.py)."""
    lon = -math.pi + (np.arange(w) + 0.5) * 2 * math.pi / w
    lat = math.pi / 2 - (np.arange(h) + 0.5) * math.pi / h
    LON, LAT = np.meshgrid(lon, lat)
    return np.stack([np.sin(LON) * np.cos(LAT), np.sin(LAT), -np.cos(LON) * np.cos(LAT)], -1)


def _save_png(a: np.ndarray, path: Path) -> None:
    Image.fromarray(a).save(path)


# The marker world: distinct geometry and colours at +X, +Y and +Z of the world frame.
MARK_SPAWN = [0.5, -1.6, 0.25]
MARK_YAW = 30.0
GROUND = (-1.0, 2.0, -1.5, 0.5)  # x0, x1, z0, z1 at y = -1.6
BOXES = {  # (min corner, max corner) of boxes in the collision mesh
    "plus_x": ((3.0, -1.6, -0.25), (3.5, -0.6, 0.25)),
    "plus_y": ((-0.25, 5.0, -0.25), (0.25, 5.5, 0.25)),
    "plus_z": ((-0.25, -1.6, 4.0), (0.25, -1.1, 4.5)),
}
COLLISION_AABB = [[-1.0, -1.6, -1.5], [3.5, 5.5, 4.5]]


def sky_colour(d: np.ndarray) -> np.ndarray:
    """The marker world's sky encodes each direction as a colour."""
    return (np.asarray(d) + 1.0) / 2.0


@pytest.fixture(scope="module")
def marker_world(small_world, tmp_path_factory) -> Path:
    """A copy of ``small_world`` rewritten so every axis has its own marker:

    * background layer: a wall at 4 m (world z = -4) with a red patch right of centre
      (world +X) and a green one at the top (world +Y); the occluded layer is all red at 1 m
      (must be left out); the surroundings panorama holds only a blue band behind the spawn
      (world +Z) at 3 m; a sky layer encodes each direction as a colour;
    * collision: a ground rectangle and boxes at +X, +Y (floating) and +Z;
    * spawn at (0.5, -1.6, 0.25), yaw 30 degrees (turned right, toward +X).
    """
    import trimesh

    d = tmp_path_factory.mktemp("marker") / "marker.world"
    shutil.copytree(small_world, d)
    m = json.loads((d / "world.json").read_text())
    m["spawn"] = {"position": MARK_SPAWN, "yaw_deg": MARK_YAW, "eye_height": 1.6}
    by_kind = {layer["kind"]: layer for layer in m["layers"]}

    bg = d / by_kind["background"]["path"]
    intr = json.loads((bg / "intrinsics.json").read_text())
    H, W = intr["height"], intr["width"]
    rgb = np.full((H, W, 3), 128, np.uint8)
    rgb[int(0.40 * H) : int(0.60 * H), int(0.78 * W) : int(0.95 * W)] = (255, 0, 0)
    rgb[int(0.02 * H) : int(0.16 * H), int(0.42 * W) : int(0.58 * W)] = (0, 255, 0)
    _save_png(rgb, bg / "rgb.png")
    np.save(bg / "depth.npy", np.full((H, W), 4.0, np.float32))
    _save_png(np.full((H, W), 255, np.uint8), bg / "alpha.png")
    _save_png(np.ones((H, W), np.uint8), bg / "labels.png")

    occ = d / by_kind["occluded"]["path"]
    H2, W2 = np.load(occ / "depth.npy").shape
    _save_png(np.tile(np.array([255, 0, 0], np.uint8), (H2, W2, 1)), occ / "rgb.png")
    np.save(occ / "depth.npy", np.full((H2, W2), 1.0, np.float32))
    _save_png(np.full((H2, W2), 255, np.uint8), occ / "alpha.png")

    sur = d / by_kind["surroundings"]["path"]
    Hs, Ws = np.load(sur / "depth.npy").shape
    dirs = _equirect_dirs(Ws, Hs)
    lon = np.degrees(np.arctan2(dirs[..., 0], -dirs[..., 2]))
    lat = np.degrees(np.arcsin(dirs[..., 1]))
    band = (np.abs(lon) > 150) & (np.abs(lat) < 30)
    rgb = np.full((Hs, Ws, 3), 128, np.uint8)
    rgb[band] = (0, 0, 255)
    _save_png(rgb, sur / "rgb.png")
    np.save(sur / "depth.npy", np.where(band, 3.0, np.nan).astype(np.float32))
    _save_png(np.where(band, 255, 0).astype(np.uint8), sur / "alpha.png")
    _save_png(np.ones((Hs, Ws), np.uint8), sur / "labels.png")

    sky = d / "layers" / "skydome"
    sky.mkdir()
    Hk, Wk = 64, 128
    colours = sky_colour(_equirect_dirs(Wk, Hk))
    _save_png((colours * 255 + 0.5).astype(np.uint8), sky / "rgb.png")
    np.save(sky / "depth.npy", np.full((Hk, Wk), 1000.0, np.float32))
    _save_png(np.full((Hk, Wk), 255, np.uint8), sky / "alpha.png")
    proj = json.loads((sur / "projection.json").read_text())
    proj.update(width=Wk, height=Hk)
    (sky / "projection.json").write_text(json.dumps(proj))
    m["layers"].append(
        {
            "id": 9,
            "name": "sky-dome",
            "kind": "sky",
            "projection": "equirectangular",
            "path": "layers/skydome",
            "splat_count": 0,
        }
    )

    x0, x1, z0, z1 = GROUND
    y = -1.6
    V = np.array([[x0, y, z0], [x1, y, z0], [x1, y, z1], [x0, y, z1]])
    ground = trimesh.Trimesh(V, [[0, 2, 1], [0, 3, 2]], process=False)
    assert ground.face_normals[:, 1].min() > 0.99  # faces up
    boxes = []
    for lo, hi in BOXES.values():
        lo, hi = np.array(lo), np.array(hi)
        box = trimesh.creation.box(extents=hi - lo)
        box.apply_translation((lo + hi) / 2)
        boxes.append(box)
    scene = trimesh.Scene()
    scene.add_geometry(ground, geom_name="ground", node_name="ground")
    scene.add_geometry(trimesh.util.concatenate(boxes), geom_name="walls", node_name="walls")
    (d / "collision.glb").write_bytes(scene.export(file_type="glb"))
    (d / "world.json").write_text(json.dumps(m, indent=2))
    load_world(d)  # still a valid bundle
    return d


# ----------------------------------------------------------------------------- level-glb


def test_level_glb_passes_the_khronos_validator(level, tmp_path):
    report = validate(level, tmp_path)
    issues = report["issues"]
    assert issues["numWarnings"] == 0, issues["messages"][:5]
    # the OMI extensions are optional: unknown to the validator, reported as infos only
    unknown = {m["message"] for m in issues["messages"] if m["code"] == "UNSUPPORTED_EXTENSION"}
    assert all("OMI_physics" in u for u in unknown), unknown


def test_level_glb_nodes_and_extensions(level, world):
    import trimesh

    gltf, binary = read_glb(level)
    assert {"OMI_physics_shape", "OMI_physics_body"} <= set(gltf["extensionsUsed"])
    assert "extensionsRequired" not in gltf
    names = [n.get("name") for n in gltf["nodes"]]
    for name in ("visual", "collision-colonly", "navmesh-navmesh", "spawn_point"):
        assert names.count(name) == 1, names
    top = [gltf["nodes"][i]["name"] for i in gltf["scenes"][gltf["scene"]]["nodes"]]
    assert set(top) == {"visual", "collision-colonly", "navmesh-navmesh", "spawn_point"}

    # collision: every triangle of collision.glb, referenced by the OMI trimesh shape
    col = node(gltf, "collision-colonly")
    shapes = gltf["extensions"]["OMI_physics_shape"]["shapes"]
    body = col["extensions"]["OMI_physics_body"]
    assert body["motion"] == {"type": "static"}
    shape = shapes[body["collider"]["shape"]]
    assert shape == {"type": "trimesh", "trimesh": {"mesh": col["mesh"]}}
    prim = gltf["meshes"][col["mesh"]]["primitives"][0]
    ref = trimesh.load(world.path / "collision.glb", force="scene").to_geometry()
    assert accessor(gltf, binary, prim["indices"]).size == 3 * len(ref.faces)
    P = accessor(gltf, binary, prim["attributes"]["POSITION"])
    assert np.allclose(P.min(0), ref.bounds[0], atol=1e-5)
    assert np.allclose(P.max(0), ref.bounds[1], atol=1e-5)

    # navmesh: walkable triangles only, on the ground
    nav = gltf["meshes"][node(gltf, "navmesh-navmesh")["mesh"]]["primitives"][0]
    V = accessor(gltf, binary, nav["attributes"]["POSITION"]).astype(np.float64)
    F = accessor(gltf, binary, nav["indices"]).reshape(-1, 3)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    n /= np.linalg.norm(n, axis=1, keepdims=True)
    assert len(F) and n[:, 1].min() >= math.cos(math.radians(35)) - 1e-6
    assert np.allclose(V[:, 1], -world.manifest["ground"]["camera_height"], atol=1e-4)

    # spawn: at eye height above the spawn position, yaw 0 = identity rotation (looks down -Z)
    sp = node(gltf, "spawn_point")
    spawn = world.manifest["spawn"]
    eye = np.add(spawn["position"], [0, spawn["eye_height"], 0])
    assert np.allclose(sp["translation"], eye)
    assert np.allclose(sp["rotation"], [0, 0, 0, 1])
    extras = gltf["scenes"][0]["extras"]["worldgen"]
    assert extras["spawn"] == spawn and extras["bounds"] == world.manifest["bounds"]
    assert (
        gltf["asset"]["extras"]["worldgen"]["source"]["sha256"]
        == (world.manifest["source"]["sha256"])
    )


def test_level_glb_without_omi_extensions(world, tmp_path):
    data = get_exporter("level-glb").export(world, ExportOptions(extra={"omi_physics": False}))
    gltf, _ = read_glb(data)
    assert "extensions" not in gltf and "extensions" not in node(gltf, "collision-colonly")
    assert not any(e.startswith("OMI_") for e in gltf.get("extensionsUsed", []))
    report = validate(data, tmp_path)
    assert report["issues"]["numInfos"] <= 1  # at most a non-power-of-two texture


def test_visual_mesh_lies_on_the_layer_depth_with_its_colours(level, world):
    """Every vertex of a perspective layer's proxy projects back (through world_from_camera
    and the layer's intrinsics) onto a pixel whose depth it has and whose colour its UV shows."""
    gltf, binary = read_glb(level)
    layers = {f"visual_{x.name}": x for x in world.layers}
    assert "visual_occluded" not in {n.get("name") for n in gltf["nodes"]}
    M = world.world_from_camera
    checked = 0
    for nd in gltf["nodes"]:
        layer = layers.get(nd.get("name", ""))
        if layer is None or layer.projection != "perspective":
            continue
        prim = gltf["meshes"][nd["mesh"]]["primitives"][0]
        P = accessor(gltf, binary, prim["attributes"]["POSITION"]).astype(np.float64)
        uv = accessor(gltf, binary, prim["attributes"]["TEXCOORD_0"]).astype(np.float64)
        tex = gltf["textures"][
            gltf["materials"][prim["material"]]["pbrMetallicRoughness"]["baseColorTexture"]["index"]
        ]
        view = gltf["bufferViews"][gltf["images"][tex["source"]]["bufferView"]]
        png = binary[view["byteOffset"] : view["byteOffset"] + view["byteLength"]]
        img = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        cam = (P - M[:3, 3]) @ M[:3, :3]  # world -> camera (OpenCV)
        K = layer.intrinsics
        u = K.fx * cam[:, 0] / cam[:, 2] + K.cx
        v = K.fy * cam[:, 1] / cam[:, 2] + K.cy
        ui, vi = np.rint(u).astype(int), np.rint(v).astype(int)
        assert np.allclose(u, ui, atol=1e-3) and np.allclose(v, vi, atol=1e-3)
        assert np.allclose(cam[:, 2], layer.depth[vi, ui], rtol=1e-5)
        h, w = img.shape[:2]
        tx = np.clip((uv[:, 0] * w).astype(int), 0, w - 1)
        ty = np.clip((uv[:, 1] * h).astype(int), 0, h - 1)
        expect = np.rint(layer.rgb[vi, ui] * 255)
        assert np.abs(img[ty, tx].astype(float) - expect).max() <= 1
        checked += len(P)
    assert checked > 100


def test_depth_edges_are_not_bridged(tmp_path):
    """A layer whose depth jumps from 2 m to 4 m mid-image gives two separate sheets."""
    from exporters.level_glb import LevelConfig, perspective_layer_mesh
    from worldgen.camera import Intrinsics

    H, W = 20, 30
    depth = np.full((H, W), 2.0, np.float32)
    depth[:, 15:] = 4.0
    depth[5:8, 3:6] = np.nan  # a hole

    class Layer:
        name = "edge"
        path = tmp_path
        rgb = np.zeros((H, W, 3), np.float32)
        alpha = np.ones((H, W), np.float32)
        intrinsics = Intrinsics(25.0, 25.0, 14.5, 9.5, W, H)

    Layer.depth = depth
    part = perspective_layer_mesh(Layer(), np.eye(4), 1, LevelConfig())
    z = part.vertices[:, 2][part.faces]
    assert np.all((z.max(1) < 3) | (z.min(1) > 3)), "a triangle spans the depth edge"
    # both sides are meshed (2 triangles per valid cell), the hole's cells are not
    near = (14 * 19 - 4 * 4) * 2  # cells left of the edge minus the 16 touching the hole
    far = 14 * 19 * 2
    assert int((z.max(1) < 3).sum()) == near and int((z.min(1) > 3).sum()) == far
    # faces are wound counter-clockwise seen from the camera (glTF front faces)
    V = part.vertices.astype(np.float64)
    F = part.faces.astype(np.int64)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    assert np.all(np.einsum("ij,ij->i", n, V[F[:, 0]]) < 0)


def test_godot3_imports_the_level(level, world, tmp_path):
    """Godot 3.2's importer turns collision-colonly into a StaticBody with a concave shape of
    every collision triangle, navmesh-navmesh into a NavigationMeshInstance, and keeps the
    spawn point and the textured meshes where they are."""
    import trimesh

    nodes = godot3_level(level, tmp_path)
    assert nodes["collision"]["class"] == "StaticBody"
    shapes = [v for k, v in nodes.items() if k.startswith("collision/")]
    assert [s["class"] for s in shapes] == ["CollisionShape"]
    assert shapes[0]["shape"] == "ConcavePolygonShape"
    ref = trimesh.load(world.path / "collision.glb", force="scene").to_geometry()
    assert shapes[0]["faces"] == len(ref.faces)
    assert np.allclose(shapes[0]["aabb"], ref.bounds, atol=1e-4)
    assert nodes["navmesh"]["class"] == "NavigationMeshInstance"
    assert nodes["navmesh"]["polygons"] > 0
    spawn = world.manifest["spawn"]
    assert nodes["spawn_point"]["class"] == "Spatial"
    eye = np.add(spawn["position"], [0, spawn["eye_height"], 0])
    assert np.allclose(nodes["spawn_point"]["origin"], eye, atol=1e-5)
    assert np.allclose(nodes["spawn_point"]["forward"], [0, 0, -1], atol=1e-5)
    meshes = [v for k, v in nodes.items() if k.startswith("visual/")]
    assert meshes and all(v["class"] == "MeshInstance" and "texture" in v for v in meshes)
    assert not any("occluded" in k for k in nodes)


def test_marker_world_level_in_godot3(marker_world, tmp_path):
    """Each axis's marker is where it belongs after export and Godot's import: a flip or a
    swap of any axis moves one of them."""
    w = load_world(marker_world)
    glb = get_exporter("level-glb").export(w, FAST)
    validate(glb, tmp_path)
    nodes = godot3_level(glb, tmp_path)

    shape = nodes["collision/shape0"]
    assert np.allclose(shape["aabb"], COLLISION_AABB, atol=1e-4)
    x0, x1, z0, z1 = GROUND
    assert np.allclose(nodes["navmesh"]["aabb"], [[x0, -1.6, z0], [x1, -1.6, z1]], atol=1e-4)

    eye = np.add(MARK_SPAWN, [0, 1.6, 0])
    assert np.allclose(nodes["spawn_point"]["origin"], eye, atol=1e-5)
    yaw = math.radians(MARK_YAW)  # turned right: the view leans toward +X
    assert np.allclose(nodes["spawn_point"]["forward"], [math.sin(yaw), 0, -math.cos(yaw)])
    assert np.allclose(nodes["spawn_point"]["up"], [0, 1, 0])

    cent = {}
    for k, v in nodes.items():
        if k.startswith("visual/"):
            for c, p in v.get("colour_centroids", {}).items():
                assert c not in cent, f"colour {c} in two layers"
                cent[c] = np.array(p)
    assert set(cent) == {"r", "g", "b"}, cent  # the all-red occluded layer is not there
    r, g, b = cent["r"], cent["g"], cent["b"]
    assert r[0] > 1.2 and abs(r[1]) < 0.6 and abs(r[2] + 4) < 0.05, r  # right = +X
    assert g[1] > 1.0 and abs(g[0]) < 0.6 and abs(g[2] + 4) < 0.05, g  # top = +Y
    assert b[2] > 2.0 and abs(b[0]) < 0.5 and abs(b[1]) < 0.5, b  # behind = +Z


# ----------------------------------------------------------------------------- skybox


def _face_dir(face: str, n: int, i: int, j: int) -> np.ndarray:
    """The OpenGL cube-map direction of face pixel (row i, col j), written out from the
    OpenGL specification's table (major axis, sc, tc) independently of exporters.skybox."""
    sc = 2 * (j + 0.5) / n - 1
    tc = 2 * (i + 0.5) / n - 1
    d = {
        "px": (1, -tc, -sc),
        "nx": (-1, -tc, sc),
        "py": (sc, 1, tc),
        "ny": (sc, -1, -tc),
        "pz": (sc, -tc, 1),
        "nz": (-sc, -tc, -1),
    }[face]
    d = np.array(d, float)
    return d / np.linalg.norm(d)


def _png(data: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"), np.float64) / 255


def test_skybox_faces_and_equirect_follow_the_directions(marker_world):
    w = load_world(marker_world)
    files = get_exporter("skybox").export(w, ExportOptions(extra={"sky_width": 256}))
    meta = json.loads(files["skybox.json"])
    assert meta["cubemap"]["order"] == ["px", "nx", "py", "ny", "pz", "nz"]
    assert "sky layer" in meta["source"]["base"]
    n = meta["cubemap"]["size"]
    rng = np.random.default_rng(0)
    for face in meta["cubemap"]["order"]:
        img = _png(files[f"{face}.png"])
        assert img.shape == (n, n, 3)
        for i, j in rng.integers(2, n - 2, size=(12, 2)):
            expect = sky_colour(_face_dir(face, n, i, j))
            assert np.abs(img[i, j] - expect).max() < 0.05, (face, i, j, img[i, j], expect)
    pano = _png(files["sky.png"])
    H, W = pano.shape[:2]
    assert (W, H) == (256, 128)
    dirs = _equirect_dirs(W, H)
    for i, j in rng.integers(4, H - 4, size=(20, 2)):
        assert np.abs(pano[i, 2 * j] - sky_colour(dirs[i, 2 * j])).max() < 0.05


def test_skybox_falls_back_to_the_surroundings(world):
    files = get_exporter("skybox").export(world, ExportOptions(extra={"sky_width": 64}))
    meta = json.loads(files["skybox.json"])
    assert "surroundings" in meta["source"]["base"]
    assert set(files) == {"sky.png", "skybox.json"} | {
        f"{f}.png" for f in "px nx py ny pz nz".split()
    }


def test_engine_sky_layouts(marker_world):
    """The sky.png of each engine samples right with that engine's own panorama formula
    (Godot 4 sky.glsl: u = atan2(x, -z) / 2pi; Unity Skybox/Panoramic: u = 0.5 -
    atan2(z_u, x_u) / 2pi with Unity axes = world axes with x mirrored by glTFast)."""
    from exporters.godot import sky_png_godot
    from exporters.unity import sky_png_unity

    w = load_world(marker_world)
    opts = ExportOptions(extra={"sky_width": 256})
    godot, unity = _png(sky_png_godot(w, opts)), _png(sky_png_unity(w, opts))
    H, W = godot.shape[:2]
    for d in ([0, 0, -1], [1, 0, 0], [0.6, 0.3, 0.74], [-0.5, -0.4, 0.77], [-0.9, 0.1, -0.3]):
        d = np.array(d) / np.linalg.norm(d)
        v = math.acos(d[1]) / math.pi
        ug = (math.atan2(d[0], -d[2]) / (2 * math.pi)) % 1.0
        xu, zu = -d[0], d[2]
        uu = (0.5 - math.atan2(zu, xu) / (2 * math.pi)) % 1.0
        row = min(int(v * H), H - 1)
        for img, u in ((godot, ug), (unity, uu)):
            col = int(u * W) % W
            assert np.abs(img[row, col] - sky_colour(d)).max() < 0.06, (d, img[row, col])


# ----------------------------------------------------------------------------- Godot 4 project


@pytest.fixture(scope="module")
def godot_project(world) -> dict[str, bytes]:
    return get_exporter("godot").export(world, FAST)


def parse_godot_config(text: str) -> dict[str, dict[str, str]]:
    """A Godot ConfigFile reader (project.godot / .import): ``[section]`` then ``key=value``,
    where a value runs on until its brackets, braces, parentheses and quotes are closed."""
    out: dict[str, dict[str, str]] = {"": {}}
    section = ""
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        i += 1
        if not line or line.startswith(";"):
            continue
        if line.startswith("[") and line.endswith("]") and "=" not in line:
            section = line[1:-1]
            assert section not in out, f"section [{section}] twice"
            out[section] = {}
            continue
        assert "=" in line, f"line {i}: {line!r}"
        key, value = line.split("=", 1)
        while _open(value):
            assert i < len(lines), f"unclosed value of {key}"
            value += "\n" + lines[i]
            i += 1
        assert key not in out[section], f"{key} twice"
        out[section][key] = value
    return out


def _open(value: str) -> bool:
    depth, quoted, esc = 0, False, False
    for ch in value:
        if quoted:
            if esc:
                esc = False
            elif ch == "\\":
                esc = True
            elif ch == '"':
                quoted = False
        elif ch == '"':
            quoted = True
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth -= 1
            assert depth >= 0, value
    return depth > 0 or quoted


def parse_tscn(text: str) -> tuple[dict, list[dict]]:
    """(header attributes, [{"tag", "attrs", "props"}]) of a text scene."""
    sections = []
    for line in text.splitlines():
        if line.startswith("["):
            m = re.fullmatch(r"\[(\w+)((?:\s+\w+=(?:\"[^\"]*\"|[^\s\]]+(?:\([^)]*\))?))*)\]", line)
            assert m, line
            attrs = dict(re.findall(r"(\w+)=(\"[^\"]*\"|[A-Za-z]+\([^)]*\)|[^\s\]]+)", m.group(2)))
            sections.append({"tag": m.group(1), "attrs": attrs, "props": {}})
        elif line.strip():
            key, value = line.split(" = ", 1)
            sections[-1]["props"][key] = value
    assert sections and sections[0]["tag"] == "gd_scene"
    return sections[0]["attrs"], sections[1:]


def transform3d(text: str) -> tuple[np.ndarray, np.ndarray]:
    m = re.fullmatch(r"Transform3D\(([^)]*)\)", text)
    assert m, text
    v = np.array([float(x) for x in m.group(1).split(",")])
    assert len(v) == 12
    return v[:9].reshape(3, 3), v[9:]


GODOT4_TYPES = {
    "Node3D",
    "WorldEnvironment",
    "CharacterBody3D",
    "CollisionShape3D",
    "Camera3D",
    "CapsuleShape3D",
    "PanoramaSkyMaterial",
    "Sky",
    "Environment",
    "PackedScene",
    "Script",
    "Texture2D",
}


def test_godot_project_files_parse_and_resolve(godot_project, world, level, tmp_path):
    files = godot_project
    assert {"project.godot", "main.tscn", "player.gd", "level.glb", "splats/world.ply"} <= set(
        files
    )
    cfg = parse_godot_config(files["project.godot"].decode())
    assert cfg[""]["config_version"] == "5"
    main = cfg["application"]["run/main_scene"]
    assert main == '"res://main.tscn"'
    for action in ("move_forward", "move_back", "move_left", "move_right", "jump", "run"):
        ev = cfg["input"][action]
        assert '"events": [' in ev and "Object(InputEventKey" in ev, action
    # every action the script asks for is defined (ui_cancel is built in)
    script = files["player.gd"].decode()
    used = set(re.findall(r'"(\w+)"', " ".join(re.findall(r"Input\.\w+\(([^)]*)\)", script))))
    used |= set(re.findall(r'is_action_pressed\("(\w+)"\)', script))
    assert used - {"ui_cancel"} <= set(cfg["input"]), used

    header, sections = parse_tscn(files["main.tscn"].decode())
    assert header["format"] == "3"
    ext = {s["attrs"]["id"].strip('"'): s for s in sections if s["tag"] == "ext_resource"}
    sub = {s["attrs"]["id"].strip('"'): s for s in sections if s["tag"] == "sub_resource"}
    assert int(header["load_steps"]) == len(ext) + len(sub) + 1
    for s in ext.values():
        path = s["attrs"]["path"].strip('"')
        assert path.startswith("res://") and path[6:] in files, path
        assert s["attrs"]["type"].strip('"') in GODOT4_TYPES
    for s in sub.values():
        assert s["attrs"]["type"].strip('"') in GODOT4_TYPES
    text = files["main.tscn"].decode()
    for rid in re.findall(r'ExtResource\("([^"]+)"\)', text):
        assert rid in ext, rid
    for rid in re.findall(r'SubResource\("([^"]+)"\)', text):
        assert rid in sub, rid

    nodes = [s for s in sections if s["tag"] == "node"]
    paths = {}
    for n in nodes:
        name = n["attrs"]["name"].strip('"')
        parent = n["attrs"].get("parent", "").strip('"')
        if not parent:
            paths[""] = n
            continue
        assert parent in paths or parent == ".", f"{name}: parent {parent} not declared yet"
        key = name if parent == "." else f"{parent}/{name}"
        paths[key] = n
        if "instance" not in n["attrs"]:
            assert n["attrs"]["type"].strip('"') in GODOT4_TYPES, n
    assert paths[""]["attrs"]["type"] == '"Node3D"'
    assert paths["Level"]["attrs"]["instance"] == 'ExtResource("1_level")'
    assert ext["1_level"]["attrs"]["path"] == '"res://level.glb"'

    spawn = world.manifest["spawn"]
    player = paths["Player"]
    assert player["attrs"]["type"] == '"CharacterBody3D"'
    R, t = transform3d(player["props"]["transform"])
    assert np.allclose(R @ R.T, np.eye(3), atol=1e-5) and np.linalg.det(R) > 0
    assert np.allclose(t, spawn["position"], atol=1e-5)
    assert np.allclose(-R[:, 2], [0, 0, -1], atol=1e-5)  # yaw 0 looks down -Z
    assert player["props"]["script"] == 'ExtResource("2_player")'
    shape = paths["Player/CollisionShape3D"]
    capsule = sub[re.search(r'SubResource\("([^"]+)"\)', shape["props"]["shape"]).group(1)]
    assert capsule["attrs"]["type"] == '"CapsuleShape3D"'
    assert float(capsule["props"]["radius"]) == 0.3 and float(capsule["props"]["height"]) == 1.8
    assert np.allclose(transform3d(shape["props"]["transform"])[1], [0, 0.9, 0])
    cam = paths["Player/Camera3D"]
    assert np.allclose(transform3d(cam["props"]["transform"])[1], [0, spawn["eye_height"], 0])
    assert cam["props"]["current"] == "true"
    R, t = transform3d(paths["Splats"]["props"]["transform"])
    assert np.allclose(R, np.diag([1, -1, -1])) and np.allclose(t, 0)

    # the bundled GLB is the level export, and the PLY is a binary INRIA PLY
    assert files["level.glb"] == level
    validate(files["level.glb"], tmp_path, "godot_level.glb")
    assert files["splats/world.ply"].startswith(b"ply\nformat binary_little_endian 1.0\n")
    readme = files["README.md"].decode()
    assert "gdgs" in readme and "Splats" in readme


GODOT3_ONLY = [
    r"\bKinematicBody\b",
    r"\bSpatial\b",
    r"\bmove_and_slide\(\s*[^)\s]",  # Godot 3 passed velocity and up direction
    r"^onready\b",
    r"^export\b",
    r"\bdeg2rad\b",
    r"\brad2deg\b",
    r"\bis_action_just_pressed\(\s*\"[^\"]+\"\s*,",
    r"\bTransform\(",
    r"\bset_mouse_mode\(\s*Input\.MOUSE_MODE_CAPTURED\s*,",
    r"\byield\(",
    r"\bfuncref\(",
    r"\bstr2var\b",
]


def test_player_script_is_godot4(godot_project):
    src = godot_project["player.gd"].decode()
    assert src.startswith("extends CharacterBody3D\n")
    for needed in (
        r"\bmove_and_slide\(\)",
        r"Input\.get_vector\(",
        r"func _unhandled_input\(event",
        r"\bInputEventMouseMotion\b",
        r'ProjectSettings\.get_setting\("physics/3d/default_gravity"\)',
        r"func _physics_process\(delta",
        r"@onready var camera: Camera3D = \$Camera3D",
    ):
        assert re.search(needed, src), needed
    for bad in GODOT3_ONLY:
        assert not re.search(bad, src, re.M), bad
    # GDScript: tabs only for indentation, blocks after a colon indent one level more
    prev = ""
    for line in src.splitlines():
        indent = line[: len(line) - len(line.lstrip())]
        assert " " not in indent, repr(line)
        if prev.rstrip().endswith(":") and not prev.lstrip().startswith("#"):
            assert len(indent) == len(prev) - len(prev.lstrip()) + 1, (prev, line)
        if line.strip():
            prev = line


# ----------------------------------------------------------------------------- Unity folder


@pytest.fixture(scope="module")
def unity_folder(world) -> dict[str, bytes]:
    return get_exporter("unity").export(world, FAST)


UNITY_STUBS = r"""
namespace UnityEngine
{
    using System.Collections;
    using System.Collections.Generic;
    public class Object
    {
        public string name;
        public static T Instantiate<T>(T original, Transform parent) where T : Object
        { return original; }
        public static void DestroyImmediate(Object obj) { }
    }
    public struct Vector3
    {
        public float x, y, z;
        public Vector3(float x, float y, float z) { this.x = x; this.y = y; this.z = z; }
        public static Vector3 up { get { return new Vector3(0, 1, 0); } }
        public static Vector3 back { get { return new Vector3(0, 0, -1); } }
        public float sqrMagnitude { get { return x * x + y * y + z * z; } }
        public Vector3 normalized { get { return this; } }
        public static Vector3 operator -(Vector3 a) { return new Vector3(-a.x, -a.y, -a.z); }
        public static Vector3 operator -(Vector3 a, Vector3 b) { return a; }
        public static Vector3 operator *(Vector3 a, float d) { return a; }
    }
    public struct Quaternion
    {
        public static Quaternion LookRotation(Vector3 forward, Vector3 upwards)
        { return new Quaternion(); }
        public static Quaternion Euler(float x, float y, float z) { return new Quaternion(); }
    }
    public class Component : Object
    {
        public GameObject gameObject;
        public Transform transform;
        public T GetComponent<T>() { return default(T); }
        public T[] GetComponentsInChildren<T>(bool includeInactive) { return new T[0]; }
    }
    public class Transform : Component, IEnumerable
    {
        public Vector3 position, localPosition, localScale, forward;
        public Quaternion rotation, localRotation;
        public void SetParent(Transform parent, bool worldPositionStays) { }
        public IEnumerator GetEnumerator() { return new List<Transform>().GetEnumerator(); }
    }
    public class GameObject : Object
    {
        public GameObject(string name) { }
        public Transform transform;
        public string tag;
        public bool isStatic;
        public T AddComponent<T>() where T : Component, new() { return new T(); }
    }
    public class Mesh : Object { }
    public class MeshFilter : Component { public Mesh sharedMesh; }
    public class Renderer : Component { public bool enabled; }
    public class MeshRenderer : Renderer { }
    public class Collider : Component { }
    public class MeshCollider : Collider { public Mesh sharedMesh; }
    public class CharacterController : Collider
    { public float radius, height; public Vector3 center; }
    public class Camera : Component { public float nearClipPlane, farClipPlane; }
    public static class Debug
    {
        public static void Log(object message) { }
        public static void LogWarning(object message) { }
    }
    public static class JsonUtility
    { public static T FromJson<T>(string json) { return default(T); } }
}
namespace UnityEditor
{
    public class AssetPostprocessor { }
    public static class AssetDatabase
    {
        public static T LoadAssetAtPath<T>(string path) where T : UnityEngine.Object
        { return null; }
        public static string[] GetAllAssetPaths() { return new string[0]; }
    }
    public static class EditorApplication
    {
        public delegate void CallbackFunction();
        public static CallbackFunction delayCall;
    }
    public static class PrefabUtility
    {
        public static UnityEngine.GameObject SaveAsPrefabAsset(
            UnityEngine.GameObject root, string path) { return root; }
    }
    [System.AttributeUsage(System.AttributeTargets.Method)]
    public class MenuItem : System.Attribute { public MenuItem(string itemName) { } }
}
"""


def _strip_cs(src: str) -> str:
    """C# source without comments, strings and character literals."""
    src = re.sub(r"//[^\n]*", "", src)
    src = re.sub(r"/\*.*?\*/", "", src, flags=re.S)
    src = re.sub(r'@"(?:[^"]|"")*"', '""', src)
    src = re.sub(r'"(?:\\.|[^"\\])*"', '""', src)
    return re.sub(r"'(?:\\.|[^'\\])'", "''", src)


def test_unity_folder_structure(unity_folder, level, tmp_path):
    files = unity_folder
    base = "Worldgen/small"
    assert set(files) == {
        f"{base}/level.glb",
        f"{base}/splats.ply",
        f"{base}/splats.spz",
        f"{base}/sky.png",
        f"{base}/worldgen_level.json",
        f"{base}/README.md",
        "Editor/WorldgenLevelPostprocessor.cs",
    }
    assert files[f"{base}/level.glb"] == level
    validate(files[f"{base}/level.glb"], tmp_path, "unity_level.glb")
    assert files[f"{base}/splats.ply"].startswith(b"ply\nformat binary_little_endian 1.0\n")
    magic, version, count = struct.unpack_from("<III", gzip.decompress(files[f"{base}/splats.spz"]))
    assert (magic, version) == (0x5053474E, 2) and count > 0  # aras-p reads SPZ v2 only
    info = json.loads(files[f"{base}/worldgen_level.json"])
    assert info["splats_spz"]["scale"] == [-1.0, 1.0, 1.0]
    # glTFast maps world (x, y, z) to Unity (-x, y, z); the PLY holds (X, -Y, -Z): its object
    # must map stored p to diag(-1, -1, -1) p, i.e. Rx(180) then scale (-1, 1, 1)
    rx = np.diag([1.0, -1.0, -1.0])
    assert info["splats_ply"]["rotation_euler"] == [180.0, 0.0, 0.0]
    assert np.allclose(rx @ np.diag(info["splats_ply"]["scale"]), np.diag([-1, -1, -1]))

    cs = files["Editor/WorldgenLevelPostprocessor.cs"].decode()
    code = _strip_cs(cs)
    assert code.count("{") == code.count("}") and code.count("(") == code.count(")")
    depth = 0
    for ch in code:
        depth += {"{": 1, "}": -1}.get(ch, 0)
        assert depth >= 0
    assert "using UnityEditor;" in cs and "using UnityEngine;" in cs
    assert re.search(r"class WorldgenLevelPostprocessor\s*:\s*AssetPostprocessor", code)
    assert re.search(
        r"static void OnPostprocessAllAssets\(\s*string\[\] \w+, string\[\] \w+, "
        r"string\[\] \w+,\s*string\[\] \w+\)",
        code,
    )
    for needed in ("collision-colonly", "navmesh-navmesh", "spawn_point", "worldgen_level.json"):
        assert f'"{needed}"' in cs, needed
    for needed in (
        "AddComponent<MeshCollider>()",
        "AddComponent<CharacterController>()",
        "PrefabUtility.SaveAsPrefabAsset",
        "-spawn.forward",
    ):
        assert needed in cs, needed
    # every field of the JSON the script reads exists in its LevelInfo class, same names
    fields = set(re.findall(r"public (?:float|string|SplatTransform) (\w+)", cs))
    assert {
        "name",
        "eye_height",
        "capsule_radius",
        "capsule_height",
        "splats_spz",
        "splats_ply",
    } <= fields
    assert fields - {"rotation_euler", "scale"} <= set(info), fields - set(info)


def test_unity_editor_script_compiles_against_stubs(unity_folder, tmp_path):
    """mono's C# compiler builds the editor script against stub UnityEngine / UnityEditor
    classes holding the members it uses (catches syntax and type errors, not API drift)."""
    mcs = external("mcs")
    (tmp_path / "Stubs.cs").write_text(UNITY_STUBS)
    (tmp_path / "Script.cs").write_bytes(unity_folder["Editor/WorldgenLevelPostprocessor.cs"])
    r = subprocess.run(
        [
            mcs,
            "-target:library",
            "-warnaserror+",
            "-nowarn:414,649",
            f"-out:{tmp_path / 'x.dll'}",
            str(tmp_path / "Stubs.cs"),
            str(tmp_path / "Script.cs"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_exports_are_registered():
    for name, kind in (
        ("level-glb", "file"),
        ("skybox", "folder"),
        ("godot", "folder"),
        ("unity", "folder"),
    ):
        assert get_exporter(name).kind == kind
    assert get_exporter("level-glb").extension == ".glb"


def test_level_glb_is_fast_and_compact(world):
    t = time.perf_counter()
    data = get_exporter("level-glb").export(world, ExportOptions())
    assert time.perf_counter() - t < 30
    gltf, _ = read_glb(data)
    tris = sum(
        gltf["accessors"][p["indices"]]["count"] // 3
        for n in gltf["nodes"]
        if n.get("name", "").startswith("visual_")
        for p in gltf["meshes"][n["mesh"]]["primitives"]
    )
    assert 1000 < tris <= 60_000 * 1.2, tris
