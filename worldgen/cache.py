"""Stage-output cache keyed by input hash + stage config, so re-runs resume.

Entries are ``.npz`` arrays (loaded with ``allow_pickle=False``) plus a JSON sidecar holding
the meta and the sha256 and size of the ``.npz``. Both are written to a temporary file and
renamed, the sidecar last: an entry is complete when its sidecar exists, and ``get`` verifies
the checksum, so a truncated or corrupt entry (a kill mid-write, a bad disk, two builds racing
on one key) is removed and rebuilt, never trusted. Temporary files of dead writers are removed
by the next cache that opens the stage's folder.

Location: ``$WORLDGEN_CACHE_DIR``, else ``$XDG_CACHE_HOME/worldgen``, else ``~/.cache/worldgen``.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from . import __version__
from .atomic import write_bytes


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
        self._rejected: dict[str, str] = {}
        self._swept: set[str] = set()

    def _paths(self, stage: str, key: str) -> tuple[Path, Path]:
        d = self.root / stage
        return d / f"{key}.npz", d / f"{key}.json"

    def get(self, stage: str, key: str) -> tuple[dict[str, np.ndarray], dict] | None:
        """The entry's (arrays, meta), or None when missing; a corrupt entry is removed, None
        returned and the reason kept for ``take_rejection``."""
        if not self.enabled:
            return None
        self._sweep(stage)
        npz, mpath = self._paths(stage, key)
        try:
            side = json.loads(mpath.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, UnicodeDecodeError) as e:
            return self._reject(stage, npz, mpath, f"unreadable sidecar ({type(e).__name__})")
        if not isinstance(side, dict) or not {"sha256", "size", "meta"} <= set(side):
            return self._reject(stage, npz, mpath, "sidecar without a checksum")
        try:
            data = npz.read_bytes()
        except OSError as e:
            return self._reject(stage, npz, mpath, f"unreadable arrays ({e.strerror or e})")
        if len(data) != side["size"] or hashlib.sha256(data).hexdigest() != side["sha256"]:
            why = "truncated" if len(data) < side["size"] else "checksum mismatch"
            return self._reject(stage, npz, mpath, why)
        try:
            with np.load(io.BytesIO(data), allow_pickle=False) as z:
                arrays = {k: z[k] for k in z.files}
        except (OSError, ValueError, EOFError) as e:
            return self._reject(stage, npz, mpath, f"unreadable arrays ({type(e).__name__})")
        return arrays, side["meta"]

    def take_rejection(self, stage: str) -> str | None:
        """A one-line notice if ``get`` just rejected a corrupt entry of ``stage``."""
        return self._rejected.pop(stage, None)

    def _reject(self, stage: str, npz: Path, mpath: Path, why: str) -> None:
        self._rejected[stage] = f"cache: the {stage} entry was corrupt ({why}); rebuilt"
        for p in (mpath, npz):
            try:
                p.unlink(missing_ok=True)
            except OSError:
                pass
        return None

    def put(self, stage: str, key: str, arrays: dict[str, np.ndarray], meta: dict) -> None:
        if not self.enabled:
            return

        npz, mpath = self._paths(stage, key)
        buf = io.BytesIO()
        np.savez(buf, **arrays)
        data = buf.getvalue()
        side = {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data), "meta": meta}
        try:
            npz.parent.mkdir(parents=True, exist_ok=True)
            for target, blob in ((npz, data), (mpath, json.dumps(side).encode())):
                write_bytes(target, blob, prefix=f".tmp-{os.getpid()}-")
        except OSError:
            pass  # a cache that cannot be written (full disk, read-only) only costs time

    def _sweep(self, stage: str) -> None:
        """Remove temporary files whose writer is dead (or that are a day old)."""
        if stage in self._swept:
            return
        self._swept.add(stage)
        try:
            tmps = list((self.root / stage).glob(".tmp-*"))
        except OSError:
            return
        for p in tmps:
            try:
                pid = int(p.name.split("-")[1])
            except (IndexError, ValueError):
                pid = 0
            try:
                old = time.time() - p.stat().st_mtime > 86400
                if old or not _alive(pid):
                    p.unlink()
            except OSError:
                pass


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
