"""Native (C++) kernels of the "cpu" rasterizer: build, cache and load ``tiles.cpp``.

``tiles.cpp`` holds ``cpu.py``'s forward and backward tile kernels with SIMD over the pixels of a
tile row (~5x the numba kernels; same results up to float32 rounding, see its header), the
backward pass's sums per splat (``_reduce``), the depth sort of ``_order`` (a radix sort) and the
splat projection ``_project_fwd`` / ``_project_bwd`` for float32 parameters (float64 inside, 4
splats per AVX vector, ~3x the numba kernels; numba's results but for an ulp of exp/log). It has
a plain C ABI and is loaded with ``ctypes``: no Python headers, no pybind11, no torch extension.
The wrappers below take and return numpy arrays, as the numba kernels do.

It is compiled on first use (or at install time: ``python -m worldgen.raster.native``, which
``tools/setup.sh`` runs) with ``$CXX`` or ``c++`` into a cache directory
(``$WORLDGEN_NATIVE_DIR``, else ``$XDG_CACHE_HOME/worldgen/native``, else
``~/.cache/worldgen/native``), under a name hashing the source, the compiler's version, the flags
and the CPU (``-march=native`` code must not run on another CPU sharing the cache). Without a
compiler, when the build fails or with ``WORLDGEN_NATIVE=0``, ``load()`` returns None (``reason()``
says why) and ``cpu.py`` keeps its numba kernels.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import platform
import shlex
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import torch

from ..common import _SH_C0, _SH_C1, _SH_C2, _SH_C3, ALPHA_MAX, ALPHA_MIN, EPS2D, EXTEND_MAX, T_MIN

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("tiles.cpp")
#: always used. -ffp-contract=off: the float64 mirror of numba's arithmetic in tiles.cpp must not
#: be fused into FMAs (numba does not fuse); the float32 path asks for its FMAs explicitly.
#: -fno-math-errno only lets sqrt inline (no errno); NaN/inf semantics stay IEEE (no fast-math).
FLAGS = ("-O3", "-std=c++17", "-fPIC", "-shared", "-ffp-contract=off", "-fno-math-errno")
#: tried in this order, dropping what the compiler rejects (e.g. macOS clang has no OpenMP
#: runtime, some compilers no -march=native): AVX2/FMA vectors and threads are optional
OPTIONAL_FLAGS = (("-march=native", "-fopenmp"), ("-fopenmp",), ("-march=native",), ())
#: what tiles.cpp compiles in (wg_constants): common.py's thresholds, cpu.py's tile size, the
#: projection's low-pass and extent cap, the SH constants
_CONSTANTS = (ALPHA_MAX, ALPHA_MIN, T_MIN, 16.0, EPS2D, EXTEND_MAX, _SH_C0, _SH_C1, *_SH_C2,
              *_SH_C3)  # fmt: skip

_lock = threading.Lock()
_lib: ctypes.CDLL | None = None
_tried = False
_reason = "not loaded yet"
_threads = 0


class BuildError(RuntimeError):
    """tiles.cpp did not compile (no compiler, or every flag set failed)."""


def cache_dir() -> Path:
    d = os.environ.get("WORLDGEN_NATIVE_DIR")
    if d:
        return Path(d)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "worldgen" / "native"


def compiler() -> list[str] | None:
    """The C++ compiler command ($CXX, which may carry arguments, else c++, g++, clang++)."""
    cxx = os.environ.get("CXX")
    if cxx:
        cmd = shlex.split(cxx)
        return cmd if cmd and shutil.which(cmd[0]) else None
    for name in ("c++", "g++", "clang++"):
        path = shutil.which(name)
        if path:
            return [path]
    return None


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's feature flags where Linux lists them."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith(("flags", "Features")):
                    return line
    except OSError:
        pass
    return platform.processor()


def _lib_name(cxx: list[str]) -> str:
    try:
        version = subprocess.run(
            [*cxx, "--version"], capture_output=True, text=True, timeout=60
        ).stdout
    except (OSError, subprocess.SubprocessError) as e:
        raise BuildError(f"{cxx[0]} --version failed: {e}") from e
    h = hashlib.sha256()
    for part in (SOURCE.read_bytes(), version.encode(), repr((FLAGS, OPTIONAL_FLAGS)).encode(),
                 platform.machine().encode(), _cpu_id().encode()):  # fmt: skip
        h.update(hashlib.sha256(part).digest())
    suffix = ".dll" if os.name == "nt" else ".so"
    return f"tiles-{h.hexdigest()[:16]}{suffix}"


def build(force: bool = False) -> Path:
    """Compile tiles.cpp into the cache directory unless that exact build is there; its path.

    The library is written under a temporary name in the same directory and renamed into place,
    so concurrent builders and readers never see a partial file. Raises BuildError."""
    cxx = compiler()
    if cxx is None:
        raise BuildError("no C++ compiler ($CXX, c++, g++ or clang++)")
    out = cache_dir() / _lib_name(cxx)
    if out.exists() and not force:
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.stem}.{os.getpid()}.{threading.get_ident()}.tmp{out.suffix}")
    errors = []
    try:
        for optional in OPTIONAL_FLAGS:
            cmd = [*cxx, *FLAGS, *optional, str(SOURCE), "-o", str(tmp)]
            try:
                r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
            except (OSError, subprocess.SubprocessError) as e:
                errors.append(f"{shlex.join(cmd)}: {e}")
                continue
            if r.returncode == 0:
                os.replace(tmp, out)
                log.debug("built %s with %s", out, shlex.join(cmd))
                return out
            errors.append(f"{shlex.join(cmd)}:\n{r.stderr.strip()[-2000:]}")
    finally:
        tmp.unlink(missing_ok=True)
    raise BuildError("tiles.cpp did not compile:\n" + "\n".join(errors))


def _disabled() -> bool:
    return os.environ.get("WORLDGEN_NATIVE", "").strip().lower() in ("0", "false", "no", "off")


_f32 = np.ctypeslib.ndpointer(np.float32, flags="C_CONTIGUOUS")
_i32 = np.ctypeslib.ndpointer(np.int32, flags="C_CONTIGUOUS")
_i64 = np.ctypeslib.ndpointer(np.int64, flags="C_CONTIGUOUS")
_f64 = np.ctypeslib.ndpointer(np.float64, flags="C_CONTIGUOUS")
_bool = np.ctypeslib.ndpointer(np.bool_, flags="C_CONTIGUOUS")
_n = ctypes.c_int64


def _bind(lib: ctypes.CDLL) -> None:
    """Declare the exported functions' signatures (ndpointer rejects a wrong dtype or a
    non-contiguous array instead of reading garbage) and check the compiled-in constants."""
    lib.wg_constants.argtypes = [np.ctypeslib.ndpointer(np.float64)]
    lib.wg_constants.restype = None
    lib.wg_set_threads.argtypes = [ctypes.c_int]
    lib.wg_set_threads.restype = None
    lib.wg_openmp.argtypes = []
    lib.wg_openmp.restype = ctypes.c_int
    lib.wg_forward.argtypes = [_i64, _i32] + [_f32] * 11 + [_n] * 5 + [_f32] * 3 + [_i32]
    lib.wg_forward.restype = ctypes.c_int
    lib.wg_backward.argtypes = [_i64, _i32] + [_f32] * 10 + [_f32, _i32, _f32, _f32]
    lib.wg_backward.argtypes += [_n] * 5 + [ctypes.c_void_p] * 2  # gp, g: either may be null
    lib.wg_backward.restype = ctypes.c_int
    lib.wg_reduce.argtypes = [_i32, _f32, _n, _n, _f32]
    lib.wg_reduce.restype = None
    lib.wg_order.argtypes = [_f32, _bool, _n, _i64]
    lib.wg_order.restype = ctypes.c_int64
    lib.wg_exp_neg.argtypes = [_f32, _f32, _n]
    lib.wg_exp_neg.restype = None
    # params (5), n, kt, deg, Rv, tv, cam, W, H
    proj = [_f32] * 5 + [_n] * 3 + [_f64] * 3 + [_n] * 2
    lib.wg_project_fwd.argtypes = proj + [ctypes.c_double] * 2 + [_f32, _bool]
    lib.wg_project_fwd.restype = ctypes.c_int
    lib.wg_project_bwd.argtypes = proj + [_bool] + [_f32] * 4 + [_f32] * 5
    lib.wg_project_bwd.restype = ctypes.c_int
    for f in (lib.wg_exp_f64, lib.wg_log_f64):
        f.argtypes = [_f64, _f64, _n]
        f.restype = None
    c = np.zeros(len(_CONSTANTS))
    lib.wg_constants(c)
    if tuple(c) != _CONSTANTS:
        raise BuildError(f"tiles.cpp's constants {tuple(c)} differ from common.py's {_CONSTANTS}")


def load() -> ctypes.CDLL | None:
    """The native kernels (built on first use), or None when they cannot be had here; never
    raises for that (``reason()`` says why). ``WORLDGEN_NATIVE=0`` turns them off."""
    global _lib, _tried, _reason
    if _disabled():
        return None
    if _tried:
        return _lib
    with _lock:
        if not _tried:
            try:
                path = build()
                lib = ctypes.CDLL(str(path))
                _bind(lib)
                lib.wg_set_threads(_threads)
                _lib, _reason = lib, f"loaded {path}"
                log.debug("native tile kernels: %s (OpenMP: %s)", path, bool(lib.wg_openmp()))
            except (BuildError, OSError, AttributeError) as e:
                _lib, _reason = None, str(e)
                log.debug("native tile kernels unavailable: %s", e)
            _tried = True
    return _lib


def reason() -> str:
    """Why ``load()`` returns what it returns."""
    if _disabled():
        return "disabled by WORLDGEN_NATIVE=0"
    return _reason


def set_threads(n: int) -> None:
    """Threads of the native kernels' loops (n <= 0: OpenMP's default, the cores). Their own
    setting: torch's, which shares the process's OpenMP runtime, is left alone."""
    global _threads
    _threads = max(0, int(n))
    if _lib is not None:
        _lib.wg_set_threads(_threads)


def forward(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z, bg, W, H, tiles_x, tiles_y):
    """``cpu._forward`` natively: (out [H, W, 5] float32 (r, g, b, T, depth), last [H, W]
    int32)."""
    rgb, T, depth, last = forward_planes(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z,
                                         bg, W, H, tiles_x, tiles_y)  # fmt: skip
    return np.concatenate([rgb, T[..., None], depth[..., None]], -1), last


def forward_planes(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z, bg, W, H, tiles_x,
                   tiles_y):  # fmt: skip
    """``forward`` with its output as separate arrays (no copies to split it): rgb [H, W, 3],
    T [H, W], depth [H, W], last [H, W]."""
    lib = _loaded()
    _check_lists(starts, entries, tiles_x * tiles_y, mx, my, hx, hy, ca, cb, cc, op, z)
    _expect(col.shape == (mx.size, 3) and bg.size == 3, "col [n, 3], bg [3]")
    rgb = empty((H, W, 3), np.float32)
    T, depth = empty((H, W), np.float32), empty((H, W), np.float32)
    last = empty((H, W), np.int32)
    if lib.wg_forward(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, z, bg,
                      mx.size, W, H, tiles_x, tiles_y, rgb, T, depth, last):  # fmt: skip
        raise MemoryError("wg_forward")
    return rgb, T, depth, last


def backward(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last, g_rgb,
             g_alpha, W, H, tiles_x, tiles_y, *, per_splat=False):  # fmt: skip
    """``cpu._backward`` natively: gp [entries, 9] float32; with ``per_splat``, its sums per
    splat instead (``cpu._reduce(entries, gp, n)``, [n, 9]), without the per-entry array."""
    lib = _loaded()
    _check_lists(starts, entries, tiles_x * tiles_y, mx, my, hx, hy, ca, cb, cc, op)
    _expect(col.shape == (mx.size, 3) and bg.size == 3, "col [n, 3], bg [3]")
    _expect(T_fin.shape == last.shape == g_alpha.shape == (H, W) and g_rgb.shape == (H, W, 3),
            "T_fin, last, g_alpha [H, W], g_rgb [H, W, 3]")  # fmt: skip
    shape = (mx.size, 9) if per_splat else (entries.size, 9)
    out = empty(shape, np.float32)
    gp, g = (None, out.ctypes.data) if per_splat else (out.ctypes.data, None)
    if lib.wg_backward(starts, entries, mx, my, hx, hy, ca, cb, cc, op, col, bg, T_fin, last,
                       g_rgb, g_alpha, mx.size, W, H, tiles_x, tiles_y, gp, g):  # fmt: skip
        raise MemoryError("wg_backward")
    return out


def reduce(entries, gp, n):
    """``cpu._reduce`` natively: per-splat sums [n, 9] of the per-entry gradients."""
    lib = _loaded()
    _expect(gp.shape == (entries.size, 9), "gp [entries, 9]")
    out = empty((n, 9), np.float32)
    lib.wg_reduce(entries, gp, entries.size, n, out)
    return out


def order(depth: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """``cpu._order`` natively: the valid ids by increasing float32 depth, ties by id (int64)."""
    lib = _loaded()
    _expect(depth.shape == valid.shape and depth.ndim == 1, "depth, valid [n]")
    out = empty(depth.size, np.int64)
    m = lib.wg_order(depth, valid, depth.size, out)
    if m < 0:
        raise MemoryError("wg_order")
    return out[:m]


def project_fwd(means, quats, log_scales, logits, sh, deg, Rv, tv, cam, W, H, near, far):
    """``cpu._project_fwd`` natively, for float32 parameters (C-contiguous) and a float64 camera
    (Rv [3, 3], tv [3], cam (fx, fy, cx, cy)): (out [n, 12] float32, valid [n] bool)."""
    lib = _loaded()
    n, kt = _check_params(means, quats, log_scales, logits, sh, deg, Rv, tv, cam)
    out = empty((n, 12), np.float32)
    valid = empty(n, np.bool_)
    if lib.wg_project_fwd(means, quats, log_scales, logits, sh, n, kt, deg, Rv, tv, cam, W, H,
                          near, far, out, valid):  # fmt: skip
        raise ValueError("wg_project_fwd: bad SH degree")
    return out, valid


def project_bwd(means, quats, log_scales, logits, sh, deg, Rv, tv, cam, W, H, valid, g_uv,
                g_conic, g_opacity, g_color):  # fmt: skip
    """``cpu._project_bwd`` natively, for ``project_fwd``'s arguments, its ``valid`` and the
    float32 gradients of mean2d [n, 2], conic [n, 3], opacity [n] and colour [n, 3]: the float32
    gradients (means [n, 3], quats [n, 4], log_scales [n, 3], logits [n], sh [n, k, 3]), each
    numba's float64 value rounded once."""
    lib = _loaded()
    n, kt = _check_params(means, quats, log_scales, logits, sh, deg, Rv, tv, cam)
    _expect(valid.shape == (n,) and g_uv.shape == (n, 2) and g_conic.shape == (n, 3)
            and g_opacity.shape == (n,) and g_color.shape == (n, 3),
            "valid [n], g_uv [n, 2], g_conic [n, 3], g_opacity [n], g_color [n, 3]")  # fmt: skip
    g_means, g_quats = empty((n, 3), np.float32), empty((n, 4), np.float32)
    g_ls, g_logits = empty((n, 3), np.float32), empty(n, np.float32)
    g_sh = empty(sh.shape, np.float32)
    if lib.wg_project_bwd(means, quats, log_scales, logits, sh, n, kt, deg, Rv, tv, cam, W, H,
                          valid, g_uv, g_conic, g_opacity, g_color, g_means, g_quats, g_ls,
                          g_logits, g_sh):  # fmt: skip
        raise ValueError("wg_project_bwd: bad SH degree")
    return g_means, g_quats, g_ls, g_logits, g_sh


def _check_params(means, quats, log_scales, logits, sh, deg, Rv, tv, cam) -> tuple[int, int]:
    n = means.shape[0]
    _expect(means.shape == (n, 3) and quats.shape == (n, 4) and log_scales.shape == (n, 3)
            and logits.shape == (n,) and sh.ndim == 3 and sh.shape[0] == n and sh.shape[2] == 3,
            "means [n, 3], quats [n, 4], log_scales [n, 3], logits [n], sh [n, k, 3]")  # fmt: skip
    _expect(0 <= deg <= 3 and sh.shape[1] >= (deg + 1) ** 2, "SH degree 0..3, k >= (deg + 1)^2")
    _expect(Rv.shape == (3, 3) and tv.shape == (3,) and cam.shape == (4,),
            "Rv [3, 3], tv [3], cam [4]")  # fmt: skip
    return n, sh.shape[1]


def empty(shape, dtype) -> np.ndarray:
    """An uninitialised host array for a kernel to fill, from torch's allocator rather than
    numpy's. numpy asks Linux for transparent huge pages on arrays of 4 MB and more
    (``madvise``); where THP defrag is ``madvise`` (the kernel's default, and this machine's),
    first touching those pages from the kernels' threads waits on memory compaction: with the
    57 MB SH gradient of scene c of ``benchmarks/raster_cpu.py`` in numpy's memory, the
    projection backward took 110-210 ms per iteration instead of 60-75."""
    return torch.empty(shape, dtype=_TORCH_DTYPES[np.dtype(dtype)]).numpy()


_TORCH_DTYPES = {
    np.dtype(np.float32): torch.float32,
    np.dtype(np.float64): torch.float64,
    np.dtype(np.int32): torch.int32,
    np.dtype(np.int64): torch.int64,
    np.dtype(np.bool_): torch.bool,
}


def exp_neg(x: np.ndarray) -> np.ndarray:
    """The kernels' float32 ``exp`` (for x in [-87, 0]), to measure its error."""
    return _elementwise("wg_exp_neg", x, np.float32)


def exp_f64(x: np.ndarray) -> np.ndarray:
    """The projection's float64 ``exp``, to measure its error."""
    return _elementwise("wg_exp_f64", x, np.float64)


def log_f64(x: np.ndarray) -> np.ndarray:
    """The projection's float64 ``log`` (for positive normal x), to measure its error."""
    return _elementwise("wg_log_f64", x, np.float64)


def _elementwise(name: str, x: np.ndarray, dtype) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype)
    y = np.empty_like(x)
    getattr(_loaded(), name)(x, y, x.size)
    return y


def _loaded() -> ctypes.CDLL:
    lib = load()
    if lib is None:
        raise RuntimeError(f"native tile kernels unavailable: {reason()}")
    return lib


def _expect(ok: bool, what: str) -> None:
    if not ok:
        raise ValueError(f"native tile kernels: expected {what}")


def _check_lists(starts, entries, n_tiles, *per_splat) -> None:
    # cheap shape checks: the kernels index with these without bounds checks (the lists' splat
    # ids themselves are trusted: cpu._bin made them)
    _expect(starts.shape == (n_tiles + 1,) and int(starts[-1]) == entries.size,
            "starts [tiles + 1] ending at the entry count")  # fmt: skip
    _expect(all(a.size == per_splat[0].size for a in per_splat), "per-splat arrays of one size")
