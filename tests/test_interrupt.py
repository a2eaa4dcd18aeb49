"""Interruption: locks the kernel releases, atomic replacement, recovery, signals, kill tests.

The kill tests run real builds and exports (``worldgen.cli.main``) in processes forked from a
fork server that has imported worldgen once (``multiprocessing`` ``forkserver``), and SIGKILL
them at random instants; after every kill the target must be the old complete world or the
new complete one (``worldgen.sameworld.same_world``), and a re-run resumes from the stage
cache and gives the same world as an uninterrupted build.
"""

from __future__ import annotations

import multiprocessing
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, default_sigint, save_rgb, textured
from worldgen.atomic import lock_path, output_lock, recover, swap_in
from worldgen.cli import main
from worldgen.errors import OutputError
from worldgen.pipeline import STAGES
from worldgen.sameworld import same_world

#: a small build that still passes through every stage (the surround and refine included)
KILL_PRESET = """\
image: {max_side: 512}
lift: {stride: 2, colour_solve_iters: 2}
collision: {grid: 24}
surround: {width: 256, sky_width: 128, ground_size: 64}
refine: {iters: 1}
"""


def _child(argv: list[str], cache: str, log: str) -> None:
    """A forked worldgen command: its own cache, stdout and stderr to ``log``."""
    os.environ["WORLDGEN_CACHE_DIR"] = cache
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    code = main(argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@pytest.fixture(scope="module")
def forks():
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["worldgen.cli", "worldgen.pipeline", "exporters.registry"])
    return ctx


def _start(forks, argv, cache, log):
    p = forks.Process(target=_child, args=(argv, str(cache), str(log)))
    p.start()
    return p


def _run(forks, argv, cache, log, timeout=300) -> tuple[int, float]:
    t0 = time.perf_counter()
    p = _start(forks, argv, cache, log)
    p.join(timeout)
    assert p.exitcode is not None, f"{argv} hung"
    return p.exitcode, time.perf_counter() - t0


@pytest.fixture(scope="module")
def kill_setup(tmp_path_factory, forks):
    """The photo, the preset, an old world (seed 1), the reference world (seed 0, built
    uninterrupted on a cold cache) and that build's duration in a forked process."""
    d = tmp_path_factory.mktemp("kill")
    photo = save_rgb(textured(48, 64, seed=1), d / "photo.png")
    preset = d / "kill.yaml"
    preset.write_text(KILL_PRESET)
    base = ["build", str(photo), "--preset", str(preset)]
    rc, _ = _run(forks, base + ["-o", str(d / "old.world"), "--seed", "1"], d / "c1", d / "l1")
    assert rc == 0, (d / "l1").read_text()
    rc, dt = _run(forks, base + ["-o", str(d / "ref.world")], d / "c0", d / "l0")
    assert rc == 0, (d / "l0").read_text()
    return {"dir": d, "base": base, "old": d / "old.world", "ref": d / "ref.world", "T": dt}


def _killed_in(log: Path, stages: list[str]) -> str:
    """The stage a killed build was in: the one after the last it reported done."""
    text = log.read_text(errors="replace") if log.exists() else ""
    done = [s for s in stages if f"✓ {s} " in text]
    return stages[len(done)] if len(done) < len(stages) else "exit"


def _state(target: Path, old: Path, ref: Path) -> str:
    parent = target.parent
    visible = sorted(p.name for p in parent.iterdir() if p.name.endswith(".world"))
    assert visible in ([target.name], []), f"something else looks like a world: {visible}"
    if not target.exists():  # killed between the two renames: the old one is aside
        assert list(parent.glob(f".{target.name}.old-*")), "target gone, nothing aside"
        return "aside"
    if not same_world(target, old):
        return "old"
    diff = same_world(target, ref)
    assert not diff, f"target is neither the old nor the new world: {diff[:3]}"
    return "new"


def _copy_cache_before(src: Path, dst: Path, stage: str) -> None:
    """The stage cache as a build killed in ``stage`` left it: the entries of every stage
    before it (copied from the uninterrupted build's cache)."""
    before = set(STAGES[: STAGES.index(stage)])
    dst.mkdir()
    for d in src.iterdir():
        if d.name in before:
            shutil.copytree(d, dst / d.name)


def _wait_for_line(log: Path, text: str, p, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while p.exitcode is None and time.monotonic() < deadline:
        if log.exists() and text in log.read_text(errors="replace"):
            return
        time.sleep(0.01)


def test_sigkill_during_build_leaves_old_or_new_and_resumes(kill_setup, forks, tmp_path):
    """SIGKILL at 26 random instants of `build --force` over an old world, two in each stage
    and four more in the write (the cache holding what a build killed in that stage would
    have left, the instant random within the stage's duration): the target is
    always the old or the new complete world; re-runs after a kill resume from the stage cache
    and give the uninterrupted build's world."""
    import json

    rng = random.Random(1515)
    ks = kill_setup
    timings = json.loads((ks["ref"] / "world.json").read_text())["timings"]
    # the stages this build runs (not "budget"), and the write (not in world.json's timings)
    stages = [s for s in STAGES if s in timings] + ["write"]
    done = re.search(r"✓ write +([\d.]+) s", (ks["dir"] / "l0").read_text())
    timings = timings | {"write": float(done.group(1)) if done else 0.2}
    target = tmp_path / "w.world"
    argv = ks["base"] + ["-o", str(target), "--force"]
    kills: list[tuple[str, str, str]] = []
    resumed = []
    targets = stages * 2 + ["write"] * 4  # the write's two renames: the critical instants
    for k, stage in enumerate(targets):
        cache = tmp_path / f"cache{k}"
        _copy_cache_before(ks["dir"] / "c0", cache, stage)
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(ks["old"], target)
        log = tmp_path / f"log{k}"
        p = _start(forks, argv, cache, log)
        k0 = stages.index(stage)
        # the stage before it reported done (a cache hit or a run), or the command started
        _wait_for_line(log, f"✓ {stages[k0 - 1]} " if k0 else "", p)
        p.join(rng.uniform(0.0, 1.0) * max(timings.get(stage, 0.05), 0.05))
        if p.exitcode is not None:  # finished before the kill: that is the new world
            assert p.exitcode == 0, log.read_text()[-2000:]
            kills.append((stage, "exit", _state(target, ks["old"], ks["ref"])))
            continue
        os.kill(p.pid, signal.SIGKILL)
        p.join(30)
        kills.append((stage, _killed_in(log, stages), _state(target, ks["old"], ks["ref"])))
        if k % 4 == 3:  # re-run: it resumes and gives the same world
            had = [s for s in STAGES if (cache / s).is_dir() and any((cache / s).glob("*.json"))]
            rc, _ = _run(forks, argv, cache, tmp_path / f"rerun{k}")
            text = (tmp_path / f"rerun{k}").read_text()
            assert rc == 0, text[-2000:]
            assert not same_world(target, ks["ref"]), "the resumed world differs"
            if had:
                assert "resumed from" in text, text[-2000:]
                resumed.append(text.split("resumed from ")[1].split(" ")[0])
            assert not [q for q in tmp_path.iterdir() if q.name.startswith(".w.world.")]
    killed = [k for k in kills if k[1] != "exit"]
    print(f"{len(killed)} kills; in stages {sorted({k[1] for k in killed})}; resumed {resumed}")
    print(kills)
    assert len(killed) >= 20, kills
    assert len({k[1] for k in killed}) >= 6, kills
    assert len(resumed) >= 3, resumed


def test_sigkill_during_export_leaves_old_or_new(kill_setup, forks, tmp_path):
    ks = kill_setup
    out = tmp_path / "w.spz"
    argv = ["export", str(ks["ref"]), "-o", str(out), "--force"]
    rc, T = _run(forks, argv, tmp_path / "c", tmp_path / "l0")
    assert rc == 0, (tmp_path / "l0").read_text()
    new = out.read_bytes()
    rc, _ = _run(forks, ["export", str(ks["old"]), "-o", str(out), "--force"], tmp_path / "c",
                 tmp_path / "l1")  # fmt: skip
    old = out.read_bytes()
    assert rc == 0 and old != new
    rng = random.Random(16)
    states = []
    for k in range(6):
        p = _start(forks, argv, tmp_path / "c", tmp_path / f"k{k}")
        p.join(rng.uniform(0.1, 1.0) * T)
        if p.exitcode is None:
            os.kill(p.pid, signal.SIGKILL)
            p.join(30)
        recover(out)
        data = out.read_bytes()
        assert data in (old, new)
        states.append("new" if data == new else "old")
        out.write_bytes(old)
    assert "old" in states, states  # some kills landed before the rename
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_sigint_sigterm_exit_130_one_line_old_world_kept(kill_setup, tmp_path, sig):
    """The real entry point: a signal mid-build gives exit 130, one line, no traceback, the
    previous world untouched and no temporary folder left."""
    ks = kill_setup
    target = tmp_path / "w.world"
    shutil.copytree(ks["old"], target)
    env = dict(os.environ, WORLDGEN_CACHE_DIR=str(tmp_path / "cache"))
    exe = [sys.executable, "-m", "worldgen"]
    p = subprocess.Popen(exe + ks["base"] + ["-o", str(target), "--force", "--quiet"],
                         stderr=subprocess.PIPE, text=True, env=env, cwd=REPO,
                         preexec_fn=default_sigint)  # fmt: skip
    deadline = time.monotonic() + 60
    while not (tmp_path / "cache" / "depth").exists() and time.monotonic() < deadline:
        time.sleep(0.05)  # imports, then into the stages: the depth stage's entry is written
    time.sleep(random.Random(sig).uniform(0.0, 1.0))
    assert p.poll() is None, p.stderr.read()
    p.send_signal(sig)
    err = p.communicate(timeout=60)[1]
    assert p.returncode == 130, err
    assert err.strip().splitlines() == ["worldgen build: interrupted; outputs left as they were"]
    assert not same_world(target, ks["old"])
    assert sorted(x.name for x in tmp_path.iterdir() if not x.name.endswith(".lock")) == [
        "cache",
        "w.world",
    ]


def _hold_lock(path: str, ready) -> None:
    with output_lock(Path(path)):
        ready.set()
        time.sleep(600)


def test_lock_refuses_a_second_writer_and_dies_with_its_process(forks, tmp_path, kill_setup):
    out = tmp_path / "w.world"
    ready = forks.Event()
    p = forks.Process(target=_hold_lock, args=(str(out), ready))
    p.start()
    assert ready.wait(60)
    with pytest.raises(OutputError, match="another worldgen process .pid"):
        with output_lock(out):
            pass
    # the CLI refuses at once (exit 3, before any work)
    argv = kill_setup["base"] + ["-o", str(out)]
    t0 = time.perf_counter()
    assert main(argv + ["--quiet"]) == 3
    assert time.perf_counter() - t0 < 5
    os.kill(p.pid, signal.SIGKILL)  # the kernel releases the lock: no stale lock for a retry
    p.join(30)
    assert lock_path(out).exists()  # the killed holder's file stays, unlocked
    with output_lock(out):
        pass
    assert not lock_path(out).exists() and not out.exists()  # a normal release removes it


def test_aside_copy_is_restored_by_the_next_command(kill_setup, tmp_path, capsys):
    """The state a kill between swap_in's two renames leaves (target absent, the old world
    aside under a hidden name): any next command restores it; stale leftovers are removed."""
    target = tmp_path / "w.world"
    shutil.copytree(kill_setup["old"], target)
    os.rename(target, tmp_path / ".w.world.old-12345")
    (tmp_path / ".w.world.tmp-abcd").mkdir()  # a half-written new world
    assert main(["info", str(target)]) == 0  # a reader restores it
    assert target.is_dir() and not same_world(target, kill_setup["old"])
    # the aside of a finished swap (its removal interrupted) and temp files: removed
    (tmp_path / ".w.world.old-999").mkdir()
    (tmp_path / ".w.world.old-999" / "world.json").write_text("{}")
    assert recover(target) is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.world"]


def test_swap_in_puts_the_old_one_back_on_failure(tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "f").write_text("old")
    with pytest.raises(OSError):
        swap_in(tmp_path / "missing-tmp", out)
    assert (out / "f").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o"]
