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
