"""Procedural ground-truth scenes: a small vectorised numpy ray caster with exact depth and colour.

Every scene is a handful of primitives — infinite planes (floor, ceiling, walls), axis-aligned
boxes, spheres and a far sky dome — with procedural textures defined on the 3-D position (and
normal) of the surface point only, so a texture is glued to its surface: the same 3-D point has
the same colour from every camera. Shading is a fixed directional light (also a function of the
surface point and normal only), so the scenes are Lambertian and view-independent.

Frame and cameras follow ARCHITECTURE.md "Conventions": scenes live in the *source camera's*
OpenCV axes (x right, y down, z forward, metres); the source camera stands 1.6 m above the floor,
so the floor is the plane ``y = +1.6``. A camera is an ``Intrinsics`` (centre of pixel (i, j) at
(i, j)) and a ``Pose`` whose columns of ``R`` are the camera axes in source coordinates and whose
``T`` is its centre: a point ``X`` is at ``R.T @ (X - T)`` in that camera. The depth returned is
z-depth along that camera's optical axis.

    intr = Intrinsics.from_hfov(60, 384, 288)
    rgb, depth = render_scene("room_with_boxes", intr, Pose.from_cli(0.5, 0, 0))

Scenes (``SCENES``): ``room_with_boxes``, ``outdoor_boxes``, ``corridor``, ``object_at_edge`` (a
crate cut by the frame's left side in front of open ground) and ``room_walls`` (a room whose walls,
floor and ceiling leave the frame) -- the evaluation set, ``EVAL_SCENES`` -- and ``textured_wall``
(one fronto-parallel wall at 3 m, for tests).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from worldgen.camera import Intrinsics, Pose

CAMERA_HEIGHT = 1.6
#: radius of the sky dome (centred on the source camera) and so the depth of the sky
SKY_DISTANCE = 200.0
#: direction *towards* the light, source-camera axes (y down: negative y is up)
LIGHT_DIR = np.array([0.35, -1.0, -0.45]) / np.linalg.norm([0.35, -1.0, -0.45])
AMBIENT = 0.55

# ----------------------------------------------------------------------------- textures

Texture = Callable[[np.ndarray, np.ndarray], np.ndarray]  # (P [N,3], n [N,3]) -> rgb [N,3]


def _noise(P: np.ndarray, scale: float, seed: int, octaves: int = 8) -> np.ndarray:
    """Smooth 3-D noise in [-1, 1]: a sum of sinusoids with random directions (vectorised)."""
    rng = np.random.default_rng(seed)
    dirs = rng.normal(size=(octaves, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    freq = rng.uniform(0.7, 1.6, size=octaves) * (2 * np.pi / scale)
    phase = rng.uniform(0, 2 * np.pi, size=octaves)
    return np.sin(P @ (dirs * freq[:, None]).T + phase).mean(axis=1) * np.sqrt(2.0)


def _checker(P: np.ndarray, scale: float) -> np.ndarray:
    """0/1 solid checker of cell ``scale``; offset so that no axis-aligned face of the scenes
    lies on a cell boundary."""
    q = np.floor(P / scale + np.array([0.137, 0.291, 0.413]))
    return (q.sum(axis=1) % 2).astype(np.float64)


def _stripes(P: np.ndarray, axis: int, period: float, sharp: float = 6.0) -> np.ndarray:
    """Smooth-edged 0..1 stripes across ``axis``."""
    s = np.sin(2 * np.pi * P[:, axis] / period + 0.3)
    return 0.5 + 0.5 * np.tanh(sharp * s)


def _fade(P: np.ndarray, r0: float | None) -> np.ndarray:
    """Texture contrast fading with horizontal distance from the source camera (limits aliasing
    of far ground; a function of the point only, so still glued to the surface)."""
    if r0 is None:
        return np.ones(len(P))
    return np.exp(-np.hypot(P[:, 0], P[:, 2]) / r0)


@dataclass(frozen=True)
class Material:
    """Base colour modulated by a checker, stripes and noise, then lit (all functions of P, n)."""

    base: tuple[float, float, float]
    alt: tuple[float, float, float] | None = None  # second colour of the checker / stripes
    checker: float | None = None  # checker cell size (m)
    stripes: tuple[int, float] | None = None  # (axis, period m)
    noise: tuple[float, float] = (0.5, 0.08)  # (scale m, amplitude)
    fine_noise: tuple[float, float] = (0.09, 0.05)
    fade: float | None = None  # contrast fade distance (m)
    lit: bool = True
    seed: int = 0

    def __call__(self, P: np.ndarray, n: np.ndarray) -> np.ndarray:
        base = np.broadcast_to(np.asarray(self.base, np.float64), P.shape)
        alt = np.asarray(self.alt if self.alt is not None else self.base, np.float64)
        m = np.zeros(len(P))
        if self.checker is not None:
            m = _checker(P, self.checker)
        if self.stripes is not None:
            m = np.maximum(m, _stripes(P, *self.stripes))
        fade = _fade(P, self.fade)
        c = base + ((alt - base) * (m * fade)[:, None])
        g = self.noise[1] * _noise(P, self.noise[0], self.seed)
        g = g + self.fine_noise[1] * _noise(P, self.fine_noise[0], self.seed + 101)
        c = c * (1.0 + (g * fade)[:, None])
        if self.lit:
            c = c * (AMBIENT + (1 - AMBIENT) * np.clip(n @ LIGHT_DIR, 0.0, 1.0))[:, None]
        return np.clip(c, 0.0, 1.0)


def sky_texture(P: np.ndarray, n: np.ndarray) -> np.ndarray:
    """Vertical gradient with soft clouds, on the dome point (elevation above the horizon)."""
    r = np.linalg.norm(P, axis=1)
    e = np.clip(-P[:, 1] / np.maximum(r, 1e-9), 0.0, 1.0)  # sin(elevation), y is down
    horizon = np.array([0.86, 0.89, 0.93])
    zenith = np.array([0.30, 0.50, 0.84])
    c = horizon + (zenith - horizon) * (e**0.6)[:, None]
    cloud = np.clip(_noise(P, 90.0, 7, octaves=10) * 1.6 - 0.35, 0.0, 1.0) * np.sqrt(e)
    return np.clip(c + (np.array([0.97, 0.97, 0.98]) - c) * cloud[:, None], 0.0, 1.0)


# ----------------------------------------------------------------------------- primitives


@dataclass(frozen=True)
class Plane:
    """The infinite plane ``P[axis] = value``; seen from either side."""

    axis: int
    value: float
    material: Texture
    name: str = "plane"
    max_radius: float | None = None  # only hits within this distance of the origin count

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (self.value - o[:, self.axis]) / d[:, self.axis]
        t = np.where(np.isfinite(t) & (t > 1e-9), t, np.inf)
        if self.max_radius is not None:
            P = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
            t = np.where(np.linalg.norm(P, axis=1) <= self.max_radius, t, np.inf)
        n = np.zeros_like(d)
        n[:, self.axis] = -np.sign(d[:, self.axis])  # facing the ray
        return t, n


@dataclass(frozen=True)
class Box:
    """Axis-aligned box ``lo <= P <= hi`` (solid; rays starting inside are not supported)."""

    lo: tuple[float, float, float]
    hi: tuple[float, float, float]
    material: Texture
    name: str = "box"

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        lo, hi = np.asarray(self.lo), np.asarray(self.hi)
        with np.errstate(divide="ignore", invalid="ignore"):
            inv = 1.0 / d
            t1, t2 = (lo - o) * inv, (hi - o) * inv
        t1 = np.where(np.isnan(t1), -np.inf, t1)  # ray parallel to a slab and inside it
        t2 = np.where(np.isnan(t2), np.inf, t2)
        tnear, tfar = np.minimum(t1, t2), np.maximum(t1, t2)
        axis = np.argmax(tnear, axis=1)
        t0 = tnear.max(axis=1)
        t = np.where((t0 <= tfar.min(axis=1)) & (t0 > 1e-9), t0, np.inf)
        n = np.zeros_like(d)
        rows = np.arange(len(d))
        n[rows, axis] = -np.sign(d[rows, axis])
        return t, n


@dataclass(frozen=True)
class Sphere:
    centre: tuple[float, float, float]
    radius: float
    material: Texture
    name: str = "sphere"
    inside: bool = False  # seen from inside (the sky dome): take the far root

    def intersect(self, o: np.ndarray, d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        oc = o - np.asarray(self.centre)
        a = (d * d).sum(axis=1)
        b = (oc * d).sum(axis=1)
        c = (oc * oc).sum(axis=1) - self.radius**2
        disc = b * b - a * c
        sq = np.sqrt(np.maximum(disc, 0.0))
        t = (-b + sq) / a if self.inside else (-b - sq) / a
        t = np.where((disc >= 0) & (t > 1e-9), t, np.inf)
        P = o + np.where(np.isfinite(t), t, 0.0)[:, None] * d
        n = (P - np.asarray(self.centre)) / self.radius
        return t, (-n if self.inside else n)


Primitive = Plane | Box | Sphere


@dataclass(frozen=True)
class Scene:
    name: str
    primitives: tuple[Primitive, ...]
    description: str = ""


@dataclass
class Hits:
    """Result of casting N rays (source-camera axes)."""

    t: np.ndarray  # [N] ray parameter (inf: no hit)
    points: np.ndarray  # [N, 3]
    normals: np.ndarray  # [N, 3], facing the ray
    ids: np.ndarray  # [N] index into scene.primitives (-1: no hit)
    rgb: np.ndarray  # [N, 3] in [0, 1] (black where no hit)


def cast_rays(scene: Scene | str, origins: np.ndarray, dirs: np.ndarray) -> Hits:
    """Nearest hit of rays ``origins + t * dirs`` (t > 0) in source-camera axes.

    origins: [N, 3] or [3]; dirs: [N, 3] (need not be unit length; ``t`` is in their units).
    """
    scene = get_scene(scene) if isinstance(scene, str) else scene
    d = np.asarray(dirs, np.float64).reshape(-1, 3)
    o = np.broadcast_to(np.asarray(origins, np.float64), d.shape)
    N = len(d)
    best_t = np.full(N, np.inf)
    ids = np.full(N, -1)
    normals = np.zeros((N, 3))
    for k, prim in enumerate(scene.primitives):
        t, n = prim.intersect(o, d)
        closer = t < best_t
        best_t = np.where(closer, t, best_t)
        ids = np.where(closer, k, ids)
        normals[closer] = n[closer]
    hit = np.isfinite(best_t)
    P = o + np.where(hit, best_t, 0.0)[:, None] * d
    rgb = np.zeros((N, 3))
    for k, prim in enumerate(scene.primitives):
        m = ids == k
        if m.any():
            rgb[m] = prim.material(P[m], normals[m])
    return Hits(best_t, P, normals, ids, rgb)


def pixel_rays(intrinsics: Intrinsics, pose: Pose | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Origin [3] and directions [H*W, 3] (source axes) of the pixel centres; each direction has
    camera-z = 1, so a hit's ``t`` is its z-depth in that camera."""
    pose = pose or Pose.identity()
    i = intrinsics
    uu, vv = np.meshgrid(
        np.arange(i.width, dtype=np.float64), np.arange(i.height, dtype=np.float64)
    )
    d_cam = np.stack([(uu - i.cx) / i.fx, (vv - i.cy) / i.fy, np.ones_like(uu)], -1).reshape(-1, 3)
    return np.asarray(pose.T, np.float64), d_cam @ np.asarray(pose.R, np.float64).T


def render_scene_hits(name: str, intrinsics: Intrinsics, pose: Pose | None = None) -> Hits:
    """``cast_rays`` for every pixel centre of a camera (row-major, H*W rays)."""
    o, d = pixel_rays(intrinsics, pose)
    return cast_rays(get_scene(name), o, d)


def render_scene(
    name: str, intrinsics: Intrinsics, pose: Pose | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact view of scene ``name``: rgb [H, W, 3] float32 in [0, 1] and z-depth [H, W] float32
    metres (every pixel hits something: the sky dome is at ``SKY_DISTANCE``)."""
    h = render_scene_hits(name, intrinsics, pose)
    H, W = intrinsics.height, intrinsics.width
    depth = np.where(np.isfinite(h.t), h.t, np.nan).reshape(H, W)
    return h.rgb.reshape(H, W, 3).astype(np.float32), depth.astype(np.float32)


# ----------------------------------------------------------------------------- scenes

FLOOR_Y = CAMERA_HEIGHT


def _room_with_boxes() -> Scene:
    wood = Material((0.55, 0.38, 0.22), (0.45, 0.30, 0.17), stripes=(0, 0.25), seed=1)
    floor = Material((0.62, 0.45, 0.28), (0.50, 0.35, 0.20), checker=0.5, noise=(0.3, 0.1), seed=2)
    wall_l = Material((0.78, 0.74, 0.66), (0.66, 0.62, 0.55), stripes=(2, 0.6), seed=3)
    wall_r = Material((0.70, 0.76, 0.80), (0.58, 0.64, 0.70), stripes=(1, 0.4), seed=4)
    wall_b = Material((0.80, 0.78, 0.70), (0.62, 0.56, 0.48), checker=0.4, seed=5)
    ceil = Material((0.88, 0.88, 0.86), noise=(0.8, 0.04), seed=6)
    red = Material((0.75, 0.18, 0.15), (0.95, 0.80, 0.30), checker=0.2, seed=7)
    blue = Material((0.20, 0.35, 0.70), (0.85, 0.88, 0.92), stripes=(1, 0.15), seed=8)
    ball = Material((0.25, 0.62, 0.30), (0.95, 0.95, 0.90), checker=0.12, seed=9)
    prims = (
        Plane(1, FLOOR_Y, floor, "floor"),
        Plane(1, FLOOR_Y - 2.8, ceil, "ceiling"),
        Plane(0, -2.5, wall_l, "wall_left"),
        Plane(0, 2.5, wall_r, "wall_right"),
        Plane(2, 6.5, wall_b, "wall_back"),
        Plane(2, -1.5, wood, "wall_behind"),
        Box((-1.7, FLOOR_Y - 0.8, 3.0), (-0.9, FLOOR_Y, 3.8), red, "box_red"),
        Box((0.6, FLOOR_Y - 1.3, 3.4), (1.5, FLOOR_Y, 4.2), blue, "box_blue"),
        Sphere((0.05, FLOOR_Y - 0.45, 2.9), 0.45, ball, "sphere"),
    )
    return Scene(
        "room_with_boxes", prims, "5 x 8 x 2.8 m room: floor, ceiling, walls, 2 boxes, ball"
    )


def _outdoor_boxes() -> Scene:
    grass = Material(
        (0.32, 0.46, 0.22),
        (0.40, 0.52, 0.25),
        checker=1.0,
        noise=(0.7, 0.15),
        fine_noise=(0.12, 0.08),
        fade=25.0,
        seed=11,
    )
    stone = Material((0.60, 0.58, 0.55), (0.45, 0.43, 0.40), checker=0.3, seed=12)
    brick = Material((0.62, 0.28, 0.20), (0.80, 0.75, 0.68), stripes=(1, 0.25), seed=13)
    wood = Material((0.50, 0.34, 0.18), (0.36, 0.24, 0.12), stripes=(0, 0.2), seed=14)
    paint = Material((0.85, 0.75, 0.25), (0.25, 0.30, 0.55), checker=0.5, seed=15)
    ball = Material((0.80, 0.80, 0.85), (0.20, 0.25, 0.60), stripes=(1, 0.3), seed=16)
    sky = sky_texture
    prims = (
        Plane(1, FLOOR_Y, grass, "ground", max_radius=SKY_DISTANCE),
        Sphere((0.0, 0.0, 0.0), SKY_DISTANCE, sky, "sky", inside=True),
        Box((-1.6, FLOOR_Y - 1.0, 2.5), (-0.6, FLOOR_Y, 3.5), wood, "crate"),
        Box((1.5, FLOOR_Y - 4.0, 6.0), (2.1, FLOOR_Y, 6.6), stone, "pillar_near"),
        Box((-4.0, FLOOR_Y - 2.0, 10.0), (-2.0, FLOOR_Y, 12.0), brick, "block"),
        Box((3.5, FLOOR_Y - 5.0, 14.0), (4.5, FLOOR_Y, 15.0), stone, "pillar_far"),
        Sphere((0.8, FLOOR_Y - 0.6, 4.5), 0.6, ball, "ball"),
        Box((5.6, FLOOR_Y - 3.0, 3.4), (6.6, FLOOR_Y, 4.4), paint, "pillar_right"),
        Box((-7.0, FLOOR_Y - 1.5, 3.0), (-5.5, FLOOR_Y, 4.5), brick, "block_left"),
    )
    return Scene("outdoor_boxes", prims, "ground to the horizon, sky dome, boxes/pillars 2-15 m")


def _corridor() -> Scene:
    tiles = Material((0.70, 0.70, 0.68), (0.35, 0.36, 0.40), checker=0.5, seed=21)
    wall_l = Material((0.82, 0.78, 0.62), (0.55, 0.50, 0.40), stripes=(2, 1.0), seed=22)
    wall_r = Material((0.62, 0.72, 0.78), (0.40, 0.48, 0.56), stripes=(2, 0.8), seed=23)
    ceil = Material((0.90, 0.90, 0.90), (0.70, 0.70, 0.72), stripes=(2, 2.0), seed=24)
    end = Material((0.75, 0.30, 0.25), (0.90, 0.85, 0.75), checker=0.3, seed=25)
    crate = Material((0.55, 0.40, 0.22), (0.40, 0.28, 0.15), stripes=(1, 0.12), seed=26)
    cab = Material((0.30, 0.45, 0.35), (0.85, 0.85, 0.80), checker=0.25, seed=27)
    ball = Material((0.85, 0.55, 0.15), (0.20, 0.20, 0.25), stripes=(0, 0.2), seed=28)
    prims = (
        Plane(1, FLOOR_Y, tiles, "floor"),
        Plane(1, FLOOR_Y - 2.6, ceil, "ceiling"),
        Plane(0, -1.2, wall_l, "wall_left"),
        Plane(0, 1.2, wall_r, "wall_right"),
        Plane(2, 25.0, end, "wall_end"),
        Plane(2, -3.0, end, "wall_behind"),
        Box((-1.2, FLOOR_Y - 0.7, 2.5), (-0.6, FLOOR_Y, 3.3), crate, "crate_1"),
        Box((-1.2, FLOOR_Y - 1.0, 7.0), (-0.7, FLOOR_Y, 7.8), crate, "crate_2"),
        Box((-1.2, FLOOR_Y - 0.5, 12.0), (-0.5, FLOOR_Y, 13.0), crate, "crate_3"),
        Box((0.6, FLOOR_Y - 1.8, 4.5), (1.2, FLOOR_Y, 5.5), cab, "cabinet_1"),
        Box((0.7, FLOOR_Y - 1.2, 10.0), (1.2, FLOOR_Y, 11.0), cab, "cabinet_2"),
        Sphere((0.6, FLOOR_Y - 0.3, 8.0), 0.3, ball, "ball"),
    )
    return Scene("corridor", prims, "2.4 m wide hallway, 25 m long, crates and cabinets")


def _object_at_edge() -> Scene:
    """A crate cut by the frame's left side (it ends 6 cm beyond it) in front of open ground."""
    grass = Material(
        (0.34, 0.47, 0.22),
        (0.42, 0.54, 0.26),
        checker=0.8,
        noise=(0.6, 0.15),
        fine_noise=(0.12, 0.08),
        fade=25.0,
        seed=41,
    )
    crate = Material((0.62, 0.36, 0.18), (0.85, 0.70, 0.45), stripes=(1, 0.2), seed=42)
    stone = Material((0.58, 0.57, 0.55), (0.42, 0.41, 0.40), checker=0.35, seed=43)
    brick = Material((0.64, 0.30, 0.22), (0.82, 0.76, 0.70), stripes=(1, 0.3), seed=44)
    # the left frame edge at z = 2.5 is x = -2.5 tan 30° = -1.443
    prims = (
        Plane(1, FLOOR_Y, grass, "ground", max_radius=SKY_DISTANCE),
        Sphere((0.0, 0.0, 0.0), SKY_DISTANCE, sky_texture, "sky", inside=True),
        Box((-1.5, FLOOR_Y - 1.3, 2.5), (-0.4, FLOOR_Y, 3.4), crate, "crate"),
        Box((1.2, FLOOR_Y - 2.5, 9.0), (2.2, FLOOR_Y, 10.0), stone, "pillar"),
        Box((-6.0, FLOOR_Y - 2.0, 16.0), (-3.0, FLOOR_Y, 18.0), brick, "block"),
    )
    return Scene(
        "object_at_edge", prims, "crate cut by the frame's left side, open ground, sky dome"
    )


def _room_walls() -> Scene:
    """A room whose side walls, floor and ceiling all leave the frame (no object at the edges)."""
    floor = Material(
        (0.60, 0.46, 0.30), (0.42, 0.30, 0.18), checker=0.45, noise=(0.3, 0.1), seed=51
    )
    wall_l = Material((0.80, 0.72, 0.55), (0.55, 0.45, 0.35), stripes=(2, 0.5), seed=52)
    wall_r = Material((0.55, 0.70, 0.78), (0.35, 0.45, 0.60), checker=0.35, seed=53)
    wall_b = Material((0.82, 0.80, 0.74), (0.50, 0.55, 0.45), stripes=(0, 0.4), seed=54)
    ceil = Material((0.90, 0.89, 0.86), (0.75, 0.74, 0.72), stripes=(2, 0.9), seed=55)
    table = Material((0.30, 0.45, 0.35), (0.85, 0.85, 0.80), checker=0.2, seed=56)
    prims = (
        Plane(1, FLOOR_Y, floor, "floor"),
        Plane(1, FLOOR_Y - 2.7, ceil, "ceiling"),
        Plane(0, -2.0, wall_l, "wall_left"),
        Plane(0, 2.0, wall_r, "wall_right"),
        Plane(2, 6.0, wall_b, "wall_back"),
        Plane(2, -2.0, wall_b, "wall_behind"),
        Box((-0.5, FLOOR_Y - 0.8, 3.8), (0.6, FLOOR_Y, 4.6), table, "table"),
    )
    return Scene(
        "room_walls", prims, "4 x 8 x 2.7 m room, walls, floor and ceiling leave the frame"
    )


def _textured_wall() -> Scene:
    wall = Material(
        (0.55, 0.50, 0.45),
        (0.75, 0.70, 0.60),
        checker=0.25,
        noise=(0.4, 0.12),
        fine_noise=(0.15, 0.05),
        lit=False,
        seed=31,
    )
    return Scene("textured_wall", (Plane(2, 3.0, wall, "wall"),), "fronto-parallel wall at 3 m")


_BUILDERS: dict[str, Callable[[], Scene]] = {
    "room_with_boxes": _room_with_boxes,
    "outdoor_boxes": _outdoor_boxes,
    "corridor": _corridor,
    "object_at_edge": _object_at_edge,
    "room_walls": _room_walls,
    "textured_wall": _textured_wall,
}
SCENES = tuple(_BUILDERS)
EVAL_SCENES = ("room_with_boxes", "outdoor_boxes", "corridor", "object_at_edge", "room_walls")
_CACHE: dict[str, Scene] = {}


def get_scene(name: str) -> Scene:
    if name not in _BUILDERS:
        raise ValueError(f"unknown scene {name!r}; valid: {', '.join(SCENES)}")
    if name not in _CACHE:
        _CACHE[name] = _BUILDERS[name]()
    return _CACHE[name]


def primitive_index(name: str, primitive: str) -> int:
    """Index of the primitive called ``primitive`` in scene ``name`` (matches ``Hits.ids``)."""
    names = [p.name for p in get_scene(name).primitives]
    return names.index(primitive)
