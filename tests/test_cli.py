"""The command line: builds, info, render, and every bad input as a one-line error."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import REPO, save_rgb, textured
from worldgen.cli import main


def run(*args, cwd=None, **kw):
    """The real console entry point in a fresh process."""
    env = dict(os.environ, **kw.pop("env", {}))
    env.pop("WORLDGEN_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-m", "worldgen", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        timeout=300,
        **kw,
    )


def sha(p: Path) -> str:
    return hashlib.sha256(p.read_bytes()).hexdigest()


def assert_one_line_error(r, *needles):
    assert r.returncode != 0, r.stdout
    lines = [x for x in r.stderr.strip().splitlines() if x.strip()]
    assert "Traceback" not in r.stderr
    # progress lines of finished stages may precede it; the error is one line, the last
    errors = [x for x in lines if "error" in x]
    assert len(errors) == 1 and errors[0] == lines[-1], r.stderr
    for n in needles:
        assert n in errors[0], r.stderr


@pytest.fixture(scope="module")
def photo(tmp_path_factory):
    d = tmp_path_factory.mktemp("photo")
    return save_rgb(textured(72, 96, seed=5), d / "photo.jpg", quality=92)


def test_build_json_summary_and_default_output(photo, tmp_path):
    r = run("build", photo, "--json", "--preset", "fast", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    s = json.loads(r.stdout)
    assert s["output"] == str(tmp_path / "photo.world")
    assert s["splats"] > 0 and s["backends"]["depth"] == "popup"
    assert set(s["timings"]) >= {"load", "depth", "lift", "preview", "write"}
    assert (tmp_path / "photo.world" / "world.json").is_file()
    # info, human and JSON
    r = run("info", tmp_path / "photo.world")
    assert r.returncode == 0 and "splats" in r.stdout and "popup" in r.stdout
    m = json.loads(run("info", tmp_path / "photo.world", "--json").stdout)
    assert m["format"] == "worldgen.world"


def test_build_progress_and_quiet(photo, tmp_path):
    r = run("build", photo, "-o", tmp_path / "a.world", "--preset", "fast")
    assert r.returncode == 0
    assert "depth" in r.stderr and " s" in r.stderr  # stage timings
    assert "wrote" in r.stdout
    r = run("build", photo, "-o", tmp_path / "b.world", "--preset", "fast", "--quiet")
    assert r.returncode == 0 and r.stdout == "" and r.stderr == ""


def test_cli_options_reach_the_world(photo, tmp_path):
    out = tmp_path / "o.world"
    assert (
        main(
            [
                "build",
                str(photo),
                "-o",
                str(out),
                "--quiet",
                "--preset",
                "fast",
                "--focal-px",
                "150",
                "--principal",
                "40,30",
                "--camera-height",
                "2.5",
                "--seed",
                "3",
                "--depth",
                "popup",
            ]
        )
        == 0
    )
    m = json.loads((out / "world.json").read_text())
    intr = m["camera"]["intrinsics"]
    assert m["camera"]["intrinsics_source"] == "user"
    assert intr["fx"] == pytest.approx(150) and intr["cx"] == pytest.approx(40)
    assert m["ground"]["camera_height"] == pytest.approx(2.5)
    assert m["seed"] == 3 and m["config"]["preset"] == "fast"


def test_render_pose_forms_and_size(photo, tmp_path):
    w = tmp_path / "r.world"
    assert main(["build", str(photo), "-o", str(w), "--quiet", "--preset", "fast"]) == 0
    a = run("render", w, "-o", tmp_path / "a.png", "--pose", "-0.5,0,0", "--json")
    b = run("render", w, "-o", tmp_path / "b.png", "--pose=-0.5,0,0")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
    assert json.loads(a.stdout)["width"] == 96
    r = run(
        "render",
        w,
        "-o",
        tmp_path / "c.png",
        "--pose",
        "0,0,0.2,10,-5,2",
        "--size",
        "64x48",
        "--focal-px",
        "60",
    )
    assert r.returncode == 0, r.stderr
    from PIL import Image

    assert Image.open(tmp_path / "c.png").size == (64, 48)
    r = run("render", w, "-o", tmp_path / "a.png")
    assert_one_line_error(r, "already exists", "--force")
    for bad in (["--pose", "1,2"], ["--pose", "a,b,c"], ["--size", "12"], ["--focal-px", "-1"]):
        assert_one_line_error(run("render", w, "-o", tmp_path / "x.png", *bad), "error")


def _bad_inputs(d: Path) -> dict:
    ok = save_rgb(textured(40, 50), d / "ok.png")
    (d / "zero.jpg").write_bytes(b"")
    (d / "notimage.jpg").write_text("this is not an image\n" * 20)
    full = save_rgb(textured(64, 64), d / "full.jpg").read_bytes()
    (d / "trunc.jpg").write_bytes(full[: len(full) // 2])
    save_rgb(np.zeros((1, 1, 3)), d / "tiny.png")
    (d / "folder").mkdir()
    np.save(d / "wrong.npy", np.ones((13, 50), np.float32))
    np.save(d / "allnan.npy", np.full((40, 50), np.nan, np.float32))
    return {
        "missing": ([d / "missing.jpg"], "no such file"),
        "zero-byte": ([d / "zero.jpg"], "empty file"),
        "non-image": ([d / "notimage.jpg"], "not an image"),
        "truncated": ([d / "trunc.jpg"], "cannot decode"),
        "1x1": ([d / "tiny.png"], "at least"),
        "directory": ([d / "folder"], "directory"),
        "depth wrong size": ([ok, "--depth-map", d / "wrong.npy"], "depth map is 50x13"),
        "depth all unknown": ([ok, "--depth-map", d / "allnan.npy"], "no valid values"),
        "depth map missing": ([ok, "--depth-map", d / "nope.npy"], "not found"),
        "unknown backend": ([ok, "--depth", "magic"], "unknown depth backend"),
        "unknown preset": ([ok, "--preset", "turbo"], "unknown preset"),
        "bad principal": ([ok, "--principal", "1"], "--principal"),
        "negative height": ([ok, "--camera-height", "-2"], "positive"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "missing",
        "zero-byte",
        "non-image",
        "truncated",
        "1x1",
        "directory",
        "depth wrong size",
        "depth all unknown",
        "depth map missing",
        "unknown backend",
        "unknown preset",
        "bad principal",
        "negative height",
    ],
)
def test_bad_input_one_line_error_nothing_left(tmp_path, case):
    inputs = tmp_path / "in"
    inputs.mkdir()
    cases = _bad_inputs(inputs)
    args, needle = cases[case]
    before = {p: sha(p) for p in inputs.rglob("*") if p.is_file()}
    outdir = tmp_path / "out"
    outdir.mkdir()
    r = run("build", *args, "-o", outdir / "w.world")
    assert_one_line_error(r, needle)
    assert list(outdir.iterdir()) == []  # nothing partial left behind
    assert {p: sha(p) for p in inputs.rglob("*") if p.is_file()} == before  # inputs untouched


def test_existing_output_needs_force(photo, tmp_path):
    out = tmp_path / "w.world"
    assert run("build", photo, "-o", out, "--preset", "fast", "--quiet").returncode == 0
    r = run("build", photo, "-o", out, "--preset", "fast")
    assert_one_line_error(r, "already exists", "--force")
    assert run("build", photo, "-o", out, "--preset", "fast", "--force", "--quiet").returncode == 0


def test_output_folder_missing(photo, tmp_path):
    assert_one_line_error(run("build", photo, "-o", tmp_path / "no" / "w.world"), "does not exist")


def test_unwritable_output_folder(photo, tmp_path):
    """A read-only output folder: a real read-only mount when root (root ignores permission
    bits), a mode-555 folder otherwise."""
    ro = tmp_path / "ro"
    ro.mkdir()
    mounted = False
    if os.geteuid() == 0:
        r = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(ro)], capture_output=True
        )
        mounted = r.returncode == 0
        if not mounted:
            pytest.fail(f"cannot make a read-only mount as root: {r.stderr!r}")
    else:
        os.chmod(ro, 0o555)
    try:
        r = run("build", photo, "-o", ro / "w.world", "--no-cache")
        assert_one_line_error(r, "not writable")
        assert list(ro.iterdir()) == []
    finally:
        if mounted:
            subprocess.run(["umount", str(ro)], check=True)
        else:
            os.chmod(ro, 0o755)


def test_info_and_render_on_bad_worlds(tmp_path):
    assert_one_line_error(run("info", tmp_path / "nothing.world"), "no such world")
    (tmp_path / "x.world").mkdir()
    assert_one_line_error(run("info", tmp_path / "x.world"), "not a world bundle")
    assert_one_line_error(
        run("render", tmp_path / "x.world", "-o", tmp_path / "o.png"), "not a world bundle"
    )


def test_no_command_and_usage_errors():
    r = run()
    assert r.returncode == 2 and "build" in r.stderr
    assert_one_line_error(run("build"), "required")
    assert_one_line_error(run("frobnicate"), "invalid choice")
    assert run("--version").stdout.startswith("worldgen ")


def test_console_script_is_installed():
    exe = Path(sys.executable).with_name("worldgen")
    assert exe.exists(), "pip install -e . should install the `worldgen` console script"
    r = subprocess.run([str(exe), "--version"], capture_output=True, text=True, cwd=REPO)
    assert r.returncode == 0
