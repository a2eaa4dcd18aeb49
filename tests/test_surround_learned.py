"""The learned surround loop (worldgen/surround/learned.py): view schedule, equirect <-> view
sampling, conditioning masks, depth alignment, colour, and the loop with analytic callables and
with the tiny random diffusers inpainting pipeline of tests/test_learned.py."""

from __future__ import annotations

import math

import numpy as np
import pytest

from worldgen.surround.geometry import directions
from worldgen.surround.learned import (
    LearnedSurroundConfig,
    View,
    align_view_depth,
    boundary_correction,
    conditioning_mask,
    harmonise_colour,
    outpaint_ring,
    render_view,
    robust_scale_shift,
    view_schedule,
    write_view,
)

try:  # the tiny random models of tests/test_learned.py (its module fixture; the [ml] extra)
    from tests.test_learned import tiny  # noqa: F401

    HAVE_ML = True
except pytest.skip.Exception:
    HAVE_ML = False

# ----------------------------------------------------------------------------- schedule


def test_view_schedule_order_coverage_and_overlap():
    views = view_schedule()
    assert [v.yaw_deg for v in views] == [45, -45, 90, -90, 135, -135, 180]
    assert [v.order for v in views] == list(range(7))
    assert all(v.fov_deg == 90 and v.pitch_deg == 0 and v.width == v.height == 512 for v in views)
    # every horizon direction is seen by >= 1 view (the photo's yaw 0 by the first pair)
    yaws = np.array([v.yaw_deg for v in views])
    lon = np.linspace(-180, 180, 3601)
    off = np.abs((lon[:, None] - yaws[None] + 180) % 360 - 180)
    assert (off <= 45 + 1e-9).any(1).all()
    # neighbours on the ring (the photo's slot at 0 included) overlap by >= 40 degrees
    ring = np.sort(np.r_[0.0, yaws])
    gaps = np.diff(np.r_[ring, ring[0] + 360])
    assert (90 - gaps >= 40).all()
    # the closing view is last and both its neighbours come before it
    assert views[-1].yaw_deg == 180 and {135, -135} <= {v.yaw_deg for v in views[:-1]}
    # other counts spread evenly up to 180
    assert [v.yaw_deg for v in view_schedule(6, 100, 60)] == [60, -60, 120, -120, 180]


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"n_views": 7}, "even"),
        ({"n_views": 2}, "even"),
        ({"fov_deg": 200}, "fov_deg"),
        ({"first_yaw_deg": 0}, "first_yaw_deg"),
        ({"n_views": 4, "fov_deg": 60}, "between neighbours"),
        ({"size": 8}, "size"),
    ],
)
def test_view_schedule_rejects_bad_arguments(kw, msg):
    with pytest.raises(ValueError, match=msg):
        view_schedule(**kw)


def test_view_axes_follow_the_world_convention():
    R = View(90.0, 0.0, 90.0, 64, 64, 0).world_from_camera()
    np.testing.assert_allclose(R[:, 2], [1, 0, 0], atol=1e-12)  # yaw 90 looks at +X
    np.testing.assert_allclose(R[:, 1], [0, -1, 0], atol=1e-12)  # image y is down
    np.testing.assert_allclose(R[:, 0], [0, 0, 1], atol=1e-12)  # right of +X is +Z
    up = View(0.0, 30.0, 90.0, 64, 64, 0).world_from_camera()[:, 2]
    assert up[1] == pytest.approx(math.sin(math.radians(30)))


# ----------------------------------------------------------------------------- render / write


def _synthetic_pano(Hp=256):
    lon, lat, _ = directions(2 * Hp, Hp)
    smooth = np.stack(
        [0.5 + 0.4 * np.sin(lon), 0.5 + 0.4 * np.sin(2 * lat), 0.5 + 0.2 * np.cos(3 * lon)], -1
    )
    check = (np.floor(lon / (math.pi / 8)) + np.floor(lat / (math.pi / 8))) % 2
    rgb = (0.7 * smooth + 0.3 * check[..., None]).astype(np.float32)
    dist = (5.0 + 2.0 * np.sin(lon) + np.cos(lat)).astype(np.float32)
    return rgb, dist


def test_render_then_write_reproduces_the_equirect_inside_the_frustum():
    rgb, dist = _synthetic_pano()
    known = np.ones(dist.shape, bool)
    for view in view_schedule(size=256)[::3]:
        vi = render_view(rgb, dist, known, view)
        assert vi.rgb.shape == (256, 256, 3) and vi.depth.shape == (256, 256) and vi.known.all()
        empty = np.zeros_like(known)
        up = write_view(np.zeros_like(rgb), np.full_like(dist, np.nan), empty, view, *vi[:2])
        w = up.written
        assert 0.1 < w.mean() < 0.2 and (up.known == w).all()
        psnr = 10 * np.log10(1.0 / np.mean((up.rgb[w] - rgb[w]) ** 2))
        assert psnr > 30, (view, psnr)
        assert np.abs(up.distance[w] / dist[w] - 1).max() < 0.01
        assert (up.rgb[~w] == 0).all() and np.isnan(up.distance[~w]).all()


def test_write_view_never_overwrites_known_pixels_and_honours_valid():
    rgb, dist = _synthetic_pano(64)
    view = view_schedule(size=32)[0]
    known = np.zeros(dist.shape, bool)
    known[:, :64] = True  # the left half of the equirect (lon < 0)
    pano = np.zeros_like(rgb)
    ones = np.ones((32, 32, 3), np.float32)
    up = write_view(pano, dist, known, view, ones, np.full((32, 32), 3.0, np.float32))
    assert not (up.written & known).any() and (up.rgb[known] == 0).all() and up.written.any()
    valid = np.zeros((32, 32), bool)
    valid[:, 16:] = True  # only the view's right half
    half = write_view(pano, dist, known, view, ones, np.ones((32, 32)), valid=valid)
    assert half.written.sum() < 0.6 * up.written.sum() and half.written.any()


def test_a_known_direction_lands_on_the_expected_view_pixel():
    Hp, S = 512, 129
    lon, lat, _ = directions(2 * Hp, Hp)
    rgb = np.zeros((Hp, 2 * Hp, 3), np.float32)
    # a red dot at lon 90, lat 0 and a green one at lon 100, lat +20 deg (right of, above it)
    for (lo, la), c in (((90.0, 0.0), 0), ((100.0, 20.0), 1)):
        near = np.hypot(lon - math.radians(lo), lat - math.radians(la)) < math.radians(0.6)
        rgb[near, c] = 1.0
    dist = np.full((Hp, 2 * Hp), 10.0, np.float32)
    view = next(v for v in view_schedule(size=S) if v.yaw_deg == 90)
    vi = render_view(rgb, dist, np.ones((Hp, 2 * Hp), bool), view)
    red = np.unravel_index(np.argmax(vi.rgb[..., 0]), (S, S))
    assert red == ((S - 1) // 2, (S - 1) // 2)
    green = np.unravel_index(np.argmax(vi.rgb[..., 1]), (S, S))
    f = view.focal
    x = f * math.tan(math.radians(10.0))  # camera coordinates of the green dot's direction
    y = -f * math.tan(math.radians(20.0)) / math.cos(math.radians(10.0))
    assert abs(green[1] - ((S - 1) / 2 + x)) <= 1 and abs(green[0] - ((S - 1) / 2 + y)) <= 1
    # z-depth of a constant-distance sphere: distance * cos(angle off axis)
    assert vi.depth[64, 64] == pytest.approx(10.0, rel=1e-4)
    corner = (S - 1) / 2 / f  # the corner pixel's centre at (-corner, -corner, 1)
    assert vi.depth[0, 0] == pytest.approx(10.0 / math.sqrt(1 + 2 * corner**2), rel=1e-4)


def test_render_view_known_mask_and_prefill():
    rgb, dist = _synthetic_pano(64)
    known = np.zeros(dist.shape, bool)
    lon, _, _ = directions(128, 64)
    known[:, lon[0] < math.radians(45)] = True  # everything left of the yaw-45 view's centre
    vi = render_view(rgb, dist, known, view_schedule(size=32)[0])
    assert vi.known[:, :14].all() and not vi.known[:, 18:].any()
    assert np.isnan(vi.depth[~vi.known]).all() and np.isfinite(vi.depth[vi.known]).all()
    assert vi.rgb[:, 20:].std() > 0.05  # unknown pixels carry the prefill


# ----------------------------------------------------------------------------- masks


def test_conditioning_mask_grows_into_known_and_drops_islands():
    known = np.zeros((64, 64), bool)
    known[:, :32] = True  # a large known part
    known[10:13, 50:53] = True  # a 3 px island
    known[40:52, 44:56] = True  # a 12 px block (kept)
    m = conditioning_mask(known, dilate_px=4, erode_px=2)
    assert m[10:13, 50:53].all()  # the island is regenerated
    assert not m[20, 27] and m[20, 28:32].all()  # grown 4 px into the big known part
    assert not m[46, 49] and m[46, 44:48].all()  # the block survives, its edge is repainted
    assert m[~known].all()  # every unknown pixel is generated
    none = conditioning_mask(known, 0, 0)
    np.testing.assert_array_equal(none, ~known)
    assert conditioning_mask(np.ones((8, 8), bool), 3, 1).sum() == 0
    assert conditioning_mask(np.zeros((8, 8), bool), 3, 1).all()
    with pytest.raises(ValueError, match="bool"):
        conditioning_mask(known.astype(np.uint8), 1, 1)


# ----------------------------------------------------------------------------- depth


def test_robust_scale_shift_with_noise_and_outliers():
    rng = np.random.default_rng(0)
    n, s, t = 5000, 2.5, 0.03
    true_inv = 1.0 / rng.uniform(2.0, 30.0, n)
    pred = (true_inv - t) / s + rng.normal(0.0, 0.001, n)
    out = rng.random(n) < 0.2
    pred[out] = rng.uniform(0.0, 2 * pred.max(), out.sum())  # 20 % another surface
    s_, t_, rel, inliers = robust_scale_shift(pred, true_inv)
    assert s_ == pytest.approx(s, rel=0.02) and t_ == pytest.approx(t, rel=0.02)
    assert 0.7 < inliers < 0.9 and rel < 0.05
    assert robust_scale_shift(pred[:10], true_inv[:10]) is None
    assert robust_scale_shift(np.ones(100), true_inv[:100]) is None
    assert robust_scale_shift(pred, -true_inv) is None


def test_boundary_correction_meets_the_border_and_fades():
    h, w = 48, 96
    free = np.zeros((h, w), bool)
    free[:, 40:] = True
    fixed = np.zeros((h, w), bool)
    fixed[:, 39] = True
    res = np.full((h, w), 0.5)
    c = boundary_correction(res, fixed, free, decay_px=8.0)
    assert (c[:, 39] == 0.5).all() and (c[:, :39] == 0).all()
    assert np.all(np.diff(c[:, 40:], axis=1) < 0)  # decays monotonically
    assert c[:, 40].min() > 0.4  # ~ 0.5 exp(-1 / 8)
    assert np.abs(c[:, -20:]).max() < 1.2 * 0.5 * math.exp(-(76 - 39) / 8)
    harmonic = boundary_correction(res, fixed, free, decay_px=0.0)
    np.testing.assert_allclose(harmonic[:, 40:], 0.5, atol=1e-6)  # no fade: constant


def test_aligned_new_depth_is_continuous_with_the_known_depth():
    h, w = 64, 128
    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:h, 0:w]
    z_true = 10.0 + 2.0 * yy / h + 1.0 * xx / w  # a smooth surface
    known = xx < 48
    new = ~known
    s, t = 3.0, 0.02
    pred = (1.0 / z_true - t) / s + rng.normal(0.0, 2e-4, (h, w))
    pred[new] += 0.004  # the model puts the new content 10 % nearer: a step at the border
    known_depth = np.where(known, z_true, np.nan)
    inv, facts = align_view_depth(pred, known_depth, known, new, decay_px=10.0)
    assert facts["scale"] == pytest.approx(s, rel=0.02) and facts["shift"] == pytest.approx(
        t, rel=0.05
    )
    z_new = 1.0 / inv
    jump = np.abs(z_new[:, 48] / z_true[:, 47] - 1)
    assert jump.max() < 0.01, jump.max()
    uncorrected = 1.0 / (facts["scale"] * pred + facts["shift"])
    assert np.abs(uncorrected[:, 48] / z_true[:, 47] - 1).min() > 0.05
    # far from the border the correction has faded: the aligned prediction is left as it was
    far = xx >= 48 + 60
    np.testing.assert_allclose(z_new[far], uncorrected[far], rtol=0.01)
    assert np.isnan(inv[known]).all()
    assert align_view_depth(pred, known_depth, known & (xx < 2) & (yy < 5), new) is None


def test_harmonise_colour_removes_a_colour_shift():
    rng = np.random.default_rng(2)
    ref = rng.uniform(0.2, 0.8, (32, 32, 3)).astype(np.float32)
    gen = np.clip(ref * 0.8 + np.array([0.1, -0.05, 0.05]), 0, 1).astype(np.float32)
    overlap = np.zeros((32, 32), bool)
    overlap[:, :16] = True
    before = np.abs(gen - ref)[~overlap].mean()
    for mode, gain in (("rgb", 0.1), ("lab", 0.35)):  # Lab: the shift is affine in RGB only
        out, facts = harmonise_colour(gen, ref, overlap, mode)
        assert facts["mode"] == mode
        assert np.abs(out - ref)[~overlap].mean() < gain * before
    same, _ = harmonise_colour(ref, ref, overlap)
    np.testing.assert_allclose(same, ref, atol=2e-3)
    with pytest.raises(ValueError, match="colour mode"):
        harmonise_colour(gen, ref, overlap, "hsv")


# ----------------------------------------------------------------------------- the loop

H_CAM, SKY = 1.6, 100.0
SMALL = LearnedSurroundConfig(size=64, dilate_px=3, erode_px=1, feather_px=2.0)


def _world(Hp=64):
    """A ground plane y = -1.6 under a sky dome at 100 m, the photo known in |lon| < 30 deg."""
    lon, lat, d = directions(2 * Hp, Hp)
    plane = np.where(d[..., 1] < -1e-6, H_CAM / np.maximum(-d[..., 1], 1e-6), np.inf)
    dist = np.minimum(plane, SKY).astype(np.float32)
    sky = dist >= SKY
    rgb = np.where(sky[..., None], [0.4, 0.6, 0.9], [0.35, 0.3, 0.2]).astype(np.float32)
    rgb += 0.05 * np.sin(8 * lon)[..., None].astype(np.float32)
    known = (np.abs(lon) < math.radians(30)) & (np.abs(lat) < math.radians(25))
    return (
        np.where(known[..., None], rgb, 0).astype(np.float32),
        np.where(known, dist, np.nan).astype(np.float32),
        known,
        dist,
    )


def _yaw_colour(yaw_deg: float) -> np.ndarray:
    a = math.radians(yaw_deg)
    return np.array([0.5 + 0.4 * math.sin(a), 0.5 + 0.4 * math.cos(a), 0.3], np.float32)


def _analytic_callables(config: LearnedSurroundConfig, s=3.0, t=0.05):
    views = view_schedule(config.n_views, config.fov_deg, config.first_yaw_deg, size=config.size)
    calls = []

    def inpaint(image, mask, prompt, seed):
        view = views[seed - 7]  # the loop's seed is 7
        calls.append((view.yaw_deg, float(mask.mean()), prompt))
        return np.where(mask[..., None], _yaw_colour(view.yaw_deg), image)

    def estimate_depth(image):
        n, f = config.size, views[0].focal
        y = (np.arange(n) - (n - 1) / 2) / f  # camera down component of the ray (pitch 0)
        inv = np.maximum(y, 0.0) / H_CAM  # the ground plane's 1 / z; the sky: 0
        return np.tile(((inv - t) / s)[:, None], (1, n))

    return inpaint, estimate_depth, calls


def test_outpaint_ring_with_analytic_callables():
    rgb, dist, known, true_dist = _world()
    inpaint, estimate_depth, calls = _analytic_callables(SMALL)
    seen = []
    r = outpaint_ring(
        rgb, dist, known, inpaint, estimate_depth, SMALL, prompt="a field", seed=7,
        sky_distance=SKY, progress=lambda k, n, view: seen.append((k, n, view.yaw_deg)),
    )  # fmt: skip
    assert seen[0] == (0, 7, 45.0) and seen[-1] == (6, 7, 180.0)
    Hp, Wp = known.shape
    lon, lat, _ = directions(Wp, Hp)
    # the horizon band is complete; the photo is untouched
    assert r.known[np.abs(lat) < math.radians(30)].all()
    assert r.facts["horizon_known_share"] == 1.0
    np.testing.assert_array_equal(r.rgb[known], rgb[known])
    np.testing.assert_array_equal(r.distance[known], dist[known])
    # order: 180 last, with known pixels on both of its sides
    assert [c[0] for c in calls] == [45, -45, 90, -90, 135, -135, 180]
    assert all(c[2] == "a field" for c in calls)
    close = r.facts["closing_view"]
    assert close["yaw_deg"] == 180 and close["known_left"] > 0.5 and close["known_right"] > 0.5
    views = r.facts["views"]
    assert [v["seed"] for v in views] == list(range(7, 14))
    assert views[0]["hole_share"] > views[-1]["hole_share"] > 0
    # each view's colour where only it wrote
    for yaw in (60.0, 112.0, -112.0, 157.0):
        j = np.argmin(np.abs(lat[:, 0]))
        i = np.argmin(np.abs(lon[0] - math.radians(yaw)))
        owner = min((45, -45, 90, -90, 135, -135), key=lambda y: abs(y - yaw))
        np.testing.assert_allclose(r.rgb[j, i], _yaw_colour(owner), atol=0.03)
    # depth: the aligned learned depth lies on the ground plane (scale 3, shift 0.05 recovered)
    for v in views:
        assert v["depth"]["method"].startswith("learned")
        assert v["depth"]["scale"] == pytest.approx(3.0, rel=0.02)
        assert v["depth"]["shift"] == pytest.approx(0.05, abs=0.002)
    new = r.known & ~known
    ground = new & (true_dist < 20)
    assert ground.sum() > 500
    assert np.abs(r.distance[ground] / true_dist[ground] - 1).max() < 0.02
    sky = new & (lat > math.radians(5))
    np.testing.assert_allclose(r.distance[sky], SKY, rtol=1e-3)
    # the same seed: the same output
    inpaint2, estimate2, _ = _analytic_callables(SMALL)
    r2 = outpaint_ring(
        rgb, dist, known, inpaint2, estimate2, SMALL, prompt="a field", seed=7, sky_distance=SKY
    )
    np.testing.assert_array_equal(r2.rgb, r.rgb)
    np.testing.assert_array_equal(r2.distance, r.distance)


def test_outpaint_ring_ground_snap_prefill_and_errors():
    rgb, dist, known, true_dist = _world()
    inpaint, _, _ = _analytic_callables(SMALL)
    flat = lambda image: np.full(image.shape[:2], 0.3)  # noqa: E731 no spread: cannot align
    prefilled = np.where(known, dist, true_dist * 1.5).astype(np.float32)
    r = outpaint_ring(
        rgb, prefilled, known, inpaint, flat, SMALL, seed=7, camera_height=H_CAM,
        sky_distance=SKY,
    )  # fmt: skip
    assert all(v["depth"]["method"].startswith("prefill") for v in r.facts["views"])
    new = r.known & ~known
    ground = new & (true_dist < 20)  # the prefill lies beyond the plane: snapped onto it
    np.testing.assert_allclose(r.distance[ground], true_dist[ground], rtol=0.01)
    assert sum(v["depth"]["ground_px"] for v in r.facts["views"]) > 0
    with pytest.raises(ValueError, match="no depth"):
        outpaint_ring(rgb, dist, known, inpaint, flat, SMALL, seed=7)
    bad = lambda image, mask, prompt, seed: image[:8]  # noqa: E731
    with pytest.raises(ValueError, match="inpaint must return"):
        outpaint_ring(rgb, prefilled, known, bad, None, SMALL, seed=7)
    with pytest.raises(ValueError, match="twice as wide"):
        outpaint_ring(rgb[:, :100], dist[:, :100], known[:, :100], inpaint, None, SMALL)


# ----------------------------------------------------------------------------- tiny models


@pytest.mark.skipif(not HAVE_ML, reason="needs the [ml] extra (diffusers, transformers)")
def test_outpaint_ring_with_the_tiny_diffusers_pipeline(tiny):  # noqa: F811
    from worldgen.depth.hf import LoadedDepthModel
    from worldgen.fill import get_fill_backend
    from worldgen.surround.learned import from_pipelines

    fill = get_fill_backend("diffusion", model=str(tiny["sd"]), device="cpu", steps=2)
    depth_model = LoadedDepthModel(str(tiny["da"]), "cpu")
    rgb, dist, known, true_dist = _world()
    prefill = np.full_like(rgb, 0.5)
    pano = np.where(known[..., None], rgb, prefill)
    cfg = LearnedSurroundConfig(n_views=4, fov_deg=130.0, first_yaw_deg=70.0, size=64)
    inpaint, estimate = from_pipelines(fill, depth_model)
    kw = {"prompt": "a park", "seed": 1, "camera_height": H_CAM, "sky_distance": SKY}
    r = outpaint_ring(pano, dist, known, inpaint, estimate, cfg, **kw)
    assert [v["yaw_deg"] for v in r.facts["views"]] == [70, -70, 180]
    assert r.rgb.shape == rgb.shape and r.distance.shape == dist.shape
    new = r.known & ~known
    assert new.mean() > 0.3 and r.facts["horizon_known_share"] > 0.95
    assert np.isfinite(r.rgb).all() and r.rgb.min() >= 0 and r.rgb.max() <= 1
    assert np.isfinite(r.distance[r.known]).all() and (r.distance[r.known] > 0).all()
    assert np.abs(r.rgb[new] - prefill[new]).mean() > 0.02  # the model generated something
    np.testing.assert_array_equal(r.rgb[known], pano[known])
    assert all("method" in v["depth"] for v in r.facts["views"])
    inv = estimate(np.clip(pano[:40, :48], 0, 1))  # the depth adapter alone
    assert inv.shape == (40, 48) and np.isfinite(inv).all()
    # a LoadedInpaint works too, with the settings given here
    inpaint, none = from_pipelines(fill.load(), None, steps=1, guidance=1.0)
    assert none is None
    out = inpaint(np.clip(pano[:32, :32], 0, 1), np.ones((32, 32), bool), "", 0)
    assert out.shape == (32, 32, 3) and np.isfinite(out).all()
    with pytest.raises(ValueError, match="DiffusionFill or a LoadedInpaint"):
        from_pipelines(object())
