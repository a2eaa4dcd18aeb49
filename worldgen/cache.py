"""Stage-output cache keyed by input hash + stage config, so re-runs resume.

Entries are ``.npz`` arrays (loaded with ``allow_pickle=False``) plus a JSON sidecar; written
atomically. Location: ``$WORLDGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/worldgen``, else
``~/.cache/worldgen``.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path

import numpy as np

from . import __version__


def cache_dir() -> Path:
    if os.environ.get("WORLDGEN_CACHE_DIR"):
        return Path(os.environ["WORLDGEN_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "worldgen"


def stage_key(stage: str, **parts) -> str:
    """A stable hash of the stage name, worldgen's version and JSON-serialisable parts."""
    blob = json.dumps({"stage": stage, "v": __version__, **parts}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:32]


class StageCache:
    """get/put of {name: ndarray} + meta dict. A disabled cache never hits and never writes."""

    def __init__(self, root: Path | None = None, enabled: bool = True):
        self.root = Path(root) if root else cache_dir()
        self.enabled = enabled

    def _paths(self, stage: str, key: str) -> tuple[Path, Path]:
        d = self.root / stage
        return d / f"{key}.npz", d / f"{key}.json"

    def get(self, stage: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        if not self.enabled:
            return None
        npz, meta = self._paths(stage, key)
        try:
            with np.load(npz, allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
            return arrays, json.loads(meta.read_text())
        except (OSError, ValueError, json.JSONDecodeError, EOFError):
            return None  # missing or corrupt entry: recompute

    def put(self, stage: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if not self.enabled:
            return
        npz, mpath = self._paths(stage, key)
        try:
            npz.parent.mkdir(parents=True, exist_ok=True)
            for target, write in (
                (npz, lambda f: np.savez(f, **arrays)),
                (mpath, lambda f: f.write(json.dumps(meta).encode())),
            ):
                fd, tmp = tempfile.mkstemp(dir=npz.parent, prefix=".tmp-")
                with os.fdopen(fd, "wb") as f:
                    write(f)
                os.replace(tmp, target)
        except OSError:
            pass  # a cache that cannot be written only costs time
