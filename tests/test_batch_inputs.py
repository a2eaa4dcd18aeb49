"""worldgen batch without Ray: inputs discovery, CSV lists, naming, option errors."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from worldgen.batch.inputs import discover
from worldgen.cli import main
from worldgen.errors import BackendError, InputError


def _touch(p: Path) -> Path:
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(b"x")
    return p


def test_folders_recursive_skipping_hidden_worlds_and_outdir(tmp_path):
    src = tmp_path / "shoot"
    for rel in ("a.jpg", "b.PNG", "sub/c.jpeg", "sub/deep/d.webp", "e.tif", "notes.txt",
                ".hidden/x.jpg", ".y.jpg", "old.world/preview.png", "out/z.png"):  # fmt: skip
        _touch(src / rel)
    out = src / "out"
    items = discover([src], out)
    got = {str(i.output.relative_to(out)): i.input.relative_to(src).as_posix() for i in items}
    assert got == {
        "a.world": "a.jpg",
        "b.world": "b.PNG",
        "e.world": "e.tif",
        "sub/c.world": "sub/c.jpeg",
        "sub/deep/d.world": "sub/deep/d.webp",
    }
    assert all(i.input.is_absolute() and i.output.is_absolute() for i in items)


def test_same_stem_keeps_extensions_and_true_collisions_are_errors(tmp_path):
    a, b = _touch(tmp_path / "p/a.jpg"), _touch(tmp_path / "p/a.png")
    names = sorted(i.output.name for i in discover([tmp_path / "p"], tmp_path / "o"))
    assert names == ["a.jpg.world", "a.png.world"]
    _touch(tmp_path / "q/a.jpg")
    with pytest.raises(InputError, match="would both be built into"):
        discover([tmp_path / "p", tmp_path / "q"], tmp_path / "o")
    with pytest.raises(InputError, match="would both be built into"):
        discover([a, a], tmp_path / "o")
    assert len(discover([a, b], tmp_path / "o")) == 2


def test_csv_list_paths_and_overrides(tmp_path):
    _touch(tmp_path / "imgs/one.jpg")
    (tmp_path / "list.csv").write_text(
        "path,focal_px,depth_map,prompt,seed\n"
        "imgs/one.jpg,800,imgs/one_depth.npy,a stone hut,3\n"
        "imgs/missing.jpg,,,,\n"
        "imgs/bad.jpg,-5,,,\n"
        "imgs/bad2.jpg,,,,x\n"
        ",,,,\n"
    )
    items = discover([tmp_path / "list.csv"], tmp_path / "out")
    one, missing, bad, bad2, empty = items
    assert one.output == tmp_path / "out/imgs/one.world"
    assert one.overrides == {
        "camera": {"focal_px": 800.0},
        "depth": {"depth_map": str(tmp_path / "imgs/one_depth.npy")},
        "fill": {"prompt": "a stone hut"},
        "seed": 3,
    }
    assert one.error is None and missing.error is None  # a missing photo fails when built
    assert bad.error == "list.csv line 4: focal_px must be a positive number, got '-5'"
    assert bad2.error == "list.csv line 5: seed must be a whole number, got 'x'"
    assert empty.error == "list.csv line 6: empty path"


def test_bad_lists_and_inputs(tmp_path):
    (tmp_path / "nopath.csv").write_text("file,seed\na.jpg,1\n")
    with pytest.raises(InputError, match="needs a 'path' column"):
        discover([tmp_path / "nopath.csv"], tmp_path / "o")
    (tmp_path / "extra.csv").write_text("path,sead\na.jpg,1\n")
    with pytest.raises(InputError, match="unknown column"):
        discover([tmp_path / "extra.csv"], tmp_path / "o")
    with pytest.raises(InputError, match="no such file or folder"):
        discover([tmp_path / "nothing"], tmp_path / "o")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no photos found"):
        discover([tmp_path / "empty"], tmp_path / "o")


def test_cli_errors_are_one_line(tmp_path, capsys):
    img = _touch(tmp_path / "a.jpg")
    with pytest.raises(SystemExit) as e:
        main(["batch", str(img), "-o", str(tmp_path / "o"), "--memory-per-task", "lots"])
    assert e.value.code == 2
    assert "expected a size like 2GiB" in capsys.readouterr().err
    assert main(["batch", str(tmp_path / "none"), "-o", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no such file or folder" in err


def test_without_ray_one_line_install_hint(tmp_path, monkeypatch, capsys):
    from PIL import Image

    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    rc = main(["batch", str(tmp_path / "a.png"), "-o", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert rc == BackendError.exit_code
    assert err.strip() == (
        "worldgen batch: error: worldgen batch needs Ray: pip install 'worldgen[batch]' "
        "(or: pip install ray)"
    )


def test_auth_failure_becomes_one_clear_line():
    from worldgen.batch.driver import _connect_error

    class AuthenticationError(Exception):
        pass

    e = AuthenticationError(
        "Authentication failed\nRAY_AUTH_MODE is currently 'disabled' but the cluster ..."
    )
    msg = _connect_error("127.0.0.1:6379", e)
    assert "\n" not in msg
    assert msg.startswith("cannot join the Ray cluster at 127.0.0.1:6379: it uses token auth")
    assert "RAY_AUTH_MODE=token" in msg
    # what ray.init(address=...) really raises against `ray start --head` (measured): a plain
    # ConnectionError, the reason only in the C++ core's stderr lines (captured by the driver)
    refused = ConnectionError("Failed to connect to Ray cluster at 192.0.2.2:6390")
    said = "gcs_client.cc:210: ... Unauthenticated: RPC error: InvalidAuthToken: Authentication"
    assert _connect_error("127.0.0.1:6390", refused, said).startswith(
        "cannot join the Ray cluster at 127.0.0.1:6390: it uses token authentication"
    )
    other = _connect_error("10.0.0.1:6379", ConnectionError("timed out\nmore"))
    assert other.startswith(
        "cannot connect to the Ray cluster at 10.0.0.1:6379: ConnectionError: timed out; if the "
        "cluster uses token authentication"
    )
    assert "\n" not in other


def test_object_store_uris_are_refused_in_one_line(tmp_path):
    with pytest.raises(InputError, match=r"s3:// paths are not supported; mount the bucket"):
        discover(["s3://bucket/photos"], tmp_path / "o")
    _touch(tmp_path / "a.jpg")
    with pytest.raises(InputError, match=r"gs:// paths are not supported"):
        discover([tmp_path / "a.jpg"], "gs://bucket/out")


def test_a_world_killed_between_its_two_renames_is_restored_not_deleted(tmp_path):
    """Before an item is planned, its leftovers are resolved like any command's: the aside copy
    of a world whose replacement was killed between the renames comes back; temporaries go."""
    from worldgen.batch.driver import _remove_stale_temps

    out = tmp_path / "a.world"
    aside = tmp_path / ".a.world.old-x1"
    aside.mkdir()
    (aside / "world.json").write_text("{}")
    tmp = tmp_path / ".a.world.tmp-x2"
    tmp.mkdir()
    _remove_stale_temps(out)
    assert (out / "world.json").read_text() == "{}"
    assert not aside.exists() and not tmp.exists()
