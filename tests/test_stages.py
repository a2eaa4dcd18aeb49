"""Unit tests of the geometric stages on tiny synthetic inputs with known answers."""

import numpy as np
import pytest
import torch

from tests.conftest import textured
from worldgen.camera import Intrinsics
from worldgen.config import LiftConfig, load_preset
from worldgen.depth import get_backend, resolve_backend
from worldgen.depth.base import DepthEstimate
from worldgen.depth.file import fill_unknown, read_depth_map, resize_nearest
from worldgen.errors import BackendError, InputError
from worldgen.ground import fit_ground, unproject
from worldgen.lift import estimate_normals, lift, rotmat_to_quat


def quat_to_rotmat(q):
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    w, x, y, z = q.T
    return np.stack(
        [
            np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        1,
    )


# --------------------------------------------------------------------------- lifting


def test_fronto_parallel_plane_lifts_to_that_plane():
    intr = Intrinsics.from_hfov(60, 48, 32)
    z0 = 3.5
    depth = np.full((32, 48), z0, np.float32)
    s = lift(textured(32, 48), depth, intr, LiftConfig())
    means = s.means.numpy()
    assert len(s) == 32 * 48
    assert np.allclose(means[:, 2], z0, atol=1e-5)
    # pixel (u, v) lands on the ray through it
    u = means[:, 0] / means[:, 2] * intr.fx + intr.cx
    v = means[:, 1] / means[:, 2] * intr.fy + intr.cy
    assert np.allclose(u, np.tile(np.arange(48), 32), atol=1e-3)
    assert np.allclose(v, np.repeat(np.arange(32), 48), atol=1e-3)
    # flat discs: thinnest axis along the optical axis, in-plane sigma = 0.5 px footprint
    R = quat_to_rotmat(s.quats.numpy())
    sc = s.scales.numpy()
    thin = np.argmin(sc, axis=1)
    normal = R[np.arange(len(s)), :, thin]
    centre = (np.abs(means[:, 0]) < 0.05) & (np.abs(means[:, 1]) < 0.05)
    assert np.all(np.abs(normal[centre, 2]) > 0.999)
    big = np.sort(sc, axis=1)[:, 1:]
    assert np.allclose(big[centre], 0.5 * z0 / intr.fx, rtol=1e-3)
    assert np.all(np.sort(sc, 1)[:, 0] < 0.2 * big[:, 0])


def test_ground_plane_lifts_onto_the_plane_with_stretched_discs():
    intr = Intrinsics.from_hfov(60, 64, 48)
    h = 1.6
    H, W = 48, 64
    v = np.arange(H)[:, None] - intr.cy
    with np.errstate(divide="ignore"):
        z = np.where(v > 0.5, h * intr.fy / np.maximum(v, 1e-9), np.nan) * np.ones((1, W))
    s = lift(textured(H, W), z.astype(np.float32), intr, LiftConfig(max_normal_angle_deg=89))
    m = s.means.numpy()
    assert np.allclose(m[:, 1], h, atol=1e-4)  # all on the plane y = +h (camera y is down)
    sc = np.sort(s.scales.numpy(), 1)
    # far away discs are stretched along the view direction (grazing angle)
    far = m[:, 2] > 8
    assert np.all(sc[far, 2] / sc[far, 1] > 3)
    R = quat_to_rotmat(s.quats.numpy())
    normal = R[np.arange(len(s)), :, np.argmin(s.scales.numpy(), 1)]
    assert np.all(np.abs(normal[:, 1]) > 0.99)


def test_stride_reduces_splats_and_skips_unknown_depth():
    intr = Intrinsics.from_hfov(60, 40, 30)
    d = np.full((30, 40), 2.0, np.float32)
    d[:, :20] = np.nan
    s = lift(textured(30, 40), d, intr, LiftConfig(stride=2))
    assert len(s) == 15 * 10
    assert torch.all(s.means[:, 0] > 0)


def test_normals_respect_depth_edges():
    intr = Intrinsics.from_hfov(60, 40, 30)
    d = np.full((30, 40), 5.0, np.float32)
    d[:, 20:] = 2.0  # a step: both sides are fronto-parallel planes
    n = estimate_normals(d, intr, 0.08)
    P = unproject(d, intr)
    ray = P / np.linalg.norm(P, axis=-1, keepdims=True)
    assert np.all(np.abs(n[..., 2]) > 0.999) or np.all(np.sum(n * -ray, -1) > 0.9)
    assert np.all(np.abs(n[:, 18:22, 0]) < 1e-3)  # no slanted normal across the step


def test_rotmat_to_quat_round_trip():
    rng = np.random.default_rng(0)
    q = rng.normal(size=(200, 4))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    R = quat_to_rotmat(q)
    q2 = rotmat_to_quat(R)
    assert np.allclose(quat_to_rotmat(q2), R, atol=1e-6)


# --------------------------------------------------------------------------- ground / scale


def test_relative_depth_is_scaled_to_camera_height():
    intr = Intrinsics.from_hfov(60, 64, 48)
    H, W = 48, 64
    true_h = 1.6
    v = np.arange(H)[:, None] - intr.cy
    z = np.where(v > 1, true_h * intr.fy / np.maximum(v, 1e-9), 30.0) * np.ones((1, W))
    rel = (z * 0.37).astype(np.float32)  # unknown scale
    est = DepthEstimate(depth=rel, kind="relative")
    scaled, g = fit_ground(est, intr, camera_height=1.6)
    assert g.method == "ransac" and g.scale_source == "ground-plane-prior"
    assert g.scale == pytest.approx(1 / 0.37, rel=0.02)
    assert np.allclose(g.normal, [0, -1, 0], atol=0.02)


def test_metric_depth_measures_camera_height_and_tilt():
    intr = Intrinsics.from_hfov(60, 64, 48)
    H, W = 48, 64
    # camera 2.0 m above a plane, pitched down by 10 degrees
    a = np.radians(10)
    up = np.array([0, -np.cos(a), np.sin(a)])  # up in camera axes when looking down
    uu, vv = np.meshgrid(np.arange(W), np.arange(H))
    ray = np.stack([(uu - intr.cx) / intr.fx, (vv - intr.cy) / intr.fy, np.ones_like(uu)], -1)
    denom = ray @ up
    z = np.where(denom < -1e-3, -2.0 / np.minimum(denom, -1e-3), 50.0).astype(np.float32)
    est = DepthEstimate(depth=z, kind="metric", info={"scale_source": "user-depth-map"})
    scaled, g = fit_ground(est, intr, camera_height=1.6)
    assert g.height == pytest.approx(2.0, rel=0.02)
    assert g.scale == 1.0 and g.scale_source == "user-depth-map"
    assert np.allclose(g.normal, up, atol=0.02)


# --------------------------------------------------------------------------- file depth


def test_depth_map_npy_semantics(tmp_path):
    d = np.full((10, 12), 2.0, np.float32)
    d[0, 0], d[0, 1], d[0, 2], d[0, 3] = np.nan, np.inf, -1.0, 0.0
    np.save(tmp_path / "d.npy", d)
    r = read_depth_map(tmp_path / "d.npy")
    assert np.isnan(r[0, :4]).all() and np.isfinite(r[1:]).all()


def test_depth_map_png_is_millimetres(tmp_path):
    from PIL import Image

    mm = np.full((10, 12), 2500, np.uint16)
    mm[0, 0] = 0
    Image.fromarray(mm).save(tmp_path / "d.png")
    r = read_depth_map(tmp_path / "d.png")
    assert np.isnan(r[0, 0]) and r[5, 5] == pytest.approx(2.5)
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(tmp_path / "e.png")
    with pytest.raises(InputError, match="16-bit"):
        read_depth_map(tmp_path / "e.png")


def test_resize_nearest_never_blends():
    d = np.array([[1.0, 5.0], [1.0, 5.0]], np.float32)
    r = resize_nearest(d, 8, 4)
    assert set(np.unique(r)) == {1.0, 5.0}
    assert np.all(r[:, :4] == 1.0) and np.all(r[:, 4:] == 5.0)


def test_fill_unknown_uses_the_surface_of_matching_colour():
    img = np.zeros((20, 40, 3), np.float32)
    img[:, 20:] = 1.0  # white background on the right, black object on the left
    d = np.full((20, 40), 1.0, np.float32)
    d[:, 20:] = 4.0
    d[:, 18:24] = np.nan  # hole straddling the edge
    f = fill_unknown(d, img)
    assert np.all(f[:, 18:20] == 1.0) and np.all(f[:, 20:24] == 4.0)


def test_file_backend_errors(tmp_path):
    fb = get_backend("file")
    img = textured(20, 30)
    intr = Intrinsics.from_hfov(60, 30, 20)
    np.save(tmp_path / "nan.npy", np.full((20, 30), np.nan, np.float32))
    with pytest.raises(InputError, match="no valid values"):
        fb.estimate(img, intr, depth_map=tmp_path / "nan.npy")
    np.save(tmp_path / "wrong.npy", np.ones((7, 30), np.float32))
    with pytest.raises(InputError, match="depth map is 30x7"):
        fb.estimate(img, intr, depth_map=tmp_path / "wrong.npy")
    np.save(tmp_path / "half.npy", np.ones((10, 15), np.float32))  # same aspect: resized
    assert fb.estimate(img, intr, depth_map=tmp_path / "half.npy").depth.shape == (20, 30)
    (tmp_path / "obj.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(InputError):
        fb.estimate(img, intr, depth_map=tmp_path / "obj.npy")
    np.save(tmp_path / "o.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError):  # pickled objects are refused
        fb.estimate(img, intr, depth_map=tmp_path / "o.npy")


# --------------------------------------------------------------------------- registry, config


def test_depth_registry_and_auto():
    b, why = resolve_backend("auto")
    assert b.name == "popup" and "popup" in why
    b, why = resolve_backend("auto", depth_map="x.npy")
    assert b.name == "file"
    with pytest.raises(
        BackendError, match="valid: auto, depth-anything-v2, depth-pro, file, popup"
    ):
        resolve_backend("nope")
    with pytest.raises(BackendError):
        resolve_backend("file")


def test_presets_and_unknown_keys(tmp_path):
    assert load_preset("fast").lift.stride == 2
    assert load_preset("default").image.max_side == 768
    with pytest.raises(InputError, match="unknown preset"):
        load_preset("nope")
    p = tmp_path / "x.yaml"
    p.write_text("lift:\n  strid: 3\n")
    with pytest.raises(InputError, match="unknown key"):
        load_preset(str(p))
    p.write_text("lift:\n  stride: three\n")
    with pytest.raises(InputError, match="integer"):
        load_preset(str(p))
    p.write_text("!!python/object:os.system\n")
    with pytest.raises(InputError, match="invalid YAML"):
        load_preset(str(p))
    cfg = load_preset("default").replace(depth={"camera_height": 2.0}, seed=4)
    assert cfg.depth.camera_height == 2.0 and cfg.seed == 4
