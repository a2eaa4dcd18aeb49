"""Resource limits: config ranges, the splat/memory estimate, build --max-splats/--max-memory."""

from __future__ import annotations

import math

import pytest

from tests.badinput import TINY_PRESET
from tests.conftest import save_rgb, textured
from worldgen.cli import main
from worldgen.config import BuildConfig, load_preset
from worldgen.errors import InputError
from worldgen.image import working_size
from worldgen.limits import check_memory, estimate, parse_bytes
from worldgen.pipeline import build
from worldgen.world import load_world


@pytest.mark.parametrize(
    "over, match",
    [
        ({"depth": {"camera_height": math.nan}}, "finite"),
        ({"lift": {"stride": 0}}, ">= 1"),
        ({"image": {"max_side": 10**9}}, "<= 16384"),
        ({"refine": {"iters": 10**8}}, "<= 100000"),
        ({"layers": {"min_area_px": -5}}, "must be >="),
        ({"surround": {"width": 10**6}}, "<= 16384"),
    ],
)
def test_absurd_config_values_are_one_line_errors(over, match):
    with pytest.raises(InputError, match=match):
        BuildConfig().replace(**over)


def test_parse_bytes():
    assert parse_bytes("8G") == 8 * 2**30 and parse_bytes("512M") == 512 * 2**20
    assert parse_bytes("2.5GiB") == int(2.5 * 2**30) and parse_bytes("1000") == 1000
    for bad in ("lots", "-1G", "0"):
        with pytest.raises(InputError):
            parse_bytes(bad)


def test_a_100_mp_quality_build_is_refused_on_a_small_machine():
    cfg = load_preset("quality")
    est = estimate(*working_size(12000, 8400, cfg.image.max_side), cfg)
    with pytest.raises(InputError, match="over --max-memory"):
        check_memory(est, 2 * 2**30)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    d = tmp_path_factory.mktemp("limits")
    img = save_rgb(textured(48, 64, seed=9), d / "p.png")
    (d / "tiny.yaml").write_text(TINY_PRESET)
    return d, img, load_preset(str(d / "tiny.yaml"))


def test_estimate_bounds_the_splat_count_and_max_splats_caps_it(tiny):
    d, img, cfg = tiny
    res = build(img, d / "a.world", cfg, use_cache=False)
    est = estimate(64, 48, cfg)
    assert res.splat_count <= est.splats <= 6 * res.splat_count  # an upper bound, not a wild one
    cap = res.splat_count // 3
    capped = build(img, d / "b.world", cfg, use_cache=False, max_splats=cap)
    w = load_world(capped.path)
    assert capped.splat_count <= cap and len(w.splats) == capped.splat_count
    assert w.manifest["config"]["lift"]["stride"] > cfg.lift.stride  # coarser lifting first
    assert any("--max-splats" in n for n in capped.notes)


def test_max_memory_refuses_before_any_work(tiny, capsys):
    d, img, _ = tiny
    out = d / "m.world"
    rc = main(["build", str(img), "-o", str(out), "--preset", str(d / "tiny.yaml"),
               "--max-memory", "10M", "--quiet"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "over --max-memory" in err[0], err
    assert not out.exists()
