"""The tile rasterizer ("cpu") against the float64 brute-force reference: forward outputs
(max abs error <= 1e-4) and gradients w.r.t. every splat parameter (||g - g_ref|| / ||g_ref||
<= 1e-3 per tensor), on the raster tests' random scenes and the early-termination extremes;
with the native tile kernels where they build (and the numba ones in the tests that run both),
which match the numba kernels to 1e-5 (forward) and 1e-4 (gradients). The native projection
(float32 parameters) matches the numba one to 1e-6 (in fact bit for bit but for an ulp of
exp/log), forward and backward, on scenes with every culling and clamping case."""

from __future__ import annotations

import ctypes
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.test_raster import CASES, _cam, assert_close_outputs, random_scene
from worldgen.camera import Pose
from worldgen.raster import available_backends, cpu, native, rasterize, resolve_backend
from worldgen.raster.common import make_settings
from worldgen.raster.cpu import count_pairs
from worldgen.splats import Splats

PARAMS = ("means", "quats", "log_scales", "logit_opacities", "sh")
GRAD_TOL = 1e-3


def _with_grad(splats: Splats, dtype=torch.float64) -> tuple[Splats, dict[str, torch.Tensor]]:
    p = {k: getattr(splats, k).detach().clone().to(dtype).requires_grad_(True) for k in PARAMS}
    return Splats(**p, layers=splats.layers), p


def _grads(backend: str, splats: Splats, cam, bg, g_rgb, g_alpha, size=(None, None),
           dtype=torch.float64):  # fmt: skip
    s, p = _with_grad(splats, dtype)
    out = rasterize(s, cam, *size, backend=backend, background=bg)
    loss = (out.rgb.double() * g_rgb).sum() + (out.alpha.double() * g_alpha).sum()
    if loss.requires_grad:
        loss.backward()
    return out, {
        k: (v.grad if v.grad is not None else torch.zeros_like(v)).double() for k, v in p.items()
    }


def assert_close_grads(g: dict, g_ref: dict, tol: float = GRAD_TOL) -> None:
    for k in PARAMS:
        ref_norm = float(g_ref[k].norm())
        err = float((g[k] - g_ref[k]).norm())
        if ref_norm == 0.0:
            assert err == 0.0, f"{k}: gradient {err} where the reference has none"
        else:
            assert err / ref_norm <= tol, f"{k}: relative gradient error {err / ref_norm:.2e}"


def _upstream(H: int, W: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(H, W, 3, generator=g, dtype=torch.float64),
        torch.randn(H, W, generator=g, dtype=torch.float64),
    )


def check(splats, cam, bg=None, size=(None, None), seed=0, backend="cpu", dtype=torch.float64):
    """``backend`` with parameters of ``dtype`` against the reference (float64 parameters of the
    same values)."""
    W = size[0] or cam.intrinsics.width
    H = size[1] or cam.intrinsics.height
    g_rgb, g_alpha = _upstream(H, W, seed)
    ref, g_ref = _grads("reference", splats, cam, bg, g_rgb, g_alpha, size)
    out, g = _grads(backend, splats, cam, bg, g_rgb, g_alpha, size, dtype)
    assert_close_outputs(out, ref)
    assert_close_grads(g, g_ref)
    return out


def test_registered_and_chosen_by_auto():
    assert "cpu" in available_backends()
    assert resolve_backend("auto").name == "cpu"


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
@pytest.mark.parametrize("case", list(CASES))
def test_cpu_matches_reference(case, deg):
    n, seed, kw = CASES[case]
    splats, cam = random_scene(n, seed * 10 + deg, deg=deg, **kw)
    bg = (0.1, 0.3, 0.7) if deg % 2 else None
    out = check(splats, cam, bg, seed=seed)
    assert out.rgb.shape == (30, 40, 3) and out.alpha.shape == (30, 40)


def test_every_pixel_terminates_early():
    splats, cam = random_scene(300, 11, log_scale=(-0.5, 0.5), logit=(6.0, 8.0), margin=0.0)
    out = check(splats, cam)
    T = 1 - out.alpha.detach()
    assert float(T.max()) < 0.01 and float(T.min()) > 0.5e-4


def test_no_pixel_terminates():
    splats, cam = random_scene(300, 12, log_scale=(-1.5, -0.5), logit=(-5.0, -3.0))
    out = check(splats, cam, bg=(0.5, 0.5, 0.5))
    assert float(out.alpha.detach().max()) < 0.9


def test_tiles_and_image_edges():
    """A size that is not a multiple of the 16-px tile, many splats straddling tile borders."""
    splats, cam = random_scene(400, 21, deg=1, W=53, H=37, log_scale=(-3.5, -1.5))
    check(splats, cam, bg=(0.2, 0.1, 0.0))


def test_posed_camera_and_size_override():
    pose = Pose.from_cli(0.3, -0.2, 0.5, yaw_deg=10, pitch_deg=-5, roll_deg=3)
    splats, _ = random_scene(200, 14, deg=2)
    cam = _cam(40, 30, 40.0, pose=pose)
    out = check(splats, cam, size=(36, 28))
    assert out.rgb.shape == (28, 36, 3)


def test_no_grad_path_and_pair_count():
    splats, cam = random_scene(300, 3)
    with torch.no_grad():
        out = rasterize(splats, cam, backend="cpu")
    assert not out.rgb.requires_grad
    ref = rasterize(splats, cam, backend="reference")
    assert_close_outputs(out, ref)
    settings = make_settings(
        splats, cam, None, None, sh_degree=None, background=None, near=0.01, far=1e10
    )
    pairs = count_pairs(splats, cam, settings)
    assert 300 <= pairs <= 300 * 6  # each splat touches 1..6 of the 3 x 2 tiles


# ----------------------------------------------------------------------------- torch autograd


@pytest.mark.parametrize("deg", [0, 3])
@pytest.mark.parametrize("case", ["one", "fifty", "three-hundred", "huge", "behind-and-near"])
def test_torch_backend_gradients_match_reference(case, deg):
    """The pure-PyTorch backend's autograd path (the portable baseline) against the reference."""
    n, seed, kw = CASES[case]
    splats, cam = random_scene(n, seed * 10 + deg, deg=deg, **kw)
    check(splats, cam, (0.1, 0.3, 0.7) if deg else None, seed=seed, backend="torch")


def test_torch_backend_gradients_with_early_termination():
    splats, cam = random_scene(300, 11, log_scale=(-0.5, 0.5), logit=(6.0, 8.0), margin=0.0)
    check(splats, cam, backend="torch")


# ----------------------------------------------------------------------------- native kernels


def _native_or_skip():
    if native.load() is None:
        pytest.skip(f"native tile kernels unavailable: {native.reason()}")


def test_native_kernels_build_where_there_is_a_compiler(monkeypatch):
    """tools/setup.sh installs g++: wherever a compiler is, the native kernels must be in use."""
    monkeypatch.delenv("WORLDGEN_NATIVE", raising=False)
    if shutil.which("c++") is None:
        pytest.skip("no c++ here")
    assert native.load() is not None, native.reason()
    assert cpu.kernel_impl() == "native"


@pytest.fixture(params=["native", "numba"])
def kernels(request, monkeypatch):
    """Runs a test once per tile kernel implementation."""
    if request.param == "numba":
        monkeypatch.setenv("WORLDGEN_NATIVE", "0")
    else:
        monkeypatch.delenv("WORLDGEN_NATIVE", raising=False)
        _native_or_skip()
    assert cpu.kernel_impl() == request.param
    return request.param


@pytest.mark.parametrize("case", ["one", "three-hundred", "sub-pixel", "huge", "anisotropic"])
def test_both_kernels_match_reference(case, kernels):
    n, seed, kw = CASES[case]
    splats, cam = random_scene(n, seed * 10 + 3, deg=3, **kw)
    check(splats, cam, (0.1, 0.3, 0.7), seed=seed)


def test_both_kernels_match_reference_with_early_termination(kernels):
    # opacities up to ~0.9997: raw alpha on both sides of the 0.999 clamp, pixels stopping
    splats, cam = random_scene(300, 11, log_scale=(-0.5, 0.5), logit=(6.0, 8.0), margin=0.0)
    check(splats, cam, bg=(0.3, 0.2, 0.1))


def test_worldgen_native_0_selects_numba(monkeypatch):
    monkeypatch.setenv("WORLDGEN_NATIVE", "0")
    assert native.load() is None and "WORLDGEN_NATIVE=0" in native.reason()
    assert cpu.kernel_impl() == "numba"


def _kernel_inputs(n: int, W: int, H: int, seed: int = 0):
    """The tile kernels' arguments for a random scene like the benchmark's."""
    from benchmarks.raster_cpu import random_scene as bench_scene

    splats, cam = bench_scene(n, W, H, seed=seed)
    settings = make_settings(
        splats, cam, None, None, sh_degree=None, background=None, near=0.01, far=1e10
    )
    with torch.no_grad():
        proj = cpu.project_cpu(splats, cam, settings)
    tx, ty = (W + 15) // 16, (H + 15) // 16
    f = cpu._f32
    mx, my = f(proj.mean2d[:, 0]), f(proj.mean2d[:, 1])
    hx, hy = f(proj.half_extent[:, 0]), f(proj.half_extent[:, 1])
    starts, entries = cpu._bin(cpu._order(proj).numpy(), mx, my, hx, hy, W, H, tx, ty)
    conic = [f(proj.conic[:, j]) for j in range(3)]
    bg = np.array([0.1, 0.3, 0.7], np.float32)
    return (starts, entries, mx, my, hx, hy, *conic, f(proj.opacity), f(proj.color),
            f(proj.depth), bg, W, H, tx, ty)  # fmt: skip


def test_native_kernels_match_numba_on_20k_splats():
    _native_or_skip()
    args = _kernel_inputs(20_000, 256, 192)
    entries, mx = args[1], args[2]
    out, last = cpu._forward(*args)
    out_n, last_n = native.forward(*args)
    assert np.abs(out_n - out).max() <= 1e-5
    assert np.array_equal(last_n, last)  # the same pixels stop at the same entries
    rng = np.random.default_rng(0)
    g_rgb = rng.standard_normal(out.shape[:2] + (3,)).astype(np.float32)
    g_alpha = rng.standard_normal(out.shape[:2]).astype(np.float32)
    T_fin = np.ascontiguousarray(out[..., 3])
    bargs = (*args[:11], args[12], T_fin, last, g_rgb, g_alpha, *args[13:])
    gp = cpu._backward(*bargs)
    gp_n = native.backward(*bargs)
    g = cpu._reduce(entries, gp, mx.size)
    g_n = native.backward(*bargs, per_splat=True)
    # the per-splat sums are _reduce's of the per-entry gradients, bit for bit
    assert np.array_equal(g_n, native.reduce(entries, gp_n, mx.size))
    assert np.array_equal(native.reduce(entries, gp, mx.size), g)
    for j in range(9):  # mx, my, a, b, c, o, r, g, b
        for ref, got in ((gp[:, j], gp_n[:, j]), (g[:, j], g_n[:, j])):
            assert np.linalg.norm(got - ref) <= 1e-4 * np.linalg.norm(ref), j


def test_native_results_do_not_depend_on_the_threads():
    _native_or_skip()
    args = _kernel_inputs(5_000, 128, 96, seed=1)
    res = []
    before = native._threads
    try:
        for n in (1, 2, 3):
            native.set_threads(n)
            out, last = native.forward(*args)
            g_rgb = np.ones(out.shape[:2] + (3,), np.float32)
            g_alpha = np.full(out.shape[:2], 0.5, np.float32)
            bargs = (*args[:11], args[12], np.ascontiguousarray(out[..., 3]), last, g_rgb,
                     g_alpha, *args[13:])  # fmt: skip
            res.append((out, native.backward(*bargs, per_splat=True)))
    finally:
        native.set_threads(before)
    for out, g in res[1:]:
        assert np.array_equal(out, res[0][0]) and np.array_equal(g, res[0][1])


def test_native_exp_accuracy():
    """exp of the native kernels (a degree-5 polynomial) within 2e-7 relative on [-6, 0]."""
    _native_or_skip()
    x = np.linspace(-6.0, 0.0, 3_000_001, dtype=np.float32)
    err = np.abs(native.exp_neg(x).astype(np.float64) / np.exp(x.astype(np.float64)) - 1.0)
    assert err.max() <= 2e-7


def test_native_order_is_a_stable_argsort():
    _native_or_skip()
    g = torch.Generator().manual_seed(0)
    depth = torch.round(torch.rand(5000, generator=g) * 400) / 100  # many ties
    depth[:6] = torch.tensor([0.0, -0.0, float("inf"), -float("inf"), -1.5, float("nan")])
    valid = torch.rand(5000, generator=g) > 0.2
    ids = torch.nonzero(valid).squeeze(1)
    want = ids[torch.argsort(depth[ids], stable=True)]
    assert torch.equal(torch.from_numpy(native.order(depth.numpy(), valid.numpy())), want)
    assert native.order(depth[:0].numpy(), valid[:0].numpy()).size == 0


def test_native_build_is_atomic_and_cached(tmp_path, monkeypatch):
    if native.compiler() is None:
        pytest.skip("no C++ compiler")
    monkeypatch.setenv("WORLDGEN_NATIVE_DIR", str(tmp_path))
    renames = []
    real_replace = os.replace

    def replace(src, dst):
        renames.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", replace)
    path = native.build()
    # compiled under another name in the same directory, then renamed into place
    assert path.parent == tmp_path and path.is_file()
    assert len(renames) == 1 and renames[0][1] == path
    assert renames[0][0].parent == tmp_path and renames[0][0] != path
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    mtime = path.stat().st_mtime_ns
    assert native.build() == path and len(renames) == 1  # the second call reuses it
    assert path.stat().st_mtime_ns == mtime
    native._bind(ctypes.CDLL(str(path)))  # loads, and its constants are common.py's


# ----------------------------------------------------------------------------- native projection


def _projection_scene(n: int, seed: int, deg: int, k: int):
    """n float32 splats for a posed 40x30 camera (near 0.05, far 6) with every branch of the
    projection: behind the camera, nearer than near, beyond far, outside the EWA clamp on each
    side (centres up to 80 px off the image), sub-pixel to huge scales, unnormalised (and
    near-zero) quaternions, opacities below 1/255, colours clamped at 0; SH with k coefficients
    (k > (deg + 1)^2: gradient zeros above the degree)."""
    g = torch.Generator().manual_seed(seed)
    W, H, f = 40, 30, 40.0
    pose = Pose.from_cli(0.2, -0.1, 0.3, yaw_deg=8, pitch_deg=-4, roll_deg=2)
    cam = _cam(W, H, f, pose=pose)

    def uni(lo, hi, *shape):
        return torch.rand(*shape, generator=g) * (hi - lo) + lo

    z = uni(-1.0, 8.0, n)
    z[::23] = 0.03  # nearer than near
    u, v = uni(-80.0, W + 80.0, n), uni(-80.0, H + 80.0, n)
    local = torch.stack([(u - (W - 1) / 2) * z.abs() / f, (v - (H - 1) / 2) * z.abs() / f, z], 1)
    # camera frame -> the splats' frame
    R = torch.as_tensor(cam.viewmat[:3, :3], dtype=torch.float64)
    t = torch.as_tensor(cam.viewmat[:3, 3], dtype=torch.float64)
    means = ((local.double() - t) @ R).float()
    quats = torch.randn(n, 4, generator=g) * 10.0 ** uni(-3.0, 2.0, n, 1)
    quats[::17] = 1e-14  # the 1e-12 floor of the quaternion norm
    sh = torch.randn(n, k, 3, generator=g) * 0.6
    splats = Splats(
        means=means,
        quats=quats,
        log_scales=uni(-8.0, 1.5, n, 3),
        logit_opacities=uni(-8.0, 8.0, n),
        sh=sh,
        layers=torch.zeros(n, dtype=torch.uint8),
    )
    settings = make_settings(splats, cam, None, None, sh_degree=deg, background=None,
                             near=0.05, far=6.0)  # fmt: skip
    return splats, cam, settings


def _projection_args(splats, cam, settings):
    arrs = [getattr(splats, k).detach().float().contiguous().numpy() for k in PARAMS]
    Rv = np.ascontiguousarray(cam.viewmat[:3, :3], np.float64)
    tv = np.ascontiguousarray(cam.viewmat[:3, 3], np.float64)
    K = cam.intrinsics
    c = np.array([K.fx, K.fy, K.cx, K.cy], np.float64)
    return arrs, (settings.sh_degree, Rv, tv, c, settings.width, settings.height)


def _garbage_empty(shape, dtype):
    """native.empty's stand-in: memory full of NaN (True for bool), to see every element
    written."""
    return np.full(shape, True if np.dtype(dtype) == np.bool_ else np.nan, dtype)


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
@pytest.mark.parametrize(("n", "full_sh"), [(0, False), (1, True), (7, False), (301, True),
                                            (1002, False), (6001, True)])  # fmt: skip
def test_native_projection_matches_numba(n, full_sh, deg, monkeypatch):
    """Every output element written (they start as NaN), numba's values; n = 6001 with 16 SH
    coefficients: a g_sh of more than 1 MiB, which the backward pass prefaults (madvise)."""
    _native_or_skip()
    k = 16 if full_sh else (deg + 1) ** 2
    splats, cam, settings = _projection_scene(n, 100 * deg + n, deg, k)
    arrs, cargs = _projection_args(splats, cam, settings)
    near_far = (settings.near, settings.far)
    monkeypatch.setattr(native, "empty", _garbage_empty)
    out, valid = cpu._project_fwd(*arrs, *cargs, *near_far)
    out_n, valid_n = native.project_fwd(*arrs, *cargs, *near_far)
    assert out_n.dtype == np.float32 and out_n.shape == (n, 12) and valid_n.dtype == np.bool_
    assert np.array_equal(valid_n, valid)
    np.testing.assert_allclose(out_n, out, rtol=1e-6, atol=1e-6)
    if n >= 301:  # the scene has every case
        z = out[:, 5]
        assert (z < 0).any() and ((z > 0) & (z < 0.05)).any() and (z > 6.0).any()
        assert 0.2 * n < valid.sum() < 0.8 * n
        assert (out[valid, 7:10] == 0).any()  # clamped colours
        u, v = out[valid, 0], out[valid, 1]  # the EWA clamp is at ~6.5 px outside
        assert (u < -20).any() and (u > 60).any() and (v < -20).any() and (v > 50).any()
    rng = np.random.default_rng(n + deg)
    gs = [rng.standard_normal(s).astype(np.float32) for s in ((n, 2), (n, 3), (n,), (n, 3))]
    g_sh = np.full(arrs[4].shape, np.nan, np.float32)
    ref = cpu._project_bwd(*arrs, *cargs, valid, *gs, g_sh)
    got = native.project_bwd(*arrs, *cargs, valid, *gs)
    for name, r, x in zip(
        ("means", "quats", "log_scales", "logits", "sh"), (*ref, g_sh), got, strict=True
    ):
        assert x.dtype == np.float32 and x.shape == r.shape, name
        np.testing.assert_allclose(x, r.astype(np.float32), rtol=1e-6, atol=1e-6, err_msg=name)
        assert not np.any(x[~valid]), name  # zero where the splat is invalid
    assert not np.any(got[4][:, (deg + 1) ** 2 :])  # zero above the degree


def test_native_projection_does_not_depend_on_the_threads():
    _native_or_skip()
    splats, cam, settings = _projection_scene(999, 5, 3, 16)
    arrs, cargs = _projection_args(splats, cam, settings)
    rng = np.random.default_rng(0)
    gs = [rng.standard_normal(s).astype(np.float32) for s in ((999, 2), (999, 3), (999,), (999, 3))]
    res = []
    before = native._threads
    try:
        for t in (1, 2, 3):
            native.set_threads(t)
            out, valid = native.project_fwd(*arrs, *cargs, settings.near, settings.far)
            res.append((out, valid, *native.project_bwd(*arrs, *cargs, valid, *gs)))
    finally:
        native.set_threads(before)
    for r in res[1:]:
        assert all(np.array_equal(a, b) for a, b in zip(r, res[0], strict=True))


def test_native_projection_exp_log_accuracy():
    """The projection's float64 exp (range reduction + degree-13 polynomial) and log (fdlibm's)
    within 1 ulp of libm's (numpy's) over their whole range, subnormal results included."""
    _native_or_skip()
    rng = np.random.default_rng(0)

    def ulps(got, want):
        return np.abs(got - want) / np.spacing(np.abs(want))

    x = np.concatenate([rng.uniform(-745.0, 709.7, 1_000_000), rng.uniform(-1.0, 1.0, 200_000)])
    assert ulps(native.exp_f64(x), np.exp(x)).max() <= 1.0
    special = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 709.8, 710.0, 1e300, -745.2, -1e300])
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(native.exp_f64(special), np.exp(special))
    x = np.concatenate([rng.uniform(1.0, 255.0, 1_000_000), np.exp(rng.uniform(-700, 700, 10_000))])
    assert ulps(native.log_f64(x), np.log(x)).max() <= 1.0
    assert native.log_f64(np.array([1.0]))[0] == 0.0 and np.isnan(
        native.log_f64(np.array([np.nan]))
    )


@pytest.mark.parametrize("deg", [0, 3])
@pytest.mark.parametrize("case", ["three-hundred", "huge", "behind-and-near", "far-outside"])
def test_float32_parameters_match_reference(case, deg, kernels):
    """Float32 parameters (the native projection where it loads) against the reference."""
    n, seed, kw = CASES[case]
    splats, cam = random_scene(n, seed * 10 + deg, deg=deg, **kw)
    check(splats, cam, (0.1, 0.3, 0.7) if deg else None, seed=seed, dtype=torch.float32)


def test_projection_kernel_choice(monkeypatch):
    """Float32 parameters take the native projection, float64 ones (or WORLDGEN_NATIVE=0) numba."""
    _native_or_skip()
    splats, cam = random_scene(50, 2, deg=1)

    def fail(*a, **k):
        raise AssertionError("the wrong projection kernel ran")

    def run(dtype):
        s, _ = _with_grad(splats, dtype)
        out = rasterize(s, cam, backend="cpu")
        (out.rgb.sum() + out.alpha.sum()).backward()

    with monkeypatch.context() as m:
        m.setattr(cpu, "_project_fwd", fail)
        m.setattr(cpu, "_project_bwd", fail)
        run(torch.float32)
    with monkeypatch.context() as m:
        m.setattr(native, "project_fwd", fail)
        m.setattr(native, "project_bwd", fail)
        run(torch.float64)
        m.setenv("WORLDGEN_NATIVE", "0")
        run(torch.float32)
