"""Splat refinement against the views we know: parameters in a dict, explicit state, pure steps.

The splats lifting makes are a good start; refining colours, opacities, scales, rotations and
small position offsets against the source photo (and each layer's filled view, masked to where
the layer has content) is what makes a world look right (the optimisation issue).

* ``init_state(splats, views, config)`` -> ``RefineState`` (parameters dict, Adam optimisers per
  parameter group with their own learning rates, the anchor positions, the step);
* ``refine_step(state, config)`` -> loss: one pass over the views (rasterize with the
  differentiable ``cpu`` backend, loss ``(1 - w) L1 + w (1 - SSIM)``, plus the depth anchor
  ``anchor_weight * mean(|mu - mu0|^2 / s^2)`` that keeps splats on their surfaces), Adam;
* schedule conditions as small pure functions (``should_prune``), each tested at its boundary
  steps; ``prune`` removes splats whose opacity fell below ``prune_opacity``;
* ``refine(splats, views, config)``: the loop, returning the refined ``Splats`` and facts.

Densification (gsplat's strategies on CUDA) is not implemented yet.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .camera import Camera
from .errors import InputError
from .raster import rasterize
from .splats import Splats

PARAMS = ("means", "quats", "log_scales", "logit_opacities", "sh")


@dataclass(frozen=True)
class RefineConfig:
    """Settings of the refinement (``refine`` in presets)."""

    iters: int = 0
    """Passes over the views (0 = no refinement)."""
    lr_means: float = 0.0
    """Adam learning rate of the centres, in metres (0 = positions fixed). Off by default: the
    layered scene stacks splats at exactly the same depth (a layer and what is synthesised
    behind it), and moving centres by even 1e-5 m reorders those ties and jumps the loss
    (measured); try 1e-5..1e-4 on worlds without such stacks."""
    lr_quats: float = 1e-3
    lr_log_scales: float = 5e-3
    lr_opacity: float = 5e-2
    lr_sh0: float = 2.5e-3
    lr_sh_rest: float = 1.25e-4
    """Learning rate of the view-dependent SH coefficients (degree >= 1): 1/20 of the DC's."""
    ssim_weight: float = 0.2
    """w in (1 - w) L1 + w D-SSIM (3DGS's 0.2)."""
    anchor_weight: float = 1.0
    """Weight of the depth anchor: mean squared offset of the centres from where lifting put
    them, in units of each splat's own largest scale."""
    prune_every: int = 0
    """Remove transparent splats every this many steps (0 = never), after ``prune_from``."""
    prune_from: int = 1
    prune_opacity: float = 0.005
    """Splats whose opacity falls below this are removed when pruning runs."""

    def __post_init__(self) -> None:
        if self.iters < 0:
            raise InputError(f"refine.iters must be >= 0, got {self.iters}")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise InputError(f"refine.ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if self.prune_every < 0 or self.prune_from < 0:
            raise InputError("refine.prune_every and refine.prune_from must be >= 0")


@dataclass
class View:
    """A target view: image [H, W, 3] float32 in [0, 1], the camera that sees it, an optional
    mask [H, W] (1 = counts) and the splat layer ids it renders (None = all splats)."""

    image: torch.Tensor
    camera: Camera
    mask: torch.Tensor | None = None
    layers: tuple[int, ...] | None = None


@dataclass
class RefineState:
    params: dict[str, torch.Tensor]
    optimizers: dict[str, torch.optim.Optimizer]
    anchor: torch.Tensor  # [N, 3] the centres lifting made
    layers: torch.Tensor  # [N] uint8
    views: list[View]
    step: int = 0
    history: list[float] = field(default_factory=list)


# ----------------------------------------------------------------------------- schedules


def should_prune(step: int, config: RefineConfig) -> bool:
    """Prune after ``step`` (1-based count of finished steps)?"""
    return (
        config.prune_every > 0
        and step > 0
        and step >= config.prune_from
        and step % config.prune_every == 0
    )


# ----------------------------------------------------------------------------- loss


def _gauss_window(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]  # [1, 1, k, k]


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two [H, W, 3] images in [0, 1] (11x11 Gaussian window, sigma 1.5, as 3DGS)."""
    assert a.shape == b.shape and a.ndim == 3, (a.shape, b.shape)
    x = a.permute(2, 0, 1)[:, None]  # [3, 1, H, W]
    y = b.permute(2, 0, 1)[:, None]
    w = _gauss_window().to(a.dtype)
    pad = w.shape[-1] // 2

    def f(t):
        return torch.nn.functional.conv2d(t, w, padding=pad)

    mx, my = f(x), f(y)
    sxx = f(x * x) - mx * mx
    syy = f(y * y) - my * my
    sxy = f(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mx * my + c1) * (2 * sxy + c2)) / ((mx * mx + my * my + c1) * (sxx + syy + c2))
    return s.mean()


def view_loss(render: torch.Tensor, view: View, ssim_weight: float) -> torch.Tensor:
    target = view.image
    if view.mask is not None:
        m = view.mask[..., None].to(render.dtype)
        render = render * m
        target = target * m
        l1 = (render - target).abs().sum() / (3 * m.sum()).clamp_min(1.0)
    else:
        l1 = (render - target).abs().mean()
    if ssim_weight == 0:
        return l1
    return (1 - ssim_weight) * l1 + ssim_weight * (1 - ssim(render, target))


# ----------------------------------------------------------------------------- state


def _learning_rates(config: RefineConfig) -> dict[str, float]:
    return {
        "means": config.lr_means,
        "quats": config.lr_quats,
        "log_scales": config.lr_log_scales,
        "logit_opacities": config.lr_opacity,
        "sh0": config.lr_sh0,
        "shN": config.lr_sh_rest,
    }


def _make_optimizers(params: dict[str, torch.Tensor], config: RefineConfig):
    lrs = _learning_rates(config)
    opts = {}
    for k, t in params.items():
        if t.numel() == 0:
            continue
        try:
            opts[k] = torch.optim.Adam([t], lr=lrs[k], eps=1e-15, fused=True)
        except (RuntimeError, TypeError):  # fused needs a recent torch on this device
            opts[k] = torch.optim.Adam([t], lr=lrs[k], eps=1e-15)
    return opts


def init_state(splats: Splats, views: list[View], config: RefineConfig) -> RefineState:
    """Parameters (leaf tensors: the SH split into DC and the rest, which learn at different
    rates), one Adam per group and the anchor positions."""
    if not views:
        raise InputError("refinement needs at least one view")
    p = {
        "means": splats.means.detach().clone().float(),
        "quats": splats.quats.detach().clone().float(),
        "log_scales": splats.log_scales.detach().clone().float(),
        "logit_opacities": splats.logit_opacities.detach().clone().float(),
        "sh0": splats.sh[:, :1].detach().clone().float(),
        "shN": splats.sh[:, 1:].detach().clone().float(),
    }
    for t in p.values():
        t.requires_grad_(True)
    return RefineState(
        p, _make_optimizers(p, config), splats.means.detach().clone().float(), splats.layers, views
    )


def current_splats(state: RefineState) -> Splats:
    p = state.params
    return Splats(
        means=p["means"],
        quats=p["quats"],
        log_scales=p["log_scales"],
        logit_opacities=p["logit_opacities"],
        sh=torch.cat([p["sh0"], p["shN"]], dim=1),
        layers=state.layers,
    )


def _subset(s: Splats, keep: torch.Tensor) -> Splats:
    return Splats(
        means=s.means[keep],
        quats=s.quats[keep],
        log_scales=s.log_scales[keep],
        logit_opacities=s.logit_opacities[keep],
        sh=s.sh[keep],
        layers=s.layers[keep],
    )


def refine_step(state: RefineState, config: RefineConfig, *, backend: str = "cpu") -> float:
    """One pass over the views: loss, gradients, one Adam step per group. Returns the loss."""
    for opt in state.optimizers.values():
        opt.zero_grad(set_to_none=True)
    splats = current_splats(state)
    total = 0.0
    for view in state.views:
        s = splats
        if view.layers is not None:
            keep = torch.isin(state.layers, torch.tensor(view.layers, dtype=state.layers.dtype))
            s = _subset(splats, keep)
        out = rasterize(s, view.camera, backend=backend)
        loss = view_loss(out.rgb, view, config.ssim_weight) / len(state.views)
        loss.backward()
        total += float(loss.detach())
    if config.anchor_weight > 0:
        p = state.params
        scale = torch.exp(p["log_scales"].detach()).amax(dim=1).clamp_min(1e-6)
        off = ((p["means"] - state.anchor) ** 2).sum(dim=1) / (scale * scale)
        anchor = config.anchor_weight * off.mean()
        anchor.backward()
        total += float(anchor.detach())
    for opt in state.optimizers.values():
        opt.step()
    state.step += 1
    state.history.append(total)
    return total


@torch.no_grad()
def prune(state: RefineState, config: RefineConfig) -> int:
    """Remove splats with opacity < ``prune_opacity`` (parameters, Adam moments, anchors)."""
    thr = math.log(config.prune_opacity / (1 - config.prune_opacity))
    keep = state.params["logit_opacities"] >= thr
    n_drop = int((~keep).sum())
    if n_drop == 0:
        return 0
    new = {}
    for k, t in state.params.items():
        nt = t.detach()[keep].clone().requires_grad_(True)
        opt = state.optimizers.get(k)
        if opt is not None:
            st = opt.state.pop(t, None)
            if st is not None:  # Adam's moments follow their splats
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        st[key] = st[key][keep]
                opt.state[nt] = st
            opt.param_groups[0]["params"] = [nt]
        new[k] = nt
    state.params = new
    state.anchor = state.anchor[keep]
    state.layers = state.layers[keep]
    return n_drop


def refine(
    splats: Splats, views: list[View], config: RefineConfig, *, backend: str = "cpu"
) -> tuple[Splats, dict]:
    """Run ``config.iters`` refinement steps; returns (refined splats, facts for world.json)."""
    if config.iters == 0:
        return splats, {"iters": 0}
    state = init_state(splats, views, config)
    pruned = 0
    for _ in range(config.iters):
        refine_step(state, config, backend=backend)
        if should_prune(state.step, config):
            pruned += prune(state, config)
    out = current_splats(state)
    out = Splats(**{k: getattr(out, k).detach() for k in PARAMS}, layers=out.layers)
    return out, {
        "iters": config.iters,
        "loss_first": state.history[0],
        "loss_last": state.history[-1],
        "pruned": pruned,
        "splats": len(out),
    }
