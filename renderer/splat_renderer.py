"""The GL splat renderer: splats in a GPU texture, one instanced quad per splat, sorted blending.

Needs OpenGL 3.3 core for drawing (macOS stops at 4.1, so the CPU sort path uses no compute
shaders); the GPU sort needs 4.3. Conventions are ``worldgen/raster/common.py``'s, so the image
equals ``worldgen.raster.rasterize`` of the same splats and camera up to float32 rounding, with
one documented difference: blending cannot stop a pixel when its transmittance would fall to
1e-4 (the rasterizer's ``T_MIN``), so behind such a pixel GL keeps compositing; the difference
is at most that last transmittance times the colours behind it.

* ``shaders/splat.vert`` projects each splat once per frame, in draw order, into a transform
  feedback buffer (EWA with the 0.3 px low-pass, the ellipse of alpha >= 1/255, SH degree 0-3 per
  view direction, culling); ``shaders/quad.vert`` draws one instanced quad per projected splat,
  spanning that ellipse's axes; ``shaders/splat.frag`` evaluates the Gaussian at the pixel
  centre, drops alpha < 1/255, clamps at 0.999 and writes premultiplied colour. Splats are drawn
  back to front with ``(ONE, ONE_MINUS_SRC_ALPHA)`` blending, the exact reverse of the
  rasterizer's stable front-to-back order (``renderer.sort``).
* Splat data is uploaded once; each frame uploads only the draw order (CPU sort) or nothing
  (GPU sort).
* A framebuffer cleared to ``(background, 0)`` ends as ``rgb = sum w c + T background``,
  ``alpha = 1 - T``; a second colour attachment, if present, gets ``(sum w z, 0, 0, 1 - T)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from worldgen.errors import BackendError
from worldgen.raster.common import quat_to_rotmat
from worldgen.splats import Splats

from .sort import CpuSorter, GpuSorter, SortResult, shader_source, splat_radius

_SOFTWARE_GL = ("llvmpipe", "softpipe", "swiftshader", "software", "lavapipe", "basic render")

#: bytes of one projected splat (transform feedback record of splat.vert)
RECORD_BYTES = 52
#: near / far planes of the camera z of splat centres (worldgen.raster defaults)
NEAR = 0.01
FAR = 1e10


@dataclass
class FrameStats:
    """Milliseconds spent on one frame's sort, order upload and draw (draw includes glFinish
    when the renderer syncs), the splats drawn and the sorter used."""

    sort_ms: float
    upload_ms: float
    draw_ms: float
    drawn: int = 0
    sorter: str = ""


def is_software_gl(ctx) -> bool:
    """True for CPU implementations of OpenGL (Mesa llvmpipe/softpipe, SwiftShader, ...)."""
    r = str(ctx.info.get("GL_RENDERER", "")).lower()
    return any(s in r for s in _SOFTWARE_GL)


def choose_sort(ctx, sort: str) -> tuple[str, str]:
    """("cpu" | "gpu", why) for ``sort`` = "auto" | "cpu" | "gpu" on this context."""
    if sort not in ("auto", "cpu", "gpu"):
        raise BackendError(f"unknown sort {sort!r}; valid: auto, cpu, gpu")
    has_compute = ctx.version_code >= 430
    if sort == "gpu":
        if not has_compute:
            raise BackendError(
                f"sort='gpu' needs OpenGL 4.3 compute shaders; this context is "
                f"{ctx.version_code // 100}.{ctx.version_code % 100 // 10}"
            )
        return "gpu", "requested"
    if sort == "cpu":
        return "cpu", "requested"
    if not has_compute:
        return "cpu", "no compute shaders (OpenGL < 4.3)"
    if is_software_gl(ctx):
        return "cpu", f"software GL ({ctx.info.get('GL_RENDERER')}): the CPU radix sort is faster"
    return "gpu", "compute shaders on a hardware GPU"


def pack_splats(splats: Splats, sh_degree: int) -> np.ndarray:
    """``[N, STRIDE, 4]`` float32 texels per splat (layout in ``shaders/splat.vert``)."""
    n = len(splats)
    k = (sh_degree + 1) ** 2
    n_sh = (3 * k + 3) // 4
    stride = 3 + n_sh
    out = np.zeros((n, stride, 4), np.float32)
    if n == 0:
        return out
    means = splats.means.detach().cpu().numpy().astype(np.float64)
    R = quat_to_rotmat(splats.quats.detach().cpu().to(torch.float64)).numpy()
    M = R * np.exp(splats.log_scales.detach().cpu().numpy().astype(np.float64))[:, None, :]
    cov = M @ M.transpose(0, 2, 1)
    logit = splats.logit_opacities.detach().cpu().numpy().astype(np.float64)
    out[:, 0, :3] = means
    out[:, 0, 3] = 1.0 / (1.0 + np.exp(-logit))
    out[:, 1] = np.stack([cov[:, 0, 0], cov[:, 0, 1], cov[:, 0, 2], cov[:, 1, 1]], 1)
    out[:, 2, 0] = cov[:, 1, 2]
    out[:, 2, 1] = cov[:, 2, 2]
    sh = splats.sh.detach().cpu().numpy()[:, :k, :].reshape(n, 3 * k)
    flat = np.zeros((n, 4 * n_sh), np.float32)
    flat[:, : 3 * k] = sh
    out[:, 3:] = flat.reshape(n, n_sh, 4)
    return out


def _texture_width_log2(texels: int, max_size: int) -> int:
    lw = 12  # 4096 wide
    while lw < 15 and (1 << lw) < max_size and -(-texels // (1 << lw)) > max_size:
        lw += 1
    if (1 << lw) > max_size:
        lw = int(math.log2(max_size))
    if -(-texels // (1 << lw)) > max_size:
        raise BackendError(
            f"{texels:,} texels of splat data do not fit a {max_size}x{max_size} texture"
        )
    return lw


class SplatRenderer:
    """Draws ``splats`` with a moderngl context ``ctx`` (OpenGL >= 3.3 core).

    ``sort``: "auto" (GPU sort on a hardware GPU with compute shaders, else CPU), "cpu" or "gpu".
    ``sh_degree``: None uses all of the splats' SH coefficients, lower uses fewer.
    ``cull``: the CPU sorter drops splats that cannot reach the image (conservatively), so they
    are neither sorted nor drawn. ``sync``: ``ctx.finish()`` after sorting and drawing, so the
    FrameStats times are real (a viewer that measures nothing may pass False).
    """

    def __init__(
        self,
        ctx,
        splats: Splats,
        *,
        sort: str = "auto",
        sh_degree: int | None = None,
        cull: bool = True,
        sync: bool = True,
        near: float = NEAR,
        far: float = FAR,
    ):
        if ctx.version_code < 330:
            raise BackendError(f"the splat renderer needs OpenGL 3.3, have {ctx.version_code}")
        deg = splats.sh_degree if sh_degree is None else int(sh_degree)
        if not 0 <= deg <= splats.sh_degree:
            raise BackendError(f"sh_degree must be in [0, {splats.sh_degree}], got {deg}")
        self.ctx = ctx
        self.n = len(splats)
        self.sh_degree = deg
        self.sync = sync
        self.near, self.far = float(near), float(far)
        self.sort_mode, self.sort_reason = choose_sort(ctx, sort)

        packed = pack_splats(splats, deg)
        self.stride = packed.shape[1]
        texels = max(1, self.n * self.stride)
        max_size = int(ctx.info.get("GL_MAX_TEXTURE_SIZE", 4096))
        self.tex_w_log2 = _texture_width_log2(texels, max_size)
        tw = 1 << self.tex_w_log2
        th = -(-texels // tw)
        flat = np.zeros((th * tw, 4), np.float32)
        flat[: self.n * self.stride] = packed.reshape(-1, 4)
        self.data = ctx.texture((tw, th), 4, data=flat.tobytes(), dtype="f4")
        self.data.filter = (_gl().NEAREST, _gl().NEAREST)
        self.data.repeat_x = self.data.repeat_y = False

        defines = {"SH_DEGREE": deg, "STRIDE": self.stride, "TEX_W_LOG2": self.tex_w_log2}
        # pass 1: project every splat once, in draw order, into a transform feedback buffer
        self.project = ctx.program(
            vertex_shader=shader_source("splat.vert", defines),
            varyings=["p_mean_axis", "p_conic_minor", "p_color", "p_z"],
            varyings_capture_mode="interleaved",
        )
        self.project["u_data"].value = 0
        # pass 2: one instanced quad per projected splat
        self.prog = ctx.program(
            vertex_shader=shader_source("quad.vert"),
            fragment_shader=shader_source("splat.frag"),
        )
        self.records = ctx.buffer(reserve=max(1, self.n) * RECORD_BYTES)
        self.quad_vao = ctx.vertex_array(
            self.prog,
            [(self.records, "4f 4f 4f 1f/i", "a_mean_axis", "a_conic_minor", "a_color", "a_z")],
        )
        self._means = packed[:, 0, :3].copy() if self.n else np.zeros((0, 3), np.float32)
        self.cpu_sorter: CpuSorter | None = None
        self.gpu_sorter: GpuSorter | None = None
        if self.sort_mode == "cpu":
            radius = splat_radius(
                splats.log_scales.detach().cpu().numpy(), packed[:, 0, 3].astype(np.float64)
            )
            self.cpu_sorter = CpuSorter(self._means, radius, cull=cull)
            self.order = ctx.buffer(reserve=max(4, self.n * 4), dynamic=True)
        else:
            self.gpu_sorter = GpuSorter(
                ctx, max(self.n, 1), tex_width_log2=self.tex_w_log2, stride=self.stride
            )
            self.order = self.gpu_sorter.values
        self.project_vao = ctx.vertex_array(self.project, [(self.order, "1u4", "in_index")])
        self._last_key: bytes | None = None
        self._last_count = 0
        self._pending: tuple[bytes, object] | None = None

    # ------------------------------------------------------------------ sorting

    def _view_key(self, camera) -> bytes:
        K = camera.intrinsics
        head = np.array([K.fx, K.fy, K.cx, K.cy, K.width, K.height], np.float64)
        return head.tobytes() + np.asarray(camera.viewmat, np.float64).tobytes()

    def prefetch(self, camera) -> None:
        """Start sorting for a view you will render next (CPU sorter, worker thread)."""
        if self.cpu_sorter is None or self.n == 0:
            return
        key = self._view_key(camera)
        if self._pending is None or self._pending[0] != key:
            self._pending = (key, self.cpu_sorter.submit(camera, self.near, self.far))

    def _set_uniforms(self, camera, viewport) -> None:
        K = camera.intrinsics
        V = np.asarray(camera.viewmat, np.float64)
        R, t = V[:3, :3], V[:3, 3]
        W, H = K.width, K.height
        tfx, tfy = 0.5 * W / K.fx, 0.5 * H / K.fy
        cxe, cye = K.cx + 0.5, K.cy + 0.5  # gsplat's principal point (common.project)
        values = {
            "u_trans": tuple(float(v) for v in t),
            "u_cam_pos": tuple(float(v) for v in -R.T @ t),
            "u_intr": (K.fx, K.fy, K.cx, K.cy),
            "u_size": (float(W), float(H)),
            "u_lim": (
                cxe / K.fx + 0.3 * tfx,
                (W - cxe) / K.fx + 0.3 * tfx,
                cye / K.fy + 0.3 * tfy,
                (H - cye) / K.fy + 0.3 * tfy,
            ),
            "u_near_far": (self.near, self.far),
            "u_origin": (float(viewport[0]), float(viewport[1])),
        }
        self.project["u_rot"].write(R.T.astype("f4").tobytes())  # column-major: u_rot * v = R v
        for p in (self.project, self.prog):
            for name, v in values.items():
                if name in p:  # the GLSL compiler drops unused uniforms (u_cam_pos at degree 0)
                    p[name].value = v

    # ------------------------------------------------------------------ drawing

    def render(
        self,
        camera,
        *,
        fbo=None,
        background=(0.0, 0.0, 0.0),
        viewport: tuple[int, int, int, int] | None = None,
        clear: bool = True,
    ) -> FrameStats:
        """Draw the splats seen by ``camera`` (worldgen.camera.Camera, its intrinsics' size)
        into ``fbo`` (default: the context's screen) at ``viewport`` (default ``(0, 0, W, H)``),
        after clearing it (every colour attachment) to ``(background, 0)`` unless
        ``clear=False``."""
        ctx = self.ctx
        gl = _gl()
        K = camera.intrinsics
        fbo = fbo if fbo is not None else ctx.screen
        if fbo is None:
            raise BackendError("no framebuffer: pass fbo= (standalone contexts have no screen)")
        vp = tuple(int(v) for v in (viewport or (0, 0, K.width, K.height)))
        if vp[2] != K.width or vp[3] != K.height:
            raise BackendError(
                f"viewport {vp[2]}x{vp[3]} differs from the camera's {K.width}x{K.height}"
            )
        key = self._view_key(camera)
        sort_ms = upload_ms = 0.0
        t0 = time.perf_counter()
        fut = None
        if self.n and self.cpu_sorter is not None and key != self._last_key:
            if self._pending is not None and self._pending[0] == key:
                fut = self._pending[1]
            else:
                fut = self.cpu_sorter.submit(camera, self.near, self.far)
            self._pending = None
        # GL work that overlaps the CPU sort
        fbo.use()
        fbo.viewport = vp
        if clear:
            bg = tuple(float(c) for c in np.asarray(background, np.float64).reshape(3))
            fbo.clear(*bg, 0.0, viewport=vp)
        self._set_uniforms(camera, vp)
        self.data.use(0)
        ctx.disable(gl.DEPTH_TEST | gl.CULL_FACE)
        ctx.enable(gl.BLEND)
        ctx.blend_equation = gl.FUNC_ADD
        ctx.blend_func = gl.ONE, gl.ONE_MINUS_SRC_ALPHA

        if fut is not None:
            res: SortResult = fut.result()
            t1 = time.perf_counter()
            sort_ms = res.ms  # in the worker (the GL set-up above overlapped it)
            if res.count:
                self.order.write(res.order)
            self._last_count = res.count
            upload_ms = (time.perf_counter() - t1) * 1e3
        elif self.n and self.gpu_sorter is not None and key != self._last_key:
            self.gpu_sorter.sort_depth(self.data, np.asarray(camera.viewmat, np.float64))
            self._last_count = self.n
            if self.sync:
                ctx.finish()
            sort_ms = (time.perf_counter() - t0) * 1e3
            fbo.use()  # the compute pass may have changed bindings
            self.data.use(0)
        self._last_key = key
        count = self._last_count if self.n else 0

        t2 = time.perf_counter()
        if count:
            self.project_vao.transform(self.records, mode=gl.POINTS, vertices=count)
            self.quad_vao.render(gl.TRIANGLE_STRIP, vertices=4, instances=count)
        if self.sync:
            ctx.finish()
        draw_ms = (time.perf_counter() - t2) * 1e3
        return FrameStats(sort_ms, upload_ms, draw_ms, count, self.sort_mode)

    def release(self) -> None:
        if self.cpu_sorter is not None:
            self.cpu_sorter.close()
        if self.gpu_sorter is not None:
            self.gpu_sorter.release()
        else:
            self.order.release()
        for o in (
            self.project_vao,
            self.quad_vao,
            self.records,
            self.project,
            self.prog,
            self.data,
        ):
            o.release()


def _gl():
    import moderngl

    return moderngl
