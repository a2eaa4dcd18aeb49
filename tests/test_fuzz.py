"""Fuzzing the readers (tests/fuzz_targets.py): a few hundred byte mutations per loader, and
structure-aware cases (hypothesis) of world.json, the PLY header and the SPZ header. Only
worldgen's typed errors may escape; no case may hang. ``benchmarks/fuzz.py`` runs >= 5,000
per loader and reports the figures."""

from __future__ import annotations

import contextlib
import copy
import gzip
import io
import json
import shutil
import struct

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.fuzz_targets import run, scratch_dir, targets_and_seeds, tiny_world
from worldgen.cli import main
from worldgen.errors import WorldgenError

CASES = 300


@pytest.fixture(scope="module")
def fuzz(tmp_path_factory):
    d = tmp_path_factory.mktemp("fuzz")
    world = tiny_world(d)
    scratch = scratch_dir()
    yield world, targets_and_seeds(world, scratch)
    shutil.rmtree(scratch, ignore_errors=True)


LOADERS = ["world.json", "splats.ply", "splat_layers.npy", "layers/0/depth.npy",
           "layers/0/rgb.png", "layers/0/intrinsics.json", "collision.glb", "spz",
           "spz (payload)", "splat", "gltf-splats"]  # fmt: skip


@pytest.mark.parametrize("loader", LOADERS)
def test_byte_mutations_raise_only_typed_errors(fuzz, loader):
    _, targets = fuzz
    fn, seeds = targets[loader]
    t = run(fn, seeds, CASES, seed=LOADERS.index(loader), timeout_s=10.0)
    assert t.cases == CASES and t.hangs == 0
    assert not t.untyped, t.untyped[:5]
    assert t.typed > 0  # the mutations do reach the checks


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True) | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner,
                                                                max_size=4),
    max_leaves=12,
)  # fmt: skip

HOSTILE_PATHS = st.sampled_from(["../../etc", "/etc/passwd", "layers/../../x", "layers/0/../..",
                                 "", ".", "layers/0\x00", "a" * 300])  # fmt: skip


def _paths(d, prefix=()):
    yield prefix
    if isinstance(d, dict):
        for k, v in d.items():
            yield from _paths(v, (*prefix, k))
    elif isinstance(d, list):
        for i, v in enumerate(d):
            yield from _paths(v, (*prefix, i))


def _set(d, path, value, delete=False):
    *head, last = path
    for k in head:
        d = d[k]
    if delete and isinstance(d, dict):
        del d[last]
    else:
        d[last] = value


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_hostile_manifest_info_and_export_fail_cleanly(fuzz, data, tmp_path_factory):
    """world.json with any field replaced (any JSON, hostile paths) or deleted: `info`,
    `export` and `render` answer with a result or a one-line error (exit 2 or 4), never an
    internal error."""
    world, _ = fuzz
    d = tmp_path_factory.mktemp("w") / "h.world"
    shutil.copytree(world, d)
    m = json.loads((world / "world.json").read_text())
    paths = [p for p in _paths(m) if p]
    path = data.draw(st.sampled_from(paths))
    how = data.draw(st.sampled_from(["value", "path", "delete"]))
    value = data.draw(HOSTILE_PATHS if how == "path" else json_values)
    m2 = copy.deepcopy(m)
    _set(m2, path, value, delete=how == "delete")
    (d / "world.json").write_text(json.dumps(m2))
    png = str(d.parent / "r.png")
    for argv in (
        ["info", str(d)],
        ["export", str(d), "-o", str(d.parent / "o.ply"), "--force"],
        ["render", str(d), "-o", png, "--force", "--backend", "cpu", "--size", "32x24"],
    ):
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            rc = main([*argv, "--json"] if argv[0] == "info" else argv)
        assert rc in (0, 2, 4), (argv[0], path, how, value, rc)
        if rc == 4 and argv[0] == "info":  # load_world refused it: so do export and render
            break


def _ply(count: int, fmt: str, props: list[tuple[str, str]], body: bytes) -> bytes:
    head = ["ply", f"format {fmt} 1.0", f"element vertex {count}"]
    head += [f"property {t} {n}" for t, n in props] + ["end_header"]
    return ("\n".join(head) + "\n").encode() + body


PLY_NAMES = ["x", "y", "z", "nx", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1",
             "scale_2", "rot_0", "rot_1", "rot_2", "rot_3", "f_rest_0", "list", "x"]  # fmt: skip


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    count=st.integers(0, 2**40),
    fmt=st.sampled_from(["binary_little_endian", "binary_big_endian", "ascii", "x"]),
    props=st.lists(
        st.tuples(
            st.sampled_from(["float", "double", "uchar", "int", "list", "f16"]),
            st.sampled_from(PLY_NAMES),
        ),
        max_size=20,
    ),  # fmt: skip
    body=st.binary(max_size=4096),
    values=st.sampled_from([0.0, np.nan, np.inf, 1e38]),
)
def test_ply_header_structure(tmp_path_factory, count, fmt, props, body, values):
    from worldgen.splats import read_ply

    p = tmp_path_factory.mktemp("ply") / "s.ply"
    if props and body == b"" and count < 64:  # a consistent body with chosen values
        dt = {"float": 4, "double": 8, "uchar": 1, "int": 4}
        size = sum(dt.get(t, 4) for t, _ in props)
        body = np.full(count * size, 0, np.uint8).tobytes()
        if values != 0.0:
            body = np.full(count * size // 4, values, "<f4").tobytes() + b"\0" * (count * size % 4)
    p.write_bytes(_ply(count, fmt, props, body))
    with contextlib.suppress(WorldgenError):
        read_ply(p)


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    n=st.integers(0, 2**32 - 1),
    version=st.integers(0, 5),
    deg=st.integers(0, 255),
    bits=st.integers(0, 255),
    extra=st.integers(-64, 64),
)
def test_spz_header_structure(n, version, deg, bits, extra):
    from exporters.spz import read_spz

    k = (min(deg, 3) + 1) ** 2
    per = 9 + 1 + 3 + 3 + (3 if version == 2 else 4) + 3 * (k - 1)
    size = max(0, min(n, 5000) * per + extra)
    raw = struct.pack("<IIIBBBB", 0x5053474E, version, n, deg, bits, 0, 0) + b"\x01" * size
    with contextlib.suppress(WorldgenError):
        read_spz(gzip.compress(raw, 1))
