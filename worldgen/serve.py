"""``worldgen serve WORLD|SITE``: a read-only static server for a web export (stdlib only).

A SITE is a folder with an ``index.html`` (``worldgen export --to web``); a WORLD is exported
to a temporary site first (removed when the server stops). The server answers GET and HEAD for
regular files inside the folder and nothing else:

* the URL path is percent-decoded once, split on ``/`` and refused (404) if any part is ``..``,
  ``.``-only tricks aside, holds a backslash or a NUL; the file is then resolved (symlinks
  followed) and served only if it still lies inside the folder, so ``..``, ``%2e%2e``,
  absolute paths and symlinks out of the folder all give 404;
* no directory listings: a folder URL serves its ``index.html`` or 404;
* other methods get 405; nothing is ever written.

Bound to 127.0.0.1 by default; ``--host 0.0.0.0`` (opt-in) also prints the LAN URL.
``--https`` wraps the socket in TLS with a self-signed certificate made with ``cryptography``
(RSA 2048, SHA-256, one year, names: localhost, 127.0.0.1, this host's name and LAN address),
kept in the user's cache folder (``worldgen.cache.cache_dir() / "serve"``, key mode 0600) and
remade when it expires or lacks the current LAN address. WebXR needs a secure context: headsets
reach the page through ``adb reverse`` to http://localhost, or over https on the LAN after
accepting the certificate (README, "Share a world as a web page").
"""

from __future__ import annotations

import datetime as dt
import http.server
import ipaddress
import json
import mimetypes
import shutil
import socket
import ssl
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

from .atomic import write_bytes
from .errors import BackendError, InputError

TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".txt": "text/plain; charset=utf-8",
    ".glb": "model/gltf-binary",
    ".spz": "application/octet-stream",
    ".png": "image/png",
    ".css": "text/css; charset=utf-8",
}


def resolve_request(root: Path, target: str) -> Path | None:
    """The file a request target names inside ``root`` (resolved), or None (-> 404).

    root: an absolute, resolved folder. target: the request line's target (path, query, or an
    absolute URL).
    """
    path = urlsplit(target).path
    try:
        path = unquote(path, errors="strict")
    except UnicodeDecodeError:
        return None
    if "\x00" in path or "\\" in path:
        return None
    parts = [p for p in path.split("/") if p]
    if any(p in (".", "..") for p in parts):
        return None
    candidate = root.joinpath(*parts) if parts else root
    try:
        real = candidate.resolve(strict=True)
    except (OSError, RuntimeError):
        return None
    if real != root and root not in real.parents:
        return None  # a symlink (or anything) out of the folder
    if real.is_dir():
        real = real / "index.html"
        try:
            real = real.resolve(strict=True)
        except (OSError, RuntimeError):
            return None
        if root not in real.parents:
            return None
    return real if real.is_file() else None


class SiteHandler(http.server.BaseHTTPRequestHandler):
    """GET / HEAD of files inside ``server.root``; everything else 404 or 405."""

    server_version = "worldgen-serve"
    sys_version = ""

    def _send_file(self, head: bool) -> None:
        f = resolve_request(self.server.root, self.path)
        if f is None:
            self._send_error(404, "not found")
            return
        ctype = TYPES.get(f.suffix.lower()) or mimetypes.guess_type(f.name)[0]
        try:
            data = b"" if head else f.read_bytes()
            size = f.stat().st_size
        except OSError:
            self._send_error(404, "not found")
            return
        self.send_response(200)
        self.send_header("Content-Type", ctype or "application/octet-stream")
        self.send_header("Content-Length", str(size))
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if not head:
            self.wfile.write(data)

    def _send_error(self, code: int, text: str) -> None:
        body = f"{code} {text}\n".encode()
        self.send_response(code)
        if code == 405:
            self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send_file(head=False)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send_file(head=True)

    def _refuse(self) -> None:
        self._send_error(405, "method not allowed (read-only)")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def log_message(self, format: str, *args) -> None:  # noqa: A002
        if not self.server.quiet:
            sys.stderr.write(f"{self.address_string()} {format % args}\n")


class SiteServer(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address, root: Path, quiet: bool):
        self.root = root
        self.quiet = quiet
        super().__init__(address, SiteHandler)


def lan_address() -> str | None:
    """This machine's address on its default route (no packet is sent), or None."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("10.255.255.255", 1))
            ip = s.getsockname()[0]
        return None if ip.startswith("127.") or ip == "0.0.0.0" else ip
    except OSError:
        return None


# ----------------------------------------------------------------------------- certificate


def certificate(folder: Path | None = None, names: list[str] | None = None) -> tuple[Path, Path]:
    """(cert.pem, key.pem) of a self-signed certificate for ``names`` (DNS names and IP
    addresses), made once and kept in ``folder`` (default: the user's cache folder)."""
    from .cache import cache_dir

    folder = Path(folder) if folder is not None else cache_dir() / "serve"
    names = names or ["localhost", "127.0.0.1"]
    cert_p, key_p, meta_p = folder / "cert.pem", folder / "key.pem", folder / "cert.json"
    try:
        meta = json.loads(meta_p.read_text())
        expires = dt.datetime.fromisoformat(meta["expires"])
        fresh = set(names) <= set(meta["names"]) and expires > _now() + dt.timedelta(days=1)
        if fresh and cert_p.is_file() and key_p.is_file():
            return cert_p, key_p
    except (OSError, ValueError, KeyError, TypeError):
        pass
    cert_pem, key_pem, expires = _make_certificate(names)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes(key_p, key_pem, mode=0o600)
    write_bytes(cert_p, cert_pem, mode=0o644)
    meta = json.dumps({"names": names, "expires": expires.isoformat()}).encode()
    write_bytes(meta_p, meta, mode=0o644)
    return cert_p, key_p


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _make_certificate(names: list[str]) -> tuple[bytes, bytes, dt.datetime]:
    try:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import rsa
        from cryptography.x509.oid import NameOID
    except ImportError:
        raise BackendError(
            "--https needs the `cryptography` package (pip install cryptography)"
        ) from None
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    alt = []
    for n in names:
        try:
            alt.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            alt.append(x509.DNSName(n))
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "worldgen serve (self-signed)")])
    now = _now()
    expires = now + dt.timedelta(days=365)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(expires)
        .add_extension(x509.SubjectAlternativeName(alt), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem, expires


# ----------------------------------------------------------------------------- serving


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    """address to bind; 0.0.0.0 (all interfaces) only when asked"""
    port: int = 8000
    """TCP port; 0 picks a free one"""
    https: bool = False
    """TLS with a self-signed certificate (cached in the user's cache folder)"""
    quiet: bool = False
    """no request log"""

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise InputError(f"--port must be 0 to 65535, got {self.port}")


def site_folder(target: str | Path) -> tuple[Path, Path | None]:
    """(the folder to serve, a temporary folder to remove afterwards or None).

    A folder with index.html is served as it is; a world bundle is exported to a temporary
    site (``exporters.web``) first."""
    p = Path(target)
    if p.is_dir() and (p / "index.html").is_file():
        return p.resolve(), None
    if not p.exists():
        raise InputError(f"{p}: no such site or world")
    from exporters.registry import get_exporter, write_export

    from .world import load_world

    world = load_world(p)  # raises a one-line error if it is not a world either
    tmp = Path(tempfile.mkdtemp(prefix="worldgen-serve-"))
    try:
        site = tmp / "site"
        write_export(get_exporter("web").export(world, _default_options()), site)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return site.resolve(), tmp


def _default_options():
    from exporters.registry import ExportOptions

    return ExportOptions()


def make_server(root: Path, opts: ServeOptions) -> tuple[SiteServer, list[str]]:
    """A bound server for ``root`` and the URLs to print (not serving yet)."""
    try:
        server = SiteServer((opts.host, opts.port), root, opts.quiet)
    except OSError as e:
        raise InputError(f"cannot listen on {opts.host}:{opts.port} ({e.strerror or e})") from None
    port = server.server_address[1]
    scheme = "https" if opts.https else "http"
    hosts = [opts.host]
    if opts.host in ("0.0.0.0", ""):
        hosts = ["127.0.0.1"] + ([lan] if (lan := lan_address()) else [])
    if opts.https:
        names = ["localhost", "127.0.0.1", socket.gethostname()] + hosts[1:]
        if opts.host not in ("0.0.0.0", "", "127.0.0.1", "localhost"):
            names.append(opts.host)
        cert, key = certificate(names=sorted(set(names)))
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        server.socket = ctx.wrap_socket(server.socket, server_side=True)
    urls = [f"{scheme}://{_url_host(h)}:{port}/" for h in hosts]
    return server, urls


def _url_host(h: str) -> str:
    return f"[{h}]" if ":" in h else h


def serve(target: str | Path, opts: ServeOptions | None = None, *, ready=None) -> int:
    """Serve a site (or a world, exported first) until Ctrl-C; returns 0.

    ready: optional callable receiving the URLs once the server listens (the CLI prints them).
    """
    opts = opts or ServeOptions()
    root, tmp = site_folder(target)
    try:
        server, urls = make_server(root, opts)
        try:
            if ready:
                ready(urls)
            server.serve_forever()
        except KeyboardInterrupt:
            pass  # Ctrl-C: a clean stop
        finally:
            server.server_close()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return 0
