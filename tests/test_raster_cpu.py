"""The numba tile rasterizer ("cpu") against the float64 brute-force reference: forward outputs
(max abs error <= 1e-4) and gradients w.r.t. every splat parameter (||g - g_ref|| / ||g_ref||
<= 1e-3 per tensor), on the raster tests' random scenes and the early-termination extremes."""

from __future__ import annotations

import pytest
import torch

from tests.test_raster import CASES, _cam, assert_close_outputs, random_scene
from worldgen.camera import Pose
from worldgen.raster import available_backends, rasterize, resolve_backend
from worldgen.raster.common import make_settings
from worldgen.raster.cpu import count_pairs
from worldgen.splats import Splats

PARAMS = ("means", "quats", "log_scales", "logit_opacities", "sh")
GRAD_TOL = 1e-3


def _with_grad(splats: Splats) -> tuple[Splats, dict[str, torch.Tensor]]:
    p = {k: getattr(splats, k).detach().clone().double().requires_grad_(True) for k in PARAMS}
    return Splats(**p, layers=splats.layers), p


def _grads(backend: str, splats: Splats, cam, bg, g_rgb, g_alpha, size=(None, None)):
    s, p = _with_grad(splats)
    out = rasterize(s, cam, *size, backend=backend, background=bg)
    loss = (out.rgb.double() * g_rgb).sum() + (out.alpha.double() * g_alpha).sum()
    if loss.requires_grad:
        loss.backward()
    return out, {k: (v.grad if v.grad is not None else torch.zeros_like(v)) for k, v in p.items()}


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


def check(splats, cam, bg=None, size=(None, None), seed=0, backend="cpu"):
    W = size[0] or cam.intrinsics.width
    H = size[1] or cam.intrinsics.height
    g_rgb, g_alpha = _upstream(H, W, seed)
    ref, g_ref = _grads("reference", splats, cam, bg, g_rgb, g_alpha, size)
    out, g = _grads(backend, splats, cam, bg, g_rgb, g_alpha, size)
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
