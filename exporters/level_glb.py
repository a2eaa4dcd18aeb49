"""``level-glb``: one glTF 2.0 binary holding a game level built from a world bundle.

What is inside (node names are what engines key on):

* ``visual`` with one child per layer (``visual_<layer name>``): a textured proxy mesh of each
  perspective layer (kinds scene / background / foreground) and of the equirectangular
  ``surroundings`` panorama, grid-triangulated from the layer's depth at a decimated step,
  without triangles across depth edges or holes. Texture = the layer's ``rgb.png`` (embedded
  PNG), material unlit (``KHR_materials_unlit``, optional) and double-sided. It doubles as an
  occlusion / shadow proxy under the splats. Layers of kind ``occluded`` and ``sky`` and pixels
  labelled sky are left out (the sky is the ``skybox`` export).
* ``collision-colonly``: the world's ``collision.glb`` parts merged into one mesh. The name
  suffix makes Godot 3 and Godot 4 before 4.3 import it as a ``StaticBody`` + concave
  ``CollisionShape`` with no visual (verified with Godot 3.2 in the tests); the node also carries
  ``OMI_physics_body`` (``motion.type = "static"``, ``collider``) and the document the matching
  ``OMI_physics_shape`` (``trimesh`` of that mesh), from which Godot 4.3+ and other OMI readers
  build the body. Both extensions are in ``extensionsUsed`` only (optional); the option
  ``omi_physics=False`` leaves them out.
* ``navmesh-navmesh``: the triangles of the collision ``ground`` part (of every part if there is
  none) whose normal is within ``slope_limit_deg`` of up (Godot: ``-navmesh`` suffix ->
  NavigationMesh).
* ``spawn_point``: an empty node at the spawn's eye point (``spawn.position`` + ``eye_height``
  along +Y), rotated by the spawn yaw about +Y so that its -Z axis is the view direction (yaw 0
  looks down -Z, at the photo; yaw > 0 turns right, toward +X).
* world facts (spawn, bounds, ground, source, scale source) in ``scene.extras.worldgen`` and
  ``asset.extras.worldgen``.

Frames: everything is written in the **world frame** unchanged -- metres, right-handed, +Y up,
the source camera at the origin looking down -Z -- which *is* glTF's frame, so no axis change
happens here. A perspective layer's pixel ``(u, v)`` with z-depth ``z`` is the camera point
``((u - cx) z / fx, (v - cy) z / fy, z)`` (OpenCV axes, the layer's own intrinsics), mapped to
the world by ``world_from_camera``. An equirectangular pixel is ``distance * d(lon, lat)`` with
``d = (sin lon cos lat, sin lat, -cos lon cos lat)`` (worldgen/surround/geometry.py), already in
the world frame. Consumers convert on import: Godot uses glTF axes as they are (identity);
Unity's glTFast mirrors X (``x -> -x``) into Unity's left-handed frame.
"""

from __future__ import annotations

import io
import json
import math
import struct
from dataclasses import dataclass, field

import numpy as np

from .registry import Exporter, ExportOptions, register_exporter

SKY_LABEL = 2  # worldgen.depth.base.SKY
VISUAL_KINDS = ("scene", "background", "foreground", "surroundings")


@dataclass(frozen=True)
class LevelConfig:
    max_triangles: int = 60_000
    """Triangle budget of the visual proxy over all layers (sets the grid step)."""
    edge_jump: float = 0.05
    """Two neighbouring pixels whose depths differ by more than this fraction are a depth edge
    when the difference is also ``edge_spike`` times both neighbouring differences along the
    same row / column (a smooth slope, even grazing ground, changes gradually)."""
    edge_spike: float = 3.0
    grazing_cos: float = 0.015
    """Triangles seen this edge-on (|cos| between normal and view ray) are dropped: what is
    left of depth edges smoothed over several pixels (ground stays up to ~65 camera heights)."""
    max_depth_ratio: float = 2.5
    """Triangles whose corner depths differ by more than this factor are dropped."""
    slope_limit_deg: float = 35.0
    """Collision triangles steeper than this are not walkable (left out of the navmesh)."""
    max_texture: int = 4096
    """Longest texture side in pixels (larger layer images are downscaled)."""
    omi_physics: bool = True
    """Also describe the collision node with OMI_physics_body / OMI_physics_shape (Godot 4.3+
    builds its body from them; the ``-colonly`` suffix alone serves older importers)."""

    @classmethod
    def from_options(cls, options: ExportOptions | None) -> LevelConfig:
        extra = dict(options.extra) if options is not None else {}
        kw = {}
        for key, name in (
            ("level_triangles", "max_triangles"),
            ("slope_limit_deg", "slope_limit_deg"),
            ("max_texture", "max_texture"),
            ("omi_physics", "omi_physics"),
        ):
            if key in extra:
                kw[name] = type(getattr(cls, name))(extra[key])
        return cls(**kw)


# ----------------------------------------------------------------------------- geometry


@dataclass
class MeshPart:
    """A triangle mesh in the world frame: vertices [N, 3] float32, faces [M, 3] uint32, and
    optionally uv [N, 2] float32 with its texture (PNG bytes)."""

    name: str
    vertices: np.ndarray
    faces: np.ndarray
    uv: np.ndarray | None = None
    texture_png: bytes | None = None
    wrap_u: bool = False

    @property
    def n_triangles(self) -> int:
        return int(len(self.faces))


@dataclass
class LevelParts:
    visual: list[MeshPart]
    collision: MeshPart
    navmesh: MeshPart | None
    spawn_eye: np.ndarray  # [3] world position of the eye
    spawn_yaw_deg: float
    extras: dict = field(default_factory=dict)
    omi_physics: bool = True


def _grid(n: int, step: int) -> np.ndarray:
    """Sample indices 0, step, 2 step, ... and always the last index (the grid reaches the edge)."""
    idx = np.arange(0, n, step)
    if idx[-1] != n - 1:
        idx = np.append(idx, n - 1)
    return idx


def _edges_along(z: np.ndarray, cfg: LevelConfig) -> np.ndarray:
    """[..., N-1] bool: depth edges between consecutive samples along the last axis of
    z [..., N] (NaN = unknown; see ``LevelConfig.edge_jump``)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        J = np.abs(np.diff(z, axis=-1)) / np.minimum(z[..., 1:], z[..., :-1])
    J = np.nan_to_num(J, nan=0.0, posinf=0.0)
    pad = [(0, 0)] * (J.ndim - 1)
    prev = np.pad(J, pad + [(1, 0)], mode="edge")[..., :-1]
    nxt = np.pad(J, pad + [(0, 1)], mode="edge")[..., 1:]
    return (J > cfg.edge_jump) & (J > cfg.edge_spike * np.minimum(prev, nxt))


def _integral(a: np.ndarray) -> np.ndarray:
    out = np.zeros((a.shape[0] + 1, a.shape[1] + 1), np.int64)
    out[1:, 1:] = a.astype(np.int64).cumsum(0).cumsum(1)
    return out


def _box(I: np.ndarray, r0, r1, c0, c1) -> np.ndarray:
    """Sums of the array behind the integral image I over rows [r0, r1) x cols [c0, c1)."""
    return I[r1, c1] - I[r0, c1] - I[r1, c0] + I[r0, c0]


def _cells_ok(
    depth: np.ndarray, valid: np.ndarray, rows: np.ndarray, cols: np.ndarray, cfg: LevelConfig
) -> np.ndarray:
    """[len(rows)-1, len(cols)-1] bool: grid cells whose full-resolution pixel block has no
    unknown pixel and no depth edge inside (rows / cols index depth [H, W])."""
    z = np.where(valid, depth, np.nan)
    bad_h = _edges_along(z, cfg) | ~valid[:, 1:] | ~valid[:, :-1]  # [H, W-1]
    bad_v = _edges_along(z.T, cfg).T | ~valid[1:, :] | ~valid[:-1, :]  # [H-1, W]
    Ih, Iv = _integral(bad_h), _integral(bad_v)
    r0, r1 = rows[:-1, None], rows[1:, None]
    c0, c1 = cols[None, :-1], cols[None, 1:]
    return (_box(Ih, r0, r1 + 1, c0, c1) == 0) & (_box(Iv, r0, r1, c0, c1 + 1) == 0)


def _grid_faces(
    P: np.ndarray,
    cell_ok: np.ndarray,
    eye: np.ndarray,
    depth: np.ndarray,
    cfg: LevelConfig,
) -> np.ndarray:
    """Triangles [M, 3] of a grid of points P [h, w, 3] (flat vertex index i * w + j): two per
    cell that ``cell_ok`` [h-1, w-1] allows, minus those across depth edges (corner depth ratio)
    or seen edge-on from ``eye``; wound counter-clockwise seen from ``eye`` (glTF front faces)."""
    h, w = P.shape[:2]
    ii, jj = np.nonzero(cell_ok)
    a = ii * w + jj
    b, c, d = a + 1, a + w, a + w + 1
    tris = np.concatenate([np.stack([a, c, b], 1), np.stack([b, c, d], 1)])
    V = P.reshape(-1, 3).astype(np.float64)
    z = depth.ravel()[tris]
    with np.errstate(divide="ignore", invalid="ignore"):
        ok = z.max(1) <= cfg.max_depth_ratio * z.min(1)
    tris = tris[ok]
    p0, p1, p2 = V[tris[:, 0]], V[tris[:, 1]], V[tris[:, 2]]
    n = np.cross(p1 - p0, p2 - p0)
    ray = (p0 + p1 + p2) / 3.0 - eye
    nn = np.linalg.norm(n, axis=1)
    cosang = np.einsum("ij,ij->i", n, ray) / np.maximum(nn * np.linalg.norm(ray, axis=1), 1e-30)
    keep = (nn > 1e-12) & (np.abs(cosang) >= cfg.grazing_cos)
    tris, cosang = tris[keep], cosang[keep]
    back = cosang > 0  # normal points away from the eye: flip to face it
    tris[back] = tris[back][:, [0, 2, 1]]
    return tris.astype(np.int64)


def _compact(V: np.ndarray, F: np.ndarray, *extra: np.ndarray):
    used = np.zeros(len(V), bool)
    used[F.ravel()] = True
    remap = np.cumsum(used) - 1
    out = [V[used], remap[F].astype(np.uint32)]
    return out + [e[used] for e in extra]


def _texture_png(rgb: np.ndarray, max_side: int) -> bytes:
    from PIL import Image

    img = Image.fromarray((np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8))
    if max(img.size) > max_side:
        s = max_side / max(img.size)
        img = img.resize((max(1, round(img.width * s)), max(1, round(img.height * s))), 3)
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=6)
    return buf.getvalue()


def _layer_valid(layer) -> np.ndarray:
    """[H, W] bool: pixels with known positive depth, alpha > 0.5 and not labelled sky."""
    from PIL import Image

    d = layer.depth
    with np.errstate(invalid="ignore"):
        valid = np.isfinite(d) & (d > 0) & (layer.alpha > 0.5)
    lab = layer.path / "labels.png"
    if lab.is_file():
        labels = np.asarray(Image.open(lab))
        if labels.shape == d.shape:
            valid &= labels != SKY_LABEL
    return valid


def perspective_layer_mesh(layer, world_from_camera: np.ndarray, step: int, cfg: LevelConfig):
    """The proxy mesh of a perspective layer (world frame) or None if it has no triangles."""
    depth = layer.depth.astype(np.float64)
    H, W = depth.shape
    intr = layer.intrinsics
    valid_px = _layer_valid(layer)
    vs, us = _grid(H, step), _grid(W, step)
    Z = np.where(valid_px, depth, 1.0)[np.ix_(vs, us)]
    U, Vv = np.meshgrid(us.astype(np.float64), vs.astype(np.float64))
    P = np.stack([(U - intr.cx) / intr.fx * Z, (Vv - intr.cy) / intr.fy * Z, Z], -1)
    F = _grid_faces(P, _cells_ok(depth, valid_px, vs, us, cfg), np.zeros(3), Z, cfg)
    if not len(F):
        return None
    M = np.asarray(world_from_camera, np.float64)
    Pw = P.reshape(-1, 3) @ M[:3, :3].T + M[:3, 3]
    V, F, px = _compact(Pw, F, np.stack([U, Vv], -1).reshape(-1, 2))
    # the texture is the layer's image cropped to the pixels the triangles use (+1 px margin)
    u0, v0 = np.maximum(px.min(0).astype(int) - 1, 0)
    u1, v1 = np.minimum(px.max(0).astype(int) + 2, [W, H])
    uv = (px - [u0, v0] + 0.5) / [u1 - u0, v1 - v0]
    return MeshPart(
        f"visual_{layer.name}",
        V.astype(np.float32),
        F,
        uv.astype(np.float32),
        _texture_png(layer.rgb[v0:v1, u0:u1], cfg.max_texture),
    )


def equirect_layer_mesh(layer, step: int, cfg: LevelConfig):
    """The proxy mesh of an equirectangular layer (world frame, centred on the world origin)."""
    dist = layer.depth.astype(np.float64)
    H, W = dist.shape
    valid_px = _layer_valid(layer)
    rows = _grid(H, step)
    cols = np.append(np.arange(0, W, step), W)  # W: the seam, wraps to column 0
    dist_w = np.concatenate([dist, dist[:, :1]], 1)  # one wrapped column
    valid_w = np.concatenate([valid_px, valid_px[:, :1]], 1)
    R = np.where(valid_w, dist_w, 1.0)[np.ix_(rows, cols)]
    lon = -math.pi + (cols + 0.5) * 2 * math.pi / W
    lat = math.pi / 2 - (rows + 0.5) * math.pi / H
    LON, LAT = np.meshgrid(lon, lat)
    d = np.stack([np.sin(LON) * np.cos(LAT), np.sin(LAT), -np.cos(LON) * np.cos(LAT)], -1)
    P = d * R[..., None]
    F = _grid_faces(P, _cells_ok(dist_w, valid_w, rows, cols, cfg), np.zeros(3), R, cfg)
    if not len(F):
        return None
    Cc, Rr = np.meshgrid(cols.astype(np.float64), rows.astype(np.float64))
    uv = np.stack([(Cc + 0.5) / W, (Rr + 0.5) / H], -1).reshape(-1, 2)
    V, F, uv = _compact(P.reshape(-1, 3), F, uv)
    return MeshPart(
        f"visual_{layer.name}",
        V.astype(np.float32),
        F,
        uv.astype(np.float32),
        _texture_png(layer.rgb, cfg.max_texture),
        wrap_u=True,
    )


def collision_parts(world) -> dict[str, MeshPart]:
    """The parts of the world's collision.glb (node name -> mesh in the world frame)."""
    import trimesh

    scene = trimesh.load(world.path / "collision.glb", force="scene")
    parts = {}
    for node in scene.graph.nodes_geometry:
        T, geom = scene.graph[node]
        mesh = scene.geometry[geom]
        if not hasattr(mesh, "faces") or not len(mesh.faces):
            continue
        V = np.asarray(mesh.vertices, np.float64) @ T[:3, :3].T + T[:3, 3]
        F = np.asarray(mesh.faces, np.int64)
        if np.linalg.det(T[:3, :3]) < 0:
            F = F[:, [0, 2, 1]]
        parts[str(node)] = MeshPart(str(node), V.astype(np.float32), F)
    if not parts:
        from worldgen.errors import BundleError

        raise BundleError(f"{world.path}/collision.glb holds no triangles")
    return parts


def merge(name: str, parts: list[MeshPart]) -> MeshPart:
    """One mesh of several (no texture)."""
    Vs, Fs, n = [], [], 0
    for p in parts:
        Vs.append(p.vertices)
        Fs.append(p.faces.astype(np.int64) + n)
        n += len(p.vertices)
    return MeshPart(name, np.concatenate(Vs).astype(np.float32), np.concatenate(Fs))


def walkable(mesh: MeshPart, slope_limit_deg: float) -> MeshPart | None:
    """The triangles of ``mesh`` facing up within ``slope_limit_deg`` (None if none)."""
    V = mesh.vertices.astype(np.float64)
    F = mesh.faces.astype(np.int64)
    n = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    nn = np.linalg.norm(n, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        up = n[:, 1] / nn
    keep = (nn > 1e-12) & (up >= math.cos(math.radians(slope_limit_deg)))
    if not keep.any():
        return None
    V2, F2 = _compact(V, F[keep])
    return MeshPart("navmesh", V2.astype(np.float32), F2)


def _grid_step(world, cfg: LevelConfig) -> int:
    total = 0
    for layer in world.layers:
        if layer.kind in VISUAL_KINDS:
            total += int(_layer_valid(layer).sum())
    return max(1, math.ceil(math.sqrt(2.0 * total / max(cfg.max_triangles, 2))))


def level_parts(world, cfg: LevelConfig | None = None) -> LevelParts:
    """Everything the level GLB holds, as arrays (world frame)."""
    cfg = cfg or LevelConfig()
    step = _grid_step(world, cfg)
    visual = []
    for layer in world.layers:
        if layer.kind not in VISUAL_KINDS:
            continue
        if layer.projection == "equirectangular":
            part = equirect_layer_mesh(layer, step, cfg)
        else:
            part = perspective_layer_mesh(layer, world.world_from_camera, step, cfg)
        if part is not None:
            visual.append(part)
    cparts = collision_parts(world)
    col = merge("collision", list(cparts.values()))
    # walkable: the ground part's triangles (all parts if there is no "ground" node)
    nav = walkable(cparts.get("ground") or col, cfg.slope_limit_deg)
    m = world.manifest
    spawn = m["spawn"]
    eye = np.asarray(spawn["position"], np.float64) + [0.0, float(spawn["eye_height"]), 0.0]
    extras = {
        "worldgen": {
            "generator": m["generator"],
            "frame": "world: metres, right-handed, +Y up, source camera at the origin facing -Z",
            "source": {k: m["source"][k] for k in ("path", "sha256", "width", "height")},
            "spawn": spawn,
            "bounds": m["bounds"],
            "ground": m["ground"],
            "scale_source": m["ground"]["scale_source"],
            "world_from_camera": m["world_from_camera"],
            "splats": {"count": m["splats"]["count"], "sh_degree": m["splats"]["sh_degree"]},
            "grid_step_px": step,
            "slope_limit_deg": cfg.slope_limit_deg,
        }
    }
    return LevelParts(
        visual,
        col,
        nav,
        eye,
        float(spawn["yaw_deg"]),
        extras,
        cfg.omi_physics,
    )


# ----------------------------------------------------------------------------- GLB writing

FLOAT, UINT, USHORT = 5126, 5125, 5123
ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 34962, 34963


class GlbBuilder:
    """A minimal glTF 2.0 binary writer: one buffer, 4-byte aligned views."""

    def __init__(self, generator: str):
        self.gltf: dict = {"asset": {"version": "2.0", "generator": generator}}
        self.bin = bytearray()

    def _list(self, key: str) -> list:
        return self.gltf.setdefault(key, [])

    def view(self, data: bytes, target: int | None = None) -> int:
        while len(self.bin) % 4:
            self.bin.append(0)
        v = {"buffer": 0, "byteOffset": len(self.bin), "byteLength": len(data)}
        if target is not None:
            v["target"] = target
        self.bin += data
        self._list("bufferViews").append(v)
        return len(self.gltf["bufferViews"]) - 1

    def accessor(self, arr: np.ndarray, kind: str, *, target: int, minmax: bool = False) -> int:
        if arr.dtype.kind == "f":
            arr, comp = np.ascontiguousarray(arr, "<f4"), FLOAT
        elif arr.size and int(arr.max()) < 65535:
            arr, comp = np.ascontiguousarray(arr, "<u2"), USHORT
        else:
            arr, comp = np.ascontiguousarray(arr, "<u4"), UINT
        count = len(arr) if kind != "SCALAR" else arr.size
        acc = {
            "bufferView": self.view(arr.tobytes(), target),
            "componentType": comp,
            "count": int(count),
            "type": kind,
        }
        if minmax:
            flat = arr.reshape(count, -1)
            acc["min"] = [float(x) for x in flat.min(0)]
            acc["max"] = [float(x) for x in flat.max(0)]
        self._list("accessors").append(acc)
        return len(self.gltf["accessors"]) - 1

    def textured_material(self, name: str, png: bytes, wrap_u: bool) -> int:
        img = self._list("images")
        img.append({"name": name, "bufferView": self.view(png), "mimeType": "image/png"})
        samp = self._list("samplers")
        samp.append(
            {
                "magFilter": 9729,
                "minFilter": 9987,
                "wrapS": 10497 if wrap_u else 33071,
                "wrapT": 33071,
            }
        )
        tex = self._list("textures")
        tex.append({"sampler": len(samp) - 1, "source": len(img) - 1})
        mats = self._list("materials")
        mats.append(
            {
                "name": name,
                "pbrMetallicRoughness": {
                    "baseColorTexture": {"index": len(tex) - 1},
                    "metallicFactor": 0.0,
                    "roughnessFactor": 1.0,
                },
                "doubleSided": True,
                "extensions": {"KHR_materials_unlit": {}},
            }
        )
        self.use_extension("KHR_materials_unlit")
        return len(mats) - 1

    def use_extension(self, name: str) -> None:
        used = self._list("extensionsUsed")
        if name not in used:
            used.append(name)

    def mesh(self, part: MeshPart, material: int | None = None, normals: bool = False) -> int:
        attrs = {"POSITION": self.accessor(part.vertices, "VEC3", target=ARRAY_BUFFER, minmax=True)}
        if normals:
            attrs["NORMAL"] = self.accessor(
                vertex_normals(part.vertices, part.faces), "VEC3", target=ARRAY_BUFFER
            )
        if part.uv is not None:
            attrs["TEXCOORD_0"] = self.accessor(part.uv, "VEC2", target=ARRAY_BUFFER)
        prim = {
            "attributes": attrs,
            "indices": self.accessor(part.faces.reshape(-1), "SCALAR", target=ELEMENT_ARRAY_BUFFER),
            "mode": 4,
        }
        if material is not None:
            prim["material"] = material
        meshes = self._list("meshes")
        meshes.append({"name": part.name, "primitives": [prim]})
        return len(meshes) - 1

    def node(self, node: dict) -> int:
        nodes = self._list("nodes")
        nodes.append(node)
        return len(nodes) - 1

    def to_bytes(self) -> bytes:
        while len(self.bin) % 4:
            self.bin.append(0)
        if self.bin:
            self.gltf["buffers"] = [{"byteLength": len(self.bin)}]
        js = json.dumps(self.gltf, separators=(",", ":"), allow_nan=False).encode()
        js += b" " * (-len(js) % 4)
        chunks = struct.pack("<II", len(js), 0x4E4F534A) + js
        if self.bin:
            chunks += struct.pack("<II", len(self.bin), 0x004E4942) + bytes(self.bin)
        return struct.pack("<III", 0x46546C67, 2, 12 + len(chunks)) + chunks


def vertex_normals(V: np.ndarray, F: np.ndarray) -> np.ndarray:
    """[N, 3] float32 unit area-weighted vertex normals ((0, 1, 0) where undefined)."""
    V = V.astype(np.float64)
    F = F.astype(np.int64)
    fn = np.cross(V[F[:, 1]] - V[F[:, 0]], V[F[:, 2]] - V[F[:, 0]])
    n = np.zeros_like(V)
    for k in range(3):
        np.add.at(n, F[:, k], fn)
    ln = np.linalg.norm(n, axis=1, keepdims=True)
    n = np.where(ln > 1e-20, n / np.maximum(ln, 1e-30), [0.0, 1.0, 0.0])
    n = n.astype(np.float32)
    return n / np.linalg.norm(n, axis=1, keepdims=True)


def yaw_quaternion(yaw_deg: float) -> list[float]:
    """glTF rotation (x, y, z, w) turning -Z toward +X by ``yaw_deg`` (a rotation of -yaw
    about +Y)."""
    h = -math.radians(yaw_deg) / 2.0
    return [0.0, math.sin(h), 0.0, math.cos(h)]


def level_glb_bytes(parts: LevelParts, generator: str = "worldgen") -> bytes:
    b = GlbBuilder(generator)
    top = []
    vis_children = []
    for part in parts.visual:
        mat = b.textured_material(part.name, part.texture_png, part.wrap_u)
        vis_children.append(b.node({"name": part.name, "mesh": b.mesh(part, mat, normals=True)}))
    if vis_children:
        top.append(b.node({"name": "visual", "children": vis_children}))
    col_mesh = b.mesh(parts.collision)
    col_node = {"name": "collision-colonly", "mesh": col_mesh}
    if parts.omi_physics:
        b.gltf["extensions"] = {
            "OMI_physics_shape": {"shapes": [{"type": "trimesh", "trimesh": {"mesh": col_mesh}}]}
        }
        b.use_extension("OMI_physics_shape")
        b.use_extension("OMI_physics_body")
        col_node["extensions"] = {
            "OMI_physics_body": {"motion": {"type": "static"}, "collider": {"shape": 0}}
        }
    top.append(b.node(col_node))
    if parts.navmesh is not None:
        top.append(b.node({"name": "navmesh-navmesh", "mesh": b.mesh(parts.navmesh)}))
    top.append(
        b.node(
            {
                "name": "spawn_point",
                "translation": [float(x) for x in parts.spawn_eye],
                "rotation": yaw_quaternion(parts.spawn_yaw_deg),
                "extras": {"role": "spawn", **parts.extras["worldgen"]["spawn"]},
            }
        )
    )
    b.gltf["scenes"] = [{"name": "level", "nodes": top, "extras": parts.extras}]
    b.gltf["scene"] = 0
    b.gltf["asset"]["extras"] = parts.extras
    return b.to_bytes()


def export_level_glb(world, options: ExportOptions | None = None) -> bytes:
    cfg = LevelConfig.from_options(options)
    parts = level_parts(world, cfg)
    gen = world.manifest.get("generator", {})
    return level_glb_bytes(parts, f"worldgen {gen.get('version', '')}".strip())


register_exporter(
    Exporter(
        name="level-glb",
        kind="file",
        extension=".glb",
        description="game level: textured proxy mesh, collision (-colonly + OMI physics), "
        "navmesh, spawn point (glTF 2.0 binary, Y-up metres)",
        export=export_level_glb,
    )
)
