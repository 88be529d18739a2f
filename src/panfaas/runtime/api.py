"""OpenWhisk's REST API (the subset in openapi.py), on aiohttp: the controller's paths,
status codes and bodies. Every error is `{"error": <message>, "code": <request id>}`.

    /api/v1/namespaces/{namespace}/actions[/{packageName}]/{actionName}   PUT GET DELETE POST(invoke)
    /api/v1/namespaces/{namespace}/activations[/{activationid}[/logs|/result]]
    /api/v1/namespaces/{namespace}/triggers/{triggerName}                 PUT GET DELETE POST(fire)
    /api/v1/namespaces/{namespace}/rules/{ruleName}                       PUT GET DELETE POST(status)
    /api/v1/namespaces/{namespace}/packages/{packageName}                 PUT GET DELETE
The feed action /whisk.system/messaging/kafkaFeed is built in; `_` is the caller's namespace.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging
import re
from collections.abc import Callable

from aiohttp import web
from prometheus_client import generate_latest

from . import errors
from .catalog import SYSTEM_NAMESPACE
from .entities import PYTHON_KINDS, action_summary
from .errors import ApiError
from .openapi import document
from .service import Runtime, new_id
from .store import summary

log = logging.getLogger("panfaas.runtime.api")

BLOCKING_WAIT_MS = 60000
MAX_PAYLOAD = 1024 * 1024          # invoke and fire bodies (whisk.limits.activation.payload.max)
MAX_ENTITY = 50 * 1024 * 1024      # PUT bodies: code up to OpenWhisk's 48 MB
MAX_LIST = 200
DEFAULT_LIST = 30
ACTIVATION_ID = re.compile(r"\A[0-9a-fA-F]{32}\Z")
PUBLIC = ("/healthz", "/metrics", "/api/v1", "/api/v1/api-docs")
BASE = "/api/v1/namespaces/{namespace}"


def error(status: int, message: str, code: str) -> web.Response:
    return web.json_response({"error": message, "code": code}, status=status, headers={"x-request-id": code})


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def ok(body, status: int = 200, headers: dict | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers, dumps=dumps)


class Api:
    def __init__(self, runtime: Runtime, namespaces: dict[str, str]):
        """namespaces: namespace -> 'uuid:key'."""
        self.rt = runtime
        self.creds: dict[str, tuple[str, str]] = {}  # uuid -> (key, namespace)
        for ns, auth in namespaces.items():
            uid, _, key = auth.partition(":")
            self.creds[uid] = (key, ns)

    # -- plumbing ---------------------------------------------------------
    def authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if not header:
            raise ApiError(401, errors.AUTH_MISSING)
        if header[:6].lower() == "basic ":
            try:
                uid, _, key = base64.b64decode(header[6:], validate=True).decode().partition(":")
            except (binascii.Error, UnicodeDecodeError, ValueError):
                uid, key = "", ""
            known = self.creds.get(uid)
            if known and hmac.compare_digest(known[0].encode(), key.encode()):
                return known[1]
        raise ApiError(401, errors.AUTH_INVALID)

    def namespace(self, request: web.Request, system_ok: bool = False) -> str:
        ns = request.match_info["namespace"]
        caller = request["ns"]
        if ns in ("_", caller):
            return caller
        if ns == SYSTEM_NAMESPACE and (system_ok or request.method == "GET"):
            return ns
        raise ApiError(403, errors.NOT_AUTHORIZED)

    @staticmethod
    def flag(request: web.Request, name: str, default: bool = False) -> bool:
        raw = request.query.get(name)
        if raw is None or raw == "":
            return default
        if raw.lower() in ("true", "false"):
            return raw.lower() == "true"
        raise ApiError(400, f"The query parameter '{name}' was malformed:\n'{raw}' is not a valid Boolean value")

    @staticmethod
    def integer(request: web.Request, name: str, collection: str,
                invalid: Callable[[str], ApiError] | None = None) -> int | None:
        """The query parameter `name` as an int (None if absent); else 400, OpenWhisk's message
        for `collection`, or `invalid(raw)`'s."""
        raw = request.query.get(name)
        if raw is None or raw == "":
            return None
        try:
            return int(raw)
        except ValueError:
            raise (invalid(raw) if invalid else errors.not_an_integer(collection, raw)) from None

    def paging(self, request: web.Request, collection: str) -> tuple[int, int]:
        limit = self.integer(request, "limit", collection)
        skip = self.integer(request, "skip", collection) or 0
        if limit is None:
            limit = DEFAULT_LIST
        elif limit == 0:
            limit = MAX_LIST
        elif not 0 < limit <= MAX_LIST:
            raise errors.limit_out_of_range(collection, limit, MAX_LIST)
        if skip < 0:
            raise errors.skip_out_of_range(collection, skip)
        return limit, skip

    async def body(self, request: web.Request, *, required: bool, limit: int) -> dict:
        raw = await request.read()
        if len(raw) > limit:
            raise errors.too_big("Request", len(raw), limit)
        if not raw.strip():
            if required:
                raise errors.malformed("a JSON object is required")
            return {}
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise errors.malformed(str(e)) from None
        if not isinstance(data, dict):
            raise errors.malformed("expected a JSON object")
        return data

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        rid = new_id()
        request["rid"] = rid
        try:
            if request.path not in PUBLIC:
                request["ns"] = self.authenticate(request)
            return await handler(request)
        except ApiError as e:
            return error(e.status, e.message, rid)
        except web.HTTPException as e:
            if e.status >= 400:
                return error(e.status, {404: errors.NOT_FOUND, 405: "Method not allowed."}.get(e.status, e.reason),
                             rid)
            raise
        except Exception:
            log.exception("internal error", extra={"fields": {"path": request.path, "code": rid}})
            return error(500, "Internal server error", rid)

    def routes(self, app: web.Application) -> None:
        r = app.router
        r.add_get("/healthz", self.healthz)
        r.add_get("/metrics", self.metrics)
        r.add_get("/api/v1", self.info)
        r.add_get("/api/v1/api-docs", self.api_docs)
        r.add_get("/api/v1/namespaces", self.list_namespaces)
        r.add_get(BASE + "/limits", self.limits)
        for kind in ("actions", "triggers", "rules", "packages"):
            r.add_get(f"{BASE}/{kind}", self.lister(kind))
        r.add_get(BASE + "/actions/{packageName}/", self.list_package_actions)
        for path in ("/actions/{actionName}", "/actions/{packageName}/{actionName}"):
            r.add_put(BASE + path, self.put_action)
            r.add_get(BASE + path, self.get_action)
            r.add_delete(BASE + path, self.delete_action)
            r.add_post(BASE + path, self.invoke)
        r.add_put(BASE + "/triggers/{triggerName}", self.put_trigger)
        r.add_get(BASE + "/triggers/{triggerName}", self.get_trigger)
        r.add_delete(BASE + "/triggers/{triggerName}", self.delete_trigger)
        r.add_post(BASE + "/triggers/{triggerName}", self.fire)
        r.add_put(BASE + "/rules/{ruleName}", self.put_rule)
        r.add_get(BASE + "/rules/{ruleName}", self.get_rule)
        r.add_delete(BASE + "/rules/{ruleName}", self.delete_rule)
        r.add_post(BASE + "/rules/{ruleName}", self.rule_status)
        r.add_put(BASE + "/packages/{packageName}", self.put_package)
        r.add_get(BASE + "/packages/{packageName}", self.get_package)
        r.add_delete(BASE + "/packages/{packageName}", self.delete_package)
        r.add_get(BASE + "/activations", self.activations)
        r.add_get(BASE + "/activations/{activationid}", self.activation)
        r.add_get(BASE + "/activations/{activationid}/logs", self.activation_logs)
        r.add_get(BASE + "/activations/{activationid}/result", self.activation_result)

    # -- service ----------------------------------------------------------
    async def healthz(self, _request):
        return ok({"status": "ok", "feeds": len(self.rt.feeds.feeds), "running": len(self.rt.running)})

    async def metrics(self, _request):
        return web.Response(body=generate_latest(self.rt.metrics.registry), content_type="text/plain")

    async def info(self, _request):
        return ok({"description": "panfaas: OpenWhisk's REST API and action protocol on one machine",
                   "api_paths": ["/api/v1"], "api_version": "1.0.0", "api_version_path": "v1",
                   "swagger_paths": {"api-docs": "/api-docs"},
                   "runtimes": {"python": [{"kind": k} for k in PYTHON_KINDS],
                                "blackbox": [{"kind": "blackbox"}], "sequence": [{"kind": "sequence"}]},
                   "limits": self._limits()})

    async def api_docs(self, _request):
        return ok(document())

    async def list_namespaces(self, request):
        return ok([request["ns"]])

    def _limits(self) -> dict:
        ranges = self.rt.catalog.ranges
        return {**self.rt.throttle.limits(),
                "minActionMemory": ranges["memory"][0] * 1048576, "maxActionMemory": ranges["memory"][1] * 1048576,
                "minActionTimeout": ranges["timeout"][0], "maxActionTimeout": ranges["timeout"][1],
                "minActionLogSize": ranges["logs"][0] * 1048576, "maxActionLogSize": ranges["logs"][1] * 1048576,
                "maxActionConcurrency": ranges["concurrency"][1], "maxActionInstances": 0}

    async def limits(self, request):
        self.namespace(request)
        return ok(self._limits())

    # -- collections ------------------------------------------------------
    def lister(self, kind: str):
        async def handler(request):
            ns = self.namespace(request)
            return self._list(request, ns, kind)
        handler.__name__ = f"list_{kind}"
        return handler

    def _list(self, request, ns: str, kind: str, prefix: str | None = None):
        limit, skip = self.paging(request, kind)
        if self.flag(request, "count"):
            return ok({kind: max(self.rt.catalog.count(ns, kind, prefix) - skip, 0)})
        docs = self.rt.catalog.list(ns, kind, limit, skip, prefix)
        if kind == "actions":
            docs = [action_summary(d) for d in docs]
        return ok(docs)

    async def list_package_actions(self, request):
        ns = self.namespace(request)
        pkg = request.match_info["packageName"]
        pdoc = self.rt.catalog.require(ns, "packages", pkg)
        if pdoc.get("binding"):
            ns, pkg = pdoc["binding"]["namespace"], pdoc["binding"]["name"]
        return self._list(request, ns, "actions", prefix=pkg + "/")

    @staticmethod
    def fullname(request) -> str:
        pkg = request.match_info.get("packageName")
        name = request.match_info["actionName"]
        return f"{pkg}/{name}" if pkg else name

    # -- actions ----------------------------------------------------------
    async def put_action(self, request):
        ns = self.namespace(request)
        body = await self.body(request, required=True, limit=MAX_ENTITY)
        return ok(self.rt.catalog.put_action(ns, self.fullname(request), body, self.flag(request, "overwrite")))

    async def get_action(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.get_action(ns, self.fullname(request), self.flag(request, "code", True)))

    async def delete_action(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.delete_action(ns, self.fullname(request)))

    async def invoke(self, request):
        ns = self.namespace(request, system_ok=True)
        blocking = self.flag(request, "blocking")
        result_only = self.flag(request, "result")
        wait = self.integer(request, "timeout", "actions")
        if wait is None:
            wait = BLOCKING_WAIT_MS
        elif not 0 < wait <= BLOCKING_WAIT_MS:
            raise errors.timeout_invalid(BLOCKING_WAIT_MS)
        payload = await self.body(request, required=False, limit=MAX_PAYLOAD)
        aid, record = await self.rt.invoke(request["ns"], self.fullname(request), payload, blocking=blocking,
                                           owner=ns)
        headers = {"x-openwhisk-activation-id": aid}
        if not blocking:
            return ok({"activationId": aid}, 202, headers)
        try:
            rec = await asyncio.wait_for(asyncio.shield(record), wait / 1000.0)
        except TimeoutError:
            return ok({"activationId": aid}, 202, headers)
        code = rec["response"]["statusCode"]
        status = 200 if code == 0 else 500 if code == 3 else 502
        return ok(rec["response"]["result"] if result_only else rec, status, headers)

    # -- triggers ---------------------------------------------------------
    async def put_trigger(self, request):
        ns = self.namespace(request)
        body = await self.body(request, required=False, limit=MAX_ENTITY)
        name = request.match_info["triggerName"]
        return ok(self.rt.catalog.put_trigger(ns, name, body, self.flag(request, "overwrite")))

    async def get_trigger(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.get_trigger(ns, request.match_info["triggerName"]))

    async def delete_trigger(self, request):
        ns = self.namespace(request)
        name = request.match_info["triggerName"]
        doc = self.rt.catalog.delete_trigger(ns, name)
        # The provider stops a feed whose trigger is gone (it would get 404 on the next fire).
        await self.rt.feeds.delete(ns, name)
        self.rt.catalog.delete_feed(ns, name)
        return ok(doc)

    async def fire(self, request):
        ns = self.namespace(request)
        payload = await self.body(request, required=False, limit=MAX_PAYLOAD)
        status, aid = await self.rt.fire(ns, request.match_info["triggerName"], payload)
        if status == 204:
            return web.Response(status=204)
        return ok({"activationId": aid}, 202, {"x-openwhisk-activation-id": aid})

    # -- rules ------------------------------------------------------------
    async def put_rule(self, request):
        ns = self.namespace(request)
        body = await self.body(request, required=True, limit=MAX_ENTITY)
        return ok(self.rt.catalog.put_rule(ns, request.match_info["ruleName"], body, self.flag(request, "overwrite")))

    async def get_rule(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.get_rule(ns, request.match_info["ruleName"]))

    async def delete_rule(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.delete_rule(ns, request.match_info["ruleName"]))

    async def rule_status(self, request):
        ns = self.namespace(request)
        body = await self.body(request, required=True, limit=MAX_PAYLOAD)
        self.rt.catalog.set_rule_status(ns, request.match_info["ruleName"], body.get("status"))
        return ok({})

    # -- packages ---------------------------------------------------------
    async def put_package(self, request):
        ns = self.namespace(request)
        body = await self.body(request, required=False, limit=MAX_ENTITY)
        readable = {SYSTEM_NAMESPACE, ns}
        return ok(self.rt.catalog.put_package(ns, request.match_info["packageName"], body,
                                              self.flag(request, "overwrite"), readable))

    async def get_package(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.get_package(ns, request.match_info["packageName"]))

    async def delete_package(self, request):
        ns = self.namespace(request)
        return ok(self.rt.catalog.delete_package(ns, request.match_info["packageName"], self.flag(request, "force")))

    # -- activations ------------------------------------------------------
    async def activations(self, request):
        ns = self.namespace(request)
        limit, skip = self.paging(request, "activations")
        since, upto = (self.integer(request, k, "activations", errors.bad_epoch) for k in ("since", "upto"))
        name = request.query.get("name", "").strip() or None
        if name is not None and (len(name.strip("/").split("/")) > 2 or not name.strip("/")):
            raise ApiError(400, f"Parameter may be a 'simple' name or 'package-name/simple' name: {name}")
        name = name.strip("/") if name else None
        docs, count = self.flag(request, "docs"), self.flag(request, "count")
        if count and docs:
            raise ApiError(400, errors.DOCS_WITH_COUNT)
        store = self.rt.store
        if count:
            n = await asyncio.to_thread(store.count_activations, ns, name=name, skip=skip, since=since, upto=upto)
            return ok({"activations": n})
        recs = await asyncio.to_thread(store.activations, ns, name=name, limit=limit, skip=skip, since=since,
                                       upto=upto)
        return ok(recs if docs else [summary(d) for d in recs])

    async def _activation(self, request) -> dict:
        ns = self.namespace(request)
        aid = request.match_info["activationid"]
        if not ACTIVATION_ID.match(aid):
            raise ApiError(400, errors.ILLEGAL_ACTIVATION_ID)
        doc = await asyncio.to_thread(self.rt.store.activation, ns, aid.lower())
        if doc is None:
            raise errors.not_found()
        return doc

    async def activation(self, request):
        return ok(await self._activation(request))

    async def activation_logs(self, request):
        return ok({"logs": (await self._activation(request))["logs"]})

    async def activation_result(self, request):
        return ok((await self._activation(request))["response"])
