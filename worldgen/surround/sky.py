"""The sky all around: a Perez sky model fitted to the photo's sky, clouds synthesised from the
photo's sky texture, and the photo's own sky blended in in the gradient domain.

Model (per colour channel c, linear RGB; Perez et al. 1993, the form of Preetham 1999)::

    L_c(theta, gamma) = k_c (1 + A_c exp(B / cos theta)) (1 + C_c exp(D gamma) + E cos^2 gamma)

theta = zenith angle of the view direction, gamma = angle to the sun (whose azimuth and
elevation are fitted too). The fit (``scipy.optimize.least_squares``, soft-L1 loss) runs on up
to ``max_fit_pixels`` of the photo's sky pixels, with weak priors toward Preetham's turbidity-3
coefficients: a narrow view constrains the zenith and the sun poorly, and the priors keep the
extrapolation plausible (a brighter horizon, a glow toward the sun side, a darker zenith).

Clouds: the residual photo − model (sRGB) in the largest sky rectangle of the photo, resampled
to the dome's angular resolution, is the exemplar of a periodic random-phase texture laid over
the dome in (longitude, latitude), faded out toward the horizon where real clouds are
foreshortened into haze.

All images are equirectangular in the world frame (``geometry``): [Hs, Ws, 3] float32 sRGB.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.optimize import least_squares

from .geometry import directions
from .synthesis import random_phase_texture, screened_correction, smoothstep

# Preetham's luminance coefficients at turbidity 3 (the priors' centre)
_PRIOR = {"A": -0.927, "B": -0.39, "C": 5.25, "D": -2.21, "E": 0.17}


def srgb_to_linear(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, 1.0)
    return np.where(c <= 0.04045, c / 12.92, ((c + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(c: np.ndarray) -> np.ndarray:
    c = np.clip(c, 0.0, None)
    return np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)


@dataclass(frozen=True)
class SkyModel:
    """Fitted Perez sky: per-channel k, A, C [3]; shared B, D, E; sun direction (world)."""

    k: np.ndarray
    A: np.ndarray
    B: float
    C: np.ndarray
    D: float
    E: float
    sun: np.ndarray  # [3] unit vector, world frame
    rms: float  # rms residual of the fit (sRGB units)

    def radiance(self, d: np.ndarray) -> np.ndarray:
        """Linear RGB [..., 3] of unit directions d [..., 3] (below the horizon: the horizon's)."""
        cos_t = np.clip(d[..., 1], 0.02, 1.0)[..., None]
        cos_g = np.clip(d @ self.sun, -1.0, 1.0)[..., None]
        gamma = np.arccos(cos_g)
        grad = 1.0 + self.A * np.exp(self.B / cos_t)
        glow = 1.0 + self.C * np.exp(self.D * gamma) + self.E * cos_g**2
        return np.maximum(self.k * grad * glow, 0.0)

    def to_dict(self) -> dict:
        return {
            "model": "perez",
            "k": self.k.tolist(),
            "A": self.A.tolist(),
            "B": self.B,
            "C": self.C.tolist(),
            "D": self.D,
            "E": self.E,
            "sun_direction": self.sun.tolist(),
            "sun_elevation_deg": math.degrees(math.asin(float(np.clip(self.sun[1], -1, 1)))),
            "sun_azimuth_deg": math.degrees(math.atan2(self.sun[0], -self.sun[2])),
            "rms": self.rms,
        }


def _within_gamut(img: np.ndarray, ref: np.ndarray, slack: float = 0.03) -> np.ndarray:
    """Keep an extrapolated sky [..., 3] within the photo's sky colours ``ref`` [N, 3]: its
    chromaticity (r, g, b) / (r + g + b) within the photo's 2nd-98th percentiles (+- slack),
    its brightness within 0.7x the darkest and 1.15x the brightest (2 %) sky pixel. A narrow view
    says little about the zenith and the far side; the model's shape stays, not wild colours."""
    s = img.sum(-1, keepdims=True)
    chroma = img / np.maximum(s, 1e-6)
    rs = ref.sum(-1, keepdims=True)
    rc = ref / np.maximum(rs, 1e-6)
    lo = np.percentile(rc, 2, axis=0) - slack
    hi = np.percentile(rc, 98, axis=0) + slack
    chroma = np.clip(chroma, lo, hi)
    chroma /= chroma.sum(-1, keepdims=True)
    s = np.clip(s, 0.7 * np.percentile(rs, 2), 1.15 * np.percentile(rs, 98))
    return (chroma * s).astype(np.float32)


def _sun_dir(az: float, el: float) -> np.ndarray:
    return np.array([math.sin(az) * math.cos(el), math.sin(el), -math.cos(az) * math.cos(el)])


def fit_sky(d: np.ndarray, rgb: np.ndarray, *, seed: int = 0, max_pixels: int = 1500) -> SkyModel:
    """Fit the model to sky pixels: d [N, 3] unit world directions, rgb [N, 3] sRGB in [0, 1]."""
    if len(d) == 0:
        raise ValueError("fit_sky needs at least one sky pixel")
    rng = np.random.default_rng(seed)
    if len(d) > max_pixels:
        pick = rng.choice(len(d), max_pixels, replace=False)
        d, rgb = d[pick], rgb[pick]
    lin = srgb_to_linear(rgb)
    # sun start: the azimuth of the brightest sky, low; a few starts, keep the best fit
    lum = lin @ np.array([0.2126, 0.7152, 0.0722])
    bright = d[lum >= np.percentile(lum, 98)].mean(0)
    az0 = math.atan2(bright[0], -bright[2])
    el_photo = float(np.clip(np.arcsin(np.clip(bright[1], -1, 1)), 0.02, 1.2))
    n_prior = max(1.0, 0.02 * len(d))  # weight of the priors, relative to the pixel count

    def unpack(p):
        return (np.exp(p[0:3]), p[3:6], p[6], np.exp(p[7:10]), p[10], p[11], _sun_dir(p[12], p[13]))

    def residuals(p):
        k, A, B, C, D, E, sun = unpack(p)
        m = SkyModel(k, A, B, C, D, E, sun, 0.0).radiance(d)
        r = (linear_to_srgb(m) - rgb).ravel()
        prior = np.concatenate(
            [
                (A - _PRIOR["A"]) * 0.5,
                [(B - _PRIOR["B"]) * 1.0],
                (p[7:10] - math.log(_PRIOR["C"])) * 0.3,
                [(D - _PRIOR["D"]) * 0.5, (E - _PRIOR["E"]) * 1.0],
                # a sun far out of the photo's view is unknown: keep it near its start
                [(p[12] - az0) * 0.2],
            ]
        )
        return np.concatenate([r, prior * math.sqrt(n_prior / len(d)) * 0.05])

    best = None
    for el in (el_photo, 0.5):
        k0 = np.log(np.maximum(np.median(lin, 0), 1e-4) / 4.0)
        p0 = np.concatenate(
            [k0, np.full(3, _PRIOR["A"]), [_PRIOR["B"]], np.full(3, math.log(_PRIOR["C"])),
             [_PRIOR["D"], _PRIOR["E"], az0, el]]
        )  # fmt: skip
        lo = np.concatenate(
            [k0 - 6, np.full(3, -3.0), [-2.0], np.full(3, -6.0), [-6, -2, -10, 0.0]]
        )
        hi = np.concatenate([k0 + 6, np.full(3, 0.0), [-0.02], np.full(3, 3.0), [-0.2, 2, 10, 1.5]])
        p0 = np.clip(p0, lo + 1e-6, hi - 1e-6)
        try:
            res = least_squares(residuals, p0, bounds=(lo, hi), loss="soft_l1", f_scale=0.05,
                                max_nfev=40, x_scale="jac", tr_solver="lsmr")  # fmt: skip
        except (ValueError, np.linalg.LinAlgError):
            continue
        if best is None or res.cost < best.cost:
            best = res
    if best is None:  # degenerate input: a flat sky of the median colour
        k = np.maximum(np.median(lin, 0), 1e-4)
        return SkyModel(k, np.zeros(3), -1.0, np.zeros(3), -1.0, 0.0, np.array([0, 1.0, 0]), 0.0)
    k, A, B, C, D, E, sun = unpack(best.x)
    m = SkyModel(k, A, B, C, D, E, sun, 0.0)
    rms = float(np.sqrt(np.mean((linear_to_srgb(m.radiance(d)) - rgb) ** 2)))
    return SkyModel(k, A, float(B), C, float(D), float(E), sun, rms)


def _largest_rectangle(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of the largest axis-aligned rectangle of True pixels (histogram method)."""
    H, W = mask.shape
    heights = np.zeros(W, int)
    best, box = 0, None
    for y in range(H):
        heights = np.where(mask[y], heights + 1, 0)
        stack: list[int] = []
        for x in range(W + 1):
            hx = heights[x] if x < W else 0
            while stack and heights[stack[-1]] >= hx:
                top = stack.pop()
                left = stack[-1] + 1 if stack else 0
                area = heights[top] * (x - left)
                if area > best:
                    best, box = area, (y - heights[top] + 1, y + 1, left, x)
            stack.append(x)
    return box


def cloud_exemplar(
    photo: np.ndarray, sky_mask: np.ndarray, model_srgb: np.ndarray, scale: float, min_px: int = 12
) -> np.ndarray | None:
    """The residual photo − model [h, w, 3] in the largest sky rectangle of the photo, resampled
    by ``scale`` (dome pixels per photo pixel, < 1 shrinks); None when it is too small."""
    resid = np.where(sky_mask[..., None], photo - model_srgb, 0.0)
    if scale < 1:
        zoom = (scale, scale)
        resid = np.stack([ndimage.zoom(resid[..., c], zoom, order=1) for c in range(3)], -1)
        sm = ndimage.zoom(sky_mask.astype(np.float32), zoom, order=1) > 0.999
    else:
        sm = sky_mask
    box = _largest_rectangle(ndimage.binary_erosion(sm, iterations=1))
    if box is None:
        return None
    y0, y1, x0, x1 = box
    if min(y1 - y0, x1 - x0) < min_px:
        return None
    return resid[y0:y1, x0:x1].astype(np.float32)


def sky_dome(
    model: SkyModel,
    width: int,
    photo_rgb: np.ndarray | None,
    photo_known: np.ndarray | None,
    exemplar: np.ndarray | None,
    *,
    seed: int,
    blend_decay_deg: float = 12.0,
    shrink: float = 0.5,
    shrink_ramp_deg: float = 45.0,
) -> tuple[np.ndarray, dict]:
    """The full-sphere sky image [width/2, width, 3] sRGB: the model everywhere, clouds on top,
    the photo's sky (``photo_rgb`` where ``photo_known``, equirect) blended in with a screened
    gradient-domain correction, so the photo's frame leaves no edge.

    A model fitted to a quarter of the sky's azimuths is sure of little behind the camera: its
    azimuthal variation is pulled toward its mean over the photo's longitudes (at the same
    elevation) by up to ``shrink``, reached ``shrink_ramp_deg`` away from the photo's longitudes
    (the glow the fit put in front no longer darkens the whole sky behind)."""
    Ws, Hs = int(width), int(width) // 2
    LON, LAT, d = directions(Ws, Hs)
    base = linear_to_srgb(model.radiance(d)).astype(np.float32)
    if photo_rgb is not None and photo_known is not None and photo_known.any():
        cols = photo_known.any(0)
        if shrink > 0 and not cols.all():
            ref = base[:, cols].mean(1, keepdims=True)  # [Hs, 1, 3]
            # each column's longitude distance to the nearest photo column (wrapping)
            idx = np.nonzero(cols)[0]
            gap = np.abs(np.arange(Ws)[:, None] - idx[None, :])
            gap = np.minimum(gap, Ws - gap).min(1) * (360.0 / Ws)
            w = shrink * smoothstep(gap / shrink_ramp_deg)
            base = base + w[None, :, None] * (ref - base)
        base = _within_gamut(base, photo_rgb[photo_known])
    rng = np.random.default_rng(seed)
    facts = {"clouds": exemplar is not None}
    if exemplar is not None:
        tex = random_phase_texture(exemplar, (Hs, Ws), rng)
        tex -= tex.reshape(-1, 3).mean(0)
        # clouds thin out toward the horizon (foreshortened into haze) and below it
        fade = smoothstep((LAT - math.radians(1.0)) / math.radians(12.0))[..., None]
        base = base + tex * fade
        facts["cloud_std"] = float(exemplar.std())
    dome = np.clip(base, 0.0, 1.0)
    if photo_rgb is not None and photo_known is not None and photo_known.any():
        mismatch = np.where(photo_known[..., None], photo_rgb - dome, 0.0)
        decay = blend_decay_deg / 360.0 * Ws
        corr = screened_correction(
            mismatch, photo_known, np.ones((Hs, Ws), bool), decay, wrap_x=True
        )
        dome = np.where(photo_known[..., None], photo_rgb, np.clip(dome + corr, 0.0, 1.0))
    return dome.astype(np.float32), facts
