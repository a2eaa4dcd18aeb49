"""Splat refinement against the views we know: parameters in a dict, explicit state, pure steps.

The splats lifting makes are a good start; refining colours, opacities, scales, rotations and
small position offsets against the source photo (and each layer's filled view, masked to where
the layer has content) is what makes a world look right (the optimisation issue).

* ``init_state(splats, views, config)`` -> ``RefineState`` (parameters dict, Adam optimisers per
  parameter group with their own learning rates, the anchor positions, the step);
* ``refine_step(state, config)`` -> loss: one pass over the views (rasterize with the
  differentiable ``cpu`` backend, loss ``(1 - w) L1 + w (1 - SSIM)``, plus the depth anchor
  ``anchor_weight * mean(|mu - mu0|^2 / s^2)`` that keeps splats on their surfaces), Adam;
* schedule conditions as small pure functions (``should_prune``, ``should_densify``), each
  tested at its boundary steps; ``prune`` removes splats whose opacity fell below
  ``prune_opacity``; ``densify`` splits the splats with the largest accumulated screen-space
  positional gradient (the under-fitted regions, 3DGS's criterion) into two that together
  render nearly as the parent did (``SPLIT_*``);
* ``refine(splats, views, config)``: the loop, returning the refined ``Splats`` and facts
  (loss and source-view PSNR before and after).

Densification is our own, identical on every backend (gsplat's ``DefaultStrategy`` is not used:
it needs gsplat's own ``means2d`` gradients, and in 1.5.3 its opacity reset never fires).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .camera import Camera
from .errors import InputError
from .raster import rasterize
from .raster.common import quat_to_rotmat
from .splats import Splats

PARAMS = ("means", "quats", "log_scales", "logit_opacities", "sh")

try:
    from numba import njit, prange

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - numba is a declared dependency
    HAVE_NUMBA = False


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
    lr_quats: float = 3e-3
    """The rates are 3x 3DGS's, which are made for thousands of steps: at our tens of passes
    those leave the source view still climbing ~0.2 dB per pass (living_room at 512 px, 30
    passes: 50.7 dB with them, 53.6 dB at 3x; `default`'s 8 passes at 3x: +1.0-2.5 dB on the
    five demos, and the Middlebury right view no worse)."""
    lr_log_scales: float = 1.5e-2
    lr_opacity: float = 0.15
    lr_sh0: float = 7.5e-3
    lr_sh_rest: float = 3.75e-4
    """Learning rate of the view-dependent SH coefficients (degree >= 1): 1/20 of the DC's."""
    lr_decay: float = 1.0
    """Every learning rate decays exponentially to this fraction of itself over the passes
    (1 = constant): large early steps, then a settled end."""
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
    densify_every: int = 0
    """Split under-fitted splats every this many steps (0 = never), from ``densify_from`` up to
    ``densify_until`` (0 = up to the last step)."""
    densify_from: int = 2
    densify_until: int = 0
    densify_fraction: float = 0.05
    """At most this fraction of the visible splats is split per densification: those with the
    largest mean screen-space positional gradient since the last one."""
    densify_min_px: float = 1.0
    """Only splats whose largest axis covers at least this many pixels are split (smaller ones
    are already at the resolution of the views)."""
    max_splats: int = 5_000_000
    """Densification stops growing the scene at this many splats."""

    def __post_init__(self) -> None:
        if self.iters < 0:
            raise InputError(f"refine.iters must be >= 0, got {self.iters}")
        if not 0.0 < self.lr_decay <= 1.0:
            raise InputError(f"refine.lr_decay must be in (0, 1], got {self.lr_decay}")
        if not 0.0 <= self.ssim_weight <= 1.0:
            raise InputError(f"refine.ssim_weight must be in [0, 1], got {self.ssim_weight}")
        if self.prune_every < 0 or self.prune_from < 0:
            raise InputError("refine.prune_every and refine.prune_from must be >= 0")
        if min(self.densify_every, self.densify_from, self.densify_until) < 0:
            raise InputError("refine.densify_every/from/until must be >= 0")
        if not 0.0 <= self.densify_fraction <= 1.0:
            raise InputError(
                f"refine.densify_fraction must be in [0, 1], got {self.densify_fraction}"
            )


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
    #: per splat: summed screen-space positional gradient norm and the steps it was seen in
    #: (since the last densification)
    grad_accum: torch.Tensor | None = None
    grad_count: torch.Tensor | None = None
    #: PSNR (dB) of the source view (the first, unmasked view) rendered in the last step,
    #: before that step's update
    source_psnr: float | None = None


# ----------------------------------------------------------------------------- schedules


def should_prune(step: int, config: RefineConfig) -> bool:
    """Prune after ``step`` (1-based count of finished steps)?"""
    return (
        config.prune_every > 0
        and step > 0
        and step >= config.prune_from
        and step % config.prune_every == 0
    )


def should_densify(step: int, config: RefineConfig) -> bool:
    """Densify after ``step`` (1-based count of finished steps)?"""
    return (
        config.densify_every > 0
        and step > 0
        and step >= config.densify_from
        and (config.densify_until == 0 or step <= config.densify_until)
        and step % config.densify_every == 0
    )


# ----------------------------------------------------------------------------- loss


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """PSNR in dB of two images in [0, 1]."""
    mse = float(((a.detach().float() - b.detach().float()) ** 2).mean())
    return float("inf") if mse == 0 else -10.0 * math.log10(mse)


def _gauss_1d(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    g = torch.exp(-(x * x) / (2 * sigma * sigma))
    return (g / g.sum()).float()


if HAVE_NUMBA:

    @njit(parallel=True, cache=True)
    def _blur_nb(t, g):  # pragma: no cover - compiled
        C, H, W = t.shape
        k = g.size
        pad = k // 2
        tmp = np.empty_like(t)
        out = np.empty_like(t)
        for r in prange(C * H):
            c = r // H
            y = r - c * H
            for x in range(W):
                tmp[c, y, x] = 0.0
            for i in range(k):
                gi = g[i]
                # x + i - pad within [0, W)
                for x in range(max(0, pad - i), min(W, W + pad - i)):
                    tmp[c, y, x] += gi * t[c, y, x + i - pad]
        for r in prange(C * H):
            c = r // H
            y = r - c * H
            i0 = max(0, pad - y)
            i1 = min(k, H + pad - y)
            for x in range(W):
                out[c, y, x] = 0.0
            for i in range(i0, i1):
                gi = g[i]
                yy = y + i - pad
                for x in range(W):
                    out[c, y, x] += gi * tmp[c, yy, x]
        return out


class _Blur(torch.autograd.Function):
    """Separable zero-padded Gaussian blur of [C, H, W] (numba). The symmetric kernel with zero
    padding is self-adjoint, so the backward pass is the same blur of the incoming gradient."""

    @staticmethod
    def forward(ctx, t, g):
        ctx.g = g
        return torch.from_numpy(_blur_nb(t.detach().contiguous().numpy(), g))

    @staticmethod
    def backward(ctx, grad):
        return torch.from_numpy(_blur_nb(grad.contiguous().numpy(), ctx.g)), None


def _blur(t: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur of [C, H, W] with zero padding (as ``conv2d(padding=k // 2)``
    with the outer-product window). torch's 11x11 ``conv2d`` on a few CPU channels costs
    ~0.6 s per 768x576 SSIM and dominated refinement; the numba pass is one read per tap."""
    if HAVE_NUMBA and t.device.type == "cpu":
        return _Blur.apply(t, g.to(t.dtype).numpy())
    k = g.numel()
    pad = k // 2
    H, W = t.shape[-2:]
    p = torch.nn.functional.pad(t, (pad, pad))
    r = sum(g[i] * p[..., :, i : i + W] for i in range(k))
    p = torch.nn.functional.pad(r, (0, 0, pad, pad))
    return sum(g[i] * p[..., i : i + H, :] for i in range(k))


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM of two [H, W, 3] images in [0, 1] (11x11 Gaussian window, sigma 1.5, zero
    padding, as 3DGS)."""
    assert a.shape == b.shape and a.ndim == 3, (a.shape, b.shape)
    x = a.permute(2, 0, 1)
    y = b.permute(2, 0, 1)
    g = _gauss_1d().to(a.dtype)
    # one blur for the five maps: mean x, mean y, E[x^2], E[y^2], E[xy]
    mx, my, xx, yy, xy = _blur(torch.cat([x, y, x * x, y * y, x * y]), g).split(3)
    sxx = xx - mx * mx
    syy = yy - my * my
    sxy = xy - mx * my
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


def lr_factor(step: int, config: RefineConfig) -> float:
    """The learning-rate multiplier of pass ``step`` (0-based): 1 at the first pass,
    ``lr_decay`` at the last (``iters - 1``), exponential in between."""
    if config.lr_decay == 1.0 or config.iters <= 1:
        return 1.0
    return config.lr_decay ** (min(step, config.iters - 1) / (config.iters - 1))


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
    lrs = _learning_rates(config)
    factor = lr_factor(state.step, config)
    for k, opt in state.optimizers.items():
        opt.zero_grad(set_to_none=True)
        opt.param_groups[0]["lr"] = lrs[k] * factor
    splats = current_splats(state)
    total = 0.0
    for view in state.views:
        s = splats
        if view.layers is not None:
            keep = torch.isin(state.layers, torch.tensor(view.layers, dtype=state.layers.dtype))
            s = _subset(splats, keep)
        out = rasterize(s, view.camera, backend=backend)
        if view is state.views[0] and view.mask is None and view.layers is None:
            state.source_psnr = psnr(out.rgb, view.image)
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
    if config.densify_every > 0:
        _accumulate_screen_grad(state)
    for opt in state.optimizers.values():
        opt.step()
    state.step += 1
    state.history.append(total)
    return total


@torch.no_grad()
def _accumulate_screen_grad(state: RefineState) -> None:
    """Add each splat's screen-space positional gradient norm, ``|dL/d mu_xy| z / f`` (the
    views share the source camera's frame, so ``z`` is the centre's depth and ``f`` the first
    view's focal), to ``grad_accum``; splats with no gradient were not seen this step."""
    g = state.params["means"].grad
    if g is None:
        return
    n = g.shape[0]
    if state.grad_accum is None or state.grad_accum.shape[0] != n:
        state.grad_accum = torch.zeros(n)
        state.grad_count = torch.zeros(n)
    f = float(state.views[0].camera.intrinsics.fx)
    z = state.params["means"].detach()[:, 2].abs().clamp_min(1e-3)
    norm = g[:, :2].norm(dim=1) * z / f
    seen = norm > 0
    state.grad_accum += norm
    state.grad_count += seen.float()


def _replace_rows(
    state: RefineState, keep: torch.Tensor, new: dict[str, torch.Tensor] | None = None
) -> None:
    """Keep the rows ``keep`` of every parameter and append ``new[k]`` if given (Adam moments:
    kept rows keep theirs, appended rows start at zero, as gsplat's strategies do); anchors,
    layers and the gradient statistics follow."""
    n_new = 0 if new is None else next(iter(new.values())).shape[0]
    params = {}
    for k, t in state.params.items():
        nt = t.detach()[keep]
        if n_new:
            nt = torch.cat([nt, new[k].to(t.dtype)])
        nt = nt.clone().requires_grad_(True)
        opt = state.optimizers.get(k)
        if opt is not None:
            st = opt.state.pop(t, None)
            if st is not None:
                for key in ("exp_avg", "exp_avg_sq"):
                    if key in st:
                        z = torch.zeros((n_new, *st[key].shape[1:]), dtype=st[key].dtype)
                        st[key] = torch.cat([st[key][keep], z])
                opt.state[nt] = st
            opt.param_groups[0]["params"] = [nt]
        params[k] = nt
    state.params = params
    if n_new:
        state.anchor = torch.cat([state.anchor[keep], new["means"].to(state.anchor.dtype)])
        state.layers = torch.cat([state.layers[keep], new["layers"]])
    else:
        state.anchor = state.anchor[keep]
        state.layers = state.layers[keep]
    for name in ("grad_accum", "grad_count"):
        t = getattr(state, name)
        if t is not None:
            setattr(state, name, torch.cat([t[keep], torch.zeros(n_new)]))


#: The split (``densify``): each child sits this many of the parent's largest standard deviations
#: from the parent's centre, along that axis, one on each side ...
SPLIT_OFFSET = 0.3
#: ... with that standard deviation times this (the other two axes unchanged) ...
SPLIT_SCALE = 0.875
#: ... and this fraction of the parent's opacity. The three are the least-squares fit of the
#: two children's composited alpha to the parent's over the plane (parent opacity 0.05..0.99,
#: the 1/255 and 0.999 cut-offs): rms error 0.016 for an opaque parent, where 3DGS's split (two
#: samples of the parent's Gaussian with 1/1.6 of its scales and its full opacity) leaves
#: 0.074. The lifted splats are nearly opaque and a refinement here runs tens of passes, not
#: thousands: a split that changes the render has no time to recover (on living_room at
#: 512 px the 3DGS split cost 5.7 dB at once and the 30-pass run ended 8.7 dB lower).
SPLIT_OPACITY = 0.66


@torch.no_grad()
def densify(state: RefineState, config: RefineConfig) -> int:
    """Split the under-fitted splats: of those seen since the last densification and at least
    ``densify_min_px`` wide, the ``densify_fraction`` with the largest mean screen-space
    positional gradient become two splats each, at +-``SPLIT_OFFSET`` of the parent's largest
    standard deviation along that axis (in the splat's plane: the lifted splats are flat discs
    on their surface), that deviation times ``SPLIT_SCALE``, the parent's rotation and colour,
    ``SPLIT_OPACITY`` of its opacity: together they render nearly as the parent did, and each
    can then fit its half. Resets the gradient statistics. Returns the number of splats
    added."""
    if state.grad_accum is None:
        return 0
    n = state.grad_accum.shape[0]
    mean_grad = state.grad_accum / state.grad_count.clamp_min(1)
    p = state.params
    scales = torch.exp(p["log_scales"].detach())
    f = float(state.views[0].camera.intrinsics.fx)
    z = p["means"].detach()[:, 2].abs().clamp_min(1e-3)
    width_px = 2.0 * scales.amax(dim=1) * f / z
    cand = (state.grad_count > 0) & (width_px >= config.densify_min_px)
    budget = min(
        int(config.densify_fraction * int((state.grad_count > 0).sum())),
        max(0, (config.max_splats - n) // 2),
        int(cand.sum()),
    )
    state.grad_accum = torch.zeros(n)
    state.grad_count = torch.zeros(n)
    if budget <= 0:
        return 0
    score = torch.where(cand, mean_grad, torch.full_like(mean_grad, -1.0))
    idx = torch.topk(score, budget).indices
    rows = torch.arange(budget)
    axis = scales[idx].argmax(dim=1)
    # the major axis in the world: that column of the parent's rotation matrix
    R = quat_to_rotmat(p["quats"].detach()[idx])
    offset = R[rows, :, axis] * (SPLIT_OFFSET * scales[idx, axis])[:, None]
    log_scales = p["log_scales"].detach()[idx].clone()
    log_scales[rows, axis] += math.log(SPLIT_SCALE)
    opacity = (torch.sigmoid(p["logit_opacities"].detach()[idx]) * SPLIT_OPACITY).clamp_min(1e-12)
    centre = p["means"].detach()[idx]
    new = {
        "means": torch.cat([centre + offset, centre - offset]),
        "quats": p["quats"].detach()[idx].repeat(2, 1),
        "log_scales": log_scales.repeat(2, 1),
        "logit_opacities": torch.logit(opacity).repeat(2),
        "sh0": p["sh0"].detach()[idx].repeat(2, 1, 1),
        "shN": p["shN"].detach()[idx].repeat(2, 1, 1),
        "layers": state.layers[idx].repeat(2),
    }
    keep = torch.ones(n, dtype=torch.bool)
    keep[idx] = False
    _replace_rows(state, keep, new)
    return budget


@torch.no_grad()
def prune(state: RefineState, config: RefineConfig) -> int:
    """Remove splats with opacity < ``prune_opacity`` (parameters, Adam moments, anchors)."""
    thr = math.log(config.prune_opacity / (1 - config.prune_opacity))
    keep = state.params["logit_opacities"] >= thr
    n_drop = int((~keep).sum())
    if n_drop:
        _replace_rows(state, keep)
    return n_drop


def refine(
    splats: Splats,
    views: list[View],
    config: RefineConfig,
    *,
    backend: str = "cpu",
    measure_after: bool = True,
) -> tuple[Splats, dict]:
    """Run ``config.iters`` refinement steps; returns (refined splats, facts for world.json).
    ``measure_after=False`` skips the final render of the source view for
    ``source_psnr_after`` (for callers that render it anyway and fill it in themselves)."""
    if config.iters == 0:
        return splats, {"iters": 0}
    state = init_state(splats, views, config)
    pruned = added = 0
    psnr_first = None
    for _ in range(config.iters):
        refine_step(state, config, backend=backend)
        if psnr_first is None:
            psnr_first = state.source_psnr
        if should_densify(state.step, config):
            added += densify(state, config)
        if should_prune(state.step, config):
            pruned += prune(state, config)
    out = current_splats(state)
    out = Splats(**{k: getattr(out, k).detach() for k in PARAMS}, layers=out.layers)
    facts = {
        "iters": config.iters,
        "loss_first": state.history[0],
        "loss_last": state.history[-1],
        "pruned": pruned,
        "densified": added,
        "splats": len(out),
    }
    if psnr_first is not None:
        facts["source_psnr_before"] = psnr_first
    if psnr_first is not None and measure_after:
        v = views[0]
        with torch.no_grad():
            after = rasterize(out, v.camera, backend=backend).rgb
        facts["source_psnr_after"] = psnr(after, v.image)
    return out, facts
