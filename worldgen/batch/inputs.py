"""What a batch builds: photos, folders and CSV lists expanded to one ``Item`` per world.

- A photo (any file that is not ``*.csv``) is one item; its world is ``OUTDIR/<stem>.world``.
- A folder is searched recursively for image files (``IMAGE_EXTENSIONS``, any case), skipping
  hidden files and folders, ``*.world`` folders and OUTDIR itself; a photo at ``F/sub/x.jpg``
  becomes ``OUTDIR/sub/x.world``.
- A CSV list has a ``path`` column (relative to the list's folder) and optional ``focal_px``,
  ``depth_map`` (relative to the list's folder), ``prompt`` and ``seed`` columns, which override
  the build options for that row. A row with a bad value is an item that fails with its error
  (the rest of the batch goes on); a list without a ``path`` column is an InputError.

Two photos with the same stem in one folder (``a.jpg``, ``a.png``) both keep their extension:
``a.jpg.world``, ``a.png.world``. Two inputs that still map to one world (the same photo given
twice, or ``x.jpg`` in two folders given side by side) are an InputError naming both.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff")
LIST_COLUMNS = ("path", "focal_px", "depth_map", "prompt", "seed")


@dataclass(frozen=True)
class Item:
    """One world to build.

    ``input``: the photo (absolute path; may not exist: the item then fails alone).
    ``output``: its world folder (absolute, ``*.world``).
    ``overrides``: build-config sections from a list row, e.g. ``{"seed": 3,
    "camera": {"focal_px": 800.0}}`` (merged over the batch's own options).
    ``error``: a list row that cannot be built (bad value): the item fails with this message.
    """

    input: Path
    output: Path
    overrides: dict = field(default_factory=dict, hash=False, compare=False)
    error: str | None = None


def discover(inputs: list[str | Path], outdir: Path) -> list[Item]:
    """The items of ``inputs`` (photos, folders, CSV lists), in a stable order.

    Raises InputError for an input that does not exist, a folder without photos overall, an
    unreadable list, or two inputs mapping to the same world."""
    for x in [*inputs, outdir]:
        refuse_uri(str(x))
    outdir = Path(outdir).absolute()
    found: list[tuple[Path, Path, dict, str | None]] = []  # (photo, rel without ext, over, err)
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            raise InputError(f"{p}: no such file or folder")
        if p.is_dir():
            root = p.absolute()
            found += [
                (f, f.relative_to(root).with_suffix(""), {}, None) for f in _walk(root, outdir)
            ]
        elif p.suffix.lower() == ".csv":
            found += _read_list(p)
        else:
            found.append((p.absolute(), Path(p.stem), {}, None))
    if not found:
        raise InputError(f"no photos found in {', '.join(map(str, inputs))}")
    return _name(found, outdir)


def refuse_uri(text: str) -> None:
    """Object-store URIs are not supported (yet): a one-line InputError saying what to do."""
    if "://" in text:
        scheme = text.split("://", 1)[0]
        raise InputError(
            f"{text}: {scheme}:// paths are not supported; mount the bucket on every node "
            "(e.g. mountpoint-s3, gcsfuse) and give its local path"
        )


def _walk(folder: Path, outdir: Path) -> list[Path]:
    out = []
    folder = folder.absolute()
    skip = outdir.resolve()
    for sub in sorted(folder.iterdir()):
        if sub.name.startswith("."):
            continue
        if sub.is_dir():
            if sub.suffix == ".world" or sub.resolve() == skip:
                continue
            out += _walk(sub, outdir)
        elif sub.is_file() and sub.suffix.lower() in IMAGE_EXTENSIONS:
            out.append(sub)
    return out


def _read_list(path: Path) -> list[tuple[Path, Path, dict, str | None]]:
    base = path.parent.absolute()
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            rows = list(csv.DictReader(f))
            columns = [c.strip() for c in (rows[0].keys() if rows else [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise InputError(f"{path}: cannot read the list ({e})") from None
    if rows and "path" not in columns:
        raise InputError(f"{path}: a list needs a 'path' column (columns: {', '.join(columns)})")
    unknown = [c for c in columns if c not in LIST_COLUMNS]
    if unknown:
        raise InputError(
            f"{path}: unknown column(s) {', '.join(unknown)}; known: {', '.join(LIST_COLUMNS)}"
        )
    out = []
    for n, row in enumerate(rows, start=2):  # line 1 is the header
        row = {k.strip(): (v or "").strip() for k, v in row.items() if k is not None}
        rel = row.get("path", "")
        where = f"{path.name} line {n}"
        if not rel:
            out.append((base / f"<line {n}>", Path(f"line-{n}"), {}, f"{where}: empty path"))
            continue
        photo = (base / rel).absolute()
        name = Path(rel).with_suffix("") if _inside(photo, base) else Path(Path(rel).stem)
        over, err = _row_overrides(row, base, where)
        out.append((photo, name, over, err))
    return out


def _inside(p: Path, base: Path) -> bool:
    try:
        p.resolve().relative_to(base.resolve())
        return True
    except ValueError:
        return False


def _row_overrides(row: dict, base: Path, where: str) -> tuple[dict, str | None]:
    over: dict = {}
    try:
        if row.get("focal_px"):
            f = float(row["focal_px"])
            if not (f > 0 and math.isfinite(f)):
                raise ValueError(f"focal_px must be a positive number, got {row['focal_px']!r}")
            over["camera"] = {"focal_px": f}
        if row.get("depth_map"):
            over["depth"] = {"depth_map": str((base / row["depth_map"]).absolute())}
        if row.get("prompt"):
            over["fill"] = {"prompt": row["prompt"]}
        if row.get("seed"):
            try:
                over["seed"] = int(row["seed"])
            except ValueError:
                raise ValueError(f"seed must be a whole number, got {row['seed']!r}") from None
    except ValueError as e:
        return {}, f"{where}: {e}"
    return over, None


def _name(found, outdir: Path) -> list[Item]:
    """Output folders: the relative name + ``.world``; same-stem photos keep their extension."""
    by_name: dict[Path, list[int]] = {}
    for k, (_, rel, _, _) in enumerate(found):
        by_name.setdefault(rel, []).append(k)
    items: list[Item] = []
    taken: dict[Path, Path] = {}
    for photo, rel, over, err in found:
        name = rel
        if len(by_name[rel]) > 1:
            name = rel.with_name(rel.name + photo.suffix)
        out = outdir / name.parent / f"{name.name}.world"
        if out in taken:
            raise InputError(
                f"{taken[out]} and {photo} would both be built into {out}; "
                "give them different names or build them in separate batches"
            )
        taken[out] = photo
        items.append(Item(photo, out, over, err))
    return items
