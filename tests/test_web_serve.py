"""`worldgen serve`: files only from inside the folder (``..``, ``%2e%2e``, absolute paths and
symlinks out of it give 404), no listings, read-only, 127.0.0.1 by default, https with a
cached self-signed certificate, a clean stop on Ctrl-C. All on loopback."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.conftest import default_sigint
from worldgen.errors import InputError
from worldgen.serve import ServeOptions, certificate, make_server, resolve_request


@pytest.fixture
def tree(tmp_path) -> Path:
    """site/ (index.html, data/x.bin, a symlink out, a folder without index) beside secret.txt."""
    site = tmp_path / "site"
    (site / "data").mkdir(parents=True)
    (site / "empty").mkdir()
    (site / "index.html").write_text("<!doctype html><title>t</title>")
    (site / "data" / "x.bin").write_bytes(b"\x00\x01")
    (tmp_path / "secret.txt").write_text("secret")
    (site / "out").symlink_to(tmp_path / "secret.txt")
    (site / "outdir").symlink_to(tmp_path)
    (site / "inside").symlink_to(site / "data" / "x.bin")
    return site


def test_resolve_request_confines_to_the_folder(tree):
    root = tree.resolve()
    assert resolve_request(root, "/") == root / "index.html"
    assert resolve_request(root, "/index.html?x=1#f") == root / "index.html"
    assert resolve_request(root, "/data/x.bin") == root / "data" / "x.bin"
    assert resolve_request(root, "/inside") == root / "data" / "x.bin"  # a link within: fine
    for bad in [
        "/../secret.txt",
        "/data/../../secret.txt",
        "/%2e%2e/secret.txt",
        "/%2E%2E%2Fsecret.txt",
        "/data/%2e%2e/%2e%2e/secret.txt",
        "//etc/passwd",
        "/etc/passwd",
        str(tree.parent / "secret.txt"),
        "/out",  # symlink to a file outside
        "/outdir/secret.txt",  # symlink to a folder outside
        "/empty",  # a folder without index.html: no listing
        "/data",
        "/data/x.bin%00.html",
        "/..%5csecret.txt",
        "http://evil/../secret.txt",
        "/%ff%fe",
    ]:
        assert resolve_request(root, bad) is None, bad


@pytest.fixture
def served(tree):
    srv, urls = make_server(tree.resolve(), ServeOptions(port=0, quiet=True))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield srv, urls
    srv.shutdown()
    srv.server_close()


def _get(port: int, path: str, method: str = "GET", host="127.0.0.1") -> tuple[int, bytes]:
    c = http.client.HTTPConnection(host, port, timeout=10)
    c.putrequest(method, path, skip_accept_encoding=True)  # the raw path, not normalised
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body


def test_server_on_loopback_read_only(served, tree):
    srv, urls = served
    host, port = srv.server_address[:2]
    assert host == "127.0.0.1" and urls == [f"http://127.0.0.1:{port}/"]
    assert ServeOptions().host == "127.0.0.1"
    status, body = _get(port, "/")
    assert status == 200 and body.startswith(b"<!doctype html>")
    assert _get(port, "/data/x.bin") == (200, b"\x00\x01")
    for bad in ["/../secret.txt", "/%2e%2e/secret.txt", "//etc/passwd", "/out", "/empty"]:
        assert _get(port, bad)[0] == 404, bad
    for method in ("POST", "PUT", "DELETE"):
        assert _get(port, "/index.html", method)[0] == 405
    assert (tree / "index.html").read_text().startswith("<!doctype")  # untouched
    # nothing listens on the other interfaces
    lan = socket.gethostbyname(socket.gethostname())
    if not lan.startswith("127."):
        with pytest.raises(OSError):
            socket.create_connection((lan, port), timeout=2).close()


def test_port_in_use_is_one_line_error(served, tree):
    srv, _ = served
    with pytest.raises(InputError, match="cannot listen"):
        make_server(tree.resolve(), ServeOptions(port=srv.server_address[1]))
    with pytest.raises(InputError, match="--port"):
        ServeOptions(port=70000)


def test_https_with_a_cached_self_signed_certificate(tree, tmp_path):
    pytest.importorskip("cryptography")
    srv, urls = make_server(tree.resolve(), ServeOptions(port=0, https=True, quiet=True))
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        port = srv.server_address[1]
        assert urls == [f"https://127.0.0.1:{port}/"]
        from worldgen.cache import cache_dir

        cert = cache_dir() / "serve" / "cert.pem"
        key = cache_dir() / "serve" / "key.pem"
        assert cert.is_file() and (key.stat().st_mode & 0o777) == 0o600
        ctx = ssl.create_default_context(cafile=str(cert))  # verifies name and chain
        c = http.client.HTTPSConnection("127.0.0.1", port, context=ctx, timeout=10)
        c.request("GET", "/index.html")
        r = c.getresponse()
        assert r.status == 200 and r.read().startswith(b"<!doctype")
        c.close()
        # plain http on the https port fails
        with pytest.raises((http.client.HTTPException, OSError)):
            _get(port, "/")
    finally:
        srv.shutdown()
        srv.server_close()
    # cached: the same certificate next time; remade when a new name is needed
    before = cert.read_bytes()
    certificate(names=["127.0.0.1", "localhost"])
    assert cert.read_bytes() == before
    certificate(names=["127.0.0.1", "localhost", "192.0.2.7"])
    assert cert.read_bytes() != before


def _start_cli(args: list[str], env=None) -> tuple[subprocess.Popen, str]:
    p = subprocess.Popen(
        [sys.executable, "-m", "worldgen", "serve", *args, "--port", "0", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=default_sigint,
    )
    line = p.stdout.readline()
    if not line:
        p.kill()
        pytest.fail(f"serve did not start: {p.stderr.read()}")
    return p, json.loads(line)["urls"][0]


def test_cli_serves_and_stops_on_ctrl_c(tree):
    p, url = _start_cli([str(tree)])
    try:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        assert url.startswith("http://127.0.0.1:")
        assert _get(port, "/index.html")[0] == 200
        assert _get(port, "/%2e%2e/secret.txt")[0] == 404
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 0
        assert "Traceback" not in p.stderr.read()
        with pytest.raises(OSError):
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        if p.poll() is None:
            p.kill()


def test_cli_serves_a_world_from_a_temporary_export(small_world, tmp_path):
    from exporters import web as webx

    if not webx.VIEWER.is_file():
        pytest.skip("the web viewer is not built (tools/setup.sh)")
    env = dict(os.environ, TMPDIR=str(tmp_path))
    p, url = _start_cli([str(small_world)], env=env)
    try:
        port = int(url.rsplit(":", 1)[1].strip("/"))
        status, body = _get(port, "/site.json")
        assert status == 200 and json.loads(body)["format"] == "worldgen-web"
        assert [d.name for d in tmp_path.iterdir()][0].startswith("worldgen-serve-")
        p.send_signal(signal.SIGINT)
        assert p.wait(timeout=10) == 0
        assert list(tmp_path.iterdir()) == []  # the temporary site is gone
    finally:
        if p.poll() is None:
            p.kill()


def test_cli_bad_target_is_one_line(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "worldgen", "serve", str(tmp_path / "nope")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no such" in r.stderr
