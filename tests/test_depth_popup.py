"""The ``popup`` depth backend on synthetic scenes with exact, ray-cast geometry."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldgen.camera import Intrinsics
from worldgen.depth.base import CEILING, GROUND, SKY, VERTICAL, DepthEstimate
from worldgen.depth.popup import PopupBackend, PopupConfig, popup_depth
from worldgen.errors import InputError

W, H = 240, 160
CAM_H = 1.6


def _noise(a: np.ndarray, b: np.ndarray, cell: float, seed: int) -> np.ndarray:
    """Deterministic blocky value noise in [0, 1] over world coordinates (a, b)."""
    ia = np.floor(a / cell).astype(np.int64)
    ib = np.floor(b / cell).astype(np.int64)
    hsh = (ia * 73856093) ^ (ib * 19349663) ^ (seed * 83492791)
    return ((hsh % 1000 + 1000) % 1000) / 999.0


def _camera_rays(K: Intrinsics, pitch_deg: float):
    """Camera-frame rays r = (x, y, 1) and their world directions (x right, y down, z
    forward at zero pitch; the camera is pitched up by ``pitch_deg``)."""
    u, v = np.meshgrid(np.arange(K.width, dtype=np.float64), np.arange(K.height, dtype=np.float64))
    x = (u - K.cx) / K.fx
    y = (v - K.cy) / K.fy
    th = math.radians(pitch_deg)
    c, s = math.cos(th), math.sin(th)
    d = np.stack([x, y * c - s, y * s + c], axis=-1)  # world direction with camera-z = 1
    return x, y, d


def render_outdoor(pitch_deg: float = 0.0):
    """Blue sky, textured grey ground 1.6 m below the camera, a textured red box 4 m wide and
    3 m tall standing on the ground 8 m ahead. Returns image, intrinsics, labels, z-depth."""
    K = Intrinsics.from_hfov(60.0, W, H)
    x, y, d = _camera_rays(K, pitch_deg)
    inf = np.full(x.shape, np.inf)
    # ground: world y = +CAM_H
    with np.errstate(divide="ignore", invalid="ignore"):
        t_g = np.where(d[..., 1] > 1e-9, CAM_H / d[..., 1], np.inf)
    # box front face at world Z = 8, X in [-2, 2], from the ground up to 3 m
    zb = 8.0
    with np.errstate(divide="ignore", invalid="ignore"):
        t_b = np.where(d[..., 2] > 1e-9, zb / d[..., 2], np.inf)
    Xb = t_b * d[..., 0]
    Yb = t_b * d[..., 1]
    hit_b = (np.abs(Xb) <= 2.0) & (Yb <= CAM_H) & (Yb >= CAM_H - 3.0) & np.isfinite(t_b)
    t_b = np.where(hit_b, t_b, inf)
    t = np.minimum(t_g, t_b)
    labels = np.full(x.shape, SKY, np.uint8)
    labels[np.isfinite(t_g) & (t_g <= t_b)] = GROUND
    labels[hit_b & (t_b < t_g)] = VERTICAL

    img = np.zeros((H, W, 3), np.float32)
    # sky: deeper blue higher up
    elev = np.clip(-d[..., 1] / np.linalg.norm(d, axis=-1), 0.0, 1.0)
    sky = np.stack([0.45 - 0.25 * elev, 0.62 - 0.2 * elev, 0.95 - 0.05 * elev], -1)
    img[labels == SKY] = sky[labels == SKY]
    # ground: grey-brown blocky texture (0.5 m tiles) with fine speckle
    Xg, Zg = t_g * d[..., 0], t_g * d[..., 2]
    g = labels == GROUND
    n1 = _noise(Xg[g], Zg[g], 0.5, 1)
    n2 = _noise(Xg[g], Zg[g], 0.13, 2)
    base = 0.36 + 0.14 * n1 + 0.06 * n2
    img[g] = np.stack([base * 1.05, base, base * 0.9], -1)
    # box: red bricks 0.5 x 0.25 m with dark mortar lines
    b = labels == VERTICAL
    Xs, Ys = Xb[b], Yb[b]
    row = np.floor(Ys / 0.25)
    off = (row % 2) * 0.25
    mortar = ((Ys / 0.25) % 1.0 < 0.15) | (((Xs + off) / 0.5) % 1.0 < 0.08)
    nb = _noise(Xs + off, row, 0.5, 3)
    red = np.stack([0.55 + 0.2 * nb, 0.18 + 0.08 * nb, 0.12 + 0.05 * nb], -1)
    red[mortar] = [0.25, 0.22, 0.2]
    img[b] = red
    return np.clip(img, 0, 1), K, labels, np.where(np.isfinite(t), t, np.nan)


def render_room(pitch_deg: float = -5.0):
    """A closed room: wooden floor 1.6 m below the camera, a smooth light-grey ceiling at 2.7 m,
    beige side walls at x = +-2.5 m and a back wall 6 m ahead."""
    K = Intrinsics.from_hfov(60.0, W, H)
    x, y, d = _camera_rays(K, pitch_deg)
    hc = 2.7 - CAM_H
    ts = {}
    with np.errstate(divide="ignore", invalid="ignore"):
        ts["floor"] = np.where(d[..., 1] > 1e-9, CAM_H / d[..., 1], np.inf)
        ts["ceiling"] = np.where(d[..., 1] < -1e-9, -hc / d[..., 1], np.inf)
        ts["back"] = np.where(d[..., 2] > 1e-9, 6.0 / d[..., 2], np.inf)
        ts["left"] = np.where(d[..., 0] < -1e-9, -2.5 / d[..., 0], np.inf)
        ts["right"] = np.where(d[..., 0] > 1e-9, 2.5 / d[..., 0], np.inf)
    names = list(ts)
    T = np.stack([ts[k] for k in names], 0)
    which = np.argmin(T, 0)
    t = np.min(T, 0)
    P = t[..., None] * d
    img = np.zeros((H, W, 3), np.float32)
    labels = np.full(x.shape, VERTICAL, np.uint8)
    f = which == names.index("floor")
    labels[f] = GROUND
    n1 = _noise(P[f][:, 0], P[f][:, 2] * 0.25, 0.2, 5)
    wood = 0.42 + 0.12 * n1 + 0.05 * np.sin(P[f][:, 2] * 9.0)
    img[f] = np.stack([wood * 1.15, wood * 0.85, wood * 0.55], -1)
    c = which == names.index("ceiling")
    labels[c] = CEILING
    shade = 0.72 - 0.02 * np.clip(t[c] / 6.0, 0, 1)
    img[c] = np.stack([shade, shade * 0.98, shade * 0.95], -1)
    for k, (s0, s1) in {"back": (0, 1), "left": (2, 1), "right": (2, 1)}.items():
        m = which == names.index(k)
        nw = _noise(P[m][:, s0], P[m][:, s1], 0.3, 7)
        stripes = (np.abs(P[m][:, s0] * 2.0) % 1.0) < 0.06
        val = 0.55 + 0.08 * nw - 0.18 * stripes
        img[m] = np.stack([val * 1.1, val * 0.95, val * 0.75], -1)
    return np.clip(img, 0, 1), K, labels, t


@pytest.fixture(scope="module")
def outdoor():
    img, K, lab, z = render_outdoor()
    return img, K, lab, z, popup_depth(img, K)


def _class_recall(pred: np.ndarray, true: np.ndarray, cls: int) -> float:
    m = true == cls
    return float((pred[m] == cls).mean())


def test_result_type_and_validity(outdoor):
    img, K, _, _, est = outdoor
    assert isinstance(est, DepthEstimate)
    assert est.kind == "metric"
    assert est.depth.shape == (H, W) and est.depth.dtype == np.float32
    assert est.labels is not None and est.labels.dtype == np.uint8
    assert np.isfinite(est.depth).all() and (est.depth > 0).all()
    assert est.ground_normal is not None and est.ground_normal.shape == (3,)
    assert abs(np.linalg.norm(est.ground_normal) - 1.0) < 1e-6
    for key in ("horizon_row", "pitch_deg", "indoor"):
        assert key in est.info
    assert est.info["indoor"] is False


def test_outdoor_labels(outdoor):
    _, _, lab, _, est = outdoor
    for cls in (GROUND, VERTICAL, SKY):
        assert _class_recall(est.labels, lab, cls) >= 0.85, cls
    assert not (est.labels == CEILING).any()


def test_outdoor_geometry(outdoor):
    _, K, lab, z, est = outdoor
    # ground: exact plane depth where the ground is seen up to 40 m
    g = (lab == GROUND) & (est.labels == GROUND) & (z < 40.0)
    rel = np.abs(est.depth[g] / z[g] - 1.0)
    assert np.median(rel) < 0.10
    # the box stands on the ground 8 m away
    b = (lab == VERTICAL) & (est.labels == VERTICAL)
    assert abs(np.median(est.depth[b]) / 8.0 - 1.0) < 0.20
    # sky is a dome: constant distance along every ray
    s = est.labels == SKY
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    norm = np.sqrt(((u - K.cx) / K.fx) ** 2 + ((v - K.cy) / K.fy) ** 2 + 1.0)
    np.testing.assert_allclose(est.depth[s] * norm[s], PopupConfig().sky_distance, rtol=1e-4)
    # a level camera: horizon near the principal point, up is -y
    assert abs(est.info["pitch_deg"]) < 2.0
    assert est.ground_normal[1] < -0.99


@pytest.mark.parametrize("pitch", [-8.0, 8.0])
def test_pitch_moves_horizon(pitch):
    img, K, lab, z = render_outdoor(pitch)
    est = popup_depth(img, K)
    true_row = K.cy + K.fy * math.tan(math.radians(pitch))
    # looking up (pitch > 0) puts the horizon below the image centre, and vice versa
    assert np.sign(est.info["horizon_row"] - K.cy) == np.sign(pitch)
    assert abs(est.info["horizon_row"] - true_row) < 0.05 * H
    assert abs(est.info["pitch_deg"] - pitch) < 3.0
    n = est.ground_normal
    assert n[1] < 0  # up is towards -y (image up)
    assert np.sign(n[2]) == np.sign(pitch)  # looking up: up has a forward component
    # the ground of the pitched view still gets the right depth
    g = (lab == GROUND) & (est.labels == GROUND) & (z < 40.0)
    assert np.median(np.abs(est.depth[g] / z[g] - 1.0)) < 0.15


def test_indoor_room_is_closed():
    img, K, lab, z = render_room()
    cfg = PopupConfig()
    est = popup_depth(img, K, cfg)
    assert est.info["indoor"] is True
    assert not (est.labels == SKY).any()
    assert np.isfinite(est.depth).all() and (est.depth > 0).all()
    assert est.depth.max() <= cfg.indoor_max_depth
    # every point lies between the floor and the ceiling
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    r = np.stack([(u - K.cx) / K.fx, (v - K.cy) / K.fy, np.ones((H, W))], -1)
    X = est.depth[..., None] * r
    height = cfg.camera_height + X @ est.ground_normal
    assert height.max() <= cfg.ceiling_height + 0.05
    assert height.min() >= -0.05
    # the floor is found and the scene stays room-sized
    assert _class_recall(est.labels, lab, GROUND) >= 0.85
    assert np.median(est.depth[lab == GROUND] / z[lab == GROUND]) == pytest.approx(1.0, abs=0.3)


def test_deterministic(outdoor):
    img, K, _, _, est = outdoor
    again = popup_depth(img.copy(), K)
    np.testing.assert_array_equal(est.depth, again.depth)
    np.testing.assert_array_equal(est.labels, again.labels)
    assert est.info == again.info


def test_featureless_and_closeup_images_are_sound():
    K = Intrinsics.from_hfov(60.0, 96, 64)
    flat = np.full((64, 96, 3), 0.5, np.float32)
    rng = np.random.default_rng(0)
    noisy = rng.random((64, 96, 3)).astype(np.float32)
    for img in (flat, noisy, np.zeros((64, 96, 3), np.float32)):
        est = popup_depth(img, K)
        assert np.isfinite(est.depth).all() and (est.depth > 0).all()
        assert est.depth[est.labels != SKY].max() <= PopupConfig().max_depth


def test_bad_input_raises():
    K = Intrinsics.from_hfov(60.0, 32, 24)
    with pytest.raises(InputError):
        popup_depth(np.zeros((24, 32), np.float32), K)
    with pytest.raises(InputError):
        popup_depth(np.zeros((24, 32, 4), np.float32), K)
    with pytest.raises(InputError):
        popup_depth(np.zeros((20, 32, 3), np.float32), K)  # size does not match intrinsics
    bad = np.zeros((24, 32, 3), np.float32)
    bad[0, 0, 0] = np.nan
    with pytest.raises(InputError):
        popup_depth(bad, K)


def test_backend_protocol_and_options():
    be = PopupBackend()
    assert be.name == "popup"
    ok, why = be.available()
    assert ok and why
    img, K, _, _ = render_outdoor()
    est = be.estimate(img, K, camera_height=3.2)
    base = popup_depth(img, K)
    g = (est.labels == GROUND) & (base.labels == GROUND)
    # the metric scale follows the camera height prior
    assert np.median(est.depth[g] / base.depth[g]) == pytest.approx(2.0, rel=0.05)
    with pytest.raises(InputError):
        be.estimate(img, K, no_such_option=1)
    with pytest.raises(InputError):
        be.estimate(img, K, camera_height=-1.0)


def test_horizon_ignores_unsure_ground_above_it():
    """Grey clouds labelled ground with a low confidence above the sea must not raise the
    horizon (the beach panorama's world was tilted 19 degrees by them); confident ground does."""
    from worldgen.depth.popup import GROUND_CONFIDENCE, _horizon

    h, w, f = 100, 150, 120.0
    cfg = PopupConfig()
    lab = np.full((h, w), VERTICAL, np.uint8)
    lab[:20] = SKY
    lab[50:] = GROUND  # the sea and the sand up to the true horizon, row 50
    lab[25:40, :60] = GROUND  # the clouds
    conf = np.ones((h, w))
    conf[25:40, :60] = GROUND_CONFIDENCE - 0.2
    lim = math.radians(cfg.max_pitch_deg)
    unsure, _ = _horizon(lab, f, 49.5, cfg, False, lim, conf)
    trusted, _ = _horizon(lab, f, 49.5, cfg, False, lim, np.ones((h, w)))
    assert abs(unsure - 49.5) < 3.0
    assert trusted < 40.0  # taken at its word, the cloud raises it
