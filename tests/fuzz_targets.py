"""Fuzzing the readers of everything a stranger can send: each target takes the bytes of one
file (a valid one, mutated) and runs the reader the commands use; only worldgen's typed errors
(``WorldgenError``) may escape. Shared by ``tests/test_fuzz.py`` (a few hundred cases per
loader in CI) and ``benchmarks/fuzz.py`` (>= 5,000 per loader, time and RSS figures).

Byte mutations (``mutate``): bit flips, random and "interesting" bytes (0, 0xff, 0x7f, 0x80,
large little-endian integers) written over random offsets (the first 512 bytes, where the
headers are, four times as likely), truncation, insertion, deletion and duplication of spans.
"""

from __future__ import annotations

import random
import resource
import shutil
import signal
import struct
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from worldgen.errors import WorldgenError

_INTERESTING = [
    b"\x00", b"\xff", b"\x7f", b"\x80", b"\xff\xff\xff\x7f", b"\x00\x00\x00\x80",
    struct.pack("<I", 10**9), struct.pack("<Q", 2**40), b"\xff" * 8, b"nan", b"-1",
]  # fmt: skip


def mutate(data: bytes, rng: random.Random) -> bytes:
    """1-4 random edits of ``data``."""
    b = bytearray(data)
    for _ in range(rng.randint(1, 4)):
        if not b:
            b += rng.randbytes(rng.randint(1, 64))
            continue
        head = min(len(b), 512)
        pos = rng.randrange(head) if rng.random() < 0.8 and head else rng.randrange(len(b))
        op = rng.randrange(8)
        if op == 0:
            b[pos] ^= 1 << rng.randrange(8)
        elif op == 1:
            b[pos] = rng.randrange(256)
        elif op == 2:
            v = rng.choice(_INTERESTING)
            b[pos : pos + len(v)] = v
        elif op == 3:
            del b[rng.randrange(len(b)) :]
        elif op == 4:
            b[pos:pos] = rng.randbytes(rng.randint(1, 32))
        elif op == 5:
            del b[pos : pos + rng.randint(1, 64)]
        elif op == 6:
            n = rng.randint(1, 64)
            b[pos:pos] = b[pos : pos + n]
        else:  # a decimal number in a text header made large
            i = bytes(b).find(b" ", pos)
            if i > 0:
                b[i + 1 : i + 1] = str(rng.choice([0, 10**12, 2**31, 99999999999])).encode()
    return bytes(b)


@dataclass
class Tally:
    cases: int = 0
    accepted: int = 0
    typed: int = 0
    untyped: list[str] = field(default_factory=list)
    hangs: int = 0
    max_seconds: float = 0.0
    max_rss_mb: float = 0.0


class _Hang(BaseException):
    pass


def _alarm(signum, frame):
    raise _Hang


def run(target: Callable[[bytes], object], seeds: list[bytes], n: int, seed: int = 0,
        timeout_s: float = 10.0) -> Tally:  # fmt: skip
    """``n`` mutated cases of ``seeds`` through ``target``."""
    rng = random.Random(seed)
    t = Tally()
    old = signal.signal(signal.SIGALRM, _alarm)
    try:
        for _ in range(n):
            data = mutate(rng.choice(seeds), rng)
            t.cases += 1
            t0 = time.perf_counter()
            signal.setitimer(signal.ITIMER_REAL, timeout_s)
            try:
                target(data)
                t.accepted += 1
            except WorldgenError:
                t.typed += 1
            except _Hang:
                t.hangs += 1
            except Exception as e:  # what we are looking for
                t.untyped.append(f"{type(e).__name__}: {str(e)[:120]}")
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            t.max_seconds = max(t.max_seconds, time.perf_counter() - t0)
    finally:
        signal.signal(signal.SIGALRM, old)
    t.max_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return t


class Targets:
    """The loaders, each fed one file's bytes, for a world at ``world`` (copied, per case the
    file under test replaced)."""

    def __init__(self, world: Path, scratch: Path):
        self.world = Path(world)
        self.scratch = Path(scratch)
        self.case = self.scratch / "case.world"
        if self.case.exists():
            shutil.rmtree(self.case)
        shutil.copytree(self.world, self.case)
        import json

        self.count = json.loads((self.world / "world.json").read_text())["splats"]["count"]

    def _with(self, rel: str, data: bytes) -> Path:
        p = self.case / rel
        original = self.world / rel
        p.write_bytes(data)
        return p, original

    def _restore(self, rel: str) -> None:
        (self.case / rel).write_bytes((self.world / rel).read_bytes())

    def world_json(self, data: bytes):
        """load_world + everything info, render and export read from the manifest."""
        from worldgen.world import load_world

        self._with("world.json", data)
        try:
            w = load_world(self.case)
            _ = w.intrinsics, w.world_from_camera, w.manifest["spawn"]
            for layer in w.layers:
                _ = layer.path
        finally:
            self._restore("world.json")

    def splats_ply(self, data: bytes):
        from worldgen.splats import read_ply

        p, _ = self._with("splats.ply", data)
        try:
            read_ply(p)
        finally:
            self._restore("splats.ply")

    def splat_layers_npy(self, data: bytes):
        from worldgen.world import read_splat_layers

        p, _ = self._with("splat_layers.npy", data)
        read_splat_layers(p, self.count, header_only=True)
        read_splat_layers(p, self.count)

    def layer_depth_npy(self, data: bytes):
        from worldgen.world import Layer

        self._with("layers/0/depth.npy", data)
        _ = Layer(0, "l", self.case / "layers" / "0").depth

    def layer_rgb_png(self, data: bytes):
        from worldgen.world import Layer

        self._with("layers/0/rgb.png", data)
        _ = Layer(0, "l", self.case / "layers" / "0").rgb

    def layer_intrinsics_json(self, data: bytes):
        from worldgen.world import Layer

        self._with("layers/0/intrinsics.json", data)
        _ = Layer(0, "l", self.case / "layers" / "0").intrinsics

    def collision_glb(self, data: bytes):
        from worldgen.safeio import load_collision_scene

        p, _ = self._with("collision.glb", data)
        try:
            load_collision_scene(p)
        finally:
            self._restore("collision.glb")

    @staticmethod
    def spz(data: bytes):
        from exporters.spz import read_spz

        read_spz(data)

    @staticmethod
    def spz_payload(data: bytes):
        """The SPZ reader on a mutated *decompressed* payload (gzip'd again)."""
        import gzip

        from exporters.spz import read_spz

        read_spz(gzip.compress(data, 1))

    @staticmethod
    def splat(data: bytes):
        from exporters.splat import read_splat

        read_splat(data)

    @staticmethod
    def gltf_splats(data: bytes):
        from exporters.gltf_splats import read_gltf_splats

        read_gltf_splats(data)


FILE_TARGETS = {  # target name -> the bundle file it mutates
    "world.json": "world.json",
    "splats.ply": "splats.ply",
    "splat_layers.npy": "splat_layers.npy",
    "layers/0/depth.npy": "layers/0/depth.npy",
    "layers/0/rgb.png": "layers/0/rgb.png",
    "layers/0/intrinsics.json": "layers/0/intrinsics.json",
    "collision.glb": "collision.glb",
}


def targets_and_seeds(world: Path, scratch: Path) -> dict[str, tuple[Callable, list[bytes]]]:
    """Every loader with its valid seed files (the exports made from ``world``)."""
    from exporters.registry import ExportOptions, get_exporter
    from worldgen.world import load_world

    t = Targets(world, scratch)
    out = {}
    methods = {
        "world.json": t.world_json, "splats.ply": t.splats_ply,
        "splat_layers.npy": t.splat_layers_npy, "layers/0/depth.npy": t.layer_depth_npy,
        "layers/0/rgb.png": t.layer_rgb_png, "layers/0/intrinsics.json": t.layer_intrinsics_json,
        "collision.glb": t.collision_glb,
    }  # fmt: skip
    for name, rel in FILE_TARGETS.items():
        out[name] = (methods[name], [(Path(world) / rel).read_bytes()])
    w = load_world(world)
    for name, fn, opts in (
        ("spz", t.spz, [ExportOptions(), ExportOptions(sh_degree=0, extra={"spz_version": 3})]),
        ("splat", t.splat, [ExportOptions()]),
        ("gltf-splats", t.gltf_splats, [ExportOptions(), ExportOptions(sh_degree=1)]),
    ):
        seeds = [get_exporter(name).export(w, o) for o in opts]
        out[name] = (fn, seeds)
    import gzip

    out["spz (payload)"] = (t.spz_payload, [gzip.decompress(x) for x in out["spz"][1]])
    return out


def tiny_world(root: Path) -> Path:
    """A small world (~1-5k splats) to fuzz: the bad-input corpus's tiny preset."""
    from tests.badinput import TINY_PRESET, _photo, _u8
    from worldgen.config import load_preset
    from worldgen.pipeline import build

    root = Path(root)
    from PIL import Image

    Image.fromarray(_u8(_photo(32, 40, seed=5))).save(root / "p.png")
    (root / "tiny.yaml").write_text(TINY_PRESET)
    cfg = load_preset(str(root / "tiny.yaml")).replace(surround={"width": 64, "sky_width": 32})
    return build(root / "p.png", root / "tiny.world", cfg, use_cache=False).path


def scratch_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="worldgen-fuzz-"))
