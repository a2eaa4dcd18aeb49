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
    SPLIT_OFFSET,
    SPLIT_OPACITY,
    SPLIT_SCALE,
    RefineConfig,
    View,
    current_splats,
    densify,
    init_state,
    lr_factor,
    prune,
    refine,
    refine_step,
    should_densify,
    should_prune,
    ssim,
)
from worldgen.raster import rasterize
from worldgen.raster.common import quat_to_rotmat
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


@pytest.mark.parametrize(
    "step, expected",
    [(0, False), (1, False), (4, False), (5, True), (6, False), (9, False), (10, True),
     (15, True), (16, False), (20, False)],
)  # fmt: skip
def test_densify_schedule_boundaries(step, expected):
    cfg = RefineConfig(iters=30, densify_every=5, densify_from=5, densify_until=15)
    assert should_densify(step, cfg) is expected


def test_densify_schedule_off_and_open_ended():
    assert not any(should_densify(s, RefineConfig(densify_every=0)) for s in range(0, 200))
    cfg = RefineConfig(densify_every=3, densify_from=0, densify_until=0)
    assert not should_densify(0, cfg)
    assert should_densify(3, cfg) and should_densify(999, cfg) and not should_densify(1000, cfg)


def test_lr_decay_schedule_boundaries():
    cfg = RefineConfig(iters=11, lr_decay=0.1)
    assert lr_factor(0, cfg) == 1.0
    assert lr_factor(5, cfg) == pytest.approx(0.1**0.5)
    assert lr_factor(10, cfg) == pytest.approx(0.1)
    assert lr_factor(11, cfg) == pytest.approx(0.1)  # past the end: held
    assert lr_factor(7, RefineConfig(iters=11)) == 1.0
    assert lr_factor(0, RefineConfig(iters=1, lr_decay=0.1)) == 1.0


def test_lr_decay_reaches_the_optimisers():
    """refine_step sets every group's rate for its pass: lr * factor."""
    splats, cam = random_scene(20, seed=1)
    with torch.no_grad():
        target = rasterize(splats, cam, backend="cpu").rgb
    cfg = RefineConfig(iters=3, lr_decay=0.25)
    state = init_state(splats, [View(target, cam)], cfg)
    for step in range(3):
        refine_step(state, cfg)
        lr = state.optimizers["sh0"].param_groups[0]["lr"]
        assert lr == pytest.approx(cfg.lr_sh0 * 0.25 ** (step / 2))


def test_config_validation():
    with pytest.raises(InputError):
        RefineConfig(iters=-1)
    with pytest.raises(InputError):
        RefineConfig(ssim_weight=1.5)
    for bad in (0.0, 1.5):
        with pytest.raises(InputError):
            RefineConfig(lr_decay=bad)
    with pytest.raises(InputError):
        init_state(random_scene(5, 0)[0], [], RefineConfig(iters=1))


def test_ssim_known_values():
    g = torch.Generator().manual_seed(0)
    a = torch.rand(24, 32, 3, generator=g)
    assert float(ssim(a, a)) == pytest.approx(1.0, abs=1e-6)
    noisy = (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(0, 1)
    assert float(ssim(a, noisy)) < 0.9


def test_ssim_equals_the_windowed_definition():
    """The separable blur gives 3DGS's SSIM: an 11x11 Gaussian window (sigma 1.5) by conv2d."""
    g = torch.Generator().manual_seed(1)
    a = torch.rand(37, 53, 3, generator=g, dtype=torch.float64)
    b = (a + 0.15 * torch.randn(a.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    x1 = torch.arange(11, dtype=torch.float64) - 5
    w1 = torch.exp(-(x1 * x1) / (2 * 1.5**2))
    w = (w1[:, None] * w1[None, :]) / w1.sum() ** 2

    def f(t):
        return torch.nn.functional.conv2d(t.permute(2, 0, 1)[:, None], w[None, None], padding=5)

    mx, my = f(a), f(b)
    sxx, syy, sxy = f(a * a) - mx * mx, f(b * b) - my * my, f(a * b) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    ref = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    assert float(ssim(a, b)) == pytest.approx(float(ref.mean()), abs=1e-6)


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


def test_densify_splits_where_the_view_is_underfitted():
    """Long splats of one colour on the left half where the target has two colours along each
    (a pair of round dots), small splats on the right half that already render the target: the
    splits go to the left half, children sit on the parent's major axis with the ``SPLIT_*``
    scale and opacity, the optimiser state, anchors and layers follow, and refining on with the
    new splats fits the left half better than the same number of steps without splitting."""
    from tests.test_raster import _cam

    W, H = 48, 32
    cam = _cam(W, H, float(W))
    K = cam.intrinsics
    g = torch.Generator().manual_seed(0)

    def grid(u0, u1, v0, v1, du, dv):
        uu, vv = torch.meshgrid(torch.arange(u0, u1, du), torch.arange(v0, v1, dv),
                                indexing="xy")  # fmt: skip
        return torch.stack([uu, vv], -1).reshape(-1, 2)

    def make(uv, sigma_px, logit, layer, z=None, sh=None):
        m = len(uv)
        if z is None:  # no equal-depth ties: centres may move
            z = 2.0 + 0.2 * torch.rand(m, generator=g)
        means = torch.stack([(uv[:, 0] - K.cx) * z / K.fx, (uv[:, 1] - K.cy) * z / K.fy, z], 1)
        return Splats(
            means=means,
            quats=torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(m, 1),
            log_scales=torch.log(torch.tensor(sigma_px)[None, :] * z[:, None] / K.fx),
            logit_opacities=torch.full((m,), logit),
            sh=torch.rand(m, 1, 3, generator=g) - 0.5 if sh is None else sh,
            layers=torch.full((m,), layer, dtype=torch.uint8),
        )

    def cat(a, b):
        names = ("means", "quats", "log_scales", "logit_opacities", "sh", "layers")
        return Splats(*(torch.cat([getattr(a, k), getattr(b, k)]) for k in names))

    uv_big = grid(4.0, 18, 2.0, 32, 8, 4)  # 3 sigma: up to u = 21
    big = make(uv_big, [3.0, 1.0, 0.05], 3.0, 0)
    small = make(grid(28.5, 48, 0.5, 32, 1.5, 1.5), [0.8] * 3, 3.0, 1)  # out of reach of the big
    # the target: each long splat's two halves in two colours of which it has the mean
    z = big.means[:, 2]
    c0 = big.sh + (torch.rand(len(big), 1, 3, generator=g) - 0.5)
    c1 = 2 * big.sh - c0
    left = make(uv_big - torch.tensor([2.5, 0.0]), [1.5, 1.0, 0.05], 3.0, 0, z, c0)
    right = make(uv_big + torch.tensor([2.5, 0.0]), [1.5, 1.0, 0.05], 3.0, 0, z, c1)
    splats = cat(big, small)
    n_big, n = len(big), len(splats)
    with torch.no_grad():
        target = rasterize(cat(cat(left, right), small), cam, backend="cpu").rgb
    cfg = RefineConfig(iters=6, densify_every=3, densify_from=3, densify_fraction=0.5,
                       densify_min_px=1.0, ssim_weight=0.0, lr_sh0=1e-2, lr_means=5e-3,
                       anchor_weight=0.0)  # fmt: skip
    state = init_state(splats, [View(target, cam)], cfg)
    for _ in range(3):
        refine_step(state, cfg)
    assert should_densify(state.step, cfg)
    parents = {k: t.detach().clone() for k, t in state.params.items()}
    seen = int((state.grad_count > 0).sum())
    added = densify(state, cfg)
    assert added == int(0.5 * seen) > 0
    m = state.params["means"].detach()
    assert m.shape[0] == n + added  # each split: parent removed, two children appended
    # the kept rows are the unsplit parents, in order; the split parents are the rest
    d_kept = torch.cdist(
        parents["means"], m[: n - added], compute_mode="donot_use_mm_for_euclid_dist"
    )
    kept = d_kept.min(dim=1).values == 0
    assert int((~kept).sum()) == added
    split = torch.nonzero(~kept).squeeze(1)
    assert bool((split < n_big).all()), "splits went to the well-fitted half"
    # children j and j + added share a parent: the one midway between them
    children = m[n - added :]
    mid = (children[:added] + children[added:]) / 2
    d_par = torch.cdist(mid, parents["means"][split], compute_mode="donot_use_mm_for_euclid_dist")
    assert float(d_par.min(dim=1).values.max()) < 1e-6
    par = split[d_par.argmin(dim=1)].repeat(2)
    assert len(set(par.tolist())) == added
    centre = parents["means"][par]
    ls_par = parents["log_scales"][par]
    axis = ls_par.argmax(dim=1)
    sig = torch.exp(ls_par).amax(dim=1)
    dist = (children - centre).norm(dim=1)
    assert torch.allclose(dist, SPLIT_OFFSET * sig, rtol=1e-4)
    major = quat_to_rotmat(parents["quats"][par])[torch.arange(len(par)), :, axis]
    cos = ((children - centre) * major).sum(dim=1) / dist
    assert bool((cos.abs() > 1 - 1e-5).all()), "children off the parent's major axis"
    expected = ls_par.clone()
    expected[torch.arange(len(par)), axis] += math.log(SPLIT_SCALE)
    ls = state.params["log_scales"].detach()[n - added :]
    assert torch.allclose(ls, expected, atol=1e-6)
    op_child = torch.sigmoid(state.params["logit_opacities"].detach()[n - added :])
    op_par = torch.sigmoid(parents["logit_opacities"][par])
    assert torch.allclose(op_child, SPLIT_OPACITY * op_par, rtol=1e-5)
    for k, t in state.params.items():
        assert t.shape[0] == n + added, k
        opt = state.optimizers.get(k)
        if opt is None:  # the SH rest of a degree-0 scene: empty, nothing to optimise
            assert t.numel() == 0
            continue
        assert opt.param_groups[0]["params"][0] is t
        assert opt.state[t]["exp_avg"].shape == t.shape
        assert float(opt.state[t]["exp_avg"][n - added :].abs().max()) == 0.0
    assert state.anchor.shape[0] == m.shape[0] and state.layers.shape[0] == m.shape[0]
    assert bool((state.layers[n - added :] == 0).all())  # the big splats' layer
    assert state.grad_count is not None and float(state.grad_count.sum()) == 0.0
    # the refined, densified scene fits the checkerboard half better than without splitting
    for _ in range(40):
        refine_step(state, cfg)
    plain = init_state(splats, [View(target, cam)], cfg)
    for _ in range(43):
        refine_step(plain, cfg)
    with torch.no_grad():
        a = rasterize(current_splats(state), cam, backend="cpu").rgb[:, :24]
        b = rasterize(current_splats(plain), cam, backend="cpu").rgb[:, :24]
    pa, pb = psnr(a, target[:, :24]), psnr(b, target[:, :24])
    assert pa > pb + 0.5, (pa, pb)


def test_refine_reports_source_psnr():
    truth, start, cam, target = _target_and_start(11)
    out, facts = refine(start, [View(target, cam)], RefineConfig(iters=10, lr_sh0=2e-2))
    before = psnr(rasterize(start, cam, backend="cpu").rgb.detach(), target)
    after = psnr(rasterize(out, cam, backend="cpu").rgb, target)
    assert facts["source_psnr_before"] == pytest.approx(before, abs=1e-3)
    assert facts["source_psnr_after"] == pytest.approx(after, abs=1e-3)
    assert facts["source_psnr_after"] > facts["source_psnr_before"]


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
    q = m["quality"]
    assert q["source_psnr_db"] == pytest.approx(m["refine"]["source_psnr_after"], abs=0.01)
    assert 0.0 < q["source_ssim"] <= 1.0 and q["width"] == 64 and q["height"] == 48


def test_quality_preset_refinement_does_not_degrade_the_photo(tmp_path):
    """The shipped ``quality`` refinement (30 passes, pruning) on a small build: the source view
    ends no worse than the colour solve left it."""
    import json

    from tests.conftest import save_rgb, textured
    from worldgen.config import load_preset
    from worldgen.pipeline import build

    cfg = load_preset("quality")
    assert cfg.refine.iters > 0
    img = save_rgb(textured(72, 96, seed=5), tmp_path / "q.png")
    res = build(img, tmp_path / "q.world", cfg, use_cache=False)
    r = json.loads((res.path / "world.json").read_text())["refine"]
    assert r["iters"] == cfg.refine.iters
    assert r["source_psnr_after"] >= r["source_psnr_before"] - 0.05, r


@pytest.mark.parametrize("opacity", [0.99, 0.6, 0.1])
def test_split_renders_nearly_as_the_parent(opacity):
    """Splitting every splat of a scene of flat, elongated discs (as lifting makes them) barely
    changes the render: refinement runs tens of passes, a split that changed the picture would
    not recover. 3DGS's split (two samples of the parent's Gaussian with 1/1.6 of its scales and
    its full opacity) changes it several times more."""
    from tests.test_raster import _cam

    W, H = 64, 48
    cam = _cam(W, H, float(W))
    K = cam.intrinsics
    g = torch.Generator().manual_seed(3)
    m = 40
    z = 2.0 + torch.rand(m, generator=g)
    u, v = torch.rand(m, generator=g) * W, torch.rand(m, generator=g) * H
    means = torch.stack([(u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z], 1)
    sx = 3.0 * z / K.fx * (1 + torch.rand(m, generator=g))  # 3-6 px along x, thin along z
    log_scales = torch.stack([sx, sx / 3, sx / 50], 1).log()
    quats = torch.nn.functional.normalize(
        torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.3 * torch.randn(m, 4, generator=g), dim=-1
    )
    splats = Splats(
        means=means,
        quats=quats,
        log_scales=log_scales,
        logit_opacities=torch.full((m,), math.log(opacity / (1 - opacity))),
        sh=torch.rand(m, 1, 3, generator=g) - 0.5,
        layers=torch.zeros(m, dtype=torch.uint8),
    )
    with torch.no_grad():
        before = rasterize(splats, cam, backend="cpu")
    cfg = RefineConfig(iters=1, densify_every=1, densify_fraction=1.0, densify_min_px=1.0)
    state = init_state(splats, [View(before.rgb, cam)], cfg)
    state.grad_accum = torch.rand(m, generator=g) + 0.1
    state.grad_count = torch.ones(m)
    assert densify(state, cfg) == m
    with torch.no_grad():
        after = rasterize(current_splats(state), cam, backend="cpu")
    # 3DGS's split of the same splats
    s = torch.exp(log_scales)
    R = quat_to_rotmat(quats)
    kids = [means + torch.einsum("nij,nj->ni", R, torch.randn(m, 3, generator=g) * s)
            for _ in range(2)]  # fmt: skip
    gs = Splats(
        means=torch.cat(kids),
        quats=quats.repeat(2, 1),
        log_scales=(log_scales - math.log(1.6)).repeat(2, 1),
        logit_opacities=splats.logit_opacities.repeat(2),
        sh=splats.sh.repeat(2, 1, 1),
        layers=splats.layers.repeat(2),
    )
    with torch.no_grad():
        gs_render = rasterize(gs, cam, backend="cpu")
    err = float((after.alpha - before.alpha).abs().mean())
    err_gs = float((gs_render.alpha - before.alpha).abs().mean())
    assert err < 0.02 and err * 3 < err_gs, (err, err_gs)
    assert psnr(after.rgb, before.rgb) > 30.0, psnr(after.rgb, before.rgb)
