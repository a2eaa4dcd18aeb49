"""Splat exports (PLY, .splat, SPZ v2/v3, glTF KHR_gaussian_splatting) and ``worldgen export``,
read back by tools we did not write: PlayCanvas splat-transform, the Khronos glTF validator,
plyfile and trimesh; frames checked with an asymmetric marker scene."""

from __future__ import annotations

import gzip
import hashlib
import json
import shutil
import struct
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from exporters.common import (
    importance,
    prepare,
    quat_from_matrix,
    quat_multiply,
    quat_to_matrix,
    rotate_sh,
    sh_basis,
    world_splats,
)
from exporters.gltf_splats import (
    check_khr_gaussian_splatting,
    export_gltf_splats,
    parse_glb,
    read_gltf_splats,
)
from exporters.ply import export_ply
from exporters.registry import ExportOptions, exporter_for_path
from exporters.splat import export_splat, read_splat
from exporters.spz import RDF_SH_FLIP, export_spz, read_spz
from tests.conftest import tool
from tests.test_cli import run as run_worldgen
from tests.test_formats import validate_gltf
from worldgen.camera import rot_x, rot_y, rot_z
from worldgen.cli import main
from worldgen.splats import SH_C0, Splats, inria_property_names, read_ply, write_ply
from worldgen.world import load_world

FLIP_YZ = np.diag([1.0, -1.0, -1.0])  # world -> levelled OpenCV (and RUB <-> RDF)
ROT_Y180 = np.diag([-1.0, 1.0, -1.0])


def tilted_world_from_camera() -> np.ndarray:
    """A source camera pitched and rolled (and off the origin), so frames really differ."""
    M = np.eye(4)
    M[:3, :3] = FLIP_YZ @ rot_x(0.35) @ rot_z(-0.2)
    M[:3, 3] = [0.1, 0.2, -0.3]
    return M


def make_bundle(src: Path, dst: Path, world_frame: Splats, world_from_camera: np.ndarray) -> Path:
    """A valid world bundle holding ``world_frame`` splats (given in the WORLD frame): a copy of
    ``src`` with splats.ply in the source camera's axes, its layer ids and world.json updated."""
    from scipy.spatial.transform import Rotation

    shutil.copytree(src, dst)
    # camera = R^T (world - t), done here without the code under test (SH: rotate_sh, which
    # test_sh_rotation_* checks against the KHR formulas)
    R, t = world_from_camera[:3, :3], world_from_camera[:3, 3]
    means = (world_frame.means.double().numpy() - t) @ R
    local = Rotation.from_quat(world_frame.quats.double().numpy()[:, [1, 2, 3, 0]]).as_matrix()
    q = Rotation.from_matrix(R.T @ local).as_quat()[:, [3, 0, 1, 2]]
    sh = rotate_sh(world_frame.sh.double().numpy(), R.T)
    f32 = torch.float32
    cam = replace(
        world_frame,
        means=torch.from_numpy(means).to(f32),
        quats=torch.from_numpy(q).to(f32),
        sh=torch.from_numpy(sh).to(f32),
    )
    write_ply(cam, dst / "splats.ply")
    n = len(cam)
    np.save(dst / "splat_layers.npy", np.zeros(n, np.uint8))
    m = json.loads((dst / "world.json").read_text())
    m["splats"]["count"] = n
    m["splats"]["sh_degree"] = cam.sh_degree
    m["world_from_camera"] = np.asarray(world_from_camera).tolist()
    for layer in m["layers"]:
        layer["splat_count"] = n if layer["id"] == 0 else 0
    (dst / "world.json").write_text(json.dumps(m, indent=2))
    load_world(dst)  # valid
    return dst


def random_splats(n: int, degree: int, seed: int) -> Splats:
    g = torch.Generator().manual_seed(seed)
    k = (degree + 1) ** 2
    sh = torch.randn(n, k, 3, generator=g) * 0.3
    sh[:, 0] = torch.rand(n, 3, generator=g) * 3 - 1.5
    return Splats(
        means=torch.randn(n, 3, generator=g) * 2,
        quats=torch.randn(n, 4, generator=g),
        log_scales=torch.rand(n, 3, generator=g) * 4 - 6,
        logit_opacities=torch.randn(n, generator=g) * 2,
        sh=sh.clamp(-0.9, 0.9) if degree else sh,
        layers=torch.zeros(n, dtype=torch.uint8),
    )


#: world-frame markers: an elongated splat at +X (red), +Y = up (green), +Z (blue), each long
#: along its own axis (name: (position, axis)), and a grey round one at the origin
MARKERS = {
    "red": ((2.0, 0.0, 0.0), 0),
    "green": ((0.0, 2.0, 0.0), 1),
    "blue": ((0.0, 0.0, 2.0), 2),
}


def marker_splats() -> Splats:
    means, quats, scales, sh = [], [], [], []
    # each long along its local x, turned onto its world axis by its rotation
    turn = {0: np.eye(3), 1: rot_z(np.pi / 2), 2: rot_y(-np.pi / 2)}
    for (pos, axis), rgb in zip(MARKERS.values(), np.eye(3), strict=True):
        assert np.allclose(turn[axis] @ [1, 0, 0], np.eye(3)[axis])
        means.append(pos)
        scales.append(np.log([0.3, 0.02, 0.02]))
        quats.append(quat_from_matrix(turn[axis]))
        sh.append((np.clip(rgb, 0.05, 0.95) - 0.5) / SH_C0)
    means.append((0.0, 0.0, 0.0))
    scales.append(np.log([0.05] * 3))
    quats.append([1.0, 0, 0, 0])
    sh.append((np.array([0.5, 0.5, 0.5]) - 0.5) / SH_C0)
    f = torch.float32
    return Splats(
        torch.tensor(np.array(means), dtype=f),
        torch.tensor(np.array(quats), dtype=f),
        torch.tensor(np.array(scales), dtype=f),
        torch.full((4,), 3.0),
        torch.tensor(np.array(sh), dtype=f)[:, None, :],
        torch.zeros(4, dtype=torch.uint8),
    )


@pytest.fixture(scope="module")
def sh_world(small_world, tmp_path_factory) -> Path:
    """300 random splats with SH degree 3 under a tilted source camera."""
    d = tmp_path_factory.mktemp("shw") / "sh.world"
    return make_bundle(small_world, d, random_splats(300, 3, seed=1), tilted_world_from_camera())


@pytest.fixture(scope="module")
def marker_world(small_world, tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("mk") / "markers.world"
    return make_bundle(small_world, d, marker_splats(), tilted_world_from_camera())


def splat_transform(*args) -> subprocess.CompletedProcess:
    """PlayCanvas splat-transform (``-w``: overwrite), which must succeed."""
    r = subprocess.run(
        [tool("splat-transform"), "-w", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0, r.stderr + r.stdout
    return r


def splat_transform_stats(path: Path) -> tuple[dict, dict]:
    """(report, {column: {min, max, mean}}) of splat-transform ``--stats json``."""
    r = splat_transform(path, "null", "--stats", "json")
    info = json.loads(r.stdout[r.stdout.index("{") :])
    st = info["stats"][0]
    cols = {
        c: {k: st["data"][k][i] for k in ("min", "max", "mean")}
        for i, c in enumerate(st["columns"])
    }
    return info, cols


def via_splat_transform_ply(src: Path, tmp: Path) -> dict[str, np.ndarray]:
    """``src`` converted to PLY by splat-transform and read back with plyfile."""
    from plyfile import PlyData

    out = tmp / f"{src.name}.st.ply"
    splat_transform(src, out)
    v = PlyData.read(str(out))["vertex"].data
    return {name: np.asarray(v[name], np.float64) for name in v.dtype.names}


def khr_sh_basis(d: np.ndarray) -> np.ndarray:
    """[N, 16] the real SH basis written out from KHR_gaussian_splatting (Lighting section),
    independently of worldgen.raster."""
    x, y, z = d.T
    c1 = 0.4886025119029199
    return np.stack(
        [
            np.full_like(x, 0.2820947917738781),
            -c1 * y,
            c1 * z,
            -c1 * x,
            1.092548430592079 * x * y,
            -1.092548430592079 * y * z,
            0.3153915652525200 * (2 * z * z - x * x - y * y),
            -1.092548430592079 * x * z,
            0.5462742152960395 * (x * x - y * y),
            -0.5900435899266435 * y * (3 * x * x - y * y),
            2.890611442640554 * x * y * z,
            -0.4570457994644657 * y * (4 * z * z - x * x - y * y),
            0.3731763325901154 * z * (2 * z * z - 3 * x * x - 3 * y * y),
            -0.4570457994644657 * x * (4 * z * z - x * x - y * y),
            1.445305721320277 * z * (x * x - y * y),
            -0.5900435899266435 * x * (x * x - 3 * y * y),
        ],
        1,
    )


def unit(n: int, seed: int) -> np.ndarray:
    d = np.random.default_rng(seed).normal(size=(n, 3))
    return d / np.linalg.norm(d, axis=1, keepdims=True)


def same_axes(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """[N] smallest |cos| between corresponding local axes of two rotations (1 = the same
    ellipsoid axes; insensitive to an axis' sign, which does not change a Gaussian)."""
    Ra, Rb = quat_to_matrix(qa), quat_to_matrix(qb)
    return np.abs(np.einsum("nji,njk->nik", Ra, Rb)).diagonal(axis1=1, axis2=2).min(1)


def same_rotation(qa: np.ndarray, qb: np.ndarray) -> np.ndarray:
    """[N] |<qa, qb>| of normalised quaternions (1 = same rotation, up to sign)."""
    qa = qa / np.linalg.norm(qa, axis=1, keepdims=True)
    qb = qb / np.linalg.norm(qb, axis=1, keepdims=True)
    return np.abs((qa * qb).sum(1))


# ----------------------------------------------------------------------------- frames and SH


def test_sh_basis_is_the_khr_basis():
    d = unit(200, 0)
    assert np.allclose(sh_basis(d, 3), khr_sh_basis(d), atol=1e-9)


@pytest.mark.parametrize("degree", [1, 2, 3])
def test_sh_rotation_keeps_colour_along_rotated_directions(degree):
    rng = np.random.default_rng(degree)
    R = rot_x(0.7) @ rot_z(-1.3) @ rot_x(2.1)
    k = (degree + 1) ** 2
    sh = rng.normal(size=(40, k, 3))
    d = unit(40, 7)
    before = np.einsum("nk,nkc->nc", khr_sh_basis(d)[:, :k], sh)
    after = np.einsum("nk,nkc->nc", khr_sh_basis(d @ R.T)[:, :k], rotate_sh(sh, R))
    assert np.allclose(after, before, atol=1e-9)
    assert np.array_equal(rotate_sh(sh, R)[:, 0], sh[:, 0])  # DC is direction-free


def test_sh_flip_table_of_niantic_matches_our_rotation():
    """SPZ's RUB <-> RDF sign table (Niantic's coordinateConverter) == rotate_sh by (x,-y,-z)."""
    sh = np.random.default_rng(3).normal(size=(5, 16, 3))
    assert np.allclose(rotate_sh(sh, FLIP_YZ)[:, 1:], sh[:, 1:] * RDF_SH_FLIP[:, None], atol=1e-9)


def test_world_splats_in_both_frames(sh_world):
    w = load_world(sh_world)
    cam, M = w.splats, w.world_from_camera
    for frame, F in (("world", np.eye(3)), ("opencv", FLIP_YZ)):
        s = world_splats(w, frame)
        R, t = F @ M[:3, :3], F @ M[:3, 3]
        assert np.allclose(s.means.numpy(), cam.means.double().numpy() @ R.T + t, atol=1e-5)
        Rq = quat_to_matrix(s.quats.double().numpy())
        assert np.allclose(Rq, R @ quat_to_matrix(cam.quats.double().numpy()), atol=1e-5)
        assert torch.equal(s.log_scales, cam.log_scales)
        assert torch.equal(s.logit_opacities, cam.logit_opacities)
        # the colour seen from a camera at c in the camera frame == from R c + t in the frame
        c = np.array([0.3, -0.2, -1.0])
        dc = cam.means.double().numpy() - c
        dc /= np.linalg.norm(dc, axis=1, keepdims=True)
        df = s.means.double().numpy() - (R @ c + t)
        df /= np.linalg.norm(df, axis=1, keepdims=True)
        col_c = np.einsum("nk,nkc->nc", khr_sh_basis(dc), cam.sh.double().numpy())
        col_f = np.einsum("nk,nkc->nc", khr_sh_basis(df), s.sh.double().numpy())
        assert np.allclose(col_c, col_f, atol=2e-5), frame
    up = world_splats(w, "world").means[:, 1]
    assert torch.allclose(world_splats(w, "opencv").means[:, 1], -up)


def test_prepare_budget_order_and_sh_degree(sh_world):
    w = load_world(sh_world)
    imp = importance(w.splats)
    s = prepare(w, ExportOptions(max_splats=50), "world")
    assert len(s) == 50 and s.sh_degree == 3
    kept = np.sort(imp)[::-1][:50]
    assert np.allclose(np.sort(importance(s))[::-1], kept, rtol=1e-5)
    assert np.all(np.diff(importance(s)) <= 1e-12)  # largest first
    assert prepare(w, ExportOptions(target="mobile"), "world").sh_degree == 0
    assert prepare(w, ExportOptions(target="vr"), "world").sh_degree == 1
    assert prepare(w, ExportOptions(sh_degree=2, target="mobile"), "world").sh_degree == 2
    assert len(prepare(w, ExportOptions(max_splats=10**6), "world")) == 300
    # never more SH than the world has
    small = load_world(sh_world)
    small.__dict__["splats"] = small.splats.with_sh_degree(1)
    assert prepare(small, ExportOptions(sh_degree=3), "world").sh_degree == 1


def test_registry_knows_the_file_formats():
    for ext, name in ((".ply", "ply"), (".splat", "splat"), (".spz", "spz")):
        assert exporter_for_path(Path("a" + ext)).name == name


# ----------------------------------------------------------------------------- round trips


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_ply_export_is_inria_and_round_trips(sh_world, tmp_path, degree):
    w = load_world(sh_world)
    opts = ExportOptions(sh_degree=degree)
    p = tmp_path / "o.ply"
    p.write_bytes(export_ply(w, opts))
    from plyfile import PlyData

    ply = PlyData.read(str(p))
    assert ply.byte_order == "<" and not ply.text
    assert [x.name for x in ply["vertex"].properties] == inria_property_names(degree)
    r, ref = read_ply(p), prepare(w, opts, "opencv")
    for f in ("means", "quats", "log_scales", "logit_opacities", "sh"):
        assert torch.equal(getattr(r, f), getattr(ref, f)), f


def test_splat_round_trip_and_order(sh_world):
    w = load_world(sh_world)
    data = export_splat(w, ExportOptions())
    assert len(data) == 32 * 300
    d, ref = read_splat(data), prepare(w, ExportOptions(sh_degree=0), "opencv")
    assert np.array_equal(d["means"], ref.means.numpy())  # same order: importance, descending
    assert np.allclose(d["scales"], ref.scales.numpy(), rtol=1e-6)
    assert np.abs(d["opacities"] - ref.opacities.numpy()).max() <= 0.5 / 255 + 1e-6
    rgb = np.clip(ref.rgb.numpy(), 0, 1)
    assert np.abs(d["rgb"] - rgb).max() <= 0.5 / 255 + 1e-6
    assert same_rotation(d["quats"], ref.quats.numpy()).min() > 0.99
    # sorted by opacity * volume, largest first (up to the opacity's 8-bit quantisation)
    vol, e = np.prod(d["scales"].astype(np.float64), 1), 0.5 / 255 + 1e-6
    assert np.all((d["opacities"][1:] - e) * vol[1:] <= (d["opacities"][:-1] + e) * vol[:-1])


@pytest.mark.parametrize("version", [2, 3])
def test_spz_round_trip_within_quantisation(sh_world, version):
    w = load_world(sh_world)
    data = export_spz(w, ExportOptions(), version=version)
    raw = gzip.decompress(data)
    assert struct.unpack_from("<IIIBBBB", raw) == (0x5053474E, version, 300, 3, 12, 0, 0)
    d, ref = read_spz(data, frame="rdf"), prepare(w, ExportOptions(), "opencv")
    assert d["version"] == version and d["sh_degree"] == 3
    assert np.abs(d["means"] - ref.means.numpy()).max() <= 0.5 / 4096 + 1e-6
    ls = np.clip(ref.log_scales.numpy(), -10, 255 / 16 - 10)
    assert np.abs(d["log_scales"] - ls).max() <= 1 / 32 + 1e-6
    assert np.abs(d["opacities"] - ref.opacities.numpy()).max() <= 0.5 / 255 + 1e-6
    assert np.abs(d["sh"][:, 0] - ref.sh[:, 0].numpy()).max() <= 0.5 / (0.15 * 255) + 1e-6
    assert np.abs(d["sh"][:, 1:4] - ref.sh[:, 1:4].numpy()).max() <= 4.5 / 128  # 5-bit buckets
    assert np.abs(d["sh"][:, 4:] - ref.sh[:, 4:].numpy()).max() <= 8.5 / 128  # 4-bit buckets
    # Niantic's RUB -> RDF conversion conjugates (w, x, -y, -z): the same ellipsoid axes
    # (v2 stores x, y, z in 8 bits and derives w: poor when w is small; v3 fixes that)
    q_err = 1 - same_axes(d["quats"], ref.quats.numpy())
    assert np.median(q_err) < (2e-4 if version == 2 else 2e-6)
    assert q_err.max() < (3e-2 if version == 2 else 2e-5)
    # as stored: RUB axes = worldgen's world frame
    world = read_spz(data)
    assert np.abs(world["means"] - prepare(w, ExportOptions(), "world").means.numpy()).max() < 2e-4
    # the option and the extra both choose the version
    opts = ExportOptions(extra={"spz_version": version})
    assert struct.unpack_from("<I", gzip.decompress(export_spz(w, opts)), 4)[0] == version


def test_spz_rejects_bad_input():
    from worldgen.errors import InputError

    with pytest.raises(InputError):
        read_spz(b"NGSP" + bytes(28))
    with pytest.raises(InputError):
        read_spz(gzip.compress(b"xx"))
    with pytest.raises(InputError):
        read_splat(bytes(33))


# ----------------------------------------------------------------------------- third-party readers


FORMATS = {  # name -> (suffix, export, frame of the bytes as splat-transform decodes them)
    "ply": (".ply", export_ply, "opencv"),
    "splat": (".splat", export_splat, "opencv"),
    "spz2": (".spz", lambda w, o: export_spz(w, o, 2), "world"),
    "spz3": (".spz", lambda w, o: export_spz(w, o, 3), "world"),
}


@pytest.mark.parametrize("fmt", list(FORMATS))
def test_splat_transform_reads_each_format(small_world, sh_world, tmp_path, fmt):
    """Counts, bounds, mean colour, opacity and scale ranges seen by splat-transform agree
    with ours within the format's quantisation. (Its --stats are taken of the raw columns and
    shown activated: exp/sigmoid of a mean is no mean of exp/sigmoid, so those are compared by
    their min and max, which activation keeps.)"""
    suffix, export, frame = FORMATS[fmt]
    w = load_world(small_world)
    p = tmp_path / f"o{suffix}"
    p.write_bytes(export(w, ExportOptions()))
    info, cols = splat_transform_stats(p)
    ref = prepare(w, ExportOptions(), frame)
    assert info["gaussian"] is True and info["numGaussians"] == len(ref)
    assert info["format"] == {"ply": "ply", "splat": "splat"}.get(fmt, "spz")
    pos_tol = {"ply": 1e-5, "splat": 1e-5}.get(fmt, 0.5 / 4096 + 1e-5)
    col_tol = {"ply": 1e-5, "splat": 0.5 / 255 + 1e-5}.get(fmt, SH_C0 * 0.5 / 38.25 + 1e-5)
    op_tol = 1e-5 if fmt == "ply" else 0.5 / 255 + 1e-5
    means = ref.means.double().numpy()
    for i, c in enumerate("xyz"):  # bounds and centre
        for stat in ("min", "max", "mean"):
            want = getattr(means[:, i], stat)()
            assert cols[c][stat] == pytest.approx(want, abs=pos_tol), (c, stat)
    rgb = ref.rgb.double().numpy()
    if fmt == "splat":
        rgb = np.clip(rgb, 0, 1)
    for i in range(3):  # colour: linear in f_dc, so the mean too
        for stat in ("min", "max", "mean"):
            want = getattr(rgb[:, i], stat)()
            assert cols[f"f_dc_{i}"][stat] == pytest.approx(want, abs=col_tol), (i, stat)
    op = ref.opacities.double().numpy()
    assert cols["opacity"]["min"] == pytest.approx(op.min(), abs=op_tol)
    assert cols["opacity"]["max"] == pytest.approx(op.max(), abs=op_tol)
    ls = ref.log_scales.double().numpy()
    ls_tol = 1e-5
    if fmt.startswith("spz"):  # 8-bit log scales from exp(-10)
        ls, ls_tol = np.clip(ls, -10, 255 / 16 - 10), 1 / 32 + 1e-5
    for i in range(3):
        for stat in ("min", "max"):
            got = np.log(cols[f"scale_{i}"][stat])
            assert got == pytest.approx(getattr(ls[:, i], stat)(), abs=ls_tol), (i, stat)
    # SH bands survive (a world with SH degree 3)
    if fmt != "splat":
        p3 = tmp_path / f"sh{suffix}"
        p3.write_bytes(export(load_world(sh_world), ExportOptions()))
        assert splat_transform_stats(p3)[0]["shBands"] == 3


def test_gltf_splats_equal_splat_transforms_conversion_of_our_ply(sh_world, tmp_path):
    """splat-transform 3.7.0 turns our PLY into a KHR GLB by rotating 180 degrees about Z;
    ours (world frame) must equal that rotated 180 degrees about Y, SH included (it rotates
    SH with its own code: an independent check of ours)."""
    w = load_world(sh_world)
    (tmp_path / "o.ply").write_bytes(export_ply(w, ExportOptions()))
    splat_transform(tmp_path / "o.ply", tmp_path / "st.glb")
    theirs = read_gltf_splats((tmp_path / "st.glb").read_bytes())
    ours = read_gltf_splats(export_gltf_splats(w, ExportOptions()))
    assert len(ours["means"]) == len(theirs["means"]) == 300
    scale = np.abs(theirs["means"]).max()
    assert np.allclose(ours["means"], theirs["means"] @ ROT_Y180.T, rtol=1e-5, atol=1e-5 * scale)
    assert np.allclose(ours["scales"], theirs["scales"], rtol=1e-5)
    assert np.allclose(ours["opacities"], theirs["opacities"], rtol=1e-5, atol=1e-7)
    q_theirs = theirs["quats_xyzw"][:, [3, 0, 1, 2]]
    q_expect = quat_multiply(quat_from_matrix(ROT_Y180)[None], q_theirs)
    assert same_rotation(ours["quats_xyzw"][:, [3, 0, 1, 2]], q_expect).min() > 1 - 1e-6
    # (x, y, z) -> (-x, y, -z) changes each basis function's sign (KHR Appendix A formulas)
    d = unit(10, 1)
    signs = khr_sh_basis(d @ ROT_Y180.T)[0] / khr_sh_basis(d)[0]
    assert np.allclose(np.abs(signs), 1)
    assert np.allclose(ours["sh"], theirs["sh"] * np.round(signs)[None, :, None], atol=1e-5)
    assert check_khr_gaussian_splatting((tmp_path / "st.glb").read_bytes()) == []


@pytest.mark.parametrize("which", ["small", "sh"])
def test_gltf_splats_pass_the_khronos_validator_and_our_check(
    small_world, sh_world, tmp_path, which
):
    w = load_world(small_world if which == "small" else sh_world)
    data = export_gltf_splats(w, ExportOptions())
    p = tmp_path / "s.glb"
    p.write_bytes(data)
    report = validate_gltf(p)
    codes = {m["code"] for m in report["issues"]["messages"]}
    assert codes <= {"MESH_PRIMITIVE_INVALID_ATTRIBUTE", "UNSUPPORTED_EXTENSION"}, report["issues"]
    assert report["issues"]["numWarnings"] == 0
    assert check_khr_gaussian_splatting(data) == []
    gltf, _ = parse_glb(data)
    prim = gltf["meshes"][0]["primitives"][0]
    assert prim["mode"] == 0 and "KHR_gaussian_splatting" in gltf["extensionsUsed"]
    assert prim["extensions"]["KHR_gaussian_splatting"]["kernel"] == "ellipse"
    n_sh = sum(1 for a in prim["attributes"] if ":SH_DEGREE_" in a)
    assert n_sh == (w.splats.sh_degree + 1) ** 2


def _rebuild(gltf: dict, binary: bytes) -> bytes:
    js = json.dumps(gltf).encode()
    js += b" " * ((-len(js)) % 4)
    total = 28 + len(js) + len(binary)
    return (
        struct.pack("<III", 0x46546C67, 2, total)
        + struct.pack("<II", len(js), 0x4E4F534A)
        + js
        + struct.pack("<II", len(binary), 0x004E4942)
        + binary
    )


def test_our_khr_check_catches_broken_files(sh_world):
    good = export_gltf_splats(load_world(sh_world), ExportOptions())
    gltf0, bin0 = parse_glb(good)
    ext = "KHR_gaussian_splatting"

    def broken(edit, patch_bin=None):
        g = json.loads(json.dumps(gltf0))
        b = bytearray(bin0)
        prim = g["meshes"][0]["primitives"][0]
        edit(g, prim)
        if patch_bin:
            patch_bin(g, prim, b)
        return check_khr_gaussian_splatting(_rebuild(g, bytes(b)))

    def poke(name, value):
        def f(g, prim, b):
            acc = g["accessors"][prim["attributes"][name]]
            off = g["bufferViews"][acc["bufferView"]]["byteOffset"]
            struct.pack_into("<f", b, off, value)

        return f

    cases = {
        "mode": broken(lambda g, p: p.update(mode=4)),
        "no mode": broken(lambda g, p: p.pop("mode")),
        "extensionsUsed": broken(lambda g, p: g.pop("extensionsUsed")),
        "kernel": broken(lambda g, p: p["extensions"][ext].pop("kernel")),
        "ROTATION": broken(lambda g, p: p["attributes"].pop(f"{ext}:ROTATION")),
        "SH_DEGREE_2": broken(lambda g, p: p["attributes"].pop(f"{ext}:SH_DEGREE_2_COEF_3")),
        "type": broken(
            lambda g, p: g["accessors"][p["attributes"][f"{ext}:SCALE"]].update(type="VEC4")
        ),
        "count": broken(
            lambda g, p: g["accessors"][p["attributes"][f"{ext}:OPACITY"]].update(count=299)
        ),
        "OPACITY": broken(lambda g, p: None, poke(f"{ext}:OPACITY", 1.5)),
        "ROTATION norm": broken(lambda g, p: None, poke(f"{ext}:ROTATION", 3.0)),
        "SCALE": broken(lambda g, p: None, poke(f"{ext}:SCALE", -0.1)),
        "POSITION": broken(lambda g, p: None, poke("POSITION", 1e6)),
        "glb": check_khr_gaussian_splatting(good[:-4]),
    }
    for what, problems in cases.items():
        assert problems, what


# ----------------------------------------------------------------------------- marker scene


def marker_of(rgb: np.ndarray) -> list[str]:
    """Marker names by dominant colour channel (grey = 'grey')."""
    names = list(MARKERS)
    return ["grey" if np.ptp(c) < 0.2 else names[int(np.argmax(c))] for c in rgb]


def long_axis(rot_wxyz: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """[N, 3] unit direction of each splat's longest axis."""
    R = quat_to_matrix(rot_wxyz)
    return R[np.arange(len(R)), :, np.argmax(scales, 1)]


def expect_markers(frame: str) -> dict[str, np.ndarray]:
    F = {"world": np.eye(3), "opencv": FLIP_YZ}[frame]
    out = {name: F @ np.array(pos) for name, (pos, _) in MARKERS.items()}
    out["grey"] = np.zeros(3)
    return out


def check_markers(frame, names, means, axes, tol):
    want = expect_markers(frame)
    assert sorted(names) == sorted(want), names
    for name, p, a in zip(names, means, axes, strict=True):
        assert np.allclose(p, want[name], atol=tol), (frame, name, p)
        if name != "grey":  # the long axis points along the marker's own direction
            assert abs(abs(a @ want[name]) / 2 - 1) < 0.02, (frame, name, a)


@pytest.mark.parametrize("fmt", ["ply", "splat", "spz2", "spz3"])
def test_markers_where_the_frame_doc_says(marker_world, tmp_path, fmt):
    """PLY and .splat: levelled OpenCV (up is -y); SPZ stores RUB = world (up is +y) and
    splat-transform decodes it raw. Checked through splat-transform and through our readers."""
    suffix, export, frame = FORMATS[fmt]
    w = load_world(marker_world)
    p = tmp_path / f"m{suffix}"
    p.write_bytes(export(w, ExportOptions()))
    v = via_splat_transform_ply(p, tmp_path)
    rgb = 0.5 + SH_C0 * np.stack([v["f_dc_0"], v["f_dc_1"], v["f_dc_2"]], 1)
    means = np.stack([v["x"], v["y"], v["z"]], 1)
    rot = np.stack([v[f"rot_{i}"] for i in range(4)], 1)
    scales = np.stack([v[f"scale_{i}"] for i in range(3)], 1)
    tol = 1e-5 if fmt in ("ply", "splat") else 1e-3
    check_markers(frame, marker_of(rgb), means, long_axis(rot, scales), tol)
    # the up marker is the lowest in y in the y-down frames, the highest in y-up frames
    green = marker_of(rgb).index("green")
    assert means[green, 1] == (means[:, 1].min() if frame == "opencv" else means[:, 1].max())
    # our own readers agree
    if fmt == "splat":
        d = read_splat(p.read_bytes())
        check_markers(
            frame, marker_of(d["rgb"]), d["means"], long_axis(d["quats"], d["scales"]), tol
        )
    elif fmt.startswith("spz"):
        for fr, ours in (("world", "rub"), ("opencv", "rdf")):
            d = read_spz(p.read_bytes(), frame=ours)
            axes = long_axis(d["quats"], d["scales"])
            check_markers(fr, marker_of(d["rgb"]), d["means"], axes, 1e-3)


def test_markers_in_the_gltf_splats(marker_world, tmp_path):
    """glTF: world frame, +Y up; read by trimesh (POINTS + COLOR_0) and by our reader; and
    splat-transform's conversion of our PLY is that rotated 180 degrees about Y."""
    import trimesh

    w = load_world(marker_world)
    data = export_gltf_splats(w, ExportOptions())
    p = tmp_path / "m.glb"
    p.write_bytes(data)
    scene = trimesh.load(p, force="scene")
    (cloud,) = scene.geometry.values()
    colors = np.asarray(cloud.colors, np.float64)[:, :3] / 255  # linear, still dominant-channel
    names = marker_of(colors)
    want = expect_markers("world")
    assert sorted(names) == sorted(want), names
    for name, pos in zip(names, np.asarray(cloud.vertices), strict=True):
        assert np.allclose(pos, want[name], atol=1e-5), (name, pos)
    d = read_gltf_splats(data)
    rgb = 0.5 + SH_C0 * d["sh"][:, 0]
    check_markers(
        "world",
        marker_of(rgb),
        d["means"],
        long_axis(d["quats_xyzw"][:, [3, 0, 1, 2]], d["scales"]),
        1e-5,
    )
    (tmp_path / "m.ply").write_bytes(export_ply(w, ExportOptions()))
    splat_transform(tmp_path / "m.ply", tmp_path / "st.glb")
    st = read_gltf_splats((tmp_path / "st.glb").read_bytes())
    st_names = marker_of(0.5 + SH_C0 * st["sh"][:, 0])
    for name, pos in zip(st_names, st["means"], strict=True):
        assert np.allclose(ROT_Y180 @ pos, want[name], atol=1e-5), (name, pos)


# ----------------------------------------------------------------------------- CLI


def run_cli(*args, cwd=None):
    """``worldgen`` in a fresh process (tests.test_cli.run)."""
    return run_worldgen(*args, cwd=cwd)


def assert_one_line_error(r, *needles):
    assert r.returncode != 0, r.stdout
    assert "Traceback" not in r.stderr
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "error" in lines[0], r.stderr
    for n in needles:
        assert n in lines[0], r.stderr


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def test_cli_export_success_json_and_quiet(small_world, tmp_path, capsys):
    out = tmp_path / "w.spz"
    assert main(["export", str(small_world), "-o", str(out)]) == 0
    text = capsys.readouterr().out
    assert text.startswith(f"wrote {out}") and "B/splat" in text and " s" in text
    n = load_world(small_world).manifest["splats"]["count"]
    d = read_spz(out.read_bytes())
    assert d["version"] == 2 and len(d["means"]) == n
    # --json with --to, --spz-version, --max-splats and --sh-degree
    out3 = tmp_path / "w3.bin"
    args = ["export", str(small_world), "--to", "spz", "-o", str(out3), "--spz-version", "3"]
    assert main([*args, "--max-splats", "1000", "--sh-degree", "0", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    assert s["format"] == "spz" and s["spz_version"] == 3 and s["splats"] == 1000
    assert s["bytes"] == out3.stat().st_size and s["files"] == [str(out3)]
    assert s["bytes_per_splat"] == pytest.approx(s["bytes"] / 1000, abs=1e-3)
    assert s["seconds"] >= 0 and s["sh_degree"] == 0
    assert read_spz(out3.read_bytes())["version"] == 3
    # --quiet prints nothing
    assert main(["export", str(small_world), "-o", str(tmp_path / "q.splat"), "--quiet"]) == 0
    assert capsys.readouterr() == ("", "")
    assert (tmp_path / "q.splat").stat().st_size == 32 * n
    # gltf-splats needs --to (.glb is ambiguous once the level exporter exists)
    g = tmp_path / "s.glb"
    assert main(["export", str(small_world), "--to", "gltf-splats", "-o", str(g), "--quiet"]) == 0
    assert check_khr_gaussian_splatting(g.read_bytes()) == []
    # only the outputs: no temporary files left behind
    assert sorted(x.name for x in tmp_path.iterdir()) == ["q.splat", "s.glb", "w.spz", "w3.bin"]


def test_cli_export_target_mobile_means_sh0(sh_world, tmp_path, capsys):
    out = tmp_path / "m.ply"
    assert main(["export", str(sh_world), "-o", str(out), "--target", "mobile", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["sh_degree"] == 0
    assert read_ply(out).sh_degree == 0
    out = tmp_path / "d.ply"
    assert main(["export", str(sh_world), "-o", str(out), "--quiet"]) == 0
    assert read_ply(out).sh_degree == 3


def test_cli_export_errors_are_one_line(small_world, tmp_path, capsys):
    out = tmp_path / "x.ply"
    out.write_bytes(b"precious")
    before = sha(out)
    # the real entry point, in a fresh process: no traceback, one line, OUT untouched
    r = run_cli("export", small_world, "-o", out)
    assert_one_line_error(r, "exists", "--force")
    assert sha(out) == before
    assert_one_line_error(
        run_cli("export", small_world, "--to", "nope", "-o", tmp_path / "a"), "nope", "spz"
    )
    # the rest in-process (same handler)
    cases = [
        (["export", str(tmp_path / "nope.world"), "-o", str(tmp_path / "a.ply")], "no such"),
        (["export", str(small_world), "-o", str(tmp_path / "a.xyz")], "--to"),
        (["export", str(small_world), "-o", str(tmp_path / "a.ply"), "--sh-degree", "7"], "0 to 3"),
        (["export", str(small_world), "-o", str(tmp_path / "a.ply"), "--max-splats", "0"], "max"),
        (["export", str(small_world), "-o", str(tmp_path / "no" / "a.ply")], "does not exist"),
        (["export", str(small_world), "-o", str(tmp_path / "a.spz"), "--spz-version", "4"], "4"),
        (["export", str(small_world), "-o", str(tmp_path / "a.ply"), "--target", "tv"], "tv"),
    ]
    for argv, needle in cases:
        try:
            rc = main(argv)
        except SystemExit as e:  # argparse: usage errors
            rc = e.code
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert rc != 0 and len(lines) == 1 and "error" in lines[0] and needle in lines[0], err
        assert "Traceback" not in err
    assert sorted(x.name for x in tmp_path.iterdir()) == ["x.ply"]


def test_cli_export_force_replaces_and_a_failure_leaves_out_untouched(
    small_world, tmp_path, capsys
):
    out = tmp_path / "x.splat"
    out.write_bytes(b"old")
    assert main(["export", str(small_world), "-o", str(out), "--force", "--quiet"]) == 0
    assert out.stat().st_size % 32 == 0 and out.stat().st_size > 32
    before = sha(out)
    # a world whose splats.ply is broken: the export fails after loading, OUT stays
    bad = tmp_path / "bad.world"
    shutil.copytree(small_world, bad)
    (bad / "splats.ply").write_bytes(b"ply\nformat binary_little_endian 1.0\n")
    capsys.readouterr()
    assert main(["export", str(bad), "-o", str(out), "--force"]) != 0
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "error" in err
    assert sha(out) == before
    assert sorted(x.name for x in tmp_path.iterdir()) == ["bad.world", "x.splat"]


def test_export_options_reach_the_registered_exporters(sh_world):
    from exporters.registry import get_exporter

    w = load_world(sh_world)
    o = ExportOptions(max_splats=7, sh_degree=1, extra={"spz_version": 3})
    assert read_spz(get_exporter("spz").export(w, o))["version"] == 3
    assert len(read_spz(get_exporter("spz").export(w, o))["means"]) == 7
    assert len(get_exporter("splat").export(w, o)) == 7 * 32
    assert len(read_gltf_splats(get_exporter("gltf-splats").export(w, o))["means"]) == 7
    assert read_gltf_splats(get_exporter("gltf-splats").export(w, o))["sh"].shape[1] == 4
    assert get_exporter("ply").export(w, replace(o, sh_degree=0)).count(b"f_rest") == 0
