"""OpenWhisk's REST API (a subset), on aiohttp. Paths, status codes and bodies as the controller's.

    /api/v1/namespaces/{ns}/actions[/{pkg}/{name}]   PUT GET DELETE POST(invoke)
    /api/v1/namespaces/{ns}/activations[/{id}[/logs|/result]]
    /api/v1/namespaces/{ns}/triggers[/{name}]        PUT GET DELETE POST(fire)
    /api/v1/namespaces/{ns}/rules[/{name}]           PUT GET DELETE POST(status)
    /api/v1/namespaces/{ns}/packages[/{name}]        PUT GET DELETE
The feed action /whisk.system/messaging/kafkaFeed is built in.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import json
import logging

from aiohttp import web

from . import feeds
from .service import ApiError, Runtime, bump, new_id, now_ms

log = logging.getLogger("panfaas.runtime.api")

BLOCKING_WAIT_MS = 60000
MAX_PAYLOAD = 1024 * 1024


def error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message, "code": new_id()[:16]}, status=status)


class Api:
    def __init__(self, runtime: Runtime, namespaces: dict[str, str]):
        self.rt = runtime
        self.keys = {}  # "uuid:key" -> namespace
        for ns, auth in namespaces.items():
            self.keys[auth] = ns

    # -- plumbing ---------------------------------------------------------
    def authenticate(self, request: web.Request) -> str:
        header = request.headers.get("Authorization", "")
        if header.startswith("Basic "):
            try:
                cred = base64.b64decode(header[6:], validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                cred = ""
            for key, ns in self.keys.items():
                if hmac.compare_digest(key, cred):
                    return ns
        raise ApiError(401, "The supplied authentication is invalid.")

    def namespace(self, request: web.Request, caller: str) -> str:
        ns = request.match_info["ns"]
        if ns in ("_", caller):
            return caller
        raise ApiError(403, "The supplied authentication is not authorized to access this resource.")

    async def body(self, request: web.Request, required: bool = False) -> dict:
        raw = await request.read()
        if len(raw) > MAX_PAYLOAD:
            raise ApiError(413, f"The request content exceeds the maximum allowed size of {MAX_PAYLOAD} bytes.")
        if not raw.strip():
            if required:
                raise ApiError(400, "The request content was malformed: a JSON object is required.")
            return {}
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            raise ApiError(400, f"The request content was malformed: {e}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "The request content was malformed: expected a JSON object.")
        return data

    @web.middleware
    async def middleware(self, request: web.Request, handler):
        try:
            if request.path in ("/healthz", "/api/v1", "/metrics") or request.path.startswith("/api/v1/api-docs"):
                return await handler(request)
            request["ns"] = self.authenticate(request)
            return await handler(request)
        except ApiError as e:
            return error(e.status, e.message)
        except web.HTTPException as e:
            if e.status >= 400:
                return error(e.status, {404: "The requested resource does not exist.",
                                        405: "Method not allowed."}.get(e.status, e.reason))
            raise
        except Exception:
            log.exception("internal error")
            return error(500, "An internal server error occurred.")

    def routes(self, app: web.Application) -> None:
        r = app.router
        base = "/api/v1/namespaces/{ns}"
        r.add_get("/healthz", self.healthz)
        r.add_get("/api/v1", self.info)
        r.add_get("/api/v1/namespaces", self.list_namespaces)
        for kind in ("actions", "triggers", "rules", "packages"):
            r.add_get(f"{base}/{kind}", self.make_list(kind))
            r.add_get(f"{base}/{kind}/", self.make_list(kind))
        r.add_route("*", base + "/actions/{name:.+}", self.action)
        r.add_route("*", base + "/triggers/{name}", self.trigger)
        r.add_route("*", base + "/rules/{name}", self.rule)
        r.add_route("*", base + "/packages/{name}", self.package)
        r.add_get(base + "/activations", self.activations)
        r.add_get(base + "/activations/{id}", self.activation)
        r.add_get(base + "/activations/{id}/{part:logs|result}", self.activation)

    # -- handlers ---------------------------------------------------------
    async def healthz(self, _request):
        return web.json_response({"status": "ok"})

    async def info(self, _request):
        return web.json_response({"description": "panfaas embedded OpenWhisk-compatible runtime",
                                  "api_paths": ["/api/v1"], "build": "panfaas"})

    async def list_namespaces(self, request):
        return web.json_response([request["ns"]])

    def make_list(self, kind: str):
        async def handler(request):
            ns = self.namespace(request, request["ns"])
            limit = int(request.query.get("limit", 30) or 30)
            skip = int(request.query.get("skip", 0) or 0)
            docs = self.rt.store.list(ns, kind)
            return web.json_response(docs[skip:skip + limit] if limit else docs[skip:])
        return handler

    async def action(self, request: web.Request):
        caller = request["ns"]
        ns_raw, name = request.match_info["ns"], request.match_info["name"]
        if ns_raw == "whisk.system" and name == "messaging/kafkaFeed" and request.method == "POST":
            return await self.kafka_feed(request, caller)
        ns = self.namespace(request, caller)
        if request.method == "PUT":
            body = await self.body(request, required=True)
            doc = self.rt.put_entity(ns, "actions", name, body, request.query.get("overwrite") == "true")
            return web.json_response(doc)
        if request.method == "GET":
            return web.json_response(self.rt.get_entity(ns, "actions", name))
        if request.method == "DELETE":
            doc = self.rt.get_entity(ns, "actions", name)
            self.rt.store.delete(ns, "actions", name)
            return web.json_response(doc)
        if request.method == "POST":
            args = await self.body(request)
            return await self.invoke(request, ns, name, args)
        raise ApiError(405, "Method not allowed.")

    async def invoke(self, request, ns, name, args):
        blocking = request.query.get("blocking") == "true"
        result_only = request.query.get("result") == "true"
        blocking = blocking or result_only
        aid, task = await self.rt.invoke(ns, name, args)
        headers = {"x-openwhisk-activation-id": aid}
        if not blocking:
            return web.json_response({"activationId": aid}, status=202, headers=headers)
        wait = min(int(request.query.get("timeout", BLOCKING_WAIT_MS)), BLOCKING_WAIT_MS) / 1000.0
        try:
            rec = await asyncio.wait_for(asyncio.shield(task), wait)
        except TimeoutError:
            return web.json_response({"activationId": aid}, status=202, headers=headers)
        code = rec["statusCode"]
        status = 200 if code == 0 else 500 if code == 3 else 502
        body = rec["response"]["result"] if result_only else rec
        return web.json_response(body, status=status, headers=headers)

    async def kafka_feed(self, request, caller):
        args = await self.body(request, required=True)
        event = args.get("lifecycleEvent")
        tname = str(args.get("triggerName", ""))
        parts = tname.strip("/").split("/")
        if len(parts) != 2:
            raise ApiError(400, "triggerName must be /namespace/name")
        tns = caller if parts[0] == "_" else parts[0]
        if tns != caller:
            raise ApiError(403, "The supplied authentication is not authorized to access this resource.")
        trigger = parts[1]
        start = now_ms()
        result: dict
        status = 200
        try:
            if event == "CREATE":
                self.rt.get_entity(tns, "triggers", trigger)
                conf = feeds.validate(args)
                await self.rt.feeds.create(tns, trigger, conf)
                self.rt.store.put(tns, "feeds", trigger, {"trigger": trigger, "config": conf}, now_ms())
                result = {}
            elif event == "DELETE":
                await self.rt.feeds.delete(tns, trigger)
                self.rt.store.delete(tns, "feeds", trigger)
                result = {}
            elif event == "READ":
                doc = self.rt.store.get(tns, "feeds", trigger)
                if not doc:
                    raise ApiError(404, "The requested resource does not exist.")
                result = {"config": {**doc["config"], "triggerName": f"/{tns}/{trigger}"}}
            else:
                raise feeds.FeedError("lifecycleEvent must be CREATE, READ or DELETE")
        except feeds.FeedError as e:
            result, status = {"error": str(e)}, 502
        except Exception as e:  # broker unreachable and the like
            if isinstance(e, ApiError):
                raise
            result, status = {"error": f"could not {event} the feed: {e}"}, 502
        rec = {"namespace": caller, "name": "kafkaFeed", "version": "0.0.1", "subject": caller,
               "activationId": new_id(), "start": start, "end": now_ms(), "duration": now_ms() - start,
               "statusCode": 0 if status == 200 else 1,
               "response": {"status": "success" if status == 200 else "application error",
                            "statusCode": 0 if status == 200 else 1, "success": status == 200,
                            "result": result},
               "logs": [], "annotations": [{"key": "path", "value": "whisk.system/messaging/kafkaFeed"}]}
        self.rt.store.put_activation(rec)
        body = result if request.query.get("result") == "true" else rec
        return web.json_response(body, status=status)

    async def trigger(self, request):
        ns = self.namespace(request, request["ns"])
        name = request.match_info["name"]
        if request.method == "PUT":
            body = await self.body(request)
            return web.json_response(self.rt.put_entity(ns, "triggers", name, body,
                                                        request.query.get("overwrite") == "true"))
        if request.method == "GET":
            return web.json_response(self.rt.get_entity(ns, "triggers", name))
        if request.method == "DELETE":
            doc = self.rt.get_entity(ns, "triggers", name)
            await self.rt.feeds.delete(ns, name)
            self.rt.store.delete(ns, "feeds", name)
            self.rt.store.delete(ns, "triggers", name)
            return web.json_response(doc)
        if request.method == "POST":
            payload = await self.body(request)
            status, aid = await self.rt.fire(ns, name, payload)
            if status == 204:
                return web.Response(status=204)
            return web.json_response({"activationId": aid}, status=202,
                                     headers={"x-openwhisk-activation-id": aid})
        raise ApiError(405, "Method not allowed.")

    def _qualify(self, ns: str, ref: str) -> dict:
        parts = ref.strip("/").split("/")
        if len(parts) < 2:
            raise ApiError(400, f"The request content was malformed: '{ref}' is not a fully qualified name.")
        path = ns if parts[0] == "_" else parts[0]
        name = parts[-1]
        if len(parts) == 3:
            path = f"{path}/{parts[1]}"
        return {"path": path, "name": name}

    async def rule(self, request):
        ns = self.namespace(request, request["ns"])
        name = request.match_info["name"]
        if request.method == "PUT":
            body = await self.body(request, required=True)
            old = self.rt.store.get(ns, "rules", name)
            if old and request.query.get("overwrite") != "true":
                raise ApiError(409, "resource already exists")
            if "trigger" not in body or "action" not in body:
                raise ApiError(400, "The request content was malformed: trigger and action are required.")
            trig = self._qualify(ns, body["trigger"])
            act = self._qualify(ns, body["action"])
            if self.rt.store.get(ns, "triggers", trig["name"]) is None:
                raise ApiError(404, "The requested resource does not exist.")
            act_full = act["name"] if act["path"] == ns else f"{act['path'].split('/', 1)[1]}/{act['name']}"
            if self.rt.store.get(ns, "actions", act_full) is None:
                raise ApiError(404, "The requested resource does not exist.")
            doc = {"namespace": ns, "name": name, "version": "0.0.1" if not old else
                   bump(old["version"]), "publish": False, "annotations": body.get("annotations", []),
                   "status": old["status"] if old else "active", "trigger": trig, "action": act,
                   "updated": now_ms()}
            self.rt.store.put(ns, "rules", name, doc, doc["updated"])
            return web.json_response(doc)
        if request.method == "GET":
            return web.json_response(self.rt.get_entity(ns, "rules", name))
        if request.method == "DELETE":
            doc = self.rt.get_entity(ns, "rules", name)
            self.rt.store.delete(ns, "rules", name)
            return web.json_response(doc)
        if request.method == "POST":
            body = await self.body(request, required=True)
            status = body.get("status")
            if status not in ("active", "inactive"):
                raise ApiError(400, "The request content was malformed: status must be active or inactive.")
            doc = self.rt.get_entity(ns, "rules", name)
            if doc["status"] == status:
                return web.json_response({}, status=200)
            doc["status"] = status
            self.rt.store.put(ns, "rules", name, doc, now_ms())
            return web.json_response({}, status=200)
        raise ApiError(405, "Method not allowed.")

    async def package(self, request):
        ns = self.namespace(request, request["ns"])
        name = request.match_info["name"]
        if request.method == "PUT":
            body = await self.body(request)
            return web.json_response(self.rt.put_entity(ns, "packages", name, body,
                                                        request.query.get("overwrite") == "true"))
        if request.method == "GET":
            doc = self.rt.get_entity(ns, "packages", name)
            doc = dict(doc, actions=[{"name": a["name"], "version": a["version"]}
                                     for a in self.rt.store.list(ns, "actions", prefix=name + "/")])
            return web.json_response(doc)
        if request.method == "DELETE":
            doc = self.rt.get_entity(ns, "packages", name)
            members = self.rt.store.list(ns, "actions", prefix=name + "/")
            if members and request.query.get("force") != "true":
                raise ApiError(409, f"Package not empty (contains {len(members)} entities)")
            for a in members:
                self.rt.store.delete(ns, "actions", f"{name}/{a['name']}")
            self.rt.store.delete(ns, "packages", name)
            return web.json_response(doc)
        raise ApiError(405, "Method not allowed.")

    async def activations(self, request):
        ns = self.namespace(request, request["ns"])
        q = request.query
        try:
            limit = min(int(q.get("limit", 30) or 30), 200)
            skip = int(q.get("skip", 0) or 0)
            since = int(q["since"]) if "since" in q else None
            upto = int(q["upto"]) if "upto" in q else None
        except ValueError:
            raise ApiError(400, "The request content was malformed: "
                                "limit, skip, since and upto are integers.") from None
        name = q.get("name")
        docs = await asyncio.to_thread(self.rt.store.activations, ns, name=name.split("/")[-1] if name else None,
                                       limit=limit, skip=skip, since=since, upto=upto)
        if q.get("docs") != "true":
            docs = [{k: d[k] for k in ("activationId", "name", "namespace", "start", "end", "duration",
                                       "statusCode", "version", "annotations", "publish") if k in d}
                    for d in docs]
        return web.json_response(docs)

    async def activation(self, request):
        ns = self.namespace(request, request["ns"])
        doc = await asyncio.to_thread(self.rt.store.activation, ns, request.match_info["id"])
        if doc is None:
            raise ApiError(404, "The requested resource does not exist.")
        part = request.match_info.get("part")
        if part == "logs":
            return web.json_response({"logs": doc["logs"]})
        if part == "result":
            return web.json_response(doc["response"])
        return web.json_response(doc)

