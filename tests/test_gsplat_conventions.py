"""worldgen's projection and SH follow gsplat's conventions: checked on CPU against gsplat's own
pure-torch functions (``gsplat/cuda/_torch_impl.py``, gsplat 1.5.3), so the CUDA backend can hand
the same camera to ``gsplat.rasterization`` (with the principal point shifted by +0.5 px: gsplat
puts pixel centres at i + 0.5, worldgen at i — see ``worldgen/raster/common.py``)."""

from __future__ import annotations

import pytest
import torch
from gsplat.cuda import _torch_impl as G  # noqa: E402  (the [dev] extra installs gsplat)

from tests.test_raster import random_scene
from worldgen.camera import Pose
from worldgen.raster.common import make_settings, project


@pytest.mark.parametrize("deg", [0, 1, 2, 3])
def test_projection_and_sh_match_gsplat_torch_impl(deg):
    pose = Pose.from_cli(0.3, -0.2, 0.5, yaw_deg=10, pitch_deg=-5, roll_deg=3)
    splats, cam = random_scene(500, 3 + deg, deg=deg, margin=40, z=(0.2, 5), pose=pose)
    st = make_settings(
        splats, cam, None, None, sh_degree=None, background=None, near=0.01, far=1e10
    )
    p = project(splats, cam, st)
    f64 = torch.float64
    covars, _ = G._quat_scale_to_covar_preci(
        splats.quats.double(), splats.log_scales.double().exp(), compute_preci=False
    )
    V = torch.as_tensor(cam.viewmat, dtype=f64)[None]
    K = torch.as_tensor(cam.K, dtype=f64).clone()
    K[0, 2] += 0.5  # gsplat's pixel-edge principal point
    K[1, 2] += 0.5
    W, H = cam.intrinsics.width, cam.intrinsics.height
    radii, m2d, depths, conics, _ = G._fully_fused_projection(
        splats.means.double(), covars, V, K[None], W, H, near_plane=0.01
    )
    ok = (radii[0] > 0).all(-1) if radii.ndim == 3 else radii[0] > 0
    assert ok.sum() > 20
    assert not (ok & ~p.valid).any()  # whatever gsplat keeps, we keep
    both = ok & p.valid
    assert torch.allclose(m2d[0][both] - 0.5, p.mean2d[both], atol=1e-9, rtol=0)
    scale = p.conic[both].abs().amax(-1, keepdim=True)
    assert float(((conics[0][both] - p.conic[both]).abs() / scale).max()) < 1e-9
    assert torch.allclose(depths[0][both], p.depth[both], atol=1e-12, rtol=0)
    campos = torch.inverse(V)[0, :3, 3]
    col = G._spherical_harmonics(deg, splats.means.double() - campos, splats.sh.double())
    assert torch.allclose(torch.clamp_min(col + 0.5, 0.0), p.color, atol=1e-9, rtol=0)


@pytest.mark.parametrize("deg", [0, 3])
def test_cuda_backend_arguments_match_gsplat_torch_impl(deg):
    """What the gsplat backend hands ``gsplat.rasterization`` (``gsplat_arguments``), run
    through gsplat's own pure-torch projection and SH on CPU, gives our projection: the +0.5 px
    principal point, scales/opacities activated, SH sliced to the degree, background per camera."""
    from worldgen.raster.gsplat_backend import gsplat_arguments

    pose = Pose.from_cli(-0.2, 0.1, 0.3, yaw_deg=-8, pitch_deg=4, roll_deg=0)
    splats, cam = random_scene(400, 20 + deg, deg=3, margin=20, z=(0.5, 4), pose=pose)
    st = make_settings(splats, cam, None, None, sh_degree=deg, background=(0.2, 0.4, 0.6),
                       near=0.01, far=1e10)  # fmt: skip
    kw = gsplat_arguments(splats, cam, st, "cpu")
    assert kw["colors"].shape == (400, (deg + 1) ** 2, 3) and kw["sh_degree"] == deg
    assert kw["backgrounds"].shape == (1, 3) and kw["rasterize_mode"] == "classic"
    assert (kw["width"], kw["height"]) == (cam.intrinsics.width, cam.intrinsics.height)
    covars, _ = G._quat_scale_to_covar_preci(kw["quats"], kw["scales"], compute_preci=False)
    radii, m2d, depths, conics, _ = G._fully_fused_projection(
        kw["means"], covars, kw["viewmats"], kw["Ks"], kw["width"], kw["height"],
        eps2d=kw["eps2d"], near_plane=kw["near_plane"], far_plane=kw["far_plane"],
    )  # fmt: skip
    p = project(splats, cam, st)
    ok = (radii[0] > 0).all(-1) if radii.ndim == 3 else radii[0] > 0
    both = ok & p.valid
    assert both.sum() > 50
    assert torch.allclose(m2d[0][both].double() - 0.5, p.mean2d[both], atol=2e-3, rtol=0)
    scale = p.conic[both].abs().amax(-1, keepdim=True)
    assert float(((conics[0][both].double() - p.conic[both]).abs() / scale).max()) < 1e-3
    assert torch.allclose(kw["opacities"].double()[both], p.opacity[both], atol=1e-6)
    campos = torch.inverse(kw["viewmats"])[0, :3, 3]
    col = G._spherical_harmonics(deg, kw["means"] - campos, kw["colors"])
    assert torch.allclose(torch.clamp_min(col + 0.5, 0.0).double(), p.color, atol=1e-5)


def test_gsplat_backend_is_registered_and_needs_cuda():
    from worldgen.errors import BackendError
    from worldgen.raster import available_backends, resolve_backend

    if torch.cuda.is_available():
        assert resolve_backend("auto").name == "gsplat"
    else:
        assert "gsplat" not in available_backends()
        assert resolve_backend("auto").name == "cpu"
        with pytest.raises(BackendError, match="cannot run here"):
            resolve_backend("gsplat")
