"""The batch driver: connect to Ray, run one ``run_item`` per photo, collect the records.

``run_batch`` is the only entry point. It

1. decides each item's state from what is already in OUTDIR (``item.world_state``): complete
   worlds are ``skipped``, stale ones are reported (rebuilt only with ``force``), hidden
   temporary folders of killed attempts are removed;
2. starts an embedded local Ray instance (``address="local"``: always a fresh one, never an
   instance that happens to run on this machine; a small object store, no dashboard, no usage
   stats) or connects to a cluster (``auto``, ``HOST:PORT``, ``ray://HOST:PORT``);
3. refuses a memory request larger than every node's memory (Ray would wait forever);
4. runs the items as Ray tasks (``num_cpus``/``num_gpus``/``memory`` per task, ``max_retries``
   for a worker that dies), or for the learned/GPU path in a pool of ``ItemBuilder`` actors
   (one per GPU share: a model is loaded once per actor), keeping at most ``max_in_flight``
   items submitted (``ray.wait`` loop);
5. writes ``OUTDIR/batch.json`` (atomically, every few seconds and at the end).

Ray serialises task arguments and results with its own (pickle-based) protocol between the
driver and its workers; only plain dicts of strings and numbers cross it, and nothing from
the user's files is ever unpickled.
"""

from __future__ import annotations

import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..atomic import output_lock, recover
from ..config import BuildConfig
from ..errors import BackendError, InputError, OutputError, WorldgenError
from . import item as it
from .inputs import Item
from .report import BATCH_JSON, write_batch_json

GiB = 1 << 30
#: the default memory request of a task (``--memory-per-task`` overrides it): the peak
#: resident memory of one build, measured with `/usr/bin/time -v worldgen build
#: demos/mountain_path.jpg --preset P --no-cache` (1600x1200 photo; README "Batch building"):
#: fast 0.94 GiB, default 1.53 GiB, rounded up with a margin; quality is not measured (2x
#: default). A preset from a file gets the default's.
PRESET_PEAK_MEMORY = {"fast": 1.25 * GiB, "default": 2 * GiB, "quality": 4 * GiB}
#: object store of an embedded instance: results are small dicts
OBJECT_STORE_BYTES = 100 * 1000 * 1000
INSTALL_HINT = "worldgen batch needs Ray: pip install 'worldgen[batch]' (or: pip install ray)"


@dataclass(frozen=True)
class BatchOptions:
    """How to run a batch (the CLI's options; sizes in bytes)."""

    address: str = "local"
    """``local`` (a fresh embedded instance), ``auto`` (RAY_ADDRESS or the running local
    cluster), ``HOST:PORT`` (a cluster's GCS), ``ray://HOST:PORT`` (Ray Client)."""
    cpus_per_task: float = 1.0
    gpus_per_task: float = 0.0
    memory_per_task: int | None = None
    """bytes; None: the preset's measured peak (``PRESET_PEAK_MEMORY``)."""
    max_in_flight: int | None = None
    """items submitted at once; None: twice the number that fit the cluster at once."""
    retries: int = 1
    """re-runs of an item whose worker died (crash, OOM kill, lost node)."""
    force: bool = False
    """rebuild stale worlds (built from another photo, other settings or another version)."""
    use_cache: bool = True
    actors: bool | None = None
    """True: an actor pool; False: tasks; None: actors for GPUs or a learned backend."""
    num_cpus: int | None = None
    """embedded instance only: the CPUs Ray may use (default: all)."""


@dataclass
class BatchResult:
    records: list[dict]
    counts: dict[str, int]
    seconds: float
    ray: dict = field(default_factory=dict)

    @property
    def failed(self) -> int:
        return self.counts.get(it.FAILED, 0)


def run_batch(
    items: list[Item],
    config: BuildConfig,
    outdir: Path,
    options: BatchOptions = BatchOptions(),
    *,
    on_update: Callable[[list[dict], int], None] | None = None,
) -> BatchResult:
    """Build every item (see the module docstring); returns the records. Raises BackendError
    when Ray is missing or cannot start/connect, InputError for an impossible resource
    request, KeyboardInterrupt after recording an interrupted batch. ``on_update(records,
    in_flight)`` is called as items finish (the progress bar)."""
    t_start = time.perf_counter()
    outdir = _prepare_outdir(outdir)
    records, todo = _plan(items, config, options.force, options.use_cache)
    ray_facts: dict = {}
    doc = _Doc(outdir, records, options, ray_facts, t_start)
    doc.write()
    try:
        if todo:
            ray, started = _connect(options, ray_facts)
            try:
                _check_resources(ray, options, config)
                if options.address != "local":
                    _check_shared(ray, outdir, [spec["input"] for _, spec in todo[:1]])
                _execute(ray, records, todo, options, config, doc, on_update)
            except KeyboardInterrupt:
                _interrupted(records, doc)  # recorded before Ray's shutdown (~1.5 s)
                raise
            finally:
                if started:
                    ray.shutdown()
    except KeyboardInterrupt:
        _interrupted(records, doc)
        raise
    doc.write(final=True)
    if on_update:
        on_update(records, 0)
    return BatchResult(records, _counts(records), time.perf_counter() - t_start, ray_facts)


def _interrupted(records: list[dict], doc) -> None:
    for r in records:
        if r["status"] == it.PENDING:
            r["status"] = it.INTERRUPTED
    doc.write(final=True)


# ----------------------------------------------------------------------------- planning


def _prepare_outdir(outdir: Path) -> Path:
    outdir = Path(outdir).absolute()
    if outdir.exists() and not outdir.is_dir():
        raise OutputError(f"{outdir}: exists and is not a folder")
    if not outdir.parent.is_dir():
        raise OutputError(f"{outdir.parent}: output folder does not exist")
    try:
        outdir.mkdir(exist_ok=True)
    except OSError as e:
        raise OutputError(f"{outdir}: cannot create it ({e.strerror})") from None
    if not os.access(outdir, os.W_OK | os.X_OK):
        raise OutputError(f"{outdir}: output folder is not writable")
    return outdir


def _plan(items: list[Item], base: BuildConfig, force: bool, use_cache: bool):
    """Records for every item and the (index, spec) of those to build."""
    records, todo = [], []
    for k, item in enumerate(items):
        rec = {
            "input": str(item.input),
            "output": str(item.output),
            "status": it.PENDING,
            "seconds": None,
            "error": None,
            "node": None,
        }
        records.append(rec)
        _remove_stale_temps(item.output)
        err = item.error
        config = base.to_dict()
        if err is None and item.overrides:
            try:
                config = base.replace(**item.overrides).to_dict()
            except InputError as e:
                err = str(e)
        if err is None and not item.input.is_file():
            err = f"{item.input}: " + ("is not a file" if item.input.exists() else "no such file")
        if err is not None:
            rec.update(status=it.FAILED, error=f"InputError: {err}")
            continue
        try:
            sha = it.file_sha256(item.input)
        except OSError as e:
            rec.update(status=it.FAILED, error=f"InputError: {item.input}: unreadable ({e})")
            continue
        state, why = it.world_state(item.output, sha, config)
        if state == "complete":
            rec.update(status=it.SKIPPED, why=why)
        elif state == "foreign":
            rec.update(status=it.FAILED, error=f"OutputError: {why}")
        elif state == "stale" and not force:
            rec.update(status=it.STALE, why=f"{why}; rebuild with --force")
        else:
            spec = {
                "input": str(item.input),
                "output": str(item.output),
                "config": config,
                "sha256": sha,
                "force": force,
                "use_cache": use_cache,
            }
            todo.append((k, spec))
    return records, todo


def _remove_stale_temps(out: Path) -> None:
    """Resolve what a killed attempt left beside ``out`` as every command does
    (``atomic.recover`` under the output's lock): ``pipeline.build`` writes into
    ``.NAME.tmp-*`` and swaps it in with the old world set aside as ``.NAME.old-*``, which is
    restored when the kill came between the two renames (never deleted with the temporaries).
    A lock held by a live writer leaves its files alone."""
    if not out.parent.is_dir():
        return
    try:
        with output_lock(out):
            recover(out)
    except OutputError:
        pass


def _counts(records: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for r in records:
        out[r["status"]] = out.get(r["status"], 0) + 1
    return out


class _Doc:
    """batch.json, rewritten atomically at most every ``every`` seconds and at the end."""

    def __init__(self, outdir, records, options, ray_facts, t_start, every: float = 2.0):
        self.path = outdir / BATCH_JSON
        self.records, self.options, self.ray = records, options, ray_facts
        self.t_start, self.every, self.last = t_start, every, 0.0

    def write(self, final: bool = False) -> None:
        now = time.perf_counter()
        if not final and now - self.last < self.every:
            return
        self.last = now
        write_batch_json(
            self.path,
            self.records,
            _counts(self.records),
            options=asdict(self.options),
            ray=self.ray,
            seconds=now - self.t_start,
            finished=final,
        )


# ----------------------------------------------------------------------------- Ray


def import_ray():
    """The ``ray`` module, with usage stats off; BackendError with the install hint if absent."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError:
        raise BackendError(INSTALL_HINT) from None
    return ray


def _connect(options: BatchOptions, facts: dict):
    """(ray, started_here): reuse a connection the caller made, else start or join one."""
    ray = import_ray()
    if ray.is_initialized():
        facts.update(address="(already connected)", start_seconds=0.0)
        return ray, False
    t0 = time.perf_counter()
    addr = options.address
    try:
        if addr == "local":
            ray.init(
                address="local",
                num_cpus=options.num_cpus,
                object_store_memory=OBJECT_STORE_BYTES,
                include_dashboard=False,
                log_to_driver=False,
                logging_level="ERROR",
                _system_config={"task_oom_retries": options.retries},
            )
        else:
            with _stderr_captured() as said:
                ray.init(address=addr, log_to_driver=False, logging_level="ERROR")
    except Exception as e:
        raise BackendError(_connect_error(addr, e, said.get("text", ""))) from None
    facts.update(address=addr, start_seconds=round(time.perf_counter() - t0, 3))
    return ray, True


@contextmanager
def _stderr_captured():
    """Collect what is written to file descriptor 2 (Ray's C++ core logs every refused
    connection attempt there, a line a second) into ``said["text"]``; dropped on success."""
    said: dict[str, str] = {}
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real stderr (embedded interpreters): capture nothing
        yield said
        return
    with tempfile.TemporaryFile() as f:
        os.dup2(f.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            f.seek(0)
            said["text"] = f.read().decode(errors="replace")


def _connect_error(addr: str, e: Exception, stderr_text: str = "") -> str:
    text = f"{type(e).__name__} {e} {stderr_text}"
    if any(k in text for k in ("AuthenticationError", "RAY_AUTH_MODE", "InvalidAuthToken")):
        return (
            f"cannot join the Ray cluster at {addr}: it uses token authentication (Ray >= 2.59 "
            "local clusters do); set RAY_AUTH_MODE=token (the token is read from "
            "~/.ray/auth_token or RAY_AUTH_TOKEN) and run again"
        )
    if addr.startswith("ray://") and ("client" in text.lower() or "grpc" in text.lower()):
        return f"cannot use Ray Client at {addr}: pip install 'ray[client]' ({_first(e)})"
    if addr == "local":
        return f"cannot start a local Ray instance: {_first(e)}"
    hint = ""
    if os.environ.get("RAY_AUTH_MODE") != "token":
        # ray.init reports a token-auth refusal only as "Failed to connect"
        hint = (
            "; if the cluster uses token authentication (the default of `ray start` since "
            "Ray 2.59), set RAY_AUTH_MODE=token (token from ~/.ray/auth_token or RAY_AUTH_TOKEN)"
        )
    return f"cannot connect to the Ray cluster at {addr}: {_first(e)}{hint}"


def _first(e: BaseException) -> str:
    lines = [x for x in str(e).strip().splitlines() if x.strip()]
    return f"{type(e).__name__}: {lines[0].strip()}" if lines else type(e).__name__


def memory_request(options: BatchOptions, config: BuildConfig) -> int:
    if options.memory_per_task is not None:
        return int(options.memory_per_task)
    preset = config.to_dict().get("preset") or "default"
    return int(PRESET_PEAK_MEMORY.get(preset, PRESET_PEAK_MEMORY["default"]))


def _alive_nodes(ray) -> list[dict]:
    return [n for n in ray.nodes() if n.get("Alive")]


def _check_resources(ray, options: BatchOptions, config: BuildConfig) -> None:
    """InputError now for a request no node can meet (Ray would wait for it forever)."""
    nodes = _alive_nodes(ray)
    want = {
        "CPU": options.cpus_per_task,
        "GPU": options.gpus_per_task,
        "memory": memory_request(options, config),
    }
    for res, amount in want.items():
        if amount <= 0:
            continue
        best = max((n.get("Resources", {}).get(res, 0.0) for n in nodes), default=0.0)
        if amount > best:
            unit = (lambda v: f"{v / GiB:.1f} GiB") if res == "memory" else (lambda v: f"{v:g}")
            flag = {"CPU": "--cpus-per-task", "GPU": "--gpus-per-task"}.get(
                res, "--memory-per-task"
            )
            raise InputError(
                f"{flag} {unit(amount)} exceeds every node's {res} (largest: {unit(best)} on "
                f"{len(nodes)} node(s)); lower it or add a larger node"
            )


def _probe(path: str, photo: str | None) -> str | None:
    """On a node: None if the driver's probe file and the first photo are visible here."""
    if not os.path.exists(path):
        return f"{os.path.dirname(path)} is not visible"
    if photo and not os.path.exists(photo):
        return f"{photo} is not visible"
    return None


def _check_shared(ray, outdir: Path, photos: list[str]) -> None:
    """OutputError unless every node sees OUTDIR and the inputs (a shared file system): one
    small task per node reads a file the driver wrote. Ray does not move our files."""
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    probe = outdir / f".batch-probe-{uuid.uuid4().hex}"
    probe.write_text("worldgen batch: is OUTDIR shared?\n")
    try:
        task = ray.remote(num_cpus=0, max_retries=0)(_probe)
        refs = {
            n["NodeID"]: task.options(
                scheduling_strategy=NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            ).remote(str(probe), photos[0] if photos else None)
            for n in _alive_nodes(ray)
        }
        for node, ref in refs.items():
            why = ray.get(ref, timeout=120)
            if why:
                raise OutputError(
                    f"node {node[:12]} ({why}): inputs and OUTDIR must be on storage every node "
                    "sees (a shared mount)"
                )
    finally:
        probe.unlink(missing_ok=True)


def _use_actors(options: BatchOptions, config: BuildConfig) -> bool:
    if options.actors is not None:
        return options.actors
    if options.gpus_per_task > 0:
        return True
    c = config
    learned = ("depth-anything-v2", "depth-pro")
    learned_depth = c.depth.model is not None or c.depth.backend in learned
    learned_fill = c.fill.model is not None or c.fill.backend == "diffusion"
    return learned_depth or learned_fill


def _execute(ray, records, todo, options, config, doc, on_update) -> None:
    mem = memory_request(options, config)
    nodes = _alive_nodes(ray)
    total = ray.cluster_resources()
    per_task = max(options.cpus_per_task, 1e-3)
    slots = max(1, math.floor(total.get("CPU", 1) / per_task))
    if options.gpus_per_task > 0:
        slots = min(slots, max(1, math.floor(total.get("GPU", 0) / options.gpus_per_task)))
    slots = min(slots, max(1, math.floor(total.get("memory", mem) / max(mem, 1))))
    doc.ray.update(
        nodes=len(nodes),
        cpus=total.get("CPU", 0),
        gpus=total.get("GPU", 0),
        slots=slots,
        memory_per_task=mem,
        actors=_use_actors(options, config),
    )
    resources = dict(num_cpus=options.cpus_per_task, num_gpus=options.gpus_per_task, memory=mem)
    if _use_actors(options, config):
        n = min(slots, len(todo))
        actor_cls = ray.remote(it.ItemBuilder).options(
            **resources, max_restarts=options.retries, max_task_retries=options.retries
        )
        idle = [actor_cls.remote() for _ in range(n)]

        def submit(spec):
            a = idle.pop() if idle else actor_cls.remote()
            return a.run.remote(spec), a

        def release(handle, ok: bool):
            if ok:
                idle.append(handle)

        limit = n
    else:
        task = ray.remote(it.run_item).options(
            **resources, max_retries=options.retries, retry_exceptions=False
        )

        def submit(spec):
            return task.remote(spec), None

        def release(handle, ok: bool):
            pass

        limit = options.max_in_flight or 2 * slots
    _loop(ray, records, todo, submit, release, limit, doc, on_update)


def _loop(ray, records, todo, submit, release, limit, doc, on_update) -> None:
    queue = list(todo)
    running: dict = {}  # ObjectRef -> (index, handle, t0)
    try:
        while queue or running:
            while queue and len(running) < limit:
                k, spec = queue.pop(0)
                ref, handle = submit(spec)
                running[ref] = (k, handle, time.perf_counter())
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                k, handle, t0 = running.pop(ref)
                try:
                    rec = ray.get(ref)
                    ok = True
                except Exception as e:  # the worker died (crash, OOM kill, lost node)
                    rec = {
                        "status": it.FAILED,
                        "error": _ray_error(e, limit),
                        "seconds": round(time.perf_counter() - t0, 3),
                    }
                    ok = False
                release(handle, ok)
                records[k].update(rec)
            if done:
                doc.write()
                if on_update:
                    on_update(records, len(running))
    except KeyboardInterrupt:
        # no ray.cancel: with tasks in flight it can abort the driver inside Ray 2.60
        # ("Tried to complete task that was not pending"); ray.shutdown() or the driver's exit
        # ends this job's workers, and their attempts leave only hidden temporary folders
        raise


def _ray_error(e: BaseException, _limit) -> str:
    """One typed line for an item whose task raised instead of returning its record."""
    name = type(e).__name__
    cause = getattr(e, "cause", None)
    if name.startswith("RayTaskError") and cause is not None:
        return it.one_line(cause)
    text = _first(e)
    if name == "OutOfMemoryError":
        return "OutOfMemoryError: the worker was killed for memory (raise --memory-per-task)"
    if name in ("WorkerCrashedError", "NodeDiedError", "ActorDiedError"):
        return f"{name}: the worker running this item died (after the allowed --retries)"
    return text


__all__ = ["BatchOptions", "BatchResult", "run_batch", "WorldgenError"]
