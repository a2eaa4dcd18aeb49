"""Learned models from the Hugging Face hub or local folders: the ``[ml]`` extra, devices,
the local cache, licences, and loading with one-line errors.

Nothing here imports torch-heavy libraries at module import time; ``transformers`` and
``diffusers`` are imported only when a learned backend is used. Weights are loaded as
safetensors only and never with ``trust_remote_code``.

Model references are a hub id (``org/name``) or a local folder (anything that exists on disk,
or starts with ``/``, ``.`` or ``~``). The cache is huggingface_hub's (``HF_HUB_CACHE``, else
``HF_HOME/hub``, else ``~/.cache/huggingface/hub``), read at call time; ``HF_HUB_OFFLINE=1``
makes every load local-only.
"""

from __future__ import annotations

import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BackendError, ModelError

#: what the learned backends import (the ``[ml]`` extra, plus torch which is a core dependency)
ML_MODULES = ("transformers", "diffusers", "huggingface_hub", "safetensors", "accelerate")
DEVICES = ("auto", "cpu", "cuda", "mps")


@dataclass(frozen=True)
class KnownModel:
    """A model worldgen knows by id: its role, licence and size (from the model cards)."""

    id: str
    role: str  # "depth" | "inpaint"
    backend: str  # backend name that runs it
    licence: str
    commercial: bool  # False: non-commercial / research-only licence (a warning at build time)
    params: str
    download: str  # approximate size of the safetensors download
    kind: str = ""  # depth: "disparity" (affine-invariant) | "metric"
    note: str = ""


_DA = "depth-anything/Depth-Anything-V2-{}-hf"
KNOWN_MODELS: tuple[KnownModel, ...] = (
    KnownModel(_DA.format("Small"), "depth", "depth-anything-v2", "Apache-2.0", True, "25M",
               "99 MB", "disparity"),
    KnownModel(_DA.format("Base"), "depth", "depth-anything-v2", "CC-BY-NC-4.0", False, "98M",
               "390 MB", "disparity"),
    KnownModel(_DA.format("Large"), "depth", "depth-anything-v2", "CC-BY-NC-4.0", False, "335M",
               "1.3 GB", "disparity"),
    *(
        KnownModel(_DA.format(f"Metric-{scene}-{size}"), "depth", "depth-anything-v2",
                   lic, commercial, params, dl, "metric",
                   f"metric, {scene.lower()} (max {20 if scene == 'Indoor' else 80} m); "
                   "licence as the base model, see model card")
        for scene in ("Indoor", "Outdoor")
        for size, lic, commercial, params, dl in (
            ("Small", "Apache-2.0", True, "25M", "99 MB"),
            ("Base", "CC-BY-NC-4.0", False, "98M", "390 MB"),
            ("Large", "CC-BY-NC-4.0", False, "335M", "1.3 GB"),
        )
    ),
    KnownModel("apple/DepthPro-hf", "depth", "depth-pro",
               "Apple ML Research Model licence (apple-amlr): research use only, see model card",
               False, "952M", "1.9 GB", "metric", "metric depth and focal length"),
    KnownModel("Intel/dpt-large", "depth", "depth-anything-v2", "Apache-2.0", True, "343M",
               "1.4 GB", "disparity", "MiDaS v3 DPT-Large (runs on the same code path)"),
    KnownModel("stable-diffusion-v1-5/stable-diffusion-inpainting", "inpaint", "diffusion",
               "CreativeML OpenRAIL-M", True, "1.07B", "4.3 GB",
               note="use-based restrictions, see model card; 512 px"),
    KnownModel("stabilityai/stable-diffusion-2-inpainting", "inpaint", "diffusion",
               "CreativeML OpenRAIL++-M", True, "1.3B", "5.2 GB",
               note="use-based restrictions, see model card; 512 px"),
    KnownModel("diffusers/stable-diffusion-xl-1.0-inpainting-0.1", "inpaint", "diffusion",
               "CreativeML OpenRAIL++-M", True, "3.5B", "10 GB",
               note="use-based restrictions, see model card; 1024 px"),
)  # fmt: skip

DEFAULT_MODELS = {
    "depth-anything-v2": _DA.format("Small"),
    "depth-pro": "apple/DepthPro-hf",
    "diffusion": "stable-diffusion-v1-5/stable-diffusion-inpainting",
}

#: files that must be in the local cache for `auto` to consider a model present
_PRESENCE = {
    "depth": ("config.json", "model.safetensors"),
    "inpaint": ("model_index.json", "unet/config.json"),
}


def known_model(ref: str) -> KnownModel | None:
    for m in KNOWN_MODELS:
        if m.id.lower() == str(ref).lower():
            return m
    return None


# ----------------------------------------------------------------------------- environment


def missing_ml_modules() -> list[str]:
    return [m for m in ML_MODULES if importlib.util.find_spec(m) is None]


def require_ml(what: str) -> None:
    """Raise a one-line BackendError when the ``[ml]`` extra is not installed."""
    missing = missing_ml_modules()
    if missing:
        raise BackendError(
            f"{what} needs the [ml] extra (missing: {', '.join(missing)}); "
            "install it with: pip install -e '.[ml]'"
        )


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def hub_cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "huggingface" / "hub"


def resolve_device(name: str = "auto") -> str:
    """``auto`` -> cuda, else mps, else cpu; an explicit device must exist."""
    import torch

    if name not in DEVICES:
        raise BackendError(f"unknown device {name!r}; valid: {', '.join(DEVICES)}")
    has_cuda = torch.cuda.is_available()
    has_mps = bool(getattr(torch.backends, "mps", None)) and torch.backends.mps.is_available()
    if name == "auto":
        return "cuda" if has_cuda else "mps" if has_mps else "cpu"
    if name == "cuda" and not has_cuda:
        raise BackendError("--device cuda: no CUDA device is available (try --device cpu)")
    if name == "mps" and not has_mps:
        raise BackendError("--device mps: no Apple MPS device is available (try --device cpu)")
    return name


# ----------------------------------------------------------------------------- references


def is_local_ref(ref: str) -> bool:
    """A local folder (exists, or is spelled like a path) rather than a hub id."""
    p = Path(ref).expanduser()
    return p.exists() or ref.startswith(("/", ".", "~")) or ref.count("/") > 1 or "\\" in ref


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_ref(ref: str, role: str) -> str:
    """Validate a model reference: a local folder must exist, a hub id must be well formed."""
    if not ref or not str(ref).strip():
        raise ModelError(f"empty {role} model id")
    ref = str(ref)
    if is_local_ref(ref):
        p = Path(ref).expanduser()
        if not p.exists():
            raise ModelError(f"{ref}: {role} model folder not found")
        if not p.is_dir():
            raise ModelError(
                f"{ref}: a {role} model must be a folder (save_pretrained), not a file"
            )
        return str(p)
    if not _HUB_ID.match(ref):
        raise ModelError(f"{ref!r} is neither a model folder nor a hub id (org/name)")
    return ref


def cached_file(repo_id: str, filename: str) -> Path | None:
    """Path of ``filename`` of ``repo_id`` in the local HF cache, or None (never downloads)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        p = try_to_load_from_cache(repo_id, filename, cache_dir=str(hub_cache_dir()))
    except Exception:  # malformed id or cache: simply not cached
        return None
    return Path(p) if isinstance(p, str) else None


def is_cached(ref: str, role: str) -> bool:
    """Whether the weights of ``ref`` are on this machine (a folder, or the HF cache)."""
    if is_local_ref(ref):
        return Path(ref).expanduser().is_dir()
    return all(cached_file(ref, f) is not None for f in _PRESENCE[role])


def load_kwargs() -> dict:
    """Keyword arguments every ``from_pretrained`` call gets."""
    return {"cache_dir": str(hub_cache_dir()), "local_files_only": offline()}


# ----------------------------------------------------------------------------- licences


def _front_matter_licence(readme: Path) -> str | None:
    try:
        text = readme.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    m = re.match(r"^---\s*\n(.*?)\n---", text, re.S)
    if not m:
        return None
    import yaml

    try:
        meta = yaml.safe_load(m.group(1)) or {}
    except yaml.YAMLError:
        return None
    lic = meta.get("license") if isinstance(meta, dict) else None
    if isinstance(lic, list):
        lic = ", ".join(map(str, lic))
    return str(lic) if lic else None


_NON_COMMERCIAL = re.compile(r"\bnc\b|non.?commercial|research|amlr", re.I)


def model_facts(ref: str, role: str, backend: str) -> dict:
    """What world.json records about a model: id, source, licence, size."""
    km = known_model(ref)
    facts: dict = {"role": role, "backend": backend, "id": str(ref)}
    if is_local_ref(ref):
        facts["source"] = "local"
        lic = _front_matter_licence(Path(ref).expanduser() / "README.md")
    else:
        facts["source"] = "hub"
        readme = cached_file(ref, "README.md")
        lic = _front_matter_licence(readme) if readme else None
    if km is not None:
        facts.update(licence=km.licence, commercial_use=km.commercial, params=km.params,
                     download=km.download)  # fmt: skip
    else:
        facts["licence"] = lic or "unknown"
        facts["commercial_use"] = None if not lic else not bool(_NON_COMMERCIAL.search(lic))
    return facts


def licence_warning(facts: dict) -> str | None:
    """A one-line warning for models whose licence forbids commercial use."""
    if facts.get("commercial_use") is False:
        return (
            f"warning: {facts['role']} model {facts['id']} is licensed {facts['licence']}: "
            "not for commercial use"
        )
    return None


# ----------------------------------------------------------------------------- errors


def is_oom(e: BaseException) -> bool:
    import torch

    oom = getattr(torch, "OutOfMemoryError", None) or torch.cuda.OutOfMemoryError
    if isinstance(e, MemoryError | oom):
        return True
    return isinstance(e, RuntimeError) and "out of memory" in str(e).lower()


def oom_error(ref: str, device: str) -> ModelError:
    hint = "try --device cpu or a smaller model" if device != "cpu" else "try a smaller model"
    return ModelError(f"out of memory running {ref} on {device}: {hint}")


def load_error(ref: str, role: str, e: BaseException, device: str = "cpu") -> ModelError:
    """A one-line ModelError for an exception raised while loading ``ref``."""
    if is_oom(e):
        return oom_error(ref, device)
    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
    low = str(e).lower()
    if not is_local_ref(ref) and not is_cached(ref, role) and offline():
        return ModelError(
            f"{ref}: not in the local Hugging Face cache and HF_HUB_OFFLINE=1 is set; "
            f"run `worldgen models download {ref}` on a connected machine first"
        )
    if "not a valid model identifier" in low or "repository not found" in low or "404" in low:
        return ModelError(f"{ref}: no such model on the Hugging Face hub (or it is gated)")
    if "unrecognized" in low or "should be one of" in low:
        return ModelError(f"{ref}: not a {role} model ({first})")
    if "safetensors" in low:
        return ModelError(
            f"{ref}: no safetensors weights (worldgen never loads pickled .bin files)"
        )
    return ModelError(f"{ref}: cannot load the {role} model ({first})")


# ----------------------------------------------------------------------------- download

_IGNORE = ["*.bin", "*.ckpt", "*.pt", "*.pth", "*.onnx", "*.onnx_data", "*.msgpack", "*.h5",
           "*.tflite", "*.fp16.*", "*non_ema*", "*.mlmodel*", "*.gguf"]  # fmt: skip


def download(ref: str) -> Path:
    """Fetch a hub model's config and safetensors files into the local cache."""
    require_ml("worldgen models download")
    ref = check_ref(ref, "model")
    if is_local_ref(ref):
        raise ModelError(f"{ref}: is a local folder, nothing to download")
    if offline():
        raise ModelError(f"cannot download {ref}: HF_HUB_OFFLINE=1 is set")
    from huggingface_hub import snapshot_download

    km = known_model(ref)
    kw: dict = {"ignore_patterns": _IGNORE}
    if km is not None and km.role == "inpaint":
        # the diffusers components only (not the repo's single-file checkpoints)
        kw["allow_patterns"] = ["model_index.json", "*.md", "*/*.json", "*/*.txt",
                                "*/diffusion_pytorch_model.safetensors", "*/model.safetensors",
                                "*/model-*.safetensors"]  # fmt: skip
    try:
        path = snapshot_download(ref, cache_dir=str(hub_cache_dir()), **kw)
    except Exception as e:  # network, unknown repo, gated repo: one line
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise ModelError(f"cannot download {ref}: {first}") from None
    return Path(path)
