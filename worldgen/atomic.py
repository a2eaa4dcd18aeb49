"""Outputs that survive any interruption: a lock per output, atomic replacement, recovery.

Every command that writes an output ``OUT`` (a world folder, an export file or folder):

1. takes ``output_lock(OUT)``: an exclusive ``flock`` on ``.OUT.lock`` beside it. The kernel
   releases it when the process ends in any way (SIGKILL included), so a retry never finds a
   stale lock; a second writer of the same output is refused with a one-line OutputError
   (or waits up to ``$WORLDGEN_LOCK_WAIT`` seconds). The holder removes the lock file while
   it still holds the lock, and a process that locked a file no longer at that path tries
   again, so the file goes away with a normal exit (a killed process leaves an empty, unlocked
   one, which the next writer reuses and removes).
2. calls ``recover(OUT)``: the previous command's leftovers are resolved: an aside copy
   ``.OUT.old-PID`` is renamed back when ``OUT`` is missing (a kill between the two renames
   of ``swap_in``), otherwise removed; temporary ``.OUT.tmp-*`` folders and files are removed.
3. writes everything into ``tmp_beside(OUT)`` and ``swap_in(tmp, OUT)``: rename the old
   ``OUT`` aside, rename the new one in, remove the aside. At every instant ``OUT`` is the old
   complete output or the new complete one, or (between the renames) absent with the old one
   aside, which the next command restores.

Leftovers are hidden names (a leading dot) that never end in ``.world`` or any export
extension, so they never look like an output.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from .errors import OutputError


def lock_path(out: Path) -> Path:
    out = Path(out)
    return out.parent / f".{out.name}.lock"


@contextlib.contextmanager
def output_lock(out: str | Path, wait_s: float | None = None) -> Iterator[None]:
    """Hold an exclusive lock on writing ``out`` for the block.

    ``wait_s``: seconds to wait for another writer (default ``$WORLDGEN_LOCK_WAIT`` or 0:
    refuse at once). Where no lock file can be made (a missing or read-only folder) the block
    runs unlocked: the output checks that follow report the folder's problem.
    """
    out = Path(out)
    if wait_s is None:
        try:
            wait_s = float(os.environ.get("WORLDGEN_LOCK_WAIT", "0"))
        except ValueError:
            wait_s = 0.0
    path = lock_path(out)
    deadline = time.monotonic() + max(0.0, wait_s)
    while True:
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        except OSError:
            yield
            return
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _holder(fd)
            os.close(fd)
            if time.monotonic() >= deadline:
                raise OutputError(
                    f"{out}: another worldgen process{holder} is writing it; wait for it to "
                    "finish or choose another output"
                ) from None
            time.sleep(0.1)
            continue
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder before us removed the file: lock the new one
    try:
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
        except OSError:
            pass
        yield
    finally:
        try:
            os.unlink(path)  # while holding the lock; a waiter then sees another file
        except OSError:
            pass
        os.close(fd)  # releases the flock


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _holder(fd: int) -> str:
    try:
        pid = os.pread(fd, 32, 0).decode().strip()
    except (OSError, UnicodeDecodeError):
        return ""
    return f" (pid {pid})" if pid.isdigit() else ""


def _leftovers(out: Path, kind: str) -> list[Path]:
    pattern = f".{glob.escape(out.name)}.{kind}-*"
    try:
        return sorted(out.parent.glob(pattern))
    except OSError:
        return []


def tmp_beside(out: Path, folder: bool) -> Path:
    """A new temporary folder (or empty file) beside ``out``, named ``.OUT.tmp-XXXX``."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    try:
        if folder:
            return Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=parent))
        fd, name = tempfile.mkstemp(prefix=f".{out.name}.tmp-", dir=parent)
        os.close(fd)
        return Path(name)
    except OSError as e:
        raise OutputError(f"{parent}: cannot write there ({e.strerror})") from None


def write_bytes(
    path: Path, data: bytes, *, prefix: str | None = None, suffix: str = "", mode: int | None = None
) -> None:
    """Write ``data`` to ``path`` atomically: a temporary file beside it (``prefix``, default
    ``.NAME.``; ``suffix``; permissions ``mode`` when given), then one rename. A reader sees the
    old file or the new one, never a part; on any error the temporary file is removed."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=prefix or f".{path.name}.", suffix=suffix, dir=path.parent)
    try:
        if mode is not None:
            os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove(p: Path) -> None:
    """Remove a file, link or folder; errors ignored (what is left, the next run removes)."""
    try:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    except OSError:
        pass


def recover(out: str | Path) -> str | None:
    """Resolve an interrupted replacement of ``out`` (call under ``output_lock``): restore the
    aside copy if ``out`` is missing, else remove it; remove temporary leftovers. Returns a
    one-line notice when something was restored."""
    out = Path(out)
    note = None
    asides = _leftovers(out, "old")
    if asides and not (out.exists() or out.is_symlink()):
        newest = max(asides, key=lambda p: p.lstat().st_mtime)
        try:
            os.rename(newest, out)
            asides.remove(newest)
            note = f"restored {out} from an interrupted replacement"
        except OSError:
            pass
    for p in asides + _leftovers(out, "tmp"):
        remove(p)
    return note


def recover_if_missing(out: str | Path) -> str | None:
    """For readers: if ``out`` is missing but an aside copy exists (a writer was killed
    between its two renames), restore it under the lock (waiting up to 10 s for a writer)."""
    out = Path(out)
    if out.exists() or out.is_symlink() or not _leftovers(out, "old"):
        return None
    try:
        with output_lock(out, wait_s=10.0):
            return recover(out)
    except OutputError:
        return None


def swap_in(tmp: Path, out: Path) -> None:
    """Replace ``out`` (missing, a file or a folder) by ``tmp`` (beside it): two renames, the
    old one aside in between; on an error the old one is put back."""
    tmp, out = Path(tmp), Path(out)
    if not (out.exists() or out.is_symlink()):
        os.rename(tmp, out)
        return
    if not tmp.is_dir() and not out.is_dir():  # file over file: one atomic rename
        os.replace(tmp, out)
        return
    aside = out.parent / f".{out.name}.old-{os.getpid()}"
    remove(aside)
    os.rename(out, aside)
    try:
        os.rename(tmp, out)
    except BaseException:
        os.rename(aside, out)
        raise
    remove(aside)
