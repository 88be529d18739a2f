"""The part of dCache's frontend (`/api/v1`) that event consumers use.

* `/api/v1/events...`: SSE channels and inotify subscriptions (see `sse` and
  `notify`), with dCache's status codes: 201 + Location for a new channel or
  subscription, 303 when a subscription merges into an existing one, 400 with
  dCache's reason for bad selectors, 404 for a channel that is gone, 401 for
  anonymous requests.
* `/api/v1/namespace/{path}[?children=true][&checksum=true]`: file attributes and
  directory listings, which the reference SSE client uses to emulate recursive
  watches.
* `/api/v1/user`: who the credentials identify (with home and root directories).

Errors carry dCache's body, `{"errors": [{"message", "status"}]}`, plus `"error"`.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import urllib.parse

from . import checksums, notify
from .auth import Authenticator, AuthError, Identity
from .door import REASONS, check_path
from .namespace import Namespace, Refused
from .sse import Registry, TooManyChannels

SELECTOR_PATH = re.compile(r"^/(.*[^/])?$")
MAX_CLIENT_ID = 256

SELECTOR_SCHEMA = {
    "$schema": "http://json-schema.org/draft-06/schema#",
    "title": "inotify selector",
    "description": "Which namespace events a subscription selects, like inotify_add_watch(2).",
    "type": "object",
    "properties": {
        "path": {"type": "string", "pattern": SELECTOR_PATH.pattern,
                 "description": "The file or directory to watch (not recursive)."},
        "flags": {"type": "array", "items": {"enum": list(notify.FLAGS)}, "uniqueItems": True,
                  "description": "Events to select (default: all), plus modifiers."},
    },
    "required": ["path"],
    "additionalProperties": False,
}
EVENT_SCHEMA = {
    "$schema": "http://json-schema.org/draft-06/schema#",
    "title": "inotify event",
    "type": "object",
    "properties": {
        "name": {"type": "string", "description": "The child concerned; absent for the watched object itself."},
        "cookie": {"type": "string", "description": "Shared by the IN_MOVED_FROM and IN_MOVED_TO of one rename."},
        "mask": {"type": "array", "minItems": 1, "maxItems": 2,
                 "items": {"enum": list(notify.EVENTS) + ["IN_ISDIR", "IN_IGNORED", "IN_Q_OVERFLOW",
                                                         "IN_UNMOUNT"]}},
    },
    "required": ["mask"],
}


class Fail(Exception):
    def __init__(self, status: int, message: str, headers=()):
        super().__init__(message)
        self.status = status
        self.headers = list(headers)


def _respond(start_response, status: int, body=None, headers=()) -> list[bytes]:
    data = b"" if body is None else json.dumps(body).encode()
    hdrs = [("Content-Length", str(len(data)))] + ([("Content-Type", "application/json")] if body is not None else [])
    start_response(f"{status} {REASONS.get(status, '')}".strip(), hdrs + list(headers))
    return [data]


def _error_body(status: int, message: str) -> dict:
    reason = REASONS.get(status, "")
    shown = message if status in (400, 429) else reason
    return {"errors": [{"message": shown, "status": str(status)}], "error": message}


class Frontend:
    def __init__(self, *, ns: Namespace, authn: Authenticator, registry: Registry, public_url: str):
        self.ns = ns
        self.authn = authn
        self.registry = registry
        self.public_url = public_url.rstrip("/")

    def __call__(self, environ, start_response):
        try:
            return self.route(environ, start_response)
        except Fail as e:
            return _respond(start_response, e.status, _error_body(e.status, str(e)), e.headers)
        except Refused as e:
            return _respond(start_response, e.status, _error_body(e.status, str(e)))

    # -- plumbing ---------------------------------------------------------
    def identity(self, environ, required: bool = True) -> Identity | None:
        try:
            ident = self.authn.authenticate(environ)
        except AuthError as e:
            raise Fail(401, str(e), [("WWW-Authenticate", 'Basic realm="panfaas"')]) from None
        if ident is None and required:
            raise Fail(401, "anonymous access not allowed", [("WWW-Authenticate", 'Basic realm="panfaas"')])
        return ident

    @staticmethod
    def body(environ, *, required: bool = False):
        try:
            size = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            raise Fail(400, "bad Content-Length") from None
        if size > 65536:
            raise Fail(400, "request body too large")
        raw = environ["wsgi.input"].read(size) if size else b""
        if not raw.strip():
            if required:
                raise Fail(400, "Missing JSON entity in POST request")
            return None
        try:
            return json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise Fail(400, f"request body is not JSON: {e}") from None

    def route(self, environ, start_response):
        method = environ["REQUEST_METHOD"]
        raw = environ.get("PATH_INFO", "")
        try:
            path = raw.encode("latin-1").decode("utf-8")
        except UnicodeError:
            raise Fail(400, "request path is not valid UTF-8") from None
        if not path.startswith("/api/v1/") and path != "/api/v1":
            raise Fail(404, f"no such resource: {path}")
        parts = [p for p in path[len("/api/v1"):].split("/") if p]   # PATH_INFO is decoded already
        query = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""), keep_blank_values=True)
        if parts[:1] == ["user"] and len(parts) == 1 and method == "GET":
            return self.user(environ, start_response)
        if parts[:1] == ["namespace"] and method == "GET":
            return self.namespace(environ, start_response, "/" + "/".join(parts[1:]), query)
        if parts[:1] == ["events"]:
            return self.events(environ, start_response, method, parts[1:], query)
        raise Fail(404, f"no such resource: {path}")

    # -- /user and /namespace ---------------------------------------------
    def user(self, environ, start_response):
        ident = self.identity(environ, required=False)
        if ident is None:
            return _respond(start_response, 200, {"status": "ANONYMOUS", "uid": -1, "gids": [], "username": None})
        return _respond(start_response, 200, {
            "status": "AUTHENTICATED", "uid": ident.uid, "gids": ident.gids, "username": ident.username,
            "homeDirectory": ident.home, "rootDirectory": ident.grant.root if ident.grant else ident.root})

    def _attributes(self, fs: str, st: os.stat_result, *, with_checksum: bool) -> dict:
        is_dir = stat.S_ISDIR(st.st_mode)
        out = {"fileType": "DIR" if is_dir else "REGULAR", "pnfsId": self.ns.pnfsid(fs),
               "mtime": int(st.st_mtime * 1000), "creationTime": int(st.st_ctime * 1000),
               "size": st.st_size, "mode": stat.S_IMODE(st.st_mode)}
        if not is_dir:
            out["fileLocality"] = "ONLINE"
            if with_checksum:
                values = checksums.load(fs)
                out["checksums"] = [{"type": k.upper(), "value": v} for k, v in sorted(values.items())]
        return out

    def namespace(self, environ, start_response, path: str, query: dict):
        ident = self.identity(environ)
        check_path(path)
        ns_path = ident.resolve(path)
        if not ident.visible(ns_path) or not ident.allows("READ_METADATA"):
            raise Fail(403, f"access to {path} is not allowed")
        fs = self.ns.fs_path(ns_path)
        try:
            st = os.stat(fs)
        except FileNotFoundError:
            raise Fail(404, f"{path} does not exist") from None
        flag = lambda k: query.get(k, ["false"])[-1].lower() == "true"  # noqa: E731
        out = self._attributes(fs, st, with_checksum=flag("checksum"))
        if flag("children") and stat.S_ISDIR(st.st_mode):
            if not ident.allows("LIST"):
                raise Fail(403, "macaroon does not allow LIST")
            children = []
            for entry in sorted(os.scandir(fs), key=lambda e: e.name):
                if entry.is_symlink() or not (entry.is_dir() or entry.is_file()):
                    continue
                child = ns_path.rstrip("/") + "/" + entry.name
                if ident.visible(child):
                    children.append({"fileName": entry.name,
                                     **self._attributes(entry.path, entry.stat(), with_checksum=flag("checksum"))})
            out["children"] = children
        return _respond(start_response, 200, out)

    # -- /events ----------------------------------------------------------
    def events(self, environ, start_response, method: str, parts: list[str], query: dict):
        ident = self.identity(environ)
        reg = self.registry
        if not parts:
            if method != "GET":
                raise Fail(405, f"{method} not allowed here")
            return _respond(start_response, 200, {"channels": {
                "maximumPerUser": reg.max_per_user,
                "lifetimeWhenDisconnected": {"minimum": 1, "maximum": int(reg.max_timeout),
                                             "default": int(reg.default_timeout)}}})
        if parts[0] == "eventTypes" and method == "GET":
            return self.event_types(start_response, parts[1:])
        if parts[0] != "channels":
            raise Fail(404, "no such resource")
        if len(parts) == 1:
            if method == "GET":
                if "client-id" in query:
                    cid = query["client-id"][-1][:MAX_CLIENT_ID] or None
                    urls = reg.ids_for(ident.uid, cid, filtered=True)
                else:
                    urls = reg.ids_for(ident.uid)
                return _respond(start_response, 200, urls)
            if method == "POST":
                meta = self.body(environ)
                if meta is not None and not isinstance(meta, dict):
                    raise Fail(400, "channel metadata must be a JSON object")
                cid = (meta or {}).get("client-id")
                if cid is not None and not isinstance(cid, str):
                    raise Fail(400, "'client-id' must be a string")
                try:
                    ch = reg.create(ident.uid, ident.username, (cid or "")[:MAX_CLIENT_ID] or None)
                except TooManyChannels as e:
                    raise Fail(429, f"Too Many Channels: {e}") from None
                return _respond(start_response, 201, None, [("Location", ch.url)])
            raise Fail(405, f"{method} not allowed here")
        ch = reg.get(parts[1])
        if ch is None:
            raise Fail(404, "No such channel")
        if ch.owner != ident.uid:
            raise Fail(403, "Access denied")
        if len(parts) == 2:
            return self.channel(environ, start_response, method, ch)
        if parts[2] != "subscriptions":
            raise Fail(404, "no such resource")
        if len(parts) == 3 and method == "GET":
            return _respond(start_response, 200, [ch.subscription_url(s) for s in ch.subscriptions])
        if len(parts) == 4 and method == "POST":
            return self.subscribe(environ, start_response, ident, ch, parts[3])
        if len(parts) == 5:
            watch = ch.subscriptions.get(parts[4]) if parts[3] == "inotify" else None
            if watch is None:
                raise Fail(404, "No such subscription")
            if method == "GET":
                return _respond(start_response, 200, watch.selector)
            if method == "DELETE":
                reg.hub.remove(watch)
                return _respond(start_response, 204)
        raise Fail(405, f"{method} not allowed here")

    def event_types(self, start_response, rest: list[str]):
        if not rest:
            return _respond(start_response, 200, ["inotify"])
        if rest[0] != "inotify" or len(rest) > 2:
            raise Fail(404, "No such event type")
        if len(rest) == 1:
            return _respond(start_response, 200,
                            {"description": "notification of namespace activity, modelled after inotify(7)"})
        schema = {"selector": SELECTOR_SCHEMA, "event": EVENT_SCHEMA}.get(rest[1])
        if schema is None:
            raise Fail(404, "No such event type")
        return _respond(start_response, 200, schema)

    def channel(self, environ, start_response, method: str, ch):
        reg = self.registry
        if method == "GET":
            if "text/event-stream" in environ.get("HTTP_ACCEPT", ""):
                start_response("200 OK", [("Content-Type", "text/event-stream"), ("Cache-Control", "no-cache"),
                                          ("X-Accel-Buffering", "no")])
                return ch.stream(environ.get("HTTP_LAST_EVENT_ID"), reg.keepalive)
            return _respond(start_response, 200, {"timeout": int(ch.timeout)})
        if method == "PATCH":
            mod = self.body(environ, required=True)
            timeout = mod.get("timeout") if isinstance(mod, dict) else None
            if not isinstance(timeout, int) or isinstance(timeout, bool):
                raise Fail(400, "'timeout' (seconds, an integer) is required")
            if timeout < 1:
                raise Fail(400, "Timeout shorter than minimum allowed")
            if timeout > reg.max_timeout:
                raise Fail(400, "Timeout longer than maximum allowed")
            ch.set_timeout(timeout)
            return _respond(start_response, 204)
        if method == "DELETE":
            reg.delete(ch)
            return _respond(start_response, 204)
        raise Fail(405, f"{method} not allowed on a channel")

    def subscribe(self, environ, start_response, ident: Identity, ch, kind: str):
        selector = self.body(environ, required=True)
        if kind != "inotify":
            raise Fail(400, f"Unknown event type: {kind}")
        if not isinstance(selector, dict):
            raise Fail(400, "Bad selector: Bad selector value: a JSON object is required")
        path = selector.get("path")
        if path is None:
            raise Fail(400, "Bad selector: Missing path")
        unknown = set(selector) - {"path", "flags"}
        if unknown:
            raise Fail(400, f"Bad selector: Bad selector value: unknown field {sorted(unknown)[0]!r}")
        if not isinstance(path, str) or not SELECTOR_PATH.match(path):
            raise Fail(400, f"Bad selector: Bad selector value: path {path!r} must match {SELECTOR_PATH.pattern}")
        supplied = selector.get("flags")
        try:
            events = notify.expand_flags(supplied)
        except notify.SelectorError as e:
            raise Fail(400, f"Bad selector: {e}") from None
        try:
            check_path(path)
        except Refused as e:
            raise Fail(400, f"Bad selector: {e}") from None
        ns_path = ident.resolve(path)
        if not ident.visible(ns_path):
            raise Fail(400, "Permission denied: Not allowed.")
        fs = self.ns.fs_path(ns_path)
        try:
            st = os.stat(fs)
        except FileNotFoundError:
            raise Fail(400, f"Not found: Problem with path: {path}") from None
        is_dir = stat.S_ISDIR(st.st_mode)
        flags = set(supplied or [])
        if "IN_ONLYDIR" in flags and not is_dir:
            raise Fail(400, "Failed condition: IN_ONLYDIR with REGULAR target")
        pnfsid = self.ns.pnfsid(fs)
        echo = {"path": path, **({"flags": supplied} if supplied is not None else {})}
        existing = next((w for w in ch.subscriptions.values() if w.pnfsid == pnfsid), None)
        if existing is not None:
            if "IN_MASK_ADD" in flags:
                merged = sorted(set(existing.selector.get("flags") or notify.EVENTS) | flags - {"IN_MASK_ADD"})
                existing.events = existing.events | events
                existing.selector = {"path": path, "flags": merged}
            else:
                existing.events = events
                existing.selector = echo
            existing.oneshot = "IN_ONESHOT" in flags
            return _respond(start_response, 303, None, [("Location", ch.subscription_url(existing.sub_id))])
        watch = notify.Watch(sub_id=secrets.token_urlsafe(18), pnfsid=pnfsid, ns_path=ns_path, is_dir=is_dir,
                             selector=echo, events=events, oneshot="IN_ONESHOT" in flags,
                             deliver=ch.deliver, visible=ident.visible)
        self.registry.subscribe(ch, watch)
        return _respond(start_response, 201, None, [("Location", ch.subscription_url(watch.sub_id))])
