"""The surround's layout and composition: where every direction's surface is, and its colour.

Everything is an equirectangular grid in the **world frame** (``geometry``). The layout is a
prior continued from the photo:

* **ground**: the fitted ground plane, out to the band;
* the **band**: a vertical cylinder around the spawn at the distance of the photo's distant
  content (``band.edge_profile``), up to a synthesised skyline (``band.skyline_profile``);
  indoors the room's walls, up to the ceiling;
* a **ceiling** plane indoors; the **sky** outdoors (its own layer: a dome behind everything).

Colours: the ground from the rectified synthesis (``ground``), the band by x-periodic
PatchMatch completion of the photo's far content (``synthesis.complete_wrapped``), the sky from
the fitted sky model with clouds (``sky``), the photo's own pixels where it sees. A screened
gradient-domain correction along the photo's frame makes every boundary between the photo and
synthesised content seamless. Directions inside the photo's frustum are not lifted (the photo's
layers cover them); the sky dome is complete, behind everything.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ..camera import Intrinsics
from ..depth.base import CEILING, GROUND, SKY, VERTICAL
from ..ground import GroundFit, unproject
from .band import band_rows, edge_profile, skyline_profile
from .config import SurroundConfig
from .geometry import directions, project_to_photo, sample
from .ground import synthesise_ground
from .sky import cloud_exemplar, fit_sky, linear_to_srgb, sky_dome
from .synthesis import complete_wrapped, quilt_ring, random_phase_texture, screened_correction


@dataclass
class Panorama:
    """The surroundings (world frame, equirectangular).

    rgb:      [Hp, Wp, 3] float32 colours of every direction (photo + synthesis)
    distance: [Hp, Wp] float32 distance along the ray to the surface, metres (sky: the dome)
    labels:   [Hp, Wp] uint8 surface labels (GROUND / VERTICAL / SKY / CEILING)
    lift:     [Hp, Wp] bool, directions to lift as splats (outside the photo, within the yaw
              extent; sky is in the sky layer instead)
    sky_rgb:  [Hs, Ws, 3] float32 full-sphere sky colours, or None indoors
    ring:     [Wp] float32 horizontal distance of the band (walls) per longitude column
    covered:  [Wp] bool, columns with a world (the photo's yaw range plus the yaw extent)
    info:     facts for world.json
    """

    rgb: np.ndarray
    distance: np.ndarray
    labels: np.ndarray
    lift: np.ndarray
    sky_rgb: np.ndarray | None
    ring: np.ndarray
    covered: np.ndarray
    info: dict


def _column_stat(col: np.ndarray, values: np.ndarray, Wp: int, q: float) -> np.ndarray:
    """Per-column percentile ``q`` of ``values`` grouped by column index ``col`` (NaN if none)."""
    out = np.full(Wp, np.nan)
    if len(col) == 0:
        return out
    order = np.argsort(col, kind="stable")
    c, v = col[order], values[order]
    starts = np.searchsorted(c, np.arange(Wp))
    ends = np.searchsorted(c, np.arange(Wp), side="right")
    for j in np.nonzero(ends > starts)[0]:
        out[j] = np.percentile(v[starts[j] : ends[j]], q)
    return out


def extend(
    image: np.ndarray,
    depth: np.ndarray,
    labels: np.ndarray | None,
    intr: Intrinsics,
    ground: GroundFit,
    world_from_camera: np.ndarray,
    config: SurroundConfig,
    *,
    sky_distance: float,
    fill=None,
    seed: int = 0,
) -> Panorama:
    """Build the surround of the spawn. image [H, W, 3] sRGB, depth [H, W] metres (camera z),
    labels [H, W] or None. ``fill``: the build's fill backend; a diffusion backend adds the
    learned surround (``learned.outpaint_ring``) over the classical one, which stays its
    prefill and fallback."""
    import time

    t_start = time.perf_counter()
    times: dict[str, float] = {}

    def lap(name: str, t0: float) -> float:
        t = time.perf_counter()
        times[name] = round(t - t0, 3)
        return t

    rng = np.random.default_rng(seed)
    H, W = depth.shape
    assert image.shape == (H, W, 3), image.shape
    R_wc = world_from_camera[:3, :3]
    h = float(ground.height)
    Wp, Hp = int(config.width), int(config.width) // 2
    LON, LAT, d = directions(Wp, Hp)
    lon, lat = LON[0], LAT[:, 0]
    dlon, dlat = 2 * math.pi / Wp, math.pi / Hp

    # --- the photo in world coordinates -----------------------------------------------------
    Pimg = unproject(depth, intr) @ R_wc.T  # [H, W, 3] world points
    P = Pimg.reshape(-1, 3)
    if labels is None:
        labels = np.where(
            depth >= 0.9 * sky_distance, SKY, np.where(Pimg[..., 1] > -h + 0.3, VERTICAL, GROUND)
        ).astype(np.uint8)
    lab = labels.reshape(-1)
    horiz = np.hypot(P[:, 0], P[:, 2])
    p_lon = np.arctan2(P[:, 0], -P[:, 2])
    outdoor = bool((lab == SKY).mean() > 0.02)
    sky_model = None
    if outdoor:  # the sky model fitted to the sky, and what else above the horizon it explains
        labels, sky_model, n_like = _sky_like(image, labels, Pimg, seed)
        lab = labels.reshape(-1)
    is_vert = lab == VERTICAL
    ceiling_y = None
    if np.any(lab == CEILING):
        ceiling_y = float(np.median(P[lab == CEILING, 1]))
    elif not outdoor:
        ceiling_y = max(config.ceiling_height - h, 0.5)
    lon_l, lon_r = float(np.min(p_lon)), float(np.max(p_lon))
    blend = math.radians(config.blend_deg)

    # the photo seen in the panorama
    u, v, inside = project_to_photo(d, R_wc, intr)
    photo_eq = np.zeros((Hp, Wp, 3), np.float32)
    photo_eq[inside] = sample(image, u[inside], v[inside])
    lab_eq = np.full((Hp, Wp), 255, np.uint8)
    lab_eq[inside] = sample(labels.astype(np.float32), u[inside], v[inside], order=0)
    dist_eq = np.full((Hp, Wp), np.nan, np.float32)
    dist_eq[inside] = sample(np.linalg.norm(Pimg, axis=-1), u[inside], v[inside], order=0)
    t = lap("photo", t_start)

    # --- band distance and skyline -----------------------------------------------------------
    col = np.clip(((p_lon + math.pi) / (2 * math.pi) * Wp).astype(int), 0, Wp - 1)
    q = 75.0 if outdoor else 50.0  # outdoors the band is the distant content of the column
    R_col = _column_stat(col[is_vert], horiz[is_vert], Wp, q)
    lo_R = config.min_wall_distance if not outdoor else config.min_band_distance
    R_default = min(config.max_wall_distance, 0.5 * sky_distance)
    R_ring = edge_profile(R_col, lon, lon_l, lon_r, blend, R_default)
    R_ring = np.clip(R_ring, lo_R, config.max_wall_distance)
    base_lat = -np.arctan2(h, R_ring)  # where the ground meets the band
    skyline_facts: dict = {}
    band_facts: dict = {}
    quilt = None
    near_cut = 0.35 * float(np.median(horiz[is_vert])) if is_vert.any() else 0.0
    if ceiling_y is not None:  # indoors: walls reach the ceiling
        top_ring = np.arctan2(ceiling_y, R_ring)
    else:
        # the lowest sky pixel of every photo column (cables and branches do not raise it);
        # sky = labelled so, or within reach of the sky model's colour (clouds)
        sky_eq = inside & (lab_eq == SKY)
        if sky_model is not None:
            pred = linear_to_srgb(sky_model.radiance(d[inside]))
            like = np.zeros_like(sky_eq)
            like[inside] = np.abs(photo_eq[inside] - pred).max(-1) < 0.12
            sky_eq |= like & (LAT > math.radians(0.5)) & (lab_eq != GROUND)
            # a column's sky reaches down as long as the run from the photo's top is sky-like
            run = np.cumprod(np.where(inside, sky_eq, True), axis=0).astype(bool)
            sky_eq = (lab_eq == SKY) & inside | (run & inside)
        seen = inside.any(0)
        low = np.where(sky_eq, np.arange(Hp)[:, None], -1).max(0)
        meas = np.full(Wp, np.nan)
        has = seen & (low >= 0)
        meas[has] = lat[np.clip(low[has] + 1, 0, Hp - 1)] + 0.5 * dlat
        meas = np.maximum(meas, base_lat + dlat)
        top_ring, skyline_facts = skyline_profile(
            meas, lon, lon_l, lon_r, rng, blend=blend,
            lo=math.radians(0.5), hi=math.radians(config.max_skyline_deg),
        )  # fmt: skip
        top_ring = np.maximum(top_ring, base_lat + dlat)
        # the band quilted around the ring from the photo's own columns: texture and skyline
        quilt = _quilt_band(
            photo_eq, lab_eq, dist_eq, inside, lat, base_lat, top_ring, near_cut, config, rng
        )
        if quilt is not None:
            q_rows, q_rgb, q_sky, band_facts = quilt
            photo_cols = inside[q_rows[0] : q_rows[1]].all(0)
            nonsky = q_sky < 0.5
            rows_lat = lat[q_rows[0] : q_rows[1]]
            top_q = np.where(nonsky.any(0), rows_lat[np.argmax(nonsky, 0)] + 0.5 * dlat, np.nan)
            top_q = ndimage.median_filter(np.nan_to_num(top_q, nan=float(base_lat.max())), 5,
                                          mode="wrap")  # fmt: skip
            top_ring = np.where(photo_cols, top_ring, np.maximum(top_q, base_lat + dlat))
            skyline_facts["method"] = "quilted with the band (the photo's own skylines)"
    t = lap("layout", t)

    # --- surfaces of every direction ---------------------------------------------------------
    Rr = R_ring[None, :]
    dy = d[..., 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        t_ground = np.where(dy < -1e-6, -h / dy, np.inf)
        t_wall = Rr / np.maximum(np.cos(LAT), 1e-6)
        t_ceil = np.where(dy > 1e-6, (ceiling_y or 0.0) / dy, np.inf)
    ground_hit = t_ground * np.cos(LAT) < Rr
    wall_hit = ~ground_hit & (LAT <= top_ring[None, :])
    plab = np.full((Hp, Wp), SKY, np.uint8)
    plab[wall_hit] = VERTICAL
    plab[ground_hit] = GROUND
    dist = np.where(ground_hit, t_ground, np.where(wall_hit, t_wall, sky_distance))
    if ceiling_y is not None:
        ceil = plab == SKY
        plab[ceil] = CEILING
        dist = np.where(ceil, t_ceil, dist)
        dist = np.where(np.isfinite(dist), dist, R_default)

    # --- ground: rectified synthesis, rendered with mip filtering ----------------------------
    rgb = np.zeros((Hp, Wp, 3), np.float32)
    gpx = labels == GROUND
    along = np.linalg.norm(Pimg, axis=-1) ** 2 / (intr.fx * h)  # footprint along the ray
    gtex = synthesise_ground(
        image, gpx, Pimg, np.maximum(along, np.linalg.norm(Pimg, axis=-1) / intr.fx),
        lambda X: project_to_photo(X, R_wc, intr), size=config.ground_size, seed=seed,
        patchmatch=config.ground_patchmatch,
    )  # fmt: skip
    floor = plab == GROUND
    Pg = d[floor] * t_ground[floor][:, None]
    sin_el = np.maximum(np.abs(d[floor][:, 1]), 1e-3)
    # the pixel's footprint is long along the ray and narrow across it: the mip level of their
    # geometric mean keeps the detail across (the major axis alone smeared it away)
    fp = np.maximum(t_ground[floor] * dlat / sin_el, t_ground[floor] * np.cos(LAT[floor]) * dlon)
    rgb[floor] = gtex.render(Pg[:, 0], Pg[:, 2], fp)
    t = lap("ground", t)

    # --- band: quilted outdoors; walls indoors by x-periodic PatchMatch completion ----------
    if quilt is not None:
        q_rows, q_rgb, _, _ = quilt
        sel = plab[q_rows[0] : q_rows[1]] == VERTICAL
        sub = rgb[q_rows[0] : q_rows[1]]
        sub[sel] = q_rgb[sel]
        rgb[q_rows[0] : q_rows[1]] = sub
    r0, r1 = band_rows(lat, float(base_lat.min()) - 3 * dlat, float(top_ring.max()) + 3 * dlat)
    if quilt is None and r1 > r0:
        strip_known = inside[r0:r1] & (lab_eq[r0:r1] != 255) & (lab_eq[r0:r1] != SKY)
        strip_known &= dist_eq[r0:r1] >= near_cut  # near objects touching the frame: no band
        strip = np.where(strip_known[..., None], photo_eq[r0:r1], 0.0).astype(np.float32)
        if strip_known.sum() >= 0.01 * strip_known.size:
            done = complete_wrapped(strip, ~strip_known, None, seed=seed)
            band_facts["method"] = "x-periodic PatchMatch from the photo's far content"
        else:  # nothing usable: the photo's mean colour near the horizon with fine noise
            row = image[max(0, int(intr.cy) - 4) : int(intr.cy) + 4].reshape(-1, 3)
            ex = image[max(0, int(intr.cy) - 16) : int(intr.cy) + 16]
            done = random_phase_texture(ex, strip.shape[:2], rng) - ex.reshape(-1, 3).mean(0)
            done = (done * 0.5 + row.mean(0)).astype(np.float32)
            band_facts["method"] = "random phase (no far content in the photo)"
        sel = plab[r0:r1] == VERTICAL
        sub = rgb[r0:r1]
        sub[sel] = done[sel]
        rgb[r0:r1] = sub
        band_facts.update(rows=[r0, r1], known_fraction=float(strip_known.mean()))
    t = lap("band", t)

    # --- ceiling (indoors): the photo's ceiling texture, else the walls' top colour ----------
    if ceiling_y is not None:
        cm = plab == CEILING
        src = image[labels == CEILING] if np.any(labels == CEILING) else None
        if src is None or len(src) < 64:
            wall_top = rgb[(plab == VERTICAL) & (LAT > 0.7 * top_ring[None, :])]
            c = (
                wall_top.mean(0)
                if len(wall_top)
                else image[: max(1, H // 10)].reshape(-1, 3).mean(0)
            )
            rgb[cm] = np.clip(c * 1.05, 0, 1)
        else:
            ex = image[: max(16, H // 6)]
            tex = random_phase_texture(ex - ex.reshape(-1, 3).mean(0), (Hp, Wp), rng)
            rgb[cm] = np.clip(src.mean(0) + 0.5 * tex[cm], 0, 1)

    # --- seams: the photo's frame edge, in the gradient domain -------------------------------
    synth = ~inside & (plab != SKY)
    ring_in = inside & ndimage.binary_dilation(~inside, iterations=2) & (lab_eq == plab)
    if ring_in.any() and synth.any():
        mismatch = np.where(ring_in[..., None], photo_eq - rgb, 0.0)
        corr = screened_correction(
            mismatch, ring_in, synth | ring_in, config.seam_decay_deg / 360 * Wp, wrap_x=True
        )
        rgb = np.where(synth[..., None], np.clip(rgb + corr, 0, 1), rgb)
    rgb = np.where(inside[..., None], photo_eq, rgb)
    rgb = _presharpen(rgb, plab, synth, config.presharpen)
    t = lap("seams", t)

    learned_facts = None
    if getattr(fill, "name", "") == "diffusion":
        rgb, dist, learned_facts = _learned(
            rgb, dist, plab, inside, fill, h, sky_distance, seed, config
        )
        t = lap("learned", t)

    yaw_extent = math.radians(config.yaw_extent_deg)
    dl = np.mod(lon_l - LON, 2 * math.pi)
    dr = np.mod(LON - lon_r, 2 * math.pi)
    within = (np.minimum(dl, dr) <= yaw_extent) | ((LON >= lon_l) & (LON <= lon_r))
    lift_mask = ~inside & within & (plab != SKY)

    # --- sky: the fitted model, clouds, the photo's sky blended in ----------------------------
    sky_rgb, sky_facts = None, {}
    if outdoor:
        sky_rgb, sky_facts = _sky(image, labels, Pimg, intr, R_wc, config, seed, sky_model)
        sky_facts["sky_like_pixels"] = n_like
    t = lap("sky", t)

    info = {
        "width": Wp,
        "height": Hp,
        "outdoor": outdoor,
        "ceiling_y": ceiling_y,
        "band_distance_median": float(np.median(R_ring)),
        "skyline": skyline_facts,
        "yaw_extent_deg": config.yaw_extent_deg,
        "photo_lon_deg": [math.degrees(lon_l), math.degrees(lon_r)],
        "lifted_pixels": int(lift_mask.sum()),
        "ground": gtex.info,
        "band": band_facts,
        "sky": sky_facts,
        "seconds": times,
    }
    if learned_facts is not None:
        info["learned"] = learned_facts
    return Panorama(
        rgb.astype(np.float32),
        dist.astype(np.float32),
        plab,
        lift_mask,
        sky_rgb,
        R_ring.astype(np.float32),
        within[0].copy(),
        info,
    )


def _learned(rgb, dist, plab, inside, fill, h: float, sky_distance: float, seed: int, config):
    """The learned surround over the classical prefill: perspective views around the spawn
    outpainted by the diffusion fill's model, their depth aligned to what is known
    (``learned``). The sky and the ground stay classical; the band's pixels take the new
    colours and distances, the ground the new colours."""
    from .learned import LearnedSurroundConfig, from_pipelines, outpaint_ring

    inpaint, depth_fn = from_pipelines(fill, getattr(fill, "depth_model", None))
    res = outpaint_ring(
        rgb, dist, inside, inpaint, depth_fn,
        LearnedSurroundConfig(n_views=config.learned_views, size=config.learned_view_size),
        prompt=getattr(fill, "prompt", None) or "", seed=seed, camera_height=h,
        sky_distance=sky_distance,
    )  # fmt: skip
    new = res.known & ~inside
    band = new & (plab == VERTICAL)
    out_rgb = np.where((new & (plab != SKY))[..., None], res.rgb, rgb).astype(np.float32)
    out_dist = np.where(band & np.isfinite(res.distance), res.distance, dist).astype(np.float32)
    return out_rgb, out_dist, res.facts


def _presharpen(rgb: np.ndarray, labels: np.ndarray, where: np.ndarray, amount: float):
    """Unsharp-mask the synthesised pixels: the splats that carry them blur like a Gaussian of
    about ``footprint_scale`` pixels, so their colours are pre-compensated for it. The blur is
    normalised within each surface label (no halo where the band meets the sky)."""
    if amount <= 0:
        return rgb
    out = rgb.copy()
    mode = ("nearest", "wrap")
    for k in np.unique(labels[where]):
        m = (labels == k).astype(np.float32)
        num = ndimage.gaussian_filter(rgb * m[..., None], (1.0, 1.0, 0), mode=mode + ("nearest",))
        den = ndimage.gaussian_filter(m, 1.0, mode=mode)[..., None]
        blur = num / np.maximum(den, 1e-6)
        sel = where & (labels == k)
        out[sel] = np.clip(rgb[sel] + amount * (rgb[sel] - blur[sel]), 0, 1)
    return out.astype(np.float32)


def _quilt_band(photo_eq, lab_eq, dist_eq, inside, lat, base_lat, skyline, near_cut, config, rng):
    """Quilt the band's rows around the ring from the photo's own columns (``synthesis.
    quilt_ring``): colour plus a sky channel, so every block brings its own skyline. Near
    objects (closer than ``near_cut``) are invalid sources. Returns (rows (r0, r1), rgb
    [h, Wp, 3], sky share [h, Wp], facts) or None when the photo has too few band columns."""
    Hp, Wp = lab_eq.shape
    dlat = math.pi / Hp
    r0, r1 = band_rows(lat, float(base_lat.min()) - 3 * dlat, math.radians(config.max_skyline_deg))
    if r1 - r0 < 4:
        return None
    cols = np.nonzero(inside[r0:r1].all(0))[0]
    block = max(16, Wp // 32)
    if len(cols) < 2 * block:
        return None
    src_rgb = photo_eq[r0:r1][:, cols]
    src_lab = lab_eq[r0:r1][:, cols]
    # sky: what the labels say, and everything above the column's measured skyline (a cloud
    # the depth stage took for a wall is not band)
    above = lat[r0:r1, None] > skyline[None, cols]
    sky = ((src_lab == SKY) | above).astype(np.float32)
    src = np.concatenate([src_rgb, 0.5 * sky[..., None]], -1)
    valid = (sky > 0) | (dist_eq[r0:r1][:, cols] >= near_cut)
    out = np.zeros((r1 - r0, Wp, 4), np.float32)
    known = inside[r0:r1].all(0)
    above_k = lat[r0:r1, None] > skyline[None, known]
    out[:, known] = np.concatenate(
        [photo_eq[r0:r1][:, known],
         0.5 * ((lab_eq[r0:r1][:, known] == SKY) | above_k)[..., None]], -1,
    )  # fmt: skip
    # (not the source's mirror image too: a block beside its own mirror image is an ink blot,
    # a symmetric peak no range has)
    res, facts = quilt_ring(src, valid, out, known, rng, block=block, overlap=block // 4)
    facts["method"] = "image quilting around the ring (two-sided closure)"
    return (r0, r1), np.clip(res[..., :3], 0, 1), res[..., 3] / 0.5, facts


def _sky_like(image, labels, Pimg, seed: int, tol: float = 0.12):
    """Labels with the pixels above the horizon that the sky model fitted to the SKY pixels
    explains (within ``tol`` in every channel, smooth), that are smooth and brighter than it
    (haze, lit clouds), or that are smooth and joined to the sky without an edge between
    (clouds of any shade) relabelled SKY — clouds that the depth stage took for distant walls —
    and the model refitted to all of them.
    Returns (labels [H, W], SkyModel, number relabelled)."""
    dirs = Pimg / np.maximum(np.linalg.norm(Pimg, axis=-1, keepdims=True), 1e-9)
    sky = labels == SKY
    model = fit_sky(dirs[sky], image[sky], seed=seed)
    pred = linear_to_srgb(model.radiance(dirs))
    err = np.abs(image - pred).max(-1)
    grey = image.mean(-1)
    grad = np.hypot(ndimage.sobel(grey, 0), ndimage.sobel(grey, 1)) / 8.0
    smooth = ndimage.uniform_filter(grad, 5) < 0.04
    # haze and lit clouds near the horizon are brighter than the model, never darker: smooth
    # and not darker (in any channel) counts too
    lum = np.array([0.299, 0.587, 0.114], np.float32)
    brighter = ((image - pred).min(-1) > -0.5 * tol) & ((image - pred) @ lum > 0.0)
    above = (labels == VERTICAL) & (dirs[..., 1] > math.sin(math.radians(1.0)))
    like = above & smooth & ((err < tol) | brighter)
    # and smooth regions the sky reaches without crossing an edge: clouds fade into the sky,
    # a hill, a roof or a tree line meets it along a sharp skyline (the edge's gradient, spread
    # by the box filter, is a wall the flood does not cross)
    # (at least half as bright as the model's clear sky there: dark tree tops and cables are
    # not clouds)
    # (and smoother than the rule above: sunlit rock is smooth at that scale, a cloud more so)
    smoother = ndimage.uniform_filter(grad, 5) < 0.02
    cloudy = above & smoother & (image @ lum >= 0.5 * (pred @ lum))
    reach, _ = ndimage.label(cloudy | (labels == SKY))
    touched = np.unique(reach[(labels == SKY) & (reach > 0)])
    like |= cloudy & np.isin(reach, touched)
    like = ndimage.binary_opening(like, iterations=2)
    if not like.any():
        return labels, model, 0
    out = labels.copy()
    out[like] = SKY
    sky = out == SKY
    return out, fit_sky(dirs[sky], image[sky], seed=seed), int(like.sum())


def _sky(image, labels, Pimg, intr, R_wc, config: SurroundConfig, seed: int, model):
    """The sky dome image and its facts (see ``sky``)."""
    sky_px = labels == SKY
    dirs = Pimg / np.maximum(np.linalg.norm(Pimg, axis=-1, keepdims=True), 1e-9)
    model_img = linear_to_srgb(model.radiance(dirs)).astype(np.float32)
    Ws, Hs = int(config.sky_width), int(config.sky_width) // 2
    scale = (Ws / (2 * math.pi)) / intr.fx  # dome pixels per photo pixel
    ex = cloud_exemplar(image, sky_px, model_img, scale)
    _, _, sd = directions(Ws, Hs)
    su, sv, sin_ = project_to_photo(sd, R_wc, intr)
    known = np.zeros((Hs, Ws), bool)
    known[sin_] = sample(sky_px.astype(np.float32), su[sin_], sv[sin_], order=0) > 0.5
    # the photo's sky at the dome's resolution (pre-blurred: no aliasing of fine clouds)
    blur = max(0.0, 0.5 / scale - 0.5)
    src = np.stack([ndimage.gaussian_filter(image[..., c], blur) for c in range(3)], -1)
    photo = np.zeros((Hs, Ws, 3), np.float32)
    photo[known] = sample(src, su[known], sv[known])
    dome, facts = sky_dome(model, Ws, photo, known, ex, seed=seed,
                           blend_decay_deg=config.seam_decay_deg)  # fmt: skip
    return dome, {"model": model.to_dict()} | facts
