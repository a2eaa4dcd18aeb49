"""GL splat renderer speed on a scripted walk: sort, upload and draw time per frame.

    .venv/bin/python benchmarks/viewer.py [--sizes 100000,500000,1000000] [--frames 60]
        [--nocull-frames 20] [--naive-frames 10] [--gpu-frames 2] [--width 1280 --height 720]
        [--quick]

Scene: a synthetic room (16 x 3 x 16 m: floor, ceiling, four walls, and boxes standing in it)
covered with splats lying in the surfaces (standard deviation 0.4-0.8 x their spacing), SH
degree 0.
Walk: from one side of the room, every frame the camera turns 2 degrees and moves 5 cm along its
view (hfov 60 deg); every frame is sorted for its own pose.

Variants, each drawing with the same shaders into an RGBA8 target (like a window),
``glFinish`` after every phase so the times are the GL implementation's:
* ``cpu radix``: renderer.sort's numba radix sort of the splats that can reach the image (the
  renderer's default on software GL), in the worker thread; uploads only the index buffer.
* ``cpu radix, no cull``: the same sorting every splat (what a sort without culling costs).
* ``naive``: numpy ``argsort`` of all depths, then the whole splat data re-uploaded in sorted
  order every frame (what simple web viewers do); drawn with the identity order.
* ``gpu bitonic``: renderer.sort's compute-shader sort (keys and bitonic network on the GL
  device; fewer frames: on llvmpipe it runs on the CPU, slowly).

Prints a table of p50 / p95 milliseconds and writes benchmarks/results/viewer.json with the
command line and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from worldgen.camera import Camera, Intrinsics, Pose, rot_y  # noqa: E402
from worldgen.splats import Splats, rgb_to_sh0  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results" / "viewer.json"


def room_splats(n: int, seed: int = 0) -> Splats:
    """~n splats on the surfaces of a 16 x 3 x 16 m room with 12 boxes (camera axes: y down)."""
    rng = np.random.default_rng(seed)
    L, Hh = 8.0, 3.0  # half size of the floor, height (floor at y = 1.6, ceiling at y = -1.4)
    y_floor, y_ceil = 1.6, 1.6 - Hh
    # (centre, u axis, v axis, normal-ish) of rectangles: floor, ceiling, 4 walls, box sides
    rects = [
        ((0, y_floor, 0), (L, 0, 0), (0, 0, L)),
        ((0, y_ceil, 0), (L, 0, 0), (0, 0, L)),
        ((0, y_floor - Hh / 2, L), (L, 0, 0), (0, Hh / 2, 0)),
        ((0, y_floor - Hh / 2, -L), (L, 0, 0), (0, Hh / 2, 0)),
        ((L, y_floor - Hh / 2, 0), (0, 0, L), (0, Hh / 2, 0)),
        ((-L, y_floor - Hh / 2, 0), (0, 0, L), (0, Hh / 2, 0)),
    ]
    for _ in range(12):
        c = rng.uniform(-6, 6, 2)
        s = rng.uniform(0.3, 0.8, 3)
        y = y_floor - s[1]
        rects += [
            ((c[0] + s[0], y, c[1]), (0, 0, s[2]), (0, s[1], 0)),
            ((c[0] - s[0], y, c[1]), (0, 0, s[2]), (0, s[1], 0)),
            ((c[0], y, c[1] + s[2]), (s[0], 0, 0), (0, s[1], 0)),
            ((c[0], y, c[1] - s[2]), (s[0], 0, 0), (0, s[1], 0)),
            ((c[0], y - s[1], c[1]), (s[0], 0, 0), (0, 0, s[2])),
        ]
    C = np.array([r[0] for r in rects], np.float64)
    U = np.array([r[1] for r in rects], np.float64)
    V = np.array([r[2] for r in rects], np.float64)
    area = 4 * np.linalg.norm(U, axis=1) * np.linalg.norm(V, axis=1)
    counts = rng.multinomial(n, area / area.sum())
    k = np.repeat(np.arange(len(rects)), counts)
    a = rng.uniform(-1, 1, (n, 1))
    b = rng.uniform(-1, 1, (n, 1))
    means = C[k] + a * U[k] + b * V[k]
    spacing = math.sqrt(area.sum() / n)
    # discs in the surface: two axes ~ spacing, the normal thin
    un = U[k] / np.linalg.norm(U[k], axis=1, keepdims=True)
    vn = V[k] / np.linalg.norm(V[k], axis=1, keepdims=True)
    nn = np.cross(un, vn)
    Rm = np.stack([un, vn, nn], axis=2)  # columns
    quats = torch.from_numpy(_rotmat_to_quat(Rm)).float()
    sig = spacing * rng.uniform(0.4, 0.8, (n, 2))
    log_scales = np.concatenate([np.log(sig), np.full((n, 1), math.log(spacing * 0.05))], 1)
    tile = ((np.floor(a * 4) + np.floor(b * 4)) % 2).reshape(-1)
    hue = rng.random(len(rects))[k]
    rgb = np.stack([0.3 + 0.5 * hue, 0.4 + 0.3 * tile, 0.7 - 0.4 * hue], 1)
    rgb += rng.normal(0, 0.03, rgb.shape)
    return Splats(
        means=torch.from_numpy(means).float(),
        quats=quats,
        log_scales=torch.from_numpy(log_scales).float(),
        logit_opacities=torch.from_numpy(rng.uniform(1.0, 5.0, n)).float(),
        sh=rgb_to_sh0(torch.from_numpy(rgb).float())[:, None, :],
        layers=torch.zeros(n, dtype=torch.uint8),
    )


def _rotmat_to_quat(R: np.ndarray) -> np.ndarray:
    """[N, 3, 3] proper rotations -> [N, 4] (w, x, y, z)."""
    from scipy.spatial.transform import Rotation

    det = np.linalg.det(R)
    R = R.copy()
    R[det < 0, :, 2] *= -1
    xyzw = Rotation.from_matrix(R).as_quat()
    return np.concatenate([xyzw[:, 3:], xyzw[:, :3]], 1)


def walk(n_frames: int, width: int, height: int) -> list[Camera]:
    """Turn 2 deg and move 5 cm along the view every frame, starting near a wall."""
    intr = Intrinsics.from_hfov(60.0, width, height)
    cams = []
    T = np.array([0.0, 0.0, -5.0])
    yaw = 0.0
    for _ in range(n_frames):
        R = rot_y(math.radians(yaw))
        cams.append(Camera(intr, Pose(R, T.copy())))
        yaw += 2.0
        T = T + 0.05 * R[:, 2]
    return cams


def pct(xs, q) -> float:
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else float("nan")


def run_variant(ctx, splats, cams, variant: str, fbo) -> dict:
    from renderer.splat_renderer import SplatRenderer, pack_splats

    sort = "gpu" if variant == "gpu bitonic" else "cpu"
    r = SplatRenderer(ctx, splats, sort=sort, cull=variant != "cpu radix, no cull")
    rows = {"sort_ms": [], "upload_ms": [], "draw_ms": [], "drawn": []}
    if variant == "naive":
        import moderngl

        n = len(splats)
        ident = np.arange(n, dtype=np.uint32)
        r.order.write(ident)
        packed = pack_splats(splats, r.sh_degree)
        tw = 1 << r.tex_w_log2
        th = r.data.size[1]
        flat = np.zeros((th * tw, 4), np.float32)
        means = packed[:, 0, :3].astype(np.float32)
        r.render(cams[0], fbo=fbo)  # compile, warm
        for cam in cams:
            V = cam.viewmat
            t0 = time.perf_counter()
            z = means @ V[2, :3].astype(np.float32) + np.float32(V[2, 3])
            order = np.argsort(-z)  # back to front (far first)
            t1 = time.perf_counter()
            flat[: n * r.stride] = packed[order].reshape(-1, 4)
            r.data.write(flat)
            ctx.finish()
            t2 = time.perf_counter()
            fbo.use()
            fbo.clear(0.0, 0.0, 0.0, 0.0)
            r._set_uniforms(cam, (0, 0, cam.intrinsics.width, cam.intrinsics.height))
            r.data.use(0)
            ctx.enable(moderngl.BLEND)
            ctx.blend_func = moderngl.ONE, moderngl.ONE_MINUS_SRC_ALPHA
            r.project_vao.transform(r.records, mode=moderngl.POINTS, vertices=n)
            r.quad_vao.render(moderngl.TRIANGLE_STRIP, vertices=4, instances=n)
            ctx.finish()
            t3 = time.perf_counter()
            rows["sort_ms"].append((t1 - t0) * 1e3)
            rows["upload_ms"].append((t2 - t1) * 1e3)
            rows["draw_ms"].append((t3 - t2) * 1e3)
            rows["drawn"].append(n)
    else:
        r.render(cams[0], fbo=fbo)  # compile, warm (JIT, shader)
        r._last_key = None
        for cam in cams:
            s = r.render(cam, fbo=fbo)
            rows["sort_ms"].append(s.sort_ms)
            rows["upload_ms"].append(s.upload_ms)
            rows["draw_ms"].append(s.draw_ms)
            rows["drawn"].append(s.drawn)
    r.release()
    out = {"frames": len(cams)}
    for k in ("sort_ms", "upload_ms", "draw_ms"):
        out[k] = {"p50": round(pct(rows[k], 50), 3), "p95": round(pct(rows[k], 95), 3)}
    su = np.asarray(rows["sort_ms"]) + np.asarray(rows["upload_ms"])
    out["sort_upload_ms"] = {"p50": round(pct(su, 50), 3), "p95": round(pct(su, 95), 3)}
    out["drawn_mean"] = int(np.mean(rows["drawn"]))
    return out


def table(results: list[dict]) -> str:
    def pp(r, k, digits=2):
        return f"{r[k]['p50']:.{digits}f} / {r[k]['p95']:.{digits}f}"

    head = ["splats", "variant", "sort", "upload", "sort+upload", "draw", "drawn", "frames"]
    rows = [
        [
            f"{r['splats']:,}",
            r["variant"],
            pp(r, "sort_ms"),
            pp(r, "upload_ms"),
            pp(r, "sort_upload_ms"),
            pp(r, "draw_ms", 1),
            f"{r['drawn_mean']:,}",
            str(r["frames"]),
        ]
        for r in results
    ]
    w = [max(len(x) for x in col) for col in zip(head, *rows, strict=True)]
    lines = [" | ".join(h.ljust(n) for h, n in zip(head, w, strict=True))]
    lines.append("-+-".join("-" * n for n in w))
    lines += [" | ".join(c.rjust(n) for c, n in zip(row, w, strict=True)) for row in rows]
    return "ms per frame, p50 / p95\n" + "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="100000,500000,1000000")
    ap.add_argument("--frames", type=int, default=60)
    ap.add_argument("--nocull-frames", type=int, default=20)
    ap.add_argument("--naive-frames", type=int, default=10)
    ap.add_argument("--gpu-frames", type=int, default=2)
    ap.add_argument("--width", type=int, default=1280)
    ap.add_argument("--height", type=int, default=720)
    ap.add_argument("--quick", action="store_true", help="10k splats, 5 frames (a smoke test)")
    ap.add_argument("--out", default=str(RESULTS))
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.frames, a.nocull_frames, a.naive_frames, a.gpu_frames = "10000", 5, 3, 3, 2
    sizes = [int(s) for s in a.sizes.split(",")]

    from renderer.offscreen import create_context
    from renderer.sort import warm_up

    warm_up()
    ctx = create_context(require=430)
    W, H = a.width, a.height
    fbo = ctx.framebuffer(color_attachments=[ctx.texture((W, H), 4)])  # RGBA8, like a window
    results = []
    for n in sizes:
        splats = room_splats(n)
        for variant, frames in (
            ("cpu radix", a.frames),
            ("cpu radix, no cull", a.nocull_frames),
            ("naive", a.naive_frames),
            ("gpu bitonic", a.gpu_frames),
        ):
            if frames <= 0:
                continue
            t0 = time.perf_counter()
            res = run_variant(ctx, splats, walk(frames, W, H), variant, fbo)
            res.update(splats=n, variant=variant, wall_s=round(time.perf_counter() - t0, 2))
            results.append(res)
            print(
                f"{n:>9,} {variant:<20} sort {res['sort_ms']['p50']:8.2f} / "
                f"{res['sort_ms']['p95']:8.2f}  upload {res['upload_ms']['p50']:7.2f} / "
                f"{res['upload_ms']['p95']:7.2f}  draw {res['draw_ms']['p50']:8.1f} / "
                f"{res['draw_ms']['p95']:8.1f}  drawn {res['drawn_mean']:>9,}",
                flush=True,
            )
            assert ctx.error == "GL_NO_ERROR", ctx.error
    print()
    print(table(results))
    cmd = "python benchmarks/viewer.py " + " ".join(sys.argv[1:])
    info = {
        "command": cmd.strip(),
        "gl_renderer": ctx.info["GL_RENDERER"],
        "gl_version": ctx.info["GL_VERSION"],
        "cpu_count": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "resolution": [W, H],
        "note": "ms per frame, RGBA8 target, glFinish after each phase; sort_ms of the CPU "
        "variants is the worker thread's sort (keys, cull, radix), overlapped with the GL set-up",
        "results": results,
    }
    out = Path(a.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(info, indent=2) + "\n")
    print(f"\nwrote {out}\nreproduce: {cmd}")
    ctx.release()
    return 0


if __name__ == "__main__":
    sys.exit(main())
