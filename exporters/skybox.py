"""``skybox``: the world's sky as an equirectangular PNG and a six-face cube map (a folder).

Files: ``sky.png`` (equirectangular, 2:1), ``px.png nx.png py.png ny.png pz.png nz.png`` (the
cube faces) and ``skybox.json`` (what they are, the conventions below, where the colours came
from).

Where the colours come from, best first: the world's equirectangular ``sky`` layer (the sky
dome), else the ``surroundings`` panorama's colours, else the photo projected onto the sphere
with its top / bottom rows' mean colour around it; then the photo's own perspective ``sky``
layer(s), sharper than the dome, are painted over it where they cover the sphere (alpha-blended).

Frame: the **world frame** (right-handed, +Y up, the source camera at the origin looking down
-Z; ``worldgen/surround/geometry.py``), no axis change.

* Equirectangular: pixel ``(row i, col j)`` of a ``W x H`` image has longitude
  ``lon = -180 + (j + 0.5) 360 / W`` and latitude ``lat = 90 - (i + 0.5) 180 / H`` (degrees);
  its direction is ``(sin lon cos lat, sin lat, -cos lon cos lat)``: the image centre is the
  photo's view direction (-Z), the right half turns right (toward +X), the top row is straight
  up. Seen from inside this is not mirrored (the usual spherical-panorama layout, as Godot's
  PanoramaSkyMaterial and Unity's Skybox/Panoramic take it).
* Cube map: the OpenGL cube-map layout (also Godot's ``Cubemap`` / three.js
  ``CubeTextureLoader``): faces ``+X -X +Y -Y +Z -Z`` = ``px nx py ny pz nz``; with
  ``s = 2 (j + 0.5) / N - 1`` (column, left to right) and ``t = 2 (i + 0.5) / N - 1`` (row, top to
  bottom) face pixel ``(i, j)`` looks along ``px: (1, -t, -s)``, ``nx: (-1, -t, s)``,
  ``py: (s, 1, t)``, ``ny: (s, -1, -t)``, ``pz: (s, -t, 1)``, ``nz: (-s, -t, -1)`` (world axes).
  Like every OpenGL cube map, a face seen from inside a right-handed world is mirrored
  left-right; a left-handed engine (Unity: glTFast maps world x to -x) should swap ``px`` and
  ``nx`` and mirror each face horizontally, or use ``sky.png`` instead.
"""

from __future__ import annotations

import io
import json
import math

import numpy as np
from scipy import ndimage

from .registry import Exporter, ExportOptions, register_exporter

FACES = ("px", "nx", "py", "ny", "pz", "nz")
DEFAULT_WIDTH = 2048


def equirect_directions(width: int, height: int) -> np.ndarray:
    """[H, W, 3] unit world directions of the pixel centres of an equirectangular image."""
    lon = -math.pi + (np.arange(width) + 0.5) * 2 * math.pi / width
    lat = math.pi / 2 - (np.arange(height) + 0.5) * math.pi / height
    LON, LAT = np.meshgrid(lon, lat)
    return np.stack([np.sin(LON) * np.cos(LAT), np.sin(LAT), -np.cos(LON) * np.cos(LAT)], -1)


def face_directions(face: str, n: int) -> np.ndarray:
    """[n, n, 3] unit world directions of the pixels of one cube face (OpenGL layout)."""
    c = 2 * (np.arange(n) + 0.5) / n - 1
    s, t = np.meshgrid(c, c)  # s: column (left->right), t: row (top->bottom)
    one = np.ones_like(s)
    d = {
        "px": (one, -t, -s),
        "nx": (-one, -t, s),
        "py": (s, one, t),
        "ny": (s, -one, -t),
        "pz": (s, -t, one),
        "nz": (-s, -t, -one),
    }[face]
    d = np.stack(d, -1)
    return d / np.linalg.norm(d, axis=-1, keepdims=True)


def sample_equirect(img: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Bilinear colours [..., C] of an equirectangular image [H, W, C] along directions [..., 3]
    (wrapping around in longitude)."""
    H, W = img.shape[:2]
    lon = np.arctan2(d[..., 0], -d[..., 2])
    lat = np.arcsin(np.clip(d[..., 1], -1, 1))
    x = (lon + math.pi) / (2 * math.pi) * W - 0.5
    y = (math.pi / 2 - lat) / math.pi * H - 0.5
    padded = np.concatenate([img[:, -1:], img, img[:, :1]], axis=1)  # wrap one column
    coords = [np.clip(y, 0, H - 1).ravel(), (np.mod(x + 0.5, W) - 0.5 + 1).ravel()]
    out = [
        ndimage.map_coordinates(padded[..., c], coords, order=1, mode="nearest")
        for c in range(img.shape[2])
    ]
    return np.stack(out, -1).reshape(*d.shape[:-1], img.shape[2])


def _project(d_world: np.ndarray, R_wc: np.ndarray, intr):
    """Pixel coordinates (u, v) of world directions in a perspective layer and an inside mask."""
    dc = d_world @ R_wc  # R_wc^T d per row
    z = dc[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = intr.fx * dc[..., 0] / z + intr.cx
        v = intr.fy * dc[..., 1] / z + intr.cy
    inside = (z > 1e-6) & (u >= -0.5) & (u <= intr.width - 0.5)
    inside &= (v >= -0.5) & (v <= intr.height - 0.5)
    return u, v, inside


def _sample_image(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    coords = [np.clip(v, 0, img.shape[0] - 1), np.clip(u, 0, img.shape[1] - 1)]
    if img.ndim == 2:
        return ndimage.map_coordinates(img, coords, order=1, mode="nearest")
    return np.stack(
        [
            ndimage.map_coordinates(img[..., c], coords, order=1, mode="nearest")
            for c in range(img.shape[2])
        ],
        -1,
    )


def _photo_sphere(world, d: np.ndarray) -> np.ndarray:
    """The photo on the sphere, its top rows' mean colour above it and bottom rows' below."""
    rgb = world.source_rgb
    intr = world.intrinsics
    R = world.world_from_camera[:3, :3]
    u, v, inside = _project(d, R, intr)
    k = max(1, rgb.shape[0] // 10)
    top, bottom = rgb[:k].reshape(-1, 3).mean(0), rgb[-k:].reshape(-1, 3).mean(0)
    horizon = (R @ np.array([0.0, 0.0, 1.0]))[1]  # world y of the optical axis
    out = np.where((d[..., 1:2] > horizon), top, bottom).astype(np.float32)
    # soften the step at the horizon and around the photo, then paste the photo
    out = ndimage.gaussian_filter(out, sigma=(d.shape[0] / 40, d.shape[0] / 40, 0))
    out[inside] = _sample_image(rgb, u[inside], v[inside])
    return out


def sky_equirect(world, width: int = DEFAULT_WIDTH) -> tuple[np.ndarray, dict]:
    """[width/2, width, 3] float32 sky colours of every direction and a note of the sources."""
    H = max(1, width // 2)
    d = equirect_directions(width, H)
    layers = world.layers
    dome = [x for x in layers if x.kind == "sky" and x.projection == "equirectangular"]
    sur = [x for x in layers if x.kind == "surroundings" and x.projection == "equirectangular"]
    if dome:
        out, base = sample_equirect(dome[0].rgb, d), f"sky layer {dome[0].name!r}"
    elif sur:
        out, base = sample_equirect(sur[0].rgb, d), f"surroundings layer {sur[0].name!r}"
    else:
        out, base = _photo_sphere(world, d), "photo (top/bottom rows around it)"
    over = []
    R = world.world_from_camera[:3, :3]
    for layer in layers:
        if layer.kind != "sky" or layer.projection != "perspective":
            continue
        u, v, inside = _project(d, R, layer.intrinsics)
        if not inside.any():
            continue
        a = np.clip(_sample_image(layer.alpha, u[inside], v[inside]), 0, 1)[:, None]
        col = _sample_image(layer.rgb, u[inside], v[inside])
        out[inside] = a * col + (1 - a) * out[inside]
        over.append(layer.name)
    return np.clip(out, 0, 1).astype(np.float32), {"base": base, "painted_over": over}


def cube_faces(equirect: np.ndarray, size: int) -> dict[str, np.ndarray]:
    return {f: sample_equirect(equirect, face_directions(f, size)) for f in FACES}


def _png(img: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray((np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)).save(
        buf, format="PNG", compress_level=6
    )
    return buf.getvalue()


def export_skybox(world, options: ExportOptions | None = None) -> dict[str, bytes]:
    extra = dict(options.extra) if options is not None else {}
    width = int(extra.get("sky_width", DEFAULT_WIDTH))
    if width < 8 or width % 4:
        from worldgen.errors import InputError

        raise InputError(f"sky_width must be a multiple of 4, at least 8; got {width}")
    face = int(extra.get("cube_size", width // 4))
    pano, source = sky_equirect(world, width)
    files = {"sky.png": _png(pano)}
    for name, img in cube_faces(pano, face).items():
        files[f"{name}.png"] = _png(img)
    meta = {
        "format": "worldgen.skybox",
        "version": 1,
        "frame": "world: right-handed, +Y up, source camera at the origin facing -Z",
        "equirect": {
            "file": "sky.png",
            "width": width,
            "height": width // 2,
            "pixel": "lon = -180 + (col + 0.5) * 360 / width, "
            "lat = 90 - (row + 0.5) * 180 / height",
            "direction": "(sin lon cos lat, sin lat, -cos lon cos lat)",
            "centre": "-Z (the photo's view direction); +X at the right",
        },
        "cubemap": {
            "layout": "OpenGL cube map (Godot Cubemap, three.js CubeTextureLoader)",
            "size": face,
            "faces": {f: f"{f}.png" for f in FACES},
            "order": list(FACES),
            "st": "s = 2 (col + 0.5) / size - 1, t = 2 (row + 0.5) / size - 1",
            "directions": {
                "px": "(1, -t, -s)",
                "nx": "(-1, -t, s)",
                "py": "(s, 1, t)",
                "ny": "(s, -1, -t)",
                "pz": "(s, -t, 1)",
                "nz": "(-s, -t, -1)",
            },
            "left_handed_engines": "swap px/nx and mirror each face horizontally (Unity)",
        },
        "source": source,
    }
    files["skybox.json"] = (json.dumps(meta, indent=2) + "\n").encode()
    return files


register_exporter(
    Exporter(
        name="skybox",
        kind="folder",
        extension="",
        description="the sky as an equirectangular PNG and a 6-face cube map (OpenGL layout)",
        export=export_skybox,
    )
)
