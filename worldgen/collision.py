"""Collision mesh: the ground plane, large vertical surfaces, and a wall closing the world.

Built from a coarse grid over the depth map, in world coordinates (metres, +Y up), exported as
GLB with one node per part (``ground``, ``walls``, ``boundary``, ``ceiling``).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import trimesh
from scipy import ndimage

from .camera import Intrinsics
from .depth.base import CEILING, SKY, VERTICAL
from .ground import GroundFit


#: the world is closed this far behind the spawn point (nothing is known behind the photo)
@dataclass(frozen=True)
class CollisionConfig:
    grid: int = 40
    """Cells along the long side of the coarse depth grid the collision mesh is built from."""
    min_wall_height: float = 1.0
    """Background vertical surfaces lower than this (metres) are clutter, not walls."""
    min_object_height: float = 1.7
    """Foreground objects lower than this (metres, about a person) get no collider."""
    boundary_height: float = 3.0
    """Height of the wall that closes the world at its edge (metres)."""


BEHIND_MARGIN = 2.0
SIDE_MARGIN = 1.0


@dataclass
class CollisionMesh:
    parts: dict[str, trimesh.Trimesh]
    bounds: np.ndarray  # [2, 3] world-space AABB of the walkable area (inside the boundary)

    def glb_bytes(self) -> bytes:
        scene = trimesh.Scene()
        for name, mesh in self.parts.items():
            if len(mesh.faces):
                scene.add_geometry(mesh, geom_name=name, node_name=name)
        return scene.export(file_type="glb")

    @property
    def n_triangles(self) -> int:
        return int(sum(len(m.faces) for m in self.parts.values()))


def _to_world(P: np.ndarray, world_from_camera: np.ndarray) -> np.ndarray:
    return P @ world_from_camera[:3, :3].T + world_from_camera[:3, 3]


def _grid_quad(x0, x1, z0, z1, y, n, up=True) -> trimesh.Trimesh:
    """A horizontal grid of n x n quads at height y, facing up (or down)."""
    xs = np.linspace(x0, x1, n + 1)
    zs = np.linspace(z0, z1, n + 1)
    X, Z = np.meshgrid(xs, zs)
    V = np.stack([X.ravel(), np.full(X.size, y), Z.ravel()], 1)
    faces = []
    for i in range(n):
        for j in range(n):
            a = i * (n + 1) + j
            b, c, d = a + 1, a + n + 1, a + n + 2
            # counter-clockwise seen from +Y: (a, c, b) with z growing along rows
            faces += [[a, c, b], [b, c, d]] if up else [[a, b, c], [b, d, c]]
    return trimesh.Trimesh(V, np.array(faces), process=False)


def _boundary(x0, x1, z0, z1, y0, height) -> trimesh.Trimesh:
    """Four inward-facing walls around the rectangle [x0, x1] x [z0, z1]."""
    corners = [(x0, z0), (x1, z0), (x1, z1), (x0, z1)]
    V, F = [], []
    for k in range(4):
        (ax, az), (bx, bz) = corners[k], corners[(k + 1) % 4]
        base = len(V)
        V += [(ax, y0, az), (bx, y0, bz), (bx, y0 + height, bz), (ax, y0 + height, az)]
        # the corners go counter-clockwise seen from +Y, so this winding faces inward
        F += [[base, base + 2, base + 1], [base, base + 3, base + 2]]
    return trimesh.Trimesh(np.array(V, float), np.array(F), process=False)


@dataclass
class CollisionSurface:
    """A depth map (camera z, metres; NaN = none) whose vertical parts may become walls.

    labels: [H, W] uint8 or None (then "vertical" is decided from the surface normal);
    min_height: connected vertical surfaces lower than this (metres) are left out (clutter).
    """

    depth: np.ndarray
    labels: np.ndarray | None
    min_height: float
    intrinsics: Intrinsics | None = None  # default: the photo's


def _wall_mesh(
    surf: CollisionSurface,
    intr: Intrinsics,
    M: np.ndarray,
    y_ground: float,
    grid: int,
    max_distance: float,
) -> tuple[trimesh.Trimesh | None, np.ndarray, np.ndarray | None]:
    """(wall mesh or None, [K, 3] world points of the non-sky content, ceiling points)."""
    depth, labels = surf.depth, surf.labels
    H, W = depth.shape
    step = max(2, int(round(max(H, W) / grid)))
    vs = np.arange(0, H, step)
    us = np.arange(0, W, step)
    # robust depth per grid vertex: median of a 5x5 neighbourhood (unknown stays unknown)
    r = 2
    padded = np.pad(depth.astype(np.float64), r, constant_values=np.nan)
    win = np.stack(
        [padded[np.ix_(vs + dy, us + dx)] for dy in range(2 * r + 1) for dx in range(2 * r + 1)]
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN windows stay NaN
        Z = np.nanmedian(win, axis=0)
    uu, vv = np.meshgrid(us.astype(np.float64), vs.astype(np.float64))
    P = np.stack([(uu - intr.cx) / intr.fx * Z, (vv - intr.cy) / intr.fy * Z, Z], -1)
    Pw = _to_world(P.reshape(-1, 3), M).reshape(P.shape)
    finite = np.isfinite(Z) & (Z < max_distance)
    if labels is not None:
        L = labels[np.ix_(vs, us)]
        vertical = L == VERTICAL
    else:
        L = None
        # no semantic labels: a vertex is "vertical" where the surface normal is near horizontal
        gx, gy, gz = (np.gradient(Pw[..., k]) for k in range(3))
        du = np.stack([gx[1], gy[1], gz[1]], -1)
        dv = np.stack([gx[0], gy[0], gz[0]], -1)
        nrm = np.cross(du, dv)
        nrm /= np.maximum(np.linalg.norm(nrm, axis=-1, keepdims=True), 1e-12)
        with np.errstate(invalid="ignore"):
            vertical = (np.abs(nrm[..., 1]) < 0.5) & (Pw[..., 1] > y_ground + 0.1)
    vertical &= finite
    # cells whose 4 corners are vertical and on one surface (no depth edge inside)
    z4 = np.stack([Z[:-1, :-1], Z[:-1, 1:], Z[1:, :-1], Z[1:, 1:]])
    with np.errstate(invalid="ignore"):
        same = z4.max(0) / np.maximum(z4.min(0), 1e-6) < 1.25
    cell_ok = vertical[:-1, :-1] & vertical[:-1, 1:] & vertical[1:, :-1] & vertical[1:, 1:] & same
    # keep large surfaces only: connected components at least min_height tall
    comp, n_comp = ndimage.label(cell_ok)
    keep = np.zeros_like(cell_ok)
    for k in range(1, n_comp + 1):
        m = comp == k
        ii, jj = np.nonzero(m)
        ys = np.concatenate(
            [Pw[ii, jj, 1], Pw[ii + 1, jj, 1], Pw[ii, jj + 1, 1], Pw[ii + 1, jj + 1, 1]]
        )
        if ys.max() - ys.min() >= surf.min_height:
            keep |= m
    nu = len(us)
    faces = []
    for i, j in zip(*np.nonzero(keep), strict=True):
        a = i * nu + j
        b, c, d = a + 1, a + nu, a + nu + 1
        # image-space counter-clockwise winding faces the camera
        faces += [[a, b, c], [b, d, c]]
    mesh = None
    if faces:
        V = np.nan_to_num(Pw.reshape(-1, 3))
        mesh = trimesh.Trimesh(V, np.array(faces), process=False)
        mesh.remove_unreferenced_vertices()
    content = finite & ((L != SKY) if L is not None else True)
    ceiling = Pw[(L == CEILING) & finite] if L is not None else None
    return mesh, Pw[content], ceiling


@dataclass
class BoundaryRing:
    """The world's edge around the spawn: radius [K] (metres, horizontal) at longitudes lon [K]
    (radians, 0 = -Z, positive toward +X)."""

    lon: np.ndarray
    radius: np.ndarray


def _ring_boundary(ring: BoundaryRing, y0: float, height: float) -> trimesh.Trimesh:
    """Inward-facing wall strips along a closed polygon."""
    x = np.sin(ring.lon) * ring.radius
    z = -np.cos(ring.lon) * ring.radius
    K = len(x)
    V, F = [], []
    for k in range(K):
        a, b = k, (k + 1) % K
        base = len(V)
        V += [
            (x[a], y0, z[a]),
            (x[b], y0, z[b]),
            (x[b], y0 + height, z[b]),
            (x[a], y0 + height, z[a]),
        ]
        # longitude grows clockwise seen from +Y (toward +X from -Z): this winding faces inward
        F += [[base, base + 1, base + 2], [base, base + 2, base + 3]]
    return trimesh.Trimesh(np.array(V, float), np.array(F), process=False)


def build_collision(
    surfaces: list[CollisionSurface],
    intr: Intrinsics,
    ground: GroundFit,
    world_from_camera: np.ndarray,
    config: CollisionConfig,
    *,
    ring: BoundaryRing | None = None,
    max_distance: float = 80.0,
) -> CollisionMesh:
    """Ground plane + large vertical surfaces of ``surfaces`` + a boundary closing the world
    (along ``ring`` when the world extends around the spawn, else a rectangle around the
    photo's content), all in the world frame."""
    y_ground = -ground.height
    walls, pts, ceil = [], [np.zeros((1, 3))], []
    for surf in surfaces:
        mesh, p, c = _wall_mesh(surf, intr, world_from_camera, y_ground, config.grid, max_distance)
        if mesh is not None:
            walls.append(mesh)
        pts.append(p)
        if c is not None and len(c):
            ceil.append(c)
    parts: dict[str, trimesh.Trimesh] = {}
    if walls:
        parts["walls"] = trimesh.util.concatenate(walls)
    if ring is not None:
        x = np.sin(ring.lon) * ring.radius
        z = -np.cos(ring.lon) * ring.radius
        x0, x1, z0, z1 = x.min(), x.max(), z.min(), z.max()
        boundary = _ring_boundary(ring, y_ground, config.boundary_height)
    else:
        P = np.concatenate(pts)
        x0 = min(P[:, 0].min(), 0.0) - SIDE_MARGIN
        x1 = max(P[:, 0].max(), 0.0) + SIDE_MARGIN
        z0 = min(P[:, 2].min(), 0.0) - SIDE_MARGIN
        z1 = max(P[:, 2].max(), 0.0) + BEHIND_MARGIN
        boundary = _boundary(x0, x1, z0, z1, y_ground, config.boundary_height)
    parts["ground"] = _grid_quad(x0, x1, z0, z1, y_ground, 8, up=True)
    parts["boundary"] = boundary
    if ceil:
        yc = float(np.median(np.concatenate(ceil)[:, 1]))
        if yc > 0:
            parts["ceiling"] = _grid_quad(x0, x1, z0, z1, yc, 8, up=False)
    bounds = np.array([[x0, y_ground, z0], [x1, y_ground + config.boundary_height, z1]])
    return CollisionMesh(parts, bounds)
