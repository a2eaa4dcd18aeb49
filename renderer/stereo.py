"""Stereo geometry as plain numpy: side-by-side pairs and omni-directional stereo panoramas.

Side by side (``sbs_cameras``)
    Two parallel cameras ``ipd`` apart along the centre camera's x axis (left eye at ``-ipd/2``),
    each with the centre camera's intrinsics except an off-axis principal point: the frusta are
    asymmetric so that they meet on the plane ``z = convergence`` (zero parallax there; farther
    points appear behind the screen). Left eye ``cx - f ipd / (2 D)``, right eye
    ``cx + f ipd / (2 D)``. No toe-in, so no vertical parallax.

Omni-directional stereo (``ods_plan``)
    A top-bottom equirectangular image, left eye on top, each eye ``width x width/2``. Pixel
    centre ``(i, j)`` looks along longitude ``lon = -pi + (i + 0.5) 2 pi / width`` (0 = the
    centre camera's forward direction, positive to the right) and latitude ``lat = pi/2 -
    (j + 0.5) pi / (width/2)`` (positive up), direction ``(cos lat sin lon, -sin lat, cos lat
    cos lon)`` in the centre camera's axes (x right, y down, z forward). ODS moves the eye for
    every longitude onto the circle of diameter ``ipd``, tangent to the viewing direction: the eye
    for ``lon`` sits at ``eye * ipd/2 * (cos lon, 0, -sin lon)`` (``eye`` -1 left, +1 right).
    The panorama is made of narrow vertical strips: per strip and eye, three pinhole views (the
    middle band ``|lat| <= cap`` looking level, two polar caps looking up/down) from the strip's
    eye position; each panorama pixel samples its view bilinearly at its exact direction.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from worldgen.camera import Camera, Intrinsics, Pose, rot_x, rot_y
from worldgen.errors import InputError

#: interpupillary distance (metres)
IPD_M = 0.064
#: distance of the zero-parallax plane of side-by-side pairs (metres)
CONVERGENCE_M = 2.0


# ----------------------------------------------------------------------------- side by side


def sbs_eye_intrinsics(intr: Intrinsics) -> Intrinsics:
    """Per-eye intrinsics for a side-by-side image of ``intr``'s size: half the width each,
    the same focal length and principal point offset from the image centre."""
    if intr.width < 2:
        raise InputError(f"a side-by-side image needs a width of at least 2, got {intr.width}")
    return intr.with_size(intr.width // 2, intr.height)


def sbs_cameras(
    camera: Camera, ipd: float = IPD_M, convergence: float = CONVERGENCE_M
) -> tuple[Camera, Camera]:
    """(left, right) eye cameras around the centre ``camera`` (whose intrinsics are the eye's).

    Eyes at ``T -+ ipd/2 * x_axis`` with the same orientation; principal points shifted by
    ``-+ f ipd / (2 convergence)`` (off-axis, asymmetric frusta meeting at ``convergence``).
    """
    if not (ipd >= 0 and math.isfinite(ipd)):
        raise InputError(f"ipd must be a non-negative number of metres, got {ipd}")
    if not (convergence > 0):
        raise InputError(f"convergence distance must be positive, got {convergence}")
    K = camera.intrinsics
    R, T = camera.pose.R, camera.pose.T
    out = []
    for eye in (-1.0, 1.0):
        shift = eye * K.fx * ipd / (2.0 * convergence)
        intr = Intrinsics(K.fx, K.fy, K.cx + shift, K.cy, K.width, K.height)
        out.append(Camera(intr, Pose(R, T + eye * 0.5 * ipd * R[:, 0])))
    return out[0], out[1]


def sbs_compose(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """[H, 2W, C] image with the left eye on the left."""
    assert left.shape == right.shape, (left.shape, right.shape)
    return np.concatenate([left, right], axis=1)


# ----------------------------------------------------------------------------- ODS panorama


def equirect_angles(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """(lon [width], lat [height]) of the pixel centres of a ``width x height`` equirect."""
    lon = -math.pi + (np.arange(width) + 0.5) * (2 * math.pi / width)
    lat = math.pi / 2 - (np.arange(height) + 0.5) * (math.pi / height)
    return lon, lat


def direction(lon, lat) -> np.ndarray:
    """[..., 3] unit directions (x right, y down, z forward) of longitudes/latitudes (radians)."""
    lon, lat = np.broadcast_arrays(np.asarray(lon, np.float64), np.asarray(lat, np.float64))
    c = np.cos(lat)
    return np.stack([c * np.sin(lon), -np.sin(lat), c * np.cos(lon)], axis=-1)


def ods_eye_offset(lon: float, eye: int, ipd: float = IPD_M) -> np.ndarray:
    """[3] eye position for viewing longitude ``lon``: on the circle of diameter ``ipd``,
    tangent to the viewing direction; ``eye`` -1 (left) or +1 (right)."""
    return eye * 0.5 * ipd * np.array([math.cos(lon), 0.0, -math.sin(lon)])


@dataclass
class StripView:
    """One pinhole view of an ODS panorama and the panorama pixels it fills.

    ``camera`` is in the panorama's centre frame (x right, y down, z forward at lon 0, origin at
    the centre); ``rows``/``cols`` index the eye's ``width/2 x width`` image; ``u, v`` [len(rows),
    len(cols)] are those pixels' sample coordinates in the view (pixel centres at integers).
    """

    eye: int
    lon: float
    pitch: float
    camera: Camera
    rows: slice
    cols: slice
    u: np.ndarray
    v: np.ndarray


def ods_plan(
    width: int,
    *,
    ipd: float = IPD_M,
    strip_deg: float = 1.0,
    cap_deg: float = 55.0,
    margin_px: float = 2.0,
) -> list[StripView]:
    """Every view of an ODS panorama ``width`` wide (each eye ``width x width/2``).

    Strips are at most ``strip_deg`` wide (at least 4 columns); the middle band covers
    ``|lat| <= cap_deg`` and looks level, the caps look at ``+-(90 + cap_deg) / 2``. The focal
    length is the panorama's pixels per radian at the equator.
    """
    if width < 4 or width % 2:
        raise InputError(f"an ODS panorama needs an even width >= 4, got {width}")
    if not (0 < strip_deg <= 90):
        raise InputError(f"strip width must be in (0, 90] degrees, got {strip_deg}")
    if not (10 <= cap_deg <= 80):
        raise InputError(f"cap latitude must be in [10, 80] degrees, got {cap_deg}")
    He = width // 2
    lon, lat = equirect_angles(width, He)
    f = width / (2 * math.pi)
    # strips at least 4 px wide: narrower ones mostly redraw the same splats (each reaches
    # >= 1.8 px through the 0.3 px^2 low-pass)
    n_strips = max(1, min(width // 4, math.ceil(360.0 / strip_deg)))
    bounds = np.round(np.linspace(0, width, n_strips + 1)).astype(int)
    cap = math.radians(cap_deg)
    mid_rows = np.nonzero(np.abs(lat) <= cap)[0]
    bands = [
        (slice(0, int(mid_rows[0])), math.radians((90 + cap_deg) / 2)),  # top cap: look up
        (slice(int(mid_rows[0]), int(mid_rows[-1]) + 1), 0.0),
        (slice(int(mid_rows[-1]) + 1, He), -math.radians((90 + cap_deg) / 2)),
    ]
    views = []
    for s in range(n_strips):
        c0, c1 = int(bounds[s]), int(bounds[s + 1])
        if c1 <= c0:
            continue
        # the strip's centre longitude (columns c0..c1-1)
        lon_c = -math.pi + (0.5 * (c0 + c1)) * (2 * math.pi / width)
        for rows, pitch in bands:
            if rows.stop <= rows.start:
                continue
            R = rot_y(lon_c) @ rot_x(pitch)
            d = direction(lon[None, c0:c1], lat[rows, None])  # [h, w, 3]
            dc = d @ R  # camera coordinates: R^T d
            assert float(dc[..., 2].min()) > 0.05, "band too wide for one pinhole view"
            x = dc[..., 0] / dc[..., 2]
            y = dc[..., 1] / dc[..., 2]
            x0, x1 = float(x.min()), float(x.max())
            y0, y1 = float(y.min()), float(y.max())
            w = int(math.ceil((x1 - x0) * f + 2 * margin_px)) + 1
            h = int(math.ceil((y1 - y0) * f + 2 * margin_px)) + 1
            cx = -x0 * f + margin_px
            cy = -y0 * f + margin_px
            intr = Intrinsics(f, f, cx, cy, w, h)
            for eye in (-1, 1):
                pose = Pose(R, ods_eye_offset(lon_c, eye, ipd))
                views.append(
                    StripView(
                        eye,
                        lon_c,
                        pitch,
                        Camera(intr, pose),
                        rows,
                        slice(c0, c1),
                        f * x + cx,
                        f * y + cy,
                    )
                )
    return views


def sample_bilinear(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``img [h, w, C]`` at float pixel coordinates ``u, v`` (centres at integers; clamped)."""
    h, w = img.shape[:2]
    u = np.clip(u, 0, w - 1)
    v = np.clip(v, 0, h - 1)
    i0 = np.minimum(np.floor(u).astype(int), max(w - 2, 0))
    j0 = np.minimum(np.floor(v).astype(int), max(h - 2, 0))
    i1 = np.minimum(i0 + 1, w - 1)
    j1 = np.minimum(j0 + 1, h - 1)
    a = (u - i0)[..., None]
    b = (v - j0)[..., None]
    top = img[j0, i0] * (1 - a) + img[j0, i1] * a
    bot = img[j1, i0] * (1 - a) + img[j1, i1] * a
    return top * (1 - b) + bot * b


def in_frame(camera: Camera, base: Pose) -> Camera:
    """``camera`` (posed in a frame whose origin/axes are ``base``) posed in ``base``'s parent."""
    R = base.R @ camera.pose.R
    T = base.T + base.R @ camera.pose.T
    return Camera(camera.intrinsics, Pose(R, T))
