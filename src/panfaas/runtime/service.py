"""The runtime's core: entities, invocations, trigger fires, activation records.

Independent of HTTP (api.py maps routes onto this), so that the feed
provider and replay call the very same code paths as the REST API.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from . import executor as ex
from .feeds import FeedManager
from .store import Store

log = logging.getLogger("panfaas.runtime")

DEFAULT_LIMITS = {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
LIMIT_RANGES = {"timeout": (100, 300000), "memory": (128, 2048), "logs": (0, 10),
                "concurrency": (1, 1)}


class ApiError(Exception):
    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status
        self.message = message


def now_ms() -> int:
    return int(time.time() * 1000)


def new_id() -> str:
    return uuid.uuid4().hex


def split_name(fullname: str) -> tuple[str | None, str]:
    pkg, _, name = fullname.rpartition("/")
    return (pkg or None), name


def kv(params: Any) -> dict:
    """OpenWhisk's [{key, value}] list as a dict."""
    out = {}
    for p in params or []:
        if isinstance(p, dict) and "key" in p:
            out[p["key"]] = p.get("value")
    return out


def annotation(doc: dict, key: str, default=None):
    return kv(doc.get("annotations")).get(key, default)


class Runtime:
    def __init__(self, store: Store, executor: ex.Executor, system_feeds: bool = True):
        self.store = store
        self.executor = executor
        self.feeds = FeedManager(self.fire_internal)
        self.running: set[asyncio.Task] = set()

    # -- entities ---------------------------------------------------------
    def put_entity(self, ns: str, kind: str, fullname: str, body: dict, overwrite: bool) -> dict:
        old = self.store.get(ns, kind, fullname)
        if old and not overwrite:
            raise ApiError(409, "resource already exists")
        pkg, name = split_name(fullname)
        doc = {"namespace": f"{ns}/{pkg}" if pkg else ns, "name": name,
               "version": bump(old["version"]) if old else "0.0.1",
               "publish": bool(body.get("publish", False)),
               "annotations": body.get("annotations", old.get("annotations", []) if old else []),
               "parameters": body.get("parameters", old.get("parameters", []) if old else []),
               "updated": now_ms()}
        if kind == "actions":
            doc.update(self._action_fields(body, old))
        elif kind == "triggers":
            doc["limits"] = {}
        elif kind == "packages":
            doc["binding"] = body.get("binding", {})
        self.store.put(ns, kind, fullname, doc, doc["updated"])
        return doc

    def _action_fields(self, body: dict, old: dict | None) -> dict:
        exec_ = body.get("exec") or (old or {}).get("exec")
        if not isinstance(exec_, dict) or "kind" not in exec_:
            raise ApiError(400, "The request content was malformed: exec with a kind is required.")
        kind = exec_["kind"]
        if kind == "blackbox" and not exec_.get("image"):
            raise ApiError(400, "The request content was malformed: blackbox actions need an image.")
        if kind == "sequence":
            comps = exec_.get("components")
            if not isinstance(comps, list) or not comps:
                raise ApiError(400, "The request content was malformed: sequence needs components.")
        elif not (kind.startswith("python") or kind == "blackbox"):
            raise ApiError(400, f"The request content was malformed: kind '{kind}' is not supported here "
                                "(python:3.11, python:3, python:default, blackbox, sequence).")
        limits = dict(DEFAULT_LIMITS)
        limits.update((old or {}).get("limits", {}))
        limits.update(body.get("limits") or {})
        for k, (lo, hi) in LIMIT_RANGES.items():
            v = limits.get(k)
            if not isinstance(v, int) or isinstance(v, bool) or not lo <= v <= hi:
                raise ApiError(400, f"The request content was malformed: limits.{k} must be within [{lo}, {hi}].")
        anns = [a for a in (body.get("annotations") or (old or {}).get("annotations") or [])
                if a.get("key") != "exec"]
        if "provide-api-key" not in kv(anns):
            anns.append({"key": "provide-api-key", "value": False})
        anns.append({"key": "exec", "value": kind.split(":")[0] if kind != "blackbox" else "blackbox"})
        exec_doc = {k: v for k, v in exec_.items() if k in ("kind", "code", "image", "main", "binary", "components")}
        if "code" in exec_doc and "binary" not in exec_doc:
            exec_doc["binary"] = False
        return {"exec": exec_doc, "limits": limits, "annotations": anns}

    def get_entity(self, ns: str, kind: str, fullname: str) -> dict:
        doc = self.store.get(ns, kind, fullname)
        if doc is None:
            raise ApiError(404, "The requested resource does not exist.")
        return doc

    # -- invocation -------------------------------------------------------
    def resolve_params(self, ns: str, fullname: str, action: dict, args: dict) -> dict:
        pkg, _ = split_name(fullname)
        params: dict = {}
        if pkg:
            pdoc = self.store.get(ns, "packages", pkg)
            if pdoc:
                params.update(kv(pdoc.get("parameters")))
        params.update(kv(action.get("parameters")))
        params.update(args)
        return params

    async def invoke(self, ns: str, fullname: str, args: dict, *, cause: str | None = None,
                     subject: str | None = None) -> tuple[str, asyncio.Task]:
        action = self.get_entity(ns, "actions", fullname)
        aid = new_id()
        queued = now_ms()
        params = self.resolve_params(ns, fullname, action, args)
        task = asyncio.create_task(self._activate(ns, fullname, action, params, aid, queued, cause,
                                                  subject or ns))
        self.running.add(task)
        task.add_done_callback(self.running.discard)
        return aid, task

    async def _activate(self, ns, fullname, action, params, aid, queued, cause, subject) -> dict:
        start = now_ms()
        limits = action.get("limits", DEFAULT_LIMITS)
        meta = {"namespace": ns, "action_name": f"/{ns}/{fullname}", "action_version": action["version"],
                "activation_id": aid, "transaction_id": new_id(),
                "deadline": str(start + limits.get("timeout", 60000))}
        try:
            outcome = await self.executor.execute(action, params, meta)
        except Exception as e:  # the runtime's own failure, not the action's
            log.exception("activation failed inside the runtime")
            outcome = ex.Outcome(ex.INTERNAL_ERROR, {"error": f"whisk internal error: {e}"}, [])
        end = now_ms()
        anns = [{"key": "path", "value": f"{ns}/{fullname}"},
                {"key": "waitTime", "value": start - queued},
                {"key": "kind", "value": action["exec"]["kind"]},
                {"key": "timeout", "value": outcome.timed_out},
                {"key": "limits", "value": limits}]
        if outcome.init_ms is not None:
            anns.append({"key": "initTime", "value": outcome.init_ms})
        result = outcome.result
        rec = {"namespace": ns, "name": split_name(fullname)[1], "version": action["version"],
               "subject": subject, "activationId": aid, "start": start, "end": end,
               "duration": end - start, "statusCode": outcome.status,
               "response": {"status": ex.STATUS_NAMES[outcome.status], "statusCode": outcome.status,
                            "success": outcome.status == ex.SUCCESS, "result": result},
               "logs": outcome.logs, "annotations": anns, "publish": False}
        if cause:
            rec["cause"] = cause
        await asyncio.to_thread(self.store.put_activation, rec)
        log.info("activation", extra={"fields": {"action": f"/{ns}/{fullname}", "activationId": aid,
                                                 "status": rec["response"]["status"],
                                                 "duration": rec["duration"]}})
        return rec

    # -- triggers and rules -----------------------------------------------
    def active_rules(self, ns: str, trigger: str) -> list[dict]:
        out = []
        for rule in self.store.list(ns, "rules"):
            t = rule.get("trigger", {})
            if rule.get("status") == "active" and t.get("name") == trigger and t.get("path") == ns:
                out.append(rule)
        return out

    async def fire(self, ns: str, trigger: str, payload: dict) -> tuple[int, str | None]:
        tdoc = self.get_entity(ns, "triggers", trigger)
        rules = self.active_rules(ns, trigger)
        if not rules:
            return 204, None
        aid = new_id()
        start = now_ms()
        params = {**kv(tdoc.get("parameters")), **payload}
        logs = []
        for rule in rules:
            act = rule["action"]
            fullname = act["name"] if act["path"] == ns else f"{act['path'].split('/', 1)[-1]}/{act['name']}"
            try:
                child, _ = await self.invoke(ns, fullname, params, cause=aid)
                logs.append({"statusCode": 0, "success": True, "activationId": child,
                             "rule": f"{ns}/{rule['name']}", "action": f"{act['path']}/{act['name']}"})
            except ApiError as e:
                logs.append({"statusCode": 1, "success": False, "error": e.message,
                             "rule": f"{ns}/{rule['name']}", "action": f"{act['path']}/{act['name']}"})
        rec = {"namespace": ns, "name": trigger, "version": tdoc["version"], "subject": ns,
               "activationId": aid, "start": start, "end": start, "duration": 0, "statusCode": 0,
               "response": {"status": "success", "statusCode": 0, "success": True, "result": payload
                            if len(json.dumps(payload)) < 65536 else {}},
               "logs": [json.dumps(entry) for entry in logs],
               "annotations": [{"key": "path", "value": f"{ns}/{trigger}"}], "publish": False}
        await asyncio.to_thread(self.store.put_activation, rec)
        return 202, aid

    async def fire_internal(self, ns: str, trigger: str, payload: dict) -> int:
        try:
            status, _ = await self.fire(ns, trigger, payload)
            return status
        except ApiError as e:
            return e.status

    async def restore_feeds(self) -> None:
        for ns, doc in self.store.all("feeds"):
            try:
                await self.feeds.create(ns, doc["trigger"], doc["config"])
            except Exception as e:
                log.error("cannot restore feed", extra={"fields": {"trigger": doc["trigger"], "error": repr(e)}})

    async def close(self) -> None:
        await self.feeds.close()
        for t in list(self.running):
            t.cancel()
        await self.executor.close()


def bump(version: str) -> str:
    parts = version.split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        return version
    return ".".join(parts)
