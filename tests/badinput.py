"""The bad-input corpus: hostile photos, depth maps, presets, paths and output folders, made
on the fly, and a runner that puts each through the real CLI in its own process.

``make_corpus(root)`` writes every case's files under ``root`` and returns the cases.
``run_cases(cases)`` runs each ``worldgen ...`` command in a process forked from one that has
imported worldgen once (a fresh interpreter, no torch threads yet), with a timeout, and
returns per case: exit code, stderr, wall time, peak RSS (``wait4``), whether the inputs'
hashes changed and what the output folder holds afterwards. Used by ``tests/test_badinput.py``
(the checks) and ``benchmarks/badinput.py`` (the time and memory table).

    python -m tests.badinput ROOT  # make the corpus in ROOT, run it, print JSON per case
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import signal
import struct
import sys
import time
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

#: the corpus's build settings: small and quick, every stage but refinement
TINY_PRESET = """\
image: {max_side: 96}
lift: {stride: 2, colour_solve_iters: 1}
collision: {grid: 16}
surround: {width: 128, sky_width: 64, ground_size: 32}
"""


@dataclass
class Case:
    """One corpus entry: a ``worldgen`` command line and what must come of it.

    expect: "error" (a one-line error, exit code in ``codes``) or "ok" (exit 0, a complete
    world at ``output``; ``notice``, if given, must appear on stderr).
    """

    name: str
    argv: list[str]
    expect: str
    codes: tuple[int, ...] = (0,)
    output: str = ""
    inputs: list[str] = field(default_factory=list)
    notice: str = ""
    timeout_s: float = 120.0


@dataclass
class Result:
    name: str
    rc: int | None
    stderr: str
    stdout: str
    seconds: float
    max_rss_mb: float
    inputs_changed: list[str]
    output_entries: list[str]
    timed_out: bool


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + kind
        + data
        + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def png_header_bomb(w: int, h: int) -> bytes:
    """A PNG whose header declares w x h RGB pixels, with a tiny (truncated) body."""
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    body = zlib.compress(b"\0" * 1000)
    return b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", body)


def png_bilevel(w: int, h: int) -> bytes:
    """A real w x h 1-bit PNG (all white), streamed: no w*h array is ever made."""
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    row = b"\0" + b"\xff" * ((w + 7) // 8)
    c = zlib.compressobj(9)
    parts = [c.compress(row) for _ in range(h)]
    idat = b"".join(parts) + c.flush()
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", idat)
        + _png_chunk(b"IEND", b"")
    )


def jpeg_header_bomb(w: int, h: int) -> bytes:
    """A JPEG of a tiny image whose SOF0 marker is patched to declare w x h."""
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (16, 16), (120, 90, 60)).save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    i = b.index(b"\xff\xc0")
    b[i + 5 : i + 9] = struct.pack(">HH", h, w)
    return bytes(b)


def _photo(h: int = 48, w: int = 64, seed: int = 0) -> np.ndarray:
    from tests.conftest import textured

    return textured(h, w, seed)


def _u8(a: np.ndarray) -> np.ndarray:
    return (np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8)


def _exif_jpeg(path: Path, orientation: int, rgb: np.ndarray) -> None:
    from PIL import Image

    im = Image.fromarray(_u8(rgb))
    exif = Image.Exif()
    exif[0x0112] = orientation
    im.save(path, "JPEG", exif=exif.tobytes(), quality=92)


def _corrupt_exif_jpeg(path: Path, rgb: np.ndarray) -> None:
    """A JPEG whose APP1 Exif block claims an IFD offset far past its end."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_u8(rgb)).save(buf, "JPEG")
    jpg = buf.getvalue()
    tiff = b"MM\x00\x2a" + struct.pack(">I", 0x7FFFFFF0) + b"\x00" * 8
    app1 = b"Exif\x00\x00" + tiff
    seg = b"\xff\xe1" + struct.pack(">H", len(app1) + 2) + app1
    path.write_bytes(jpg[:2] + seg + jpg[2:])


def _ycck_jpeg(path: Path, rgb: np.ndarray) -> None:
    """An Adobe YCCK JPEG: a CMYK JPEG whose APP14 marker says transform 2 (YCCK)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_u8(rgb)).convert("CMYK").save(buf, "JPEG")
    b = bytearray(buf.getvalue())
    i = b.find(b"\xff\xeeAdobe")
    if i < 0:  # Pillow writes an APP14 for CMYK; add one if it did not
        app14 = b"Adobe" + struct.pack(">HHHB", 100, 0, 0, 2)
        b[2:2] = b"\xff\xee" + struct.pack(">H", len(app14) + 2) + app14
    else:
        b[i + 4 + 5 + 6] = 2  # transform flag: YCCK
    path.write_bytes(bytes(b))


def _animated(path: Path, fmt: str) -> None:
    from PIL import Image

    frames = [Image.fromarray(_u8(_photo(seed=k))) for k in range(3)]
    kw = {"save_all": True, "append_images": frames[1:], "duration": 100, "loop": 0}
    if fmt == "PNG":
        kw["default_image"] = False
    frames[0].save(path, fmt, **kw)


def make_corpus(root: Path) -> list[Case]:
    """Write the corpus's files under ``root`` (an empty folder) and return its cases."""
    from PIL import Image

    root = Path(root)
    src, out = root / "in", root / "out"
    src.mkdir(parents=True)
    out.mkdir()
    preset = src / "tiny.yaml"
    preset.write_text(TINY_PRESET)
    good = src / "good.png"
    Image.fromarray(_u8(_photo())).save(good)
    cases: list[Case] = []

    def build(name, image, expect="error", codes=(2,), extra=(), notice="", inputs=None, **kw):
        o = out / f"{name}.world"
        quiet = "--json" if expect == "ok" else "--quiet"  # ok: the notes on stdout
        argv = ["build", str(image), "-o", str(o), "--preset", str(preset), quiet, *extra]
        ins = inputs if inputs is not None else [str(image)]
        cases.append(Case(name, argv, expect, codes, str(o), ins, notice, **kw))

    def write(name: str, data: bytes) -> Path:
        p = src / name
        p.write_bytes(data)
        return p

    # --- not images, or broken ones
    build("text-named-jpg", write("text.jpg", b"just some text, not a photo\n" * 10))
    build("html-named-png", write("page.png", b"<!doctype html><html><body>hi</body></html>"))
    build("gzip-named-jpg", write("data.jpg", gzip.compress(b"x" * 5000)))
    build("empty-file", write("empty.png", b""))
    build("truncated-png", write("trunc.png", good.read_bytes()[:200]))
    build("truncated-jpeg", write("trunc.jpg", jpeg_header_bomb(16, 16)[:300]))
    build("random-bytes", write("noise.jpg", np.random.default_rng(1).bytes(4096)))
    pdf = b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n1 0 obj\n<<>>\nendobj\n"
    build("pdf-named-pdf", write("doc.pdf", pdf))
    ico = src / "icon.ico"
    Image.fromarray(_u8(_photo(32, 32))).save(ico)
    build("unsupported-ico", ico)
    # --- decompression bombs
    build("png-header-100000x100000", write("bomb.png", png_header_bomb(100_000, 100_000)))
    build("jpeg-header-100000x100000", write("bomb.jpg", jpeg_header_bomb(65_000, 65_000)))
    build("png-real-20000x20000", write("huge.png", png_bilevel(20_000, 20_000)))
    # --- files that are not regular files
    loop = src / "loop.jpg"
    os.symlink(loop.name, loop)
    build("symlink-loop", loop, inputs=[])
    dangling = src / "dangling.jpg"
    os.symlink("nowhere.jpg", dangling)
    build("dangling-symlink", dangling, inputs=[])
    fifo = src / "fifo.jpg"
    os.mkfifo(fifo)
    build("fifo", fifo, inputs=[], timeout_s=30)
    build("directory", src, inputs=[])
    build("missing-file", src / "missing.jpg", inputs=[])
    # --- degenerate shapes
    Image.fromarray(_u8(_photo(1, 200))).save(src / "strip-1xN.png")
    build("strip-1xN", src / "strip-1xN.png")
    Image.fromarray(_u8(_photo(200, 1))).save(src / "strip-Nx1.png")
    build("strip-Nx1", src / "strip-Nx1.png")
    Image.fromarray(_u8(_photo(8, 160))).save(src / "strip-8x160.png")
    build("strip-8x160", src / "strip-8x160.png")  # 96x5 working image: too small
    # --- colour modes and formats that must work
    for fmt, ext in (("GIF", "gif"), ("WEBP", "webp"), ("PNG", "png")):
        p = src / f"animated.{ext}"
        _animated(p, fmt)
        build(f"animated-{ext}", p, "ok", notice="first frame")
    cmyk = src / "cmyk.jpg"
    Image.fromarray(_u8(_photo())).convert("CMYK").save(cmyk, "JPEG")
    build("cmyk-jpeg", cmyk, "ok")
    _ycck_jpeg(src / "ycck.jpg", _photo())
    build("ycck-jpeg", src / "ycck.jpg", "ok")
    pal = Image.fromarray(_u8(_photo())).convert("P", palette=Image.Palette.ADAPTIVE)
    pal.info["transparency"] = 0
    pal.save(src / "palette-transparent.png", transparency=0)
    build("palette-transparency", src / "palette-transparent.png", "ok")
    import tifffile

    tifffile.imwrite(src / "rgb16.tif", (_photo() * 65535).astype(np.uint16))
    build("tiff-16bit", src / "rgb16.tif", "ok")
    f = _photo()[..., 0].astype(np.float32) * 3.0
    f[5:9, 5:9] = np.nan
    f[10, 10] = np.inf
    tifffile.imwrite(src / "float.tif", f)
    build("tiff-float-nan-inf", src / "float.tif", "ok")
    for o in range(1, 9):
        _exif_jpeg(src / f"exif-{o}.jpg", o, _photo(40, 64, seed=o))
        build(f"exif-orientation-{o}", src / f"exif-{o}.jpg", "ok")
    _corrupt_exif_jpeg(src / "bad-exif.jpg", _photo())
    build("corrupt-exif", src / "bad-exif.jpg", "ok")
    # --- degenerate content: no depth cues, no ground, no sky
    for name, a in (
        ("constant-grey", np.full((48, 64, 3), 0.5, np.float32)),
        ("all-black", np.zeros((48, 64, 3), np.float32)),
        ("all-white", np.ones((48, 64, 3), np.float32)),
        ("pure-noise", np.random.default_rng(2).random((48, 64, 3)).astype(np.float32)),
    ):
        Image.fromarray(_u8(a)).save(src / f"{name}.png")
        build(name, src / f"{name}.png", "ok")
    # --- hostile depth maps
    for name, d in (
        ("depth-all-nan", np.full((48, 64), np.nan, np.float32)),
        ("depth-inf-negative", np.where(np.eye(48, 64) > 0, -np.inf, -3.0).astype(np.float32)),
        ("depth-huge", np.full((48, 64), 1e30, np.float32)),
        ("depth-other-aspect", np.full((64, 48), 3.0, np.float32)),
        ("depth-3d", np.ones((2, 48, 64), np.float32)),
        ("depth-object-array", None),
    ):
        p = src / f"{name}.npy"
        if d is None:  # a pickled object array: never unpickled
            np.save(p, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        else:
            np.save(p, d)
        build(name, good, extra=("--depth-map", str(p)), inputs=[str(good), str(p)])
    mixed = np.full((48, 64), 4.0, np.float32)
    mixed[:10] = np.nan
    mixed[10:12] = np.inf
    mixed[12:14] = -1
    np.save(src / "depth-mixed.npy", mixed)
    build(
        "depth-mixed-unknown",
        good,
        "ok",
        extra=("--depth-map", str(src / "depth-mixed.npy")),
        inputs=[str(good), str(src / "depth-mixed.npy")],
    )
    # --- paths
    for name, fname in (("path-spaces", "my photo.png"), ("path-non-ascii", "фото_照片.png")):
        p = src / fname
        p.write_bytes(good.read_bytes())
        build(name, p, "ok")
    dash = src / "-dash.png"
    dash.write_bytes(good.read_bytes())
    o = out / "-dash.world"
    cases.append(
        Case(
            "path-leading-dash",
            ["build", "--preset", str(preset), "--json", "-o", str(o), "--", "-dash.png"],
            "ok",
            (0,),
            str(o),
            [str(dash)],
        )
    )
    # --- presets
    for name, text in (
        ("preset-wrong-type", "image: {max_side: big}\n"),
        ("preset-unknown-key", "image: {max_side: 64, colour: red}\n"),
        ("preset-negative", "lift: {stride: -2}\n"),
        ("preset-absurd", "image: {max_side: 1000000000}\n"),
        ("preset-not-mapping", "- a\n- b\n"),
        ("preset-bad-yaml", "image: {max_side: [\n"),
        ("preset-python-tag", "image: !!python/object/apply:os.system ['echo pwned']\n"),
        ("preset-nan", "depth: {camera_height: .nan}\n"),
        ("preset-huge-refine", "refine: {iters: 100000000}\n"),
    ):
        p = src / f"{name}.yaml"
        p.write_text(text)
        o = out / f"{name}.world"
        argv = ["build", str(good), "-o", str(o), "--preset", str(p), "--quiet"]
        cases.append(Case(name, argv, "error", (2,), str(o), [str(good), str(p)]))
    # --- outputs
    ro = root / "readonly"
    ro.mkdir()
    if not mount_tmpfs(ro, "64k", readonly=True):
        ro.chmod(0o555)  # (not for root, which writes anyway: the case then fails)
    o = ro / "w.world"
    cases.append(
        Case(
            "output-readonly-folder",
            ["build", str(good), "-o", str(o), "--preset", str(preset), "--quiet"],
            "error",
            (3,),
            str(o),
            [str(good)],
        )
    )
    o = out / "missing" / "w.world"
    cases.append(
        Case(
            "output-missing-folder",
            ["build", str(good), "-o", str(o), "--preset", str(preset), "--quiet"],
            "error",
            (3,),
            str(o),
            [str(good)],
        )
    )
    o = out / "a-file.world"
    o.write_text("not a world")
    cases.append(
        Case(
            "output-is-a-file",
            ["build", str(good), "-o", str(o), "--preset", str(preset), "--quiet", "--force"],
            "error",
            (3,),
            "",
            [str(good), str(o)],
        )
    )
    full = root / "full"
    full.mkdir()
    if mount_tmpfs(full, "48k"):  # a real full disk: the world does not fit
        o = full / "w.world"
        cases.append(
            Case(
                "output-full-disk",
                ["build", str(good), "-o", str(o), "--preset", str(preset), "--quiet"],
                "error",
                (3,),
                str(o),
                [str(good)],
            )
        )
    return cases


def mount_tmpfs(path: Path, size: str, readonly: bool = False) -> bool:
    """Mount a small tmpfs at ``path`` (needs root or CAP_SYS_ADMIN); False where not allowed."""
    import subprocess

    opts = f"size={size}" + (",ro" if readonly else "")
    try:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return r.returncode == 0


def unmount_all(root: Path) -> None:
    import subprocess

    for name in ("readonly", "full"):
        p = Path(root) / name
        if os.path.ismount(p):
            subprocess.run(["umount", "-l", str(p)], capture_output=True, timeout=10)


def _sha(path: str) -> str | None:
    try:
        with open(path, "rb", opener=lambda p, f: os.open(p, f | os.O_NONBLOCK)) as fh:
            if not os.path.isfile(path):
                return None
            return hashlib.sha256(fh.read()).hexdigest()
    except OSError:
        return None


def _entries(case: Case) -> list[str]:
    """What the output's folder holds that is about this output (``out``, its dotfiles)."""
    if not case.output:
        return []
    o = Path(case.output)
    try:
        names = [p.name for p in o.parent.iterdir()]
    except OSError:
        return []
    return sorted(n for n in names if n == o.name or n.startswith(f".{o.name}."))


def run_cases(cases: list[Case], cache_dir: Path, cwd: Path) -> list[Result]:
    """Run every case's command in a process forked from this one (worldgen imported)."""
    import worldgen.cli  # noqa: F401  (imported once, before the forks)
    import worldgen.pipeline  # noqa: F401

    results = []
    for case in cases:
        before = {p: _sha(p) for p in case.inputs}
        errf = cache_dir.parent / f"stderr-{os.getpid()}"
        t0 = time.perf_counter()
        pid = os.fork()
        if pid == 0:  # the child: one worldgen command
            try:
                os.chdir(cwd if case.name != "path-leading-dash" else Path(case.inputs[0]).parent)
                os.environ["WORLDGEN_CACHE_DIR"] = str(cache_dir)
                fd = os.open(errf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 2)
                fd = os.open(f"{errf}.out", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
                os.dup2(fd, 1)
                from worldgen.cli import main

                code = main(case.argv)
            except SystemExit as e:  # argparse
                code = e.code if isinstance(e.code, int) else 2
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 99
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
        timed_out = False
        deadline = time.monotonic() + case.timeout_s
        while True:
            wpid, status, usage = os.wait4(pid, os.WNOHANG)
            if wpid:
                break
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                timed_out = True
                _, status, usage = os.wait4(pid, 0)
                break
            time.sleep(0.01)
        dt = time.perf_counter() - t0
        rc = os.waitstatus_to_exitcode(status)
        after = {p: _sha(p) for p in case.inputs}
        changed = [p for p in case.inputs if before[p] != after[p]]
        stderr = Path(errf).read_text(errors="replace")
        stdout = Path(f"{errf}.out").read_text(errors="replace")
        results.append(
            Result(
                case.name,
                rc,
                stderr,
                stdout,
                round(dt, 3),
                round(usage.ru_maxrss / 1024, 1),
                changed,
                _entries(case),
                timed_out,
            )
        )
    return results


def main(argv: list[str]) -> int:
    """``python -m tests.badinput ROOT [NAME...]``: make, run, print JSON results."""
    root = Path(argv[0])
    saved = root / "cases.json"
    cases = json.loads(saved.read_text()) if saved.exists() else None
    if cases is None:
        cases = [asdict(c) for c in make_corpus(root)]
        (root / "cases.json").write_text(json.dumps(cases))
    cs = [Case(**{**c, "codes": tuple(c["codes"])}) for c in cases]
    if argv[1:]:
        cs = [c for c in cs if c.name in argv[1:]]
    cache = root / "cache"
    cache.mkdir(exist_ok=True)
    try:
        res = run_cases(cs, cache, root)
    finally:
        unmount_all(root)
    print(json.dumps([asdict(r) for r in res]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
