"""First-person controller with capsule collision, in the world frame. No GL.

Frames (ARCHITECTURE.md "Conventions"): the world is right-handed, +Y up, the source camera at
the origin with yaw 0 facing -Z. The walker is a vertical capsule whose bottom touches its
*feet* point; its eye is ``eye_height`` above the feet. ``yaw > 0`` turns right (toward +X),
``pitch > 0`` looks up.

Physics runs in fixed substeps (120 Hz by default) fed from a time accumulator, so the state
after a given span of time does not depend on the frame rate. Collision is a capsule against
the triangles of ``collision.glb`` (world frame): exact closest points between the capsule's
axis and each nearby triangle (found through a uniform grid over the ground plane), then the
capsule is pushed out along the contact normal. Walkable contacts (normal within
``max_slope_deg`` of up) push straight up, so the walker does not slide down slopes; the
capsule's rounded bottom climbs ledges lower than about ``radius * (1 - cos(max_slope))``.
The world's ``bounds`` box is a last fence that no motion crosses.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldgen.camera import Pose, rotation_ypr

#: OpenCV axes of a level camera with yaw 0 (x right, y down, z forward) in the world frame
WORLD_FROM_LEVEL_CV = np.diag([1.0, -1.0, -1.0])
UP = np.array([0.0, 1.0, 0.0])
_EPS = 1e-12


# ----------------------------------------------------------------------------- geometry


def _dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("...i,...i->...", a, b)


def _clip01(x: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(x, 0.0), 1.0)  # (np.clip's dispatch costs more than this)


def closest_point_on_triangle(
    p: np.ndarray,  # [N, 3]
    a: np.ndarray,  # [N, 3]
    b: np.ndarray,  # [N, 3]
    c: np.ndarray,  # [N, 3]
) -> np.ndarray:  # [N, 3]
    """Closest point of each triangle (a, b, c) to each point p (Ericson, RTCD 5.1.5)."""
    ab, ac = b - a, c - a
    ap, bp, cp = p - a, p - b, p - c
    d1, d2 = _dot(ab, ap), _dot(ac, ap)
    d3, d4 = _dot(ab, bp), _dot(ac, bp)
    d5, d6 = _dot(ab, cp), _dot(ac, cp)
    va = d3 * d6 - d5 * d4
    vb = d5 * d2 - d1 * d6
    vc = d1 * d4 - d3 * d2
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ab = d1 / (d1 - d3)
        t_ac = d2 / (d2 - d6)
        t_bc = (d4 - d3) / ((d4 - d3) + (d5 - d6))
        inv = 1.0 / (va + vb + vc)
    conds = [
        (d1 <= 0) & (d2 <= 0),  # vertex a
        (d3 >= 0) & (d4 <= d3),  # vertex b
        (vc <= 0) & (d1 >= 0) & (d3 <= 0),  # edge ab
        (d6 >= 0) & (d5 <= d6),  # vertex c
        (vb <= 0) & (d2 >= 0) & (d6 <= 0),  # edge ac
        (va <= 0) & (d4 - d3 >= 0) & (d5 - d6 >= 0),  # edge bc
    ]
    # the point is a + u * ab + v * ac; the first region that holds decides (u, v)
    u, v = vb * inv, vc * inv
    for cond, uk, vk in zip(
        conds[::-1],
        [1.0 - t_bc, 0.0, 0.0, t_ab, 1.0, 0.0],
        [t_bc, t_ac, 1.0, 0.0, 0.0, 0.0],
        strict=True,
    ):
        u, v = np.where(cond, uk, u), np.where(cond, vk, v)
    return a + u[:, None] * ab + v[:, None] * ac


def closest_points_segments(
    p1: np.ndarray,  # [N, 3]
    q1: np.ndarray,  # [N, 3]
    p2: np.ndarray,  # [N, 3]
    q2: np.ndarray,  # [N, 3]
) -> tuple[np.ndarray, np.ndarray]:  # [N, 3], [N, 3]
    """Closest points on segments p1q1 and p2q2 (Ericson, RTCD 5.1.9), degenerate ones too."""
    d1, d2, r = q1 - p1, q2 - p2, p1 - p2
    a, e = _dot(d1, d1), _dot(d2, d2)
    f, c, b = _dot(d2, r), _dot(d1, r), _dot(d1, d2)
    a_ok, e_ok = a > _EPS, e > _EPS
    a_safe, e_safe = np.where(a_ok, a, 1.0), np.where(e_ok, e, 1.0)
    denom = a * e - b * b
    parallel = denom <= 1e-12 * a * e
    s = _clip01(np.where(parallel, 0.0, (b * f - c * e) / np.where(parallel, 1.0, denom)))
    t = (b * s + f) / e_safe
    s = np.where(t < 0, _clip01(-c / a_safe), s)
    s = np.where(t > 1, _clip01((b - c) / a_safe), s)
    t = _clip01(t)
    if not (a_ok.all() and e_ok.all()):  # degenerate segments (points)
        s, t = np.where(a_ok, s, 0.0), np.where(a_ok, t, _clip01(f / e_safe))
        s = np.where(e_ok, s, np.where(a_ok, _clip01(-c / a_safe), 0.0))
        t = np.where(e_ok, t, 0.0)
    return p1 + s[:, None] * d1, p2 + t[:, None] * d2


def closest_points_segment_triangle(
    p: np.ndarray,  # [3]
    q: np.ndarray,  # [3]
    tri: np.ndarray,  # [N, 3, 3]
    normals: np.ndarray | None = None,  # [N, 3] face normals (any length), if known
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Closest points between the segment pq and each triangle.

    Returns (on_segment [N, 3], on_triangle [N, 3], distance [N]); distance 0 where the
    segment pierces the triangle. The minimum is attained at a segment end point, on a pair of
    edges, or where the segment crosses the triangle, so those candidates are compared.
    """
    p = np.asarray(p, np.float64)
    q = np.asarray(q, np.float64)
    n = len(tri)
    a, b, c = tri[:, 0], tri[:, 1], tri[:, 2]
    # the end points against the face: [2N]
    ends = np.empty((2 * n, 3))
    ends[:n], ends[n:] = p, q
    abc2 = np.concatenate([tri, tri])
    on_tri_ends = closest_point_on_triangle(ends, abc2[:, 0], abc2[:, 1], abc2[:, 2])
    # the segment against each edge: [3N]
    e0 = tri.transpose(1, 0, 2).reshape(3 * n, 3)  # a..., b..., c...
    e1 = tri[:, [1, 2, 0]].transpose(1, 0, 2).reshape(3 * n, 3)  # b..., c..., a...
    s_edges, t_edges = closest_points_segments(p, q, e0, e1)
    seg_pts = np.concatenate([ends, s_edges]).reshape(5, n, 3)
    tri_pts = np.concatenate([on_tri_ends, t_edges]).reshape(5, n, 3)
    diff = seg_pts - tri_pts
    d2 = _dot(diff, diff)  # [5, N]
    k = np.argmin(d2, axis=0)
    idx = np.arange(n)
    on_seg, on_tri, dist = seg_pts[k, idx], tri_pts[k, idx], np.sqrt(d2[k, idx])
    # the segment piercing the face (rare: only a capsule sunk deeper than its radius)
    nrm = np.cross(b - a, c - a) if normals is None else normals
    sp, sq = nrm @ p - _dot(nrm, a), nrm @ q - _dot(nrm, a)
    cand = np.nonzero((sp * sq <= 0) & (sp != sq))[0]
    if len(cand):
        x = p + (sp[cand] / (sp[cand] - sq[cand]))[:, None] * (q - p)
        tc, nc = tri[cand], nrm[cand]
        edges = tc[:, [1, 2, 0]] - tc  # [K, 3, 3]
        inward = np.cross(nc[:, None, :], edges)
        inside = (_dot(x[:, None, :] - tc, inward) >= 0).all(axis=1)
        hit = cand[inside]
        on_seg[hit] = x[inside]
        on_tri[hit] = x[inside]
        dist[hit] = 0.0
    return on_seg, on_tri, dist


# ----------------------------------------------------------------------------- collider


class Collider:
    """Triangles in the world frame with a uniform grid over the ground plane (x, z).

    tris: [N, 3, 3] float64 (degenerate triangles are dropped); bounds: [2, 3] box no motion
    leaves (default: the triangles' bounding box, open upward). The capsule keeps inside it;
    where the box is lower than the capsule, only its floor holds.
    """

    def __init__(self, tris: np.ndarray, bounds: np.ndarray | None = None, cell: float = 0.0):
        tris = np.asarray(tris, dtype=np.float64).reshape(-1, 3, 3)
        if len(tris) == 0:
            raise ValueError("the collision mesh has no triangles")
        if not np.isfinite(tris).all():
            raise ValueError("the collision mesh has non-finite vertices")
        area2 = np.linalg.norm(np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0]), axis=1)
        tris = tris[area2 > 1e-10]
        self.tris = tris
        nrm = np.cross(tris[:, 1] - tris[:, 0], tris[:, 2] - tris[:, 0])
        self.normals = nrm / np.linalg.norm(nrm, axis=1, keepdims=True)  # [N, 3]
        self.lo = tris.min(axis=1)  # [N, 3]
        self.hi = tris.max(axis=1)
        if bounds is None or not np.all(np.asarray(bounds)[1] > np.asarray(bounds)[0]):
            # the triangles' box, open upward (no ceiling unless the mesh has one)
            bounds = np.stack([self.lo.min(0), self.hi.max(0)])
            bounds[1, 1] = np.inf
        self.bounds = np.asarray(bounds, dtype=np.float64).reshape(2, 3)
        self._build_grid(cell)

    # grid over (x, z): CSR lists of triangle ids per cell
    def _build_grid(self, cell: float) -> None:
        lo2 = np.minimum(self.lo.min(0), self.bounds[0])[[0, 2]]
        hi2 = np.maximum(self.hi.max(0), self.bounds[1])[[0, 2]]  # (x, z) bounds are finite
        extent = np.maximum(hi2 - lo2, 1e-6)
        if cell <= 0:
            cell = max(float(extent.max()) / 128.0, 0.5)
        self.cell = cell
        self.origin = lo2
        self.dims = np.maximum(np.ceil(extent / cell).astype(np.int64), 1)
        i0 = self._cell_of(self.lo[:, [0, 2]])
        i1 = self._cell_of(self.hi[:, [0, 2]])
        span = i1 - i0 + 1  # [N, 2]
        counts = span[:, 0] * span[:, 1]
        tri_id = np.repeat(np.arange(len(self.tris)), counts)
        k = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
        ix = i0[tri_id, 0] + k // span[tri_id, 1]
        iz = i0[tri_id, 1] + k % span[tri_id, 1]
        cells = ix * self.dims[1] + iz
        order = np.argsort(cells, kind="stable")
        self._ids = tri_id[order]
        self._start = np.searchsorted(cells[order], np.arange(self.dims[0] * self.dims[1] + 1))

    def _cell_of(self, xz: np.ndarray) -> np.ndarray:
        ij = np.floor((xz - self.origin) / self.cell).astype(np.int64)
        return np.clip(ij, 0, self.dims - 1)

    def query(self, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Ids of the triangles whose bounding boxes overlap the box [lo, hi] ([3] each)."""
        (ax, az), (bx, bz) = self._cell_of(np.array([lo[[0, 2]], hi[[0, 2]]]))
        parts = [
            self._ids[self._start[ix * self.dims[1] + az] : self._start[ix * self.dims[1] + bz + 1]]
            for ix in range(ax, bx + 1)
        ]
        ids = np.unique(np.concatenate(parts)) if parts else np.zeros(0, np.int64)
        keep = np.all((self.lo[ids] <= hi) & (self.hi[ids] >= lo), axis=1)
        return ids[keep]

    @classmethod
    def from_glb(cls, path: str | Path, bounds: np.ndarray | None = None) -> Collider:
        """All nodes of a collision.glb (ground, walls, boundary, ceiling), world frame."""
        from worldgen.safeio import load_collision_scene

        scene = load_collision_scene(path)  # a malformed file: BundleError
        tris = []
        for node in scene.graph.nodes_geometry:
            transform, geom = scene.graph[node]
            mesh = scene.geometry[geom]
            if not hasattr(mesh, "faces") or len(mesh.faces) == 0:
                continue
            v = np.asarray(mesh.vertices, np.float64) @ transform[:3, :3].T + transform[:3, 3]
            tris.append(v[np.asarray(mesh.faces)])
        if not tris:
            raise ValueError(f"{path}: the collision mesh has no triangles")
        return cls(np.concatenate(tris), bounds)


# ----------------------------------------------------------------------------- controller


@dataclass(frozen=True)
class ControllerConfig:
    """Movement and collision settings of the first-person walker (metres, seconds)."""

    walk_speed: float = 1.4
    """walking speed, m/s"""
    run_speed: float = 3.0
    """speed with Shift held, m/s"""
    jump_height: float = 1.0
    """height of a jump's apex above the take-off point, m"""
    gravity: float = 9.81
    """m/s^2, along world -Y"""
    radius: float = 0.3
    """capsule radius, m"""
    head_room: float = 0.1
    """capsule top above the eye, m"""
    max_slope_deg: float = 50.0
    """steeper contacts are walls: they stop the walker but do not carry it"""
    step_hz: float = 120.0
    """physics substeps per second"""
    max_frame_dt: float = 0.25
    """longer frames (a stall) simulate only this much time"""
    max_fall_speed: float = 50.0
    """terminal velocity, m/s"""

    def __post_init__(self) -> None:
        for name in ("walk_speed", "run_speed", "gravity", "radius", "step_hz", "max_frame_dt"):
            v = getattr(self, name)
            if not (math.isfinite(v) and v > 0):
                raise ValueError(f"`{name}` must be a positive number, got {v}")
        if not (math.isfinite(self.jump_height) and self.jump_height >= 0):
            raise ValueError(f"`jump_height` must be >= 0, got {self.jump_height}")
        if not (0 < self.max_slope_deg < 90):
            raise ValueError(f"`max_slope_deg` must be in (0, 90), got {self.max_slope_deg}")


@dataclass(frozen=True)
class Spawn:
    """Where the walker starts and returns to on reset (world frame)."""

    position: np.ndarray  # [3] feet
    yaw: float = 0.0  # radians, > 0 turns right
    pitch: float = 0.0  # radians, > 0 looks up
    eye_height: float = 1.6  # metres above the feet

    @classmethod
    def from_world(cls, world) -> Spawn:
        """The manifest's spawn, looking up or down as much as the source camera did (so the
        first view is the photo's, less its roll)."""
        s = world.manifest["spawn"]
        fwd = world.world_from_camera[:3, :3] @ np.array([0.0, 0.0, 1.0])
        pitch = math.asin(float(np.clip(fwd[1] / np.linalg.norm(fwd), -1.0, 1.0)))
        return cls(
            np.asarray(s["position"], np.float64),
            math.radians(float(s["yaw_deg"])),
            pitch,
            float(s.get("eye_height", 1.6)),
        )


@dataclass(frozen=True)
class ControlInput:
    """What the player asks for during one frame (held keys, not events)."""

    forward: float = 0.0  # +1 forward (W), -1 back (S)
    right: float = 0.0  # +1 right (D), -1 left (A)
    up: float = 0.0  # fly mode: +1 up (E / Space), -1 down (Q / Ctrl)
    run: bool = False  # Shift
    jump: bool = False  # Space, walk mode: jumps whenever on the ground


@dataclass
class _State:
    position: np.ndarray  # [3] feet
    velocity: np.ndarray = field(default_factory=lambda: np.zeros(3))
    on_ground: bool = False


class Controller:
    """A walker (or flyer) in a collision world. ``update`` advances it by a frame's time."""

    def __init__(
        self,
        collider: Collider,
        spawn: Spawn,
        config: ControllerConfig | None = None,
        *,
        fly: bool = False,
    ):
        self.collider = collider
        self.spawn = spawn
        self.config = config or ControllerConfig()
        if not (math.isfinite(spawn.eye_height) and spawn.eye_height > 0):
            raise ValueError(f"eye height must be positive, got {spawn.eye_height}")
        self.eye_height = float(spawn.eye_height)
        self.height = max(self.eye_height + self.config.head_room, 2.0 * self.config.radius)
        self.fly = bool(fly)
        self._cos_slope = math.cos(math.radians(self.config.max_slope_deg))
        self.reset()

    @classmethod
    def from_world(cls, world, config: ControllerConfig | None = None, *, fly=False) -> Controller:
        """Spawn, eye height and bounds from the manifest; triangles from collision.glb."""
        from worldgen.errors import BundleError

        b = world.manifest.get("bounds", {})
        bounds = np.array([b["min"], b["max"]], np.float64) if "min" in b else None
        path = world.path / "collision.glb"
        try:
            collider = Collider.from_glb(path, bounds)
        except Exception as e:  # trimesh raises many kinds on a damaged file
            msg = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise BundleError(f"{path}: unusable collision mesh ({msg})") from None
        return cls(collider, Spawn.from_world(world), config, fly=fly)

    # -- state ------------------------------------------------------------------------------

    def reset(self) -> None:
        """Back to the spawn point, standing still, looking the spawn's way."""
        self.state = _State(np.array(self.spawn.position, np.float64))
        self._prev = self.state.position.copy()
        self.yaw = float(self.spawn.yaw)
        self.pitch = float(self.spawn.pitch)
        self._acc = 0.0
        self._clamp_to_bounds()

    def toggle_fly(self) -> bool:
        self.fly = not self.fly
        self.state.velocity[:] = 0.0
        return self.fly

    @property
    def position(self) -> np.ndarray:  # [3] feet, after the last substep
        return self.state.position.copy()

    @property
    def on_ground(self) -> bool:
        return self.state.on_ground

    def look(self, d_yaw_deg: float, d_pitch_deg: float) -> None:
        """Turn by the given angles; pitch stays within +-89 degrees."""
        self.yaw = (self.yaw + math.radians(d_yaw_deg) + math.pi) % (2 * math.pi) - math.pi
        lim = math.radians(89.0)
        self.pitch = min(max(self.pitch + math.radians(d_pitch_deg), -lim), lim)

    # -- orientation ------------------------------------------------------------------------

    @property
    def rotation(self) -> np.ndarray:  # [3, 3]
        """The eye's OpenCV axes (columns: right, down, forward) in the world frame."""
        return WORLD_FROM_LEVEL_CV @ rotation_ypr(self.yaw, self.pitch, 0.0)

    def eye_position(self, interpolate: bool = False) -> np.ndarray:  # [3] world
        """The eye after the last substep; with ``interpolate``, blended between the last two
        substeps by the frame time not simulated yet (smooth motion on screen when the frame
        rate is not a multiple of the physics rate, at the cost of one substep of latency)."""
        p = self.state.position
        if interpolate:
            alpha = self._acc * self.config.step_hz
            p = self._prev + alpha * (p - self._prev)
        return p + self.eye_height * UP

    def camera_pose_in_source(self, world_from_camera: np.ndarray, interpolate=False) -> Pose:
        """The eye's pose in the source camera's OpenCV axes (the splats' frame).

        world_from_camera: [4, 4] rigid source-camera -> world transform.
        """
        M = np.asarray(world_from_camera, np.float64)
        Rt = M[:3, :3].T
        T = Rt @ (self.eye_position(interpolate) - M[:3, 3])
        return Pose(Rt @ self.rotation, T)

    # -- simulation -------------------------------------------------------------------------

    def update(self, dt: float, inp: ControlInput | None = None) -> int:
        """Advance by ``dt`` seconds of held input; returns the number of substeps run."""
        inp = inp if inp is not None else ControlInput()
        if not (dt >= 0 and math.isfinite(dt)):
            raise ValueError(f"dt must be a non-negative number, got {dt}")
        h = 1.0 / self.config.step_hz
        self._acc += min(dt, self.config.max_frame_dt)
        n = 0
        while self._acc >= h - 1e-9:
            self._acc = max(self._acc - h, 0.0)
            self._prev = self.state.position.copy()
            self._substep(inp, h)
            n += 1
        return n

    def _substep(self, inp: ControlInput, h: float) -> None:
        cfg, st = self.config, self.state
        speed = cfg.run_speed if inp.run else cfg.walk_speed
        if self.fly:
            R = self.rotation
            wish = inp.forward * R[:, 2] + inp.right * R[:, 0] + inp.up * UP
            norm = np.linalg.norm(wish)
            st.velocity = wish * (speed / norm if norm > 1 else speed)
            disp = st.velocity * h
        else:
            fwd = np.array([math.sin(self.yaw), 0.0, -math.cos(self.yaw)])
            right = np.array([math.cos(self.yaw), 0.0, math.sin(self.yaw)])
            wish = inp.forward * fwd + inp.right * right
            norm = np.linalg.norm(wish)
            wish = wish * (speed / norm if norm > 1 else speed)
            vy = st.velocity[1]
            if inp.jump and st.on_ground:
                vy = math.sqrt(2.0 * cfg.gravity * cfg.jump_height)
            # exact for constant gravity: a jump's apex is the configured height
            disp = np.array([wish[0] * h, vy * h - 0.5 * cfg.gravity * h * h, wish[2] * h])
            vy = max(vy - cfg.gravity * h, -cfg.max_fall_speed)
            st.velocity = np.array([wish[0], vy, wish[2]])
        self._move(disp)

    def _move(self, disp: np.ndarray) -> None:
        """Move by ``disp`` in pieces shorter than half the radius (no tunnelling)."""
        st = self.state
        r = self.config.radius
        length = float(np.linalg.norm(disp))
        pieces = max(1, math.ceil(length / (0.5 * r)))
        st.on_ground = False
        lo_box = np.array([-r, 0.0, -r])
        hi_box = np.array([r, self.height, r])
        start = st.position
        end = start + disp
        ids = self.collider.query(
            np.minimum(start, end) + lo_box - 0.05, np.maximum(start, end) + hi_box + 0.05
        )
        tris = self.collider.tris[ids]
        nrms = self.collider.normals[ids]
        for _ in range(pieces):
            before = st.position.copy()
            st.position = st.position + disp / pieces
            if len(tris):
                self._resolve(tris, nrms, before)
            self._clamp_to_bounds()

    def _resolve(self, tris: np.ndarray, nrms: np.ndarray, before: np.ndarray) -> None:
        """Push the capsule out of the triangles (deepest contact first), clip the velocity.

        tris [K, 3, 3] and their unit normals nrms [K, 3] are the candidates near the move;
        ``before`` [3] is the feet before it (which side of a pierced face the capsule was on).
        """
        st, r = self.state, self.config.radius
        axis = np.array([0.0, self.height - 2 * r, 0.0])
        off = _dot(nrms, tris[:, 0])
        for _ in range(3):
            a = st.position + np.array([0.0, r, 0.0])
            # planes farther than the radius from the whole axis cannot touch the capsule
            sa, sb = nrms @ a - off, nrms @ (a + axis) - off
            near = np.nonzero((np.minimum(sa, sb) < r) & (np.maximum(sa, sb) > -r))[0]
            if len(near) == 0:
                return
            t_near, n_near = tris[near], nrms[near]
            on_seg, on_tri, dist = closest_points_segment_triangle(a, a + axis, t_near, n_near)
            hit = np.nonzero(dist < r - 1e-7)[0]
            if len(hit) == 0:
                return
            # contact normals from the triangle to the axis; where the axis touches or pierces
            # the face, the face normal turned toward where the capsule came from
            d = dist[hit]
            n = (on_seg[hit] - on_tri[hit]) / np.maximum(d, 1e-300)[:, None]
            pen = r - d
            touch = np.nonzero(d <= 1e-6)[0]
            if len(touch):
                fn = n_near[hit[touch]]
                v0 = t_near[hit[touch], 0]
                mid = before + np.array([0.0, r, 0.0]) + 0.5 * axis
                side = np.where(_dot(mid - v0, fn) < 0, -1.0, 1.0)
                fn = fn * side[:, None]
                n[touch] = fn
                # deep enough to clear the whole axis from the face's plane
                lowest = np.minimum(_dot(a - v0, fn), _dot(a + axis - v0, fn))
                pen[touch] = r - np.minimum(lowest, 0.0)
            for _k in range(len(hit)):  # Gauss-Seidel over the contacts' planes
                j = int(np.argmax(pen))
                if pen[j] <= 1e-7:
                    break
                nj = n[j]
                walkable = nj[1] >= self._cos_slope
                if walkable and not self.fly:  # stand on it: straight up, no sliding
                    push = np.array([0.0, pen[j] / nj[1], 0.0])
                else:
                    push = pen[j] * nj
                st.on_ground |= bool(walkable)
                st.position = st.position + push
                pen = pen - n @ push
                vn = st.velocity @ nj
                if vn < 0:
                    st.velocity = st.velocity - vn * nj
            if pen.max() <= 1e-7:
                return  # every contact resolved on its plane (curved ones: next substep)

    def _clamp_to_bounds(self) -> None:
        st, r = self.state, self.config.radius
        lo, hi = self.collider.bounds
        lo = lo + np.array([r, 0.0, r])
        hi = hi - np.array([r, self.height, r])
        if hi[1] < lo[1]:  # a box lower than the capsule: keep its floor only
            hi[1] = np.inf
        hi = np.maximum(hi, lo)
        p = np.clip(st.position, lo, hi)
        moved = p != st.position
        if moved.any():
            st.velocity[moved] = 0.0
            if p[1] > st.position[1]:
                st.on_ground = True
            st.position = p
