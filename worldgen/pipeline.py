"""``build()``: the build as a declared list of stages (``STAGE_LIST``), run by
``worldgen.runner`` (timings, progress, verified stage cache, resume), then the bundle written
atomically under the output's lock (``worldgen.atomic``).

Stages (one function each in their own modules; here only the glue that names their values)::

    load (image.load_image, backends, camera.resolve_intrinsics) -> depth (backend.estimate)
      -> ground (ground.fit_ground) -> layers (layers.split_layers, scene.compose_layers)
      -> surround (surround.extend) -> lift (scene.lift_layers) -> colour (lift.solve_colours)
      -> refine (optimize.refine) -> collision (collision.build_collision)
      -> preview (raster.rasterize) -> write (world bundle, atomic)
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, hf, limits
from .atomic import output_lock, recover
from .cache import StageCache
from .camera import Camera, Intrinsics, Pose, resolve_intrinsics, world_from_camera
from .collision import BoundaryRing, CollisionSurface, build_collision
from .config import BuildConfig
from .depth import resolve_backend
from .depth.base import DepthEstimate
from .errors import InputError, OutputError
from .fill import resolve_fill_backend
from .ground import GroundFit, fit_ground
from .image import load_image, resize, save_png, working_size
from .layers import split_layers
from .lift import solve_colours
from .optimize import View, psnr, refine, ssim
from .progress import Reporter
from .raster import rasterize
from .raster import resolve_backend as resolve_raster_backend
from .runner import Stage, Values, run_stages
from .scene import BundleLayer, compose_layers, lift_layers, surroundings_layers
from .splats import Splats, ply_bytes
from .surround import Panorama, extend
from .world import atomic_dir, check_output, validate_manifest


@dataclass
class BuildResult:
    path: Path
    splat_count: int
    timings: dict[str, float]
    backends: dict[str, str]
    notes: list[str] = field(default_factory=list)
    cache_hits: list[str] = field(default_factory=list)
    quality: dict = field(default_factory=dict)
    refine: dict = field(default_factory=dict)
    resumed_from: str | None = None

    def summary(self) -> dict:
        return {
            "output": str(self.path),
            "splats": self.splat_count,
            "timings": self.timings,
            "total_seconds": round(sum(self.timings.values()), 4),
            "backends": self.backends,
            "cache_hits": self.cache_hits,
            "resumed_from": self.resumed_from,
            "quality": self.quality,
            "refine": self.refine,
            "notes": self.notes,
        }


def default_output(image_path: str | Path) -> Path:
    return Path.cwd() / f"{Path(image_path).stem}.world"


def _file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _png_bytes(a: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    if a.dtype != np.uint8:
        a = (np.clip(a, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    Image.fromarray(a).save(buf, format="PNG")
    return buf.getvalue()


def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _splats_to_arrays(s: Splats) -> dict[str, np.ndarray]:
    return {
        "means": s.means.numpy(),
        "quats": s.quats.numpy(),
        "log_scales": s.log_scales.numpy(),
        "logit_opacities": s.logit_opacities.numpy(),
        "sh": s.sh.numpy(),
        "layers": s.layers.numpy(),
    }


def _splats_from_arrays(a: dict[str, np.ndarray]) -> Splats:
    return Splats(**{k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in a.items()})


def build(
    image_path: str | Path,
    out: str | Path | None = None,
    config: BuildConfig | None = None,
    *,
    force: bool = False,
    use_cache: bool = True,
    cache: StageCache | None = None,
    reporter: Reporter | None = None,
    max_splats: int | None = None,
    max_memory: int | None = None,
) -> BuildResult:
    """Build a world bundle from a photo. Raises WorldgenError subclasses on bad input.

    Runs ``STAGE_LIST`` with the stage runner (timings, progress, verified cache, resume),
    then writes the bundle atomically under the output's lock (``worldgen.atomic``).
    ``max_splats``: at most this many splats (coarser lifting, then the most important kept,
    as ``export --max-splats``); ``max_memory``: bytes the build's estimated peak may use
    (``worldgen.limits``; default: refuse only far beyond the memory available here)."""
    config = config or BuildConfig()
    rep = reporter or Reporter()
    out = Path(out) if out is not None else default_output(image_path)
    with output_lock(out):
        restored = recover(out)
        if restored:
            rep.note(restored)
        check_output(out, force)  # fail before any work
        limits = (max_splats, max_memory)
        return _build_locked(image_path, out, config, force, use_cache, cache, rep, limits)


def _build_locked(image_path, out, config, force, use_cache, cache, rep, limits) -> BuildResult:
    cache = cache or StageCache(enabled=use_cache)
    torch.manual_seed(config.seed)
    dcfg = config.depth
    if dcfg.camera_height <= 0:
        raise InputError(f"--camera-height must be positive, got {dcfg.camera_height}")
    if dcfg.depth_map is not None and not Path(dcfg.depth_map).is_file():
        what = "is not a file" if Path(dcfg.depth_map).exists() else "not found"
        raise InputError(f"{dcfg.depth_map}: depth map {what}")
    max_splats, max_memory = limits
    if max_splats is not None and max_splats < 1:
        raise InputError(f"--max-splats must be at least 1, got {max_splats}")
    v: Values = {"image_path": image_path, "config": config, "reporter": rep}
    v["max_splats"] = max_splats
    roots = {k: "" for k in v}  # keys: stages hash what they read

    def check(stage: str, v: Values) -> None:
        if stage == "depth":  # the working size is known, nothing big allocated yet
            v["config"] = _fit_budget(v["config"], v["W"], v["H"], max_splats, max_memory, rep)

    log = run_stages(STAGE_LIST, v, roots, cache, rep, check=check)

    with rep.stage("write"):
        manifest = _final_manifest(v)
        manifest["timings"] = dict(rep.timings)
        validate_manifest(manifest, "world.json (being written)")
        splats, layers, intr = v["splats"], v["layers"], v["intr"]
        try:
            with atomic_dir(out, force) as tmp:
                (tmp / "splats.ply").write_bytes(ply_bytes(splats))
                (tmp / "splat_layers.npy").write_bytes(_npy_bytes(splats.layers.numpy()))
                (tmp / "collision.glb").write_bytes(v["collision_glb"])
                save_png(v["preview"], tmp / "preview.png")
                save_png(v["rgb"], tmp / "source.png")
                for k, layer in enumerate(layers):
                    _write_layer(tmp / "layers" / str(k), layer, intr)
                manifest["timings"] = dict(rep.timings)  # everything up to the final write
                (tmp / "world.json").write_text(json.dumps(manifest, indent=2))
        except OSError as e:  # a full disk, a quota, a folder gone: nothing was replaced
            raise OutputError(
                f"{out}: cannot write the world ({e.strerror or e}); nothing was replaced"
            ) from None
    backends = {
        "depth": v["backend"].name,
        "fill": v["fill_backend"].name,
        "raster": resolve_raster_backend("auto").name,
        "intrinsics": v["choice"].source,
    }
    return BuildResult(
        out,
        len(splats),
        dict(rep.timings),
        backends,
        list(rep.notes),
        log.hits,
        v["quality"],
        _jsonable(v["refine_facts"]),
        log.resumed_from,
    )


# --- the stages -------------------------------------------------------------------------------
# Each reads the named values it declares and returns the ones it makes; cached stages give
# their key's parts (``params``) and how their outputs become arrays + JSON meta and back.


def _load(v: Values) -> dict:
    config, rep = v["config"], v["reporter"]
    dcfg, fcfg = config.depth, config.fill
    img = load_image(v["image_path"])
    W, H = working_size(img.width, img.height, config.image.max_side)
    rgb = resize(img.rgb, W, H)
    backend, reason = resolve_backend(
        dcfg.backend, depth_map=dcfg.depth_map, model=dcfg.model, device=dcfg.device
    )
    fill_backend, fill_reason = resolve_fill_backend(
        fcfg.backend,
        model=fcfg.model,
        device=fcfg.device,
        prompt=fcfg.prompt,
        negative_prompt=fcfg.negative_prompt,
        steps=fcfg.steps,
        guidance=fcfg.guidance,
    )
    models = _model_facts(backend, dcfg, fill_backend)
    choice = resolve_intrinsics(
        img.width,
        img.height,
        W,
        H,
        focal_px=config.camera.focal_px,
        principal=config.camera.principal,
        exif_focal_35mm=img.focal_35mm,
        default_hfov_deg=config.camera.default_hfov_deg,
    )
    for n in img.notes:
        rep.note(n)
    rep.note(f"depth: {backend.name} — {reason}")
    rep.note(f"fill: {fill_backend.name} — {fill_reason}")
    for m in models:
        warning = hf.licence_warning(m)
        if warning:
            rep.note(warning)
    rep.note(f"camera: {choice.source}, hfov {choice.intrinsics.hfov_deg:.1f}°, {W}x{H}")
    return {
        "img": img, "W": W, "H": H, "rgb": rgb, "backend": backend, "reason": reason,
        "fill_backend": fill_backend, "fill_reason": fill_reason, "models": models,
        "choice0": choice,
    }  # fmt: skip


def _load_params(v: Values) -> dict:
    return {
        "image": v["img"].sha256,
        "size": [v["W"], v["H"]],
        "intrinsics": v["choice0"].intrinsics.to_dict(),
        "backends": [v["backend"].name, v["fill_backend"].name],
        "models": [m["id"] for m in v["models"]],
    }


def _depth(v: Values) -> dict:
    config, img, W = v["config"], v["img"], v["W"]
    user_focal = None
    if config.camera.focal_px is not None:  # in working pixels
        user_focal = config.camera.focal_px * W / img.width
    backend = v["backend"]
    opts = _depth_options(backend.name, config.depth, img, user_focal)
    return {"est": backend.estimate(v["rgb"], v["choice0"].intrinsics, **opts)}


def _depth_params(v: Values) -> dict:
    dcfg = v["config"].depth
    sha = _file_sha256(dcfg.depth_map) if dcfg.depth_map else None
    return {"depth": dcfg.__dict__ | {"depth_map": sha}, "focal_px": v["config"].camera.focal_px}


def _depth_encode(out: dict) -> tuple[dict, dict]:
    est = out["est"]
    arrays = {"depth": est.depth}
    if est.labels is not None:
        arrays["labels"] = est.labels
    if est.ground_normal is not None:
        arrays["ground_normal"] = np.asarray(est.ground_normal, np.float64)
    return arrays, {"kind": est.kind, "focal_px": est.focal_px, "info": _jsonable(est.info)}


def _depth_decode(arrays: dict, meta: dict, v: Values) -> dict:
    est = DepthEstimate(
        depth=arrays["depth"],
        kind=meta["kind"],
        labels=arrays.get("labels"),
        focal_px=meta.get("focal_px"),
        ground_normal=arrays.get("ground_normal"),
        info=meta.get("info", {}),
    )
    return {"est": est}


def _ground(v: Values) -> dict:
    config, est, img, W, H = v["config"], v["est"], v["img"], v["W"], v["H"]
    if est.depth.shape != (H, W):
        raise AssertionError(f"depth backend returned {est.depth.shape}, expected {(H, W)}")
    choice = v["choice0"]
    if est.focal_px and config.camera.focal_px is None:
        choice = resolve_intrinsics(
            img.width, img.height, W, H, principal=config.camera.principal,
            model_focal_px=est.focal_px,
        )  # fmt: skip
    intr = choice.intrinsics
    dcfg = config.depth
    est = _usable_depth(est, v["reporter"])
    depth, ground = fit_ground(
        est, intr, camera_height=dcfg.camera_height, seed=config.seed, far=dcfg.sky_distance
    )
    M = world_from_camera(ground.normal)
    return {"choice": choice, "intr": intr, "depth": depth, "ground": ground, "M": M}


MAX_DEPTH_M = 1e5
"""Depth beyond 100 km is unknown (a user map of 1e30 m would put the world's ground there)."""


def _usable_depth(est: DepthEstimate, rep: Reporter) -> DepthEstimate:
    """The estimate with depth beyond ``MAX_DEPTH_M`` unknown (NaN); InputError if no pixel
    has a usable depth (every value NaN, inf, <= 0 or beyond 100 km)."""
    d = est.depth
    with np.errstate(invalid="ignore"):
        far = np.isfinite(d) & (d > MAX_DEPTH_M)
        usable = np.isfinite(d) & (d > 0) & ~far
    if not usable.any():
        raise InputError("depth: no usable value (all unknown, <= 0 or beyond 100 km)")
    if far.any():
        rep.note(f"depth: {int(far.sum())} pixels beyond 100 km treated as unknown")
        est = dataclasses.replace(est, depth=np.where(far, np.nan, d).astype(d.dtype))
    return est


def _ground_params(v: Values) -> dict:
    c = v["config"]
    return {"depth": c.depth.__dict__, "camera": c.camera.__dict__, "seed": c.seed}


def _layers(v: Values) -> dict:
    config, rgb, est, intr, ground = v["config"], v["rgb"], v["est"], v["intr"], v["ground"]
    depth, fill_backend, W, H = v["depth"], v["fill_backend"], v["W"], v["H"]
    split = split_layers(rgb, depth, est.labels, intr, ground, config.layers)
    _give_fill_depth(v)
    margin = 0
    if config.surround.enabled:
        margin = int(round(config.surround.canvas_margin * max(W, H)))
    layers, fill_facts = compose_layers(
        rgb, depth, est.labels, intr, ground, split, fill_backend, margin_px=margin,
        sky_distance=config.depth.sky_distance, seed=config.seed,
    )  # fmt: skip
    return {"photo_layers": layers, "fill_facts": _jsonable(fill_facts)}


def _give_fill_depth(v: Values) -> None:
    """The diffusion fill gives its new content the build's learned depth."""
    fill_backend, backend, dcfg = v["fill_backend"], v["backend"], v["config"].depth
    if getattr(fill_backend, "depth_model", False) is None and hasattr(backend, "load"):
        fill_backend.depth_model = backend.load(dcfg.model, dcfg.device)


def _layers_params(v: Values) -> dict:
    c = v["config"]
    return {
        "layers": c.layers.__dict__, "fill": c.fill.__dict__, "seed": c.seed,
        "margin": c.surround.canvas_margin if c.surround.enabled else 0,
    }  # fmt: skip


def _layers_encode(out: dict) -> tuple[dict, dict]:
    arrays, meta = _scene_to_arrays(out["photo_layers"], None)
    return arrays, meta | {"fill_facts": out["fill_facts"]}


def _layers_decode(arrays: dict, meta: dict, v: Values) -> dict:
    layers, _ = _scene_from_arrays(arrays, meta)
    return {"photo_layers": layers, "fill_facts": meta.get("fill_facts", {})}


def _surround(v: Values) -> dict:
    """The world all around the spawn (worldgen.surround): one call, its layers appended."""
    config, dcfg = v["config"], v["config"].depth
    _give_fill_depth(v)
    pano = extend(
        v["rgb"], v["depth"], v["est"].labels, v["intr"], v["ground"], v["M"], config.surround,
        sky_distance=dcfg.sky_distance, fill=v["fill_backend"], seed=config.seed,
    )  # fmt: skip
    extra = surroundings_layers(pano, dcfg.sky_distance * config.surround.sky_radius_factor)
    return {"layers": v["photo_layers"] + extra, "pano": pano}


def _surround_params(v: Values) -> dict:
    c = v["config"]
    return {"surround": c.surround.__dict__, "fill": c.fill.__dict__, "seed": c.seed}


def _surround_encode(out: dict) -> tuple[dict, dict]:
    n = len(out["layers"]) - sum(L.projection == "equirectangular" for L in out["layers"])
    arrays, meta = _scene_to_arrays(out["layers"][n:], out["pano"])
    return arrays, meta


def _surround_decode(arrays: dict, meta: dict, v: Values) -> dict:
    extra, pano = _scene_from_arrays(arrays, meta)
    return {"layers": v["photo_layers"] + extra, "pano": pano}


def _no_surround(v: Values) -> dict:
    return {"layers": v["photo_layers"], "pano": None}


def _lift(v: Values) -> dict:
    v["reporter"].note("layers: " + ", ".join(layer.name for layer in v["layers"]))
    return {"splats": lift_layers(v["layers"], v["intr"], v["M"], v["config"], v["pano"])}


def _lift_params(v: Values) -> dict:
    return {"lift": v["config"].lift.__dict__}


def _splats_encode(out: dict) -> tuple[dict, dict]:
    return _splats_to_arrays(out["splats"]), {}


def _splats_decode(arrays: dict, meta: dict, v: Values) -> dict:
    v["reporter"].note("layers: " + ", ".join(layer.name for layer in v["layers"]))
    return {"splats": _splats_from_arrays(arrays)}


def _colour(v: Values) -> dict:
    c = v["config"]
    return {"splats": solve_colours(v["splats"], v["intr"], v["rgb"], c.lift.colour_solve_iters)}


def _colour_params(v: Values) -> dict:
    return {"iters": v["config"].lift.colour_solve_iters}


def _refine(v: Values) -> dict:
    splats, layers, rgb, intr = v["splats"], v["layers"], v["rgb"], v["intr"]
    # the surround's equirect layers lie outside every refine view (the sky dome only behind
    # the photo's own sky): they are kept as synthesised, not refined
    still = torch.from_numpy(
        np.isin(
            splats.layers.numpy(),
            [k for k, L in enumerate(layers) if L.projection == "equirectangular"],
        )
    )
    refined, facts = refine(
        splats.index(~still), _refine_views(rgb, intr, layers), v["config"].refine,
        measure_after=False,
    )  # fmt: skip
    splats = Splats.cat([refined, splats.index(still)])
    facts["splats"] = len(splats)
    _refine_note(v, facts)
    return {"splats": splats, "refine_facts": _jsonable(facts)}


def _refine_note(v: Values, f: dict) -> None:
    v["reporter"].note(
        f"refine: {f['iters']} steps, loss {f['loss_first']:.4f} -> "
        f"{f['loss_last']:.4f}, {f['pruned']} splats pruned"
    )


def _refine_params(v: Values) -> dict:
    return {"refine": v["config"].refine.__dict__}


def _refine_encode(out: dict) -> tuple[dict, dict]:
    return _splats_to_arrays(out["splats"]), {"facts": out["refine_facts"]}


def _refine_decode(arrays: dict, meta: dict, v: Values) -> dict:
    _refine_note(v, meta["facts"])
    return {"splats": _splats_from_arrays(arrays), "refine_facts": meta["facts"]}


def _fit_budget(config, W: int, H: int, max_splats, max_memory, rep) -> BuildConfig:
    """The config with lifting coarse enough for ``max_splats`` (stride up, surround grids
    down), then the memory estimate checked against ``max_memory`` (``worldgen.limits``)."""
    est = limits.estimate(W, H, config)
    if max_splats is not None and est.splats > max_splats:
        stride = config.lift.stride
        sw, kw = config.surround.width, config.surround.sky_width
        while limits.estimate(W, H, config).splats > max_splats and (stride < 64 or sw > 16):
            stride = min(64, stride + 1)
            sw, kw = max(16, int(sw * 0.85)), max(16, int(kw * 0.85))
            config = config.replace(
                lift={"stride": stride}, surround={"width": sw, "sky_width": kw}
            )
        rep.note(
            f"--max-splats {max_splats:,}: lift stride {stride}, surround {sw} px, sky {kw} px"
        )
        est = limits.estimate(W, H, config)
    limits.check_memory(est, max_memory)
    return config


def _budget(v: Values) -> dict:
    """At most ``max_splats``: the most important kept (opacity x volume, as the exporters)."""
    splats, n = v["splats"], v["max_splats"]
    order = torch.argsort(limits.importance(splats), descending=True, stable=True)[:n]
    v["reporter"].note(f"--max-splats: kept the {n:,} most important of {len(splats):,} splats")
    return {"splats": splats.index(torch.sort(order).values)}


def _collision(v: Values) -> dict:
    config, layers, pano = v["config"], v["layers"], v["pano"]
    surfaces = [
        CollisionSurface(
            L.depth,
            L.labels,
            config.collision.min_wall_height
            if L.kind in ("background", "scene")
            else config.collision.min_object_height,
            L.intrinsics,
        )
        for L in layers
        if L.projection == "perspective" and L.kind != "sky"
    ]
    ring = None
    if pano is not None:
        ring = BoundaryRing(*_ring_polygon(pano, config.collision))
    coll = build_collision(
        surfaces, v["intr"], v["ground"], v["M"], config.collision, ring=ring,
        max_distance=config.depth.max_depth,
    )  # fmt: skip
    return {"bounds": coll.bounds, "collision_glb": coll.glb_bytes()}


def _collision_params(v: Values) -> dict:
    c = v["config"]
    return {"collision": c.collision.__dict__, "max_depth": c.depth.max_depth}


def _preview(v: Values) -> dict:
    splats, intr, W, H, rgb = v["splats"], v["intr"], v["W"], v["H"], v["rgb"]
    preview_t = rasterize(splats, Camera(intr, Pose.identity()), W, H).rgb
    rgb_t = torch.from_numpy(np.ascontiguousarray(rgb, np.float32))
    quality = {
        "source_psnr_db": round(psnr(preview_t, rgb_t), 3),
        "source_ssim": round(float(ssim(preview_t, rgb_t)), 4),
        "width": W,
        "height": H,
    }
    rep = v["reporter"]
    rep.note(f"source view: {quality['source_psnr_db']:.2f} dB PSNR, SSIM {quality['source_ssim']}")
    facts = dict(v["refine_facts"])
    if "source_psnr_before" in facts:  # the preview is the refined source view
        facts["source_psnr_after"] = psnr(preview_t, rgb_t)
    return {"preview": preview_t.numpy(), "quality": quality, "refine_facts": facts}


STAGE_LIST: list[Stage] = [
    Stage("load", ("image_path", "config", "reporter"),
          ("img", "W", "H", "rgb", "backend", "reason", "fill_backend", "fill_reason", "models",
           "choice0"), _load, _load_params),
    Stage("depth", ("img", "W", "rgb", "backend", "choice0", "config"), ("est",), _depth,
          _depth_params, _depth_encode, _depth_decode),
    Stage("ground", ("est", "img", "W", "H", "choice0", "config"),
          ("choice", "intr", "depth", "ground", "M"), _ground, _ground_params),
    Stage("layers", ("rgb", "depth", "est", "intr", "ground", "fill_backend", "backend", "W",
                     "H", "config"),
          ("photo_layers", "fill_facts"), _layers, _layers_params, _layers_encode,
          _layers_decode),
    Stage("surround", ("photo_layers", "rgb", "depth", "est", "intr", "ground", "M",
                       "fill_backend", "backend", "config"),
          ("layers", "pano"), _surround, _surround_params, _surround_encode, _surround_decode,
          when=lambda v: v["config"].surround.enabled, skipped=_no_surround),
    Stage("lift", ("layers", "intr", "M", "pano", "config", "reporter"), ("splats",), _lift,
          _lift_params, _splats_encode, _splats_decode),
    Stage("colour", ("splats", "intr", "rgb", "config"), ("splats",), _colour, _colour_params,
          _splats_encode, lambda a, m, v: {"splats": _splats_from_arrays(a)}),
    Stage("refine", ("splats", "layers", "rgb", "intr", "config", "reporter"),
          ("splats", "refine_facts"), _refine, _refine_params, _refine_encode, _refine_decode,
          when=lambda v: v["config"].refine.iters > 0,
          skipped=lambda v: {"refine_facts": {"iters": 0}}),
    Stage("budget", ("splats", "max_splats", "reporter"), ("splats",), _budget,
          lambda v: {"n": v["max_splats"]},
          when=lambda v: v["max_splats"] is not None and len(v["splats"]) > v["max_splats"]),
    Stage("collision", ("layers", "pano", "intr", "ground", "M", "config"),
          ("bounds", "collision_glb"), _collision, _collision_params),
    Stage("preview", ("splats", "intr", "W", "H", "rgb", "refine_facts", "reporter"),
          ("preview", "quality", "refine_facts"), _preview),
]  # fmt: skip
"""The build's stages in order (``worldgen.runner``); ``write`` follows them in ``build``."""

STAGES = tuple(s.name for s in STAGE_LIST) + ("write",)


def _final_manifest(v: Values) -> dict:
    config, splats, layers, pano = v["config"], v["splats"], v["layers"], v["pano"]
    manifest = _manifest(
        v["img"], v["intr"], v["choice"].source, v["M"], v["ground"], splats, v["est"],
        v["backend"].name, v["reason"], config,
    )  # fmt: skip
    manifest["models"] = v["models"]
    manifest["fill"] = {
        "backend": v["fill_backend"].name,
        "reason": v["fill_reason"],
        "layers": {k: _fill_summary(x) for k, x in v["fill_facts"].items()},
    }
    counts = np.bincount(splats.layers.numpy(), minlength=len(layers))
    manifest["layers"] = [
        {
            "id": k,
            "name": layer.name,
            "kind": layer.kind,
            "projection": layer.projection,
            "path": f"layers/{k}",
            "splat_count": int(counts[k]),
        }
        for k, layer in enumerate(layers)
    ]
    if pano is not None:
        manifest["outpaint"] = _jsonable(pano.info)
    b = v["bounds"]
    manifest["bounds"] = {"min": b[0].tolist(), "max": b[1].tolist()}
    manifest["refine"] = _jsonable(v["refine_facts"])
    manifest["quality"] = v["quality"]
    return manifest


def _write_layer(d: Path, layer: BundleLayer, intr: Intrinsics) -> None:
    d.mkdir(parents=True)
    (d / "rgb.png").write_bytes(_png_bytes(layer.rgb))
    (d / "depth.npy").write_bytes(_npy_bytes(layer.depth.astype(np.float32)))
    (d / "alpha.png").write_bytes(_png_bytes(layer.alpha))
    if layer.labels is not None:
        (d / "labels.png").write_bytes(_png_bytes(layer.labels))
    if layer.projection == "perspective":
        li = layer.intrinsics or intr
        (d / "intrinsics.json").write_text(json.dumps(li.to_dict(), indent=2))
    else:
        h, w = layer.depth.shape
        proj = {
            "type": "equirectangular",
            "frame": "world",
            "width": w,
            "height": h,
            "longitude_deg": [-180.0, 180.0],
            "latitude_deg": [90.0, -90.0],
            "direction": "(sin lon cos lat, sin lat, -cos lon cos lat)",
            "depth": "distance along the ray, metres",
        }
        (d / "projection.json").write_text(json.dumps(proj, indent=2))


_LAYER_FIELDS = ("rgb", "depth", "alpha", "labels")
_PANO_FIELDS = ("rgb", "distance", "labels", "lift", "sky_rgb", "ring", "covered")


def _scene_to_arrays(layers: list[BundleLayer], pano) -> tuple[dict, dict]:
    arrays, meta = {}, {"layers": [], "pano": None}
    for k, layer in enumerate(layers):
        for f in _LAYER_FIELDS:
            v = getattr(layer, f)
            if v is not None:
                arrays[f"l{k}_{f}"] = v
        li = layer.intrinsics.to_dict() if layer.intrinsics is not None else None
        meta["layers"].append([layer.name, layer.kind, layer.projection, li])
    if pano is not None:
        for f in _PANO_FIELDS:
            v = getattr(pano, f)
            if v is not None:
                arrays[f"p_{f}"] = v
        meta["pano"] = _jsonable(pano.info)
    return arrays, meta


def _scene_from_arrays(arrays: dict, meta: dict):
    layers = [
        BundleLayer(
            name,
            kind,
            proj,
            *(arrays.get(f"l{k}_{f}") for f in _LAYER_FIELDS),
            Intrinsics.from_dict(li) if li else None,
        )
        for k, (name, kind, proj, li) in enumerate(meta["layers"])
    ]
    pano = None
    if meta["pano"] is not None:
        pano = Panorama(*(arrays.get(f"p_{f}") for f in _PANO_FIELDS), info=meta["pano"])
    return layers, pano


def _ring_polygon(pano, ccfg) -> tuple[np.ndarray, np.ndarray]:
    """The world's edge: just inside the wall ring where the world extends, close behind the
    spawn where it does not (nothing is known there)."""
    from .collision import BEHIND_MARGIN

    Wp = len(pano.ring)
    lon = -np.pi + (np.arange(Wp) + 0.5) * 2 * np.pi / Wp
    radius = np.where(pano.covered, 0.95 * pano.ring, BEHIND_MARGIN)
    step = max(1, Wp // 128)
    return lon[::step], radius[::step]


def _model_facts(depth_backend, dcfg, fill_backend) -> list[dict]:
    """world.json's ``models``: id, source, licence and size of every learned model used."""
    out = []
    if hasattr(depth_backend, "model_ref"):
        ref = depth_backend.model_ref(dcfg.model)
        out.append(hf.model_facts(hf.check_ref(ref, "depth"), "depth", depth_backend.name))
    ref = getattr(fill_backend, "model", None)
    if ref:
        out.append(hf.model_facts(hf.check_ref(ref, "inpaint"), "inpaint", fill_backend.name))
    return out


def _fill_summary(facts: dict) -> dict:
    """The part of a layer's fill facts world.json keeps: backend, hole size, depth method."""
    keep = ("backend", "model", "hole_px", "crops", "colour_method", "depth")
    return {k: facts[k] for k in keep if k in facts}


def _depth_options(name: str, dcfg, img, user_focal: float | None = None) -> dict:
    """The options each depth backend takes from the depth config."""
    if name == "file":
        return {"depth_map": dcfg.depth_map, "orig_size": (img.width, img.height)}
    if name == "popup":
        return {
            "camera_height": dcfg.camera_height,
            "sky_distance": dcfg.sky_distance,
            "max_depth": dcfg.max_depth,
            "n_segments": dcfg.popup_segments,
        }
    if name in ("depth-anything-v2", "depth-pro"):
        return {"model": dcfg.model, "device": dcfg.device, "focal_px": user_focal}
    return {}


def _jsonable(x):
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, np.ndarray):
        return x.tolist()
    return x


def _refine_views(rgb: np.ndarray, intr: Intrinsics, layers) -> list[View]:
    """The views refinement fits: the photo from the source camera (all splats), and each
    perspective layer's image (with what was synthesised) where the layer has content, seen
    from the source camera through the layer's own canvas, rendering that layer's splats."""
    views = [
        View(torch.from_numpy(np.ascontiguousarray(rgb, np.float32)), Camera(intr, Pose.identity()))
    ]
    for k, L in enumerate(layers):
        if L.projection != "perspective" or L.kind == "sky":
            continue
        mask = torch.from_numpy(((L.alpha > 0.5) & np.isfinite(L.depth)).astype(np.float32))
        if float(mask.sum()) < 1:
            continue
        li = L.intrinsics or intr
        views.append(
            View(
                torch.from_numpy(np.ascontiguousarray(L.rgb, np.float32)),
                Camera(li, Pose.identity()),
                mask=mask,
                layers=(k,),
            )
        )
    return views


def _manifest(
    img,
    intr: Intrinsics,
    intr_source: str,
    M: np.ndarray,
    ground: GroundFit,
    splats: Splats,
    est: DepthEstimate,
    backend: str,
    reason: str,
    config: BuildConfig,
) -> dict:
    h = float(ground.height)
    return {
        "format": "worldgen.world",
        "version": 1,
        "generator": {
            "package": "worldgen",
            "version": __version__,
            "python": platform.python_version(),
            "torch": torch.__version__,
            "numpy": np.__version__,
        },
        "source": {
            "path": str(img.path),
            "sha256": img.sha256,
            "width": img.width,
            "height": img.height,
            "format": img.format,
            "exif_orientation": img.exif_orientation,
        },
        "camera": {"intrinsics": intr.to_dict(), "intrinsics_source": intr_source},
        "world_from_camera": M.tolist(),
        "ground": ground.to_dict(),
        # the walker stands on the ground below the source camera, facing the photo (-Z)
        "spawn": {"position": [0.0, -h, 0.0], "yaw_deg": 0.0, "eye_height": h},
        "bounds": {"min": [0.0, 0.0, 0.0], "max": [0.0, 0.0, 0.0]},
        "splats": {
            "file": "splats.ply",
            "count": len(splats),
            "sh_degree": splats.sh_degree,
            "frame": "source-camera-opencv",
            "layers_file": "splat_layers.npy",
        },
        "layers": [
            {"id": 0, "name": "scene", "path": "layers/0", "splat_count": len(splats)},
        ],
        "depth": {
            "backend": backend,
            "reason": reason,
            "kind": est.kind,
            "info": _jsonable(est.info),
        },
        "config": config.to_dict(),
        "seed": config.seed,
        "models": [],
        "timings": {},
        "files": {
            "collision": "collision.glb",
            "preview": "preview.png",
            "source": "source.png",
        },
    }
