"""The WebDAV door: what dCache's door does before a request reaches the namespace.

In order: refuse unsafe paths (`..`, `.`, NUL, backslashes, anything still
encoded after decoding, invalid UTF-8); authenticate (basic auth, or a macaroon
as `Authorization: Bearer` or `?authz=`); answer macaroon requests (POST with
`Content-Type: application/macaroon-request`); apply the macaroon's caveats
(root, path, activity per method, max-upload); then serve. PUT is handled here
(staged, checksummed, verified uploads) and so are GET/HEAD of files (Range,
conditional requests, RFC 3230 `Digest`, the body by sendfile, billed as a
download); everything else (PROPFIND, PROPPATCH, MKCOL, MOVE, DELETE, OPTIONS,
directory pages) is wsgidav's. The frontend
(`/api/v1`) is served on the same port unless it has a listener of its own.
"""

from __future__ import annotations

import email.utils
import json
import logging
import mimetypes
import os
import posixpath
import socket
import stat
import urllib.parse
from collections.abc import Callable

from wsgidav import util as dav_util
from wsgidav.dav_error import DAVError

from .. import macaroons
from . import checksums, metrics
from .auth import Authenticator, AuthError, Identity
from .gateway import FileWrapper
from .namespace import Namespace, Refused

log = logging.getLogger("panfaas.storage.door")

BLOCK = 1 << 20
RECV_BUFFER = 4 << 20     # uploads are written to disk in pieces of this size
SPLICE_FROM = 1 << 20     # uploads bigger than this move socket -> file by splice(2)
REASONS = {200: "OK", 201: "Created", 204: "No Content", 303: "See Other", 400: "Bad Request",
           401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 405: "Method Not Allowed",
           409: "Conflict", 412: "Precondition Failed", 413: "Payload Too Large",
           416: "Range Not Satisfiable", 429: "Too Many Requests", 500: "Internal Server Error",
           501: "Not Implemented", 503: "Service Unavailable"}
NOT_SUPPORTED = ("COPY", "LOCK", "UNLOCK")
WWW_AUTH = [("WWW-Authenticate", 'Basic realm="panfaas"')]


def json_response(start_response, status: int, body: dict, headers=()) -> list[bytes]:
    data = json.dumps(body).encode()
    start_response(f"{status} {REASONS.get(status, '')}".strip(),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *headers])
    return [data]


def decode_path(raw: str) -> str:
    """The request path as text; Refused (400) for anything that could walk out of the tree."""
    try:
        path = raw.encode("latin-1").decode("utf-8")
    except UnicodeError:
        raise Refused(400, "request path is not valid UTF-8") from None
    check_path(path)
    return path or "/"


def check_path(path: str) -> None:
    if "\0" in path or "\\" in path:
        raise Refused(400, f"path traversal refused: {path!r}")
    for seg in path.split("/"):
        # Decode again (and again): %252e%252e is `..` to anything that decodes twice.
        for _ in range(3):
            if seg in (".", "..") or "/" in seg or "\\" in seg or "\0" in seg:
                raise Refused(400, f"path traversal refused: {path!r}")
            nxt = urllib.parse.unquote(seg)
            if nxt == seg:
                break
            seg = nxt


class Door:
    def __init__(self, *, ns: Namespace, authn: Authenticator, authority: macaroons.MacaroonAuthority,
                 dav: Callable, public_url: str, frontend: Callable | None = None):
        self.ns = ns
        self.authn = authn
        self.authority = authority
        self.dav = dav
        self.public_url = public_url.rstrip("/")
        self.frontend = frontend

    # -- WSGI -------------------------------------------------------------
    def __call__(self, environ: dict, start_response):
        method = environ["REQUEST_METHOD"]

        def counted(status, headers, exc_info=None):
            metrics.REQUESTS.labels(method, status[:3]).inc()
            return start_response(status, headers, exc_info)

        raw = environ.get("PATH_INFO", "/") or "/"
        if method == "GET" and raw == "/healthz":
            return json_response(counted, 200, {"status": "ok"})
        if method == "GET" and raw == "/metrics":
            body = metrics.render()
            counted("200 OK", [("Content-Type", "text/plain; version=0.0.4"), ("Content-Length", str(len(body)))])
            return [body]
        if self.frontend and (raw == "/api" or raw.startswith("/api/")):
            return self.frontend(environ, counted)
        try:
            return self.handle(environ, counted, method, decode_path(raw))
        except Refused as e:
            return json_response(counted, e.status, {"error": str(e)})

    def handle(self, environ, start_response, method: str, path: str):
        try:
            ident = self.authn.authenticate(environ)
        except AuthError as e:
            return json_response(start_response, 401, {"error": str(e)}, WWW_AUTH)
        if ident is None:
            return json_response(start_response, 401, {"error": "authentication required"}, WWW_AUTH)
        ns_path = ident.resolve(path)
        if not ident.visible(ns_path):
            return json_response(start_response, 403, {"error": f"access to {path} is not allowed"})
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip().lower()
        if method == "POST" and ctype == "application/macaroon-request":
            return self.request_macaroon(environ, start_response, ident, path)
        if method in NOT_SUPPORTED:
            return json_response(start_response, 501, {"error": f"{method} is not supported by this door"})
        fs = self.ns.fs_path(ns_path)
        try:
            st = os.stat(fs)
        except FileNotFoundError:
            st = None
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        self.authorize(environ, ident, method, path, ns_path, st)
        environ["panfaas.identity"] = ident
        environ["wsgidav.auth.user_name"] = ident.username
        if method == "PUT":
            return self.put(environ, start_response, ident, path, ns_path, st)
        if method in ("GET", "HEAD") and st is not None and not is_dir:
            return self.get(environ, start_response, ident, ns_path, fs, st, method)
        return self.dav(environ, start_response)

    # -- authorisation ----------------------------------------------------
    def authorize(self, environ, ident: Identity, method: str, path: str, ns_path: str, st) -> None:
        """Raise Refused unless this identity may do `method` on `path` (dCache's activity mapping)."""
        is_dir = st is not None and stat.S_ISDIR(st.st_mode)
        depth = environ.get("HTTP_DEPTH")
        if method == "PROPFIND":
            if depth is None:
                environ["HTTP_DEPTH"] = depth = "1"    # no Depth: list one level, as dCache's door does
            if depth.lower() == "infinity":
                raise Refused(403, "PROPFIND with Depth: infinity is not supported (use 0 or 1)")
        needed = {
            "GET": ["LIST" if is_dir else "DOWNLOAD"],
            "HEAD": ["READ_METADATA"],
            "OPTIONS": [],
            "PROPFIND": ["READ_METADATA"] + (["LIST"] if is_dir and depth != "0" else []),
            "PROPPATCH": ["UPDATE_METADATA"],
            "PUT": ["UPLOAD"] + (["DELETE"] if st is not None else []),
            "DELETE": ["DELETE"],
            "MKCOL": ["MANAGE"],
            "MOVE": ["MANAGE"],
        }.get(method)
        if needed is None:
            raise Refused(405, f"method {method} is not allowed")
        if method not in ("GET", "HEAD", "OPTIONS", "PROPFIND") and not ident.within(ns_path):
            raise Refused(403, f"access to {path} is not allowed")
        for activity in needed:
            if not ident.allows(activity):
                raise Refused(403, f"macaroon does not allow {activity} (needed for {method})")
        if method == "MOVE":
            self.authorize_destination(environ, ident)

    def authorize_destination(self, environ, ident: Identity) -> None:
        header = environ.get("HTTP_DESTINATION")
        if not header:
            raise Refused(400, "MOVE needs a Destination header")
        dest = urllib.parse.unquote(urllib.parse.urlsplit(header).path)
        check_path(dest)
        dest_ns = ident.resolve(dest)
        if not ident.within(dest_ns):
            raise Refused(403, f"access to {dest} is not allowed")
        dest_fs = self.ns.fs_path(dest_ns)
        if os.path.lexists(dest_fs) and environ.get("HTTP_OVERWRITE", "T").upper() != "F" \
                and not ident.allows("DELETE"):
            raise Refused(403, "macaroon does not allow DELETE (needed to overwrite the destination)")
        # wsgidav compares scheme and host with the request's; a path is what it needs.
        environ["HTTP_DESTINATION"] = urllib.parse.quote(dest)

    # -- macaroons --------------------------------------------------------
    def request_macaroon(self, environ, start_response, ident: Identity, path: str):
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
            if size > 65536:
                raise ValueError("body too large")
            body = environ["wsgi.input"].read(size) if size else b""
            req = json.loads(body) if body.strip() else {}
            if not isinstance(req, dict):
                raise ValueError("body must be a JSON object")
            caveats = req.get("caveats", [])
            if not isinstance(caveats, list) or not all(isinstance(c, str) for c in caveats):
                raise ValueError("'caveats' must be a list of strings")
            validity = req.get("validity")
            if validity is not None and not isinstance(validity, str):
                raise ValueError("'validity' must be an ISO-8601 duration string")
        except ValueError as e:
            return json_response(start_response, 400, {"error": f"bad macaroon request: {e}"})
        grant = ident.grant
        try:
            if grant:
                rel = grant.relative(path)
                if rel is None:
                    raise macaroons.MacaroonError(f"macaroon does not allow access to {path}", 403)
                token = self.authority.mint(uid=ident.uid, gids=ident.gids, username=ident.username,
                                            path=rel, caveats=caveats, validity=validity,
                                            inherited=grant.caveats)
            else:
                token = self.authority.mint(uid=ident.uid, gids=ident.gids, username=ident.username,
                                            path=path, caveats=caveats, validity=validity,
                                            home=ident.home, root=ident.root)
        except macaroons.MacaroonError as e:
            return json_response(start_response, e.status, {"error": str(e)})
        target = self.public_url + urllib.parse.quote(path)
        base = self.public_url + "/"
        log.info("macaroon issued", extra={"fields": {"user": ident.username, "path": path,
                                                      "caveats": caveats, "validity": validity}})
        return json_response(start_response, 200, {
            "macaroon": token,
            "uri": {"targetWithMacaroon": f"{target}?authz={token}",
                    "baseWithMacaroon": f"{base}?authz={token}",
                    "target": target, "base": base}})

    # -- data -------------------------------------------------------------
    def put(self, environ, start_response, ident: Identity, path: str, ns_path: str, st):
        if st is not None and stat.S_ISDIR(st.st_mode):
            raise Refused(405, f"{path} is a directory")
        parent = self.ns.fs_path(posixpath.dirname(ns_path.rstrip("/")) or "/")
        if not os.path.isdir(parent):
            raise Refused(409, f"parent directory of {path} does not exist")
        if "HTTP_CONTENT_RANGE" in environ:
            raise Refused(400, "Content-Range is not allowed on PUT")
        if environ.get("HTTP_CONTENT_ENCODING", "identity").lower() != "identity":
            raise Refused(501, "Content-Encoding is not supported")
        length = environ.get("CONTENT_LENGTH")
        length = int(length) if length not in (None, "") else None
        limit = ident.grant.max_upload if ident.grant else None
        if limit is not None and length is not None and length > limit:
            raise Refused(403, f"upload of {length} bytes exceeds the macaroon's max-upload of {limit} bytes")
        want = checksums.parse_want_digest(environ.get("HTTP_WANT_DIGEST"))
        expected = checksums.expected_from_request(environ.get("HTTP_DIGEST"), environ.get("HTTP_CONTENT_MD5"))
        upload = self.ns.upload(ident, ns_path, algorithms=("adler32", *want), max_bytes=limit,
                                expected=expected, client_port=int(environ.get("REMOTE_PORT") or 0))
        try:
            self._receive(environ, upload, length)
            values = upload.commit()
        except Refused as e:
            upload.abort(str(e))
            return json_response(start_response, e.status, {"error": str(e)})
        except Exception as e:  # noqa: BLE001 - a broken connection or disk: nothing stays, the door goes on
            upload.abort(f"upload failed: {e}")
            log.warning("upload failed", extra={"fields": {"path": ns_path, "error": repr(e)}})
            return json_response(start_response, 500, {"error": f"upload failed: {e}"})
        headers = [("ETag", f'"{dav_util.get_file_etag(upload.fs)}"'), ("Content-Length", "0")]
        digest = checksums.digest_header(values, want)
        if digest:
            headers.append(("Digest", digest))
        log.info("upload", extra={"fields": {"path": ns_path, "size": upload.size,
                                             "user": ident.username, "adler32": values["adler32"]}})
        status = "201 Created" if upload.created else "204 No Content"
        start_response(status, headers)
        return [b""]

    @staticmethod
    def _receive(environ, upload, length: int | None) -> None:
        inp = environ["wsgi.input"]
        rfile = getattr(inp, "rfile", None)
        if length and hasattr(rfile, "has_data") and hasattr(getattr(rfile, "raw", None), "readinto") \
                and hasattr(inp, "remaining"):
            return _receive_direct(inp, rfile, upload, length, environ.get("panfaas.socket"))
        remaining = length
        while remaining is None or remaining > 0:
            chunk = inp.read(BLOCK if remaining is None else min(BLOCK, remaining))
            if not chunk:
                break
            upload.write(chunk)
            if remaining is not None:
                remaining -= len(chunk)
        if remaining:
            raise Refused(400, f"client sent {length - remaining} of {length} bytes")

    def get(self, environ, start_response, ident: Identity, ns_path: str, fs: str, st: os.stat_result,
            method: str):
        """GET/HEAD of a file (`st`: handle()'s stat of it): conditional requests, one Range,
        Digest; the body by sendfile."""
        size, mtime = st.st_size, int(st.st_mtime)
        etag = dav_util.get_file_etag(fs)      # the getetag wsgidav reports in PROPFIND
        headers = [("Content-Type", mimetypes.guess_type(fs)[0] or "application/octet-stream"),
                   ("Last-Modified", email.utils.formatdate(mtime, usegmt=True)),
                   ("ETag", f'"{etag}"'), ("Accept-Ranges", "bytes")]
        precondition = _preconditions(environ, etag, mtime)
        if precondition == 304:
            start_response("304 Not Modified", headers[1:3])
            return [b""]
        if precondition == 412:
            return json_response(start_response, 412, {"error": "precondition failed"})
        want = checksums.parse_want_digest(environ.get("HTTP_WANT_DIGEST"))
        digest = checksums.digest_header(checksums.load(fs), want) if want else None
        if digest:
            headers.append(("Digest", digest))
        offset, count, status = 0, size, "200 OK"
        byte_range = environ.get("HTTP_RANGE")
        if byte_range and size and _if_range_holds(environ.get("HTTP_IF_RANGE"), etag, mtime):
            try:
                ranges, _ = dav_util.obtain_content_ranges(byte_range, size)
            except DAVError:
                ranges = []
            if not ranges:
                return json_response(start_response, 416, {"error": f"no satisfiable range in {byte_range!r}"},
                                     [("Content-Range", f"bytes */{size}")])
            first, last, count = ranges[0]           # one range; no multipart, as wsgidav
            offset, status = first, "206 Partial Content"
            headers.append(("Content-Range", f"bytes {first}-{last}/{size}"))
        headers.append(("Content-Length", str(count)))
        if method == "HEAD":
            start_response(status, headers)
            return [b""]
        download = self.ns.download(ident, ns_path, size=size, expected=count,
                                    client_port=int(environ.get("REMOTE_PORT") or 0))

        def finished(sent: int) -> None:
            download.data(sent)
            download.close()

        body = FileWrapper(open(fs, "rb"), offset, count, on_close=finished)
        start_response(status, headers)
        return body


def _etags(header: str) -> list[str]:
    return [t.strip().removeprefix("W/").strip('"') for t in header.split(",") if t.strip()]


def _http_date(text: str | None) -> int | None:
    try:
        return int(email.utils.parsedate_to_datetime(text).timestamp()) if text else None
    except (TypeError, ValueError):
        return None


def _preconditions(environ: dict, etag: str, mtime: int) -> int | None:
    """RFC 9110 §13.2.2 for GET/HEAD: 412, 304 or None (go on)."""
    if_match = environ.get("HTTP_IF_MATCH")
    if if_match is not None:
        if "*" not in _etags(if_match) and etag not in _etags(if_match):
            return 412
    else:
        since = _http_date(environ.get("HTTP_IF_UNMODIFIED_SINCE"))
        if since is not None and mtime > since:
            return 412
    if_none = environ.get("HTTP_IF_NONE_MATCH")
    if if_none is not None:
        if "*" in _etags(if_none) or etag in _etags(if_none):
            return 304
    else:
        since = _http_date(environ.get("HTTP_IF_MODIFIED_SINCE"))
        if since is not None and mtime <= since:
            return 304
    return None


def _if_range_holds(header: str | None, etag: str, mtime: int) -> bool:
    if not header:
        return True
    date = _http_date(header)
    return date == mtime if date is not None else etag in _etags(header)


def _receive_direct(inp, rfile, upload, length: int, sock=None) -> None:
    """Receive a Content-Length body straight from the socket into one reused buffer.

    cheroot's request reader is the pure-Python `_pyio.BufferedReader`: it costs
    about a CPU-second per GiB in allocations and joins. What it has buffered
    already (read with the headers) is taken first; the rest goes socket ->
    buffer -> checksum -> file, with no copies in Python, and is written in full
    buffers (writing each socket read as it comes doubles the kernel's work)."""
    remaining = length
    while remaining and rfile.has_data():
        chunk = rfile.read1(min(BLOCK, remaining))
        upload.write(chunk)
        remaining -= len(chunk)
    if remaining >= SPLICE_FROM and sock is not None and _can_splice(sock):
        remaining -= upload.splice_from(sock, remaining)
    else:
        buf = memoryview(bytearray(min(RECV_BUFFER, remaining) or 1))
        raw = rfile.raw
        while remaining:
            fill, want = 0, min(len(buf), remaining)
            while fill < want:
                n = raw.readinto(buf[fill:want])
                if not n:
                    break
                fill += n
            if fill:
                upload.write(buf[:fill])
                remaining -= fill
            if fill < want:
                break
    inp.remaining = remaining          # cheroot's bookkeeping: the body has been consumed
    if remaining:
        raise Refused(400, f"client sent {length - remaining} of {length} bytes")


def _can_splice(sock) -> bool:
    """splice(2) needs Linux and a plain TCP socket (not TLS)."""
    return hasattr(os, "splice") and type(sock) is socket.socket
