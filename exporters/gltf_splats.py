"""glTF 2.0 binary (``.glb``) with ``KHR_gaussian_splatting`` (``--to gltf-splats``).

One node ``splats`` -> one mesh -> one primitive of mode 0 (POINTS) whose attributes are
(Khronos KHR_gaussian_splatting, release candidate, "Ellipse Kernel" / "Attributes"):

* ``POSITION`` VEC3 float (with min/max);
* ``KHR_gaussian_splatting:ROTATION`` VEC4 float, unit quaternion in glTF order x, y, z, w;
* ``KHR_gaussian_splatting:SCALE`` VEC3 float, linear (``exp(log_scale)``);
* ``KHR_gaussian_splatting:OPACITY`` SCALAR float in [0, 1] (``sigmoid(logit)``);
* ``KHR_gaussian_splatting:SH_DEGREE_0_COEF_0`` VEC3 float, the raw DC coefficients, and
  ``KHR_gaussian_splatting:SH_DEGREE_l_COEF_n`` (n = 0 .. 2l, order m = -l .. l) for every
  degree 1 .. ``--sh-degree``;
* ``COLOR_0`` VEC4 unsigned byte normalised: the point-cloud fallback, the diffuse colour
  ``clamp(0.5 + C0 f_dc)`` decoded from sRGB to linear (glTF vertex colours are linear) and the
  opacity as alpha.

The primitive carries ``{"kernel": "ellipse", "colorSpace": "srgb_rec709_display",
"projection": "perspective", "sortingMethod": "cameraDistance"}`` and the asset lists the
extension in ``extensionsUsed`` (not ``extensionsRequired``: viewers without it show points).

Frame: worldgen's world frame (``exporters.common``, "world"), which is glTF's: +Y up,
right-handed, metres; the source camera at the origin looking along -Z. SH coefficients are
rotated into it. (PlayCanvas splat-transform 3.7.0's own PLY -> GLB conversion instead rotates
the PLY 180 degrees about Z; ours equals theirs of our PLY export rotated 180 degrees about Y.)
"""

from __future__ import annotations

import json
import struct

import numpy as np

from worldgen.errors import InputError
from worldgen.splats import SH_C0

from .common import prepare, unit_quats
from .registry import Exporter, ExportOptions, register_exporter

FRAME = "world"
EXT = "KHR_gaussian_splatting"
GLB_MAGIC, JSON_CHUNK, BIN_CHUNK = 0x46546C67, 0x4E4F534A, 0x004E4942
FLOAT, UBYTE, BYTE, USHORT, SHORT = 5126, 5121, 5120, 5123, 5122
ARRAY_BUFFER = 34962
EXTENSION_OBJECT = {
    "kernel": "ellipse",
    "colorSpace": "srgb_rec709_display",
    "projection": "perspective",
    "sortingMethod": "cameraDistance",
}
_NCOMP = {"SCALAR": 1, "VEC2": 2, "VEC3": 3, "VEC4": 4}
_DTYPE = {FLOAT: "<f4", UBYTE: "u1", BYTE: "i1", USHORT: "<u2", SHORT: "<i2", 5125: "<u4"}


def sh_attribute(degree: int, n: int) -> str:
    return f"{EXT}:SH_DEGREE_{degree}_COEF_{n}"


def export_gltf_splats(world, options: ExportOptions) -> bytes:
    """The world's splats as a ``.glb`` with ``KHR_gaussian_splatting`` (world frame)."""
    s = prepare(world, options, FRAME)
    q = unit_quats(s.quats.double().numpy())  # unit already (prepare); again in float64
    sh = s.sh.numpy()
    opacity = 1.0 / (1.0 + np.exp(-s.logit_opacities.double().numpy()))
    srgb = np.clip(0.5 + SH_C0 * sh[:, 0].astype(np.float64), 0.0, 1.0)
    linear = np.where(srgb <= 0.04045, srgb / 12.92, ((srgb + 0.055) / 1.055) ** 2.4)
    color = np.concatenate([linear, opacity[:, None]], 1)
    attrs: list[tuple[str, np.ndarray, bool]] = [
        ("POSITION", s.means.numpy().astype("<f4"), False),
        (f"{EXT}:ROTATION", q[:, [1, 2, 3, 0]].astype("<f4"), False),
        (f"{EXT}:SCALE", np.exp(s.log_scales.double().numpy()).astype("<f4"), False),
        (f"{EXT}:OPACITY", opacity.astype("<f4"), False),
    ]
    for deg in range(s.sh_degree + 1):
        for n in range(2 * deg + 1):
            attrs.append((sh_attribute(deg, n), sh[:, deg * deg + n].astype("<f4"), False))
    attrs.append(("COLOR_0", np.clip(np.rint(color * 255), 0, 255).astype("u1"), True))
    return _glb(attrs, generator=_generator())


def _generator() -> str:
    try:
        from worldgen import __version__
    except ImportError:  # pragma: no cover
        __version__ = "?"
    return f"worldgen {__version__}"


def _glb(attrs: list[tuple[str, np.ndarray, bool]], generator: str) -> bytes:
    """A GLB with one POINTS primitive holding ``attrs`` (name, [N] or [N, c] array,
    normalized), each in its own 4-byte-aligned buffer view."""
    blobs, views, accessors, attributes = [], [], [], {}
    offset = 0
    for name, arr, normalized in attrs:
        a = np.ascontiguousarray(arr)
        data = a.tobytes()
        views.append(
            {"buffer": 0, "byteOffset": offset, "byteLength": len(data), "target": ARRAY_BUFFER}
        )
        comp = {np.dtype("<f4"): FLOAT, np.dtype("u1"): UBYTE}[a.dtype]
        acc = {
            "bufferView": len(views) - 1,
            "componentType": comp,
            "count": int(a.shape[0]),
            "type": {1: "SCALAR", 3: "VEC3", 4: "VEC4"}[1 if a.ndim == 1 else a.shape[1]],
        }
        if normalized:
            acc["normalized"] = True
        if name == "POSITION":
            acc["min"] = [float(v) for v in a.min(0)]
            acc["max"] = [float(v) for v in a.max(0)]
        attributes[name] = len(accessors)
        accessors.append(acc)
        pad = (-len(data)) % 4
        blobs.append(data + b"\0" * pad)
        offset += len(data) + pad
    binary = b"".join(blobs)
    gltf = {
        "asset": {"version": "2.0", "generator": generator},
        "extensionsUsed": [EXT],
        "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"name": "splats", "mesh": 0}],
        "meshes": [
            {
                "name": "splats",
                "primitives": [
                    {"attributes": attributes, "mode": 0, "extensions": {EXT: EXTENSION_OBJECT}}
                ],
            }
        ],
        "buffers": [{"byteLength": len(binary)}],
        "bufferViews": views,
        "accessors": accessors,
    }
    js = json.dumps(gltf, separators=(",", ":")).encode()
    js += b" " * ((-len(js)) % 4)
    total = 12 + 8 + len(js) + 8 + len(binary)
    return b"".join(
        [
            struct.pack("<III", GLB_MAGIC, 2, total),
            struct.pack("<II", len(js), JSON_CHUNK),
            js,
            struct.pack("<II", len(binary), BIN_CHUNK),
            binary,
        ]
    )


# ----------------------------------------------------------------------------- reading


def parse_glb(data: bytes) -> tuple[dict, bytes]:
    """(glTF JSON, BIN chunk) of a GLB; raises InputError on a malformed container."""
    if len(data) < 20:
        raise InputError("not a GLB: too short")
    magic, version, total = struct.unpack_from("<III", data)
    if magic != GLB_MAGIC or version != 2:
        raise InputError("not a glTF 2.0 binary (bad magic or version)")
    if total != len(data):
        raise InputError(f"GLB header says {total} bytes, the file has {len(data)}")
    off, gltf, binary = 12, None, b""
    while off + 8 <= len(data):
        length, kind = struct.unpack_from("<II", data, off)
        chunk = data[off + 8 : off + 8 + length]
        if len(chunk) != length:
            raise InputError("GLB chunk runs past the end of the file")
        if kind == JSON_CHUNK and gltf is None:
            try:
                gltf = json.loads(chunk.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise InputError(f"GLB JSON chunk is not valid JSON ({e})") from None
        elif kind == BIN_CHUNK and not binary:
            binary = chunk
        off += 8 + length
    if not isinstance(gltf, dict):
        raise InputError("GLB has no JSON chunk")
    return gltf, binary


def accessor_array(gltf: dict, binary: bytes, index: int) -> np.ndarray:
    """[count, ncomp] (or [count]) float64 values of accessor ``index`` (normalised integers
    mapped to [0, 1] / [-1, 1] as glTF defines)."""
    acc = gltf["accessors"][index]
    view = gltf["bufferViews"][acc["bufferView"]]
    dtype = np.dtype(_DTYPE[acc["componentType"]])
    ncomp = _NCOMP[acc["type"]]
    count = int(acc["count"])
    elem = dtype.itemsize * ncomp
    stride = view.get("byteStride") or elem
    start = view.get("byteOffset", 0) + acc.get("byteOffset", 0)
    end = start + (count - 1) * stride + elem if count else start
    if end > view.get("byteOffset", 0) + view["byteLength"] or end > len(binary):
        raise InputError(f"accessor {index} runs past its buffer view")
    arr = np.ndarray((count, ncomp), dtype, binary, start, (stride, dtype.itemsize))
    out = arr.astype(np.float64)
    if acc.get("normalized"):
        info = np.iinfo(dtype)
        out = out / info.max if info.min == 0 else np.maximum(out / info.max, -1.0)
    return out[:, 0] if ncomp == 1 else out


def read_gltf_splats(data: bytes) -> dict[str, np.ndarray]:
    """The splats of the first ``KHR_gaussian_splatting`` primitive of a GLB: ``means``,
    ``quats_xyzw``, ``scales``, ``opacities``, ``sh [N, K, 3]`` and ``color0`` (if present).
    A malformed file (missing keys, wrong types, out-of-range indices) is an InputError."""
    try:
        return _read_gltf_splats(data)
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError) as e:
        if isinstance(e, InputError):
            raise
        raise InputError(f"malformed glTF splats ({type(e).__name__}: {e})") from None


def _read_gltf_splats(data: bytes) -> dict[str, np.ndarray]:
    gltf, binary = parse_glb(data)
    for mesh in gltf.get("meshes", []):
        for prim in mesh.get("primitives", []):
            if EXT in prim.get("extensions", {}):
                a = prim["attributes"]
                degree = 0
                while sh_attribute(degree + 1, 0) in a:
                    degree += 1
                sh = [
                    accessor_array(gltf, binary, a[sh_attribute(d, n)])
                    for d in range(degree + 1)
                    for n in range(2 * d + 1)
                ]
                out = {
                    "means": accessor_array(gltf, binary, a["POSITION"]),
                    "quats_xyzw": accessor_array(gltf, binary, a[f"{EXT}:ROTATION"]),
                    "scales": accessor_array(gltf, binary, a[f"{EXT}:SCALE"]),
                    "opacities": accessor_array(gltf, binary, a[f"{EXT}:OPACITY"]),
                    "sh": np.stack(sh, 1),
                }
                if "COLOR_0" in a:
                    out["color0"] = accessor_array(gltf, binary, a["COLOR_0"])
                return out
    raise InputError(f"no primitive with {EXT} in this GLB")


# ----------------------------------------------------------------------------- checking

_ALLOWED = {  # semantic -> (accessor type, {(componentType, normalized)})
    "POSITION": ("VEC3", {(FLOAT, False)}),
    f"{EXT}:ROTATION": ("VEC4", {(FLOAT, False), (BYTE, True), (SHORT, True)}),
    f"{EXT}:SCALE": (
        "VEC3",
        {(FLOAT, False), (UBYTE, False), (UBYTE, True), (USHORT, False), (USHORT, True)},
    ),
    f"{EXT}:OPACITY": ("SCALAR", {(FLOAT, False), (UBYTE, True), (USHORT, True)}),
}
_REQUIRED = ["POSITION", f"{EXT}:ROTATION", f"{EXT}:SCALE", f"{EXT}:OPACITY", sh_attribute(0, 0)]
_KNOWN_VALUES = {
    "kernel": {"ellipse"},
    "colorSpace": {"srgb_rec709_display", "lin_rec709_display"},
    "projection": {"perspective"},
    "sortingMethod": {"cameraDistance"},
}


def check_khr_gaussian_splatting(glb: bytes) -> list[str]:
    """Problems of a GLB against KHR_gaussian_splatting (base extension, "ellipse" kernel);
    [] if none. Checks what the Khronos validator cannot yet: the extension object, mode 0,
    the required attributes and their accessor types / component types / counts, complete SH
    degrees, and the values (finite positions inside min/max, unit rotations, non-negative
    scales, opacities in [0, 1], finite SH). Values of ``kernel``, ``colorSpace``,
    ``projection`` or ``sortingMethod`` defined by other extensions are reported too."""
    try:
        gltf, binary = parse_glb(glb)
    except InputError as e:
        return [str(e)]
    problems: list[str] = []
    if EXT not in gltf.get("extensionsUsed", []):
        problems.append(f"{EXT} is not listed in extensionsUsed")
    prims = [
        (mi, pi, p)
        for mi, m in enumerate(gltf.get("meshes", []))
        for pi, p in enumerate(m.get("primitives", []))
        if EXT in p.get("extensions", {})
    ]
    if not prims:
        problems.append(f"no mesh primitive has the {EXT} extension")
    for mi, pi, prim in prims:
        where = f"meshes[{mi}].primitives[{pi}]"
        try:
            problems += [f"{where}: {p}" for p in _check_primitive(gltf, binary, prim)]
        except (KeyError, IndexError, TypeError, ValueError) as e:
            problems.append(f"{where}: malformed ({type(e).__name__}: {e})")
    return problems


def _check_primitive(gltf: dict, binary: bytes, prim: dict) -> list[str]:
    problems = []
    if prim.get("mode", 4) != 0:
        problems.append(f"mode must be 0 (POINTS), got {prim.get('mode', 4)}")
    ext = prim["extensions"][EXT]
    if not isinstance(ext, dict):
        return problems + ["the extension object is not an object"]
    for key in ("kernel", "colorSpace"):
        if key not in ext:
            problems.append(f"the extension object lacks required {key!r}")
    for key, known in _KNOWN_VALUES.items():
        if key in ext and not isinstance(ext[key], str):
            problems.append(f"{key} must be a string")
        elif key in ext and ext[key] not in known:
            problems.append(f"{key} {ext[key]!r} is not defined by the base extension")
    attrs = prim.get("attributes", {})
    for name in _REQUIRED:
        if name not in attrs:
            problems.append(f"missing required attribute {name}")
    sh_degrees = {}
    for name in attrs:
        if name.startswith(f"{EXT}:SH_DEGREE_"):
            try:
                d, n = name[len(f"{EXT}:SH_DEGREE_") :].split("_COEF_")
                d, n = int(d), int(n)
            except ValueError:
                problems.append(f"unknown attribute {name}")
                continue
            if not (0 <= d <= 3 and 0 <= n <= 2 * d):
                problems.append(f"unknown attribute {name}")
                continue
            sh_degrees.setdefault(d, set()).add(n)
        elif name.startswith(f"{EXT}:") and name not in _ALLOWED:
            problems.append(f"unknown attribute {name}")
    top = max(sh_degrees, default=-1)
    for d in range(top + 1):
        if sh_degrees.get(d) != set(range(2 * d + 1)):
            problems.append(f"SH degree {d} is not fully defined (degrees 0..{top} must be)")
    counts = set()
    values = {}
    for name, index in attrs.items():
        acc = gltf["accessors"][index]
        counts.add(acc.get("count"))
        if name in _ALLOWED or name.startswith(f"{EXT}:SH_DEGREE_"):
            want_type, comps = _ALLOWED.get(name, ("VEC3", {(FLOAT, False)}))
            got = (acc.get("componentType"), bool(acc.get("normalized", False)))
            if acc.get("type") != want_type:
                problems.append(f"{name}: accessor type {acc.get('type')}, expected {want_type}")
                continue
            if got not in comps:
                problems.append(f"{name}: componentType/normalized {got} not allowed")
                continue
        elif name == "COLOR_0":
            ok = acc.get("type") in ("VEC3", "VEC4") and (
                acc.get("componentType") == FLOAT
                or (acc.get("componentType") in (UBYTE, USHORT) and acc.get("normalized"))
            )
            if not ok:
                problems.append("COLOR_0: must be VEC3/VEC4 float or normalized ubyte/ushort")
                continue
        if acc.get("bufferView") is None:
            problems.append(f"{name}: accessor has no bufferView")
            continue
        try:
            values[name] = accessor_array(gltf, binary, index)
        except InputError as e:
            problems.append(f"{name}: {e}")
    if len(counts) > 1:
        problems.append(f"attribute accessors disagree on the count: {sorted(map(str, counts))}")
    if counts and min((c or 0) for c in counts) < 1:
        problems.append("attribute accessors must have count >= 1")
    problems += _check_values(gltf, attrs, values)
    return problems


def _check_values(gltf: dict, attrs: dict, values: dict) -> list[str]:
    problems = []
    for name, v in values.items():
        if not np.all(np.isfinite(v)):
            problems.append(f"{name}: non-finite values")
    pos = values.get("POSITION")
    if pos is not None and np.all(np.isfinite(pos)):
        acc = gltf["accessors"][attrs["POSITION"]]
        if "min" not in acc or "max" not in acc:
            problems.append("POSITION: accessor min/max are required")
        else:
            lo, hi = np.asarray(acc["min"]), np.asarray(acc["max"])
            tol = 1e-6 * np.maximum(1.0, np.abs(pos).max(0))
            if np.any(pos.min(0) < lo - tol) or np.any(pos.max(0) > hi + tol):
                problems.append("POSITION: values outside the accessor's min/max")
    rot = values.get(f"{EXT}:ROTATION")
    if rot is not None and np.all(np.isfinite(rot)) and len(rot):
        is_float = gltf["accessors"][attrs[f"{EXT}:ROTATION"]]["componentType"] == FLOAT
        err = float(np.abs(np.linalg.norm(rot, axis=1) - 1.0).max())
        if err > (1e-4 if is_float else 2e-2):
            problems.append(f"{EXT}:ROTATION: not unit quaternions (|norm - 1| up to {err:.3g})")
    sc = values.get(f"{EXT}:SCALE")
    if sc is not None and np.any(sc < 0):
        problems.append(f"{EXT}:SCALE: negative values")
    op = values.get(f"{EXT}:OPACITY")
    if op is not None and (np.any(op < 0) or np.any(op > 1)):
        problems.append(f"{EXT}:OPACITY: values outside [0, 1]")
    return problems


register_exporter(
    Exporter(
        name="gltf-splats",
        kind="file",
        extension=".glb",
        description="glTF binary with KHR_gaussian_splatting (world frame, +Y up)",
        export=export_gltf_splats,
    )
)
