"""Time the forward rasterizer on synthetic splat sets.

    .venv/bin/python benchmarks/raster_forward.py [--backend torch] [--repeat 3] [--quick]

Scenes:
* ``plane``: a fronto-parallel textured plane, one splat per pixel, projected sigma 0.5-1.5 px,
  opacity 0.993 (all opaque), tiny depth jitter, every pixel covered.
* ``random``: splats at random positions and depths (1-5 m), sigma 0.5-3 px, opacity 0.1-0.99.
Prints the best wall time of ``--repeat`` runs (after one warm-up) and the pairs composited.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from functools import partial
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worldgen.camera import Camera, Intrinsics, Pose  # noqa: E402
from worldgen.raster import rasterize, render_weights  # noqa: E402
from worldgen.splats import Splats, rgb_to_sh0  # noqa: E402


def camera(width: int, height: int, hfov_deg: float = 60.0) -> Camera:
    return Camera(Intrinsics.from_hfov(hfov_deg, width, height), Pose.identity())


def plane_scene(width: int, height: int, seed: int = 0) -> tuple[Splats, Camera]:
    """One splat per pixel on the plane z = 2, isotropic in the plane, flat in z."""
    g = torch.Generator().manual_seed(seed)
    cam = camera(width, height)
    K = cam.intrinsics
    z0 = 2.0
    v, u = torch.meshgrid(
        torch.arange(height, dtype=torch.float32),
        torch.arange(width, dtype=torch.float32),
        indexing="ij",
    )
    u, v = u.reshape(-1), v.reshape(-1)
    n = u.numel()
    z = z0 + 1e-3 * torch.rand(n, generator=g)
    means = torch.stack([(u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z], dim=1)
    sigma_px = 0.5 + torch.rand(n, generator=g)  # 0.5 .. 1.5 px
    s = sigma_px * z0 / K.fx
    log_scales = torch.stack([s.log(), s.log(), torch.full_like(s, math.log(1e-4))], dim=1)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1.0
    check = ((u.long() // 16 + v.long() // 16) % 2).float()
    rgb = torch.stack([0.2 + 0.6 * check, u / width, v / height], dim=1)
    sh = rgb_to_sh0(rgb)[:, None, :]
    logit = torch.full((n,), 5.0)  # opacity 0.993
    return Splats(means, quats, log_scales, logit, sh, torch.zeros(n, dtype=torch.uint8)), cam


def random_scene(width: int, height: int, n: int, seed: int = 0) -> tuple[Splats, Camera]:
    g = torch.Generator().manual_seed(seed)
    cam = camera(width, height)
    K = cam.intrinsics
    z = 1.0 + 4.0 * torch.rand(n, generator=g)
    u = torch.rand(n, generator=g) * width
    v = torch.rand(n, generator=g) * height
    means = torch.stack([(u - K.cx) * z / K.fx, (v - K.cy) * z / K.fy, z], dim=1)
    sigma_px = 0.5 + 2.5 * torch.rand(n, 3, generator=g)
    log_scales = (sigma_px * z[:, None] / K.fx).log()
    quats = torch.randn(n, 4, generator=g)
    op = 0.1 + 0.89 * torch.rand(n, generator=g)
    sh = torch.randn(n, 4, 3, generator=g) * 0.3
    logit = torch.log(op / (1 - op))
    return Splats(means, quats, log_scales, logit, sh, torch.zeros(n, dtype=torch.uint8)), cam


def best_time(fn, repeat: int) -> float:
    fn()  # warm-up
    best = math.inf
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--backend", default="torch")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="only the small scenes")
    args = ap.parse_args()

    scenes = [
        ("random 10k", 256, 256, lambda: random_scene(256, 256, 10_000)),
        ("plane 256x256", 256, 256, lambda: plane_scene(256, 256)),
    ]
    if not args.quick:
        scenes += [
            ("random 100k", 768, 512, lambda: random_scene(768, 512, 100_000)),
            ("plane 768x512", 768, 512, lambda: plane_scene(768, 512)),
        ]
    cmd = "python benchmarks/raster_forward.py " + " ".join(sys.argv[1:])
    print(f"# {cmd.strip()}")
    print(
        f"# torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{platform.processor() or platform.machine()}, backend={args.backend}"
    )
    print("| scene | image | splats | pairs composited | rasterize s | render_weights s |")
    print("|---|---|---:|---:|---:|---:|")
    for name, w, h, make in scenes:
        splats, cam = make()
        t_r = best_time(partial(rasterize, splats, cam, w, h, backend=args.backend), args.repeat)
        rw = render_weights(splats, cam, w, h)
        t_w = best_time(partial(render_weights, splats, cam, w, h), args.repeat)
        print(
            f"| {name} | {w}x{h} | {len(splats)} | {rw.pix.numel()} | {t_r:.3f} | {t_w:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
