"""``diffusion`` fill: Stable Diffusion inpainting via diffusers (the ``[ml]`` extra).

Any ``AutoPipelineForInpainting`` checkpoint (hub id or local folder, ``--inpaint-model``;
default ``stable-diffusion-v1-5/stable-diffusion-inpainting``), safetensors only. Per fill:

* **crops**: the mask's connected components (grown by ``context`` px so near ones merge) each
  get a square crop centred on them with as much context again around the hole; a component
  larger than the image's short side is covered by overlapping square tiles, filled in turn
  (each sees the previous ones' result). Each crop is resized to the model's native resolution
  (``unet.sample_size * vae_scale_factor``: 512 for SD 1.5/2, 1024 for SDXL), inpainted with
  ``prompt`` / ``negative_prompt``, ``steps``, ``guidance`` and a ``torch.Generator`` seeded
  with ``seed`` + crop index (deterministic), and resized back.
* **blend**: only mask pixels change (pixels outside the mask are returned bit-exact). The
  VAE shifts colours slightly, so the colour difference between the photo and the generated
  crop on a ring just outside the hole is carried into the hole (normalised Gaussian
  convolution), fading with the distance from the hole's edge: a feathered, seamless join.
* **depth** of the new content: with a learned depth model (``depth_model``, the build's
  ``depth-anything-v2`` / ``depth-pro``), the model runs on the filled crop and its inverse
  depth is aligned to the known neighbouring depth by a robust (iteratively trimmed) least-
  squares scale and shift in inverse depth; without one, or where the alignment is ill-posed,
  the classical fill's depth (``classical.fill_depth``: ground plane + harmonic disparity).
  ``info["depth"]["method"]`` says which.
"""

from __future__ import annotations

import inspect
import math
import re
import time

import numpy as np
from scipy import ndimage

from .. import hf
from ..errors import ModelError
from .base import FillResult
from .classical import _validate, fill_depth

DEFAULT_NEGATIVE = "blurry, low quality, text, watermark, frame, border, people"


def _version(v: str) -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", v)
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


class LoadedInpaint:
    """A loaded diffusers inpainting pipeline."""

    def __init__(self, ref: str, device: str):
        hf.require_ml("the diffusion fill")
        ref = hf.check_ref(ref, "inpaint")
        self.ref, self.device = ref, hf.resolve_device(device)
        if hf.is_local_ref(ref):
            from pathlib import Path

            if not (Path(ref) / "model_index.json").is_file():
                what = "a transformers model" if (Path(ref) / "config.json").is_file() else "empty"
                raise ModelError(
                    f"{ref}: not a diffusers inpainting pipeline (no model_index.json; {what})"
                )
        import diffusers
        import torch
        from diffusers import AutoPipelineForInpainting, DiffusionPipeline

        self.dtype = torch.float16 if self.device == "cuda" else torch.float32
        # diffusers renamed torch_dtype to dtype (0.36+); older releases know only torch_dtype
        new = "dtype" in inspect.signature(DiffusionPipeline.from_pretrained).parameters or (
            _version(diffusers.__version__) >= (0, 36)
        )
        dtype_kw = {"dtype" if new else "torch_dtype": self.dtype}
        try:
            pipe = AutoPipelineForInpainting.from_pretrained(
                ref, use_safetensors=True, **dtype_kw, **hf.load_kwargs()
            )
            pipe = pipe.to(self.device)
        except Exception as e:
            raise hf.load_error(ref, "inpaint", e, self.device) from None
        pipe.set_progress_bar_config(disable=True)
        self.pipe = pipe
        self.native = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)


def _boxes(mask: np.ndarray, context: int, side_max: int) -> list[tuple[int, int, int, int]]:
    """Square crops (y0, x0, side) covering every mask component with context around it."""
    H, W = mask.shape
    grown = ndimage.binary_dilation(mask, iterations=max(1, context // 2))
    lab, n = ndimage.label(grown)
    boxes = []
    for sl in ndimage.find_objects(lab):
        if sl is None:
            continue
        y0, y1, x0, x1 = sl[0].start, sl[0].stop, sl[1].start, sl[1].stop
        bh, bw = y1 - y0, x1 - x0
        side = min(max(bh, bw) + 2 * context, side_max)
        tiles_y = 1 if bh + 2 * context <= side else math.ceil((bh - side) / (0.75 * side)) + 1
        tiles_x = 1 if bw + 2 * context <= side else math.ceil((bw - side) / (0.75 * side)) + 1
        for ty in range(tiles_y):
            for tx in range(tiles_x):
                cy = (
                    (y0 + y1) / 2
                    if tiles_y == 1
                    else y0 + side / 2 + ty * (bh - side) / (tiles_y - 1)
                )
                cx = (
                    (x0 + x1) / 2
                    if tiles_x == 1
                    else x0 + side / 2 + tx * (bw - side) / (tiles_x - 1)
                )
                yy = int(np.clip(round(cy - side / 2), 0, H - side))
                xx = int(np.clip(round(cx - side / 2), 0, W - side))
                boxes.append((yy, xx, side))
    return boxes


def _resize(a: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    from PIL import Image

    w, h = (size, size) if isinstance(size, int) else size
    im = Image.fromarray((np.clip(a, 0, 1) * 255 + 0.5).astype(np.uint8))
    return np.asarray(im.resize((w, h), Image.LANCZOS), dtype=np.float32) / 255.0


def feathered_correction(
    gen: np.ndarray,  # [h, w, 3] generated crop
    orig: np.ndarray,  # [h, w, 3] photo crop (valid outside `hole`)
    hole: np.ndarray,  # [h, w] bool
    feather: float,
) -> np.ndarray:
    """The colour offset to add to ``gen`` inside ``hole`` so it joins the photo seamlessly:
    the mean photo-minus-generated difference on a ring outside the hole, spread inwards by a
    normalised Gaussian convolution and faded out with the distance from the hole's edge."""
    ring = ndimage.binary_dilation(hole, iterations=3) & ~hole
    if not ring.any():
        return np.zeros_like(gen)
    diff = np.where(ring[..., None], orig - gen, 0.0)
    s = max(feather, 1.0)
    num = np.stack([ndimage.gaussian_filter(diff[..., c], s) for c in range(3)], -1)
    den = ndimage.gaussian_filter(ring.astype(np.float32), s)[..., None]
    corr = num / np.maximum(den, 1e-6)
    dist = ndimage.distance_transform_edt(hole)
    fade = np.exp(-dist / s)[..., None]
    return np.where(hole[..., None], corr * fade, 0.0).astype(np.float32)


def align_inverse_depth(
    pred_inv: np.ndarray,  # [N] predicted inverse depth (or disparity) at known pixels
    known_inv: np.ndarray,  # [N] known inverse depth there
    iters: int = 3,
) -> tuple[float, float, float] | None:
    """Robust scale and shift with known ~= s * pred + t: least squares, then twice refit on
    the 80 % smallest residuals. Returns (s, t, median relative residual) or None when
    ill-posed (fewer than 20 pixels, no spread, or s <= 0)."""
    if len(pred_inv) < 20 or np.ptp(pred_inv) < 1e-9:
        return None
    keep = np.ones(len(pred_inv), bool)
    s = t = 0.0
    for _ in range(iters):
        A = np.stack([pred_inv[keep], np.ones(int(keep.sum()))], 1)
        s, t = np.linalg.lstsq(A, known_inv[keep], rcond=None)[0]
        res = np.abs(s * pred_inv + t - known_inv)
        keep = res <= np.percentile(res, 80)
    if not (s > 0 and np.isfinite(s) and np.isfinite(t)):
        return None
    rel = float(np.median(np.abs(s * pred_inv + t - known_inv) / np.maximum(known_inv, 1e-9)))
    return float(s), float(t), rel


def run_inpaint(
    L: LoadedInpaint,
    image: np.ndarray,  # [h, w, 3] float in [0, 1]
    mask: np.ndarray,  # [h, w] bool, True = generate
    prompt: str | None,
    negative: str | None,
    steps: int,
    guidance: float,
    seed: int,
) -> np.ndarray:
    """One diffusers inpainting call at the model's native square resolution; returns the
    result [h, w, 3] float32 resized back to the input's size."""
    import torch
    from PIL import Image

    h, w = mask.shape
    n = L.native
    img = Image.fromarray((np.clip(image, 0, 1) * 255 + 0.5).astype(np.uint8))
    if (w, h) != (n, n):
        img = img.resize((n, n), Image.LANCZOS)
    mk = Image.fromarray(mask.astype(np.uint8) * 255).resize((n, n), Image.NEAREST)
    gen = torch.Generator("cpu").manual_seed(int(seed))
    try:
        out = L.pipe(
            prompt=prompt or "",
            negative_prompt=negative or None,
            image=img,
            mask_image=mk,
            height=n,
            width=n,
            num_inference_steps=steps,
            guidance_scale=guidance,
            strength=1.0,
            generator=gen,
            output_type="np",
        ).images[0]
    except Exception as e:
        if hf.is_oom(e):
            raise hf.oom_error(L.ref, L.device) from None
        raise
    out = np.clip(np.asarray(out, np.float32), 0, 1)
    if out.shape[:2] != (h, w):
        im = Image.fromarray((out * 255 + 0.5).astype(np.uint8)).resize((w, h), Image.LANCZOS)
        out = np.asarray(im, np.float32) / 255.0
    return out


class DiffusionFill:
    """Stable Diffusion inpainting as a fill backend (see the module docstring)."""

    name = "diffusion"

    def __init__(
        self,
        model: str | None = None,
        device: str = "auto",
        *,
        prompt: str | None = None,
        negative_prompt: str | None = None,
        steps: int = 30,
        guidance: float = 7.5,
        context: int = 32,
        depth_model=None,
    ):
        self.model = model or hf.DEFAULT_MODELS["diffusion"]
        self.device = device
        self.prompt = prompt or ""
        self.negative_prompt = DEFAULT_NEGATIVE if negative_prompt is None else negative_prompt
        self.steps, self.guidance, self.context = int(steps), float(guidance), int(context)
        #: a loaded learned depth model (depth.hf.LoadedDepthModel) for the new content, or None
        self.depth_model = depth_model
        self._loaded: LoadedInpaint | None = None

    def available(self) -> tuple[bool, str]:
        missing = hf.missing_ml_modules()
        if missing:
            return False, f"needs the [ml] extra (missing {', '.join(missing)})"
        return True, "diffusers installed (weights download on first use)"

    def auto_available(self, device: str = "auto") -> tuple[bool, str]:
        ok, why = self.available()
        if not ok:
            return False, why
        if not hf.is_cached(self.model, "inpaint"):
            off = " and offline" if hf.offline() else ""
            return False, f"{self.model} weights not in the local cache{off}"
        try:
            dev = hf.resolve_device(device)
        except Exception as e:
            return False, str(e)
        if dev == "cpu":
            return False, "diffusion is too slow on a CPU (choose it with --inpaint diffusion)"
        return True, f"{self.model} weights cached, {dev}"

    def load(self) -> LoadedInpaint:
        if self._loaded is None:
            self._loaded = LoadedInpaint(self.model, self.device)
        return self._loaded

    def _inpaint_crop(self, crop, hole, seed: int) -> np.ndarray:
        model_mask = ndimage.binary_dilation(hole, iterations=max(1, crop.shape[0] // 64))
        out = run_inpaint(
            self.load(), crop, model_mask, self.prompt, self.negative_prompt, self.steps,
            self.guidance, seed,
        )  # fmt: skip
        return out  # [side, side, 3]

    def fill(
        self,
        image: np.ndarray,
        mask: np.ndarray,
        *,
        depth: np.ndarray | None = None,
        labels: np.ndarray | None = None,
        intrinsics=None,
        ground=None,
        seed: int = 0,
        **options,
    ) -> FillResult:
        t0 = time.perf_counter()
        image, mask, depth, labels = _validate(image, mask, depth, labels, intrinsics, ground)
        H, W = mask.shape
        rgb = image.astype(np.float32, copy=True)
        n_hole = int(mask.sum())
        info: dict = {
            "backend": self.name,
            "model": self.model,
            "hole_px": n_hole,
            "hole_fraction": n_hole / (H * W),
        }
        if n_hole == 0:
            d = np.full((H, W), np.nan, np.float32) if depth is None else depth.astype(np.float32)
            return FillResult(rgb, d, mask.copy(), info | {"crops": 0})
        L = self.load()
        info.update(native_px=L.native, device=L.device, steps=self.steps, guidance=self.guidance)
        info["prompt"] = self.prompt
        todo = mask.copy()
        side_max = max(8, min(H, W))
        boxes = _boxes(mask, self.context, side_max)
        for k, (y0, x0, side) in enumerate(boxes):
            sl = np.s_[y0 : y0 + side, x0 : x0 + side]
            hole = todo[sl]
            if not hole.any():
                continue
            crop = np.where(hole[..., None], 0.0, rgb[sl])
            gen = self._inpaint_crop(crop, hole, seed + k)
            gen = gen + feathered_correction(gen, rgb[sl], hole, self.context / 4)
            sub = rgb[sl]
            sub[hole] = np.clip(gen[hole], 0.0, 1.0)
            todo[sl] &= ~hole
        info["crops"] = len(boxes)
        out_depth = np.full((H, W), np.nan, np.float32)
        if depth is not None:
            out_depth, info["depth"] = self._depth(rgb, mask, depth, labels, intrinsics, ground)
        info["timings"] = {"total_s": time.perf_counter() - t0}
        return FillResult(rgb, out_depth, mask.copy(), info)

    def _depth(self, rgb, mask, depth, labels, intrinsics, ground) -> tuple[np.ndarray, dict]:
        """Depth of the filled pixels: learned and aligned, or the classical fill's."""
        fallback = "classical fill_depth (ground plane + harmonic disparity)"
        why = "no learned depth model in this build"
        if self.depth_model is not None:
            from ..depth.hf import predict

            known = ~mask & np.isfinite(depth) & (depth > 0)
            # known neighbours: a band around the hole, as wide as the crops' context
            near = ndimage.binary_dilation(mask, iterations=self.context) & known
            pred, _ = predict(self.depth_model, rgb)
            inv = pred if self.depth_model.kind == "disparity" else 1.0 / np.maximum(pred, 1e-6)
            fit = align_inverse_depth(inv[near].astype(np.float64), 1.0 / depth[near])
            if fit is not None:
                s, t, rel = fit
                new_inv = s * inv[mask] + t
                if np.all(np.isfinite(new_inv)) and (new_inv > 0).mean() > 0.99:
                    out = depth.astype(np.float32, copy=True)
                    lo = 1.0 / np.nanmax(np.where(known, depth, np.nan)) / 4.0
                    out[mask] = 1.0 / np.maximum(new_inv, lo)
                    return out, {
                        "method": "learned depth of the filled image, scale+shift aligned in "
                        "inverse depth to the known neighbours",
                        "model": self.depth_model.ref,
                        "scale": s,
                        "shift": t,
                        "median_relative_residual": rel,
                        "neighbour_px": int(near.sum()),
                    }
                why = "the aligned learned depth went behind the camera"
            else:
                why = "too few known neighbours to align the learned depth"
        d, _lab, dinfo = fill_depth(mask, depth, labels, intrinsics, ground)
        return d, {"method": fallback, "why": why, **dinfo}
