"""Are two world bundles the same world? ``same_world(a, b)`` lists how they differ.

Used wherever a world is built twice and must come out the same: a batch item against a single
``worldgen build`` with the same seed (``worldgen batch``), a resumed or retried build against
an uninterrupted one (reliability). The answer is a list of human-readable differences, one per
line; an empty list means the same world.

What "the same" means, file by file (``rtol`` = 0 is the bitwise check):

- ``splats.ply``: the bytes are equal. With ``rtol`` > 0 the decoded INRIA properties are
  compared instead: the same count and property names, and every value within ``rtol`` of
  the other relative to the largest magnitude of its property
  (``|a - b| <= rtol * max(|a|, |b|, max|column|)``), so that values near zero are not held to
  an impossible relative bound (builds on different thread counts sum in different orders).
- ``world.json``: equal after removing ``VOLATILE_FIELDS`` (timings, paths, versions of the
  runtime, backend-choice reasons); numbers within ``rtol`` (relative, with ``rtol`` as the
  absolute floor) when ``rtol`` > 0.
- ``*.npy`` (``splat_layers.npy``, each layer's ``depth.npy``): same dtype and shape; integer
  arrays equal; float arrays equal (NaN equal to NaN), or within ``rtol`` as above.
- ``*.png`` (``preview.png``, ``source.png``, layer images): decoded pixels equal; with
  ``rtol`` > 0 a difference of one 8/16-bit level is allowed (a value within ``rtol`` may round
  to the neighbouring level).
- ``*.json`` other than the manifest (layer intrinsics/projections): parsed values equal,
  numbers within ``rtol``.
- ``*.glb`` (``collision.glb``): bytes equal; with ``rtol`` > 0 the meshes are loaded
  (trimesh) and compared: the same faces, vertices within ``rtol``.
- Any other file: bytes equal. A file in only one bundle is a difference.
"""

from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np

#: Dotted paths into ``world.json`` that may differ between two builds of the same world; a
#: ``*`` matches every key of a dict or every item of a list. Each is volatile because it
#: records *how or where* the build ran, not *what* it built:
#:
#: - ``timings``: stage durations in seconds;
#: - ``source.path``: the photo's path as given (relative or absolute, another folder on
#:   another node); the photo itself is pinned by ``source.sha256``;
#: - ``config.depth.depth_map``: the same for a user depth map;
#: - ``generator.python``/``torch``/``numpy``: the runtime's versions (a batch node may differ
#:   from the driver's machine; what they change is caught by the splats themselves);
#: - ``depth.reason``, ``fill.reason``: why ``auto`` picked its backend, which names the state
#:   of the local model cache; the backends picked (``depth.backend``, ``fill.backend``) stay;
#: - ``outpaint.seconds``, ``outpaint.learned.time_s``, ``outpaint.learned.views.*.time_s``:
#:   the surround's own stage durations.
VOLATILE_FIELDS: tuple[str, ...] = (
    "timings",
    "source.path",
    "config.depth.depth_map",
    "generator.python",
    "generator.torch",
    "generator.numpy",
    "depth.reason",
    "fill.reason",
    "outpaint.seconds",
    "outpaint.learned.time_s",
    "outpaint.learned.views.*.time_s",
)

MANIFEST = "world.json"
_MAX_LINES = 20  # differences listed per file before "... and N more"


def same_world(a: Path, b: Path, *, rtol: float = 0.0) -> list[str]:
    """Differences between the world bundles ``a`` and ``b`` (folders), as readable lines
    prefixed with the file they concern; ``[]`` when they are the same world (see the module
    docstring for what is compared and how ``rtol`` loosens it). Never raises on content: an
    unreadable file is reported as a difference."""
    a, b = Path(a), Path(b)
    if rtol < 0:
        raise ValueError(f"rtol must be >= 0, got {rtol}")
    out: list[str] = []
    for p, name in ((a, "a"), (b, "b")):
        if not p.is_dir():
            out.append(f"{p}: not a folder ({name})")
    if out:
        return out
    fa, fb = _files(a), _files(b)
    out += [f"{rel}: only in {a}" for rel in sorted(fa - fb)]
    out += [f"{rel}: only in {b}" for rel in sorted(fb - fa)]
    for rel in sorted(fa & fb):
        try:
            diffs = _compare(rel, a / rel, b / rel, rtol)
        except Exception as e:  # an unreadable file is a difference, not a crash
            diffs = [f"cannot compare ({type(e).__name__}: {e})"]
        if len(diffs) > _MAX_LINES:
            diffs = diffs[:_MAX_LINES] + [f"... and {len(diffs) - _MAX_LINES} more"]
        out += [f"{rel}: {d}" for d in diffs]
    return out


def strip_volatile(manifest: dict, fields: tuple[str, ...] = VOLATILE_FIELDS) -> dict:
    """A deep copy of ``manifest`` without the ``fields`` (dotted paths, ``*`` wildcards)."""
    m = json.loads(json.dumps(manifest))
    for f in fields:
        _drop(m, f.split("."))
    return m


def _drop(node, parts: list[str]) -> None:
    head, rest = parts[0], parts[1:]
    if head == "*":
        children = list(node.values()) if isinstance(node, dict) else node
        if isinstance(children, list) and rest:
            for c in children:
                _drop(c, rest)
        return
    if not isinstance(node, dict) or head not in node:
        return
    if rest:
        _drop(node[head], rest)
    else:
        del node[head]


def _files(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}


def _compare(rel: str, pa: Path, pb: Path, rtol: float) -> list[str]:
    ba, bb = pa.read_bytes(), pb.read_bytes()
    if rel == MANIFEST:
        ma = strip_volatile(json.loads(ba))
        mb = strip_volatile(json.loads(bb))
        return _json_diff(ma, mb, rtol, "")
    if ba == bb:
        return []
    if rel.endswith(".json"):
        return _json_diff(json.loads(ba), json.loads(bb), rtol, "")
    if rel.endswith(".ply") and rtol > 0:
        return _ply_diff(ba, bb, rtol)
    if rel.endswith(".npy"):
        return _array_diff(_npy(ba), _npy(bb), rtol, "values")
    if rel.endswith(".png"):
        return _png_diff(ba, bb, rtol)
    if rel.endswith(".glb") and rtol > 0:
        return _glb_diff(ba, bb, rtol)
    return [f"bytes differ ({len(ba)} vs {len(bb)} bytes)"]


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _array_diff(x: np.ndarray, y: np.ndarray, rtol: float, what: str) -> list[str]:
    """Differences between two arrays: dtype, shape, then values (see the module docstring)."""
    if x.dtype != y.dtype or x.shape != y.shape:
        return [f"{what}: {x.dtype} {list(x.shape)} vs {y.dtype} {list(y.shape)}"]
    if x.dtype.kind not in "fc" or rtol == 0:
        bad = ~((x == y) | (_isnan(x) & _isnan(y)))
    else:
        xa, ya = x.astype(np.float64), y.astype(np.float64)
        both = np.isfinite(xa) & np.isfinite(ya)
        scale = np.max(np.abs(np.where(both, xa, 0.0)), initial=0.0)
        tol = rtol * np.maximum(np.maximum(np.abs(xa), np.abs(ya)), scale)
        close = np.where(both, np.abs(xa - ya) <= tol, (xa == ya) | (np.isnan(xa) & np.isnan(ya)))
        bad = ~close
    n = int(np.count_nonzero(bad))
    if n == 0:
        return []
    msg = f"{what}: {n} of {x.size} differ"
    if x.dtype.kind in "fiu":
        d = np.abs(x[bad].astype(np.float64) - y[bad].astype(np.float64))
        d = d[np.isfinite(d)]
        if d.size:
            msg += f" (max abs difference {d.max():.3g})"
    return [msg]


def _isnan(x: np.ndarray) -> np.ndarray:
    return np.isnan(x) if x.dtype.kind in "fc" else np.zeros(x.shape, bool)


def _ply_arrays(data: bytes) -> np.ndarray:
    """[N] structured array of a binary PLY's vertices. Worldgen's own layout (one vertex
    element of little-endian floats) is read directly from the bytes; anything else through
    plyfile (slow from memory: a Python call per vertex)."""
    end = data.find(b"end_header\n")
    header = data[:end].decode("ascii", "replace").splitlines() if end > 0 else []
    props = [ln.split()[2] for ln in header if ln.startswith("property float ")]
    count = [int(ln.split()[2]) for ln in header if ln.startswith("element vertex ")]
    simple = (
        "format binary_little_endian 1.0" in header
        and len(count) == 1
        and sum(ln.startswith(("element", "property")) for ln in header) == 1 + len(props)
    )
    if simple:
        dtype = np.dtype([(n, "<f4") for n in props])
        body = data[end + len(b"end_header\n") :]
        if len(body) == count[0] * dtype.itemsize:
            return np.frombuffer(body, dtype)
    from plyfile import PlyData

    return PlyData.read(io.BytesIO(data))["vertex"].data


def _ply_diff(ba: bytes, bb: bytes, rtol: float) -> list[str]:
    va, vb = _ply_arrays(ba), _ply_arrays(bb)
    if va.dtype.names != vb.dtype.names:
        return [f"properties differ: {va.dtype.names} vs {vb.dtype.names}"]
    if len(va) != len(vb):
        return [f"{len(va)} vs {len(vb)} splats"]
    out = []
    for name in va.dtype.names:
        out += _array_diff(np.asarray(va[name]), np.asarray(vb[name]), rtol, name)
    return out


def _png_diff(ba: bytes, bb: bytes, rtol: float) -> list[str]:
    from PIL import Image

    x = np.asarray(Image.open(io.BytesIO(ba)))
    y = np.asarray(Image.open(io.BytesIO(bb)))
    if x.shape != y.shape:
        return [f"image size {list(x.shape)} vs {list(y.shape)}"]
    d = np.abs(x.astype(np.int64) - y.astype(np.int64))
    allowed = 1 if rtol > 0 else 0
    n = int(np.count_nonzero(d > allowed))
    if n == 0:
        return []
    return [f"{n} of {x.size} pixel values differ (max {int(d.max())} levels)"]


def _glb_diff(ba: bytes, bb: bytes, rtol: float) -> list[str]:
    import trimesh

    def mesh(data: bytes):
        scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
        if hasattr(scene, "to_geometry"):
            return scene.to_geometry()
        return scene.dump(concatenate=True)

    ma, mb = mesh(ba), mesh(bb)
    out = _array_diff(np.asarray(ma.faces), np.asarray(mb.faces), 0.0, "faces")
    if out:
        return out
    return _array_diff(np.asarray(ma.vertices), np.asarray(mb.vertices), rtol, "vertices")


def _json_diff(x, y, rtol: float, path: str) -> list[str]:
    """Differences between two parsed JSON values, each line naming its dotted path."""
    where = path or "(top level)"
    if isinstance(x, dict) and isinstance(y, dict):
        out = []
        for k in sorted(set(x) | set(y), key=str):
            sub = f"{path}.{k}" if path else str(k)
            if k not in y:
                out.append(f"{sub}: only in a")
            elif k not in x:
                out.append(f"{sub}: only in b")
            else:
                out += _json_diff(x[k], y[k], rtol, sub)
        return out
    if isinstance(x, list) and isinstance(y, list):
        if len(x) != len(y):
            return [f"{where}: {len(x)} vs {len(y)} items"]
        out = []
        for i, (u, v) in enumerate(zip(x, y, strict=True)):
            out += _json_diff(u, v, rtol, f"{path}[{i}]")
        return out
    nums = (int, float)
    numbers = isinstance(x, nums) and isinstance(y, nums)
    if numbers and not isinstance(x, bool) and not isinstance(y, bool):
        if x == y or (rtol > 0 and math.isclose(x, y, rel_tol=rtol, abs_tol=rtol)):
            return []
    elif x == y:
        return []
    return [f"{where}: {_short(x)} != {_short(y)}"]


def _short(v) -> str:
    s = json.dumps(v)
    return s if len(s) <= 60 else s[:57] + "..."
