"""Fixtures for the reference functions' tests: a real storage element of their own (WebDAV door
with macaroons, no billing events, so the many files uploaded here reach no other test's
router), generated data files, and a small real HTTP file server that counts the bytes it sends
(to prove Range reads fetch a frame and not the file)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import itertools
import re
import threading
import urllib.parse
import zlib
from pathlib import Path

import datagen
import pytest

from panfaas.client import Storage
from services import free_port, load_function, start_storage

_ids = itertools.count()


class Door:
    """The session's storage element as the functions see it: files uploaded by the admin,
    pre-authorised URLs (macaroons) minted by the door as the event router would get them."""

    def __init__(self, storage):
        self.service = storage
        self.admin = Storage(storage.url, *storage.auth("admin"))
        self.url = storage.url

    def unique_dir(self, prefix: str) -> str:
        path = f"/data/test-{prefix}-{next(_ids)}"
        self.admin.mkdir(path)
        return path

    def put(self, path: str, local: str | Path | bytes) -> str:
        data = local if isinstance(local, bytes) else Path(local).read_bytes()
        self.admin.upload(path, data)
        return path

    def signed(self, path: str, activity: str = "DOWNLOAD", validity: str = "PT10M") -> str:
        return self.admin.url_for(path, activity, validity)

    def bare(self, path: str) -> str:
        return self.url + urllib.parse.quote(path)

    def read_bytes(self, path: str) -> bytes:
        return self.admin.download(path)

    def exists(self, path: str) -> bool:
        return self.admin.exists(path)


@pytest.fixture(scope="session")
def door(tmp_path_factory):
    service = start_storage(tmp_path_factory.mktemp("fn-storage"), None)
    yield Door(service)
    service.proc.stop()


@pytest.fixture(scope="session")
def data(tmp_path_factory):
    """Generated files, made once per session: data.path("stack") etc."""
    root = tmp_path_factory.mktemp("fn-data")

    class Files:
        def __init__(self):
            self.made = {}

        def path(self, name: str) -> Path:
            if name not in self.made:
                p = root / name
                self.made[name] = {"stack": lambda: datagen.cxi_stack(p.with_suffix(".cxi"), frames=10),
                 "cxi1": lambda: datagen.cxi_stack(p.with_suffix(".cxi"), frames=1),
                 "cheetah": lambda: datagen.cheetah_hit(p.with_suffix(".h5")),
                 "cheetah_cxi": lambda: datagen.cheetah_cxi(p.with_suffix(".cxi")),
                 "plain": lambda: datagen.plain_hdf5(p.with_suffix(".h5")),
                 "text": lambda: datagen.not_hdf5(p.with_suffix(".h5")),
                 "empty": lambda: datagen.empty(p.with_suffix(".h5")),
                 "truncated": lambda: datagen.truncated(self.path("cheetah"), p.with_suffix(".h5")),
                 }[name]()
            return self.made[name]

    return Files()


@pytest.fixture(scope="session")
def fn():
    """fn("hdf5-preview") -> the function's module, imported from functions/<name>/__main__.py."""
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = load_function(name)
        return cache[name]
    return get


def rfc3230_digest(data: bytes, want: str) -> str:
    """What a storage answers to Want-Digest: adler32 as 8 hex digits, md5/sha-256 as base64."""
    wanted = {w.split(";")[0].strip().lower() for w in want.split(",")}
    out = []
    if "adler32" in wanted:
        out.append(f"adler32={zlib.adler32(data):08x}")
    if "md5" in wanted:
        out.append("md5=" + base64.b64encode(hashlib.md5(data).digest()).decode())
    if "sha-256" in wanted:
        out.append("sha-256=" + base64.b64encode(hashlib.sha256(data).digest()).decode())
    return ",".join(out)


class CountingServer:
    """A real HTTP/1.1 file server on loopback: GET with one byte range, PUT, paths under
    /redirect/ answering 307 to the same file, paths under /short/ sending half the body they
    declare. It answers Want-Digest (RFC 3230) unless `digest` is False; a string `digest` is sent
    as the Digest header verbatim. `sent` counts the body bytes it sent."""

    def __init__(self, root: Path, honour_range: bool = True):
        self.root, self.honour_range = Path(root), honour_range
        self.digest: bool | str | None = None
        self.sent = 0
        self.requests = []
        self.port = free_port()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def _file(self):
                path = urllib.parse.urlsplit(self.path).path
                if path.startswith("/redirect/"):
                    self.send_response(307)
                    self.send_header("Location", path[len("/redirect"):])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return None
                return server.root / path.removeprefix("/short").lstrip("/")

            def _digest(self, data):
                want = self.headers.get("Want-Digest")
                if want and server.digest is not False:
                    self.send_header("Digest", server.digest if isinstance(server.digest, str)
                                     else rfc3230_digest(data, want))

            def _existing(self, method, header=None):
                """The file asked for, after recording the request; None when already answered
                (a redirect, or 404 for a file that is not there)."""
                server.requests.append((method, self.path, header))
                f = self._file()
                if f is not None and not f.is_file():
                    self.send_error(404)
                    return None
                return f

            def do_HEAD(self):
                f = self._existing("HEAD")
                if f is None:
                    return
                self.send_response(200)
                self._digest(f.read_bytes())
                self.send_header("Content-Length", str(f.stat().st_size))
                self.end_headers()

            def do_GET(self):
                f = self._existing("GET", self.headers.get("Range"))
                if f is None:
                    return
                data = f.read_bytes()
                if self.path.startswith("/short/"):
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:len(data) // 2])
                    self.close_connection = True
                    return
                m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range") or "")
                if m and server.honour_range:
                    lo = int(m.group(1))
                    hi = min(int(m.group(2) or len(data) - 1), len(data) - 1)
                    if lo >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    body = data[lo:hi + 1]
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {lo}-{hi}/{len(data)}")
                else:
                    body = data
                    self.send_response(200)
                    self._digest(data)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
                server.sent += len(body)

            def do_PUT(self):
                server.requests.append(("PUT", self.path, None))
                f = self._file()
                if f is None:
                    self.rfile.read(int(self.headers.get("Content-Length") or 0))
                    return
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                f.parent.mkdir(parents=True, exist_ok=True)
                f.write_bytes(body)
                self.send_response(201)
                self.send_header("Content-Length", "0")
                self.end_headers()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/{name.lstrip('/')}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served(tmp_path):
    servers = []

    def make(honour_range: bool = True) -> CountingServer:
        s = CountingServer(tmp_path, honour_range)
        servers.append(s)
        return s
    yield make
    for s in servers:
        s.close()
