"""The GL splat renderer against the CPU rasterizer, the sorts, stereo geometry, `render` CLI.

GL runs headless on EGL (Mesa llvmpipe here); every test using the context fails on any GL
error before or after it.
"""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from tests.test_raster import random_scene
from worldgen.camera import Camera, Intrinsics, Pose
from worldgen.errors import BackendError
from worldgen.raster import rasterize
from worldgen.raster.common import make_settings, project

moderngl = pytest.importorskip("moderngl")

from renderer import sort as rsort  # noqa: E402
from renderer import stereo  # noqa: E402
from renderer.offscreen import OffscreenRenderer, create_context, render_gl  # noqa: E402
from renderer.splat_renderer import SplatRenderer, choose_sort  # noqa: E402

BG = (0.2, 0.35, 0.5)
#: GL vs the rasterizer on float images (the issue asks >= 35 dB; they agree to float32
#: rounding, 71-97 dB measured, so a regression shows long before 35)
MIN_PSNR = 50.0


def psnr(a, b) -> float:
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return 10 * math.log10(1.0 / max(mse, 1e-20))


@pytest.fixture(scope="module")
def gl_ctx():
    try:
        ctx = create_context(require=430)  # llvmpipe: 4.5, so the GPU sort is testable
    except BackendError as e:
        if os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
            pytest.skip(str(e))
        pytest.fail(f"{e}: install Mesa EGL (bash tools/setup.sh)")
    yield ctx
    ctx.release()


@pytest.fixture
def ctx(gl_ctx):
    """The module's context, current, with no GL error before or after the test."""
    gl_ctx.__enter__()
    assert gl_ctx.error == "GL_NO_ERROR", "GL error left by an earlier test"
    yield gl_ctx
    gl_ctx.__enter__()
    assert gl_ctx.error == "GL_NO_ERROR"


def render(ctx, splats, cam, *, sort="cpu", background=BG, sh_degree=None):
    with OffscreenRenderer(splats, sort=sort, ctx=ctx, sh_degree=sh_degree) as r:
        return r.render(cam, background=background)


# ----------------------------------------------------------------------------- sorting


def _tricky_floats(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    z = rng.normal(0, 3, n).astype(np.float32)
    if n >= 40:
        z[::7] = z[3]  # many equal keys
        z[1::11] = -0.0
        z[2::13] = 0.0
        z[5], z[6], z[8], z[9] = np.inf, -np.inf, np.nan, -np.nan
        z[10:20] = np.float32(1e-42)  # subnormals
        z[20:30] = -np.float32(1e-42)
    return z


@pytest.mark.parametrize("n", [0, 1, 2, 3, 257, 5000, 250_000])
def test_radix_sort_equals_stable_argsort(n):
    z = _tricky_floats(n, n)
    ref = np.argsort(z, kind="stable")
    for parallel in (False, True):
        assert np.array_equal(rsort.radix_argsort(z, parallel=parallel), ref)
        down = rsort.radix_argsort(z, descending=True, parallel=parallel)
        assert np.array_equal(down, ref[::-1])  # the exact reverse, ties included


def test_float_keys_preserve_order():
    z = np.sort(_tricky_floats(3000, 1)[~np.isnan(_tricky_floats(3000, 1))])
    k = rsort.float_keys(z)
    assert np.all(np.diff(k.astype(np.int64)) >= 0)
    assert rsort.float_keys(np.float32([-0.0]))[0] == rsort.float_keys(np.float32([0.0]))[0]


def _depth_order_reference(splats, cam) -> np.ndarray:
    V = cam.viewmat
    z = (splats.means.double().numpy() @ V[2, :3] + V[2, 3]).astype(np.float32)
    return np.argsort(z, kind="stable")[::-1]


def test_cpu_sorter_order_and_conservative_cull():
    splats, cam = random_scene(3000, 5, W=64, H=48, z=(-2.0, 6.0), margin=40.0)
    radius = rsort.splat_radius(splats.log_scales.numpy(), splats.opacities.double().numpy())
    full = rsort.CpuSorter(splats.means.numpy(), radius, cull=False)
    res = full.sort(cam)
    assert res.count == 3000
    assert np.array_equal(res.order, _depth_order_reference(splats, cam))
    culled = rsort.CpuSorter(splats.means.numpy(), radius, cull=True).submit(cam).result()
    kept = culled.order.astype(np.int64)
    assert 0 < culled.count < 3000
    # same relative order as the full sort
    pos = np.empty(3000, np.int64)
    pos[res.order] = np.arange(3000)
    assert np.all(np.diff(pos[kept]) > 0)
    # every splat whose exact box (the rasterizer's projection) meets the image is kept
    s = make_settings(splats, cam, None, None, sh_degree=0, background=None, near=0.01, far=1e10)
    p = project(splats, cam, s)
    lo = p.mean2d - p.half_extent
    hi = p.mean2d + p.half_extent
    reach = p.valid & (hi[:, 0] >= 0) & (lo[:, 0] <= 63) & (hi[:, 1] >= 0) & (lo[:, 1] <= 47)
    need = set(torch.nonzero(reach).flatten().tolist())
    assert need <= set(kept.tolist())
    full.close()


def test_gpu_sort_equals_cpu_sort(ctx):
    rng = np.random.default_rng(0)
    for n in (1, 700, 20_000):
        z = _tricky_floats(n, n)
        z[np.isnan(z)] = 1.0
        g = rsort.GpuSorter(ctx, n)
        g.sort_keys(rsort.float_keys(z))
        assert np.array_equal(g.read_values(), rsort.radix_argsort(z, descending=True))
        g.release()
    # keys computed on the GPU from the renderer's data texture: the CPU sorter's order
    splats, cam = random_scene(5000, 3, W=64, H=48, z=(0.5, 3.0))
    splats.means[::9] = splats.means[4]  # equal depths
    cam = Camera(cam.intrinsics, Pose.from_cli(0.1, -0.2, 0.3, 20, 10, 5))
    r = SplatRenderer(ctx, splats, sort="gpu")
    r.gpu_sorter.sort_depth(r.data, cam.viewmat)
    got = r.gpu_sorter.read_values()
    want = _depth_order_reference(splats, cam)
    V = cam.viewmat
    z = splats.means.double().numpy() @ V[2, :3] + V[2, 3]
    # float32 key rounding may differ (fused multiply-add); then only near-equal depths swap
    bad = got != want
    assert bad.mean() < 0.01
    assert np.all(np.abs(z[got[bad]] - z[want[bad]]) < 1e-5)
    assert np.all(np.diff(z[got]) <= 1e-5)  # back to front
    r.release()
    del rng


def test_sort_choice():
    def fake(version, renderer):
        return SimpleNamespace(version_code=version, info={"GL_RENDERER": renderer})

    assert choose_sort(fake(410, "Apple M2"), "auto")[0] == "cpu"  # macOS: no compute
    assert choose_sort(fake(460, "NVIDIA H100/PCIe/SSE2"), "auto")[0] == "gpu"
    assert choose_sort(fake(450, "llvmpipe (LLVM 15.0.6, 256 bits)"), "auto")[0] == "cpu"
    assert choose_sort(fake(450, "llvmpipe"), "gpu")[0] == "gpu"
    with pytest.raises(BackendError, match="compute"):
        choose_sort(fake(410, "Apple M2"), "gpu")
    with pytest.raises(BackendError, match="valid"):
        choose_sort(fake(460, "x"), "fast")


# ----------------------------------------------------------------------------- GL vs CPU


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
@pytest.mark.parametrize("seed", [0, 1])
def test_gl_matches_rasterizer_random_scenes(ctx, deg, seed):
    # overlapping translucent splats, some crossing the image border and the near plane
    splats, cam = random_scene(
        400, 100 + 10 * seed + deg, deg=deg, W=64, H=48, log_scale=(-3.5, -1.2), z=(0.2, 4.0)
    )
    pose = Pose.from_cli(0.05, -0.03, 0.1, 4 * seed, -3, 2) if seed else Pose.identity()
    cam = Camera(cam.intrinsics, pose)
    ref = rasterize(splats, cam, background=BG)
    sort = "gpu" if seed else "cpu"
    f = render(ctx, splats, cam, sort=sort)
    assert f.rgb.shape == (48, 64, 3) and f.rgb.dtype == np.float32
    p = psnr(f.rgb, ref.rgb.numpy())
    assert p >= MIN_PSNR, p
    assert float(np.abs(f.alpha - ref.alpha.numpy()).max()) < 0.02
    cov = ref.alpha.numpy() > 0.5
    assert float(np.abs(f.depth - ref.depth.numpy())[cov].max()) < 1e-2
    assert float(np.abs(f.rgb - ref.rgb.numpy()).max()) < 0.05


def test_gl_sh_degree_override_and_off_axis_principal_point(ctx):
    splats, _ = random_scene(300, 7, deg=3, W=64, H=48)
    cam = Camera(Intrinsics(70.0, 66.0, 20.0, 30.0, 64, 48), Pose.from_cli(0, 0, 0, -8, 0, 0))
    for deg in (0, 2):
        ref = rasterize(splats, cam, background=BG, sh_degree=deg)
        f = render(ctx, splats, cam, sh_degree=deg)
        assert psnr(f.rgb, ref.rgb.numpy()) >= MIN_PSNR


def test_gl_matches_rasterizer_small_world(ctx, small_world):
    from worldgen.world import load_world

    w = load_world(small_world)
    intr = w.intrinsics
    with OffscreenRenderer(w.splats, ctx=ctx) as r:
        for pose in (Pose.identity(), Pose.from_cli(0.2, -0.1, 0.4, 15, 5, 0)):
            cam = Camera(intr, pose)
            ref = rasterize(w.splats, cam, background=BG)
            p = psnr(r.render(cam, background=BG).rgb, ref.rgb.numpy())
            assert p >= MIN_PSNR, p


def test_viewport_and_empty_scene(ctx):
    splats, cam = random_scene(200, 9, W=40, H=30)
    full = render(ctx, splats, cam)
    # the same view drawn into the right half of a wider framebuffer (stereo windows do this)
    tex = ctx.texture((90, 40), 4, dtype="f4")
    fbo = ctx.framebuffer(color_attachments=[tex])
    r = SplatRenderer(ctx, splats, sort="cpu")
    fbo.clear(0.0, 0.0, 0.0, 0.0)
    stats = r.render(cam, fbo=fbo, viewport=(50, 10, 40, 30), background=(0, 0, 0))
    assert stats.sort_ms >= 0 and stats.drawn > 0 and stats.sorter == "cpu"
    img = np.frombuffer(fbo.read(components=4, dtype="f4"), np.float32).reshape(40, 90, 4)
    half = img[::-1][0:30, 50:90]  # rows top-down; the viewport starts 10 rows from the bottom
    rgb = half[..., :3] + (1 - half[..., 3:]) * np.float32(BG)
    assert psnr(rgb, full.rgb) > 60
    assert float(np.abs(img[::-1][:, :50]).max()) == 0.0  # nothing outside the viewport
    again = r.render(cam, fbo=fbo, viewport=(50, 10, 40, 30))
    assert again.sort_ms == 0.0  # same view: the order is reused
    r.release()
    ctx.detect_framebuffer(0).use()  # moderngl rebinds the bound one: never release it bound
    fbo.release()
    tex.release()
    empty = render(ctx, splats.index(torch.zeros(0, dtype=torch.long)), cam)
    assert np.allclose(empty.rgb, BG) and float(empty.alpha.max()) == 0.0


def test_render_gl_of_world(ctx, small_world):
    from worldgen.world import load_world

    w = load_world(small_world)
    rgb, alpha = render_gl(w, Pose.identity(), w.intrinsics.scaled_to(48, 36))
    assert rgb.shape == (36, 48, 3) and alpha.shape == (36, 48)
    assert float((alpha < 0.5).mean()) < 0.05


def test_frame_source_falls_back_to_cpu_without_egl(monkeypatch):
    import renderer.offscreen as off

    def no_egl(require=330):
        raise BackendError("no headless OpenGL 3.3 context (EGL): eglGetDisplay failed")

    monkeypatch.setattr(off, "create_context", no_egl)
    splats, cam = random_scene(50, 2, W=24, H=18)
    with off.FrameSource(splats, "auto") as src:
        assert src.backend == "cpu" and "eglGetDisplay" in src.reason
        f = src.render(cam, BG)
        ref = rasterize(splats, cam, background=BG)
        assert np.allclose(f.rgb, ref.rgb.numpy())
    with pytest.raises(BackendError, match="--backend gl"):
        off.FrameSource(splats, "gl")


# ----------------------------------------------------------------------------- stereo maths


def test_sbs_eyes_and_asymmetric_frusta():
    intr = Intrinsics.from_hfov(70, 640, 480)
    centre = Camera(intr, Pose.from_cli(0.3, -0.1, 0.5, 30, 10, 0))
    D = 2.5
    left, right = stereo.sbs_cameras(centre, ipd=0.064, convergence=D)
    # eyes 64 mm apart along the centre camera's x axis, same orientation
    d = right.pose.T - left.pose.T
    assert np.linalg.norm(d) == pytest.approx(0.064)
    assert np.allclose(d / 0.064, centre.pose.R[:, 0])
    assert np.allclose((left.pose.T + right.pose.T) / 2, centre.pose.T)
    assert np.allclose(left.pose.R, centre.pose.R) and np.allclose(right.pose.R, centre.pose.R)
    # off-axis principal points, symmetric about the centre's
    shift = intr.fx * 0.064 / (2 * D)
    assert left.intrinsics.cx == pytest.approx(intr.cx - shift)
    assert right.intrinsics.cx == pytest.approx(intr.cx + shift)

    def project_px(cam, X):
        Xc = cam.pose.R.T @ (X - cam.pose.T)
        K = cam.intrinsics
        return np.array([K.fx * Xc[0] / Xc[2] + K.cx, K.fy * Xc[1] / Xc[2] + K.cy])

    R, T = centre.pose.R, centre.pose.T
    for x, y in ((0.0, 0.0), (0.7, -0.4), (-1.1, 0.5)):
        on_plane = T + R @ np.array([x, y, D])
        assert np.allclose(project_px(left, on_plane), project_px(right, on_plane))  # zero
        far = T + R @ np.array([x * 1e6, y * 1e6, 1e7])
        disp = project_px(right, far) - project_px(left, far)
        assert disp[0] == pytest.approx(2 * shift, abs=1e-3)  # uncrossed: behind the screen
        assert disp[1] == pytest.approx(0.0, abs=1e-9)  # no vertical parallax
        near = T + R @ np.array([x * 0.5, y * 0.5, 0.5 * D])
        assert (project_px(right, near) - project_px(left, near))[0] < 0  # in front: crossed
    eye = stereo.sbs_eye_intrinsics(intr)
    assert (eye.width, eye.height, eye.fx) == (320, 480, intr.fx)


def test_ods_plan_geometry():
    width = 64
    views = stereo.ods_plan(width, strip_deg=10.0)
    He = width // 2
    cover = np.zeros((2, He, width), int)
    lon, lat = stereo.equirect_angles(width, He)
    for v in views:
        # the eye sits on the IPD circle, tangent to the viewing direction, left eye on the left
        off = v.camera.pose.T
        fwd = v.camera.pose.R[:, 2]
        fwd_level = np.array([math.sin(v.lon), 0.0, math.cos(v.lon)])
        assert np.linalg.norm(off) == pytest.approx(stereo.IPD_M / 2)
        assert abs(off @ fwd_level) < 1e-12 and abs(off[1]) < 1e-12
        right_dir = np.cross(np.array([0.0, 1.0, 0.0]), fwd_level)  # down x forward = right
        assert np.sign(off @ right_dir) == v.eye
        assert abs(math.atan2(fwd[0], fwd[2]) - v.lon) < 1e-9
        # each panorama pixel samples the view inside the image, along its own direction
        K = v.camera.intrinsics
        assert v.u.min() >= 0 and v.u.max() <= K.width - 1
        assert v.v.min() >= 0 and v.v.max() <= K.height - 1
        ray = np.stack([(v.u - K.cx) / K.fx, (v.v - K.cy) / K.fy, np.ones_like(v.u)], -1)
        d = ray @ v.camera.pose.R.T
        d /= np.linalg.norm(d, axis=-1, keepdims=True)
        want = stereo.direction(lon[None, v.cols], lat[v.rows, None])
        assert np.allclose(d, want, atol=1e-9)
        cover[0 if v.eye < 0 else 1, v.rows, v.cols] += 1
    assert np.all(cover == 1)  # every pixel of both eyes exactly once


def test_ods_panorama_parallax(ctx):
    """Small splats on the horizon plane at 1 and 2 m, longitudes -150..150 deg: each eye sees
    one at longitude lon_p +- asin(r / D) (left eye: +, on top), r = IPD / 2."""
    from renderer.offscreen import render_ods
    from worldgen.splats import Splats, rgb_to_sh0

    lons = np.radians([-150.0, -90.0, -30.0, 30.0, 90.0, 150.0])
    dist = np.array([1.0, 2.0, 1.0, 2.0, 1.0, 2.0])
    means = np.stack([np.sin(lons) * dist, np.zeros(6), np.cos(lons) * dist], 1)
    n = len(means)
    splats = Splats(
        torch.tensor(means, dtype=torch.float32),
        torch.tensor([[1.0, 0, 0, 0]]).repeat(n, 1),
        (torch.tensor(dist, dtype=torch.float32)[:, None] * 0.01).log().repeat(1, 3),
        torch.full((n,), 4.0),
        rgb_to_sh0(torch.ones(n, 3))[:, None],
        torch.zeros(n, dtype=torch.uint8),
    )
    W = 256
    with OffscreenRenderer(splats, ctx=ctx) as r:
        pano = render_ods(r, Pose.identity(), W, strip_deg=5.0)
    assert pano.shape == (W, W, 3)
    for eye, img in ((-1, pano[: W // 2]), (1, pano[W // 2 :])):  # left eye on top
        m = img.mean(axis=2)
        assert m[:, :].argmax() // W in (W // 4 - 1, W // 4)  # on the equator
        row = m[W // 4 - 1] + m[W // 4]
        cols = np.arange(W)
        for lon, d in zip(lons, dist, strict=True):
            want_lon = lon - eye * math.asin(stereo.IPD_M / 2 / d)
            want = (want_lon + math.pi) * W / (2 * math.pi) - 0.5
            near = np.abs(cols - want) < 6
            got = (row[near] * cols[near]).sum() / row[near].sum()
            assert got == pytest.approx(want, abs=0.05), (eye, math.degrees(lon), d)


# ----------------------------------------------------------------------------- CLI


def _cli(args, capsys):
    from worldgen.cli import main

    code = main([str(x) for x in args])
    out, err = capsys.readouterr()
    return code, out, err


def _one_line_error(code, err, needle):
    assert code != 0
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    assert needle in lines[0], err


def test_cli_render_gl_matches_cpu(small_world, tmp_path, capsys):
    from PIL import Image

    base = [small_world, "--pose", "0.1,0,0.2,5", "--size", "64x48", "--json"]
    code, out, err = _cli(["render", *base, "-o", tmp_path / "gl.png", "--backend", "gl"], capsys)
    assert code == 0, err
    s = json.loads(out)
    assert s["backend"] == "gl" and (s["width"], s["height"]) == (64, 48)
    code, out, err = _cli(["render", *base, "-o", tmp_path / "cpu.png", "--backend", "cpu"], capsys)
    assert code == 0, err
    a = np.asarray(Image.open(tmp_path / "gl.png"), np.float32) / 255
    b = np.asarray(Image.open(tmp_path / "cpu.png"), np.float32) / 255
    assert psnr(a, b) >= 35
    code, out, _ = _cli(["render", small_world, "-o", tmp_path / "auto.png", "--fov", "90"], capsys)
    assert code == 0 and "render backend: gl" in out
    code, out, _ = _cli(
        ["render", small_world, "-o", tmp_path / "sbs.png", "--stereo", "sbs", "--size", "80x40"],
        capsys,
    )
    assert code == 0 and Image.open(tmp_path / "sbs.png").size == (80, 40)


def test_cli_path_frames_video_and_pano(small_world, tmp_path, capsys):
    import imageio_ffmpeg
    from PIL import Image

    path = tmp_path / "poses.json"
    path.write_text(
        json.dumps({"fps": 12, "poses": [[0, 0, 0], [0, 0, 0.1, 5], [0, 0, 0.2, 10, 2]]})
    )
    code, out, err = _cli(
        ["render", small_world, "--path", path, "-o", tmp_path / "frames", "--json"], capsys
    )
    assert code == 0, err
    assert json.loads(out)["frames"] == 3
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == [
        "frame_00000.png",
        "frame_00001.png",
        "frame_00002.png",
    ]
    video = tmp_path / "walk.mp4"
    args = ["render", small_world, "--path", "default", "-o", video, "--size", "48x36"]
    code, out, err = _cli([*args, "--quiet"], capsys)
    assert code == 0, err
    reader = imageio_ffmpeg.read_frames(str(video))
    meta = next(reader)
    n = sum(1 for _ in reader)
    assert meta["size"] == (48, 36) and n == 120 and meta["fps"] == pytest.approx(30)
    pano = tmp_path / "pano.png"
    code, out, err = _cli(
        ["render", small_world, "--pano", "stereo", "--size", "48x48", "-o", pano], capsys
    )
    assert code == 0, err
    img = np.asarray(Image.open(pano))
    assert img.shape == (48, 48, 3)  # two 48 x 24 equirects, left eye on top
    assert psnr(img[:24] / 255.0, img[24:] / 255.0) > 15  # the same scene in both eyes


def test_cli_render_bad_inputs(small_world, tmp_path, capsys):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"poses": [[0, 0]]}')
    o = tmp_path / "x.png"
    cases = [
        (["--path", bad_json, "-o", tmp_path / "f"], "pose 0"),
        (["--path", tmp_path / "none.json", "-o", tmp_path / "f"], "no such path file"),
        (["--path", "default", "-o", o], "not one PNG"),
        (["-o", tmp_path / "x.mp4"], "needs a camera path"),
        (["-o", o, "--pano", "stereo", "--size", "64x32"], "square"),
        (["-o", o, "--pano", "stereo", "--pose", "0,0,0"], "spawn point"),
        (["-o", o, "--fov", "60", "--focal-px", "50"], "not both"),
        (["-o", o, "--fov", "200"], "field of view"),
        (["-o", tmp_path / "x.gif"], ".png"),
    ]
    for extra, needle in cases:
        code, _, err = _cli(["render", small_world, *extra], capsys)
        _one_line_error(code, err, needle)
    with pytest.raises(SystemExit) as e:
        _cli(["render", small_world, "-o", o, "--backend", "vulkan"], capsys)
    assert e.value.code == 2
    _one_line_error(2, capsys.readouterr().err, "invalid choice")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    code, _, err = _cli(
        ["render", small_world, "--path", "default", "-o", tmp_path / "busy", "--force"], capsys
    )
    _one_line_error(code, err, "not replacing")
    assert (tmp_path / "busy" / "notes.txt").exists()
