"""The stage runner and its verified cache: key chains, resume, corrupt entries rebuilt."""

from __future__ import annotations

import json

import numpy as np
import pytest

from worldgen.cache import StageCache
from worldgen.pipeline import STAGE_LIST, STAGES
from worldgen.progress import Reporter
from worldgen.runner import Stage, check_stages, run_stages


def _stages(calls: list[str]) -> list[Stage]:
    """a -> b -> c: a cached stage doubling, an uncached one adding, a cached one summing."""

    def a(v):
        calls.append("a")
        return {"x": np.arange(4, dtype=np.float32) * v["scale"]}

    def b(v):
        calls.append("b")
        return {"y": v["x"] + 1}

    def c(v):
        calls.append("c")
        return {"z": np.array([v["y"].sum()])}

    def enc(name):
        return lambda out: ({name: out[name]}, {"n": 1})

    def dec(name):
        return lambda arrays, meta, v: {name: arrays[name]}

    return [
        Stage("a", ("scale",), ("x",), a, lambda v: {"scale": v["scale"]}, enc("x"), dec("x")),
        Stage("b", ("x",), ("y",), b),
        Stage("c", ("y", "offset"), ("z",), c, lambda v: {"o": v["offset"]}, enc("z"), dec("z")),
    ]


def _run(tmp_path, calls, scale=2.0, offset=0):
    rep = Reporter()
    v = {"scale": scale, "offset": offset}
    log = run_stages(_stages(calls), v, {"scale": "", "offset": ""}, StageCache(tmp_path), rep)
    return v, log, rep


def test_runner_times_caches_and_resumes(tmp_path):
    calls: list[str] = []
    v, log, rep = _run(tmp_path, calls)
    assert calls == ["a", "b", "c"] and log.hits == [] and log.resumed_from is None
    assert set(rep.timings) == {"a", "b", "c"} and float(v["z"][0]) == 16.0
    calls.clear()
    v2, log2, rep2 = _run(tmp_path, calls)  # everything cached: only the uncached stage runs
    assert calls == ["b"] and log2.hits == ["a", "c"] and float(v2["z"][0]) == 16.0
    calls.clear()
    _, log3, rep3 = _run(tmp_path, calls, offset=1)  # c's own params changed: a hit, c reruns
    assert calls == ["b", "c"] and log3.hits == ["a"] and log3.resumed_from == "c"
    assert any(n.startswith("resumed from c") for n in rep3.notes)
    calls.clear()
    _, log4, _ = _run(tmp_path, calls, scale=3.0)  # a's params changed: the whole chain reruns
    assert calls == ["a", "b", "c"] and log4.hits == []
    assert log4.keys["c"] != log.keys["c"]  # c's key chains a's


@pytest.mark.parametrize("damage", ["truncate", "flip", "sidecar", "no-checksum", "no-arrays"])
def test_corrupt_cache_entry_is_rebuilt_never_trusted(tmp_path, damage):
    calls: list[str] = []
    v, log, _ = _run(tmp_path, calls)
    npz = next((tmp_path / "a").glob("*.npz"))
    side = npz.with_suffix(".json")
    data = npz.read_bytes()
    if damage == "truncate":
        npz.write_bytes(data[: len(data) // 2])
    elif damage == "flip":  # same size, one bit of an array value changed
        b = bytearray(data)
        b[len(b) // 2] ^= 0x04
        npz.write_bytes(bytes(b))
    elif damage == "sidecar":
        side.write_text("{not json")
    elif damage == "no-checksum":  # an entry of an older worldgen (meta only)
        side.write_text(json.dumps({"n": 1}))
    else:
        npz.unlink()
    calls.clear()
    v2, log2, rep2 = _run(tmp_path, calls)
    assert "a" not in log2.hits and calls[0] == "a"
    if damage != "no-arrays":
        assert any("the a entry was corrupt" in n for n in rep2.notes), rep2.notes
    assert np.array_equal(v2["x"], v["x"])
    calls.clear()
    _, log3, _ = _run(tmp_path, calls)  # the rebuilt entry is good again
    assert log3.hits == ["a", "c"]


def test_dead_writers_temp_files_are_swept(tmp_path):
    d = tmp_path / "a"
    d.mkdir()
    dead = d / ".tmp-999999999-abc"  # no such pid
    dead.write_bytes(b"x" * 10)
    StageCache(tmp_path).get("a", "0" * 32)
    assert not dead.exists()


def test_declared_inputs_are_checked():
    s = Stage("x", ("nothing",), ("y",), lambda v: {"y": 1})
    with pytest.raises(AssertionError, match="reads"):
        check_stages([s], {"config"})
    # the build's own list is consistent and the write stage follows it
    check_stages(STAGE_LIST, {"image_path", "config", "reporter", "max_splats"})
    assert STAGES[-1] == "write" and "surround" in STAGES
