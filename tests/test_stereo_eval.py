"""The novel-view benchmark's ground truth (procedural ray caster), metrics and baselines."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

from benchmarks import scenes as sc
from benchmarks import stereo_eval as se
from worldgen.camera import Intrinsics, Pose

POSES = [
    Pose.identity(),
    Pose.from_cli(0.3, -0.2, 0.4, 20, -10, 5),
    Pose.from_cli(-0.4, 0.1, 0.8, -35, 8, 0),
]


def _unproject(depth: np.ndarray, intr: Intrinsics, pose: Pose) -> np.ndarray:
    """[H, W, 3] source-axes points of every pixel's depth (z-depth in the posed camera)."""
    vv, uu = np.mgrid[0 : intr.height, 0 : intr.width].astype(np.float64)
    z = depth.astype(np.float64)
    X = np.stack([(uu - intr.cx) / intr.fx * z, (vv - intr.cy) / intr.fy * z, z], -1)
    return X @ pose.R.T + pose.T


@pytest.mark.parametrize("pose", POSES, ids=["source", "moved", "moved2"])
@pytest.mark.parametrize("name", sc.EVAL_SCENES)
def test_depth_unprojects_onto_the_intended_surface(name, pose):
    intr = Intrinsics.from_hfov(60, 80, 60)
    rgb, depth = sc.render_scene(name, intr, pose)
    assert rgb.shape == (60, 80, 3) and rgb.dtype == np.float32
    assert depth.shape == (60, 80) and depth.dtype == np.float32
    assert np.isfinite(depth).all() and (depth > 0).all()
    assert 0.0 <= rgb.min() and rgb.max() <= 1.0
    ids = sc.render_scene_hits(name, intr, pose).ids.reshape(60, 80)
    P = _unproject(depth, intr, pose)
    scene = sc.get_scene(name)
    checked = 0
    for k, prim in enumerate(scene.primitives):
        m = ids == k
        if not m.any():
            continue
        Q = P[m]
        if isinstance(prim, sc.Plane):
            err = np.abs(Q[:, prim.axis] - prim.value)
        elif isinstance(prim, sc.Sphere):
            err = np.abs(np.linalg.norm(Q - prim.centre, axis=1) - prim.radius) / prim.radius
        else:  # box: inside (within tol) and on one of its faces
            lo, hi = np.asarray(prim.lo), np.asarray(prim.hi)
            assert (Q >= lo - 1e-5).all() and (Q <= hi + 1e-5).all(), prim.name
            err = np.minimum(np.abs(Q - lo), np.abs(Q - hi)).min(axis=1)
        assert err.max() < 1e-5, (prim.name, float(err.max()))
        checked += m.sum()
    assert checked == ids.size
    names = [p.name for p in scene.primitives]
    floor = ids == sc.primitive_index(name, "ground" if "ground" in names else "floor")
    assert floor.any() or pose is not POSES[0]
    if floor.any():
        assert np.abs(P[floor][:, 1] - 1.6).max() < 1e-5


def test_floor_at_camera_height_and_sky_far():
    intr = Intrinsics.from_hfov(60, 96, 72)
    h = sc.render_scene_hits("outdoor_boxes", intr)
    ground, sky = (
        sc.primitive_index("outdoor_boxes", "ground"),
        sc.primitive_index("outdoor_boxes", "sky"),
    )
    assert (h.ids == ground).mean() > 0.2 and (h.ids == sky).mean() > 0.2
    assert np.abs(h.points[h.ids == ground][:, 1] - sc.CAMERA_HEIGHT).max() < 1e-9
    r = np.linalg.norm(h.points[h.ids == sky], axis=1)
    assert np.abs(r - sc.SKY_DISTANCE).max() < 1e-6
    up = h.points[h.ids == sky][:, 1] < 0  # y down: the visible sky is above the horizon
    assert up.mean() > 0.9


@pytest.mark.parametrize("name", sc.EVAL_SCENES)
def test_texture_is_glued_to_the_surface(name):
    """The colour of a 3-D point is the same from another camera that sees it."""
    intr = Intrinsics.from_hfov(60, 64, 48)
    a = sc.render_scene_hits(name, intr, Pose.identity())
    B = Pose.from_cli(0.4, -0.3, 0.6, 25, 5, 0)
    b = sc.cast_rays(name, B.T, a.points - B.T)  # rays from B's centre through A's points
    seen = np.abs(b.t - 1.0) < 1e-7  # B's nearest hit is that very point (not occluded)
    assert seen.mean() > 0.6
    # the same surface: points on the edge of a box or where a box stands on the floor belong to
    # two surfaces (measure zero, but rays can hit them in floating point)
    same = (b.ids == a.ids) & (np.abs(b.normals - a.normals).max(axis=1) < 1e-9)
    assert (seen & ~same).mean() < 0.01
    seen &= same
    assert np.allclose(b.points[seen], a.points[seen], atol=1e-6)
    np.testing.assert_allclose(b.rgb[seen], a.rgb[seen], atol=1e-9)
    # and a texture really varies over each surface (not a flat colour)
    assert a.rgb.std(axis=0).max() > 0.05


def test_boxes_occlude_what_is_behind_them():
    name = "room_with_boxes"
    scene = sc.get_scene(name)
    box = scene.primitives[sc.primitive_index(name, "box_blue")]
    lo, hi = np.asarray(box.lo), np.asarray(box.hi)
    # rays through points of the front face, from the source camera
    ys, xs = np.meshgrid(np.linspace(lo[1] + 0.05, hi[1] - 0.05, 5), np.linspace(lo[0], hi[0], 7))
    xs = np.clip(xs, lo[0] + 0.05, hi[0] - 0.05)
    front = np.stack([xs.ravel(), ys.ravel(), np.full(xs.size, lo[2])], 1)
    h = sc.cast_rays(name, np.zeros(3), front)
    assert (h.ids == sc.primitive_index(name, "box_blue")).all()
    np.testing.assert_allclose(h.t, 1.0, atol=1e-12)
    # without the box, the same rays reach the floor or the walls, farther away
    rest = dataclasses.replace(scene, primitives=tuple(p for p in scene.primitives if p is not box))
    h2 = sc.cast_rays(rest, np.zeros(3), front)
    assert (h2.t > 1.01).all()  # what the box hides is behind it
    assert not (h2.ids == sc.primitive_index(name, "box_blue")).any()
    # in a rendered image, the box's pixels have the front face's depth
    intr = Intrinsics.from_hfov(60, 96, 72)
    _, depth = sc.render_scene(name, intr)
    ids = sc.render_scene_hits(name, intr).ids.reshape(72, 96)
    on_box = ids == sc.primitive_index(name, "box_blue")
    assert on_box.sum() > 20
    assert depth[on_box].max() <= hi[2] + 1e-5 and depth[on_box].min() >= lo[2] - 1e-5


def test_metrics_follow_the_conventions():
    rng = np.random.default_rng(0)
    gt = rng.random((40, 50, 3))
    assert se.psnr(gt, gt) == math.inf
    assert se.psnr(np.clip(gt + 0.1, 0, 1), gt) > 20.0  # clipping only helps
    flat = np.full_like(gt, 0.5)
    assert se.psnr(flat + 0.1, flat) == pytest.approx(20.0, abs=1e-9)
    assert se.ssim(gt, gt) == pytest.approx(1.0)
    m = se.image_metrics(flat, gt, np.arange(2000).reshape(40, 50) < 500)
    assert m["empty"] == pytest.approx(0.25)


def test_forward_warp_reproduces_an_exact_view_of_a_fronto_parallel_plane():
    intr = Intrinsics.from_hfov(60, 192, 144)
    src, depth = sc.render_scene("textured_wall", intr)
    shift_px = 3  # an integer shift: the warp is exact away from the 3 new columns
    pose = Pose.from_cli(shift_px * 3.0 / intr.fx, 0, 0)
    truth, _ = sc.render_scene("textured_wall", intr, pose)
    pred, hit = se.forward_warp(src, depth, intr, pose, intr)
    assert (~hit).sum() == shift_px * 144 and (~hit[:, -shift_px:]).all()
    np.testing.assert_allclose(pred[:, :-shift_px], truth[:, :-shift_px], atol=1e-6)
    assert se.psnr(pred, truth) > 30.0
    # a sub-pixel move: still close (nearest-pixel splatting)
    pose = Pose.from_cli(0.05, 0, 0)
    truth, _ = sc.render_scene("textured_wall", intr, pose)
    pred, _ = se.forward_warp(src, depth, intr, pose, intr)
    assert se.psnr(pred, truth) > 30.0


def test_unseen_pixels_are_those_the_source_camera_does_not_see():
    intr = Intrinsics.from_hfov(60, 96, 72)
    assert not se.unseen_mask("textured_wall", intr, Pose.identity()).any()
    # a sideways step of exactly 3 px at the wall: the 3 new columns on the right
    pose = Pose.from_cli(3 * 3.0 / intr.fx, 0, 0)
    un = se.unseen_mask("textured_wall", intr, pose)
    assert un[:, -3:].all() and not un[:, :-4].any()
    # beyond the frame and behind the boxes: the crate hides the ground behind it
    un = se.unseen_mask("object_at_edge", intr, Pose.from_cli(0.5, 0, 0))
    ids = sc.render_scene_hits("object_at_edge", intr, Pose.from_cli(0.5, 0, 0)).ids
    ground = (ids == sc.primitive_index("object_at_edge", "ground")).reshape(un.shape)
    assert un[ground].any() and not un[~ground & (np.arange(96) > 48)[None, :]].all()
    m = se.unseen_metrics(np.zeros((72, 96, 3)), np.zeros((72, 96, 3)), un)
    assert m["unseen"] == pytest.approx(un.mean()) and m["psnr_unseen"] == math.inf


def test_edge_table_says_who_beats_whom():
    def row(method, view, psnr, unseen):
        return {"scene": "s", "view": view, "method": method, "psnr": psnr,
                "psnr_unseen": unseen, "unseen": 0.1}  # fmt: skip

    rows = [row(se.WARP, v, 20.0, 15.0) for v in se.EDGE_VIEWS]
    rows += [row("worldgen layered", v, 21.0, 16.0) for v in se.EDGE_VIEWS]
    table, beat = se.edge_table(rows)
    assert beat and table.count("beats") == len(se.EDGE_VIEWS)
    rows[-1]["psnr_unseen"] = 14.0
    table, beat = se.edge_table(rows)
    assert not beat and "**loses**" in table


def test_forward_warp_z_buffer_keeps_the_nearest_surface():
    intr = Intrinsics(10.0, 10.0, 2.0, 0.0, 5, 1)
    rgb = np.zeros((1, 5, 3))
    rgb[0, 1], rgb[0, 2] = 1.0, 0.5
    depth = np.array([[np.nan, 1.0, 2.0, np.inf, -1.0]], np.float32)
    # pixel 1 (x = -0.1 at z = 1) and pixel 2 (x = 0 at z = 2) both land on column 3;
    # pixels 0, 3, 4 have unknown depth and are dropped
    pose = Pose.from_cli(-0.2, 0, 0)
    out, hit = se.forward_warp(rgb, depth, intr, pose, intr, fill="none", fill_unknown_depth=False)
    assert hit.tolist() == [[False, False, False, True, False]]
    assert out[0, 3].tolist() == [1.0, 1.0, 1.0]
    filled, _ = se.forward_warp(rgb, depth, intr, pose, intr, fill="row", fill_unknown_depth=False)
    assert (filled[0] == 1.0).all()


def test_motorcycle_baselines_match_the_references():
    """REFERENCES.md: identity 12.65 dB / 0.274; GT-depth forward warp, nearest fill 23.18 / 0.873;
    unknowns as holes with naive row fill 21.29 / 0.829."""
    pair = se.motorcycle()
    assert pair.right_intr.cx == pytest.approx(342.279)
    gt = pair.right / 255.0
    assert se.psnr(pair.left / 255.0, gt) == pytest.approx(12.65, abs=0.01)
    pred, _ = se.forward_warp(
        pair.left / 255.0, pair.depth, pair.left_intr, pair.right_pose, pair.right_intr
    )
    assert se.psnr(pred, gt) == pytest.approx(23.18, abs=0.01)
    pred, _ = se.forward_warp(
        pair.left / 255.0,
        pair.depth,
        pair.left_intr,
        pair.right_pose,
        pair.right_intr,
        fill="row",
        fill_unknown_depth=False,
    )
    assert se.psnr(pred, gt) == pytest.approx(21.29, abs=0.01)


@dataclasses.dataclass(frozen=True)
class _LayersConfig:
    enabled: bool = True


@dataclasses.dataclass(frozen=True)
class _OldConfig:
    seed: int = 0


@dataclasses.dataclass(frozen=True)
class _LayeredConfig:
    layers: _LayersConfig = dataclasses.field(default_factory=_LayersConfig)
    seed: int = 0


def test_layer_variants_follow_the_config(monkeypatch):
    import worldgen.config as config

    labels = [v[0] for v in se.layer_variants()]
    assert "worldgen single-layer" in labels
    assert ("worldgen layered" in labels) == hasattr(config.BuildConfig(), "layers")

    monkeypatch.setattr(config, "BuildConfig", _OldConfig)
    assert se.layer_variants() == [("worldgen single-layer", {})]
    monkeypatch.setattr(config, "BuildConfig", _LayeredConfig)
    assert se.layer_variants() == [
        ("worldgen single-layer", {"layers": {"enabled": False}}),
        ("worldgen layered", {"layers": {"enabled": True}}),
    ]


def test_end_to_end_small_scene(tmp_path):
    """worldgen build + render of a procedural scene through the evaluation, default config."""
    rows = se.eval_scenes(
        [("worldgen default", {})],
        tmp_path,
        scenes=["room_with_boxes"],
        size=(96, 72),
        log=lambda m: None,
    )
    assert {r["view"] for r in rows} == set(se.SCENE_VIEWS)
    assert {r["method"] for r in rows} == {"worldgen default", "forward warp + nearest fill"}
    for r in rows:
        assert math.isfinite(r["psnr"]) and 0.0 < r["ssim"] <= 1.0 and 0.0 <= r["empty"] <= 1.0
    side = {r["method"]: r for r in rows if r["view"] == "sideways 0.5 m"}
    for r in side.values():
        assert r["psnr"] > 20.0, r
        assert r["psnr_covered"] > 20.0, r  # where something is drawn, it is in the right place
    fwd = [r for r in rows if r["view"] == "forward 0.5 m" and r["method"] == "worldgen default"]
    assert fwd[0]["psnr"] > 20.0 and fwd[0]["empty"] < 0.05
    table = se.scenes_table(rows)
    assert table.count("\n") == len(rows) + 1
