"""Build configuration: small frozen dataclasses, a docstring per field, YAML presets.

Presets live in ``configs/<name>.yaml`` (plain data, loaded with ``yaml.safe_load``) and are
overlaid on the defaults below; the resolved config is saved into ``world.json``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .camera import CameraConfig
from .collision import CollisionConfig
from .depth.base import DepthConfig
from .errors import InputError
from .fill.base import FillConfig
from .image import ImageConfig
from .layers import LayerConfig
from .lift import LiftConfig
from .optimize import RefineConfig
from .surround import SurroundConfig

CONFIG_DIR = Path(__file__).resolve().parent.parent / "configs"
PRESETS = ("fast", "default", "quality")


@dataclass(frozen=True)
class BuildConfig:
    image: ImageConfig = field(default_factory=ImageConfig)
    camera: CameraConfig = field(default_factory=CameraConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    lift: LiftConfig = field(default_factory=LiftConfig)
    layers: LayerConfig = field(default_factory=LayerConfig)
    fill: FillConfig = field(default_factory=FillConfig)
    surround: SurroundConfig = field(default_factory=SurroundConfig)
    """The world beyond the photo: ground, distant band, sky all around the spawn."""
    collision: CollisionConfig = field(default_factory=CollisionConfig)
    refine: RefineConfig = field(default_factory=RefineConfig)
    """Splat refinement against the photo and the layers' views (``iters: 0`` = off)."""
    seed: int = 0
    """Random seed; the same seed and inputs give the same world."""
    preset: str = "default"
    """Name of the preset this config started from."""

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **sections) -> BuildConfig:
        """``cfg.replace(depth={"backend": "file"}, seed=3)``: overlay plain values."""
        return from_dict(_merge(self.to_dict(), sections))


def _to_plain(x):
    if isinstance(x, dict):
        return {k: _to_plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_to_plain(v) for v in x]
    return x


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _coerce(value, tp, where: str):
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"config: {where} must be a mapping, got {value!r}")
        return _build(tp, value, where)
    if origin is tuple:
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise InputError(f"config: {where} must be a list of {len(args)} values, got {value!r}")
        pairs = enumerate(zip(value, args, strict=True))
        return tuple(_coerce(v, a, f"{where}[{i}]") for i, (v, a) in pairs)
    if tp is bool:
        if not isinstance(value, bool):
            raise InputError(f"config: {where} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"config: {where} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InputError(f"config: {where} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"config: {where} must be a string, got {value!r}")
        return value
    return value


def _build(cls, data: dict, where: str):
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise InputError(
            f"config: unknown key(s) {', '.join(unknown)} in {where or 'top level'}; "
            f"valid: {', '.join(sorted(names))}"
        )
    kwargs = {k: _coerce(v, hints[k], f"{where}.{k}" if where else k) for k, v in data.items()}
    return cls(**kwargs)


def from_dict(data: dict) -> BuildConfig:
    """Build a validated ``BuildConfig`` from plain data (unknown keys are errors)."""
    if not isinstance(data, dict):
        raise InputError(f"config: expected a mapping, got {type(data).__name__}")
    from .limits import check_ranges

    cfg = _build(BuildConfig, _legacy_names(data), "")
    check_ranges(cfg)  # NaN, negative counts, absurd sizes: one line, before any work
    return cfg


def _legacy_names(data: dict) -> dict:
    """``outpaint:`` is the ``surround`` section's name before the surround package."""
    if "outpaint" not in data:
        return data
    if "surround" in data:
        raise InputError("config: give either 'surround' or its old name 'outpaint', not both")
    data = dict(data)
    data["surround"] = data.pop("outpaint")
    return data


def load_preset(name_or_path: str) -> BuildConfig:
    """A preset by name (``configs/<name>.yaml``) or a path to a YAML file."""
    p = Path(name_or_path)
    if p.suffix in (".yaml", ".yml"):
        path, name = p, p.stem
    else:
        path, name = CONFIG_DIR / f"{name_or_path}.yaml", name_or_path
        if not path.exists():
            avail = sorted(q.stem for q in CONFIG_DIR.glob("*.yaml")) or list(PRESETS)
            raise InputError(f"unknown preset {name_or_path!r}; valid: {', '.join(avail)}")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise InputError(f"{path}: cannot read preset ({e.strerror or e})") from None
    except yaml.YAMLError as e:
        raise InputError(f"{path}: invalid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise InputError(f"{path}: a preset must be a mapping of sections")
    data.setdefault("preset", name)
    return from_dict(_merge(BuildConfig().to_dict(), _legacy_names(data)))
