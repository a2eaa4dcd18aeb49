"""Differentiable rasterizer benchmark: forward + backward + optimiser step per iteration.

Pinned scenes (the optimisation issue's acceptance 1):

* ``a``: 100k splats at 512x384, centres uniform in the view frustum at depth 2-4 m, focal
  512 px, scales 0.02 m, random rotations, opacity uniform in [0.05, 0.95], SH degree 3;
* ``b``: the world ``worldgen build --preset fast`` makes from the Middlebury motorcycle left
  image with its ground-truth depth, rendered from the source camera at 512 px wide;
* ``c``: 300k splats like (a) at 768x576.

Per (backend, scene), each in a fresh process: median seconds per iteration over ``--iters``
after one warm-up (L1 loss against a fixed random target, Adam over all parameters,
``fused=True`` where torch offers it), the splat-tile pair count of the view and the peak RSS
of that process (imports included; for ``gsplat``, the CUDA memory peak). Backends that cannot
run here are reported with the reason instead of a time: ``gsplat`` needs a CUDA device;
``gsplat_torch`` (gsplat 1.5.3's ``_torch_impl`` path) has no CPU path at all, since its
``_rasterize_to_pixels`` calls the CUDA kernel ``rasterize_to_indices_in_range`` and needs
nerfacc; ``torch`` is skipped where its autograd path would not fit in memory.

    .venv/bin/python benchmarks/raster_cpu.py [--scenes a b c] [--backends cpu torch gsplat]
                                              [--iters 5] [--json]
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
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


#: the torch backend's autograd path measured 15.0 GB peak on scene (a) (534k splat-tile pairs)
TORCH_BYTES_PER_PAIR = 15.0e9 / 534_392


def _mem_available() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return float(line.split()[1]) * 1024.0
    except OSError:
        pass
    return float("inf")


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
        peak = _peak_mb()
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


def _scene(scene: str, tmp: Path) -> tuple[Splats, Camera]:
    if scene == "a":
        return random_scene(100_000, 512, 384)
    if scene == "c":
        return random_scene(300_000, 768, 576)
    if scene == "b":
        f = tmp / "b.npz"
        if not f.exists():  # built once by the parent, read by each child
            splats, cam = motorcycle_scene(tmp)
            K = cam.intrinsics
            np.savez(
                f,
                **{k: getattr(splats, k).numpy() for k in (*PARAMS, "layers")},
                intr=np.array([K.fx, K.fy, K.cx, K.cy, K.width, K.height], np.float64),
            )
        d = np.load(f, allow_pickle=False)
        fx, fy, cx, cy, w, h = d["intr"].tolist()
        splats = Splats(**{k: torch.from_numpy(d[k]) for k in (*PARAMS, "layers")})
        return splats, Camera(Intrinsics(fx, fy, cx, cy, int(w), int(h)), Pose.identity())
    raise SystemExit(f"unknown scene {scene!r}")


def _child(scene: str, backend: str, iters: int, tmp: Path) -> int:
    splats, cam = _scene(scene, tmp)
    print(json.dumps(time_backend(backend, splats, cam, iters)))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", nargs="*", default=["a", "b", "c"])
    ap.add_argument("--backends", nargs="*", default=["cpu", "torch", "gsplat", "gsplat_torch"])
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--json", action="store_true", help="print one JSON object")
    ap.add_argument("--child", nargs=3, metavar=("SCENE", "BACKEND", "TMP"), help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        return _child(a.child[0], a.child[1], a.iters, Path(a.child[2]))
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for scene in a.scenes:
            splats, cam = _scene(scene, Path(tmp))
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
                elif backend == "torch" and pairs * TORCH_BYTES_PER_PAIR > 0.8 * _mem_available():
                    need = pairs * TORCH_BYTES_PER_PAIR / 1e9
                    row["error"] = (
                        f"not run: the torch autograd path would need ~{need:.0f} GB (15 GB at "
                        f"scene a's 534k pairs), more than this machine has free "
                        f"({_mem_available() / 1e9:.0f} GB)"
                    )
                else:
                    cmd = [sys.executable, __file__, "--iters", str(a.iters), "--child", scene,
                           backend, tmp]  # fmt: skip
                    proc = subprocess.run(cmd, capture_output=True, text=True)
                    if proc.returncode != 0:
                        err = (proc.stderr.strip().splitlines() or ["no output"])[-1]
                        row["error"] = f"failed: {err}"
                    else:
                        row.update(json.loads(proc.stdout.strip().splitlines()[-1]))
                results.append(row)
                if not a.json:
                    t = row.get("sec_per_iter")
                    what = f"{t:.3f} s/iter" if t is not None else row["error"]
                    if "peak_mb" in row:
                        what += f", peak {row['peak_mb']:.0f} MB"
                    print(f"{scene} {backend:13s} {len(splats):>8,} splats {pairs:>9,} pairs "
                          f"{what}", flush=True)  # fmt: skip
    if a.json:
        print(json.dumps({"results": results, "threads": torch.get_num_threads(), **_machine()}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
