"""The distant band around the horizon (hills, tree lines, buildings; a room's walls indoors),
synthesised around 360° in an unwrapped cylinder.

The equirect columns are uniform in longitude, so the band's rows of the equirect *are* the
unwrapped cylinder (longitude x elevation; at the band's distance elevation is nearly linear in
height). Two things are synthesised:

* the **skyline profile** top(lon): measured where the photo sees it (the lowest sky pixel of a
  column: cables and branches in front of the sky do not raise it), continued around the
  circle by 1-D random-phase synthesis with the measured profile's spectrum and mean, joined to
  the measured ends with a Hermite (smoothstep) blend — periodic, so it closes behind;
* the **texture**: multi-scale PatchMatch completion (x-periodic) of the band's rows from the
  photo's far, non-sky content (near objects that touch the frame are left out of the sources:
  the band never copies a near object), labels keep band continuing band and sky sky.

The band's distance per column (``ring``) continues the photo's distant content: measured in
the photo's columns, blended over ``blend`` radians to its median elsewhere.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .synthesis import smoothstep


def edge_profile(
    values: np.ndarray, lon: np.ndarray, lon_l: float, lon_r: float, blend: float, default: float
) -> np.ndarray:
    """Per-column values [Wp] (NaN = unmeasured): interpolated inside the photo's longitude
    range [lon_l, lon_r], blended from the nearer edge value to the measured median outside
    (over ``blend`` radians, going around either way)."""
    meas = np.asarray(values, np.float64)
    ok = np.isfinite(meas)
    if not ok.any():
        return np.full_like(meas, default)
    med = float(np.median(meas[ok]))
    idx = np.nonzero(ok)[0]
    filled = meas.copy()
    inner = (lon >= lon_l) & (lon <= lon_r)
    filled[inner] = np.interp(lon[inner], lon[idx], meas[idx])
    dl = np.mod(lon_l - lon, 2 * math.pi)
    dr = np.mod(lon - lon_r, 2 * math.pi)
    near_left = dl < dr
    dist = np.where(near_left, dl, dr)
    edge = np.where(near_left, meas[idx[0]], meas[idx[-1]])
    w = smoothstep(dist / max(blend, 1e-6))
    out = np.where(inner, filled, (1 - w) * edge + w * med)
    return out


def skyline_profile(
    measured: np.ndarray,
    lon: np.ndarray,
    lon_l: float,
    lon_r: float,
    rng: np.random.Generator,
    *,
    blend: float,
    lo: float,
    hi: float,
) -> tuple[np.ndarray, dict]:
    """The band's top elevation per column [Wp] (radians): the measured skyline (NaN where the
    photo does not see it) continued by 1-D random-phase synthesis of its spectrum.

    The synthetic profile has the measured part's mean and power spectrum (the measured run,
    detrended and windowed, as the exemplar of a periodic Gaussian process of the circle's
    length); at each photo edge it is joined to the measured value by a smoothstep over
    ``blend`` radians. Clamped to [lo, hi]."""
    Wp = len(lon)
    ok = np.isfinite(measured)
    facts: dict = {"measured_columns": int(ok.sum())}
    if ok.sum() < 4:
        prof = np.full(Wp, np.clip(np.nanmedian(measured) if ok.any() else lo, lo, hi))
        facts["method"] = "constant (no skyline seen)"
        return prof, facts
    idx = np.nonzero(ok)[0]
    run = np.interp(np.arange(idx[0], idx[-1] + 1), idx, measured[idx])
    # label noise makes spikes: a skyline is a median over a few columns
    k = max(3, (len(run) // 24) | 1)
    run = ndimage.median_filter(run, size=k, mode="nearest")
    measured = measured.copy()
    measured[idx[0] : idx[-1] + 1] = run
    mean = float(run.mean())
    x = np.arange(len(run))
    trend = np.polyval(np.polyfit(x, run, 1), x) if len(run) > 2 else np.full(len(run), mean)
    ex = (
        (run - trend)
        * np.hanning(len(run))
        * math.sqrt(len(run) / max(np.sum(np.hanning(len(run)) ** 2), 1e-9))
    )
    spot = np.zeros(Wp)
    spot[: len(ex)] = ex / math.sqrt(len(ex))
    noise = rng.standard_normal(Wp)
    synth = np.real(np.fft.ifft(np.fft.fft(spot) * np.fft.fft(noise)))
    synth = ndimage.gaussian_filter1d(synth, max(1.0, k / 4), mode="wrap") + mean
    measured_full = edge_profile(measured, lon, lon_l, lon_r, blend, mean)
    inner = (lon >= lon_l) & (lon <= lon_r)
    dl = np.mod(lon_l - lon, 2 * math.pi)
    dr = np.mod(lon - lon_r, 2 * math.pi)
    w = smoothstep(np.minimum(dl, dr) / max(blend, 1e-6))
    # joined: the measured edge value fades into the synthetic profile
    edge_val = np.where(dl < dr, measured[idx[0]], measured[idx[-1]])
    out = np.where(inner, measured_full, (1 - w) * edge_val + w * synth)
    facts.update(method="random-phase 1-D synthesis", std_deg=math.degrees(float(ex.std())))
    return np.clip(out, lo, hi), facts


def band_rows(lat: np.ndarray, lat_lo: float, lat_hi: float) -> tuple[int, int]:
    """Row range [r0, r1) of an equirect (latitudes ``lat`` [Hp], decreasing) covering
    [lat_lo, lat_hi]."""
    rows = np.nonzero((lat <= lat_hi) & (lat >= lat_lo))[0]
    if len(rows) == 0:
        return 0, 0
    return int(rows[0]), int(rows[-1]) + 1
