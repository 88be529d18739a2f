"""The all-in-one storage element: a WebDAV door that behaves like dCache's.

A WSGI middleware (`Door`) in front of wsgidav does what dCache's door does
before a request reaches the namespace: authentication (basic auth, or a
macaroon as `Authorization: Bearer` or `?authz=`), macaroon requests
(`POST` with `Content-Type: application/macaroon-request`), and the
caveat checks. wsgidav serves the WebDAV methods from a directory under the
state directory; its resources report completed transfers, which become
dCache-format billing messages on Kafka (`billing` by default).
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import hmac
import json
import logging
import os
import posixpath
import secrets
import signal
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from wsgidav.fs_dav_provider import FileResource, FilesystemProvider
from wsgidav.wsgidav_app import WsgiDAVApp

from . import config as cfg
from . import events, macaroons
from .kafka import producer as kafka_producer

log = logging.getLogger("panfaas.storage")

DEFAULTS: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 2880},
    "public-url": None,                  # how clients reach the door; default http://host:port
    "data-dir": None,                    # required
    "users-file": None,                  # required: {users: {name: {password, uid, gid}}}
    "macaroons": {"root-key-file": None, "default-lifetime": "P1D", "max-lifetime": "P7D",
                  "accept-over-unencrypted-channel": True},
    "kafka": {"bootstrap": None, "topic": "billing"},
    "pool": {"name": "pool1", "domain": "aioDomain", "door": "WebDAV-aio",
             "storage-info": "aio:disk@osm"},
    "threads": 32,
    "log-level": "info",
}


@dataclasses.dataclass
class Identity:
    username: str
    uid: int
    gids: list[int]
    client: str
    grant: macaroons.Grant | None = None


def json_response(start_response, status: int, body: dict, headers=()) -> list[bytes]:
    data = json.dumps(body).encode()
    reason = {200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
              404: "Not Found", 413: "Payload Too Large", 500: "Internal Server Error",
              503: "Service Unavailable"}.get(status, "")
    start_response(f"{status} {reason}", [("Content-Type", "application/json"),
                                          ("Content-Length", str(len(data))), *headers])
    return [data]


class BillingEmitter:
    """Publishes billing messages from WSGI worker threads via one asyncio loop."""

    def __init__(self, bootstrap: str | None, topic: str):
        self.topic = topic
        self.bootstrap = bootstrap
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="billing", daemon=True)
        self.producer = None

    def start(self) -> None:
        self.thread.start()
        if self.bootstrap:
            async def start():
                self.producer = kafka_producer(self.bootstrap)
                await self.producer.start()
            asyncio.run_coroutine_threadsafe(start(), self.loop).result(30)

    def emit(self, *messages: dict, timeout: float = 10.0) -> None:
        """Send in order and wait for the broker's ack (key null, as dCache does)."""
        if not self.producer:
            return

        async def send():
            futs = [await self.producer.send(self.topic, json.dumps(m).encode()) for m in messages]
            await asyncio.gather(*futs)

        asyncio.run_coroutine_threadsafe(send(), self.loop).result(timeout)

    def stop(self) -> None:
        if self.producer:
            asyncio.run_coroutine_threadsafe(self.producer.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def pnfsid_for(file_path: str) -> str:
    """A dCache-style PNFS-ID that stays with the file across renames.

    Kept in a `user.pnfsid` extended attribute; where the filesystem has none,
    derived from device and inode (which a rename keeps too).
    """
    try:
        return os.getxattr(file_path, "user.pnfsid").decode()
    except OSError:
        pass
    pnfsid = "0000" + secrets.token_hex(16).upper()
    try:
        os.setxattr(file_path, "user.pnfsid", pnfsid.encode())
        return pnfsid
    except OSError:
        st = os.stat(file_path)
        return f"0000{st.st_dev:08X}{st.st_ino:024X}"


class AioFileResource(FileResource):
    def begin_write(self, *, content_type=None):
        self._write_started = time.monotonic()
        return super().begin_write(content_type=content_type)

    def end_write(self, *, with_errors):
        if with_errors:
            return
        self.provider.on_upload(self, time.monotonic() - getattr(self, "_write_started", time.monotonic()))


class AioProvider(FilesystemProvider):
    """wsgidav's filesystem provider (which already refuses symlinks out of its
    root), with file resources that report completed uploads."""

    def __init__(self, root: str, on_transfer: Callable[..., None]):
        super().__init__(root, readonly=False)
        self.on_transfer = on_transfer

    def get_resource_inst(self, path: str, environ: dict):
        res = super().get_resource_inst(path, environ)
        if isinstance(res, FileResource):
            return AioFileResource(path, environ, res._file_path)
        return res

    def on_upload(self, res: FileResource, seconds: float) -> None:
        self.on_transfer(res, seconds)


class Door:
    """WSGI middleware: authentication, macaroons, caveat checks; then wsgidav."""

    def __init__(self, conf: dict, dav_app: Callable, emitter: BillingEmitter):
        self.conf = conf
        self.dav = dav_app
        self.emitter = emitter
        self.users = load_users(conf["users-file"])
        mconf = conf["macaroons"]
        key = Path(mconf["root-key-file"]).read_bytes().strip()
        self.authority = macaroons.MacaroonAuthority(
            key, default_lifetime=macaroons.parse_duration(mconf["default-lifetime"]),
            max_lifetime=macaroons.parse_duration(mconf["max-lifetime"]))
        self.public_url = (conf.get("public-url") or
                           f"http://{conf['listen']['host']}:{conf['listen']['port']}").rstrip("/")

    # -- identity ---------------------------------------------------------
    def authenticate(self, environ: dict) -> Identity | None:
        client = environ.get("REMOTE_ADDR", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        token = None
        if auth.startswith("Basic "):
            try:
                user, _, password = base64.b64decode(auth[6:]).decode().partition(":")
            except Exception:
                raise macaroons.MacaroonError("malformed basic authorization") from None
            entry = self.users.get(user)
            if not entry or not hmac.compare_digest(str(entry["password"]), password):
                raise macaroons.MacaroonError("invalid username or password")
            return Identity(user, int(entry["uid"]), [int(entry["gid"])], client)
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
        else:
            qs = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            token = (qs.get("authz") or [None])[0]
        if not token:
            return None
        grant = self.authority.verify(token)
        return Identity(grant.username, grant.uid, grant.gids, client, grant)

    # -- WSGI -------------------------------------------------------------
    def __call__(self, environ: dict, start_response):
        method = environ["REQUEST_METHOD"]
        path = environ.get("PATH_INFO", "/") or "/"
        if path == "/healthz" and method == "GET":
            return json_response(start_response, 200, {"status": "ok"})
        segments = path.split("/")
        if any(s in ("..", ".") for s in segments) or "\x00" in path:
            return json_response(start_response, 400, {"error": "path traversal refused"})
        try:
            ident = self.authenticate(environ)
        except macaroons.MacaroonError as e:
            return json_response(start_response, 401, {"error": str(e)},
                                 [("WWW-Authenticate", 'Basic realm="panfaas"')])
        if ident is None:
            return json_response(start_response, 401, {"error": "authentication required"},
                                 [("WWW-Authenticate", 'Basic realm="panfaas"')])
        grant = ident.grant
        ns_path = grant.resolve(path) if grant else posixpath.normpath(path)
        if grant:
            if not grant.allows_ip(ident.client):
                return json_response(start_response, 403, {"error": "macaroon not valid for this client address"})
            if not grant.allows_path(ns_path):
                return json_response(start_response, 403, {"error": f"macaroon does not allow access to {path}"})
        ctype = environ.get("CONTENT_TYPE", "").split(";")[0].strip()
        if method == "POST" and ctype == "application/macaroon-request":
            return self.request_macaroon(environ, start_response, ident, path, ns_path)
        if grant:
            denied = self.check_activity(environ, grant, method, path, ns_path)
            if denied:
                return json_response(start_response, denied[0], {"error": denied[1]})
            environ["PATH_INFO"] = ns_path
        environ["panfaas.identity"] = ident
        environ["wsgidav.auth.user_name"] = ident.username
        return self.dav(environ, start_response)

    def check_activity(self, environ, grant, method, path, ns_path) -> tuple[int, str] | None:
        needed = macaroons.METHOD_ACTIVITY.get(method)
        if needed is None:
            return 403, f"method {method} not allowed with a macaroon"
        if not grant.within_path(ns_path) and method != "PROPFIND":
            return 403, f"macaroon does not allow access to {path}"
        if not grant.allows(needed):
            return 403, f"macaroon does not allow {needed}"
        if method == "PUT":
            if grant.max_upload is not None:
                length = int(environ.get("CONTENT_LENGTH") or 0)
                if length > grant.max_upload:
                    return 413, f"upload of {length} bytes exceeds max-upload {grant.max_upload}"
            target = os.path.join(self.conf["data-dir"], ns_path.lstrip("/"))
            if os.path.exists(target) and not grant.allows("DELETE"):
                return 403, "overwriting needs the DELETE activity"
        return None

    def request_macaroon(self, environ, start_response, ident: Identity, path: str, ns_path: str):
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
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
        except (ValueError, json.JSONDecodeError) as e:
            return json_response(start_response, 400, {"error": f"bad macaroon request: {e}"})
        grant = ident.grant
        if grant:
            # Relative to what the existing macaroon already confines it to.
            base = macaroons._join(grant.root, grant.path) if grant.path != "/" else grant.root
            rel = ns_path[len(base.rstrip("/")):] if ns_path.startswith(base.rstrip("/") + "/") else ""
            if not grant.within_path(ns_path):
                return json_response(start_response, 403, {"error": "macaroon does not allow access to " + path})
            inherited, rel_path = grant.caveats, rel
        else:
            inherited, rel_path = [], ns_path
        try:
            token = self.authority.mint(uid=ident.uid, gids=ident.gids, username=ident.username,
                                        path=rel_path, caveats=caveats, validity=validity,
                                        inherited=inherited)
        except macaroons.MacaroonError as e:
            return json_response(start_response, e.status, {"error": str(e)})
        target = self.public_url + urllib.parse.quote(path)
        base = self.public_url + "/"
        return json_response(start_response, 200, {
            "macaroon": token,
            "uri": {"targetWithMacaroon": f"{target}?authz={token}",
                    "baseWithMacaroon": f"{base}?authz={token}",
                    "target": target, "base": base}})

    # -- billing ----------------------------------------------------------
    def on_transfer(self, res: FileResource, seconds: float) -> None:
        environ = res.environ
        ident: Identity = environ.get("panfaas.identity") or Identity("nobody", 65534, [65534], "")
        pool = self.conf["pool"]
        size = os.path.getsize(res._file_path)
        session = f"door:{pool['door']}@{pool['domain']}:{secrets.token_urlsafe(8)}"
        path = res.path if res.path.startswith("/") else "/" + res.path
        transfer = events.billing_transfer(
            path=path, pnfsid=pnfsid_for(res._file_path), size=size, is_write=True,
            client=ident.client, client_port=int(environ.get("REMOTE_PORT") or 0),
            user=ident.username, uid=ident.uid, gid=(ident.gids or [0])[0], session=session,
            transfer_ms=int(seconds * 1000), cell=pool["name"], domain=pool["domain"],
            door=pool["door"], storage_info=pool["storage-info"])
        request = events.billing_request(transfer, user=ident.username, uid=ident.uid,
                                         gid=(ident.gids or [0])[0], client=ident.client,
                                         door=pool["door"], domain=pool["domain"],
                                         session_ms=int(seconds * 1000))
        try:
            self.emitter.emit(transfer, request)
        except Exception as e:  # the upload itself succeeded; say loudly that its event did not
            log.error("billing event not published", extra={"fields": {"path": path, "error": repr(e)}})
        log.info("upload", extra={"fields": {"path": path, "size": size, "user": ident.username}})


def load_users(path: str) -> dict:
    data = cfg.load_yaml(path) or {}
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not users:
        raise cfg.ConfigError(f"{path}: expected 'users:' with at least one user")
    for name, u in users.items():
        if not isinstance(u, dict) or not {"password", "uid", "gid"} <= set(u):
            raise cfg.ConfigError(f"{path}: user '{name}' needs password, uid and gid")
    return users


def build_app(conf: dict, emitter: BillingEmitter) -> Door:
    for key in ("data-dir", "users-file"):
        if not conf.get(key):
            raise cfg.ConfigError(f"storage: missing required setting '{key}'")
    if not conf["macaroons"].get("root-key-file"):
        raise cfg.ConfigError("storage: missing required setting 'macaroons.root-key-file'")
    Path(conf["data-dir"]).mkdir(parents=True, exist_ok=True)
    door_ref: dict = {}
    provider = AioProvider(conf["data-dir"], lambda res, s: door_ref["door"].on_transfer(res, s))
    dav = WsgiDAVApp({
        "provider_mapping": {"/": provider},
        "simple_dc": {"user_mapping": {"*": True}},  # the Door authenticates
        "http_authenticator": {"accept_basic": False, "accept_digest": False,
                               "default_to_digest": False},
        "verbose": 1, "logging": {"enable": False, "enable_loggers": []},
        "dir_browser": {"enable": True},
        "lock_storage": True, "property_manager": True,
    })
    door = Door(conf, dav, emitter)
    door_ref["door"] = door
    return door


def serve(conf_path: str | None) -> int:
    from cheroot import wsgi

    from . import log as plog
    conf = cfg.load("storage", conf_path, DEFAULTS)
    plog.setup("storage", conf["log-level"])
    emitter = BillingEmitter(conf["kafka"]["bootstrap"], conf["kafka"]["topic"])
    app = build_app(conf, emitter)
    emitter.start()
    host, port = conf["listen"]["host"], int(conf["listen"]["port"])
    server = wsgi.Server((host, port), app, numthreads=int(conf["threads"]),
                         server_name="panfaas-storage")
    server.max_request_body_size = 0
    stop = threading.Event()

    def on_signal(signum, _frame):
        log.info("shutting down", extra={"fields": {"signal": signum}})
        stop.set()
        threading.Thread(target=server.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    log.info("listening", extra={"fields": {"url": app.public_url, "data": conf["data-dir"]}})
    try:
        server.start()
    finally:
        emitter.stop()
    return 0
