"""Refinement (worldgen.optimize): schedules at their boundary steps, the loss going down on a
scene with a known answer, the depth anchor, pruning with the optimiser state, masks/layers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from tests.test_raster import random_scene
from worldgen.errors import InputError
from worldgen.optimize import (
    RefineConfig,
    View,
    current_splats,
    init_state,
    prune,
    refine,
    refine_step,
    should_prune,
    ssim,
)
from worldgen.raster import rasterize
from worldgen.splats import Splats


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(-10 * torch.log10(((a - b) ** 2).mean()))


@pytest.mark.parametrize(
    "step, expected",
    [(0, False), (1, False), (99, False), (100, False), (499, False), (500, True),
     (501, False), (599, False), (600, True)],
)  # fmt: skip
def test_prune_schedule_boundaries(step, expected):
    cfg = RefineConfig(iters=1000, prune_every=100, prune_from=500)
    assert should_prune(step, cfg) is expected


def test_prune_schedule_off_and_from_zero():
    assert not any(should_prune(s, RefineConfig(prune_every=0)) for s in range(0, 300))
    cfg = RefineConfig(prune_every=10, prune_from=0)
    assert not should_prune(0, cfg)  # nothing has been optimised at step 0
    assert should_prune(10, cfg) and not should_prune(11, cfg)


def test_config_validation():
    with pytest.raises(InputError):
        RefineConfig(iters=-1)
    with pytest.raises(InputError):
        RefineConfig(ssim_weight=1.5)
    with pytest.raises(InputError):
        init_state(random_scene(5, 0)[0], [], RefineConfig(iters=1))


def test_ssim_known_values():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(24, 32, 3, generator=g)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert float(ssim(a, noisy)) < 0.9


def _target_and_start(seed: int = 3):
    """A scene rendered as the target, and the same geometry with wrong colours/opacities."""
    truth, cam = random_scene(200, seed, deg=1, log_scale=(-2.5, -1.5), logit=(0.0, 3.0))
    with torch.no_grad():
        target = rasterize(truth, cam, backend="cpu").rgb
    g = torch.Generator().manual_seed(seed + 1)
    start = Splats(
        means=truth.means.clone(),
        quats=truth.quats.clone(),
        log_scales=truth.log_scales.clone(),
        logit_opacities=truth.logit_opacities + 0.8 * torch.randn(200, generator=g),
        sh=truth.sh + 0.4 * torch.randn(truth.sh.shape, generator=g),
        layers=truth.layers.clone(),
    )
    return truth, start, cam, target


def test_refinement_recovers_colours_and_opacities():
    truth, start, cam, target = _target_and_start()
    before = psnr(rasterize(start, cam, backend="cpu").rgb.detach(), target)
    cfg = RefineConfig(iters=60, lr_sh0=2e-2, lr_sh_rest=5e-3, lr_opacity=5e-2, ssim_weight=0.2)
    out, facts = refine(start, [View(target, cam)], cfg)
    after = psnr(rasterize(out, cam, backend="cpu").rgb, target)
    assert facts["loss_last"] < 0.5 * facts["loss_first"]
    assert after > before + 6.0, (before, after)
    assert not out.means.requires_grad and len(out) == 200


def test_depth_anchor_keeps_splats_on_their_surfaces():
    truth, start, cam, target = _target_and_start(5)
    moved = Splats(**{**{k: getattr(start, k) for k in
                         ("quats", "log_scales", "logit_opacities", "sh", "layers")},
                      "means": start.means})  # fmt: skip
    offsets = {}
    for w in (0.0, 100.0):
        cfg = RefineConfig(iters=30, lr_means=5e-3, anchor_weight=w)  # positions free
        out, _ = refine(moved, [View(target, cam)], cfg)
        scale = torch.exp(truth.log_scales).amax(1)
        offsets[w] = float(((out.means - truth.means).norm(dim=1) / scale).median())
    assert offsets[100.0] < 0.5 * offsets[0.0], offsets


def test_prune_removes_transparent_splats_with_their_optimizer_state():
    truth, start, cam, target = _target_and_start(7)
    logits = start.logit_opacities.clone()
    logits[:20] = -9.0  # opacity ~1e-4
    start = Splats(start.means, start.quats, start.log_scales, logits, start.sh, start.layers)
    cfg = RefineConfig(iters=3, prune_every=1, prune_opacity=0.005)
    state = init_state(start, [View(target, cam)], cfg)
    refine_step(state, cfg)
    n = prune(state, cfg)
    assert n >= 20 and len(current_splats(state)) == 200 - n
    for k, t in state.params.items():
        opt = state.optimizers[k]
        assert opt.param_groups[0]["params"][0] is t
        assert opt.state[t]["exp_avg"].shape == t.shape
    assert state.anchor.shape[0] == 200 - n
    refine_step(state, cfg)  # still runs after pruning


def test_mask_and_layer_views():
    truth, start, cam, target = _target_and_start(9)
    H, W = target.shape[:2]
    mask = torch.zeros(H, W)
    mask[:, : W // 2] = 1.0
    garbage = target.clone()
    garbage[:, W // 2 :] = torch.rand(H, W - W // 2, 3, generator=torch.Generator().manual_seed(0))
    # the masked-out half does not count: the true scene has (almost) zero loss against it
    st = init_state(truth, [View(garbage, cam, mask=mask)], RefineConfig(iters=1, ssim_weight=0))
    loss = refine_step(st, RefineConfig(iters=1, ssim_weight=0, anchor_weight=0))
    assert loss < 1e-4
    # a layer view renders only its layers' splats
    layers = torch.zeros(200, dtype=torch.uint8)
    layers[100:] = 1
    two = Splats(
        truth.means, truth.quats, truth.log_scales, truth.logit_opacities, truth.sh, layers
    )
    with torch.no_grad():
        names = ("means", "quats", "log_scales", "logit_opacities", "sh", "layers")
        sub = Splats(*(getattr(two, k)[:100] for k in names))
        only0 = rasterize(sub, cam, backend="cpu").rgb
    cfg = RefineConfig(iters=1, ssim_weight=0, anchor_weight=0)
    st = init_state(two, [View(only0, cam, layers=(0,))], cfg)
    assert refine_step(st, cfg) < 1e-4
    assert math.isfinite(float(np.float64(st.history[-1])))


def test_build_with_refinement_records_it(tmp_path):
    """``refine.iters`` in a preset runs the stage in ``worldgen build`` (photo + layer views)."""
    import json

    from tests.conftest import save_rgb, textured
    from worldgen.config import load_preset
    from worldgen.pipeline import build

    img = save_rgb(textured(48, 64, seed=2), tmp_path / "p.png")
    cfg = load_preset("fast").replace(refine={"iters": 3, "prune_every": 2})
    res = build(img, tmp_path / "r.world", cfg, use_cache=False)
    m = json.loads((res.path / "world.json").read_text())
    assert m["refine"]["iters"] == 3 and "refine" in m["timings"]
    assert m["refine"]["loss_last"] <= m["refine"]["loss_first"] * 1.05
    assert m["refine"]["splats"] == m["splats"]["count"]
    assert m["config"]["refine"]["iters"] == 3
