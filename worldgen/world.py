"""The world bundle (``NAME.world/``): atomic writing, loading and validation.

Layout (ARCHITECTURE.md)::

    world.json          manifest, validated against world.schema.json
    splats.ply          INRIA 3DGS PLY, source camera OpenCV axes
    splat_layers.npy    per-splat layer id (uint8)
    layers/<k>/         rgb.png, depth.npy (float32 metres, NaN = none), alpha.png,
                        labels.png (semantic labels), intrinsics.json
    collision.glb       collision mesh, world frame (metres, +Y up)
    preview.png         render from the spawn point
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch

from .atomic import recover_if_missing, swap_in, tmp_beside
from .camera import Intrinsics
from .errors import BundleError, InputError, OutputError
from .safeio import MAX_IMAGE_PIXELS, load_npy, load_png, read_json
from .splats import Splats, read_ply

SCHEMA_PATH = Path(__file__).with_name("world.schema.json")
MANIFEST = "world.json"


def check_output(out: Path, force: bool) -> None:
    """Fail early (before any work) if ``out`` cannot be written."""
    out = Path(out)
    parent = out.parent if str(out.parent) else Path(".")
    if out.exists() or out.is_symlink():
        if not force:
            raise OutputError(f"{out}: already exists (use --force to replace it)")
        if not out.is_dir() or not (out / MANIFEST).is_file():
            raise OutputError(f"{out}: exists and is not a world bundle; refusing to replace it")
    if not parent.exists():
        raise OutputError(f"{parent}: output folder does not exist")
    if not parent.is_dir():
        raise OutputError(f"{parent}: is not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{parent}: output folder is not writable")
    try:  # access() says yes to root on read-only mounts: really try
        probe = tempfile.mkdtemp(prefix=f".{out.name}.probe-", dir=parent)
        os.rmdir(probe)
    except OSError as e:
        raise OutputError(f"{parent}: output folder is not writable ({e.strerror})") from None


@contextmanager
def atomic_dir(out: Path, force: bool) -> Iterator[Path]:
    """Yield a temporary folder beside ``out``; on success it replaces ``out`` (two renames,
    ``worldgen.atomic.swap_in``: old-complete or new-complete at every instant).

    On any error the temporary folder is removed and ``out`` is left as it was. Callers hold
    ``atomic.output_lock(out)``.
    """
    out = Path(out)
    check_output(out, force)
    tmp = tmp_beside(out, folder=True)
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        swap_in(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validate_manifest(manifest: dict, where: str = MANIFEST) -> None:
    import jsonschema

    try:
        jsonschema.validate(manifest, _schema())
    except jsonschema.ValidationError as e:
        path = "/".join(str(p) for p in e.absolute_path) or "(top level)"
        raise BundleError(f"{where}: invalid at {path}: {e.message}") from None


def _safe_join(root: Path, rel: str) -> Path:
    """Join a manifest path to the bundle root, refusing anything that escapes it."""
    try:
        p = (root / rel).resolve()
    except (OSError, RuntimeError):  # a symlink loop
        raise BundleError(f"{rel!r}: unresolvable path (symlink loop?)") from None
    if root.resolve() not in p.parents and p != root.resolve():
        raise BundleError(f"{rel!r}: path leaves the world folder")
    return p


@dataclass
class Layer:
    id: int
    name: str
    path: Path
    kind: str = "scene"
    projection: str = "perspective"

    @cached_property
    def rgb(self) -> np.ndarray:  # [H, W, 3] float32
        return load_png(self.path / "rgb.png", "layer image", "RGB").astype(np.float32) / 255.0

    @cached_property
    def depth(self) -> np.ndarray:  # [H, W] float32 metres, NaN = none
        return load_npy(self.path / "depth.npy", "layer depth", "f", 2, MAX_IMAGE_PIXELS)

    @cached_property
    def alpha(self) -> np.ndarray:  # [H, W] float32
        return load_png(self.path / "alpha.png", "layer alpha", "L").astype(np.float32) / 255.0

    @cached_property
    def intrinsics(self) -> Intrinsics:
        """Perspective layers only."""
        d = read_json(self.path / "intrinsics.json", "layer intrinsics")
        try:
            intr = Intrinsics.from_dict(d)
            ok = all(map(np.isfinite, (intr.fx, intr.fy, intr.cx, intr.cy)))
            ok = ok and intr.fx > 0 and intr.fy > 0 and 0 < intr.width * intr.height
        except (KeyError, TypeError, ValueError, AttributeError):
            ok = False
        if not ok or intr.width * intr.height > MAX_IMAGE_PIXELS:
            raise BundleError(f"{self.path / 'intrinsics.json'}: invalid layer intrinsics")
        return intr


class World:
    """A loaded, validated world bundle. Heavy files are read on first use."""

    def __init__(self, path: Path, manifest: dict, only_layers: Iterable[int] | None = None):
        self.path = Path(path)
        self.manifest = manifest
        #: layer ids whose splats ``splats`` holds (None: all); see ``select_layers``
        self.only_layers = None if only_layers is None else tuple(sorted(only_layers))

    @property
    def intrinsics(self) -> Intrinsics:
        return Intrinsics.from_dict(self.manifest["camera"]["intrinsics"])

    @property
    def world_from_camera(self) -> np.ndarray:  # [4, 4]
        return np.asarray(self.manifest["world_from_camera"], dtype=np.float64)

    @cached_property
    def splats(self) -> Splats:
        layers = read_splat_layers(self.path / "splat_layers.npy", self.manifest["splats"]["count"])
        s = read_ply(self.path / "splats.ply", layers=layers)
        if len(s) != self.manifest["splats"]["count"]:
            raise BundleError(
                f"{self.path}: splats.ply holds {len(s)} splats, "
                f"world.json says {self.manifest['splats']['count']}"
            )
        return s if self.only_layers is None else _keep_layers(s, self.only_layers)

    @property
    def layers(self) -> list[Layer]:
        return [
            Layer(
                d["id"],
                d["name"],
                _safe_join(self.path, d["path"]),
                d.get("kind", "scene"),
                d.get("projection", "perspective"),
            )
            for d in self.manifest["layers"]
        ]

    def layer_ids(self, items: Iterable[str] | str) -> list[int]:
        """Ids of the layers named by ``items`` (a list, or one comma-separated string): each a
        layer name (``sky-dome``) or a kind (``sky``: every layer of that kind, here the
        photo's sky and the dome; an item that is both selects both). An unknown item raises
        InputError listing the valid names and kinds."""
        if isinstance(items, str):
            items = items.split(",")
        layers = self.manifest["layers"]
        names = {d["name"]: d["id"] for d in layers}
        kinds: dict[str, list[int]] = {}
        for d in layers:
            kinds.setdefault(d.get("kind", "scene"), []).append(d["id"])
        ids: set[int] = set()
        for item in items:
            item = item.strip()
            if item not in names and item not in kinds:
                raise InputError(
                    f"unknown layer {item!r}; layers of {self.path.name}: "
                    f"{', '.join(names)}; kinds: {', '.join(kinds)}"
                )
            ids.update(kinds.get(item, []))  # "sky" is a name and a kind: the photo's sky + dome
            if item in names:
                ids.add(names[item])
        if not ids:
            raise InputError("no layer given (e.g. --layers sky,surroundings)")
        return sorted(ids)

    def select_layers(self, items: Iterable[str] | str) -> World:
        """This world with only the splats of the layers ``items`` (names or kinds, see
        ``layer_ids``); manifest, camera and spawn are unchanged. Checks the names at once
        (manifest only); the splats are read on first use, or filtered from this world's if
        it has read them."""
        ids = self.layer_ids(items)
        if self.only_layers is not None:
            ids = [i for i in ids if i in self.only_layers]
        sel = World(self.path, self.manifest, only_layers=ids)
        if "splats" in self.__dict__:  # already read: filter in memory (the cached_property)
            sel.__dict__["splats"] = _keep_layers(self.__dict__["splats"], ids)
        return sel

    @cached_property
    def source_rgb(self) -> np.ndarray:
        """[H, W, 3] float32: the photo at working resolution."""

        p = self.path / "source.png"
        if not p.exists():  # bundles from before source.png: the first layer was the photo
            p = self.layers[0].path / "rgb.png"
        return load_png(p, "source image", "RGB").astype(np.float32) / 255.0


def _keep_layers(splats: Splats, ids) -> Splats:
    return splats.index(torch.from_numpy(np.isin(splats.layers.numpy(), list(ids))))


def read_splat_layers(path: Path, count: int, header_only: bool = False) -> np.ndarray:
    """``splat_layers.npy``: uint8 [count] (no pickle; the header checked before reading)."""
    ids = load_npy(path, "splat_layers.npy", "u", 1, count, header_only=header_only)
    if ids.dtype != np.uint8 or ids.shape != (count,):
        raise BundleError(f"{path}: must be uint8 [{count}], got {ids.dtype} {list(ids.shape)}")
    return ids


def load_world(path: str | Path) -> World:
    """Open and validate a world bundle; raises BundleError with a clear message."""
    path = Path(path)
    recover_if_missing(path)  # a build killed between its two renames left the old one aside
    if not path.exists():
        raise BundleError(f"{path}: no such world")
    if not path.is_dir():
        raise BundleError(f"{path}: not a world folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise BundleError(f"{path}: not a world bundle (no {MANIFEST})")
    _safe_join(path, MANIFEST)  # a symlink out of the bundle is refused
    manifest = read_json(mpath, "manifest")
    if isinstance(manifest, dict) and manifest.get("version") not in (None, 1):
        raise BundleError(
            f"{mpath}: world format version {manifest.get('version')} is newer than this "
            "worldgen understands (1); upgrade worldgen"
        )
    validate_manifest(manifest, str(mpath))
    for rel in ("splats.ply", "splat_layers.npy", "collision.glb", "preview.png"):
        if not (path / rel).is_file():
            raise BundleError(f"{path}: missing {rel}")
        _safe_join(path, rel)
    for layer in manifest["layers"]:
        d = _safe_join(path, layer["path"])
        proj = (
            "projection.json"
            if layer.get("projection") == "equirectangular"
            else ("intrinsics.json")
        )
        for f in ("rgb.png", "depth.npy", "alpha.png", proj):
            if not (d / f).is_file():
                raise BundleError(f"{path}: layer {layer['id']} is missing {f}")
            _safe_join(path, f"{layer['path']}/{f}")
    read_splat_layers(path / "splat_layers.npy", manifest["splats"]["count"], header_only=True)
    return World(path, manifest)
