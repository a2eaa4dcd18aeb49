"""The ``Splats`` container and INRIA 3DGS PLY I/O.

Parameters are stored pre-activation, exactly as in the INRIA PLY and gsplat's parameter dicts:
``scales = exp(log_scales)``, ``opacities = sigmoid(logit_opacities)``,
``rgb = 0.5 + SH_C0 * sh[:, 0]``. Means are in the source camera's OpenCV axes.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch

from .errors import BundleError

SH_C0 = 0.28209479177387814

INRIA_PROPERTIES_DC = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]


def inria_property_names(sh_degree: int) -> list[str]:
    """The exact INRIA property order for ``sh_degree`` (0-3)."""
    n_rest = 3 * ((sh_degree + 1) ** 2 - 1)
    return (
        INRIA_PROPERTIES_DC
        + [f"f_rest_{i}" for i in range(n_rest)]
        + ["opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]
    )


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass
class Splats:
    """N Gaussians. All tensors share one device and are float32 unless noted.

    means:           [N, 3]  centres (source camera OpenCV axes, metres)
    quats:           [N, 4]  rotations, (w, x, y, z), not necessarily normalised
    log_scales:      [N, 3]  log of the standard deviations along the local axes
    logit_opacities: [N]     logit of the opacity
    sh:              [N, K, 3] SH coefficients, K = (degree + 1) ** 2, sh[:, 0] is the DC term
    layers:          [N]     uint8 layer id
    """

    means: torch.Tensor
    quats: torch.Tensor
    log_scales: torch.Tensor
    logit_opacities: torch.Tensor
    sh: torch.Tensor
    layers: torch.Tensor

    def __post_init__(self) -> None:
        n = self.means.shape[0]
        assert self.means.shape == (n, 3), self.means.shape
        assert self.quats.shape == (n, 4), self.quats.shape
        assert self.log_scales.shape == (n, 3), self.log_scales.shape
        assert self.logit_opacities.shape == (n,), self.logit_opacities.shape
        assert self.sh.ndim == 3 and self.sh.shape[0] == n and self.sh.shape[2] == 3, self.sh.shape
        assert self.sh.shape[1] in (1, 4, 9, 16), self.sh.shape
        assert self.layers.shape == (n,) and self.layers.dtype == torch.uint8, self.layers.shape

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return int(round(self.sh.shape[1] ** 0.5)) - 1

    @property
    def scales(self) -> torch.Tensor:  # [N, 3]
        return torch.exp(self.log_scales)

    @property
    def opacities(self) -> torch.Tensor:  # [N]
        return torch.sigmoid(self.logit_opacities)

    @property
    def rgb(self) -> torch.Tensor:  # [N, 3] the view-independent colour
        return sh0_to_rgb(self.sh[:, 0])

    @classmethod
    def empty(cls, sh_degree: int = 0) -> Splats:
        k = (sh_degree + 1) ** 2
        return cls(
            torch.zeros(0, 3),
            torch.zeros(0, 4),
            torch.zeros(0, 3),
            torch.zeros(0),
            torch.zeros(0, k, 3),
            torch.zeros(0, dtype=torch.uint8),
        )

    def index(self, idx) -> Splats:
        return Splats(
            self.means[idx],
            self.quats[idx],
            self.log_scales[idx],
            self.logit_opacities[idx],
            self.sh[idx],
            self.layers[idx],
        )

    def to(self, device) -> Splats:
        return Splats(*(getattr(self, f).to(device) for f in _FIELDS))

    def with_sh_degree(self, degree: int) -> Splats:
        """Truncate or zero-pad the SH coefficients to ``degree``."""
        k = (degree + 1) ** 2
        sh = self.sh
        if sh.shape[1] >= k:
            sh = sh[:, :k]
        else:
            pad = torch.zeros(sh.shape[0], k - sh.shape[1], 3, dtype=sh.dtype, device=sh.device)
            sh = torch.cat([sh, pad], dim=1)
        return replace(self, sh=sh.contiguous())

    @staticmethod
    def cat(parts: list[Splats]) -> Splats:
        deg = max(p.sh_degree for p in parts)
        parts = [p.with_sh_degree(deg) for p in parts]
        return Splats(*(torch.cat([getattr(p, f) for p in parts]) for f in _FIELDS))


_FIELDS = ("means", "quats", "log_scales", "logit_opacities", "sh", "layers")


# ----------------------------------------------------------------------------- PLY I/O


def splats_to_ply_array(splats: Splats) -> np.ndarray:
    """A structured array with exactly the INRIA properties, in order."""
    n = len(splats)
    deg = splats.sh_degree
    names = inria_property_names(deg)
    arr = np.zeros(n, dtype=[(name, "<f4") for name in names])
    means = splats.means.detach().cpu().numpy()
    sh = splats.sh.detach().cpu().numpy()  # [N, K, 3]
    arr["x"], arr["y"], arr["z"] = means[:, 0], means[:, 1], means[:, 2]
    for c in range(3):
        arr[f"f_dc_{c}"] = sh[:, 0, c]
    k = sh.shape[1]
    # f_rest is channel-major: all coefficients 1..K-1 of R, then of G, then of B
    rest = sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1))
    for i in range(rest.shape[1]):
        arr[f"f_rest_{i}"] = rest[:, i]
    arr["opacity"] = splats.logit_opacities.detach().cpu().numpy()
    ls = splats.log_scales.detach().cpu().numpy()
    q = splats.quats.detach().cpu().numpy()
    for i in range(3):
        arr[f"scale_{i}"] = ls[:, i]
    for i in range(4):
        arr[f"rot_{i}"] = q[:, i]
    return arr


def ply_bytes(splats: Splats) -> bytes:
    """Binary little-endian INRIA 3DGS PLY."""
    arr = splats_to_ply_array(splats)
    header = ["ply", "format binary_little_endian 1.0", f"element vertex {len(arr)}"]
    header += [f"property float {name}" for name in arr.dtype.names]
    header += ["end_header"]
    return ("\n".join(header) + "\n").encode("ascii") + arr.tobytes()


def write_ply(splats: Splats, path: str | Path) -> None:
    Path(path).write_bytes(ply_bytes(splats))


def read_ply(path: str | Path, layers: np.ndarray | None = None) -> Splats:
    """Read an INRIA 3DGS PLY (any SH degree 0-3). A malformed, oversized or non-finite file
    is a BundleError (``safeio.read_ply_array`` checks the header against the file first)."""
    from .safeio import read_ply_array

    v = read_ply_array(path)
    names = v.dtype.names
    required = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity"]
    required += [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)]
    missing = [r for r in required if r not in names]
    if missing:
        raise BundleError(f"{path}: missing PLY properties {missing}")
    n = len(v)
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    if n_rest not in (0, 9, 24, 45):
        raise BundleError(f"{path}: {n_rest} f_rest properties is not SH degree 0-3")
    k = n_rest // 3 + 1

    def col(name):
        return np.asarray(v[name], dtype=np.float32)

    means = np.stack([col("x"), col("y"), col("z")], 1)
    sh = np.zeros((n, k, 3), np.float32)
    for c in range(3):
        sh[:, 0, c] = col(f"f_dc_{c}")
    if k > 1:
        rest = np.stack([col(f"f_rest_{i}") for i in range(n_rest)], 1).reshape(n, 3, k - 1)
        sh[:, 1:, :] = rest.transpose(0, 2, 1)
    floats = [name for name in names if v.dtype[name].kind == "f"]
    for name in floats:  # a stranger's NaN / inf would poison sorting and rendering
        if not np.isfinite(v[name]).all():
            raise BundleError(f"{path}: non-finite values in PLY property {name!r}")
    if any(v.dtype[r].kind != "f" for r in required):
        raise BundleError(f"{path}: PLY splat properties must be float")
    if layers is None:
        layers = np.zeros(n, np.uint8)
    if layers.shape != (n,):
        raise BundleError(f"layer ids have shape {layers.shape}, expected ({n},)")
    return Splats(
        means=torch.from_numpy(means),
        quats=torch.from_numpy(np.stack([col(f"rot_{i}") for i in range(4)], 1)),
        log_scales=torch.from_numpy(np.stack([col(f"scale_{i}") for i in range(3)], 1)),
        logit_opacities=torch.from_numpy(col("opacity")),
        sh=torch.from_numpy(sh),
        layers=torch.from_numpy(layers.astype(np.uint8)),
    )
