"""Differentiable rasterizer benchmark: forward + backward + optimiser step per iteration.

Pinned scenes (the optimisation issue's acceptance 1):

* ``a``: 100k splats at 512x384, centres uniform in the view frustum at depth 2-4 m, focal
  512 px, scales 0.02 m, random rotations, opacity uniform in [0.05, 0.95], SH degree 3;
* ``b``: the world ``worldgen build --preset fast`` makes from the Middlebury motorcycle left
  image with its ground-truth depth, rendered from the source camera at 512 px wide;
* ``c``: 300k splats like (a) at 768x576.

Per (backend, scene): median seconds per iteration over ``--iters`` after one warm-up (L1 loss
against a fixed random target, Adam over all parameters, ``fused=True`` where torch offers it),
the splat-tile pair count of the first view and the process's peak RSS growth (for ``gsplat``,
the CUDA memory peak). Backends that cannot run here are reported with the reason instead of a
time: ``gsplat`` needs a CUDA device; ``gsplat_torch`` (gsplat 1.5.3's ``_torch_impl`` path) has
no CPU path at all, since its ``_rasterize_to_pixels`` calls the CUDA kernel
``rasterize_to_indices_in_range`` and needs nerfacc.

    .venv/bin/python benchmarks/raster_cpu.py [--scenes a b c] [--backends cpu torch gsplat]
                                              [--iters 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from worldgen.camera import Camera, Intrinsics, Pose  # noqa: E402
from worldgen.raster import available_backends, rasterize  # noqa: E402
from worldgen.raster.common import make_settings  # noqa: E402
from worldgen.raster.cpu import count_pairs  # noqa: E402
from worldgen.splats import Splats  # noqa: E402

PARAMS = ("means", "quats", "log_scales", "logit_opacities", "sh")


def random_scene(n: int, W: int, H: int, seed: int = 0) -> tuple[Splats, Camera]:
    g = torch.Generator().manual_seed(seed)
    f = 512.0 * W / 512.0
    intr = Intrinsics(f, f, (W - 1) / 2, (H - 1) / 2, W, H)
    z = torch.rand(n, generator=g) * 2 + 2
    u = torch.rand(n, generator=g) * W
    v = torch.rand(n, generator=g) * H
    means = torch.stack([(u - intr.cx) * z / f, (v - intr.cy) * z / f, z], 1)
    splats = Splats(
        means=means,
        quats=torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=-1),
        log_scales=torch.full((n, 3), math.log(0.02)),
        logit_opacities=torch.logit(torch.rand(n, generator=g) * 0.9 + 0.05),
        sh=torch.randn(n, 16, 3, generator=g) * 0.3,
        layers=torch.zeros(n, dtype=torch.uint8),
    )
    return splats, Camera(intr, Pose.identity())


def motorcycle_scene(workdir: Path) -> tuple[Splats, Camera]:
    from benchmarks.stereo_eval import build_world, motorcycle

    pair = motorcycle()
    built = build_world(pair.left, pair.depth, pair.left_intr, workdir, {}, preset="fast")
    w = built.world
    intr = w.intrinsics.scaled_to(512, round(512 * w.intrinsics.height / w.intrinsics.width))
    return w.splats, Camera(intr, Pose.identity())


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def _gsplat_torch_reason() -> str:
    try:
        import gsplat  # noqa: F401
    except ImportError:
        return "gsplat is not installed"
    return (
        "gsplat 1.5.3's _torch_impl._rasterize_to_pixels calls the CUDA kernel "
        "rasterize_to_indices_in_range and needs nerfacc: no CPU path; its projection and SH "
        "are checked in tests/test_gsplat_conventions.py"
    )


def time_backend(backend: str, splats: Splats, cam: Camera, iters: int) -> dict:
    cuda = backend == "gsplat"
    dev = torch.device("cuda" if cuda else "cpu")
    params = {
        k: getattr(splats, k).detach().clone().float().to(dev).requires_grad_(True) for k in PARAMS
    }
    try:
        opt = torch.optim.Adam(list(params.values()), lr=1e-3, fused=True)
    except (RuntimeError, TypeError):
        opt = torch.optim.Adam(list(params.values()), lr=1e-3)
    W, H = cam.intrinsics.width, cam.intrinsics.height
    target = torch.rand(H, W, 3, generator=torch.Generator().manual_seed(1)).to(dev)
    layers = splats.layers.to(dev)
    times = []
    rss0 = _peak_mb()
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for it in range(iters + 1):
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = rasterize(Splats(**params, layers=layers), cam, backend=backend)
        loss = (out.rgb - target).abs().mean()
        if not loss.requires_grad:
            return {"error": f"the {backend} backend has no backward pass"}
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if cuda:
            torch.cuda.synchronize()
        if it > 0:  # the first iteration is the warm-up
            times.append(time.perf_counter() - t0)
    if cuda:
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = _peak_mb() - rss0 + 0.0
    return {"sec_per_iter": statistics.median(times), "peak_mb": peak}


def _machine() -> dict:
    import os
    import platform

    from worldgen.raster import cpu

    info = {"cores": os.cpu_count(), "cpu": platform.processor() or platform.machine()}
    impl = getattr(cpu, "kernel_impl", None)
    if impl is not None:
        info["cpu_kernels"] = impl()
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="*", default=["a", "b", "c"])
    ap.add_argument("--backends", nargs="*", default=["cpu", "torch", "gsplat", "gsplat_torch"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    a = ap.parse_args(argv)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scene in a.scenes:
            if scene == "a":
                splats, cam = random_scene(100_000, 512, 384)
            elif scene == "c":
                splats, cam = random_scene(300_000, 768, 576)
            elif scene == "b":
                splats, cam = motorcycle_scene(Path(tmp))
            else:
                raise SystemExit(f"unknown scene {scene!r}")
            settings = make_settings(
                splats, cam, None, None, sh_degree=None, background=None, near=0.01, far=1e10
            )
            pairs = count_pairs(splats, cam, settings)
            for backend in a.backends:
                row = {
                    "backend": backend,
                    "scene": scene,
                    "splats": len(splats),
                    "width": cam.intrinsics.width,
                    "height": cam.intrinsics.height,
                    "pairs": pairs,
                }
                if backend == "gsplat_torch":
                    row["error"] = _gsplat_torch_reason()
                elif backend not in available_backends():
                    row["error"] = f"the {backend} backend cannot run here (needs CUDA + gsplat)"
                else:
                    row.update(time_backend(backend, splats, cam, a.iters))
                results.append(row)
                if not a.json:
                    t = row.get("sec_per_iter")
                    what = f"{t:.3f} s/iter" if t is not None else row["error"]
                    print(f"{scene} {backend:13s} {len(splats):>8,} splats {pairs:>9,} pairs "
                          f"{what}", flush=True)  # fmt: skip
    if a.json:
        print(json.dumps({"results": results, "threads": torch.get_num_threads(), **_machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
