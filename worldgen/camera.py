"""Pinhole intrinsics, poses and the frames of ARCHITECTURE.md "Conventions".

* Camera axes are OpenCV: x right, y down, z forward. The centre of pixel (i, j) is at (i, j).
* A pose is a camera centre ``T`` and orientation ``R`` given in the *source camera's* axes,
  ``R = R_y(yaw) @ R_x(pitch) @ R_z(roll)``; a point ``X`` in source-camera coordinates is at
  ``R.T @ (X - T)`` in the posed camera. yaw > 0 turns right, pitch > 0 looks up, roll > 0 turns
  +x toward +y.
* The world frame is right-handed, +Y up (against gravity), the source camera at the origin with
  yaw 0 facing -Z; ``world_from_camera`` maps source-camera (OpenCV) coordinates to the world.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .errors import InputError


@dataclass(frozen=True)
class CameraConfig:
    default_hfov_deg: float = 60.0
    """Horizontal field of view assumed when neither the user, the depth model nor EXIF give one."""
    focal_px: float | None = None
    """Focal length in pixels of the original image (overrides everything else)."""
    principal: tuple[float, float] | None = None
    """Principal point (cx, cy) in pixels of the original image; default: the image centre."""


DEFAULT_HFOV_DEG = 60.0
#: diagonal of a 36 x 24 mm frame, the reference of "35 mm equivalent" focal lengths
FULL_FRAME_DIAGONAL_MM = math.hypot(36.0, 24.0)


@dataclass(frozen=True)
class Intrinsics:
    """Pinhole intrinsics in pixels of an image of ``width`` x ``height`` (OpenCV convention)."""

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    def __post_init__(self) -> None:
        if not (self.width >= 1 and self.height >= 1):
            raise InputError(f"image size must be positive, got {self.width}x{self.height}")
        if not (self.fx > 0 and self.fy > 0 and math.isfinite(self.fx) and math.isfinite(self.fy)):
            raise InputError(f"focal length must be a positive number, got {self.fx}, {self.fy}")
        if not (math.isfinite(self.cx) and math.isfinite(self.cy)):
            raise InputError(f"principal point must be finite, got {self.cx}, {self.cy}")

    @property
    def K(self) -> np.ndarray:  # [3, 3] float64
        return np.array(
            [[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]], dtype=np.float64
        )

    @property
    def hfov_deg(self) -> float:
        return math.degrees(2.0 * math.atan(self.width / (2.0 * self.fx)))

    def scaled_to(self, width: int, height: int) -> Intrinsics:
        """The same camera for the image resized to ``width`` x ``height``.

        Pixel centres sit at integer coordinates, so a coordinate ``u`` maps to
        ``(u + 0.5) * s - 0.5``.
        """
        sx = width / self.width
        sy = height / self.height
        return Intrinsics(
            fx=self.fx * sx,
            fy=self.fy * sy,
            cx=(self.cx + 0.5) * sx - 0.5,
            cy=(self.cy + 0.5) * sy - 0.5,
            width=int(width),
            height=int(height),
        )

    def with_size(self, width: int, height: int) -> Intrinsics:
        """Same focal length, principal point kept at the same offset from the image centre."""
        return Intrinsics(
            fx=self.fx,
            fy=self.fy,
            cx=self.cx + (width - self.width) / 2.0,
            cy=self.cy + (height - self.height) / 2.0,
            width=int(width),
            height=int(height),
        )

    @classmethod
    def from_hfov(cls, hfov_deg: float, width: int, height: int) -> Intrinsics:
        if not (1.0 < hfov_deg < 179.0):
            raise InputError(f"field of view must be in (1, 179) degrees, got {hfov_deg}")
        f = (width / 2.0) / math.tan(math.radians(hfov_deg) / 2.0)
        return cls(f, f, (width - 1) / 2.0, (height - 1) / 2.0, int(width), int(height))

    def to_dict(self) -> dict:
        return {
            "fx": self.fx,
            "fy": self.fy,
            "cx": self.cx,
            "cy": self.cy,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_dict(cls, d: dict) -> Intrinsics:
        return cls(
            float(d["fx"]),
            float(d["fy"]),
            float(d["cx"]),
            float(d["cy"]),
            int(d["width"]),
            int(d["height"]),
        )


def focal_from_35mm(f35_mm: float, width: int, height: int) -> float:
    """Focal length in pixels from a 35 mm-equivalent focal length (diagonal definition)."""
    return float(f35_mm) * math.hypot(width, height) / FULL_FRAME_DIAGONAL_MM


@dataclass(frozen=True)
class IntrinsicsChoice:
    intrinsics: Intrinsics
    source: str  # "user" | "depth-model" | "exif" | "default-fov"


def resolve_intrinsics(
    orig_width: int,
    orig_height: int,
    work_width: int,
    work_height: int,
    *,
    focal_px: float | None = None,
    principal: tuple[float, float] | None = None,
    model_focal_px: float | None = None,
    exif_focal_35mm: float | None = None,
    default_hfov_deg: float = DEFAULT_HFOV_DEG,
) -> IntrinsicsChoice:
    """Pick intrinsics by precedence: user, depth model, EXIF 35 mm equivalent, default FOV.

    ``focal_px`` and ``principal`` are in pixels of the original (upright) image;
    ``model_focal_px`` is in pixels of the working image. Returns working-resolution intrinsics.
    """
    cx0, cy0 = (orig_width - 1) / 2.0, (orig_height - 1) / 2.0
    if principal is not None:
        cx0, cy0 = float(principal[0]), float(principal[1])
        if not (math.isfinite(cx0) and math.isfinite(cy0)):
            raise InputError(f"--principal must be finite numbers, got {principal}")
    sx = work_width / orig_width
    if focal_px is not None:
        if not (focal_px > 0 and math.isfinite(focal_px)):
            raise InputError(f"--focal-px must be a positive number, got {focal_px}")
        f, source = float(focal_px), "user"
    elif model_focal_px is not None and model_focal_px > 0:
        f, source = float(model_focal_px) / sx, "depth-model"
    elif exif_focal_35mm is not None and exif_focal_35mm > 0:
        f, source = focal_from_35mm(exif_focal_35mm, orig_width, orig_height), "exif"
    else:
        f = (orig_width / 2.0) / math.tan(math.radians(default_hfov_deg) / 2.0)
        source = "default-fov"
    orig = Intrinsics(f, f, cx0, cy0, int(orig_width), int(orig_height))
    return IntrinsicsChoice(orig.scaled_to(work_width, work_height), source)


# ----------------------------------------------------------------------------- rotations


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1, 0, 0], [0, c, -s], [0, s, c]], dtype=np.float64)


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]], dtype=np.float64)


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]], dtype=np.float64)


def rotation_ypr(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """``R_y(yaw) @ R_x(pitch) @ R_z(roll)`` (radians)."""
    return rot_y(yaw) @ rot_x(pitch) @ rot_z(roll)


@dataclass(frozen=True)
class Pose:
    """A camera centre ``T`` [3] and orientation ``R`` [3, 3] in a parent frame.

    The columns of ``R`` are the camera's axes expressed in the parent frame.
    """

    R: np.ndarray  # [3, 3]
    T: np.ndarray  # [3]

    @classmethod
    def identity(cls) -> Pose:
        return cls(np.eye(3), np.zeros(3))

    @classmethod
    def from_cli(
        cls, tx: float, ty: float, tz: float, yaw_deg=0.0, pitch_deg=0.0, roll_deg=0.0
    ) -> Pose:
        R = rotation_ypr(math.radians(yaw_deg), math.radians(pitch_deg), math.radians(roll_deg))
        return cls(R, np.array([tx, ty, tz], dtype=np.float64))

    def viewmat(self) -> np.ndarray:
        """[4, 4] camera-from-parent matrix: ``X_cam = R.T @ (X - T)``."""
        V = np.eye(4)
        V[:3, :3] = self.R.T
        V[:3, 3] = -self.R.T @ self.T
        return V


@dataclass(frozen=True)
class Camera:
    """Intrinsics plus a pose in the splats' frame (the source camera's OpenCV axes)."""

    intrinsics: Intrinsics
    pose: Pose

    @property
    def viewmat(self) -> np.ndarray:  # [4, 4]
        return self.pose.viewmat()

    @property
    def K(self) -> np.ndarray:  # [3, 3]
        return self.intrinsics.K


def world_from_camera(ground_normal_cam: np.ndarray) -> np.ndarray:
    """[4, 4] world-from-source-camera transform for an up direction given in camera axes.

    World +Y is ``ground_normal_cam`` (up, against gravity), world -Z is the camera's forward
    direction projected onto the ground plane, the camera sits at the origin.
    """
    n = np.asarray(ground_normal_cam, dtype=np.float64)
    n = n / np.linalg.norm(n)
    fwd = np.array([0.0, 0.0, 1.0])
    f = fwd - fwd.dot(n) * n
    if np.linalg.norm(f) < 1e-6:  # looking straight up/down: use the camera's -y as forward
        f = np.array([0.0, -1.0, 0.0]) - np.array([0.0, -1.0, 0.0]).dot(n) * n
    f /= np.linalg.norm(f)
    Y, Z = n, -f
    X = np.cross(Y, Z)
    M = np.eye(4)
    M[:3, :3] = np.stack([X, Y, Z])  # rows: world axes in camera coordinates
    return M
