"""``worldgen view``: the real GLFW window under Xvfb with scripted input, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO
from worldgen.cli import main

XVFB = ["xvfb-run", "-a", "-s", "-screen 0 640x480x24"]


def xvfb() -> list[str]:
    if shutil.which("xvfb-run") and shutil.which("Xvfb"):
        return XVFB
    if os.environ.get("WORLDGEN_ALLOW_MISSING_TOOLS"):
        pytest.skip("xvfb-run not installed (run tools/setup.sh --test)")
    pytest.fail("xvfb-run not installed: run `bash tools/setup.sh --test`")


def view(world: Path, *args) -> subprocess.CompletedProcess:
    """`worldgen view` in a fresh process on a virtual X display."""
    cmd = [sys.executable, "-m", "worldgen"]
    env = dict(os.environ, PYTHONPATH=str(REPO))
    env.pop("WORLDGEN_DEBUG", None)
    return subprocess.run(
        [*xvfb(), *cmd, "view", str(world), "--no-vsync", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=240,
        env=env,
        cwd=REPO,
    )


def image(path: Path) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(path).convert("RGB"), np.int16)


def test_scripted_walk_moves_the_camera_and_saves_screenshots(small_world, tmp_path):
    script = tmp_path / "walk.json"
    steps = [
        {"frames": 2},
        {"frames": 20, "hold": ["W"], "mouse": [3, 0]},
        {"frames": 8, "resize": [200, 150]},  # the framebuffer follows the window
    ]
    script.write_text(json.dumps({"dt": 1 / 60, "steps": steps}))
    walked, still = tmp_path / "walked.png", tmp_path / "still.png"
    r = view(small_world, "--size", "160x120", "--frames", 30, "--script", script,
             "--screenshot", walked, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["frames"] == 30 and s["gl_error"] == "GL_NO_ERROR", s
    assert s["framebuffer"] == [200, 150] and s["splats"] > 0 and s["fly"] is False
    # 20 frames of W at 1.4 m/s: 0.47 m forward (-Z), turning right by 20 x 3 x 0.1 degrees
    assert s["yaw_deg"] == pytest.approx(6.0)
    spawn = json.loads((small_world / "world.json").read_text())["spawn"]["position"]
    moved = np.subtract(s["feet"], spawn)
    assert np.hypot(moved[0], moved[2]) == pytest.approx(1.4 * 20 / 60, rel=0.05), s
    assert moved[2] < -0.4 and moved[0] > 0, s
    assert s["pose_T"][2] > 0.4, s  # forward in the source camera's axes
    a = image(walked)
    assert a.shape == (150, 200, 3) and a.reshape(-1, 3).std(0).max() > 5

    r = view(small_world, "--size", "200x150", "--frames", 2, "--screenshot", still)
    assert r.returncode == 0, r.stderr
    b = image(still)
    assert b.reshape(-1, 3).std(0).max() > 5
    assert np.abs(a - b).mean() > 2  # the walk changed the view


def test_side_by_side_stereo_with_the_collision_overlay(small_world, tmp_path):
    out = tmp_path / "sbs.png"
    r = view(small_world, "--size", "200x100", "--frames", 3, "--stereo", "sbs",
             "--collision", "--fly", "--screenshot", out, "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout.strip().splitlines()[-1])
    assert s["gl_error"] == "GL_NO_ERROR" and s["fly"] is True
    img = image(out)
    left, right = img[:, :100], img[:, 100:]
    assert left.std() > 5 and right.std() > 5
    assert np.abs(left - right).mean() > 0.5  # two eyes, two views
    # the wireframe overlay is green lines
    g = img[..., 1] - np.maximum(img[..., 0], img[..., 2])
    assert (g > 80).mean() > 0.005


# ----------------------------------------------------------------------------- bad input


def cli(*args) -> int:
    """The CLI in this process (argparse errors exit through SystemExit)."""
    try:
        return main(["view", *map(str, args)])
    except SystemExit as e:
        return int(e.code)


def _one_line_error(capsys, *needles) -> None:
    err = capsys.readouterr().err
    lines = [x for x in err.strip().splitlines() if x.strip()]
    assert len(lines) == 1 and "error" in lines[0] and "Traceback" not in err, err
    for n in needles:
        assert n in lines[0], err


@pytest.mark.parametrize(
    "args, needle",
    [
        (["--size", "abc"], "--size"),
        (["--size", "8x8"], "--size"),
        (["--fov", "200"], "--fov"),
        (["--frames", "0"], "--frames"),
        (["--screenshot", "out.jpg"], ".png"),
        (["--stereo", "anaglyph"], "--stereo"),
    ],
)
def test_bad_options_are_one_line_errors(small_world, capsys, args, needle):
    assert cli(small_world, *args) != 0
    _one_line_error(capsys, needle)


def test_bad_script_and_missing_world_are_one_line_errors(small_world, tmp_path, capsys):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps([{"frames": 3, "hold": ["NOT_A_KEY"]}]))
    assert cli(small_world, "--script", bad) == 2
    _one_line_error(capsys, "NOT_A_KEY")
    assert cli(tmp_path / "nowhere.world") != 0
    _one_line_error(capsys, "no such world")


def test_no_display_is_a_one_line_error(small_world, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert cli(small_world, "--frames", 1) == 5
    _one_line_error(capsys, "cannot open a window")
