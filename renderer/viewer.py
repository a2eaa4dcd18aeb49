"""``worldgen view``: a GLFW window to walk through a world in first person.

Controls: mouse looks around (the cursor is captured; click to capture it again), W A S D
move, Shift runs, Space jumps (flies up in fly mode), Q / Ctrl go down and E up in fly mode,
F toggles walk / fly, R returns to the spawn point, C shows the collision mesh as a wireframe,
Esc releases the cursor and a second Esc quits. The title shows the frame rate and splat count.

The window only turns input into :class:`renderer.controller.Controller` calls and draws with
:class:`renderer.splat_renderer.SplatRenderer`; all physics lives in the controller.

Scripted input (a testing aid, ``--script keys.json``): a JSON list of steps, or an object
``{"dt": seconds per frame, "steps": [...]}``. Each step is
``{"frames": N, "hold": ["W", "LEFT_SHIFT"], "press": ["F"], "mouse": [dx, dy]}``: the keys in
``hold`` are held for N frames, the keys in ``press`` are pressed and released once at the
step's first frame, ``mouse`` moves the mouse by (dx, dy) window pixels every frame of the
step, and ``"resize": [w, h]`` resizes the window at the step's first frame. Key names are
GLFW's without ``KEY_``. With a script every frame advances the simulation by ``dt`` (default
1/60 s) whatever the real frame time, so runs are reproducible.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from worldgen.camera import Camera, Intrinsics, Pose
from worldgen.errors import BackendError, InputError, OutputError

from .controller import ControlInput, Controller, ControllerConfig

MOUSE_DEG_PER_PIXEL = 0.1
STEREO_MODES = ("sbs",)
BACKGROUND = (0.0, 0.0, 0.0)


@dataclass(frozen=True)
class ViewerOptions:
    """Options of ``worldgen view`` (see ``worldgen view --help``)."""

    fov_deg: float | None = None
    """horizontal field of view in degrees; default: the source photo's"""
    size: tuple[int, int] = (1280, 720)
    """window size in screen coordinates (the framebuffer may be larger on HiDPI screens)"""
    vsync: bool = True
    fly: bool = False
    """start in fly mode"""
    stereo: str | None = None
    """"sbs": side-by-side stereo, left eye in the left half"""
    ipd: float = 0.064
    """eye separation for stereo, metres"""
    frames: int | None = None
    """run this many frames, then quit"""
    screenshot: Path | None = None
    """save the last frame shown as PNG"""
    speed: float | None = None
    """walking speed in m/s (running keeps its ratio to walking)"""
    script: Path | None = None
    """scripted input (testing aid), see the module docstring"""
    collision: bool = False
    """start with the collision wireframe shown"""
    layers: tuple[str, ...] | None = None
    """only the splats of these layers (names or kinds, ``World.select_layers``)"""

    def __post_init__(self) -> None:
        w, h = self.size
        if not (16 <= w <= 16384 and 16 <= h <= 16384):
            raise InputError(f"--size must be between 16x16 and 16384x16384, got {w}x{h}")
        if self.fov_deg is not None and not (10.0 < self.fov_deg < 170.0):
            raise InputError(f"--fov must be in (10, 170) degrees, got {self.fov_deg}")
        if self.stereo is not None and self.stereo not in STEREO_MODES:
            raise InputError(f"--stereo must be one of {', '.join(STEREO_MODES)}")
        if self.frames is not None and self.frames < 1:
            raise InputError(f"--frames must be at least 1, got {self.frames}")
        if self.speed is not None and not (0 < self.speed < 1000):
            raise InputError(f"--speed must be a positive number of m/s, got {self.speed}")
        if self.screenshot is not None:
            out = Path(self.screenshot)
            if out.suffix.lower() != ".png":
                raise OutputError(f"{out}: the screenshot must be a .png file")
            parent = out.parent if str(out.parent) else Path(".")
            if not parent.is_dir():
                raise OutputError(f"{parent}: output folder does not exist")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise OutputError(f"{parent}: output folder is not writable")


# ----------------------------------------------------------------------------- scripted input


@dataclass(frozen=True)
class ScriptFrame:
    hold: frozenset[str] = frozenset()
    press: tuple[str, ...] = ()
    mouse: tuple[float, float] = (0.0, 0.0)
    resize: tuple[int, int] | None = None


@dataclass(frozen=True)
class InputScript:
    """Per-frame scripted input (a testing aid); frames past the end hold nothing."""

    frames: list[ScriptFrame] = field(default_factory=list)
    dt: float = 1.0 / 60.0

    def at(self, i: int) -> ScriptFrame:
        return self.frames[i] if i < len(self.frames) else ScriptFrame()

    @classmethod
    def load(cls, path: str | Path, key_names: set[str]) -> InputScript:
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            raise InputError(f"{path}: cannot read the input script ({e.strerror})") from None
        except (UnicodeDecodeError, json.JSONDecodeError) as e:
            raise InputError(f"{path}: the input script is not JSON ({e})") from None
        return cls.from_json(data, key_names, str(path))

    @classmethod
    def from_json(cls, data, key_names: set[str], where: str = "script") -> InputScript:
        dt = 1.0 / 60.0
        if isinstance(data, dict):
            dt = data.get("dt", dt)
            data = data.get("steps")
        if not isinstance(data, list):
            raise InputError(f"{where}: expected a list of steps")
        if not (isinstance(dt, int | float) and 0 < dt <= 1):
            raise InputError(f"{where}: dt must be in (0, 1] seconds, got {dt!r}")

        def keys(step, name) -> list[str]:
            ks = step.get(name, [])
            if not isinstance(ks, list) or not all(isinstance(k, str) for k in ks):
                raise InputError(f"{where}: {name!r} must be a list of key names")
            bad = [k for k in ks if k.upper() not in key_names]
            if bad:
                raise InputError(f"{where}: unknown key {bad[0]!r} (GLFW names: W, SPACE, ...)")
            return [k.upper() for k in ks]

        frames: list[ScriptFrame] = []
        for step in data:
            if not isinstance(step, dict):
                raise InputError(f"{where}: each step must be an object")
            n = step.get("frames", 1)
            if not (isinstance(n, int) and n >= 1):
                raise InputError(f"{where}: 'frames' must be a positive integer, got {n!r}")
            mouse = step.get("mouse", [0, 0])
            if not (
                isinstance(mouse, list)
                and len(mouse) == 2
                and all(isinstance(m, int | float) and math.isfinite(m) for m in mouse)
            ):
                raise InputError(f"{where}: 'mouse' must be [dx, dy], got {mouse!r}")
            resize = step.get("resize")
            if resize is not None and not (
                isinstance(resize, list)
                and len(resize) == 2
                and all(isinstance(v, int) and 16 <= v <= 16384 for v in resize)
            ):
                raise InputError(f"{where}: 'resize' must be [width, height], got {resize!r}")
            hold, press = frozenset(keys(step, "hold")), tuple(keys(step, "press"))
            for k in range(n):
                first = k == 0
                frames.append(
                    ScriptFrame(
                        hold,
                        press if first else (),
                        tuple(mouse),
                        tuple(resize) if first and resize else None,
                    )
                )
        return cls(frames, float(dt))


# ----------------------------------------------------------------------------- GL helpers


def projection_from_intrinsics(K: Intrinsics, near: float, far: float) -> np.ndarray:
    """[4, 4] OpenGL clip-from-camera for OpenCV camera axes (x right, y down, z forward).

    Pixel centres at integer coordinates: u = -0.5 is the left edge of the viewport.
    """
    W, H = K.width, K.height
    P = np.zeros((4, 4))
    P[0, 0] = 2.0 * K.fx / W
    P[0, 2] = 2.0 * (K.cx + 0.5) / W - 1.0
    P[1, 1] = -2.0 * K.fy / H
    P[1, 2] = 1.0 - 2.0 * (K.cy + 0.5) / H
    P[2, 2] = (far + near) / (far - near)
    P[2, 3] = -2.0 * far * near / (far - near)
    P[3, 2] = 1.0
    return P


_LINES_VS = """
#version 330
uniform mat4 mvp;
in vec3 position;
void main() { gl_Position = mvp * vec4(position, 1.0); }
"""
_LINES_FS = """
#version 330
uniform vec4 color;
out vec4 frag;
void main() { frag = color; }
"""


class Wireframe:
    """The collision mesh's edges as GL lines, drawn over the splats (no depth test)."""

    def __init__(self, ctx, tris_source: np.ndarray):  # [N, 3, 3] in source-camera axes
        self.ctx = ctx
        t = tris_source
        edges = np.concatenate([t[:, [0, 1]], t[:, [1, 2]], t[:, [2, 0]]])  # [3N, 2, 3]
        self.prog = ctx.program(vertex_shader=_LINES_VS, fragment_shader=_LINES_FS)
        self.vbo = ctx.buffer(edges.reshape(-1, 3).astype("f4").tobytes())
        self.vao = ctx.vertex_array(self.prog, [(self.vbo, "3f", "position")])
        self.prog["color"].value = (0.1, 1.0, 0.3, 0.6)

    def draw(self, camera: Camera, fbo, viewport: tuple[int, int, int, int]) -> None:
        import moderngl

        mvp = projection_from_intrinsics(camera.intrinsics, 0.05, 500.0) @ camera.viewmat
        self.prog["mvp"].write(mvp.T.astype("f4").tobytes())
        fbo.use()
        fbo.viewport = viewport
        self.ctx.disable(moderngl.DEPTH_TEST)
        self.ctx.enable(moderngl.BLEND)
        self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
        self.vao.render(moderngl.LINES)

    def release(self) -> None:
        for o in (self.vao, self.vbo, self.prog):
            o.release()


# ----------------------------------------------------------------------------- the window


@dataclass
class ViewerResult:
    frames: int
    seconds: float
    fps: float
    splats: int
    framebuffer: tuple[int, int]
    feet: list[float]
    pose_T: list[float]
    yaw_deg: float
    pitch_deg: float
    fly: bool
    screenshot: str | None
    gl_error: str

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


RendererFactory = Callable[..., object]


def init_glfw() -> tuple[object, list[str]]:
    """Initialise GLFW (idempotent): (the glfw module, the list its error callback appends
    to), or raise BackendError saying why not (no display, ...)."""
    try:
        import glfw
    except ImportError:
        raise BackendError(
            "the viewer needs moderngl and glfw: pip install 'worldgen[viewer]'"
        ) from None
    errors: list[str] = []

    def on_error(code: int, description: bytes) -> None:
        errors.append(description.decode(errors="replace") if description else f"error {code}")

    glfw.set_error_callback(on_error)
    if not glfw.init():
        reason = errors[-1] if errors else "unknown reason"
        raise BackendError(
            f"cannot open a window ({reason}); use `worldgen render` for images without one"
        )
    return glfw, errors


def _default_renderer(ctx, splats):
    try:
        from .splat_renderer import SplatRenderer
    except ImportError as e:
        raise BackendError(f"the GL splat renderer is not available ({e})") from None
    return SplatRenderer(ctx, splats, sort="auto", sync=False)


class Viewer:
    """A GLFW window wired to a :class:`Controller` and a splat renderer.

    ``make_renderer(ctx, splats)`` returns an object with ``render(camera, *, fbo, viewport,
    background)``; the default is :class:`renderer.splat_renderer.SplatRenderer`.
    """

    def __init__(
        self,
        world,
        options: ViewerOptions | None = None,
        *,
        make_renderer: RendererFactory = _default_renderer,
    ):
        self.world = world
        self.opt = options or ViewerOptions()
        try:
            import glfw
            import moderngl
        except ImportError:
            raise BackendError(
                "the viewer needs moderngl and glfw: pip install 'worldgen[viewer]'"
            ) from None
        self.glfw, self.mgl = glfw, moderngl
        self.key_names = {n[4:] for n in dir(glfw) if n.startswith("KEY_")}
        self.script = InputScript.load(self.opt.script, self.key_names) if self.opt.script else None
        init_glfw()  # no display: say so before loading the splats
        cfg = ControllerConfig()
        if self.opt.speed is not None:
            ratio = cfg.run_speed / cfg.walk_speed
            cfg = ControllerConfig(walk_speed=self.opt.speed, run_speed=self.opt.speed * ratio)
        self.controller = Controller.from_world(world, cfg, fly=self.opt.fly)
        self.M = world.world_from_camera
        self.fov = self.opt.fov_deg or world.intrinsics.hfov_deg
        self.splats = world.splats
        self.make_renderer = make_renderer
        self.held: set[int] = set()
        self.mouse = np.zeros(2)
        self._last_cursor: tuple[float, float] | None = None
        self.captured = False
        self.show_collision = self.opt.collision
        self.window = None

    # -- input ------------------------------------------------------------------------------

    def _key(self, name: str) -> int:
        return getattr(self.glfw, "KEY_" + name)

    def on_key(self, key: int, action: int) -> None:
        """Key events, from GLFW or a script: toggles on press, held keys tracked."""
        glfw = self.glfw
        if action == glfw.RELEASE:
            self.held.discard(key)
            return
        if action != glfw.PRESS:
            return
        self.held.add(key)
        if key == glfw.KEY_ESCAPE:
            if self.captured:
                self.set_captured(False)
            else:
                glfw.set_window_should_close(self.window, True)
        elif key == glfw.KEY_F:
            self.controller.toggle_fly()
        elif key == glfw.KEY_R:
            self.controller.reset()
        elif key == glfw.KEY_C:
            self.show_collision = not self.show_collision

    def set_captured(self, on: bool) -> None:
        glfw = self.glfw
        glfw.set_input_mode(
            self.window, glfw.CURSOR, glfw.CURSOR_DISABLED if on else glfw.CURSOR_NORMAL
        )
        if on and glfw.raw_mouse_motion_supported():
            glfw.set_input_mode(self.window, glfw.RAW_MOUSE_MOTION, True)
        self.captured = on
        self._last_cursor = None

    def _on_cursor(self, _win, x: float, y: float) -> None:
        if self.captured and self._last_cursor is not None:
            self.mouse += (x - self._last_cursor[0], y - self._last_cursor[1])
        self._last_cursor = (x, y)

    def _on_mouse_button(self, _win, button, action, _mods) -> None:
        if action == self.glfw.PRESS and not self.captured:
            self.set_captured(True)

    def control_input(self, held: set[int]) -> ControlInput:
        k = self._key

        def down(*names: str) -> bool:
            return any(k(n) in held for n in names)

        fly = self.controller.fly
        return ControlInput(
            forward=float(down("W", "UP")) - float(down("S", "DOWN")),
            right=float(down("D", "RIGHT")) - float(down("A", "LEFT")),
            up=(float(down("E", "SPACE")) - float(down("Q", "LEFT_CONTROL", "RIGHT_CONTROL")))
            if fly
            else 0.0,
            run=down("LEFT_SHIFT", "RIGHT_SHIFT"),
            jump=down("SPACE") and not fly,
        )

    # -- window -----------------------------------------------------------------------------

    def open(self) -> None:
        glfw, errors = init_glfw()
        glfw.window_hint(glfw.CONTEXT_VERSION_MAJOR, 3)
        glfw.window_hint(glfw.CONTEXT_VERSION_MINOR, 3)
        glfw.window_hint(glfw.OPENGL_PROFILE, glfw.OPENGL_CORE_PROFILE)
        glfw.window_hint(glfw.OPENGL_FORWARD_COMPAT, True)
        glfw.window_hint(glfw.SCALE_TO_MONITOR, True)
        w, h = self.opt.size
        self.window = glfw.create_window(w, h, self._title(0.0), None, None)
        if not self.window:
            glfw.terminate()
            raise BackendError(
                f"cannot create an OpenGL 3.3 core window ({errors[-1] if errors else 'no reason'})"
            )
        glfw.make_context_current(self.window)
        glfw.swap_interval(1 if self.opt.vsync else 0)
        self.ctx = self.mgl.create_context(require=330)
        glfw.set_key_callback(
            self.window, lambda _w, key, _sc, action, _m: self.on_key(key, action)
        )
        glfw.set_cursor_pos_callback(self.window, self._on_cursor)
        glfw.set_mouse_button_callback(self.window, self._on_mouse_button)
        self.set_captured(True)
        self.renderer = self.make_renderer(self.ctx, self.splats)
        M = self.M
        tris_src = (self.controller.collider.tris - M[:3, 3]) @ M[:3, :3]  # world -> source
        self.wireframe = Wireframe(self.ctx, tris_src)
        self._targets: dict = {}

    def close(self) -> None:
        for name in ("renderer", "wireframe"):
            rel = getattr(getattr(self, name, None), "release", None)
            if rel is not None:
                rel()
        for fbo, tex in getattr(self, "_targets", {}).values():
            fbo.release()
            tex.release()
        if self.window is not None:
            self.glfw.destroy_window(self.window)
            self.window = None
        self.glfw.terminate()

    def _title(self, fps: float) -> str:
        mode = "fly" if self.controller.fly else "walk"
        return (
            f"worldgen — {self.world.path.name} — {len(self.splats):,} splats — "
            f"{fps:.0f} fps — {mode}"
        )

    # -- drawing ----------------------------------------------------------------------------

    def cameras(self, fb_w: int, fb_h: int) -> list[tuple[Camera, tuple[int, int, int, int]]]:
        """The camera(s) to draw this frame and their viewports in the framebuffer."""
        pose = self.controller.camera_pose_in_source(self.M, interpolate=True)
        if not self.opt.stereo:
            K = Intrinsics.from_hfov(self.fov, fb_w, fb_h)
            return [(Camera(K, pose), (0, 0, fb_w, fb_h))]
        half = max(fb_w // 2, 1)
        K = Intrinsics.from_hfov(self.fov, half, fb_h)
        right = pose.R[:, 0] * (self.opt.ipd / 2.0)
        left_eye = Pose(pose.R, pose.T - right)
        right_eye = Pose(pose.R, pose.T + right)
        return [
            (Camera(K, left_eye), (0, 0, half, fb_h)),
            (Camera(K, right_eye), (half, 0, half, fb_h)),
        ]

    def _target(self, key, w: int, h: int):
        """An offscreen (framebuffer, colour texture) of w x h, kept between frames."""
        fbo_tex = self._targets.get(key)
        if fbo_tex is not None and fbo_tex[1].size == (w, h):
            return fbo_tex
        if fbo_tex is not None:
            fbo_tex[0].release()
            fbo_tex[1].release()
        tex = self.ctx.texture((w, h), 4)
        fbo = self.ctx.framebuffer(color_attachments=[tex])
        self._targets[key] = (fbo, tex)
        return fbo, tex

    def draw(self, fb_w: int, fb_h: int, target=None) -> object:
        """Draw a frame into ``target`` (default: the window), returns the renderer's stats."""
        fbo = target if target is not None else self.ctx.screen
        fbo.use()
        fbo.viewport = (0, 0, fb_w, fb_h)
        if self.opt.stereo:  # the halves' clears leave an odd column: clear it all first
            fbo.clear(*BACKGROUND, 0.0)
        stats = None
        for cam, vp in self.cameras(fb_w, fb_h):
            stats = self.renderer.render(cam, fbo=fbo, viewport=vp, background=BACKGROUND)
            if self.show_collision:
                self.wireframe.draw(cam, fbo, vp)
        fbo.viewport = (0, 0, fb_w, fb_h)
        return stats

    def screenshot(self, fb_w: int, fb_h: int) -> np.ndarray:  # [H, W, 3] uint8
        """The current frame drawn offscreen and read back (reading the window's own buffer
        is not portable: the default framebuffer has no colour attachment 0)."""
        fbo, _ = self._target("shot", fb_w, fb_h)
        self.draw(fb_w, fb_h, target=fbo)
        data = fbo.read(viewport=(0, 0, fb_w, fb_h), components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(fb_h, fb_w, 3)[::-1].copy()

    # -- main loop --------------------------------------------------------------------------

    def run(self) -> ViewerResult:
        try:
            self.open()
            return self._loop()
        finally:
            self.close()

    def _loop(self) -> ViewerResult:
        glfw, opt = self.glfw, self.opt
        n_frames = opt.frames
        if n_frames is None and self.script is not None:
            n_frames = len(self.script.frames)
        last_image = None
        t_start = time.perf_counter()
        t_prev = t_start
        fps, fps_t, fps_n = 0.0, t_start, 0
        frame = 0
        fb = (0, 0)
        while not glfw.window_should_close(self.window):
            glfw.poll_events()
            now = time.perf_counter()
            dt = now - t_prev
            t_prev = now
            held = set(self.held)
            if self.script is not None:
                step = self.script.at(frame)
                dt = self.script.dt
                for name in step.press:
                    self.on_key(self._key(name), glfw.PRESS)
                    self.on_key(self._key(name), glfw.RELEASE)
                held |= {self._key(n) for n in step.hold}
                self.mouse += step.mouse
                if step.resize is not None:
                    glfw.set_window_size(self.window, *step.resize)
                    glfw.poll_events()
            if self.captured or self.script is not None:
                dx, dy = self.mouse
                self.controller.look(dx * MOUSE_DEG_PER_PIXEL, -dy * MOUSE_DEG_PER_PIXEL)
            self.mouse[:] = 0.0
            self.controller.update(dt, self.control_input(held))
            fb = glfw.get_framebuffer_size(self.window)
            frame += 1
            last = n_frames is not None and frame >= n_frames
            if fb[0] > 0 and fb[1] > 0:  # minimised: nothing to draw
                self.draw(*fb)
                if opt.screenshot is not None and last:
                    last_image = self.screenshot(*fb)
                glfw.swap_buffers(self.window)
            fps_n += 1
            if now - fps_t >= 0.5:
                fps = fps_n / (now - fps_t)
                fps_t, fps_n = now, 0
                glfw.set_window_title(self.window, self._title(fps))
            if last:
                break
        if opt.screenshot is not None and last_image is None and fb[0] > 0:
            # closed by the user: draw the last frame once more
            last_image = self.screenshot(*fb)
        seconds = time.perf_counter() - t_start
        gl_error = self.ctx.error
        shot = None
        if opt.screenshot is not None and last_image is not None:
            shot = str(_save_png(last_image, Path(opt.screenshot)))
        c = self.controller
        pose = c.camera_pose_in_source(self.M)
        return ViewerResult(
            frames=frame,
            seconds=round(seconds, 4),
            fps=round(frame / seconds, 2) if seconds > 0 else 0.0,
            splats=len(self.splats),
            framebuffer=(int(fb[0]), int(fb[1])),
            feet=[round(float(v), 6) for v in c.position],
            pose_T=[round(float(v), 6) for v in pose.T],
            yaw_deg=round(math.degrees(c.yaw), 4),
            pitch_deg=round(math.degrees(c.pitch), 4),
            fly=c.fly,
            screenshot=shot,
            gl_error=gl_error,
        )


def _save_png(image: np.ndarray, out: Path) -> Path:
    from PIL import Image

    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}.png")
    try:
        Image.fromarray(image).save(tmp)
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out


def view(world_path: str | Path, options: ViewerOptions, **kw) -> ViewerResult:
    """Open ``world_path`` in a window; returns when it is closed or ``frames`` have run."""
    from worldgen.world import load_world

    world = load_world(world_path)
    if options.layers:
        world = world.select_layers(options.layers)
    return Viewer(world, options, **kw).run()
