"""Size and speed of the web export (`worldgen export --to web`) in headless Chromium.

For each world: the folder written for ``--target desktop`` (uncapped), ``vr`` (1 M splats,
SH 1) and ``mobile`` (500 k splats, SH 0) -- viewer.js (and its gzip size, as a static host
would send it), world.spz, collision.glb, world-data.js (file:// only) and the total -- then the
desktop site served by ``worldgen serve``'s server on 127.0.0.1 and opened at 1280x720 in
Debian's chromium (headless, WebGL2 on SwiftShader: a software rasterizer on the CPU, so the
figures say how the page behaves on this machine, not on a GPU or a headset; report only):

* load: navigation start -> the first frame that drew the splats is on screen
  (``worldgen.loadSeconds`` of the page, taken two frames later: download, SPZ decode,
  collision BVH, Spark's first depth sort, that frame's rendering); first frame: -> the page's
  first frame (loading done, splats not drawn yet);
* fps: frames finished per second of the page's own clock over ``--seconds``, standing at the
  spawn, after that warm-up.

    .venv/bin/python benchmarks/web_viewer.py WORLD [WORLD ...] [--size 1280x720]
        [--seconds 20] [--json benchmarks/results/web_viewer.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

FLAGS = [
    "--no-sandbox",
    "--enable-unsafe-swiftshader",
    "--use-angle=swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-dev-shm-usage",
    "--no-first-run",
]
TARGETS = ("desktop", "vr", "mobile")


def folder_sizes(site: Path) -> dict:
    size = {f.name: f.stat().st_size for f in site.iterdir()}
    viewer = (site / "viewer.js").read_bytes()
    site_json = json.loads((site / "site.json").read_text())
    return {
        "splats": site_json["splats"]["count"],
        "viewer_js": size["viewer.js"],
        "viewer_js_gzip": len(gzip.compress(viewer, 9)),
        "world_spz": size["world.spz"],
        "collision_glb": size["collision.glb"],
        "world_data_js": size["world-data.js"],
        "total": sum(size.values()),
        "http_download": size["viewer.js"] + size["world.spz"] + size["collision.glb"],
    }


def measure_page(site: Path, size: tuple[int, int], seconds: float) -> dict:
    from playwright.sync_api import sync_playwright

    from worldgen.serve import ServeOptions, make_server

    srv, urls = make_server(site.resolve(), ServeOptions(port=0, quiet=True))
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    try:
        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=chromium, headless=True, args=FLAGS)
            pg = b.new_page(viewport={"width": size[0], "height": size[1]})
            errors = []
            pg.on("console", lambda m: m.type == "error" and errors.append(m.text))
            pg.goto(urls[0] + "index.html")
            pg.wait_for_function("worldgen.ready || worldgen.error", timeout=300_000)
            first = pg.evaluate("worldgen.firstFrameSeconds")
            # Spark's first depth sort lands in a worker; the world shows from that frame on
            pg.wait_for_function("worldgen.loadSeconds !== null", timeout=600_000)
            load = pg.evaluate("worldgen.loadSeconds")
            drawn = pg.evaluate("worldgen.activeSplats")
            # fps: frames finished over the page's own clock, a window of `seconds`
            fa, ta = pg.evaluate("[worldgen.frames, performance.now()]")
            time.sleep(seconds)
            fb, tb = pg.evaluate("[worldgen.frames, performance.now()]")
            fps = (fb - fa) / ((tb - ta) / 1000)
            b.close()
    finally:
        srv.shutdown()
        srv.server_close()
    return {
        "first_frame_s": round(first, 2),
        "load_s": round(load, 2),
        "splats_drawn": drawn,
        "fps": round(fps, 2),
        "frames_measured": fb - fa,
        "console_errors": errors,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("worlds", nargs="+", type=Path)
    ap.add_argument("--size", default="1280x720", help="viewport WIDTHxHEIGHT")
    ap.add_argument("--seconds", type=float, default=20.0, help="fps window after warm-up")
    ap.add_argument("--json", type=Path, help="write the results here")
    a = ap.parse_args()
    size = tuple(int(v) for v in a.size.split("x"))

    from exporters import ExportOptions, export_world
    from worldgen.world import load_world

    rows = []
    tmp = Path(tempfile.mkdtemp(prefix="web-bench-"))
    try:
        for i, wp in enumerate(a.worlds):
            w = load_world(wp)
            row = {
                "world": wp.name.removesuffix(".world"),
                "preset": w.manifest["config"].get("preset"),
            }
            for target in TARGETS:
                site = tmp / f"{i}-{target}"
                t0 = time.perf_counter()
                export_world(w, "web", site, ExportOptions(target=target))
                row[target] = folder_sizes(site)
                row[target]["export_s"] = round(time.perf_counter() - t0, 2)
            load1 = os.getloadavg()[0]
            row["page"] = measure_page(tmp / f"{i}-desktop", size, a.seconds)
            row["page"]["loadavg_1min_before"] = round(load1, 2)
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    mb = lambda n: f"{n / 1e6:.1f}"  # noqa: E731
    print()
    print(
        f"| world (preset) | splats | viewer.js (gzip) MB | world.spz MB desktop / vr / mobile "
        f"| folder MB | first frame s | load s (world on screen) | fps at {a.size} |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        d, v, m, pg = r["desktop"], r["vr"], r["mobile"], r["page"]
        print(
            f"| {r['world']} ({r['preset']}) | {d['splats']:,} | {mb(d['viewer_js'])} "
            f"({mb(d['viewer_js_gzip'])}) | {mb(d['world_spz'])} / {mb(v['world_spz'])} / "
            f"{mb(m['world_spz'])} | {mb(d['total'])} | {pg['first_frame_s']} | {pg['load_s']} "
            f"| {pg['fps']} |"
        )
    cmd = "  .venv/bin/python benchmarks/web_viewer.py " + " ".join(
        shlex.quote(str(x)) for x in sys.argv[1:]
    )
    print(f"\n{platform.node()}, {os.cpu_count()} CPUs; reproduce with:\n{cmd}")
    if a.json:
        a.json.parent.mkdir(parents=True, exist_ok=True)
        a.json.write_text(json.dumps({"size": a.size, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
