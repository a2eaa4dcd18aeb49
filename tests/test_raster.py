"""Forward rasterizer: torch backend vs the brute-force reference, and known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from worldgen.camera import Camera, Intrinsics, Pose
from worldgen.errors import BackendError
from worldgen.raster import available_backends, rasterize, render_weights, resolve_backend
from worldgen.raster.common import ALPHA_MAX, EPS2D, make_settings, project
from worldgen.raster.torch_backend import rasterize_torch
from worldgen.splats import SH_C0, Splats, rgb_to_sh0

TOL = 1e-4


def _cam(W=40, H=30, f=40.0, cx=None, cy=None, pose=None) -> Camera:
    cx = (W - 1) / 2 if cx is None else cx
    cy = (H - 1) / 2 if cy is None else cy
    return Camera(Intrinsics(f, f, cx, cy, W, H), pose or Pose.identity())


def random_scene(
    n: int,
    seed: int,
    *,
    deg: int = 0,
    W: int = 40,
    H: int = 30,
    log_scale=(-3.0, -1.5),
    logit=(-2.0, 4.0),
    z=(1.0, 5.0),
    margin: float = 8.0,
    pose: Pose | None = None,
) -> tuple[Splats, Camera]:
    """n splats around the view frustum of a W x H camera with f = W (hfov ~53 deg)."""
    g = torch.Generator().manual_seed(seed)
    cam = _cam(W, H, float(W), pose=pose)
    K = cam.intrinsics

    def uni(lo, hi, *shape):
        return torch.rand(*shape, generator=g) * (hi - lo) + lo

    zz = uni(*z, n)
    u = uni(-margin, W - 1 + margin, n)
    v = uni(-margin, H - 1 + margin, n)
    means = torch.stack([(u - K.cx) * zz.abs() / K.fx, (v - K.cy) * zz.abs() / K.fy, zz], 1)
    splats = Splats(
        means=means,
        quats=torch.randn(n, 4, generator=g),
        log_scales=uni(*log_scale, n, 3),
        logit_opacities=uni(*logit, n),
        sh=torch.randn(n, (deg + 1) ** 2, 3, generator=g) * 0.6,
        layers=torch.zeros(n, dtype=torch.uint8),
    )
    return splats, cam


def one_splat(mean, scale, opacity, rgb=(0.2, 0.6, 0.9), deg=0) -> Splats:
    sh = torch.zeros(1, (deg + 1) ** 2, 3)
    sh[0, 0] = rgb_to_sh0(torch.tensor(rgb, dtype=torch.float32))
    return Splats(
        means=torch.tensor([mean], dtype=torch.float32),
        quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]),
        log_scales=torch.full((1, 3), math.log(scale)),
        logit_opacities=torch.tensor([math.log(opacity / (1 - opacity))], dtype=torch.float32),
        sh=sh,
        layers=torch.zeros(1, dtype=torch.uint8),
    )


def assert_close_outputs(a, b, tol=TOL):
    for name in ("rgb", "alpha", "depth"):
        x, y = getattr(a, name).detach(), getattr(b, name).detach()
        assert x.shape == y.shape and x.dtype == torch.float32, name
        err = float((x - y).abs().max()) if x.numel() else 0.0
        assert err <= tol, f"{name}: max abs error {err}"


# ----------------------------------------------------------------------------- torch vs reference

CASES = {
    # name: (n, seed, kwargs)
    "empty": (0, 0, {}),
    "one": (1, 1, {"log_scale": (-2.0, -1.5), "logit": (1.0, 2.0), "margin": 0.0}),
    "fifty": (50, 2, {}),
    "three-hundred": (300, 3, {}),
    "sub-pixel": (300, 4, {"log_scale": (-8.0, -5.0)}),
    "huge": (20, 5, {"log_scale": (0.0, 1.5), "logit": (-3.0, 0.0)}),
    "anisotropic": (200, 6, {"log_scale": (-5.0, 0.0)}),
    "behind-and-near": (200, 7, {"z": (-1.0, 1.0)}),
    "low-opacity": (100, 8, {"logit": (-6.0, -2.0)}),
    "far-outside": (100, 9, {"margin": 60.0}),
}


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_torch_matches_reference(case, deg):
    n, seed, kw = CASES[case]
    splats, cam = random_scene(n, seed * 10 + deg, deg=deg, **kw)
    bg = (0.1, 0.3, 0.7) if deg % 2 else None
    ref = rasterize(splats, cam, backend="reference", background=bg)
    out = rasterize(splats, cam, backend="torch", background=bg)
    assert_close_outputs(out, ref)
    assert out.rgb.shape == (30, 40, 3) and out.alpha.shape == (30, 40)


def test_every_pixel_terminates_early():
    # 300 big opaque splats: every pixel is covered by many alpha ~ 0.999 layers
    splats, cam = random_scene(300, 11, log_scale=(-0.5, 0.5), logit=(6.0, 8.0), margin=0.0)
    ref = rasterize(splats, cam, backend="reference")
    out = rasterize(splats, cam, backend="torch")
    assert_close_outputs(out, ref)
    T = 1 - out.alpha
    assert float(T.max()) < 0.01 and float(T.min()) > 0.5e-4  # stopped before T <= 1e-4


def test_no_pixel_terminates():
    splats, cam = random_scene(300, 12, log_scale=(-1.5, -0.5), logit=(-5.0, -3.0))
    ref = rasterize(splats, cam, backend="reference")
    out = rasterize(splats, cam, backend="torch")
    assert_close_outputs(out, ref)
    assert float(out.alpha.max()) < 0.9


@pytest.mark.parametrize("max_pairs", [1, 37, 500])
def test_chunking_does_not_change_the_result(max_pairs):
    """Tiny chunks exercise the carried transmittance and finished-pixel mask between chunks."""
    splats, cam = random_scene(300, 13, log_scale=(-2.5, -1.0), logit=(0.0, 6.0))
    settings = make_settings(
        splats, cam, None, None, sh_degree=None, background=(0.2, 0.2, 0.2), near=0.01, far=1e10
    )
    ref = rasterize(splats, cam, backend="reference", background=(0.2, 0.2, 0.2))
    out = rasterize_torch(splats, cam, settings, max_pairs=max_pairs)
    assert_close_outputs(out, ref)


def test_posed_camera_and_size_override():
    pose = Pose.from_cli(0.3, -0.2, 0.5, yaw_deg=10, pitch_deg=-5, roll_deg=3)
    splats, _ = random_scene(200, 14, deg=2)
    cam = _cam(40, 30, 40.0, pose=pose)
    ref = rasterize(splats, cam, 36, 28, backend="reference")
    out = rasterize(splats, cam, 36, 28, backend="torch")
    assert out.rgb.shape == (28, 36, 3)
    assert_close_outputs(out, ref)


def test_larger_scene_matches_reference():
    splats, cam = random_scene(600, 15, deg=1, W=64, H=48, log_scale=(-4.0, -2.0))
    assert_close_outputs(
        rasterize(splats, cam, backend="torch"), rasterize(splats, cam, backend="reference")
    )


# ----------------------------------------------------------------------------- known answers


def test_single_splat_peak_at_principal_point():
    W, H, cx, cy, f = 33, 21, 16.0, 10.0, 30.0
    cam = _cam(W, H, f, cx, cy)
    for opacity in (0.5, 0.9995):
        s = one_splat([0.0, 0.0, 2.0], 0.05, opacity)
        for backend in ("torch", "reference"):
            out = rasterize(s, cam, backend=backend)
            peak = int(out.alpha.reshape(-1).argmax())
            assert (peak % W, peak // W) == (16, 10)
            a = min(ALPHA_MAX, opacity)
            assert out.alpha[10, 16] == pytest.approx(a, abs=1e-6)
            expected_rgb = a * np.array([0.2, 0.6, 0.9])
            np.testing.assert_allclose(out.rgb[10, 16].numpy(), expected_rgb, atol=1e-6)
            assert out.depth[10, 16] == pytest.approx(2.0, abs=1e-6)


def test_single_splat_profile_is_the_blurred_ewa_gaussian():
    W, H, f, z, s, op = 41, 41, 50.0, 2.5, 0.06, 0.8
    cam = _cam(W, H, f, 20.0, 20.0)
    out = rasterize(one_splat([0.0, 0.0, z], s, op), cam)
    var = (f * s / z) ** 2 + EPS2D  # isotropic on the optical axis: J = diag(f/z, f/z)
    for d in (0, 1, 2, 3):
        expected = op * math.exp(-0.5 * d * d / var)
        expected = expected if expected >= 1 / 255 else 0.0
        assert out.alpha[20, 20 + d] == pytest.approx(expected, abs=1e-6)
        assert out.alpha[20 - d, 20] == pytest.approx(expected, abs=1e-6)


def test_plus_x_in_camera_space_appears_to_the_right():
    cam = _cam(41, 21, 40.0, 20.0, 10.0)

    def centroid_x(x):
        a = rasterize(one_splat([x, 0.0, 2.0], 0.05, 0.9), cam).alpha
        return float((a.sum(0) * torch.arange(41)).sum() / a.sum())

    assert centroid_x(0.0) == pytest.approx(20.0, abs=1e-3)
    assert centroid_x(0.3) > 25.0  # 0.3 m at 2 m with f = 40 px: +6 px
    assert centroid_x(-0.3) < 15.0


def test_front_splat_occludes_and_sets_depth():
    cam = _cam(21, 21, 20.0, 10.0, 10.0)
    front = one_splat([0.0, 0.0, 1.0], 0.2, 0.9995, rgb=(1.0, 0.0, 0.0))
    back = one_splat([0.0, 0.0, 3.0], 0.6, 0.9995, rgb=(0.0, 0.0, 1.0))
    for order in ((front, back), (back, front)):
        out = rasterize(Splats.cat(list(order)), cam)
        assert out.rgb[10, 10, 0] > 0.99 and out.rgb[10, 10, 2] < 0.01
        assert out.depth[10, 10] == pytest.approx(1.0, abs=1e-3)


def test_background_compositing():
    splats, cam = random_scene(80, 21)
    bg = torch.tensor([0.25, 0.5, 1.0])
    black = rasterize(splats, cam)
    with_bg = rasterize(splats, cam, background=bg)
    torch.testing.assert_close(with_bg.alpha, black.alpha)
    expected = black.rgb + (1 - black.alpha)[..., None] * bg
    torch.testing.assert_close(with_bg.rgb, expected, atol=1e-6, rtol=0)
    empty = rasterize(Splats.empty(), cam, background=(0.25, 0.5, 1.0))
    assert torch.equal(empty.rgb, bg.expand(30, 40, 3))
    assert float(empty.alpha.abs().max()) == 0.0 and float(empty.depth.abs().max()) == 0.0


def test_behind_camera_and_near_plane_are_culled():
    cam = _cam(21, 21, 20.0, 10.0, 10.0)
    for z in (-1.0, 0.0, 0.005):
        out = rasterize(one_splat([0.0, 0.0, z], 0.01, 0.9), cam)
        assert float(out.alpha.max()) == 0.0
    assert float(rasterize(one_splat([0.0, 0.0, 0.5], 0.01, 0.9), cam, near=1.0).alpha.max()) == 0
    assert float(rasterize(one_splat([0.0, 0.0, 5.0], 0.1, 0.9), cam, far=4.0).alpha.max()) == 0


def test_sh_degree_one_view_dependence_and_truncation():
    # a splat straight ahead: view dir (0, 0, 1); degree-1 bases (-C1 y, C1 z, -C1 x) = (0, C1, 0)
    s = one_splat([0.0, 0.0, 2.0], 0.05, 0.9995, rgb=(0.3, 0.3, 0.3), deg=1)
    s.sh[0, 2] = torch.tensor([0.4, 0.0, -0.4])
    cam = _cam(21, 21, 20.0, 10.0, 10.0)
    c1 = 0.48860251190292
    rgb = rasterize(s, cam).rgb[10, 10] / ALPHA_MAX
    np.testing.assert_allclose(rgb.numpy(), [0.3 + 0.4 * c1, 0.3, 0.3 - 0.4 * c1], atol=1e-5)
    rgb0 = rasterize(s, cam, sh_degree=0).rgb[10, 10] / ALPHA_MAX
    np.testing.assert_allclose(rgb0.numpy(), [0.3, 0.3, 0.3], atol=1e-5)
    # colours are clamped at 0 after the +0.5 offset
    s.sh[0, 0] = torch.full((3,), -2.0 / SH_C0)
    assert float(rasterize(s, cam).rgb.min()) == 0.0


def test_projection_matches_gsplat_formulas():
    """Independent per-splat transcription of gsplat's _persp_proj (pixel-edge principal point)."""
    splats, cam = random_scene(40, 31, margin=40.0, log_scale=(-4.0, -1.0))
    W, H = 40, 30
    settings = make_settings(
        splats, cam, None, None, sh_degree=0, background=None, near=0.01, far=1e10
    )
    proj = project(splats, cam, settings)
    K = cam.K
    fx, fy = K[0, 0], K[1, 1]
    cxg, cyg = K[0, 2] + 0.5, K[1, 2] + 0.5  # gsplat's principal point for our intrinsics
    for i in range(len(splats)):
        q = splats.quats[i].double().numpy()
        w, x, y, z = q / np.linalg.norm(q)
        R = np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
            ]
        )
        S = np.diag(np.exp(splats.log_scales[i].double().numpy()))
        cov = R @ S @ S.T @ R.T
        tx, ty, tz = splats.means[i].double().numpy()  # identity pose
        lim_xp = (W - cxg) / fx + 0.3 * (0.5 * W / fx)
        lim_xn = cxg / fx + 0.3 * (0.5 * W / fx)
        lim_yp = (H - cyg) / fy + 0.3 * (0.5 * H / fy)
        lim_yn = cyg / fy + 0.3 * (0.5 * H / fy)
        txc = tz * min(max(tx / tz, -lim_xn), lim_xp)
        tyc = tz * min(max(ty / tz, -lim_yn), lim_yp)
        J = np.array([[fx / tz, 0, -fx * txc / tz**2], [0, fy / tz, -fy * tyc / tz**2]])
        cov2d = J @ cov @ J.T + EPS2D * np.eye(2)
        conic = np.linalg.inv(cov2d)
        mean_gsplat = np.array([fx * tx / tz + cxg, fy * ty / tz + cyg])  # pixel px at px + 0.5
        np.testing.assert_allclose(proj.mean2d[i].numpy(), mean_gsplat - 0.5, atol=1e-9)
        np.testing.assert_allclose(
            proj.conic[i].numpy(), [conic[0, 0], conic[0, 1], conic[1, 1]], rtol=1e-9, atol=1e-12
        )
        assert proj.depth[i] == pytest.approx(tz)


# ----------------------------------------------------------------------------- render_weights, API


def test_render_weights_reproduce_rasterize():
    splats, cam = random_scene(300, 41, log_scale=(-2.5, -1.0), logit=(-1.0, 6.0))
    bg = torch.tensor([0.2, 0.4, 0.6])
    out = rasterize(splats, cam, background=bg)
    rw = render_weights(splats, cam)
    assert rw.pix.dtype == torch.int64 and rw.splat.dtype == torch.int64
    assert rw.weight.dtype == torch.float32 and rw.final_T.shape == (30, 40)
    assert bool((rw.weight > 0).all())
    colours = splats.rgb.clamp_min(0)  # degree 0: rgb = 0.5 + C0 sh0, clamped at 0
    rgb = torch.zeros(30 * 40, 3).index_add_(0, rw.pix, rw.weight[:, None] * colours[rw.splat])
    rgb = rgb.reshape(30, 40, 3) + rw.final_T[..., None] * bg
    torch.testing.assert_close(rgb, out.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(rw.composite(colours, bg), out.rgb, atol=1e-5, rtol=0)
    torch.testing.assert_close(rw.final_T, 1 - out.alpha, atol=1e-6, rtol=0)


def test_unknown_backend_raises_backend_error():
    splats, cam = random_scene(5, 51)
    with pytest.raises(BackendError, match="torch") as e:
        rasterize(splats, cam, backend="vulkan")
    assert "reference" in str(e.value) and "auto" in str(e.value)


def test_registry():
    names = available_backends()
    assert "torch" in names and "reference" in names
    assert resolve_backend("auto").name == "cpu"  # the numba tile rasterizer


def test_reference_refuses_big_scenes():
    splats, cam = random_scene(2000, 52, W=64, H=48)
    with pytest.raises(BackendError, match="reference"):
        rasterize(splats, cam, backend="reference")


def test_bad_arguments():
    splats, cam = random_scene(5, 53, deg=1)
    with pytest.raises(ValueError, match="sh_degree"):
        rasterize(splats, cam, sh_degree=2)
    with pytest.raises(ValueError, match="background"):
        rasterize(splats, cam, background=(1.0, 0.0))
