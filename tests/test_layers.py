"""Layer split: synthetic scenes ray-cast with exact geometry (camera 1.6 m above a floor)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pytest

from worldgen.camera import Intrinsics
from worldgen.depth.base import GROUND, SKY, VERTICAL
from worldgen.errors import InputError
from worldgen.ground import GroundFit
from worldgen.layers import LayerConfig, split_layers, spread_to_ramp

CAM_H = 1.6
SKY_DIST = 200.0
FAR_GROUND = 80.0


@dataclass
class Scene:
    image: np.ndarray
    depth: np.ndarray
    labels: np.ndarray
    intr: Intrinsics
    ground: GroundFit
    ids: np.ndarray  # [H, W] int: -1 sky, 0 floor, 1 wall, 2.. boxes in the order given


def ray_cast(
    boxes=(), wall_z: float | None = 5.0, W: int = 160, H: int = 120, roll_deg: float = 0.0
) -> Scene:
    """Floor at y = +1.6 (camera axes, y down), optional wall at z = wall_z, axis-aligned boxes
    ``(x0, x1, top_y, z0, z1)`` standing on the floor; rays that hit nothing see a sky dome."""
    intr = Intrinsics.from_hfov(60, W, H)
    uu, vv = np.meshgrid(np.arange(W, dtype=np.float64), np.arange(H, dtype=np.float64))
    x = (uu - intr.cx) / intr.fx
    y = (vv - intr.cy) / intr.fy
    r = math.radians(roll_deg)  # camera rolled: the world is seen rotated
    xw = math.cos(r) * x - math.sin(r) * y
    yw = math.sin(r) * x + math.cos(r) * y
    t = np.full((H, W), np.inf)  # z-depth along each ray (rays have z = 1)
    ids = np.full((H, W), -1)
    with np.errstate(divide="ignore", invalid="ignore"):
        tf = np.where(yw > 1e-9, CAM_H / yw, np.inf)
    tf = np.minimum(tf, FAR_GROUND / np.sqrt(1 + xw**2 + yw**2))  # far ground clamped, as popup
    hit = np.isfinite(tf) & (yw > 1e-9)
    t[hit], ids[hit] = tf[hit], 0
    if wall_z is not None:
        ok = (wall_z < t) & (yw * wall_z < CAM_H)
        t[ok], ids[ok] = wall_z, 1
    for i, (x0, x1, top, z0, z1) in enumerate(boxes):
        # slab intersection of the ray (xw, yw, 1) * s with the box
        with np.errstate(divide="ignore", invalid="ignore"):
            tx0, tx1 = np.sort(np.stack([x0 / xw, x1 / xw]), axis=0)
            ty0, ty1 = np.sort(np.stack([top / yw, CAM_H / yw]), axis=0)
        tx0 = np.where(np.isnan(tx0), -np.inf, tx0)
        tx1 = np.where(np.isnan(tx1), np.inf, tx1)
        tn = np.maximum.reduce([tx0, ty0, np.full_like(tx0, z0)])
        tfar = np.minimum.reduce([tx1, ty1, np.full_like(tx0, z1)])
        ok = (tn <= tfar) & (tn > 0) & (tn < t)
        t[ok], ids[ok] = tn[ok], 2 + i
    sky = ids < 0
    t[sky] = SKY_DIST / np.sqrt(1 + x[sky] ** 2 + y[sky] ** 2)
    labels = np.full((H, W), VERTICAL, np.uint8)
    labels[ids == 0] = GROUND
    labels[sky] = SKY
    rng = np.random.default_rng(0)
    palette = rng.uniform(0.2, 0.9, size=(8, 3))
    check = (((uu // 6) + (vv // 6)) % 2)[..., None] * 0.1
    image = (palette[ids + 1] + check).clip(0, 1).astype(np.float32)
    up = np.array([-math.sin(r), -math.cos(r), 0.0])  # world up in the rolled camera axes
    ground = GroundFit(up, CAM_H, 1.0, "test", "exact", 1.0)
    return Scene(image, t.astype(np.float32), labels, intr, ground, ids)


BOX = (-0.5, 0.5, 0.6, 2.0, 2.6)  # 1 m wide, 1 m tall, front face 2 m away


def names_of(res) -> list[str]:
    """The primary layers' names (the occluded layers behind in-layer depth edges left out)."""
    return [lay.name for lay in res.layers if lay.kind != "occluded"]


def split(scene: Scene, labels: bool = True, **cfg):
    lab = scene.labels if labels else None
    return split_layers(scene.image, scene.depth, lab, scene.intr, scene.ground, LayerConfig(**cfg))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def by_kind(res, kind):
    return [lay for lay in res.layers if lay.kind == kind]


def check_box_split(scene: Scene, res) -> None:
    box = scene.ids == 2
    fg = by_kind(res, "foreground")
    assert len(fg) == 1, res.info
    assert names_of(res) == ["background", "foreground-1"]
    front = fg[0]
    owned = res.owner == res.layers.index(front)
    assert iou(owned, box) >= 0.9, iou(owned, box)
    assert iou(front.visible, box) >= 0.9
    assert not front.hidden.any()  # the nearest layer hides nothing
    bg = by_kind(res, "background")[0]
    # the background must synthesise the box's area (all of it: the box is within the margin)
    assert (bg.hidden & box).sum() >= 0.9 * box.sum()
    # ... and nothing far from it
    near_box = np.zeros_like(box)
    ys, xs = np.nonzero(box)
    near_box[ys.min() - 3 : ys.max() + 4, xs.min() - 3 : xs.max() + 4] = True
    assert not (bg.hidden & ~near_box).any()
    assert not (bg.visible & bg.hidden).any()
    # soft alpha only along the box silhouette, outside the box, on the background
    soft = (front.alpha > 0) & (front.alpha < 1)
    assert soft.sum() > 20
    from scipy.ndimage import binary_dilation, binary_erosion

    # (the one-pixel row of the box top face, seen edge-on, is a mixed pixel: either way is fine)
    ring = binary_dilation(box, iterations=2) & ~binary_erosion(box, iterations=2)
    assert not (soft & ~ring).any()
    assert ((bg.alpha > 0) & (bg.alpha < 1)).sum() == 0
    assert np.all((bg.alpha == 1) | (bg.alpha == 0))
    assert np.all(bg.alpha[bg.visible | bg.hidden] == 1)
    # the floor under the box is not an edge, nor is the floor-wall crease
    floor = scene.ids == 0
    assert not (res.edges & floor).any()
    assert not (res.edges & (scene.ids == 1)).any()  # the wall is always the far side
    # the box's top and sides are
    assert res.edges[box].sum() > 60


def test_box_in_front_of_wall():
    scene = ray_cast([BOX])
    res = split(scene)
    check_box_split(scene, res)
    # the halo: background pixels at the box's sides are resynthesised, not shown
    bg = res.layers[0]
    ys, xs = np.nonzero(scene.ids == 2)
    row = (ys.min() + ys.max()) // 2
    left = xs.min()
    assert not bg.visible[row, left - 2 : left].any() and bg.hidden[row, left - 2 : left].all()
    assert bg.visible[row, left - 4]
    # ramp values carried from the box into its soft pixels
    fg = res.layers[1]
    d = spread_to_ramp(scene.depth, fg)
    assert np.allclose(d[fg.ramp], 2.0, atol=0.7)
    assert res.info["foreground_objects"] == 1


def test_margin_limits_hidden_region():
    """A wide box: only a band within the parallax margin of its silhouette is hidden."""
    wide = (-0.9, 0.9, -0.4, 2.0, 2.6)  # 2 m tall: its silhouette is the front face
    scene = ray_cast([wide], W=200, H=150)
    res = split(scene, walk_radius=0.3)
    bg = res.layers[0]
    box = scene.ids == 2
    f = scene.intr.fx
    margin = math.ceil(f * 0.3 * (1 / 2.0 - 1 / 5.0)) + 2
    (m,) = res.info["per_layer"][0]["margins_px"].values()
    assert m == pytest.approx(margin, abs=2)
    ys, xs = np.nonzero(box)
    row = (ys.min() + ys.max()) // 2
    hid = bg.hidden[row] & box[row]
    assert hid[xs.min() : xs.min() + margin - 3].all()
    assert not hid[xs.min() + margin + 3 : xs.max() - margin - 3].any()


def test_occluded_layer_behind_an_unsplit_box():
    """With no foreground layer to put it on, the box stays in the background; the surface
    behind its silhouette goes on "background-occluded", and the fill continues the wall and
    the floor there (their depth, not the box's)."""
    from worldgen.fill import get_fill_backend
    from worldgen.scene import compose_layers

    wide = (-0.9, 0.9, -0.4, 2.0, 2.6)
    scene = ray_cast([wide], W=200, H=150)
    res = split(scene, walk_radius=0.3, max_foreground_layers=0)
    assert names_of(res) == ["background"]
    assert [lay.name for lay in res.layers] == ["background", "background-occluded"]
    bg, occ = res.layers
    assert occ.kind == "occluded" and not occ.visible.any()
    box = scene.ids == 2
    assert bg.visible[box].all()  # the box is shown by the background itself
    assert not (occ.hidden & ~box).any()  # only the near side is synthesised ...
    margin = math.ceil(scene.intr.fx * 0.3 * (1 / 2.0 - 1 / 5.0)) + 2
    ys, xs = np.nonzero(box)
    row = (ys.min() + ys.max()) // 2
    hid = occ.hidden[row]
    assert hid[xs.min() : xs.min() + margin - 3].all()  # ... within the parallax margin
    assert hid[xs.max() - margin + 3 : xs.max() + 1].all()
    assert not hid[xs.min() + margin + 3 : xs.max() - margin - 3].any()
    assert occ.known[scene.ids == 1].mean() > 0.95  # the wall and floor are its context
    # ... and not the box's side of its silhouette, out to the fill's context
    assert not occ.known[row, xs.min() : xs.min() + margin + 16].any()

    layers, _ = compose_layers(
        scene.image,
        scene.depth,
        scene.labels,
        scene.intr,
        scene.ground,
        res,
        get_fill_backend("classical"),
    )
    assert [L.name for L in layers] == ["background", "background-occluded"]
    L = layers[1]
    assert np.all(L.alpha[occ.hidden] == 1) and np.all(L.alpha[~occ.hidden] == 0)
    assert np.isnan(L.depth[~occ.hidden]).all()  # nothing but the hidden region is lifted
    # behind the box's upper part: the wall at 5 m (above the wall's foot seen beside the box)
    foot = np.nonzero(scene.ids[:, xs.min() - 3] == 1)[0].max()
    upper = occ.hidden & (np.arange(150)[:, None] < foot - 3)
    assert upper.sum() > 100
    assert np.allclose(L.depth[upper], 5.0, rtol=0.03)
    wall_rgb = scene.image[scene.ids == 1].mean(0)
    assert np.abs(L.rgb[upper].mean(0) - wall_rgb).max() < 0.08


def test_ground_and_sky_only():
    scene = ray_cast([], wall_z=None)
    res = split(scene)
    assert [lay.kind for lay in res.layers] == ["sky", "background"]
    sky, bg = res.layers
    assert np.array_equal(sky.visible, scene.labels == SKY)
    assert not sky.hidden.any() and not bg.hidden.any()
    assert not res.edges.any()  # not even at the far grazing rows or the horizon
    assert np.all(sky.alpha[sky.visible] == 1) and np.all(bg.alpha[bg.visible] == 1)
    assert not ((bg.alpha > 0) & (bg.alpha < 1)).any()  # the horizon is not a silhouette
    # the same from the geometry alone
    res2 = split(scene, labels=False)
    assert [lay.kind for lay in res2.layers] == ["sky", "background"]
    assert not res2.edges.any()
    assert iou(res2.layers[0].visible, scene.labels == SKY) > 0.99


def test_steep_grazing_ground_has_no_edges():
    """Looking down a road at grazing angles: large relative disparity jumps, but linear."""
    scene = ray_cast([], wall_z=None, W=320, H=240, roll_deg=8.0)
    res = split(scene)
    assert not res.edges.any()
    assert res.info["foreground_layers"] == 0


def test_two_boxes_are_two_ordered_layers():
    far = (-1.2, 0.6, 0.2, 3.5, 4.0)  # 3.5 m away, 1.4 m tall
    near = (0.0, 0.7, 0.8, 1.8, 2.2)  # in front of its right part
    scene = ray_cast([far, near])
    res = split(scene)
    names = names_of(res)
    assert names == ["background", "foreground-1", "foreground-2"], res.info
    f1, f2 = res.layers[1], res.layers[2]
    assert iou(res.owner == 1, scene.ids == 2) > 0.85
    assert iou(res.owner == 2, scene.ids == 3) > 0.85
    assert res.info["per_layer"][1]["median_depth"] > res.info["per_layer"][2]["median_depth"]
    # the far box must synthesise the part of it the near box hides (near their shared edge)
    assert (f1.hidden & (scene.ids == 3)).sum() > 50
    assert not f2.hidden.any()
    # ... and the near box ramps over the far box where it occludes it
    assert ((f2.alpha > 0) & (f2.alpha < 1) & (scene.ids == 2)).sum() > 5
    # with one foreground layer, both boxes share it
    res1 = split(scene, max_foreground_layers=1)
    assert names_of(res1) == ["background", "foreground-1"]
    assert res1.info["occlusion_conflicts"] == 1


def test_two_separate_boxes_at_similar_depth_share_a_layer():
    a = (-1.5, -0.8, 0.8, 2.5, 3.0)
    b = (0.8, 1.5, 0.8, 2.6, 3.1)
    scene = ray_cast([a, b])
    res = split(scene)
    assert names_of(res) == ["background", "foreground-1"]
    assert res.info["foreground_objects"] == 2


def test_without_labels():
    scene = ray_cast([BOX])
    res = split(scene, labels=False)
    check_box_split(scene, res)
    assert res.info["labels_source"] == "geometry"


def test_box_with_sky_and_roll():
    tall = (-0.5, 0.5, -0.6, 2.0, 2.6)  # 2.2 m: its top is seen against the sky
    scene = ray_cast([tall], wall_z=None, roll_deg=5.0)
    res = split(scene)
    assert names_of(res) == ["sky", "background", "foreground-1"]
    box = scene.ids == 2
    assert iou(res.owner == 2, box) > 0.9
    sky = res.layers[0]
    assert np.array_equal(res.owner == 0, scene.labels == SKY)
    # the sky must synthesise what the box hides of it, near its top
    assert (sky.hidden & box).sum() > 0
    # the floor far beyond the box meets the sky at the horizon: no edge there
    assert not (res.edges & (scene.ids == 0)).any()


def test_disabled():
    scene = ray_cast([BOX])
    res = split(scene, enabled=False)
    assert len(res.layers) == 1
    (lay,) = res.layers
    assert lay.name == "scene" and lay.kind == "background"
    assert lay.visible.all() and not lay.hidden.any() and np.all(lay.alpha == 1)
    assert lay.alpha.dtype == np.float32


def test_bad_inputs():
    scene = ray_cast([BOX], W=40, H=30)
    cfg = LayerConfig()
    img, d, lab, intr, g = scene.image, scene.depth, scene.labels, scene.intr, scene.ground
    with pytest.raises(InputError):
        split_layers(img[:, :-1], d, lab, intr, g, cfg)
    with pytest.raises(InputError):
        split_layers(img, d[:, :-1], lab, intr, g, cfg)
    with pytest.raises(InputError):
        split_layers(img, d, lab[:-1], intr, g, cfg)
    with pytest.raises(InputError):
        split_layers(img, d[None], lab, intr, g, cfg)
    bad = d.copy()
    bad[3, 3] = np.nan
    with pytest.raises(InputError):
        split_layers(img, bad, lab, intr, g, cfg)
    bad[3, 3] = -1.0
    with pytest.raises(InputError):
        split_layers(img, bad, lab, intr, g, cfg)
    with pytest.raises(InputError):
        split_layers(img, d, lab, Intrinsics.from_hfov(60, 41, 30), g, cfg)


@pytest.mark.parametrize("shape", [(1, 1), (1, 7), (7, 1), (2, 2)])
def test_tiny_images(shape):
    H, W = shape
    intr = Intrinsics.from_hfov(60, W, H)
    g = GroundFit(np.array([0.0, -1.0, 0.0]), CAM_H, 1.0, "test", "exact", 1.0)
    d = np.linspace(1, 5, H * W, dtype=np.float32).reshape(H, W)
    img = np.zeros((H, W, 3), np.float32)
    for lab in (None, np.full((H, W), VERTICAL, np.uint8)):
        res = split_layers(img, d, lab, intr, g, LayerConfig())
        assert res.layers and all(lay.visible.shape == (H, W) for lay in res.layers)


def test_blurred_depth_edges():
    """Depth maps from models blur silhouettes over a few pixels (mixed depths): still found."""
    from scipy.ndimage import uniform_filter

    scene = ray_cast([BOX])
    disp = uniform_filter(1.0 / scene.depth.astype(np.float64), size=3, mode="nearest")
    blurred = Scene(
        scene.image,
        (1.0 / disp).astype(np.float32),
        scene.labels,
        scene.intr,
        scene.ground,
        scene.ids,
    )
    res = split(blurred)
    assert names_of(res) == ["background", "foreground-1"], res.info
    fg = res.layers.index(by_kind(res, "foreground")[0])
    assert iou(res.owner == fg, scene.ids == 2) >= 0.85


def test_invariants_and_info():
    import json

    far = (-1.2, 0.6, 0.2, 3.5, 4.0)
    near = (0.0, 0.7, 0.8, 1.8, 2.2)
    tall = (-1.6, -1.1, -1.0, 2.5, 2.8)
    scene = ray_cast([far, near, tall], wall_z=None)
    res = split(scene)
    json.dumps(res.info)  # world.json material
    H, W = scene.depth.shape
    assert res.edges.shape == (H, W) and res.edges.dtype == bool
    primary = [i for i, lay in enumerate(res.layers) if lay.kind != "occluded"]
    assert res.owner.shape == (H, W) and res.owner.max() == primary[-1]
    assert set(np.unique(res.owner).tolist()) <= set(primary)
    for i, lay in enumerate(res.layers):
        assert lay.visible.dtype == bool and lay.hidden.dtype == bool
        assert lay.alpha.dtype == np.float32 and lay.alpha.shape == (H, W)
        assert lay.alpha.min() >= 0 and lay.alpha.max() <= 1
        assert not (lay.visible & lay.hidden).any()
        assert not (lay.known & lay.hidden).any()
        assert np.all(lay.alpha[lay.visible | lay.hidden] == 1)
        assert not (lay.visible & (res.owner != i)).any()  # visible: a subset of what it owns
        if lay.kind == "occluded":  # shows nothing, continues the layer before it
            assert not lay.visible.any() and np.all(lay.alpha[~lay.hidden] == 0)
            assert res.layers[i - 1].kind != "occluded"
            assert not (lay.known & ~res.layers[i - 1].visible).any()
    # every photo pixel is shown by exactly one layer, or resynthesised (the halo)
    shown = np.sum([lay.visible for lay in res.layers], axis=0)
    assert shown.max() == 1
    halo = shown == 0
    assert all((lay.hidden | ~halo | (res.owner != i)).all() for i, lay in enumerate(res.layers))
    assert not res.layers[primary[-1]].hidden.any()


def test_config_validation():
    with pytest.raises(InputError):
        LayerConfig(edge_threshold=0)
    with pytest.raises(InputError):
        LayerConfig(min_edge_fraction=1.5)
    with pytest.raises(InputError):
        LayerConfig(feather_px=-1)
    res = split(ray_cast([BOX]), max_foreground_layers=0)
    assert names_of(res) == ["background"]


def _motorcycle():
    """skimage's Middlebury motorcycle (left view) with its ground-truth depth, half size."""
    try:
        from skimage.data import stereo_motorcycle

        left, _, disp = stereo_motorcycle()
    except Exception as e:  # pragma: no cover - data not installed
        pytest.skip(f"stereo_motorcycle unavailable: {e}")
    from worldgen.depth.base import DepthEstimate
    from worldgen.depth.file import fill_unknown
    from worldgen.ground import fit_ground

    img = left[::2, ::2].astype(np.float32) / 255
    disp = disp[::2, ::2]
    with np.errstate(invalid="ignore", divide="ignore"):
        z = 193.001e-3 * 994.978 / (disp + 31.086)
    z[~np.isfinite(disp) | ~(z > 0)] = np.nan
    H, W = z.shape
    full = Intrinsics(994.978, 994.978, 311.193, 254.877, left.shape[1], left.shape[0])
    intr = full.scaled_to(W, H)
    depth = fill_unknown(z.astype(np.float32), img)
    depth, ground = fit_ground(DepthEstimate(depth, "metric"), intr, camera_height=1.6)
    return img, depth, intr, ground


def test_motorcycle_comes_out_as_foreground():
    img, depth, intr, ground = _motorcycle()
    res = split_layers(img, depth, None, intr, ground, LayerConfig())
    names = names_of(res)
    assert names[0] == "background" and names[-1].startswith("foreground"), names
    nearest = max(i for i, lay in enumerate(res.layers) if lay.kind != "occluded")
    bike = [(100, 100), (110, 150), (150, 150), (170, 280), (200, 300), (130, 200)]  # (y, x)
    assert all(res.owner[y, x] == nearest for y, x in bike), [res.owner[p] for p in bike]
    wall = [(10, 10), (30, 300), (100, 350), (240, 50), (235, 200)]  # wall, shelves, floor
    assert all(res.owner[y, x] == 0 for y, x in wall), [res.owner[p] for p in wall]
    # the background must synthesise what the bike hides
    bike_px = res.owner == nearest
    assert (res.layers[0].hidden & bike_px).sum() >= 0.8 * bike_px.sum()
