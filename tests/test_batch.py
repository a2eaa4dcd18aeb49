"""worldgen batch on real Ray with the real build (issue 17).

One session-wide Ray cluster of two nodes on this machine (``ray.cluster_utils.Cluster``, one
CPU each; this process is its driver); one test starts the embedded local instance the way a
user's ``worldgen batch`` does. Photos are tiny and generated; the preset is ``fast`` with a
small surround panorama (``TINY``), so a build takes a few seconds.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from worldgen.batch import BatchOptions, discover, run_batch
from worldgen.batch.item import world_state
from worldgen.cli import main
from worldgen.config import load_preset
from worldgen.errors import BatchFailed
from worldgen.pipeline import build
from worldgen.sameworld import same_world
from worldgen.world import load_world

from .conftest import DEMOS, default_sigint, save_rgb, textured

try:
    import ray
except ImportError:  # tools/setup.sh --test installs it (the [batch] extra)
    if not os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
        raise ImportError("the batch tests need Ray: run `bash tools/setup.sh --test`") from None
    pytest.skip("ray not installed (WORLDGEN_ALLOW_MISSING_TOOLS)", allow_module_level=True)

TINY = """\
# the fast preset (configs/fast.yaml) with a small surround panorama: seconds per build
image: {max_side: 512}
lift: {stride: 2, colour_solve_iters: 4}
collision: {grid: 24}
surround: {width: 256, sky_width: 128, ground_size: 64}
"""
WORLDGEN = [sys.executable, "-m", "worldgen"]


@pytest.fixture(scope="session")
def cluster(tmp_path_factory):
    """Two Ray nodes (one CPU each, 100 MB object store) and this process connected to them.

    The raylets are started with an isolated worldgen cache and an offline, empty Hugging Face
    cache (their workers inherit this environment)."""
    from ray.cluster_utils import Cluster

    env = {
        "WORLDGEN_CACHE_DIR": str(tmp_path_factory.mktemp("ray_cache")),
        "HF_HOME": str(tmp_path_factory.mktemp("ray_hf")),
        "HF_HUB_OFFLINE": "1",
        "RAY_USAGE_STATS_ENABLED": "0",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    node = {"num_cpus": 1, "object_store_memory": 100 * 1000 * 1000}
    c = Cluster(initialize_head=True, head_node_args={**node, "include_dashboard": False})
    c.add_node(**node)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False, logging_level="ERROR")
    try:
        yield c
    finally:
        ray.shutdown()
        c.shutdown()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="session")
def tiny_preset(tmp_path_factory) -> Path:
    p = tmp_path_factory.mktemp("preset") / "tiny.yaml"
    p.write_text(TINY)
    return p


def _photos(folder: Path, n: int, seed: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    return [save_rgb(textured(48, 64, seed=seed + k), folder / f"p{k}.png") for k in range(n)]


def _doc(out: Path) -> dict:
    return json.loads((out / "batch.json").read_text())


def _cli(*args, env=None, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*WORLDGEN, *map(str, args)], capture_output=True, text=True, env=env, timeout=240, **kw
    )


def _isolated_env() -> dict:
    env = dict(os.environ)
    env.pop("RAY_ADDRESS", None)
    return env


def test_batch_of_the_demos_embedded_ray_same_worlds_as_build(tmp_path, tiny_preset):
    """Acceptance 1 with the embedded local Ray (a fresh instance of its own): every demo
    photo (shrunk to 96 px wide) becomes the same world as `worldgen build` with the seed."""
    from PIL import Image

    demos = tmp_path / "demos"
    demos.mkdir()
    for p in DEMOS:
        im = Image.open(p)
        im.resize((96, round(96 * im.height / im.width))).save(demos / p.name, quality=90)
    out = tmp_path / "out"
    r = _cli("batch", demos, "-o", out, "--preset", tiny_preset, "--json", env=_isolated_env())
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout)
    assert summary["counts"] == {"built": len(DEMOS)}
    assert summary["ray"]["address"] == "local" and summary["ray"]["nodes"] == 1
    doc = _doc(out)
    assert doc["finished"] and [Path(i["input"]).name for i in doc["items"]] == [
        p.name for p in DEMOS
    ]
    # the reference: the ordinary build on one thread, like a 1-CPU Ray task: bitwise equal
    cfg = load_preset(str(tiny_preset))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for item in doc["items"]:
            assert item["status"] == "built" and item["error"] is None and item["node"]
            ref = tmp_path / Path(item["output"]).name
            build(item["input"], ref, cfg, use_cache=False)
            assert same_world(Path(item["output"]), ref) == []
    finally:
        torch.set_num_threads(threads)


def test_items_run_on_both_nodes_and_rerun_skips(cluster, tmp_path, tiny_preset):
    """Acceptance 3: two nodes, the node id of each item in batch.json; resumable."""
    _photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    cfg = load_preset(str(tiny_preset))
    items = discover([tmp_path / "in"], out)
    res = run_batch(items, cfg, out, BatchOptions(address=cluster.address))
    assert res.counts == {"built": 4}
    nodes = {n["NodeID"] for n in ray.nodes() if n["Alive"]}
    assert {r["node"] for r in res.records} == nodes and len(nodes) == 2
    assert res.ray["nodes"] == 2 and res.ray["slots"] == 2
    for r in res.records:
        load_world(r["output"])
    again = run_batch(items, cfg, out, BatchOptions(address=cluster.address))
    assert again.counts == {"skipped": 4}


def test_bad_items_fail_alone(cluster, tmp_path, tiny_preset, capsys):
    """Acceptance 4: a non-image, a missing file and a truncated JPEG in a list fail with
    one-line errors in batch.json; the good photo is built; exit code BatchFailed's."""
    good = save_rgb(textured(72, 96, seed=7), tmp_path / "good.jpg")
    (tmp_path / "notes.jpg").write_text("not an image at all\n")
    data = good.read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    rows = ["path,seed", "notes.jpg,", "missing.jpg,", "cut.jpg,", "good.jpg,5"]
    (tmp_path / "list.csv").write_text("\n".join(rows) + "\n")
    out = tmp_path / "out"
    rc = main(["batch", str(tmp_path / "list.csv"), "-o", str(out), "--preset", str(tiny_preset),
               "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == BatchFailed.exit_code == 8
    assert err.strip() == "worldgen batch: error: 3 of 4 items failed (see batch.json)"
    items = {Path(i["input"]).name: i for i in _doc(out)["items"]}
    assert items["good.jpg"]["status"] == "built"
    assert load_world(out / "good.world").manifest["seed"] == 5
    for name in ("notes.jpg", "missing.jpg", "cut.jpg"):
        rec = items[name]
        assert rec["status"] == "failed", rec
        assert rec["error"].startswith("InputError: ") and "\n" not in rec["error"]
    assert "no such file" in items["missing.jpg"]["error"]
    assert not (out / "notes.world").exists() and not (out / "cut.world").exists()


def test_stale_worlds_rebuilt_only_with_force(cluster, tmp_path, tiny_preset, capsys):
    _photos(tmp_path / "in", 1)
    out = tmp_path / "out"
    args = ["batch", str(tmp_path / "in"), "-o", str(out), "--preset", str(tiny_preset)]
    assert main([*args, "--quiet"]) == 0
    before = (out / "p0.world/splats.ply").read_bytes()
    assert main([*args, "--seed", "3", "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["counts"] == {"stale": 1}
    assert _doc(out)["items"][0]["why"] == "built with other settings; rebuild with --force"
    assert (out / "p0.world/splats.ply").read_bytes() == before
    assert main([*args, "--seed", "3", "--force", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["counts"] == {"built": 1}
    assert load_world(out / "p0.world").manifest["seed"] == 3


def test_memory_request_no_node_can_meet_fails_fast(cluster, tmp_path, tiny_preset, capsys):
    _photos(tmp_path / "in", 1)
    t0 = time.perf_counter()
    rc = main(["batch", str(tmp_path / "in"), "-o", str(tmp_path / "out"), "--preset",
               str(tiny_preset), "--memory-per-task", "64TiB", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and time.perf_counter() - t0 < 30
    assert "--memory-per-task 65536.0 GiB exceeds every node's memory (largest: " in err
    assert not (tmp_path / "out/p0.world").exists()


def _procs_titled(prefix: str) -> list[int]:
    """Pids of processes whose command line starts with ``prefix`` (Ray sets a worker's
    title to ``ray::<function>`` while it runs a task)."""
    pids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                cmd = (d / "cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(prefix):
                pids.append(int(d.name))
    return pids


def test_worker_killed_mid_item_is_retried_and_completes(cluster, tmp_path, tiny_preset):
    """Acceptance 2a: SIGKILL of the Ray worker running an item: Ray re-runs the task (a new
    process, a fresh temporary folder) and the item completes."""
    _photos(tmp_path / "in", 2)
    out = tmp_path / "out"
    items = discover([tmp_path / "in"], out)
    cfg = load_preset(str(tiny_preset))
    result = {}
    opts = BatchOptions(address=cluster.address, retries=1)
    t = threading.Thread(target=lambda: result.update(r=run_batch(items, cfg, out, opts)))
    t.start()
    killed = None
    deadline = time.time() + 120
    while killed is None and time.time() < deadline and t.is_alive():
        pids = _procs_titled("ray::run_item")
        if pids:  # the worker is inside run_item (the title goes back to ray::IDLE after)
            os.kill(pids[0], signal.SIGKILL)
            killed = pids[0]
        time.sleep(0.02)
    t.join(240)
    assert killed is not None, "never saw a worker running an item"
    res = result["r"]
    assert res.counts == {"built": 2}, res.records
    assert killed not in {r["pid"] for r in res.records}  # every record is from a live run
    for r in res.records:
        assert world_state(Path(r["output"]), _sha(r["input"]), cfg.to_dict())[0] == "complete"
    assert list(out.glob(".*.tmp-*")) == []  # the killed attempt's folder is gone


def _sha(p) -> str:
    from worldgen.batch.item import file_sha256

    return file_sha256(Path(p))


def test_driver_sigint_leaves_no_partial_world_and_rerun_finishes_the_rest(
    cluster, tmp_path, tiny_preset
):
    """Acceptance 2b: Ctrl-C of the driver mid-batch -> exit 130, only complete worlds
    visible, batch.json says what was interrupted; the re-run builds only the rest (counted
    in its summary)."""
    n = 6  # enough that the batch is still running when the signal comes
    _photos(tmp_path / "in", n)
    out = tmp_path / "out"
    args = ["batch", tmp_path / "in", "-o", out, "--preset", tiny_preset,
            "--address", cluster.address, "--max-in-flight", "1", "--quiet"]  # fmt: skip
    p = subprocess.Popen([*WORLDGEN, *map(str, args)], env=_isolated_env(),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         preexec_fn=default_sigint)  # fmt: skip
    deadline = time.time() + 180
    built = 0
    while time.time() < deadline and p.poll() is None:
        try:
            built = _doc(out)["counts"].get("built", 0)
        except (OSError, ValueError):
            built = 0
        if built >= 1:
            break
        time.sleep(0.2)
    assert p.poll() is None and built >= 1, "the batch finished or never built an item"
    p.send_signal(signal.SIGINT)  # the next item is in its build
    _, err = p.communicate(timeout=60)
    assert p.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    doc = _doc(out)
    done = doc["counts"].get("built", 0)
    assert 1 <= done < n and doc["counts"].get("interrupted", 0) >= 1
    # the cluster ends the finished driver's workers; an item already in its rename may still
    # complete: wait until no worker runs an item, then every visible world must be complete
    deadline = time.time() + 60
    while _procs_titled("ray::run_item") and time.time() < deadline:
        time.sleep(0.2)
    cfg = load_preset(str(tiny_preset)).to_dict()
    visible = sorted(out.glob("*.world"))
    assert len(visible) >= done
    for w in visible:
        assert world_state(w, _sha(tmp_path / "in" / f"{w.stem}.png"), cfg)[0] == "complete"
    r = _cli(*args[:-1], "--json", env=_isolated_env())
    assert r.returncode == 0, r.stderr
    # the re-run builds exactly the missing ones
    assert json.loads(r.stdout)["counts"] == {"built": n - len(visible), "skipped": len(visible)}
    assert list(out.glob(".*.tmp-*")) == []


def test_actor_pool_keeps_one_process_per_actor(cluster, tmp_path, tiny_preset):
    """The learned/GPU path's actor pool, on CPUs: each actor builds item after item in one
    process (a model it loads stays loaded)."""
    _photos(tmp_path / "in", 4)
    out = tmp_path / "out"
    cfg = load_preset(str(tiny_preset))
    res = run_batch(discover([tmp_path / "in"], out), cfg, out,
                    BatchOptions(address=cluster.address, actors=True))  # fmt: skip
    assert res.counts == {"built": 4} and res.ray["actors"] is True
    by_pid: dict[int, list[int]] = {}
    for r in res.records:
        by_pid.setdefault(r["pid"], []).append(r["actor_items"])
    assert len(by_pid) <= 2  # two actors (one per CPU slot)
    assert sorted(np.concatenate(list(by_pid.values())).tolist()) != [1, 1, 1, 1]
    for counts in by_pid.values():
        assert sorted(counts) == list(range(1, len(counts) + 1))
