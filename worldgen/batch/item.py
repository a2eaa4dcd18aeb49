"""One batch item: decide whether its world is already built, build it, report it.

Plain functions with no Ray in them: the driver runs :func:`run_item` in a Ray task (or in a
:class:`ItemBuilder` actor), and tests can call it directly.

A world is **complete** when ``load_world`` accepts it (manifest valid, every file present), its
``source.sha256`` is the photo's and its settings (``config`` in world.json and worldgen's
version) are the ones asked for; **stale** when it is a valid world built from another photo
or with other settings; **foreign** when the folder exists but is not a world bundle (never
replaced). ``pipeline.build`` writes a world into a fresh temporary folder per call and renames
it into place after ``world.json`` is written, so the rename is the completion marker: an
attempt that dies leaves only a hidden ``.NAME.world.tmp-*`` folder, and when a task runs twice
(Ray re-runs a task whose worker died) either rename leaves a complete, identical world.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
import traceback
from pathlib import Path

from .. import __version__

#: item statuses in batch.json
BUILT, SKIPPED, STALE, FAILED, INTERRUPTED, PENDING = (
    "built", "skipped", "stale", "failed", "interrupted", "pending",
)  # fmt: skip


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def settings_of(config: dict) -> str:
    """The canonical text of a build's settings (what a complete world must match)."""
    return json.dumps({"config": config, "worldgen": __version__}, sort_keys=True)


def world_state(out: Path, sha256: str, config: dict) -> tuple[str, str]:
    """(state, why) of the world folder ``out`` for a photo with ``sha256`` built with the
    plain ``config`` (``BuildConfig.to_dict()``): ``missing``, ``complete``, ``stale`` or
    ``foreign``."""
    from ..errors import WorldgenError
    from ..world import load_world

    out = Path(out)
    if not out.exists() and not out.is_symlink():
        return "missing", "not built yet"
    if not (out / "world.json").is_file():
        return "foreign", f"{out} exists and is not a world bundle (never replaced)"
    try:
        m = load_world(out).manifest
    except WorldgenError as e:
        return "stale", f"invalid world ({e})"
    if m["source"]["sha256"] != sha256:
        return "stale", "built from another photo (sha256 differs)"
    got = settings_of(json.loads(json.dumps(m.get("config", {}))))
    want = settings_of(json.loads(json.dumps(config)))
    if m.get("generator", {}).get("version") != __version__:
        return "stale", f"built by worldgen {m.get('generator', {}).get('version')}"
    if got != want:
        return "stale", "built with other settings"
    return "complete", "up to date"


def node_id() -> str:
    """The Ray node id running this code (the host name outside Ray)."""
    try:
        import ray

        if ray.is_initialized():
            return ray.get_runtime_context().get_node_id()
    except Exception:  # not in Ray, or no runtime context: the host is the best we know
        pass
    return socket.gethostname()


def run_item(spec: dict) -> dict:
    """Build one item; never raises. ``spec``: ``input``, ``output`` (paths as text),
    ``config`` (plain config dict), ``sha256`` (of the photo, when the driver read it),
    ``force`` (rebuild a stale world), ``use_cache``, ``error`` (a list row's error).

    Returns the item's record: ``status`` (built, skipped, stale or failed), ``seconds``,
    ``error`` (one line, prefixed with the error's type) or None, ``node``, ``pid``,
    ``splats``."""
    t0 = time.perf_counter()
    rec = {"status": FAILED, "error": None, "node": node_id(), "pid": os.getpid()}
    try:
        rec.update(_run(spec))
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # one line, typed; the batch goes on
        rec["error"] = one_line(e)
        if os.environ.get("WORLDGEN_DEBUG"):
            rec["traceback"] = traceback.format_exc()
    rec["seconds"] = round(time.perf_counter() - t0, 3)
    return rec


def one_line(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg}" if msg else type(e).__name__


def _run(spec: dict) -> dict:
    from ..config import from_dict
    from ..errors import InputError, OutputError
    from ..pipeline import build
    from ..progress import Reporter

    if spec.get("error"):
        raise InputError(spec["error"])
    photo, out = Path(spec["input"]), Path(spec["output"])
    if not photo.is_file():
        what = "is not a file" if photo.exists() else "no such file"
        raise InputError(f"{photo}: {what}")
    sha = spec.get("sha256") or file_sha256(photo)
    state, why = world_state(out, sha, spec["config"])
    if state == "complete":  # a retried or duplicate attempt after another one finished
        return {"status": SKIPPED, "why": why}
    if state == "foreign":
        raise OutputError(why)
    if state == "stale" and not spec.get("force"):
        return {"status": STALE, "why": why}
    out.parent.mkdir(parents=True, exist_ok=True)
    cfg = from_dict(spec["config"])
    try:
        res = build(
            photo,
            out,
            cfg,
            force=state == "stale",
            use_cache=spec.get("use_cache", True),
            reporter=Reporter(),
        )
    except (OutputError, OSError):
        # another attempt of this item may have won the rename: accept its world
        if world_state(out, sha, spec["config"])[0] == "complete":
            return {"status": BUILT, "why": "another attempt finished first"}
        raise
    return {"status": BUILT, "splats": res.splat_count}


class ItemBuilder:
    """An actor body for the learned (GPU) path: one process builds item after item, so a
    learned model loaded for the first item stays loaded for the next ones.

    The depth and fill registries build a new backend object per build; in this process they
    are wrapped to hand back one backend object per (name, options), whose loaded model
    (``_loaded``) then lives as long as the actor."""

    def __init__(self) -> None:
        from .. import depth, fill

        self.items = 0
        for name, factory in list(depth._REGISTRY.items()):
            depth._REGISTRY[name] = _memo(factory)
        for name, factory in list(fill._REGISTRY.items()):
            fill._REGISTRY[name] = _memo(factory)

    def run(self, spec: dict) -> dict:
        self.items += 1
        rec = run_item(spec)
        rec["actor_items"] = self.items
        return rec


def _memo(factory):
    made: dict[str, object] = {}

    def get(**options):
        key = json.dumps(options, sort_keys=True, default=str)
        if key not in made:
            made[key] = factory(**options)
        return made[key]

    return get
