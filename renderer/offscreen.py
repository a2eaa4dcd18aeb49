"""Headless rendering: an EGL context (no window, no display) around ``SplatRenderer``.

``render_gl(world, pose, intrinsics)`` renders one view of a world; ``OffscreenRenderer`` keeps a
context, the uploaded splats and the render targets for many views (paths, panoramas).
``FrameSource`` picks GL or the CPU rasterizer behind one call, for the CLI.

Camera path files (``worldgen render --path poses.json``): JSON, either a list of poses or an
object ``{"poses": [...], "fps": 30}``; each pose is a list of 3 to 6 numbers ``[TX, TY, TZ,
YAW, PITCH, ROLL]`` in the CLI pose convention (metres in the source camera's axes: x right,
y down, z forward; degrees; yaw > 0 turns right, pitch > 0 looks up; missing angles are 0)::

    {"fps": 30, "poses": [[0, 0, 0], [0, 0, 0.05, 2], [0, 0, 0.1, 4, 0, 0]]}

``--path default`` walks in from the spawn point and looks around (``default_path``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from worldgen.camera import Camera, Intrinsics, Pose, rot_y
from worldgen.errors import BackendError, InputError
from worldgen.splats import Splats


def create_context(require: int = 330):
    """A standalone (windowless) moderngl context on EGL; raises BackendError if none."""
    try:
        import moderngl
    except ImportError:
        raise BackendError(
            "the GL backend needs moderngl: pip install 'worldgen[viewer]'"
        ) from None
    try:
        ctx = moderngl.create_standalone_context(backend="egl", require=require)
    except Exception as e:  # moderngl/glcontext raise plain Exceptions
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise BackendError(
            f"no headless OpenGL {require // 100}.{require % 100 // 10} context (EGL): {msg}"
        ) from None
    return ctx


@dataclass
class Frame:
    rgb: np.ndarray  # [H, W, 3] float32
    alpha: np.ndarray  # [H, W] float32, 1 - final transmittance
    depth: np.ndarray  # [H, W] float32, expected camera z, 0 where alpha == 0


class OffscreenRenderer:
    """GL renderer of one splat set on its own EGL context, reading back float RGBA32F images.

    ``ctx``: an existing context to use instead of a new EGL one (released by ``close`` only
    if ``own_ctx``).
    """

    def __init__(
        self,
        splats: Splats,
        *,
        sort: str = "auto",
        sh_degree: int | None = None,
        ctx=None,
        own_ctx: bool | None = None,
    ):
        from .splat_renderer import SplatRenderer

        self._own_ctx = ctx is None if own_ctx is None else own_ctx
        self.ctx = ctx if ctx is not None else create_context()
        self._activate()
        self.renderer = SplatRenderer(self.ctx, splats, sort=sort, sh_degree=sh_degree)
        self._fbo = None
        self._size = (0, 0)

    def _activate(self) -> None:
        # several standalone contexts may live in one thread (tests, a CLI inside a program):
        # GL calls go to the current one, so make ours current first
        self.ctx.__enter__()

    def _release_target(self) -> None:
        if self._fbo is None:
            return
        # moderngl rebinds the bound framebuffer around later framebuffer creations: never
        # leave a released one bound (GL_INVALID_OPERATION otherwise)
        self.ctx.detect_framebuffer(0).use()
        for a in self._fbo.color_attachments:
            a.release()
        self._fbo.release()
        self._fbo = None
        self._size = (0, 0)

    def _target(self, w: int, h: int):
        """An RGBA32F (colour, depth sums) framebuffer of at least w x h (grown, never shrunk,
        so views of varying sizes reuse it)."""
        cw, ch = self._size
        if self._fbo is None or w > cw or h > ch:
            size = (max(w, cw), max(h, ch))
            self._release_target()
            tex = [self.ctx.texture(size, 4, dtype="f4") for _ in range(2)]
            self._fbo = self.ctx.framebuffer(color_attachments=tex)
            self._size = size
        return self._fbo

    def render(self, camera: Camera, background=(0.0, 0.0, 0.0)) -> Frame:
        K = camera.intrinsics
        W, H = K.width, K.height
        self._activate()
        fbo = self._target(W, H)
        vp = (0, 0, W, H)
        # every attachment is cleared to the same colour: clear to 0 (the depth sums need it)
        # and add the background as the rasterizer does, rgb + T * background
        self.renderer.render(camera, fbo=fbo, background=(0.0, 0.0, 0.0), viewport=vp)
        col = fbo.read(viewport=vp, components=4, dtype="f4", attachment=0)
        dep = fbo.read(viewport=vp, components=4, dtype="f4", attachment=1)
        col = np.frombuffer(col, np.float32).reshape(H, W, 4)[::-1]  # GL rows go bottom-up
        dep = np.frombuffer(dep, np.float32).reshape(H, W, 4)[::-1]
        alpha = col[..., 3].copy()
        bg = np.asarray(background, np.float32).reshape(1, 1, 3)
        rgb = col[..., :3] + (1.0 - alpha)[..., None] * bg
        depth = np.where(alpha > 0, dep[..., 0] / np.maximum(alpha, 1e-30), 0.0)
        return Frame(rgb.astype(np.float32), alpha, depth.astype(np.float32))

    def close(self) -> None:
        self._activate()
        self._release_target()
        self.renderer.release()
        if self._own_ctx:
            self.ctx.release()

    def __enter__(self) -> OffscreenRenderer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def render_gl(
    world,
    pose: Pose | None = None,
    intrinsics: Intrinsics | None = None,
    *,
    background=None,
    sort: str = "auto",
    layers=None,
) -> tuple[np.ndarray, np.ndarray]:
    """Render ``world`` (a World, or Splats) from ``pose`` (source-camera axes, Conventions)
    with ``intrinsics`` (default: the world's source camera) on a headless EGL context;
    ``layers``: only those layers of a World (names or kinds, ``World.select_layers``).
    Returns ``(rgb [H, W, 3] float32, alpha [H, W] float32)``."""
    if layers is not None:
        if isinstance(world, Splats):
            raise InputError("render_gl: layers need a World (bare Splats have no layer names)")
        world = world.select_layers(layers)
    splats = world if isinstance(world, Splats) else world.splats
    if intrinsics is None:
        if isinstance(world, Splats):
            raise InputError("render_gl of bare Splats needs intrinsics")
        intrinsics = world.intrinsics
    cam = Camera(intrinsics, pose or Pose.identity())
    with OffscreenRenderer(splats, sort=sort) as r:
        f = r.render(cam, background=(0.0, 0.0, 0.0) if background is None else background)
    return f.rgb, f.alpha


class FrameSource:
    """One view at a time from the GL renderer ("gl") or the CPU rasterizer ("cpu").

    ``backend="auto"`` picks GL where a headless EGL context can be created; ``self.backend``
    and ``self.reason`` say which and why.
    """

    def __init__(self, splats: Splats, backend: str = "auto"):
        if backend not in ("auto", "gl", "cpu"):
            raise BackendError(f"unknown render backend {backend!r}; valid: auto, gl, cpu")
        self.splats = splats
        self._gl: OffscreenRenderer | None = None
        if backend == "cpu":
            self.backend, self.reason = "cpu", "requested"
            return
        try:
            ctx = create_context()
        except BackendError as e:
            if backend == "gl":
                raise BackendError(f"--backend gl: {e}") from None
            self.backend, self.reason = "cpu", f"no headless GL: {e}"
            return
        info = f"{ctx.info['GL_RENDERER']}, OpenGL {ctx.info['GL_VERSION']}"
        self.backend = "gl"
        self.reason = f"{'requested' if backend == 'gl' else 'EGL available'}: {info}"
        try:
            self._gl = OffscreenRenderer(splats, ctx=ctx, own_ctx=True)
        except BaseException:
            ctx.release()
            raise

    def render(self, camera: Camera, background=(0.0, 0.0, 0.0)) -> Frame:
        if self._gl is not None:
            return self._gl.render(camera, background)
        from worldgen.raster import rasterize

        K = camera.intrinsics
        out = rasterize(self.splats, camera, K.width, K.height, background=background)
        return Frame(out.rgb.numpy(), out.alpha.numpy(), out.depth.numpy())

    def close(self) -> None:
        if self._gl is not None:
            self._gl.close()
            self._gl = None

    def __enter__(self) -> FrameSource:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


# ----------------------------------------------------------------------------- camera paths


def read_path(path: str | Path) -> tuple[list[Pose], float | None]:
    """(poses, fps or None) from a camera path JSON file (format in the module docstring)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except FileNotFoundError:
        raise InputError(f"{p}: no such path file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InputError(f"{p}: not a readable JSON camera path ({e})") from None
    fps = None
    if isinstance(data, dict):
        fps = data.get("fps")
        if fps is not None and not (
            isinstance(fps, int | float) and not isinstance(fps, bool) and 0 < fps <= 240
        ):
            raise InputError(f"{p}: fps must be a number in (0, 240], got {fps!r}")
        data = data.get("poses")
    if not isinstance(data, list) or not data:
        raise InputError(f'{p}: expected a non-empty list of poses (or {{"poses": [...]}})')
    poses = []
    for i, v in enumerate(data):
        if (
            not isinstance(v, list)
            or not 3 <= len(v) <= 6
            or not all(isinstance(x, int | float) and not isinstance(x, bool) for x in v)
            or not all(math.isfinite(x) for x in v)
        ):
            raise InputError(
                f"{p}: pose {i} must be 3 to 6 finite numbers [TX,TY,TZ,YAW,PITCH,ROLL], got {v!r}"
            )
        poses.append(Pose.from_cli(*(float(x) for x in v)))
    return poses, (float(fps) if fps is not None else None)


def spawn_pose(world, yaw_deg: float = 0.0) -> Pose:
    """A level camera (world +Y up) at the spawn point's eye, turned ``yaw_deg`` from the spawn
    yaw, as a pose in the source camera's axes."""
    m = world.manifest["spawn"]
    M = world.world_from_camera
    Rwc, twc = M[:3, :3], M[:3, 3]
    eye_w = np.asarray(m["position"], np.float64) + np.array([0.0, m["eye_height"], 0.0])
    return Pose(Rwc.T @ level_rotation_world(m["yaw_deg"] + yaw_deg), Rwc.T @ (eye_w - twc))


def level_rotation_world(yaw_deg: float) -> np.ndarray:
    """[3, 3] columns = (right, down, forward) of a level camera in the world frame (+Y up;
    yaw 0 faces -Z, yaw > 0 turns right)."""
    a = math.radians(yaw_deg)
    right = np.array([math.cos(a), 0.0, math.sin(a)])
    down = np.array([0.0, -1.0, 0.0])
    fwd = np.array([math.sin(a), 0.0, -math.cos(a)])
    return np.stack([right, down, fwd], axis=1)


def default_path(world, n_frames: int = 120, walk_fraction: float = 0.4) -> list[Pose]:
    """ "Walk in and look around": from the spawn eye, walk level along the spawn yaw (ease
    in/out) for ``walk_fraction`` of the frames, then pan left and right (+-45 deg) and back.
    The walk length is a third of the median distance to the splats ahead, 0.3 to 3 m."""
    if n_frames < 2:
        raise InputError(f"a path needs at least 2 frames, got {n_frames}")
    start = spawn_pose(world)
    means = world.splats.means.detach().cpu().numpy().astype(np.float64)
    ahead = (means - start.T) @ start.R[:, 2]
    ahead = ahead[ahead > 0.1]
    dist = float(np.clip(np.median(ahead) / 3 if ahead.size else 1.0, 0.3, 3.0))
    n_walk = max(1, int(round(n_frames * walk_fraction)))
    poses = []
    for i in range(n_frames):
        if i < n_walk:
            s = i / max(n_walk - 1, 1)
            d = dist * (0.5 - 0.5 * math.cos(math.pi * s))
            yaw = 0.0
        else:
            s = (i - n_walk) / max(n_frames - n_walk - 1, 1)
            d = dist
            yaw = 45.0 * math.sin(2 * math.pi * s)
        T = start.T + d * start.R[:, 2]
        R = start.R @ rot_y(math.radians(yaw))
        poses.append(Pose(R, T))
    return poses


# ----------------------------------------------------------------------------- views and files


def render_view(
    source: FrameSource,
    camera: Camera,
    *,
    stereo: str | None = None,
    background=(0.0, 0.0, 0.0),
) -> np.ndarray:
    """[H, W, 3] float32 of one view; ``stereo="sbs"``: left and right eye side by side, each
    ``W // 2`` wide (``renderer.stereo.sbs_cameras``)."""
    if stereo is None:
        return source.render(camera, background).rgb
    if stereo != "sbs":
        raise InputError(f"unknown stereo mode {stereo!r}; valid: sbs")
    from .stereo import sbs_cameras, sbs_compose, sbs_eye_intrinsics

    eye = Camera(sbs_eye_intrinsics(camera.intrinsics), camera.pose)
    left, right = sbs_cameras(eye)
    return sbs_compose(source.render(left, background).rgb, source.render(right, background).rgb)


def render_ods(
    source,
    centre: Pose,
    width: int,
    *,
    strip_deg: float = 1.0,
    background=(0.0, 0.0, 0.0),
    progress=None,
) -> np.ndarray:
    """[width, width, 3] float32 omni-directional stereo panorama around ``centre`` (a pose in
    the splats' frame; its forward axis is longitude 0, its -y axis up): top-bottom
    equirectangular, left eye on top (``renderer.stereo.ods_plan``). ``source``: anything with
    ``render(camera, background) -> Frame`` (FrameSource, OffscreenRenderer).
    ``progress(done, total)`` is called after every view."""
    from .stereo import in_frame, ods_plan, sample_bilinear

    views = ods_plan(width, strip_deg=strip_deg)
    He = width // 2
    out = np.zeros((2, He, width, 3), np.float32)
    for k, v in enumerate(views):
        f = source.render(in_frame(v.camera, centre), background)
        out[0 if v.eye < 0 else 1, v.rows, v.cols] = sample_bilinear(f.rgb, v.u, v.v)
        if progress is not None:
            progress(k + 1, len(views))
    return out.reshape(2 * He, width, 3)


def output_kind(out: Path, *, many: bool) -> str:
    """ "png" (one image), "mp4" or "frames" (a folder of PNGs) for output path ``out``."""
    suffix = out.suffix.lower()
    if suffix == ".mp4":
        if not many:
            raise InputError(f"{out}: a video needs a camera path (--path)")
        return "mp4"
    if suffix == ".png":
        if many:
            raise InputError(f"{out}: --path writes a folder of frames or an .mp4, not one PNG")
        return "png"
    if many:
        return "frames"
    raise InputError(f"{out}: render output must be a .png file (or, with --path, a folder/.mp4)")


def to_uint8(rgb: np.ndarray) -> np.ndarray:
    return (np.clip(np.asarray(rgb, np.float32), 0, 1) * 255.0 + 0.5).astype(np.uint8)


def write_frames(frames, out: Path, kind: str, *, fps: float = 30.0) -> int:
    """Write an iterable of [H, W, 3] float images to ``out`` atomically (a temporary name,
    renamed when complete): "png" one image, "frames" ``out/frame_00000.png ...``, "mp4" H.264
    (yuv420p, odd sizes padded by one edge pixel). Returns (frames, (width, height))."""
    import os
    import shutil
    import tempfile

    from PIL import Image

    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    n = 0
    size = (0, 0)
    if kind == "png":
        tmp = parent / f".{out.name}.tmp-{os.getpid()}.png"
        try:
            for rgb in frames:
                Image.fromarray(to_uint8(rgb)).save(tmp, format="PNG")
                n += 1
                size = (rgb.shape[1], rgb.shape[0])
            os.replace(tmp, out)
        finally:
            tmp.unlink(missing_ok=True)
        return n, size
    if kind == "frames":
        tmpd = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        try:
            for rgb in frames:
                Image.fromarray(to_uint8(rgb)).save(tmpd / f"frame_{n:05d}.png", format="PNG")
                n += 1
                size = (rgb.shape[1], rgb.shape[0])
            os.chmod(tmpd, 0o755)
            if out.exists():
                shutil.rmtree(out)
            tmpd.rename(out)
        finally:
            shutil.rmtree(tmpd, ignore_errors=True)
        return n, size
    if kind == "mp4":
        import imageio_ffmpeg

        tmp = parent / f".{out.stem}.tmp-{os.getpid()}.mp4"
        writer = None
        try:
            for rgb in frames:
                img = to_uint8(rgb)
                h, w = img.shape[:2]
                img = np.pad(img, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge")
                if writer is None:
                    writer = imageio_ffmpeg.write_frames(
                        str(tmp),
                        (img.shape[1], img.shape[0]),
                        fps=fps,
                        codec="libx264",
                        pix_fmt_out="yuv420p",
                        macro_block_size=1,
                        ffmpeg_log_level="error",
                    )
                    writer.send(None)
                writer.send(np.ascontiguousarray(img))
                n += 1
                size = (img.shape[1], img.shape[0])
            if writer is not None:
                writer.close()
                writer = None
                os.replace(tmp, out)
        finally:
            if writer is not None:
                writer.close()
            tmp.unlink(missing_ok=True)
        return n, size
    raise ValueError(f"unknown output kind {kind!r}")


def check_output(out: Path, kind: str, force: bool) -> None:
    """Fail before rendering if ``out`` cannot be written (OutputError)."""
    import os
    import re

    from worldgen.errors import OutputError

    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputError(f"{out}: already exists (use --force to replace it)")
        if kind == "frames":
            if not out.is_dir() or out.is_symlink():
                raise OutputError(f"{out}: exists and is not a folder of frames")
            frame = re.compile(r"frame_\d{5,}\.png")
            stray = [p.name for p in out.iterdir() if not frame.fullmatch(p.name)]
            if stray:
                raise OutputError(
                    f"{out}: holds files other than frame_*.png ({stray[0]}); not replacing it"
                )
        elif out.is_dir():
            raise OutputError(f"{out}: is a folder")
    if not parent.is_dir():
        raise OutputError(f"{parent}: output folder does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: output folder is not writable")
