"""Web export (``--to web``): a static folder to walk a world in any browser and in WebXR.

``worldgen export WORLD --to web -o site/`` writes::

    index.html                the page: canvas, loading bar, help, joystick, "Enter VR";
                              the site's settings inline as JSON (escaped)
    viewer.js                 the viewer, ONE classic script (three.js + Spark + three-mesh-bvh
                              + our controls; esbuild IIFE built by tools/setup.sh)
    world.spz                 the splats (our SPZ writer, ``exporters.spz``), world frame
    collision.glb             the world's collision mesh as the bundle has it (uncompressed),
                              world frame
    site.json                 spawn, eye height, capsule, speeds, splat count, bounds, frame
    world-data.js             ``window.WORLDGEN_DATA = {spz, glb}`` (base64): the same bytes
                              for ``file://``, where Chromium blocks fetch and ES modules
    THIRD_PARTY_LICENSES.txt  the licences of everything bundled in viewer.js

Frame: one for everything the page loads, worldgen's world frame (metres, +Y up, the source
camera at the origin facing -Z at yaw 0), which is three.js's frame. ``splats.ply`` holds the
splats in the source camera's axes (pitched and rolled with it); the SPZ writer applies
``world_from_camera`` (its FRAME is "world": SPZ's RUB axes), and collision.glb already is in
the world frame. Spark decodes SPZ without an axis change, so both land in one frame.

Nothing on the page requests anything outside the folder: no CDN, fonts or controller models
(``data:`` favicon). Every string that comes from the world (its name, the source path) is
escaped: HTML-escaped in the page's text, and JSON with ``<``, ``>``, ``&``, U+2028/9 as
``\\uXXXX`` wherever it sits inside a script.

The viewer bundle is built by ``tools/setup.sh`` (node and npm from apt; dependencies pinned in
``exporters/web/package.json``) into ``exporters/web/assets/`` (git-ignored; package data of
the wheel), so an installed worldgen needs no node. Without it the export fails with one line.
"""

from __future__ import annotations

import base64
import html
import json
import math
import struct
import zlib
from pathlib import Path

import numpy as np

from worldgen.errors import BackendError, BundleError

from ..registry import Exporter, ExportOptions, register_exporter
from ..spz import export_spz

ASSETS = Path(__file__).resolve().parent / "assets"
VIEWER = ASSETS / "viewer.js"
LICENSES = ASSETS / "THIRD_PARTY_LICENSES.txt"

SPZ_NAME = "world.spz"
GLB_NAME = "collision.glb"
DATA_NAME = "world-data.js"

#: the walker of ``worldgen view`` (renderer.controller.ControllerConfig's defaults; exporters do
#: not import the renderer, tests/test_web_export.py checks that they agree)
WALK_SPEED = 1.4
RUN_SPEED = 3.0
JUMP_HEIGHT = 1.0
GRAVITY = 9.81
CAPSULE_RADIUS = 0.3
HEAD_ROOM = 0.1

#: glTF extensions that need decoder files the page does not ship
_COMPRESSED = ("KHR_draco_mesh_compression", "EXT_meshopt_compression", "KHR_meshopt_compression")


def viewer_bundle() -> tuple[bytes, bytes]:
    """(viewer.js, THIRD_PARTY_LICENSES.txt) as built by tools/setup.sh."""
    if not (VIEWER.is_file() and LICENSES.is_file()):
        raise BackendError(
            f"the web viewer is not built ({VIEWER} missing): run `bash tools/setup.sh` "
            "(needs Node.js and npm)"
        )
    return VIEWER.read_bytes(), LICENSES.read_bytes()


def script_json(obj) -> str:
    """JSON safe to place inside a <script> element or a .js file: no ``<``, ``>``, ``&`` or
    line separators survive as such, so no string can close the element or the statement."""
    s = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    for ch, esc in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        s = s.replace(ch, esc)
    return s  # ensure_ascii already wrote U+2028/2029 as \u2028 / \u2029


def spz_count(spz: bytes) -> int:
    """Number of splats in an SPZ file (its header, after gzip)."""
    head = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(spz, 16)
    return struct.unpack_from("<III", head)[2]


def check_uncompressed_glb(glb: bytes, what: str) -> None:
    """A GLB the page's GLTFLoader reads without decoder files (no Draco / meshopt)."""
    try:
        magic, _version, _length, jlen, jtype = struct.unpack_from("<IIIII", glb)
        if magic != 0x46546C67 or jtype != 0x4E4F534A:
            raise ValueError("not a GLB")
        gltf = json.loads(glb[20 : 20 + jlen])
    except (struct.error, ValueError) as e:
        raise BundleError(f"{what}: not a readable GLB ({e})") from None
    used = set(gltf.get("extensionsUsed", [])) | set(gltf.get("extensionsRequired", []))
    bad = sorted(used & set(_COMPRESSED))
    if bad:
        raise BundleError(f"{what}: compressed ({', '.join(bad)}); the web page reads plain GLB")


def spawn_pitch_deg(world) -> float:
    """The source camera's pitch (degrees, > 0 up): `worldgen view` starts looking as the photo
    did, less its roll (renderer.controller.Spawn.from_world)."""
    fwd = np.asarray(world.world_from_camera, np.float64)[:3, :3] @ np.array([0.0, 0.0, 1.0])
    return math.degrees(math.asin(float(np.clip(fwd[1] / np.linalg.norm(fwd), -1.0, 1.0))))


def site_settings(world, spz: bytes, glb: bytes, sh_degree: int) -> dict:
    """site.json: what the page needs besides the two data files (world frame, metres)."""
    m = world.manifest
    s = m["spawn"]
    b = m.get("bounds") or {}
    eye = float(s.get("eye_height", 1.6))
    if "min" in b and "max" in b:
        lo = [float(v) for v in b["min"]]
        hi = [float(v) if math.isfinite(float(v)) else None for v in b["max"]]
    else:  # the collision mesh's box, open upward (renderer.controller.Collider)
        lo, hi = _glb_box(glb)
        hi[1] = None
    return {
        "format": "worldgen-web",
        "version": 1,
        "name": world.path.name,
        "source": Path(str(m.get("source", {}).get("path", ""))).name,
        "frame": "world: metres, +Y up, the source camera at the origin facing -Z (three.js)",
        "splats": {
            "file": SPZ_NAME,
            "count": spz_count(spz),
            "bytes": len(spz),
            "sh_degree": int(sh_degree),
        },
        "collision": {"file": GLB_NAME, "bytes": len(glb)},
        "data_script": DATA_NAME,
        "spawn": {
            "position": [float(v) for v in s["position"]],
            "yaw_deg": float(s["yaw_deg"]),
            "pitch_deg": spawn_pitch_deg(world),
            "eye_height": eye,
        },
        "capsule": {
            "radius": CAPSULE_RADIUS,
            "head_room": HEAD_ROOM,
            "height": max(eye + HEAD_ROOM, 2 * CAPSULE_RADIUS),
        },
        "speeds": {
            "walk": WALK_SPEED,
            "run": RUN_SPEED,
            "jump_height": JUMP_HEIGHT,
            "gravity": GRAVITY,
        },
        "bounds": {"min": lo, "max": hi},
        "fov": {"horizontal_deg": float(world.intrinsics.hfov_deg)},
    }


def _glb_box(glb: bytes) -> tuple[list[float], list[float]]:
    """The collision mesh's bounding box; the GLB is checked like every bundle file
    (``safeio.check_glb``) and anything trimesh cannot read is a BundleError."""
    import io
    import warnings

    import trimesh

    from worldgen.errors import BundleError
    from worldgen.safeio import check_glb

    check_glb(glb, "collision.glb")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scene = trimesh.load(io.BytesIO(glb), file_type="glb", force="scene")
        lo, hi = scene.bounds
    except Exception as e:  # trimesh raises many kinds on malformed data
        what = type(e).__name__
        raise BundleError(f"collision.glb: unreadable collision mesh ({what})") from None
    if lo is None or not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        raise BundleError("collision.glb: no finite geometry")
    return [float(v) for v in lo], [float(v) for v in hi]


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1, user-scalable=no">
<title>{title}</title>
<link rel="icon" href="data:,">
<style>
html, body {{ margin: 0; height: 100%; overflow: hidden; background: #000; color: #eee;
  font: 14px/1.4 system-ui, sans-serif; }}
#view {{ display: block; width: 100vw; height: 100vh; }}
#loading {{ position: fixed; left: 50%; top: 50%; width: 320px; margin: -20px 0 0 -160px;
  text-align: center; }}
#loading .track {{ height: 6px; background: #333; border-radius: 3px; overflow: hidden; }}
#loading-bar {{ height: 100%; width: 0; background: #4aa3ff; transition: width .1s; }}
#loading.failed #loading-bar {{ background: #e44; }}
#hud {{ position: fixed; left: 8px; top: 6px; opacity: .8; text-shadow: 0 0 3px #000; }}
#help {{ position: fixed; right: 8px; bottom: 8px; max-width: 280px; padding: 6px 10px;
  font-size: 12px; background: rgba(0, 0, 0, .55); border-radius: 6px; }}
#help h1 {{ font-size: 13px; margin: 0 0 4px; overflow-wrap: anywhere; }}
#enter-vr {{ position: fixed; left: 50%; bottom: 16px; transform: translateX(-50%);
  padding: 10px 18px; font: inherit; color: #fff; background: #2a62c9; border: 0;
  border-radius: 6px; cursor: pointer; }}
#stick {{ position: fixed; left: 24px; bottom: 24px; width: 120px; height: 120px;
  border-radius: 50%; background: rgba(255, 255, 255, .15); touch-action: none; }}
#stick-knob {{ position: absolute; left: 35px; top: 35px; width: 50px; height: 50px;
  border-radius: 50%; background: rgba(255, 255, 255, .5); pointer-events: none; }}
[hidden] {{ display: none !important; }}
</style>
</head>
<body>
<canvas id="view"></canvas>
<div id="loading"><div id="loading-text">loading</div><div class="track"><div id="loading-bar">
</div></div></div>
<div id="hud"><span id="splat-count">0</span> splats</div>
<div id="help"><h1>{title}</h1>
Click to look around (Esc frees the mouse); W A S D or arrows move, Shift runs, Space jumps,
R returns to the start, H hides this. Phones: the left circle moves, drag elsewhere to look.
Headsets: Enter VR; left stick moves, right stick turns.</div>
<div id="stick" hidden><div id="stick-knob"></div></div>
<button id="enter-vr" hidden>Enter VR</button>
<script type="application/json" id="worldgen-site">{site}</script>
<script src="viewer.js"></script>
</body>
</html>
"""


def render_page(site: dict) -> str:
    """index.html with the site's settings inline; every world-derived string escaped."""
    title = html.escape(f"{site['name']} - worldgen", quote=True)
    return PAGE.format(title=title, site=script_json(site))


def data_script(spz: bytes, glb: bytes) -> str:
    """world-data.js: the data files as base64 for file:// (a classic script, no fetch)."""
    data = {
        "spz": base64.b64encode(spz).decode("ascii"),
        "glb": base64.b64encode(glb).decode("ascii"),
    }
    return f"window.WORLDGEN_DATA = {script_json(data)};\n"


def export_web(world, options: ExportOptions) -> dict[str, bytes]:
    """The static site folder (see the module docstring) as {relative path: bytes}."""
    viewer, licenses = viewer_bundle()
    glb_path = world.path / "collision.glb"
    if not glb_path.is_file():
        raise BundleError(f"{glb_path}: missing (the web page walks on the collision mesh)")
    glb = glb_path.read_bytes()
    check_uncompressed_glb(glb, str(glb_path))
    spz = export_spz(world, options, version=3 if options.extra.get("spz_version") == 3 else 2)
    sh_degree, _ = options.resolved(world.manifest["splats"]["sh_degree"])
    site = site_settings(world, spz, glb, sh_degree)
    return {
        "index.html": render_page(site).encode("utf-8"),
        "viewer.js": viewer,
        SPZ_NAME: spz,
        GLB_NAME: glb,
        "site.json": (json.dumps(site, indent=2) + "\n").encode("utf-8"),
        DATA_NAME: data_script(spz, glb).encode("ascii"),
        "THIRD_PARTY_LICENSES.txt": licenses,
    }


register_exporter(
    Exporter(
        name="web",
        kind="folder",
        extension="",
        description="static web page: walk in any browser and WebXR (index.html, viewer.js, "
        "world.spz, collision.glb; opens from file:// too)",
        export=export_web,
    )
)
