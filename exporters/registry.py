"""Exporter registry and the one writer every export goes through.

An exporter turns a loaded world (``worldgen.world.World``) into either ``bytes`` (a single
file) or a ``dict`` of relative POSIX paths to ``bytes`` (a folder). It never touches the file
system itself: ``write_export`` writes the result atomically (a temp file or folder beside
``OUT``, then a rename) and refuses any path that would land outside ``OUT`` -- so nothing in a
world file can make an exporter write elsewhere.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from worldgen.atomic import output_lock, recover, swap_in, tmp_beside
from worldgen.errors import InputError, OutputError

#: ``--target`` presets: splat budget and SH degree of every splat export
TARGETS: dict[str, dict] = {
    "desktop": {"max_splats": None, "sh_degree": 3},
    "mobile": {"max_splats": 500_000, "sh_degree": 0},
    "vr": {"max_splats": 1_000_000, "sh_degree": 1},
}

ExportResult = bytes | dict[str, bytes]


@dataclass(frozen=True)
class ExportOptions:
    """What the user asked for. ``sh_degree`` / ``max_splats`` override the target preset;
    None means "as the world has it" (SH degree capped at the world's own)."""

    sh_degree: int | None = None
    max_splats: int | None = None
    target: str | None = None
    extra: dict = field(default_factory=dict)  # format-specific (e.g. {"spz_version": 3})

    def __post_init__(self) -> None:
        if self.sh_degree is not None and not 0 <= self.sh_degree <= 3:
            raise InputError(f"--sh-degree must be 0 to 3, got {self.sh_degree}")
        if self.max_splats is not None and self.max_splats < 1:
            raise InputError(f"--max-splats must be at least 1, got {self.max_splats}")
        if self.target is not None and self.target not in TARGETS:
            raise InputError(
                f"unknown --target {self.target!r}; valid: {', '.join(sorted(TARGETS))}"
            )

    def resolved(self, world_sh_degree: int) -> tuple[int, int | None]:
        """(SH degree, splat budget) after the target preset and the world's own degree."""
        preset = TARGETS.get(self.target or "", {})
        deg = self.sh_degree if self.sh_degree is not None else preset.get("sh_degree")
        deg = world_sh_degree if deg is None else min(int(deg), world_sh_degree)
        budget = self.max_splats if self.max_splats is not None else preset.get("max_splats")
        return deg, budget


@dataclass(frozen=True)
class Exporter:
    """name: the ``--to`` value; kind "file" (``-o x.ext``) or "folder" (``-o dir/``);
    extension: the default suffix of a file export (with the dot)."""

    name: str
    kind: str
    extension: str
    description: str
    export: Callable[..., ExportResult]  # (world, options) -> bytes | {relpath: bytes}


_REGISTRY: dict[str, Exporter] = {}


def register_exporter(exporter: Exporter) -> Exporter:
    assert exporter.kind in ("file", "folder"), exporter.kind
    _REGISTRY[exporter.name] = exporter
    return exporter


def available_exporters() -> list[Exporter]:
    _load_builtins()
    return [_REGISTRY[k] for k in sorted(_REGISTRY)]


def get_exporter(name: str) -> Exporter:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        valid = ", ".join(sorted(_REGISTRY))
        raise InputError(f"unknown export format {name!r}; valid: {valid}") from None


def exporter_for_path(path: Path) -> Exporter | None:
    """The file exporter whose extension ``path`` has (None if none or ambiguous)."""
    _load_builtins()
    hits = [e for e in _REGISTRY.values() if e.kind == "file" and path.name.endswith(e.extension)]
    return hits[0] if len(hits) == 1 else None


_BUILTINS = (
    "ply",
    "splat",
    "spz",
    "gltf_splats",
    "level_glb",
    "skybox",
    "godot",
    "unity",
    "web",
)
_loaded = False


def _load_builtins() -> None:
    """Import the format modules (each registers itself); modules not written yet are skipped."""
    global _loaded
    if _loaded:
        return
    import importlib

    for mod in _BUILTINS:
        try:
            importlib.import_module(f"exporters.{mod}")
        except ModuleNotFoundError as e:
            if e.name != f"exporters.{mod}":
                raise
    _loaded = True


# ----------------------------------------------------------------------------- writing


def safe_relpath(rel: str) -> PurePosixPath:
    """A relative POSIX path with no '..', no root, no drive, no empty or odd parts."""
    p = PurePosixPath(rel)
    bad = (
        not rel
        or p.is_absolute()
        or "\\" in rel
        or ":" in rel
        or any(part in ("", ".", "..") for part in rel.split("/"))
    )
    if bad:
        raise OutputError(f"exporter produced an unsafe path {rel!r}; nothing written")
    return p


def write_export(result: ExportResult, out: Path, *, force: bool = False) -> list[Path]:
    """Write an exporter's result to ``out`` atomically; returns the files written.

    bytes -> the file ``out``; dict -> the folder ``out`` holding exactly those files. An
    existing ``out`` is replaced only with ``force``; a failure or a kill at any instant leaves
    it old-complete or new-complete (``worldgen.atomic``: the output's lock, the previous run's
    leftovers recovered, a temp beside ``out``, two renames).
    """
    out = Path(out)
    with output_lock(out):
        recover(out)
        try:
            return _write_locked(result, out, force)
        except OSError as e:  # a full disk, a quota: nothing was replaced
            why = e.strerror or e
            raise OutputError(f"{out}: cannot write ({why}); nothing replaced") from None


def _write_locked(result: ExportResult, out: Path, force: bool) -> list[Path]:
    if out.exists() and not force:
        raise OutputError(f"{out} exists; use --force to replace it")
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.is_dir():
        raise OutputError(f"{parent}: no such folder")
    if isinstance(result, bytes | bytearray):
        if out.is_dir():
            raise OutputError(f"{out} is a folder; this format writes one file")
        tmp = tmp_beside(out, folder=False)
        try:
            with open(tmp, "wb") as f:
                f.write(result)
            swap_in(tmp, out)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return [out]
    if not isinstance(result, dict) or not result:
        raise OutputError("exporter produced nothing; nothing written")
    rels = {safe_relpath(k): v for k, v in result.items()}
    tmp = tmp_beside(out, folder=True)
    written = []
    try:
        root = tmp.resolve()
        for rel, data in rels.items():
            dst = (tmp / rel).resolve()
            if root not in dst.parents:
                raise OutputError(f"exporter produced an unsafe path {str(rel)!r}")
            dst.parent.mkdir(parents=True, exist_ok=True)
            dst.write_bytes(bytes(data))
            written.append(out / rel)
        os.chmod(tmp, 0o755)
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return written


def export_world(
    world, name: str, out: Path, options: ExportOptions | None = None, *, force: bool = False
) -> list[Path]:
    """Export ``world`` with the exporter ``name`` to ``out``; returns the files written."""
    exporter = get_exporter(name)
    result = exporter.export(world, options or ExportOptions())
    return write_export(result, out, force=force)
