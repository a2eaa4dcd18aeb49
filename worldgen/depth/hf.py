"""Learned depth backends via ``transformers``: ``depth-anything-v2`` and ``depth-pro``.

Both run any ``AutoModelForDepthEstimation`` checkpoint (hub id or a local ``save_pretrained``
folder, ``--depth-model``), safetensors only, ``trust_remote_code=False``. Per photo:

1. **input size** as the model expects it: Depth Anything / DPT keep the aspect ratio, scale so
   both sides reach the processor's ``size`` (518 for Depth Anything V2) and round *up* to a
   multiple of the ViT patch (14; ``ensure_multiple_of``), e.g. 768x512 -> 770x518; Depth Pro
   takes its fixed square (``patch_size / min(scaled_images_ratios)``, 1536). Bicubic resize,
   the processor's mean/std (read from ``AutoImageProcessor`` or its ``preprocessor_config.json``).
2. **inference** on ``--device`` (auto: cuda > mps > cpu), float16 on CUDA, float32 elsewhere.
3. **what the output is** (``DepthEstimate.kind``): Depth Anything V2 relative and DPT/MiDaS give
   affine-invariant *disparity* (converted to metres by :func:`worldgen.ground.disparity_to_depth`
   with the ground-plane prior, never by blind inversion); the Depth Anything metric variants give
   metres; Depth Pro gives canonical inverse depth ``c`` and a horizontal field of view, so
   ``1/z = c * W / f`` with ``f`` the user's focal length if given, else the model's
   (``f = W / (2 tan(fov / 2))``), and the model's focal length is returned for the camera.
4. **back to the photo's size** with joint bilateral upsampling guided by the photo (Kopf et al.
   2007): each pixel averages the 4x4 nearest model pixels weighted by distance *and* colour
   similarity, so depth edges follow colour edges instead of blurring across them. A model
   output larger than the photo in both directions is area-averaged instead.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from .. import hf
from ..camera import Intrinsics
from ..errors import InputError, ModelError
from .base import DepthEstimate

#: model_type values whose (upsampled) output is metric z-depth in metres
_METRIC_TYPES = ("zoedepth", "glpn")
_IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])


# ----------------------------------------------------------------------------- upsampling


def _area_resize(a: np.ndarray, h: int, w: int) -> np.ndarray:
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))
    t = t.permute(2, 0, 1)[None] if t.ndim == 3 else t[None, None]
    if t.shape[-2] >= h and t.shape[-1] >= w:
        out = F.interpolate(t, size=(h, w), mode="area")
    else:
        out = F.interpolate(t, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    out = out[0].permute(1, 2, 0) if a.ndim == 3 else out[0, 0]
    return out.numpy()


def joint_bilateral_upsample(
    low: np.ndarray,  # [h, w] float
    guide: np.ndarray,  # [H, W, 3] float in [0, 1]
    *,
    sigma_range: float = 0.08,
    radius: int = 2,
) -> np.ndarray:
    """``low`` resized to the guide's [H, W], edges following the guide's colour edges.

    Joint bilateral upsampling: output(p) = sum_q w_s(p, q) w_r(I(p), I_low(q)) low(q) / sum(...)
    over the (2 radius)^2 model pixels q nearest to p, w_s a Gaussian of the distance in model
    pixels (sigma 0.75), w_r a Gaussian of the RGB distance between the photo at p and the
    area-downsampled photo at q. Returns float32 [H, W].
    """
    h, w = low.shape
    H, W = guide.shape[:2]
    if (h, w) == (H, W):
        return low.astype(np.float32, copy=True)
    if h >= H and w >= W:
        return _area_resize(low, H, W).astype(np.float32)
    g_low = _area_resize(guide, h, w)
    ys = (np.arange(H, dtype=np.float32) + 0.5) * h / H - 0.5
    xs = (np.arange(W, dtype=np.float32) + 0.5) * w / W - 0.5
    y0, x0 = np.floor(ys).astype(np.int64), np.floor(xs).astype(np.int64)
    g = guide.astype(np.float32)
    num = np.zeros((H, W), np.float32)
    den = np.zeros((H, W), np.float32)
    inv_s = 1.0 / (2.0 * 0.75**2)
    inv_r = 1.0 / (2.0 * sigma_range**2)
    lowf = low.astype(np.float32)
    for dy in range(1 - radius, radius + 1):
        qy = np.clip(y0 + dy, 0, h - 1)
        wy = np.exp(-((ys - qy) ** 2) * inv_s)
        for dx in range(1 - radius, radius + 1):
            qx = np.clip(x0 + dx, 0, w - 1)
            wx = np.exp(-((xs - qx) ** 2) * inv_s)
            diff = g - g_low[qy][:, qx]
            wr = np.exp(-np.einsum("ijk,ijk->ij", diff, diff) * inv_r)
            wt = wy[:, None] * wx[None, :] * wr + 1e-12
            num += wt * lowf[qy][:, qx]
            den += wt
    return (num / den).astype(np.float32)


# ----------------------------------------------------------------------------- the model


def _preprocessor(ref: str) -> dict:
    """The image-processor settings of ``ref`` (AutoImageProcessor, else its JSON, else {})."""
    try:
        from transformers import AutoImageProcessor

        p = AutoImageProcessor.from_pretrained(ref, trust_remote_code=False, **hf.load_kwargs())
        size = getattr(p, "size", None)
        size = dict(size) if size is not None else {}
        return {
            "size": {k: v for k, v in size.items() if v is not None},
            "keep_aspect_ratio": getattr(p, "keep_aspect_ratio", False),
            "ensure_multiple_of": getattr(p, "ensure_multiple_of", 1),
            "image_mean": list(getattr(p, "image_mean", None) or _IMAGENET[0]),
            "image_std": list(getattr(p, "image_std", None) or _IMAGENET[1]),
        }
    except Exception:  # a processor that needs torchvision, or none saved: read the JSON
        return _preprocessor_json(ref)


def _preprocessor_json(ref: str) -> dict:
    """``preprocessor_config.json`` of ``ref`` as a dict ({} if there is none)."""
    path = Path(ref) / "preprocessor_config.json" if hf.is_local_ref(ref) else None
    if path is None:
        path = hf.cached_file(ref, "preprocessor_config.json")
    if path is not None and path.is_file():
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            return {}  # unreadable: the model type's defaults (518 px, ImageNet mean/std)
    return {}


def _patch_size(config) -> int:
    bb = getattr(config, "backbone_config", None)
    p = getattr(bb, "patch_size", None) or getattr(config, "patch_size", None) or 14
    return int(p[0] if isinstance(p, list | tuple) else p)


def model_input_size(config, prep: dict, H: int, W: int) -> tuple[int, int]:
    """(height, width) the model takes for an H x W photo (see the module docstring)."""
    if config.model_type == "depth_pro":
        s = int(round(config.patch_size / min(config.scaled_images_ratios)))
        return s, s
    size = prep.get("size") or {}
    th = int(size.get("height") or size.get("shortest_edge") or 518)
    tw = int(size.get("width") or size.get("shortest_edge") or th)
    m = int(prep.get("ensure_multiple_of") or 1)
    if m <= 1:
        m = _patch_size(config) if prep.get("keep_aspect_ratio") else 1
    if prep.get("keep_aspect_ratio"):
        s = max(th / H, tw / W)  # both sides reach the target ("lower bound")
        th, tw = H * s, W * s
    up = lambda v: max(m, int(math.ceil(v / m - 1e-6)) * m)  # noqa: E731
    return up(th), up(tw)


class LoadedDepthModel:
    """A loaded transformers depth model and what is needed to run it."""

    def __init__(self, ref: str, device: str):
        hf.require_ml("learned depth")
        ref = hf.check_ref(ref, "depth")
        self.ref, self.device = ref, hf.resolve_device(device)
        if hf.is_local_ref(ref):
            p = Path(ref)
            if (p / "model_index.json").is_file():
                raise ModelError(f"{ref}: a diffusers pipeline, not a depth model")
            if not (p / "config.json").is_file():
                raise ModelError(f"{ref}: not a transformers model folder (no config.json)")
        import torch
        from transformers import AutoModelForDepthEstimation

        try:
            model = AutoModelForDepthEstimation.from_pretrained(
                ref, use_safetensors=True, trust_remote_code=False, **hf.load_kwargs()
            )
        except Exception as e:
            raise hf.load_error(ref, "depth", e, self.device) from None
        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        try:
            self.model = model.to(device=self.device, dtype=self.dtype).eval()
        except Exception as e:
            raise hf.load_error(ref, "depth", e, self.device) from None
        self.config = model.config
        self.model_type = str(self.config.model_type)
        self.prep = _preprocessor(ref)
        if self.model_type == "depth_pro":
            self.output = "canonical-inverse-depth"
        elif self.model_type in _METRIC_TYPES or (
            getattr(self.config, "depth_estimation_type", "relative") == "metric"
        ):
            self.output = "metric"
        else:
            self.output = "disparity"

    @property
    def kind(self) -> str:
        return "disparity" if self.output == "disparity" else "metric"

    def run(self, image: np.ndarray) -> tuple[np.ndarray, float | None, tuple[int, int]]:
        """image [H, W, 3] float in [0, 1] -> (raw output [h, w] float32, fov_deg or None,
        the input size (h_in, w_in))."""
        import torch
        import torch.nn.functional as F

        H, W = image.shape[:2]
        h_in, w_in = model_input_size(self.config, self.prep, H, W)
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32)).permute(2, 0, 1)[None]
        x = F.interpolate(x, size=(h_in, w_in), mode="bicubic", align_corners=False, antialias=True)
        mean = torch.tensor(self.prep.get("image_mean") or _IMAGENET[0]).view(1, 3, 1, 1)
        std = torch.tensor(self.prep.get("image_std") or _IMAGENET[1]).view(1, 3, 1, 1)
        x = ((x.clamp(0, 1) - mean) / std).to(device=self.device, dtype=self.dtype)
        try:
            with torch.inference_mode():
                out = self.model(pixel_values=x)
        except Exception as e:
            if hf.is_oom(e):
                raise hf.oom_error(self.ref, self.device) from None
            raise
        raw = out.predicted_depth.float().reshape(out.predicted_depth.shape[-2:]).cpu().numpy()
        fov = getattr(out, "field_of_view", None)
        fov_deg = None
        if fov is not None:
            v = float(fov.float().reshape(-1)[0])
            fov_deg = v if math.isfinite(v) and 10.0 < v < 170.0 else None
        if not np.isfinite(raw).all():
            raise ModelError(f"{self.ref}: the depth model returned non-finite values")
        return raw.astype(np.float32), fov_deg, (h_in, w_in)


def predict(
    loaded: LoadedDepthModel,
    image: np.ndarray,  # [H, W, 3] float in [0, 1]
    focal_px: float | None = None,
) -> tuple[np.ndarray, dict]:
    """The model's output at the photo's size: disparity (kind "disparity") or z-depth in metres
    (kind "metric"), float32 [H, W], and facts. ``focal_px`` (working pixels): a focal length the
    user gave, which takes precedence over a model's field of view."""
    H, W = image.shape[:2]
    raw, fov_deg, (h_in, w_in) = loaded.run(image)
    facts: dict = {
        "model": loaded.ref,
        "model_type": loaded.model_type,
        "output": loaded.output,
        "input_size": [w_in, h_in],
        "output_size": [int(raw.shape[1]), int(raw.shape[0])],
        "device": loaded.device,
        "dtype": str(loaded.dtype).replace("torch.", ""),
        "upsampling": "joint bilateral (guided by the photo)",
    }
    guide = np.clip(image, 0, 1).astype(np.float32)
    if loaded.output == "canonical-inverse-depth":
        facts["fov_deg"] = fov_deg
        if focal_px is not None:
            f, facts["focal_source"] = float(focal_px), "given"
        elif fov_deg is not None:
            f, facts["focal_source"] = 0.5 * W / math.tan(math.radians(fov_deg) / 2), "model"
        else:
            f, facts["focal_source"] = None, "camera (the model has no field-of-view head)"
        facts["focal_px"] = f
        inv = joint_bilateral_upsample(np.maximum(raw, 1e-6), guide)
        scale = W / f if f is not None else 1.0
        depth = 1.0 / np.clip(inv * scale, 1e-4, 1e4)
        return depth.astype(np.float32), facts
    up = joint_bilateral_upsample(raw, guide)
    if loaded.output == "metric":
        up = np.maximum(up, 1e-3)
    return up.astype(np.float32), facts


class HFDepthBackend:
    """A transformers depth model as a depth backend (see the module docstring)."""

    def __init__(self, name: str, default_model: str, *, cpu_ok: bool):
        self.name = name
        self.default_model = default_model
        self.cpu_ok = cpu_ok  # reasonable time on a CPU (auto only picks it there if so)
        self._loaded: LoadedDepthModel | None = None

    def available(self) -> tuple[bool, str]:
        missing = hf.missing_ml_modules()
        if missing:
            return False, f"needs the [ml] extra (missing {', '.join(missing)})"
        return True, "transformers installed (weights download on first use)"

    def auto_available(self, *, model: str | None = None, device: str = "auto"):
        """Whether `auto` should pick it: weights already here and a device that runs it in
        reasonable time."""
        ok, why = self.available()
        if not ok:
            return False, why
        ref = model or self.default_model
        if not hf.is_cached(ref, "depth"):
            off = " and offline" if hf.offline() else ""
            return False, f"{ref} weights not in the local cache{off}"
        try:
            dev = hf.resolve_device(device)
        except Exception as e:  # a bad --device is reported when the backend is used
            return False, str(e)
        if dev == "cpu" and not self.cpu_ok:
            return False, f"{ref} is too slow on a CPU (choose it with --depth {self.name})"
        return True, f"{ref} weights cached, {dev}"

    def model_ref(self, model: str | None) -> str:
        return model or self.default_model

    def load(self, model: str | None = None, device: str = "auto") -> LoadedDepthModel:
        ref = self.model_ref(model)
        if self._loaded is None or self._loaded.ref != hf.check_ref(ref, "depth"):
            self._loaded = LoadedDepthModel(ref, device)
        return self._loaded

    def estimate(
        self,
        image: np.ndarray,
        intrinsics: Intrinsics,
        *,
        model: str | None = None,
        device: str = "auto",
        focal_px: float | None = None,
        **_,
    ) -> DepthEstimate:
        """image [H, W, 3] float in [0, 1]; ``focal_px``: a focal length the user gave
        (working pixels)."""
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype.kind != "f":
            raise InputError(f"image must be float [H, W, 3], got {image.dtype} {image.shape}")
        H, W = image.shape[:2]
        if (intrinsics.width, intrinsics.height) != (W, H):
            raise InputError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height}, image is {W}x{H}"
            )
        loaded = self.load(model, device)
        depth, facts = predict(loaded, image, focal_px)
        focal = None
        if loaded.output == "canonical-inverse-depth" and facts.get("focal_source") == "model":
            focal = facts["focal_px"]
        facts["kind"] = loaded.kind
        facts["licence"] = hf.model_facts(loaded.ref, "depth", self.name)["licence"]
        if loaded.kind == "metric":
            facts["scale_source"] = "metric-depth-model"
        return DepthEstimate(depth=depth, kind=loaded.kind, focal_px=focal, info=facts)


def depth_anything_v2() -> HFDepthBackend:
    return HFDepthBackend("depth-anything-v2", hf.DEFAULT_MODELS["depth-anything-v2"], cpu_ok=True)


def depth_pro() -> HFDepthBackend:
    return HFDepthBackend("depth-pro", hf.DEFAULT_MODELS["depth-pro"], cpu_ok=False)
