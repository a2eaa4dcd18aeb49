"""Novel-view benchmark against ground truth: a real stereo pair and procedural ray-cast scenes.

1. **Middlebury motorcycle** (``skimage.data.stereo_motorcycle()``, 741x500): build a world from
   the left photo with the ground-truth depth as the depth map and the true intrinsics, render
   the right camera (0.193001 m along +x, principal point cx + doffs) and compare with the right
   photo. Baselines: the left image itself (identity) and a z-buffered forward warp with the
   ground-truth depth whose holes take the nearest warped pixel in 2-D.
2. **Procedural scenes** (``benchmarks/scenes.py``, exact depth and colour): build from the
   source view with its exact depth, render 0.5 m sideways, yaw +60 / -60 and 0.5 m forward, and
   compare with the exact ray-cast view.

Metrics per ARCHITECTURE.md "Conventions": PSNR on float RGB in [0, 1] over the whole image,
SSIM = ``structural_similarity(a, b, channel_axis=2, data_range=1)``, "empty" = rendered alpha
< 0.5 (for the warps: destination pixels no source pixel landed on, before filling).

worldgen is run as "single-layer" and "layered": where ``BuildConfig`` has ``layers.enabled``,
single-layer is ``{"layers": {"enabled": False}}`` and layered ``{"layers": {"enabled": True}}``
(plus, where ``surround.enabled`` exists, the bare skeleton with both off); without that key the
default config (the single-layer build) is the only worldgen row (``layer_variants``).

    .venv/bin/python benchmarks/stereo_eval.py [--quick] [--json FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python benchmarks/stereo_eval.py` from anywhere
    sys.path.insert(0, str(REPO))

from benchmarks.scenes import (  # noqa: E402
    EVAL_SCENES,
    cast_rays,
    get_scene,
    render_scene,
    render_scene_hits,
)
from worldgen.camera import Intrinsics, Pose  # noqa: E402

# Middlebury 2014 "Motorcycle" calibration (skimage.data.stereo_motorcycle)
MC_F = 994.978
MC_CX, MC_CY = 311.193, 254.877
MC_DOFFS = 31.086
MC_BASELINE_M = 0.193001

SCENE_VIEWS: dict[str, Pose] = {
    "sideways 0.5 m": Pose.from_cli(0.5, 0, 0),
    "yaw +60°": Pose.from_cli(0, 0, 0, 60, 0, 0),
    "yaw -60°": Pose.from_cli(0, 0, 0, -60, 0, 0),
    "forward 0.5 m": Pose.from_cli(0, 0, 0.5),
}
#: the views just beyond the frame, where a small step or turn looks first (issue 14, item 6)
EDGE_VIEWS: dict[str, Pose] = {
    "sideways -0.2 m": Pose.from_cli(-0.2, 0, 0),
    "sideways 0.2 m": Pose.from_cli(0.2, 0, 0),
    "sideways -0.5 m": Pose.from_cli(-0.5, 0, 0),
    "sideways 0.5 m": Pose.from_cli(0.5, 0, 0),
    "yaw -30°": Pose.from_cli(0, 0, 0, -30, 0, 0),
    "yaw +30°": Pose.from_cli(0, 0, 0, 30, 0, 0),
}

# ----------------------------------------------------------------------------- metrics


def psnr(pred: np.ndarray, gt: np.ndarray) -> float:
    """PSNR (dB) of float RGB clipped to [0, 1], over the whole image."""
    a = np.clip(np.asarray(pred, np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(gt, np.float64), 0.0, 1.0)
    mse = float(np.mean((a - b) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(1.0 / mse)


def ssim(pred: np.ndarray, gt: np.ndarray) -> float:
    from skimage.metrics import structural_similarity

    a = np.clip(np.asarray(pred, np.float64), 0.0, 1.0)
    b = np.clip(np.asarray(gt, np.float64), 0.0, 1.0)
    return float(structural_similarity(a, b, channel_axis=2, data_range=1))


def image_metrics(pred: np.ndarray, gt: np.ndarray, empty: np.ndarray | None = None) -> dict:
    """pred, gt: [H, W, 3] float RGB; empty: [H, W] bool (alpha < 0.5) or None.

    ``psnr``, ``ssim`` and ``empty`` are the Conventions metrics (whole image); ``psnr_covered``
    is a diagnostic: PSNR over the non-empty pixels only (geometry and colour where something
    was drawn, without the penalty of the holes)."""
    assert pred.shape == gt.shape and pred.ndim == 3, (pred.shape, gt.shape)
    covered = ~empty if empty is not None else np.ones(gt.shape[:2], bool)
    return {
        "psnr": psnr(pred, gt),
        "ssim": ssim(pred, gt),
        "empty": float(np.mean(empty)) if empty is not None else 0.0,
        # diagnostic, not a Conventions metric: PSNR over the non-empty pixels only
        "psnr_covered": psnr(pred[covered], gt[covered]) if covered.any() else math.nan,
    }


def unseen_mask(name: str, intr: Intrinsics, pose: Pose, source: Intrinsics | None = None):
    """[H, W] bool: the pixels of scene ``name`` seen from (``intr``, ``pose``) whose surface
    point the source camera (identity pose, ``source`` intrinsics, default ``intr``) does not
    see: outside its frame, behind it, or hidden by a nearer surface (the ray from the source
    centre to the point meets something else first)."""
    src = source or intr
    h = render_scene_hits(name, intr, pose)
    P = h.points
    z = P[:, 2]
    zs = np.where(z > 1e-9, z, 1.0)
    u = src.fx * P[:, 0] / zs + src.cx
    v = src.fy * P[:, 1] / zs + src.cy
    inside = (z > 1e-9) & (u >= -0.5) & (u < src.width - 0.5) & (v >= -0.5) & (v < src.height - 0.5)
    seen = np.zeros(len(P), bool)
    if inside.any():
        back = cast_rays(get_scene(name), np.zeros(3), P[inside])  # t = 1 at the point itself
        seen[inside] = back.t >= 1.0 - 1e-6
    return ~seen.reshape(intr.height, intr.width)


def unseen_metrics(pred: np.ndarray, gt: np.ndarray, unseen: np.ndarray) -> dict:
    """PSNR over the pixels the source camera did not see, and their share of the view."""
    return {
        "unseen": float(unseen.mean()),
        "psnr_unseen": psnr(pred[unseen], gt[unseen]) if unseen.any() else math.nan,
    }


# ----------------------------------------------------------------------------- baselines


def nearest_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Every unknown pixel takes the value of the nearest known pixel in 2-D (Euclidean)."""
    from scipy.ndimage import distance_transform_edt

    if known.all() or not known.any():
        return values.copy()
    iy, ix = distance_transform_edt(~known, return_distances=False, return_indices=True)
    return values[iy, ix]


def row_fill(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """Naive fill along rows: each unknown pixel takes the nearest known pixel to its left (the
    nearest to its right where there is none on the left)."""
    H, W = known.shape
    xs = np.arange(W)
    left = np.maximum.accumulate(np.where(known, xs, -1), axis=1)
    right = np.minimum.accumulate(np.where(known, xs, W)[:, ::-1], axis=1)[:, ::-1]
    idx = np.where(left >= 0, left, np.minimum(right, W - 1))
    return values[np.arange(H)[:, None], idx]


def forward_warp(
    rgb: np.ndarray,
    depth: np.ndarray,
    src: Intrinsics,
    pose: Pose,
    dst: Intrinsics,
    *,
    fill: str = "nearest",
    fill_unknown_depth: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Forward-warp a view with its z-depth into the camera ``pose`` (source axes, Conventions).

    Each source pixel with a known depth (finite, > 0) is unprojected, moved into the new camera
    (``R.T @ (X - T)``), projected and splatted to the nearest destination pixel; the nearest
    surface wins (z-buffer). Holes are then filled: ``"nearest"`` (nearest warped pixel in 2-D),
    ``"row"`` (naive fill along rows) or ``"none"`` (black). ``fill_unknown_depth`` first gives
    unknown source depths the nearest known depth in 2-D (otherwise those pixels are dropped).

    rgb: [H, W, 3]; depth: [H, W]. Returns (rgb [h, w, 3] float64, hit [h, w] bool: a source
    pixel landed there).
    """
    H, W = depth.shape
    assert rgb.shape[:2] == (H, W) and (src.width, src.height) == (W, H), (rgb.shape, src)
    z = np.asarray(depth, np.float64)
    known = np.isfinite(z) & (z > 0)
    if fill_unknown_depth:
        z = nearest_fill(np.where(known, z, 0.0), known)
        known = np.isfinite(z) & (z > 0)
    vv, uu = np.nonzero(known)
    zs = z[vv, uu]
    X = np.stack([(uu - src.cx) / src.fx * zs, (vv - src.cy) / src.fy * zs, zs], axis=1)
    Xn = (X - np.asarray(pose.T, np.float64)) @ np.asarray(pose.R, np.float64)  # R^T (X - T)
    front = Xn[:, 2] > 1e-6
    Xn, vv, uu = Xn[front], vv[front], uu[front]
    zn = Xn[:, 2]
    ui = np.rint(dst.fx * Xn[:, 0] / zn + dst.cx).astype(np.int64)
    vi = np.rint(dst.fy * Xn[:, 1] / zn + dst.cy).astype(np.int64)
    inside = (ui >= 0) & (ui < dst.width) & (vi >= 0) & (vi < dst.height)
    ui, vi, zn, vv, uu = ui[inside], vi[inside], zn[inside], vv[inside], uu[inside]
    lin = vi * dst.width + ui
    order = np.lexsort((zn, lin))  # by destination pixel, then nearest first
    first = order[np.unique(lin[order], return_index=True)[1]]
    out = np.zeros((dst.height, dst.width, 3))
    hit = np.zeros((dst.height, dst.width), bool)
    out[vi[first], ui[first]] = np.asarray(rgb, np.float64)[vv[first], uu[first]]
    hit[vi[first], ui[first]] = True
    if fill == "nearest":
        out = nearest_fill(out, hit)
    elif fill == "row":
        out = row_fill(out, hit)
    elif fill != "none":
        raise ValueError(f"fill must be nearest, row or none, got {fill!r}")
    return out, hit


# ----------------------------------------------------------------------------- worldgen


def _has_switch(cfg, section: str, key: str = "enabled") -> bool:
    sub = getattr(cfg, section, None)
    return (
        section in {f.name for f in dataclasses.fields(cfg)}
        and dataclasses.is_dataclass(sub)
        and key in {f.name for f in dataclasses.fields(sub)}
    )


def layer_variants(preset: str | None = None) -> list[tuple[str, dict]]:
    """(label, config overrides) of the worldgen builds to compare.

    With ``layers.enabled`` in ``BuildConfig``: single-layer (False) and layered (True); where
    ``surround.enabled`` exists too, also the bare skeleton (single layer, no surround).
    Without ``layers.enabled``: the default config alone, which is the single-layer build.
    When ``preset`` refines (``refine.iters > 0``), also the layered build without refinement.
    """
    from worldgen.config import BuildConfig, load_preset

    cfg = BuildConfig()
    if not _has_switch(cfg, "layers"):
        return [("worldgen single-layer", {})]
    out = []
    if _has_switch(cfg, "surround"):
        out.append(
            (
                "worldgen single-layer, no surround",
                {"layers": {"enabled": False}, "surround": {"enabled": False}},
            )
        )
    out.append(("worldgen single-layer", {"layers": {"enabled": False}}))
    out.append(("worldgen layered", {"layers": {"enabled": True}}))
    if preset is not None and load_preset(preset).refine.iters > 0:
        out.append(
            (
                "worldgen layered, no refinement",
                {"layers": {"enabled": True}, "refine": {"iters": 0}},
            )
        )
    return out


@dataclass
class Built:
    world: object
    seconds: float
    splats: int
    path: Path
    timings: dict = field(default_factory=dict)


def build_world(
    rgb: np.ndarray,
    depth: np.ndarray,
    intr: Intrinsics,
    workdir: Path,
    overrides: dict,
    *,
    preset: str = "default",
    tag: str = "w",
) -> Built:
    """Build a world from an image [H, W, 3] (float in [0, 1] or uint8) and its z-depth [H, W]
    (metres, NaN unknown) seen by ``intr``, through ``worldgen.pipeline.build`` (no cache)."""
    from PIL import Image

    from worldgen.config import load_preset
    from worldgen.pipeline import build
    from worldgen.world import load_world

    workdir.mkdir(parents=True, exist_ok=True)
    img = rgb if rgb.dtype == np.uint8 else (np.clip(rgb, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    image_path = workdir / f"{tag}.png"
    depth_path = workdir / f"{tag}_depth.npy"
    Image.fromarray(img).save(image_path)
    np.save(depth_path, np.asarray(depth, np.float32))
    cfg = load_preset(preset).replace(
        depth={"backend": "file", "depth_map": str(depth_path)},
        camera={"focal_px": intr.fx, "principal": [intr.cx, intr.cy]},
        **overrides,
    )
    out = workdir / f"{tag}.world"
    t0 = time.perf_counter()
    res = build(image_path, out, cfg, force=True, use_cache=False)
    seconds = time.perf_counter() - t0
    return Built(load_world(out), seconds, res.splat_count, out, dict(res.timings))


def render(world, pose: Pose, intr: Intrinsics) -> tuple[np.ndarray, np.ndarray, float]:
    """worldgen's render of ``world`` from ``pose``: (rgb [H, W, 3], alpha [H, W], seconds)."""
    from worldgen.render import render_world

    t0 = time.perf_counter()
    out = render_world(world, pose, intr)
    seconds = time.perf_counter() - t0
    return out.rgb.numpy().astype(np.float64), out.alpha.numpy().astype(np.float64), seconds


def render_cli(world_path: Path, out_png: Path, pose: str, intr: Intrinsics) -> np.ndarray:
    """The same render through ``worldgen render`` (uint8 PNG read back as float)."""
    from PIL import Image

    cmd = [
        sys.executable,
        "-m",
        "worldgen",
        "render",
        str(world_path),
        "-o",
        str(out_png),
        "--pose",
        pose,
        "--focal-px",
        repr(intr.fx),
        "--principal",
        f"{intr.cx!r},{intr.cy!r}",
        "--size",
        f"{intr.width}x{intr.height}",
        "--force",
        "--quiet",
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO)
    if proc.returncode != 0:
        raise RuntimeError(f"worldgen render failed ({proc.returncode}): {proc.stderr.strip()}")
    return np.asarray(Image.open(out_png).convert("RGB"), np.float64) / 255.0


# ----------------------------------------------------------------------------- motorcycle


@dataclass
class StereoPair:
    left: np.ndarray  # [H, W, 3] uint8
    right: np.ndarray  # [H, W, 3] uint8
    depth: np.ndarray  # [H, W] float32 metres, NaN unknown (left camera z-depth)
    left_intr: Intrinsics
    right_intr: Intrinsics
    right_pose: Pose


def motorcycle() -> StereoPair:
    """Middlebury "Motorcycle" with metric depth Z = B f / (d + doffs)."""
    from skimage.data import stereo_motorcycle

    left, right, disp = stereo_motorcycle()
    H, W = disp.shape
    d = disp.astype(np.float64)
    ok = np.isfinite(d)
    depth = np.full((H, W), np.nan, np.float32)
    depth[ok] = (MC_BASELINE_M * MC_F / (d[ok] + MC_DOFFS)).astype(np.float32)
    return StereoPair(
        left,
        right,
        depth,
        Intrinsics(MC_F, MC_F, MC_CX, MC_CY, W, H),
        Intrinsics(MC_F, MC_F, MC_CX + MC_DOFFS, MC_CY, W, H),
        Pose.from_cli(MC_BASELINE_M, 0, 0),
    )


def _row(method: str, m: dict, seconds: float, **extra) -> dict:
    return {"method": method, **m, "seconds": seconds, **extra}


def eval_motorcycle(
    variants: list[tuple[str, dict]],
    workdir: Path,
    *,
    preset: str = "default",
    cli_check: bool = True,
    log=print,
) -> dict:
    """Rows of the motorcycle table plus the CLI cross-check."""
    from worldgen.render import render_intrinsics

    pair = motorcycle()
    gt = pair.right.astype(np.float64) / 255.0
    left = pair.left.astype(np.float64) / 255.0
    rows = []

    t0 = time.perf_counter()
    m = image_metrics(left, gt)
    rows.append(_row("identity (left image)", m, time.perf_counter() - t0))

    for label, kw in [
        ("forward warp + nearest fill", {"fill": "nearest", "fill_unknown_depth": True}),
        ("  ↳ unknown depth dropped", {"fill": "nearest", "fill_unknown_depth": False}),
        ("  ↳ unknown dropped, naive row fill", {"fill": "row", "fill_unknown_depth": False}),
    ]:
        t0 = time.perf_counter()
        pred, hit = forward_warp(
            pair.left, pair.depth, pair.left_intr, pair.right_pose, pair.right_intr, **kw
        )
        pred = pred / 255.0
        rows.append(_row(label, image_metrics(pred, gt, ~hit), time.perf_counter() - t0))
        log(f"motorcycle: {label.strip(' ↳')}: {rows[-1]['psnr']:.2f} dB")

    cli = None
    for label, overrides in variants:
        b = build_world(pair.left, pair.depth, pair.left_intr, workdir, overrides, preset=preset)
        intr = render_intrinsics(
            b.world,
            (pair.right_intr.width, pair.right_intr.height),
            MC_F,
            (MC_CX + MC_DOFFS, MC_CY),
        )
        assert intr == pair.right_intr, (intr, pair.right_intr)
        rgb, alpha, rs = render(b.world, pair.right_pose, intr)
        m = image_metrics(rgb, gt, alpha < 0.5)
        rows.append(_row(label, m, b.seconds + rs, build_s=b.seconds, render_s=rs, splats=b.splats))
        log(f"motorcycle: {label}: {m['psnr']:.2f} dB (build {b.seconds:.1f} s, render {rs:.1f} s)")
        if cli_check and cli is None:
            cli_rgb = render_cli(b.path, workdir / "cli.png", f"{MC_BASELINE_M!r},0,0", intr)
            lib8 = np.clip(rgb, 0, 1) * 255.0 + 0.5
            diff = np.abs(np.floor(lib8) - np.round(cli_rgb * 255.0))
            cli = {
                "variant": label,
                "max_abs_diff_u8": float(diff.max()),
                "mean_abs_diff_u8": float(diff.mean()),
                "psnr_cli": psnr(cli_rgb, gt),
                "ssim_cli": ssim(cli_rgb, gt),
                "psnr_library": m["psnr"],
            }
            log(f"motorcycle: CLI render differs from the library's by <= {diff.max():.0f}/255")
    return {"rows": rows, "cli_check": cli}


# ----------------------------------------------------------------------------- scenes


def eval_scenes(
    variants: list[tuple[str, dict]],
    workdir: Path,
    *,
    scenes=EVAL_SCENES,
    size: tuple[int, int] = (384, 288),
    hfov_deg: float = 60.0,
    views: dict[str, Pose] | None = None,
    preset: str = "default",
    log=print,
) -> list[dict]:
    """One row per (scene, view, method): metrics against the exact ray-cast view."""
    views = SCENE_VIEWS if views is None else views
    intr = Intrinsics.from_hfov(hfov_deg, *size)
    rows = []
    for name in scenes:
        src_rgb, src_depth = render_scene(name, intr, Pose.identity())
        truth = {v: render_scene(name, intr, p)[0].astype(np.float64) for v, p in views.items()}
        unseen = {v: unseen_mask(name, intr, p) for v, p in views.items()}
        for v, pose in views.items():
            t0 = time.perf_counter()
            pred, hit = forward_warp(src_rgb, src_depth, intr, pose, intr, fill="nearest")
            m = image_metrics(pred, truth[v], ~hit) | unseen_metrics(pred, truth[v], unseen[v])
            rows.append(
                {
                    "scene": name,
                    "view": v,
                    "method": "forward warp + nearest fill",
                    **m,
                    "seconds": time.perf_counter() - t0,
                }
            )
        for label, overrides in variants:
            b = build_world(
                src_rgb, src_depth, intr, workdir / name, overrides, preset=preset, tag=name
            )
            log(f"{name}: {label}: built {b.splats} splats in {b.seconds:.1f} s")
            for v, pose in views.items():
                rgb, alpha, rs = render(b.world, pose, intr)
                m = image_metrics(rgb, truth[v], alpha < 0.5)
                m |= unseen_metrics(rgb, truth[v], unseen[v])
                rows.append(
                    {
                        "scene": name,
                        "view": v,
                        "method": label,
                        **m,
                        "seconds": rs,
                        "build_s": b.seconds,
                    }
                )
                log(f"{name}: {label}: {v}: {m['psnr']:.2f} dB, {100 * m['empty']:.1f}% empty")
    return rows


# ----------------------------------------------------------------------------- report


def _db(x: float) -> str:
    return f"{x:.2f}" if math.isfinite(x) else "–"


def _fmt_row(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def motorcycle_table(res: dict) -> str:
    lines = [
        _fmt_row(["method", "PSNR dB", "SSIM", "empty %", "PSNR non-empty", "seconds"]),
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in res["rows"]:
        secs = f"{r['seconds']:.2f}"
        if "build_s" in r:
            secs = f"{r['seconds']:.1f} (build {r['build_s']:.1f} + render {r['render_s']:.1f})"
        lines.append(
            _fmt_row(
                [
                    r["method"],
                    f"{r['psnr']:.2f}",
                    f"{r['ssim']:.3f}",
                    f"{100 * r['empty']:.1f}",
                    _db(r["psnr_covered"]),
                    secs,
                ]
            )
        )
    return "\n".join(lines)


def scenes_table(rows: list[dict]) -> str:
    lines = [
        _fmt_row(
            [
                "scene",
                "view",
                "method",
                "PSNR dB",
                "SSIM",
                "empty %",
                "PSNR non-empty",
                "PSNR unseen",
                "seconds",
            ]
        ),
        "|---|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            _fmt_row(
                [
                    r["scene"],
                    r["view"],
                    r["method"],
                    f"{r['psnr']:.2f}",
                    f"{r['ssim']:.3f}",
                    f"{100 * r['empty']:.1f}",
                    _db(r["psnr_covered"]),
                    _db(r.get("psnr_unseen", math.nan)),
                    f"{r['seconds']:.2f}",
                ]
            )
        )
    return "\n".join(lines)


WARP = "forward warp + nearest fill"


def edge_table(rows: list[dict], method: str = "worldgen layered") -> tuple[str, bool]:
    """The views beyond the frame (``EDGE_VIEWS``): PSNR of ``method`` and of the warp over the
    whole view and over the pixels the source camera did not see; and whether ``method`` beats
    the warp on both everywhere."""
    by = {(r["scene"], r["view"], r["method"]): r for r in rows}
    lines = [
        _fmt_row(
            ["scene", "view", "unseen %", "warp PSNR", method, "warp PSNR unseen", "unseen", ""]
        ),
        "|---|---|---:|---:|---:|---:|---:|---|",
    ]
    all_beat = True
    for scene in dict.fromkeys(r["scene"] for r in rows):
        for view in EDGE_VIEWS:
            w, m = by.get((scene, view, WARP)), by.get((scene, view, method))
            if w is None or m is None:
                continue
            beat = m["psnr"] > w["psnr"] and (
                not (w["unseen"] > 0) or m["psnr_unseen"] > w["psnr_unseen"]
            )
            all_beat &= beat
            lines.append(
                _fmt_row(
                    [
                        scene,
                        view,
                        f"{100 * w['unseen']:.1f}",
                        _db(w["psnr"]),
                        _db(m["psnr"]),
                        _db(w["psnr_unseen"]),
                        _db(m["psnr_unseen"]),
                        "beats" if beat else "**loses**",
                    ]
                )
            )
    return "\n".join(lines), all_beat


def build_times(rows: list[dict]) -> str:
    """One line per scene: the build time of each worldgen variant."""
    seen: dict[str, dict[str, float]] = {}
    for r in rows:
        if "build_s" in r:
            seen.setdefault(r["scene"], {})[r["method"]] = r["build_s"]
    return "\n".join(
        f"- {scene}: " + ", ".join(f"{m} {t:.1f} s" for m, t in builds.items())
        for scene, builds in seen.items()
    )


def _json_safe(x):
    """NaN / inf (e.g. PSNR of an all-empty view's covered pixels) as null: strict JSON."""
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_json_safe(v) for v in x]
    if isinstance(x, float | np.floating):
        return float(x) if math.isfinite(x) else None
    if isinstance(x, np.integer):
        return int(x)
    return x


def _size(text: str) -> tuple[int, int]:
    w, h = text.lower().split("x")
    return int(w), int(h)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument(
        "--quick",
        action="store_true",
        help="procedural scenes at 192x144 and no CLI cross-check (motorcycle unchanged)",
    )
    ap.add_argument("--preset", default="default")
    ap.add_argument("--scene-size", type=_size, help="procedural scenes' size (default 384x288)")
    ap.add_argument("--scenes", nargs="*", default=list(EVAL_SCENES))
    ap.add_argument("--no-motorcycle", action="store_true")
    ap.add_argument("--no-scenes", action="store_true")
    ap.add_argument(
        "--layered-only", action="store_true", help="build only the layered worldgen variant"
    )
    a = ap.parse_args(argv)
    size = a.scene_size or ((192, 144) if a.quick else (384, 288))

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    variants = layer_variants(a.preset)
    if len(variants) == 1:
        log("BuildConfig has no layers.enabled: the default (single-layer) build is the only one")
    if a.layered_only:
        variants = [v for v in variants if v[0] == "worldgen layered"] or variants[-1:]
    cmd = "python benchmarks/stereo_eval.py " + " ".join(argv if argv is not None else sys.argv[1:])
    result: dict = {
        "command": cmd.strip(),
        "variants": [{"label": v, "overrides": o} for v, o in variants],
        "preset": a.preset,
        "machine": {"python": platform.python_version(), "platform": platform.platform()},
    }
    with tempfile.TemporaryDirectory(prefix="stereo_eval-") as tmp:
        tmp = Path(tmp)
        if not a.no_motorcycle:
            mc = eval_motorcycle(
                variants, tmp / "motorcycle", preset=a.preset, cli_check=not a.quick, log=log
            )
            result["motorcycle"] = mc
            print("## Middlebury motorcycle: left photo -> right view (741x500)\n")
            print(motorcycle_table(mc))
            if mc["cli_check"]:
                c = mc["cli_check"]
                print(
                    f"\n`worldgen render` CLI vs library ({c['variant']}): max |diff| "
                    f"{c['max_abs_diff_u8']:.0f}/255, mean {c['mean_abs_diff_u8']:.3f}/255; "
                    f"CLI PNG {c['psnr_cli']:.2f} dB / {c['ssim_cli']:.3f}"
                )
            print()
        if not a.no_scenes:
            rows = eval_scenes(
                variants,
                tmp / "scenes",
                scenes=a.scenes,
                size=size,
                views=SCENE_VIEWS | EDGE_VIEWS,
                preset=a.preset,
                log=log,
            )
            result["scenes"] = {"size": list(size), "hfov_deg": 60.0, "rows": rows}
            print(f"## Procedural scenes ({size[0]}x{size[1]}, 60° hfov), exact novel views\n")
            print(scenes_table(rows))
            label = variants[-1][0] if len(variants) == 1 else "worldgen layered"
            edges, beat = edge_table(rows, label)
            result["scenes"]["edge_views_beat_warp"] = beat
            print(f"\n### Just beyond the frame: {label} vs the warp (PSNR dB)\n")
            print(edges)
            print("\nBuild times (source view with its exact depth):\n")
            print(build_times(rows))
            print()
    print(f"Reproduce: `.venv/bin/python {cmd.strip().removeprefix('python ')}`")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps(_json_safe(result), indent=2, allow_nan=False))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
