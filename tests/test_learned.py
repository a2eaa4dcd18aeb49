"""Learned backends (issue 6): depth via transformers, inpainting via diffusers.

diffusers-style: tiny randomly initialised models built from configs, saved with
``save_pretrained(safe_serialization=True)`` and loaded back through the same code path users
hit (``--depth-model PATH``, ``--inpaint-model PATH``), offline (HF_HUB_OFFLINE=1), on the CPU.
Tests with real weights are marked ``slow`` and run only with WORLDGEN_SLOW=1.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import save_rgb, textured
from worldgen import hf
from worldgen.camera import Intrinsics, resolve_intrinsics
from worldgen.cli import main
from worldgen.errors import BackendError, ModelError

pytest.importorskip("transformers")
pytest.importorskip("diffusers")

SLOW = pytest.mark.skipif(not os.environ.get("WORLDGEN_SLOW"), reason="set WORLDGEN_SLOW=1")


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """Never touch the network or the user's HF cache."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path_factory.mktemp("hf_home")))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)


def _readme(folder: Path, licence: str) -> None:
    (folder / "README.md").write_text(f"---\nlicense: {licence}\ntags: [test]\n---\n# tiny\n")


# ----------------------------------------------------------------------------- tiny models


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> dict[str, Path]:
    """Tiny random models, saved as safetensors folders (built once per module)."""
    import torch
    from transformers import (
        CLIPTextConfig,
        CLIPTextModel,
        DepthAnythingConfig,
        DepthAnythingForDepthEstimation,
        DepthProConfig,
        DepthProForDepthEstimation,
        Dinov2Config,
        DPTConfig,
        DPTForDepthEstimation,
        DPTImageProcessor,
    )

    root = tmp_path_factory.mktemp("tiny_models")
    out = {}
    torch.manual_seed(0)
    # Depth Anything (relative disparity): tiny Dinov2 backbone, patch 14
    bb = Dinov2Config(
        hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
        patch_size=14, image_size=56, out_features=["stage1", "stage2", "stage3", "stage4"],
        reshape_hidden_states=False,
    )  # fmt: skip
    cfg = DepthAnythingConfig(
        backbone_config=bb, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
        fusion_hidden_size=16, head_hidden_size=8, depth_estimation_type="relative",
    )  # fmt: skip
    m = DepthAnythingForDepthEstimation(cfg).eval()
    with torch.no_grad():
        m.head.conv3.bias.fill_(1.0)  # a positive, varying disparity (ReLU output)
    out["da"] = root / "da"
    m.save_pretrained(out["da"], safe_serialization=True)
    DPTImageProcessor(
        size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
        do_pad=False,
    ).save_pretrained(out["da"])  # fmt: skip
    _readme(out["da"], "apache-2.0")
    # the same, metric
    cfg_m = DepthAnythingConfig(**{**cfg.to_dict(), "depth_estimation_type": "metric"})
    out["da_metric"] = root / "da_metric"
    DepthAnythingForDepthEstimation(cfg_m).save_pretrained(out["da_metric"])
    shutil.copy(out["da"] / "preprocessor_config.json", out["da_metric"])
    # DPT (MiDaS-style disparity), square 32x32 input
    dpt = DPTConfig(
        image_size=32, patch_size=16, hidden_size=32, num_hidden_layers=2,
        backbone_out_indices=[0, 1], num_attention_heads=4, intermediate_size=37,
        neck_hidden_sizes=[16, 32], reassemble_factors=[2, 1], fusion_hidden_size=16,
        head_in_index=-1, is_hybrid=False,
    )  # fmt: skip
    out["dpt"] = root / "dpt"
    DPTForDepthEstimation(dpt).save_pretrained(out["dpt"])
    DPTImageProcessor(size={"height": 32, "width": 32}, keep_aspect_ratio=False).save_pretrained(
        out["dpt"]
    )
    _readme(out["dpt"], "cc-by-nc-4.0")
    # Depth Pro with a field-of-view head that answers 50 degrees
    dp = DepthProConfig(
        patch_size=16, fusion_hidden_size=16, intermediate_hook_ids=[1, 0],
        intermediate_feature_dims=[10, 8], scaled_images_ratios=[0.5, 1.0],
        scaled_images_overlap_ratios=[0.0, 0.2], scaled_images_feature_dims=[12, 12],
        use_fov_model=True,
        image_model_config={"model_type": "dinov2", "num_hidden_layers": 2, "hidden_size": 16,
                            "num_attention_heads": 1, "patch_size": 4},
        patch_model_config={"model_type": "vit", "num_hidden_layers": 2, "hidden_size": 24,
                            "num_attention_heads": 2, "patch_size": 6},
        fov_model_config={"model_type": "vit", "num_hidden_layers": 2, "hidden_size": 32,
                          "num_attention_heads": 4, "patch_size": 8},
    )  # fmt: skip
    mp = DepthProForDepthEstimation(dp).eval()
    with torch.no_grad():
        last = [x for x in mp.fov_model.head.layers if isinstance(x, torch.nn.Conv2d)][-1]
        last.weight.zero_()
        last.bias.fill_(50.0)
    out["dp"] = root / "dp"
    mp.save_pretrained(out["dp"])  # no preprocessor: the backend knows Depth Pro's input
    # a text model (the wrong kind for a depth model)
    out["text"] = root / "text"
    CLIPTextModel(
        CLIPTextConfig(hidden_size=16, intermediate_size=32, num_attention_heads=2,
                       num_hidden_layers=1, vocab_size=100, max_position_embeddings=16)
    ).save_pretrained(out["text"])  # fmt: skip
    out["sd"] = _tiny_inpaint(root / "sd")
    _readme(out["sd"], "creativeml-openrail-m")
    return out


def _byte_level_vocab(folder: Path) -> tuple[Path, Path]:
    """A minimal byte-level CLIP vocabulary: every byte symbol (and its end-of-word form) and
    the two special tokens, no merges (so every character is a token)."""
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    bs += list(range(ord("®"), ord("ÿ") + 1))
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    chars = [chr(c) for c in cs]
    vocab = {c: i for i, c in enumerate(chars)}
    vocab |= {c + "</w>": len(chars) + i for i, c in enumerate(chars)}
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return folder / "vocab.json", folder / "merges.txt"


def _tiny_inpaint(folder: Path) -> Path:
    import torch
    from diffusers import (
        AutoencoderKL,
        PNDMScheduler,
        StableDiffusionInpaintPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    vocab, merges = _byte_level_vocab(folder.parent / "tokenizer_src")
    tok = CLIPTokenizer(str(vocab), str(merges), model_max_length=16)
    nv = len(tok.get_vocab())
    torch.manual_seed(0)
    unet = UNet2DConditionModel(
        block_out_channels=(16, 32), layers_per_block=1, sample_size=32, in_channels=9,
        out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=8,
    )  # fmt: skip
    vae = AutoencoderKL(
        block_out_channels=[16, 32], in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=["DownEncoderBlock2D"] * 2, up_block_types=["UpDecoderBlock2D"] * 2,
        norm_num_groups=8, sample_size=64,
    )  # fmt: skip
    te = CLIPTextModel(
        CLIPTextConfig(bos_token_id=nv - 2, eos_token_id=nv - 1, pad_token_id=nv - 1,
                       hidden_size=16, intermediate_size=32, num_attention_heads=2,
                       num_hidden_layers=2, vocab_size=nv, max_position_embeddings=16,
                       projection_dim=16)
    )  # fmt: skip
    pipe = StableDiffusionInpaintPipeline(
        unet=unet, vae=vae, text_encoder=te, tokenizer=tok,
        scheduler=PNDMScheduler(skip_prk_steps=True, steps_offset=1),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False,
    )  # fmt: skip
    pipe.save_pretrained(folder, safe_serialization=True)
    return folder


def _photo(h: int, w: int, seed: int = 0) -> np.ndarray:
    return textured(h, w, seed=seed)


def _intr(w: int, h: int) -> Intrinsics:
    return Intrinsics.from_hfov(60.0, w, h)


# ----------------------------------------------------------------------------- pure functions


def test_joint_bilateral_upsampling_keeps_depth_edges_sharp():
    from worldgen.depth.hf import joint_bilateral_upsample

    H, W, s = 96, 128, 4
    guide = np.zeros((H, W, 3), np.float32)
    guide[:, 61:] = 1.0  # a colour edge not on the low-res grid
    low = np.where(np.arange(W // s) >= 61 / s, 10.0, 2.0)[None, :].repeat(H // s, 0)
    up = joint_bilateral_upsample(low.astype(np.float32), guide)
    assert up.shape == (H, W) and up.dtype == np.float32
    assert np.abs(up[:, :61] - 2.0).max() < 0.05 and np.abs(up[:, 61:] - 10.0).max() < 0.05
    # plain bilinear smears the edge over several pixels
    import torch

    bil = torch.nn.functional.interpolate(
        torch.from_numpy(low[None, None]).float(), size=(H, W), mode="bilinear"
    )[0, 0].numpy()
    assert ((bil > 2.5) & (bil < 9.5)).sum() > 2 * H


def _ground_scene(pitch_deg: float, H=120, W=160, sky=True):
    p = math.radians(pitch_deg)
    n = np.array([0.0, -math.cos(p), math.sin(p)])
    intr = Intrinsics(140.0, 140.0, (W - 1) / 2, (H - 1) / 2, W, H)
    X, Y = np.meshgrid((np.arange(W) - intr.cx) / intr.fx, (np.arange(H) - intr.cy) / intr.fy)
    nr = n[1] * Y + n[2]
    z = np.where(nr < -1e-6, -1.6 / np.minimum(nr, -1e-6), np.inf)
    if not sky:  # a far wall 30 m ahead closes the view
        z = np.minimum(z, 30.0 / (math.sin(p) * Y + math.cos(p)))
    return z, intr, n


@pytest.mark.parametrize(
    "pitch,sky,tol", [(0.0, False, 1e-3), (0.0, True, 0.06), (-8.0, True, 0.05)]
)
def test_disparity_to_depth_solves_the_affine_ambiguity_with_the_ground(pitch, sky, tol):
    from worldgen.depth.base import DepthEstimate
    from worldgen.ground import fit_ground

    z, intr, n = _ground_scene(pitch, sky=sky)
    disp = 3.7 * np.where(np.isfinite(z), 1.0 / z, 0.0) + 0.42  # unknown scale and shift
    est = DepthEstimate(disp.astype(np.float32), "disparity")
    depth, g = fit_ground(est, intr, camera_height=1.6, far=200.0)
    ground = np.isfinite(z) & (z < 40)
    assert np.median(np.abs(depth[ground] / z[ground] - 1)) < tol
    assert np.degrees(np.arccos(np.clip(g.normal @ n, -1, 1))) < 1.0 + 100 * tol
    assert g.height == 1.6 and g.scale_source == "ground-plane-prior"
    assert g.to_dict()["disparity_conversion"]["shift_b"] < disp.min()
    assert np.isfinite(depth).all() and depth.max() <= 200.0 + 1e-3


def test_disparity_without_ground_falls_back_to_relative_depth():
    from worldgen.depth.base import DepthEstimate
    from worldgen.ground import fit_ground

    rng = np.random.default_rng(0)
    disp = (1.0 + rng.random((60, 80)) * 0.01).astype(np.float32)  # no plane anywhere
    depth, g = fit_ground(DepthEstimate(disp, "disparity"), _intr(80, 60), camera_height=1.6)
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert g.method.startswith("disparity-")


def test_model_input_size_is_a_multiple_of_the_patch():
    from types import SimpleNamespace

    from worldgen.depth.hf import model_input_size

    cfg = SimpleNamespace(
        model_type="depth_anything", backbone_config=SimpleNamespace(patch_size=14)
    )
    prep = {
        "size": {"height": 518, "width": 518},
        "keep_aspect_ratio": True,
        "ensure_multiple_of": 14,
    }
    h, w = model_input_size(cfg, prep, 500, 741)
    assert h % 14 == 0 and w % 14 == 0 and h >= 518 and w >= 518 * 741 / 500
    assert abs(w / h - 741 / 500) < 0.03
    dp = SimpleNamespace(
        model_type="depth_pro", patch_size=384, scaled_images_ratios=[0.25, 0.5, 1]
    )
    assert model_input_size(dp, {}, 500, 741) == (1536, 1536)


def test_intrinsics_precedence_user_model_exif_default():
    kw = dict(orig_width=800, orig_height=600, work_width=400, work_height=300)
    both = resolve_intrinsics(**kw, focal_px=700.0, model_focal_px=300.0, exif_focal_35mm=28.0)
    assert both.source == "user" and both.intrinsics.fx == pytest.approx(350.0)
    m = resolve_intrinsics(**kw, model_focal_px=300.0, exif_focal_35mm=28.0)
    assert m.source == "depth-model" and m.intrinsics.fx == pytest.approx(300.0)
    assert resolve_intrinsics(**kw, exif_focal_35mm=28.0).source == "exif"
    assert resolve_intrinsics(**kw).source == "default-fov"


def test_licences_known_local_and_unknown(tmp_path):
    assert (
        hf.model_facts("depth-anything/Depth-Anything-V2-Small-hf", "depth", "x")["licence"]
        == "Apache-2.0"
    )
    base = hf.model_facts("depth-anything/Depth-Anything-V2-Large-hf", "depth", "x")
    assert base["commercial_use"] is False and "NC" in hf.licence_warning(base)
    assert hf.model_facts("apple/DepthPro-hf", "depth", "x")["commercial_use"] is False
    sd = hf.model_facts("stable-diffusion-v1-5/stable-diffusion-inpainting", "inpaint", "x")
    assert sd["licence"] == "CreativeML OpenRAIL-M" and hf.licence_warning(sd) is None
    (tmp_path / "a").mkdir()
    assert hf.model_facts(str(tmp_path / "a"), "depth", "x")["licence"] == "unknown"
    _readme(tmp_path / "a", "cc-by-nc-4.0")
    f = hf.model_facts(str(tmp_path / "a"), "depth", "x")
    assert f["licence"] == "cc-by-nc-4.0" and f["commercial_use"] is False
    assert f["source"] == "local"


# ----------------------------------------------------------------------------- depth contract


@pytest.mark.parametrize(
    "which,backend,kind", [("da", "depth-anything-v2", "disparity"), ("dpt", "depth-anything-v2",
    "disparity"), ("da_metric", "depth-anything-v2", "metric"), ("dp", "depth-pro", "metric")]
)  # fmt: skip
def test_depth_backend_contract(tiny, which, backend, kind):
    from worldgen.depth import get_backend

    H, W = 500, 741  # odd size, not a multiple of the patch
    img, intr = _photo(H, W), _intr(W, H)
    b = get_backend(backend)
    est = b.estimate(img, intr, model=str(tiny[which]), device="cpu")
    assert est.depth.shape == (H, W) and est.depth.dtype == np.float32
    assert np.isfinite(est.depth).all() and est.kind == kind
    if kind == "metric":
        assert (est.depth > 0).all()
    info = est.info
    assert info["device"] == "cpu" and info["model"] == str(tiny[which])
    if which == "da":
        assert info["input_size"][0] % 14 == 0 and info["input_size"][1] % 14 == 0
    again = b.estimate(img, intr, model=str(tiny[which]), device="cpu")
    np.testing.assert_array_equal(est.depth, again.depth)  # deterministic


def test_depth_pro_focal_length_and_user_precedence(tiny):
    from worldgen.depth import get_backend

    H, W = 60, 90
    b = get_backend("depth-pro")
    est = b.estimate(_photo(H, W), _intr(W, H), model=str(tiny["dp"]), device="cpu")
    want = 0.5 * W / math.tan(math.radians(50.0) / 2)
    assert est.focal_px == pytest.approx(want, rel=1e-3)
    assert est.info["fov_deg"] == pytest.approx(50.0, abs=1e-3)
    # a focal length the user gave wins: no model focal, depth uses the user's
    user = b.estimate(_photo(H, W), _intr(W, H), model=str(tiny["dp"]), focal_px=2 * want)
    assert user.focal_px is None and user.info["focal_source"] == "given"
    ok = est.depth < 1e3  # (the model's own clamp of 1/z at 1e4 aside)
    np.testing.assert_allclose(user.depth[ok], 2 * est.depth[ok], rtol=1e-4)  # z = f / (W c)


def test_depth_errors_are_one_line(tiny, tmp_path):
    from worldgen.depth import get_backend

    b = get_backend("depth-anything-v2")
    img, intr = _photo(40, 50), _intr(50, 40)
    for ref, needle in [
        (tmp_path / "missing", "not found"),
        (tiny["sd"], "diffusers pipeline, not a depth model"),
        (tiny["text"], "not a depth model"),
        ("nobody/no-such-model", "not in the local Hugging Face cache"),
    ]:
        with pytest.raises(ModelError, match=needle) as e:
            b.estimate(img, intr, model=str(ref), device="cpu")
        assert "\n" not in str(e.value)


def test_out_of_memory_becomes_a_model_error(tiny, monkeypatch):
    import torch

    from worldgen.depth.hf import LoadedDepthModel

    m = LoadedDepthModel(str(tiny["da"]), "cpu")

    def boom(**_):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")

    monkeypatch.setattr(m, "model", boom)
    with pytest.raises(ModelError, match="out of memory"):
        m.run(_photo(30, 40))
    assert "--device cpu" in str(hf.oom_error("x", "cuda"))


def test_missing_ml_extra_is_a_clear_error(monkeypatch):
    from worldgen.depth import resolve_backend
    from worldgen.fill import resolve_fill_backend

    monkeypatch.setattr(hf, "missing_ml_modules", lambda: ["diffusers"])
    with pytest.raises(BackendError, match=r"\[ml\] extra"):
        resolve_backend("depth-anything-v2")
    with pytest.raises(BackendError, match=r"\[ml\] extra"):
        resolve_fill_backend("diffusion")
    # auto quietly uses the embedded backends
    assert resolve_backend("auto")[0].name == "popup"
    assert resolve_fill_backend("auto")[0].name == "classical"


# ----------------------------------------------------------------------------- diffusion fill


def _hole(H, W):
    mask = np.zeros((H, W), bool)
    mask[H // 3 : H // 3 + 30, W // 2 : W // 2 + 24] = True
    mask[5:12, 5:20] = True
    return mask


def test_diffusion_fill_contract(tiny):
    from worldgen.fill import get_fill_backend

    H, W = 500, 741
    img = _photo(H, W, seed=2)
    mask = _hole(H, W)
    fb = get_fill_backend("diffusion", model=str(tiny["sd"]), device="cpu", steps=2)
    r1 = fb.fill(img, mask, seed=3)
    assert r1.rgb.shape == (H, W, 3) and r1.rgb.dtype == np.float32
    assert np.isfinite(r1.rgb).all() and r1.rgb.min() >= 0 and r1.rgb.max() <= 1
    np.testing.assert_array_equal(r1.rgb[~mask], img[~mask])  # outside the mask: unchanged
    assert np.isnan(r1.depth).all() and (r1.filled == mask).all()
    assert r1.info["crops"] == 2 and r1.info["native_px"] == 64
    np.testing.assert_array_equal(fb.fill(img, mask, seed=3).rgb, r1.rgb)  # seeded
    assert not np.array_equal(fb.fill(img, mask, seed=4).rgb[mask], r1.rgb[mask])


def test_diffusion_fill_depth_learned_or_classical(tiny):
    from worldgen.depth.hf import LoadedDepthModel
    from worldgen.fill import get_fill_backend

    H, W = 64, 96
    img = _photo(H, W, seed=1)
    mask = _hole(H, W)
    depth = np.tile(np.linspace(8.0, 2.0, H, dtype=np.float32)[:, None], (1, W))
    depth[mask] = np.nan
    fb = get_fill_backend("diffusion", model=str(tiny["sd"]), device="cpu", steps=2)
    r = fb.fill(img, mask, depth=depth, seed=0)
    assert r.info["depth"]["method"].startswith("classical")
    assert np.isfinite(r.depth[mask]).all() and (r.depth[mask] > 0).all()
    np.testing.assert_array_equal(r.depth[~mask], depth[~mask])
    fb.depth_model = LoadedDepthModel(str(tiny["da"]), "cpu")
    r = fb.fill(img, mask, depth=depth, seed=0)
    assert r.info["depth"]["method"].startswith("learned"), r.info["depth"]
    assert np.isfinite(r.depth[mask]).all() and (r.depth[mask] > 0).all()
    np.testing.assert_array_equal(r.depth[~mask], depth[~mask])


def test_align_inverse_depth_recovers_scale_and_shift():
    from worldgen.fill.diffusion import align_inverse_depth

    rng = np.random.default_rng(0)
    pred = rng.random(500)
    known = 0.3 * pred + 0.05
    known[:40] += 5.0  # outliers (another surface)
    s, t, rel = align_inverse_depth(pred, known)
    assert s == pytest.approx(0.3, rel=1e-6) and t == pytest.approx(0.05, rel=1e-6)
    assert align_inverse_depth(pred[:5], known[:5]) is None
    assert align_inverse_depth(pred, -known) is None


def test_inpaint_wrong_kind_and_missing(tiny, tmp_path):
    from worldgen.fill import get_fill_backend

    img, mask = _photo(40, 50), _hole(40, 50)
    for ref, needle in [(tiny["da"], "not a diffusers inpainting pipeline"),
                        (tmp_path / "nope", "not found")]:  # fmt: skip
        fb = get_fill_backend("diffusion", model=str(ref), device="cpu")
        with pytest.raises(ModelError, match=needle):
            fb.fill(img, mask)


# ----------------------------------------------------------------------------- auto + cache


def _into_cache(src: Path, repo_id: str, hub: Path) -> Path:
    """Place a model folder where huggingface_hub's cache keeps ``repo_id``."""
    base = hub / ("models--" + repo_id.replace("/", "--"))
    rev = "0123456789abcdef0123456789abcdef01234567"
    shutil.copytree(src, base / "snapshots" / rev)
    (base / "refs").mkdir(parents=True)
    (base / "refs" / "main").write_text(rev)
    return base


def test_auto_offline_empty_cache_uses_embedded_backends():
    from worldgen.depth import resolve_backend
    from worldgen.fill import resolve_fill_backend

    backend, reason = resolve_backend("auto")
    assert backend.name == "popup" and "\n" not in reason
    assert "not in the local cache and offline" in reason
    fill, freason = resolve_fill_backend("auto")
    assert fill.name == "classical" and "not in the local cache" in freason


def test_auto_picks_cached_models(tiny, monkeypatch, tmp_path):
    from worldgen.depth import resolve_backend
    from worldgen.fill import resolve_fill_backend

    hub = tmp_path / "hf" / "hub"
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    _into_cache(tiny["da"], hf.DEFAULT_MODELS["depth-anything-v2"], hub)
    _into_cache(tiny["sd"], hf.DEFAULT_MODELS["diffusion"], hub)
    backend, reason = resolve_backend("auto", device="cpu")
    assert backend.name == "depth-anything-v2" and "weights cached" in reason
    assert "depth-pro" in reason  # skipped, with why
    est = backend.estimate(_photo(40, 60), _intr(60, 40), device="cpu")  # from the cache
    assert (
        est.depth.shape == (40, 60) and est.info["model"] == hf.DEFAULT_MODELS["depth-anything-v2"]
    )
    fill, freason = resolve_fill_backend("auto", device="cpu")
    assert fill.name == "classical" and "too slow on a CPU" in freason
    assert main(["models", "--json"]) == 0


def test_models_command_lists_cache_and_refuses_offline_download(capsys, monkeypatch, tmp_path):
    assert main(["models", "--json"]) == 0
    table = json.loads(capsys.readouterr().out)
    assert table["ml_extra"] is True
    ids = {r["id"]: r for r in table["models"]}
    assert ids["apple/DepthPro-hf"]["commercial_use"] is False
    assert not any(r["cached"] for r in table["models"])
    assert main(["models"]) == 0
    assert "CC-BY-NC-4.0" in capsys.readouterr().out
    assert main(["models", "download", "depth-anything/Depth-Anything-V2-Small-hf"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "HF_HUB_OFFLINE" in err[0]


# ----------------------------------------------------------------------------- end to end


def test_build_with_learned_backends_end_to_end(tiny, tmp_path, capsys):
    from worldgen.world import load_world

    photo = save_rgb(textured(72, 96, seed=3), tmp_path / "photo.png")
    out = tmp_path / "learned.world"
    args = ["build", str(photo), "-o", str(out), "--preset", "fast", "--quiet", "--json"]
    args += ["--depth", "depth-anything-v2", "--depth-model", str(tiny["da"])]
    args += ["--inpaint", "diffusion", "--inpaint-model", str(tiny["sd"]), "--steps", "2"]
    args += ["--device", "cpu", "--prompt", "a garden"]
    preset = tmp_path / "small.yaml"  # small learned-surround views: CPU time in CI
    preset.write_text(
        "preset: fast\nimage: {max_side: 512}\nlift: {stride: 2}\n"
        "refine: {iters: 0}\nsurround: {learned_view_size: 64}\n"
    )
    args[args.index("fast")] = str(preset)
    assert main(args) == 0, capsys.readouterr().err
    summary = json.loads(capsys.readouterr().out)
    assert summary["backends"]["depth"] == "depth-anything-v2"
    assert summary["backends"]["fill"] == "diffusion"
    w = load_world(out)
    m = w.manifest
    assert m["depth"]["kind"] == "disparity" and m["depth"]["info"]["model"] == str(tiny["da"])
    assert m["ground"]["scale_source"] == "ground-plane-prior"
    assert "disparity_conversion" in m["ground"]
    roles = {x["role"]: x for x in m["models"]}
    assert roles["depth"]["licence"] == "apache-2.0" and roles["depth"]["source"] == "local"
    assert roles["inpaint"]["licence"] == "creativeml-openrail-m"
    assert m["fill"]["backend"] == "diffusion" and m["config"]["fill"]["prompt"] == "a garden"
    for facts in m["fill"]["layers"].values():
        assert facts["depth"]["method"]
    # the learned surround ran around the spawn: 7 views, 180 last, over the classical prefill
    views = m["outpaint"]["learned"]["views"]
    assert len(views) == 7 and views[-1]["yaw_deg"] == 180
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "apache-2.0" in text and "creativeml-openrail-m" in text and "diffusion" in text


def test_build_depth_pro_focal_feeds_the_camera(tiny, tmp_path, capsys):
    from worldgen.world import load_world

    photo = save_rgb(textured(60, 90, seed=4), tmp_path / "p.png")
    model = tmp_path / "my-depth-pro"  # a local folder with a non-commercial licence
    shutil.copytree(tiny["dp"], model)
    _readme(model, "cc-by-nc-4.0")
    common = ["--preset", "fast", "--json", "--depth", "depth-pro", "--inpaint", "classical"]
    args = ["build", str(photo), "-o", str(tmp_path / "a.world"), *common]
    assert main([*args, "--depth-model", str(model)]) == 0, capsys.readouterr().err
    notes = json.loads(capsys.readouterr().out)["notes"]
    assert sum("not for commercial use" in n for n in notes) == 1
    m = load_world(tmp_path / "a.world").manifest
    assert m["camera"]["intrinsics_source"] == "depth-model"
    want = 0.5 * 90 / math.tan(math.radians(25.0))
    assert m["camera"]["intrinsics"]["fx"] == pytest.approx(want, rel=1e-3)
    assert m["depth"]["kind"] == "metric" and m["models"][0]["licence"] == "cc-by-nc-4.0"
    assert m["models"][0]["commercial_use"] is False


def test_build_errors_are_one_line(tiny, tmp_path, capsys):
    photo = save_rgb(textured(40, 50), tmp_path / "p.png")
    base = ["build", str(photo), "-o", str(tmp_path / "x.world"), "--preset", "fast"]
    cases = [
        (["--depth", "depth-anything-v2", "--depth-model", str(tmp_path / "nope")], "not found"),
        (["--depth-model", str(tiny["sd"])], "not a depth model"),
        (["--depth", "popup", "--inpaint-model", str(tiny["text"])], "not a diffusers"),
        (["--inpaint", "classical", "--inpaint-model", str(tiny["sd"])], "needs --inpaint"),
    ]
    for extra, needle in cases:
        rc = main(base + extra)
        err = [x for x in capsys.readouterr().err.splitlines() if "error" in x]
        assert rc != 0 and len(err) == 1 and needle in err[0], (extra, err)
        assert not (tmp_path / "x.world").exists()


# ----------------------------------------------------------------------------- real weights


@SLOW
@pytest.mark.slow
def test_real_depth_anything_small(monkeypatch, tmp_path):
    """Downloads Depth Anything V2 Small (~100 MB) unless cached: set WORLDGEN_SLOW=1."""
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.delenv("HF_HOME")
    from skimage import data

    from worldgen.depth import get_backend

    img = data.stereo_motorcycle()[0].astype(np.float32) / 255.0
    H, W = img.shape[:2]
    est = get_backend("depth-anything-v2").estimate(img, _intr(W, H))
    assert est.kind == "disparity" and est.depth.shape == (H, W)
    gt = data.stereo_motorcycle()[2]
    ok = np.isfinite(gt)
    assert np.corrcoef(est.depth[ok], gt[ok])[0, 1] > 0.8  # disparity vs. disparity
