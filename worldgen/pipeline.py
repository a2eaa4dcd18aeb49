"""``build()``: orchestrates the stages, times them, caches their outputs, writes the bundle.

Stages (one function each, in their own modules)::

    image.load_image -> camera.resolve_intrinsics -> depth backend .estimate
      -> ground.fit_ground -> lift.lift + lift.solve_colours -> collision.build_collision
      -> raster.rasterize (preview) -> world bundle (atomic)
"""

from __future__ import annotations

import hashlib
import io
import json
import platform
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from . import __version__, hf
from .cache import StageCache, stage_key
from .camera import Camera, Intrinsics, Pose, resolve_intrinsics, world_from_camera
from .collision import BoundaryRing, CollisionSurface, build_collision
from .config import BuildConfig
from .depth import resolve_backend
from .depth.base import DepthEstimate
from .errors import InputError
from .fill import resolve_fill_backend
from .ground import GroundFit, fit_ground
from .image import load_image, resize, save_png, working_size
from .layers import split_layers
from .lift import solve_colours
from .optimize import View, psnr, refine, ssim
from .progress import Reporter
from .raster import rasterize
from .raster import resolve_backend as resolve_raster_backend
from .scene import BundleLayer, compose_layers, lift_layers, surroundings_layers
from .splats import Splats, ply_bytes
from .surround import Panorama, extend
from .world import atomic_dir, check_output, validate_manifest

STAGES = (
    "load", "depth", "ground", "layers", "lift", "colour", "refine", "collision", "preview",
    "write",
)  # fmt: skip


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

    def summary(self) -> dict:
        return {
            "output": str(self.path),
            "splats": self.splat_count,
            "timings": self.timings,
            "total_seconds": round(sum(self.timings.values()), 4),
            "backends": self.backends,
            "cache_hits": self.cache_hits,
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
) -> BuildResult:
    """Build a world bundle from a photo. Raises WorldgenError subclasses on bad input."""
    config = config or BuildConfig()
    rep = reporter or Reporter()
    out = Path(out) if out is not None else default_output(image_path)
    check_output(out, force)  # fail before any work
    cache = cache or StageCache(enabled=use_cache)
    hits: list[str] = []
    torch.manual_seed(config.seed)
    dcfg = config.depth
    if dcfg.camera_height <= 0:
        raise InputError(f"--camera-height must be positive, got {dcfg.camera_height}")
    if dcfg.depth_map is not None and not Path(dcfg.depth_map).is_file():
        what = "is not a file" if Path(dcfg.depth_map).exists() else "not found"
        raise InputError(f"{dcfg.depth_map}: depth map {what}")

    with rep.stage("load"):
        img = load_image(image_path)
        W, H = working_size(img.width, img.height, config.image.max_side)
        rgb = resize(img.rgb, W, H)
        backend, reason = resolve_backend(
            dcfg.backend, depth_map=dcfg.depth_map, model=dcfg.model, device=dcfg.device
        )
        fcfg = config.fill
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
    rep.note(f"depth: {backend.name} — {reason}")
    rep.note(f"fill: {fill_backend.name} — {fill_reason}")
    for m in models:
        warning = hf.licence_warning(m)
        if warning:
            rep.note(warning)
    rep.note(f"camera: {choice.source}, hfov {choice.intrinsics.hfov_deg:.1f}°, {W}x{H}")

    with rep.stage("depth"):
        depth_map_sha = _file_sha256(dcfg.depth_map) if dcfg.depth_map else None
        dkey = stage_key(
            "depth",
            image=img.sha256,
            size=[W, H],
            intrinsics=choice.intrinsics.to_dict(),
            backend=backend.name,
            model=[m["id"] for m in models if m["role"] == "depth"],
            depth=config.depth.__dict__ | {"depth_map": depth_map_sha},
        )
        cached = cache.get("depth", dkey)
        if cached is not None:
            arrays, meta = cached
            est = DepthEstimate(
                depth=arrays["depth"],
                kind=meta["kind"],
                labels=arrays.get("labels"),
                focal_px=meta.get("focal_px"),
                ground_normal=arrays.get("ground_normal"),
                info=meta.get("info", {}),
            )
            hits.append("depth")
        else:
            user_focal = None
            if config.camera.focal_px is not None:  # in working pixels
                user_focal = config.camera.focal_px * W / img.width
            est = backend.estimate(
                rgb, choice.intrinsics, **_depth_options(backend.name, dcfg, img, user_focal)
            )
            arrays = {"depth": est.depth}
            if est.labels is not None:
                arrays["labels"] = est.labels
            if est.ground_normal is not None:
                arrays["ground_normal"] = np.asarray(est.ground_normal, np.float64)
            meta = {"kind": est.kind, "focal_px": est.focal_px, "info": _jsonable(est.info)}
            cache.put("depth", dkey, arrays, meta)
        if est.depth.shape != (H, W):
            raise AssertionError(f"depth backend returned {est.depth.shape}, expected {(H, W)}")
        if est.focal_px and config.camera.focal_px is None:
            choice = resolve_intrinsics(
                img.width,
                img.height,
                W,
                H,
                principal=config.camera.principal,
                model_focal_px=est.focal_px,
            )
    intr = choice.intrinsics

    with rep.stage("ground"):
        depth, ground = fit_ground(
            est, intr, camera_height=dcfg.camera_height, seed=config.seed, far=dcfg.sky_distance
        )
        M = world_from_camera(ground.normal)

    with rep.stage("layers"):
        skey = stage_key(
            "scene",
            depth=dkey,
            scale=ground.scale,
            layers=config.layers.__dict__,
            fill=config.fill.__dict__,
            fill_backend=fill_backend.name,
            fill_model=[m["id"] for m in models if m["role"] == "inpaint"],
            surround=config.surround.__dict__,
            seed=config.seed,
        )
        cached = cache.get("scene", skey)
        if cached is not None:
            layers, pano = _scene_from_arrays(*cached)
            fill_facts = cached[1].get("fill_facts", {})
            hits.append("scene")
        else:
            split = split_layers(rgb, depth, est.labels, intr, ground, config.layers)
            if getattr(fill_backend, "depth_model", False) is None and hasattr(backend, "load"):
                # the diffusion fill gives its new content the build's learned depth
                fill_backend.depth_model = backend.load(dcfg.model, dcfg.device)
            margin = 0
            if config.surround.enabled:
                margin = int(round(config.surround.canvas_margin * max(W, H)))
            layers, fill_facts = compose_layers(
                rgb,
                depth,
                est.labels,
                intr,
                ground,
                split,
                fill_backend,
                margin_px=margin,
                sky_distance=dcfg.sky_distance,
                seed=config.seed,
            )
            pano = None
            if config.surround.enabled:
                pano = extend(
                    rgb,
                    depth,
                    est.labels,
                    intr,
                    ground,
                    M,
                    config.surround,
                    sky_distance=dcfg.sky_distance,
                    fill=fill_backend,
                    seed=config.seed,
                )
                layers += surroundings_layers(
                    pano, dcfg.sky_distance * config.surround.sky_radius_factor
                )
            fill_facts = _jsonable(fill_facts)
            arrays, meta = _scene_to_arrays(layers, pano)
            cache.put("scene", skey, arrays, meta | {"fill_facts": fill_facts})
    rep.note("layers: " + ", ".join(layer.name for layer in layers))

    with rep.stage("lift"):
        lkey = stage_key("lift", scene=skey, lift=config.lift.__dict__)
        cached = cache.get("lift", lkey)
        if cached is not None:
            splats = _splats_from_arrays(cached[0])
            hits.append("lift")
        else:
            splats = lift_layers(layers, intr, M, config, pano)

    with rep.stage("colour"):
        if cached is None:
            splats = solve_colours(splats, intr, rgb, config.lift.colour_solve_iters)
            cache.put("lift", lkey, _splats_to_arrays(splats), {})

    refine_facts = {"iters": 0}
    if config.refine.iters > 0:
        with rep.stage("refine"):
            # the surround's equirect layers lie outside every refine view (the sky dome only
            # behind the photo's own sky): they are kept as synthesised, not refined
            still = torch.from_numpy(
                np.isin(
                    splats.layers.numpy(),
                    [k for k, L in enumerate(layers) if L.projection == "equirectangular"],
                )
            )
            refined, refine_facts = refine(
                splats.index(~still), _refine_views(rgb, intr, layers), config.refine,
                measure_after=False,
            )  # fmt: skip
            splats = Splats.cat([refined, splats.index(still)])
            refine_facts["splats"] = len(splats)
        rep.note(
            f"refine: {refine_facts['iters']} steps, loss {refine_facts['loss_first']:.4f} -> "
            f"{refine_facts['loss_last']:.4f}, {refine_facts['pruned']} splats pruned"
        )

    with rep.stage("collision"):
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
            surfaces, intr, ground, M, config.collision, ring=ring, max_distance=dcfg.max_depth
        )
        collision_glb = coll.glb_bytes()

    with rep.stage("preview"):
        preview_t = rasterize(splats, Camera(intr, Pose.identity()), W, H).rgb
        rgb_t = torch.from_numpy(np.ascontiguousarray(rgb, np.float32))
        quality = {
            "source_psnr_db": round(psnr(preview_t, rgb_t), 3),
            "source_ssim": round(float(ssim(preview_t, rgb_t)), 4),
            "width": W,
            "height": H,
        }
        preview = preview_t.numpy()
    rep.note(f"source view: {quality['source_psnr_db']:.2f} dB PSNR, SSIM {quality['source_ssim']}")
    if "source_psnr_before" in refine_facts:  # the preview is the refined source view
        refine_facts["source_psnr_after"] = psnr(preview_t, rgb_t)

    with rep.stage("write"):
        manifest = _manifest(
            img, intr, choice.source, M, ground, splats, est, backend.name, reason, config
        )
        manifest["models"] = models
        manifest["fill"] = {
            "backend": fill_backend.name,
            "reason": fill_reason,
            "layers": {k: _fill_summary(v) for k, v in fill_facts.items()},
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
        manifest["bounds"] = {"min": coll.bounds[0].tolist(), "max": coll.bounds[1].tolist()}
        manifest["refine"] = _jsonable(refine_facts)
        manifest["quality"] = quality
        manifest["timings"] = dict(rep.timings)
        validate_manifest(manifest, "world.json (being written)")
        with atomic_dir(out, force) as tmp:
            (tmp / "splats.ply").write_bytes(ply_bytes(splats))
            (tmp / "splat_layers.npy").write_bytes(_npy_bytes(splats.layers.numpy()))
            (tmp / "collision.glb").write_bytes(collision_glb)
            save_png(preview, tmp / "preview.png")
            save_png(rgb, tmp / "source.png")
            for k, layer in enumerate(layers):
                _write_layer(tmp / "layers" / str(k), layer, intr)
            manifest["timings"] = dict(rep.timings)  # everything up to the final write
            (tmp / "world.json").write_text(json.dumps(manifest, indent=2))
    backends = {
        "depth": backend.name,
        "fill": fill_backend.name,
        "raster": resolve_raster_backend("auto").name,
        "intrinsics": choice.source,
    }
    return BuildResult(
        out,
        len(splats),
        dict(rep.timings),
        backends,
        list(rep.notes),
        hits,
        quality,
        _jsonable(refine_facts),
    )


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
