"""The web export in a real browser: Debian's chromium, headless (WebGL2 on ANGLE + SwiftShader,
no GPU), driven by playwright through ``executable_path`` (no browser download); WebXR under
Meta's ``iwer`` emulator injected into the page. Both come from ``tools/setup.sh --test``.

One small world (fast preset, a 96x72 synthetic photo) is built and exported once per session:
uncapped (the load checks and the parity with ``worldgen render``) and capped to a few thousand
splats (walking, touch and XR: more frames per second on a software rasterizer). The pages are
served by ``worldgen.serve`` on 127.0.0.1 and opened from ``file://``; the viewport is small.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import REPO, save_rgb, textured

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
IWER = REPO / "exporters" / "web" / "node_modules" / "iwer" / "build" / "iwer.min.js"
FLAGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--no-first-run",
]
W, H = 240, 180
PW, PH = 160, 120  # the parity test's viewport: a software rasterizer draws the full world
#: a world name that would inject script if the page did not escape it
EVIL = '"><img src=x onerror=alert(1)>.world'
SMALL = 4000  # splats of the capped site


def _need(path: Path | str, what: str) -> None:
    if Path(path).exists():
        return
    if os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
        pytest.skip(f"{what} not installed (run tools/setup.sh --test)")
    pytest.fail(f"{what} not installed: run `bash tools/setup.sh --test`")


# ----------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def web_world(tmp_path_factory) -> Path:
    """A fast-preset world whose folder name tries to inject markup."""
    from worldgen.config import load_preset
    from worldgen.pipeline import build

    d = tmp_path_factory.mktemp("web_world")
    img = save_rgb(textured(72, 96, seed=3), d / "photo.png")
    return build(img, d / EVIL, load_preset("fast"), use_cache=False).path


@pytest.fixture(scope="session")
def sites(web_world, tmp_path_factory) -> dict[str, Path]:
    """{"full": the uncapped export, "small": capped to SMALL splats}."""
    from exporters import ExportOptions, export_world
    from worldgen.world import load_world

    _need(REPO / "exporters" / "web" / "assets" / "viewer.js", "the web viewer bundle")
    w = load_world(web_world)
    d = tmp_path_factory.mktemp("sites")
    export_world(w, "web", d / "full")
    export_world(w, "web", d / "small", ExportOptions(max_splats=SMALL))
    return {"full": d / "full", "small": d / "small"}


@pytest.fixture(scope="session")
def server(sites):
    """worldgen.serve's server on 127.0.0.1 for the folder holding both sites."""
    from worldgen.serve import ServeOptions, make_server

    srv, urls = make_server(sites["full"].parent.resolve(), ServeOptions(port=0, quiet=True))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield urls[0]
    srv.shutdown()
    srv.server_close()


@pytest.fixture(scope="session")
def browser():
    _need(CHROMIUM, "chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _need("/nonexistent", "playwright (pip, the [dev] extra)")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=FLAGS)
        yield b
        b.close()


class Page:
    """A page with its console errors, failed requests and every request URL recorded."""

    def __init__(self, browser, url: str, size=(W, H), **context):
        self.ctx = browser.new_context(viewport={"width": size[0], "height": size[1]}, **context)
        self.errors: list[str] = []
        self.requests: list[str] = []
        self.dialogs: list[str] = []
        self.url = url

    def open(self, init_script: str | None = None, timeout_ms: int = 90_000):
        if init_script:
            self.ctx.add_init_script(init_script)
        pg = self.ctx.new_page()
        pg.on("console", lambda m: m.type == "error" and self.errors.append(m.text))
        pg.on("pageerror", lambda e: self.errors.append(f"pageerror: {e}"))
        pg.on("requestfailed", lambda r: self.errors.append(f"failed: {r.url} {r.failure}"))
        pg.on("request", lambda r: self.requests.append(r.url))
        pg.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))
        pg.goto(self.url)
        pg.wait_for_function(
            "window.worldgen && (worldgen.ready || worldgen.error)", timeout=timeout_ms
        )
        err = pg.evaluate("worldgen.error")
        assert err is None, err
        self.page = pg
        return pg

    def frames(self, n: int, timeout_ms: int = 60_000) -> None:
        """Wait until the page has rendered n more frames."""
        f0 = self.page.evaluate("worldgen.frames")
        self.page.wait_for_function(f"worldgen.frames >= {f0 + n}", timeout=timeout_ms)

    def pose(self) -> dict:
        return self.page.evaluate("worldgen.pose()")

    def close(self) -> None:
        self.ctx.close()


@pytest.fixture
def page_of(browser):
    opened = []

    def make(url: str, **context) -> Page:
        p = Page(browser, url, **context)
        opened.append(p)
        return p

    yield make
    for p in opened:
        p.close()


def site_json(site: Path) -> dict:
    return json.loads((site / "site.json").read_text())


# ----------------------------------------------------------------------------- 1. loading


def _check_clean_load(p: Page, site: Path, allowed_prefix: str) -> None:
    pg = p.open()
    p.frames(2)
    assert p.errors == []
    assert p.dialogs == []  # the world's name did not become script
    outside = [u for u in p.requests if not u.startswith((allowed_prefix, "data:", "blob:"))]
    assert outside == []
    names = {
        u[len(allowed_prefix) :].split("?")[0] for u in p.requests if u.startswith(allowed_prefix)
    }
    count = site_json(site)["splats"]["count"]
    assert pg.evaluate("worldgen.numSplats") == count
    assert pg.inner_text("#splat-count").replace(",", "") == str(count)
    assert pg.title() == EVIL + " - worldgen"  # shown as text, not markup
    return names


def test_loads_over_http_cleanly(sites, server, page_of):
    prefix = server + "full/"
    names = _check_clean_load(page_of(prefix + "index.html"), sites["full"], prefix)
    assert {"index.html", "viewer.js", "world.spz", "collision.glb"} <= names
    assert "world-data.js" not in names  # fetch over http; the data script is for file://


def test_loads_from_file_url_cleanly(sites, page_of):
    prefix = sites["full"].resolve().as_uri() + "/"
    names = _check_clean_load(page_of(prefix + "index.html"), sites["full"], prefix)
    assert {"index.html", "viewer.js", "world-data.js"} <= names
    assert "world.spz" not in names  # fetch is blocked on file://: the data script carries it


# ----------------------------------------------------------------------------- 2. parity


def spawn_cli_pose(world, spawn: dict) -> str:
    """`worldgen render --pose` (source camera axes, yaw/pitch/roll) of the page's first view:
    the eye above the spawn's feet, turned by its yaw and pitch (a level camera), as
    ``renderer.controller.Controller.camera_pose_in_source``."""
    from renderer.controller import WORLD_FROM_LEVEL_CV
    from worldgen.camera import rotation_ypr

    M = np.asarray(world.world_from_camera, np.float64)
    Rwc, twc = M[:3, :3], M[:3, 3]
    eye = np.asarray(spawn["position"], np.float64) + [0.0, spawn["eye_height"], 0.0]
    yaw, pitch = math.radians(spawn["yaw_deg"]), math.radians(spawn["pitch_deg"])
    R = Rwc.T @ WORLD_FROM_LEVEL_CV @ rotation_ypr(yaw, pitch, 0.0)
    T = Rwc.T @ (eye - twc)
    # R = R_y(a) R_x(b) R_z(c): third column (sin a cos b, -sin b, cos a cos b), second row
    # (cos b sin c, cos b cos c, -sin b)
    a = math.atan2(R[0, 2], R[2, 2])
    b = math.asin(-np.clip(R[1, 2], -1, 1))
    c = math.atan2(R[1, 0], R[1, 1])
    assert np.allclose(rotation_ypr(a, b, c), R, atol=1e-9)
    return ",".join(f"{v:.9f}" for v in (*T, math.degrees(a), math.degrees(b), math.degrees(c)))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(1.0 / np.mean((a - b) ** 2)))


def test_spawn_view_matches_worldgen_render(sites, server, page_of, web_world, tmp_path):
    """The page's first view at the spawn == `worldgen render` of that pose, same intrinsics
    (the photo's horizontal fov, centred principal point; three's vertical fov from it), same
    black background: >= 25 dB PSNR."""
    from worldgen.cli import main
    from worldgen.world import load_world

    site = site_json(sites["full"])
    p = page_of(server + "full/index.html", size=(PW, PH))
    pg = p.open()
    sp = site["spawn"]
    pg.evaluate(
        """sp => {
        worldgen.frozen = true;
        worldgen.setPose({feet: sp.position, yaw: sp.yaw_deg * Math.PI / 180,
                          pitch: sp.pitch_deg * Math.PI / 180});
        for (const id of ["hud", "help", "stick", "enter-vr"])
          document.getElementById(id).hidden = true;
        }""",
        sp,
    )
    # Spark sorts in a worker: wait for a frame with the splats drawn, then one more
    pg.wait_for_function("worldgen.loadSeconds !== null && worldgen.activeSplats > 0")
    p.frames(1)
    shot = tmp_path / "web.png"
    pg.screenshot(path=str(shot))
    ref = tmp_path / "ref.png"
    pose = spawn_cli_pose(load_world(web_world), sp)
    args = [
        "render", str(web_world), "-o", str(ref), "--size", f"{PW}x{PH}", "--quiet",
        "--fov", repr(site["fov"]["horizontal_deg"]),
        "--principal", f"{(PW - 1) / 2},{(PH - 1) / 2}", f"--pose={pose}",
    ]  # fmt: skip
    assert main(args) == 0
    a = np.asarray(Image.open(shot).convert("RGB"), np.float64) / 255
    b = np.asarray(Image.open(ref).convert("RGB"), np.float64) / 255
    assert a.shape == b.shape == (PH, PW, 3)
    value = psnr(a, b)
    print(f"web vs worldgen render at the spawn: {value:.2f} dB")
    assert value >= 25.0
    # and not by accident: the view turned by 90 degrees no longer matches
    assert psnr(np.rot90(a, 2), b) < value - 3


# ----------------------------------------------------------------------------- 3. walking


def _walk_page(page_of, server) -> Page:
    p = page_of(server + "small/index.html")
    p.open()
    p.frames(1)
    return p


def _hold(p: Page, key: str, seconds: float, timeout_ms: int = 90_000) -> None:
    """Hold ``key`` until the page has simulated ``seconds`` with a move input held."""
    pg = p.page
    pg.keyboard.down(key)
    try:
        pg.wait_for_function(
            f"worldgen.pose().heldTime.forward + worldgen.pose().heldTime.right >= {seconds}",
            timeout=timeout_ms,
        )
    finally:
        pg.keyboard.up(key)


def test_holding_w_walks_at_the_speed_of_worldgen_view(server, page_of, sites):
    site = site_json(sites["small"])
    p = _walk_page(page_of, server)
    pg = p.page
    pg.evaluate("worldgen.setPose({yaw: 0.3})")  # not along an axis
    before = p.pose()
    _hold(p, "KeyW", 1.0)
    after = p.pose()
    t = after["heldTime"]["forward"] - before["heldTime"]["forward"]
    d = np.subtract(after["feet"], before["feet"])
    fwd = np.array([math.sin(0.3), 0.0, -math.cos(0.3)])
    along = float(d @ fwd)
    speed = site["speeds"]["walk"]
    assert t >= 1.0
    assert speed * t * 0.8 <= along <= speed * t * 1.2, (along, t)
    assert abs(float(d @ np.array([math.cos(0.3), 0.0, math.sin(0.3)]))) < 0.05 * along


def ray_distance(glb: Path, origin, direction) -> float:
    """Distance along a unit ray to the nearest triangle of a GLB (Moller-Trumbore)."""
    import trimesh

    mesh = trimesh.load(glb, force="mesh")
    tri = np.asarray(mesh.vertices, np.float64)[np.asarray(mesh.faces)]  # [N, 3, 3]
    o, d = np.asarray(origin, np.float64), np.asarray(direction, np.float64)
    e1, e2 = tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]
    p = np.cross(d, e2)
    det = np.einsum("ij,ij->i", e1, p)
    ok = np.abs(det) > 1e-12
    inv = np.where(ok, 1.0 / np.where(ok, det, 1.0), 0.0)
    s = o - tri[:, 0]
    u = np.einsum("ij,ij->i", s, p) * inv
    q = np.cross(s, e1)
    v = (q @ d) * inv
    t = np.einsum("ij,ij->i", e2, q) * inv
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    assert hit.any(), "the ray hits no wall"
    return float(t[hit].min())


def _python_walk(world_path: Path, start: list[float], yaw: float, seconds: float):
    """worldgen view's controller from the same start, forward held for ``seconds``."""
    from renderer.controller import ControlInput, Controller
    from worldgen.world import load_world

    c = Controller.from_world(load_world(world_path))
    c.state.position = np.asarray(start, np.float64)
    c.yaw = yaw
    for _ in range(int(seconds * 60)):
        c.update(1 / 60, ControlInput(forward=1.0))
    return c.position


def test_a_wall_stops_the_capsule_as_in_worldgen_view(server, page_of, web_world, sites):
    """Hold W toward the world's edge: the page stops where `worldgen view`'s controller stops
    (same collision mesh, capsule and physics), the radius away from the wall."""
    site = site_json(sites["small"])
    p = _walk_page(page_of, server)
    pg = p.page
    start = list(site["spawn"]["position"])
    start[2] -= 2.5  # 2.5 m ahead of the spawn, facing -Z
    pg.evaluate(f"worldgen.setPose({{feet: {json.dumps(start)}, yaw: 0, pitch: 0}})")
    pg.keyboard.down("ShiftLeft")
    _hold(p, "KeyW", 2.5)
    pg.keyboard.up("ShiftLeft")
    web = np.array(p.pose()["feet"])
    # where the wall is: a ray at knee height from the start along -Z
    origin = np.array(start) + [0.0, 0.5, 0.0]
    wall_z = origin[2] - ray_distance(web_world / "collision.glb", origin, [0.0, 0.0, -1.0])
    r = site["capsule"]["radius"]
    assert web[2] - wall_z == pytest.approx(r, abs=0.03)
    ref = _python_walk(web_world, start, 0.0, 3.0)
    assert np.abs(web[[0, 2]] - ref[[0, 2]]).max() < 0.03, (web, ref)


def test_dropped_above_the_floor_lands_at_eye_height(server, page_of, sites):
    site = site_json(sites["small"])
    sp = site["spawn"]
    p = _walk_page(page_of, server)
    pg = p.page
    high = [sp["position"][0], sp["position"][1] + 1.5, sp["position"][2]]
    pg.evaluate(f"worldgen.setPose({{feet: {json.dumps(high)}}})")
    first = p.pose()
    assert first["onGround"] is False and first["feet"][1] > sp["position"][1] + 1.0
    pg.wait_for_function("worldgen.pose().onGround", timeout=60_000)
    p.frames(2)
    pose = p.pose()
    assert pose["eye"][1] == pytest.approx(sp["position"][1] + sp["eye_height"], abs=0.02)


def test_touch_joystick_moves_the_player(browser, server, page_of):
    p = page_of(server + "small/index.html", has_touch=True, is_mobile=True)
    pg = p.open()
    assert pg.is_visible("#stick")
    box = pg.locator("#stick").bounding_box()
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    before = p.pose()
    cdp = pg.context.new_cdp_session(pg)

    def touch(kind: str, x: float, y: float) -> None:
        pts = [] if kind == "touchEnd" else [{"x": x, "y": y, "id": 1}]
        cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": pts})

    touch("touchStart", cx, cy)
    touch("touchMove", cx, cy - box["height"] / 2)  # push up: forward
    pg.wait_for_function(
        f"worldgen.pose().heldTime.forward > {before['heldTime']['forward'] + 0.5}"
    )
    touch("touchEnd", cx, cy)
    after = p.pose()
    yaw = before["yaw"]
    d = np.subtract(after["feet"], before["feet"])
    assert float(d @ np.array([math.sin(yaw), 0.0, -math.cos(yaw)])) > 0.3


# ----------------------------------------------------------------------------- 4. WebXR


def test_webxr_session_under_iwer(server, page_of, sites):
    """iwer (Meta's WebXR runtime emulator, a Quest 3) injected before the page's scripts."""
    _need(IWER, "iwer (npm, exporters/web)")
    site = site_json(sites["small"])
    init = IWER.read_text() + (
        ";window.__iwer = new IWER.XRDevice(IWER.metaQuest3);"
        "window.__iwer.installRuntime({forceInstall: true});"
    )
    p = page_of(server + "small/index.html")
    pg = p.open(init_script=init)
    pg.wait_for_selector("#enter-vr", state="visible", timeout=30_000)
    pg.click("#enter-vr")
    pg.wait_for_function("worldgen.mode === 'xr' && worldgen.xr.frames > 3", timeout=60_000)
    assert pg.evaluate("worldgen.xr.views") == 2
    f0 = pg.evaluate("worldgen.xr.frames")
    pg.wait_for_function(f"worldgen.xr.frames > {f0 + 3}", timeout=60_000)
    # the floor is under the feet: the rig stands on the spawn's floor
    rig0 = np.array(pg.evaluate("worldgen.pose().rig"))
    assert rig0[1] == pytest.approx(site["spawn"]["position"][1], abs=0.02)
    # the left thumbstick pushed forward: the rig moves along the head's heading (-Z) ...
    pg.evaluate("__iwer.controllers.left.updateAxes('thumbstick', 0, -1)")
    pg.wait_for_function(f"worldgen.pose().rig[2] < {rig0[2] - 0.5}", timeout=60_000)
    # ... and keeps pushing into the world's edge: the head stops the radius from the wall
    pg.wait_for_function(
        "(() => { const w = worldgen.walker; const z = w.position.z;"
        " const r = (window.__z = window.__z || []); r.push(z);"
        " return r.length > 20 && Math.abs(r[r.length - 1] - r[r.length - 21]) < 1e-4; })()",
        polling=100,
        timeout=120_000,
    )
    head = pg.evaluate("(() => { const v = worldgen.xr.head().position; return v.toArray(); })()")
    feet = pg.evaluate("worldgen.walker.position.toArray()")
    assert abs(head[0] - feet[0]) < 1e-3 and abs(head[2] - feet[2]) < 1e-3  # head = capsule
    assert feet[2] - site["bounds"]["min"][2] >= site["capsule"]["radius"] - 1e-3
    pg.evaluate("__iwer.controllers.left.updateAxes('thumbstick', 0, 0)")
    # ending the session returns to desktop mode
    pg.evaluate("worldgen.xr.session.end()")
    pg.wait_for_function("worldgen.mode === 'desktop'", timeout=30_000)
    assert pg.inner_text("#enter-vr") == "Enter VR"
    p.frames(2)
    assert p.errors == []
