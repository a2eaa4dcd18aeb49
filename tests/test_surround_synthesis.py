"""The surround's synthesis primitives against known answers: random-phase textures, the sky
model fit, the screened gradient-domain correction, quilting around a ring, the skyline, the
rectified ground's scale."""

import math

import numpy as np
import pytest

from worldgen.surround.band import skyline_profile
from worldgen.surround.geometry import directions
from worldgen.surround.ground import synthesise_ground
from worldgen.surround.sky import SkyModel, _within_gamut, fit_sky, linear_to_srgb, sky_dome
from worldgen.surround.synthesis import (
    quilt_ring,
    random_phase_texture,
    screened_correction,
)


def _stripes(h, w, period, seed=0):
    rng = np.random.default_rng(seed)
    x = np.arange(w)[None, :]
    base = 0.5 + 0.2 * np.sin(2 * np.pi * x / period) + 0.02 * rng.standard_normal((h, w))
    return np.repeat(base[..., None], 3, -1).astype(np.float32)


def test_random_phase_keeps_mean_spectrum_and_wraps():
    ex = _stripes(48, 64, 8.0)
    out = random_phase_texture(ex, (128, 256), np.random.default_rng(1))
    assert out.shape == (128, 256, 3)
    assert np.allclose(out.reshape(-1, 3).mean(0), ex.reshape(-1, 3).mean(0), atol=0.01)
    # the dominant horizontal frequency is the exemplar's (period 8 px -> bin 256 / 8 = 32)
    spec = np.abs(np.fft.rfft(out[..., 0] - out[..., 0].mean(), axis=1)).mean(0)
    assert abs(int(np.argmax(spec)) - 32) <= 1
    # periodic: the jump across the wrap is like any other column step
    steps = np.abs(np.diff(out[..., 0], axis=1)).mean()
    wrap = np.abs(out[:, 0, 0] - out[:, -1, 0]).mean()
    assert wrap < 2.0 * steps
    # seeded
    again = random_phase_texture(ex, (128, 256), np.random.default_rng(1))
    assert np.array_equal(out, again)


def test_sky_fit_recovers_a_known_sky():
    true = SkyModel(
        np.array([0.25, 0.35, 0.6]), np.array([-1.0, -0.9, -0.7]), -0.4,
        np.array([6.0, 5.0, 4.0]), -2.0, 0.2, np.array([0.5, 0.3, -0.81]) / 0.9995, 0.0,
    )  # fmt: skip
    true = SkyModel(true.k, true.A, true.B, true.C, true.D, true.E,
                    true.sun / np.linalg.norm(true.sun), 0.0)  # fmt: skip
    _, LAT, d = directions(256, 128)
    LON = np.arctan2(d[..., 0], -d[..., 2])
    seen = (LAT > 0.02) & (LAT < 0.6) & (np.abs(LON) < 0.8)  # a 90-degree photo's sky
    rgb = linear_to_srgb(true.radiance(d[seen]))
    m = fit_sky(d[seen], rgb, seed=0)
    assert m.rms < 0.02
    # inside the photo's view the fit reproduces the sky
    err = np.abs(linear_to_srgb(m.radiance(d[seen])) - rgb).mean()
    assert err < 0.02
    # the sun is found on the right side of the view, above the horizon
    assert m.sun[0] > 0.2 and m.sun[1] > 0


def test_sky_dome_joins_the_photo_without_an_edge():
    m = SkyModel(np.array([0.2, 0.3, 0.5]), np.full(3, -1.0), -0.4, np.full(3, 2.0), -2.0,
                 0.1, np.array([0.0, 0.5, -0.866]), 0.0)  # fmt: skip
    W, H = 256, 128
    LON, LAT, d = directions(W, H)
    known = (np.abs(LON) < 0.7) & (LAT > 0.05) & (LAT < 0.5)
    photo = np.zeros((H, W, 3), np.float32)
    photo[known] = (linear_to_srgb(m.radiance(d[known])) + 0.08).clip(0, 1)  # a brighter photo
    dome, _ = sky_dome(m, W, photo, known, None, seed=0, blend_decay_deg=10.0)
    assert np.allclose(dome[known], photo[known])
    # across the frame's edge the step is no larger than the neighbouring steps
    r = H // 2 - 10
    row = dome[r, :, 1]
    c = int(np.nonzero(known[r])[0].max())
    edge = abs(row[c + 1] - row[c])
    inner = np.abs(np.diff(row[c - 6 : c])).max()
    assert edge < 3 * inner + 2e-3
    # far from the photo the model comes back, its azimuthal variation halved toward its mean
    # over the photo's longitudes (kept within the photo's gamut)
    base = linear_to_srgb(m.radiance(d))
    ref = base[:, known.any(0)].mean(1, keepdims=True)
    far = (np.abs(LON) > 2.5) & (LAT > 0.3)
    want = _within_gamut((base + 0.5 * (ref - base))[far], photo[known])
    assert np.abs(dome[far] - want).mean() < 0.01
    unshrunk, _ = sky_dome(m, W, photo, known, None, seed=0, blend_decay_deg=10.0, shrink=0.0)
    model = _within_gamut(base[far], photo[known])
    assert np.abs(unshrunk[far] - model).mean() < 0.01


def test_screened_correction_meets_the_fixed_values_and_decays():
    H, W = 40, 120
    fixed = np.zeros((H, W), bool)
    fixed[:, 50:60] = True
    mismatch = np.where(fixed[..., None], 0.3, 0.0).astype(np.float32)
    c = screened_correction(mismatch, fixed, np.ones((H, W), bool), 5.0, wrap_x=True)
    assert np.allclose(c[fixed], 0.3, atol=1e-6)
    assert 0.1 < c[20, 62, 0] < 0.3  # next to the fixed band: most of the mismatch
    assert abs(c[20, 110, 0]) < 0.01  # far away: none
    assert np.all(np.diff(c[20, 60:90, 0]) <= 1e-6)  # monotonic fade


def test_quilt_ring_copies_source_columns_and_closes_the_ring():
    rng = np.random.default_rng(0)
    h, Ws, W = 12, 96, 256
    src = np.repeat(rng.random((1, Ws, 3)), h, 0).astype(np.float32)  # vertical stripes
    out = np.zeros((h, W, 3), np.float32)
    known = np.zeros(W, bool)
    known[100:196] = True
    out[:, known] = src
    res, facts = quilt_ring(src, np.ones((h, Ws), bool), out, known, rng, block=24, overlap=6)
    assert facts["blocks"] >= (W - known.sum()) // 18
    assert np.array_equal(res[:, known][:, 6:-6], out[:, known][:, 6:-6])  # the photo stays
    # every output column (away from seams) is a column of the source
    cols = res[0]
    dist = np.abs(cols[:, None, :] - src[0][None, :, :]).sum(-1).min(1)
    assert np.mean(dist < 1e-5) > 0.7
    # with the same generator state, the same quilt
    res2, _ = quilt_ring(src, np.ones((h, Ws), bool), out, known, np.random.default_rng(0),
                         block=24, overlap=6)  # fmt: skip
    res3, _ = quilt_ring(src, np.ones((h, Ws), bool), out, known, np.random.default_rng(0),
                         block=24, overlap=6)  # fmt: skip
    assert np.array_equal(res2, res3)


def test_skyline_profile_continues_the_photo_and_wraps():
    W = 512
    lon = -math.pi + (np.arange(W) + 0.5) * 2 * math.pi / W
    meas = np.full(W, np.nan)
    inner = np.abs(lon) < 0.7
    meas[inner] = 0.1 + 0.03 * np.sin(lon[inner] * 9)
    prof, facts = skyline_profile(meas, lon, lon[inner][0], lon[inner][-1],
                                  np.random.default_rng(0), blend=0.5, lo=0.01, hi=0.3)  # fmt: skip
    assert prof.shape == (W,) and np.all((prof >= 0.01) & (prof <= 0.3))
    assert np.allclose(prof[inner], meas[inner], atol=0.03)  # (a light median filter)
    assert abs(prof[0] - prof[-1]) < 0.02  # closes behind the spawn
    assert prof[~inner].std() > 1e-3  # not a constant-height band
    assert abs(prof[~inner].mean() - 0.1) < 0.05


def test_rectified_ground_keeps_the_photos_texture_scale():
    """A level camera 1.6 m above a plane striped every 0.5 m along x: the synthesised ground
    texture has the same period in metres."""
    from worldgen.camera import Intrinsics
    from worldgen.ground import unproject
    from worldgen.surround.geometry import project_to_photo

    H, W = 192, 256
    intr = Intrinsics.from_hfov(80, W, H)
    v, u = np.mgrid[0:H, 0:W].astype(float)
    ry = (v - intr.cy) / intr.fy
    below = ry > 0.05
    z = np.where(below, 1.6 / np.maximum(ry, 1e-6), 100.0)
    P = unproject(z.astype(np.float32), intr)
    P[..., 1] *= -1  # world: +y up (a level camera: world = camera with y flipped)
    P[..., 2] *= -1
    stripes = 0.5 + 0.25 * np.sign(np.sin(2 * np.pi * P[..., 0] / 0.5))
    img = np.repeat(stripes[..., None], 3, -1).astype(np.float32)
    R = np.diag([1.0, -1.0, -1.0])
    fp = np.linalg.norm(P, axis=-1) ** 2 / (intr.fx * 1.6)
    g = synthesise_ground(img, below, P, fp, lambda X: project_to_photo(X, R, intr), seed=0)
    xs = np.arange(0, 8.0, g.cell)
    row = g.render(xs, np.full_like(xs, 20.0), np.full_like(xs, g.cell))[..., 0]
    spec = np.abs(np.fft.rfft(row - row.mean()))
    period = len(xs) * g.cell / max(int(np.argmax(spec[1:])) + 1, 1)
    assert period == pytest.approx(0.5, rel=0.15), (period, g.info)


def test_quilt_ring_spreads_its_picks_over_the_source():
    """A source whose one block matches every overlap best (a distinctive block) comes back
    over and over without the reuse cost; with it, the picks cover the source."""
    rng = np.random.default_rng(3)
    h, Ws, W, block = 8, 240, 720, 24
    src = (0.5 + 0.05 * rng.standard_normal((h, Ws, 3))).astype(np.float32)
    src[:, 100:124] = 0.5  # flat: the best match of any (noisy) overlap's mean
    out = np.zeros((h, W, 3), np.float32)
    known = np.zeros(W, bool)
    known[:Ws] = True
    out[:, known] = src

    def uses(reuse):
        res, _ = quilt_ring(src, np.ones((h, Ws), bool), out, known, np.random.default_rng(0),
                            block=block, overlap=6, reuse=reuse)  # fmt: skip
        col = res[0, Ws:]
        match = np.abs(col[:, None, :] - src[0][None, :, :]).sum(-1).argmin(1)
        return np.bincount(match // block, minlength=Ws // block)

    spread, greedy = uses(0.5), uses(0.0)
    assert (spread > 0).sum() > (greedy > 0).sum()
    assert spread.max() < greedy.max()
