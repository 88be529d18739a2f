"""The runtime's core: invocations, sequences, trigger fires, the Kafka feed action,
activation records and recovery after a crash.

Independent of HTTP (api.py maps routes onto this), so that the feed provider, recovery and
the REST API go through the very same code. An accepted activation is in the store's
`pending` queue until its record is written (one transaction), so `recover()` after a
kill -9 runs every accepted non-blocking activation (a trigger's included) that has no
record yet; a blocking one is recorded as a whisk internal error instead, because its
caller already saw the connection fail and may have retried it.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import uuid
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from . import catalog as cat
from . import errors
from . import executor as ex
from .catalog import Catalog, Resolved
from .entities import annotation, kv, now_ms
from .errors import ApiError
from .feeds import FETCH_WAIT_MS, FeedError, FeedManager, update, validate
from .limits import MemoryPool, Throttle
from .store import Store

log = logging.getLogger("panfaas.runtime")

RESTARTED_BLOCKING = ("The runtime restarted while this blocking activation was queued or running; "
                      "it was not run again (its caller saw the request fail).")
ACTION_REMOVED = "Action could not be found or may have been deleted."
SMALL_RECORD = 64 * 1024  # records up to this size are written on the event loop itself


def new_id() -> str:
    return uuid.uuid4().hex


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        self.activations = Counter("panfaas_runtime_activations", "Activations recorded, by kind and status",
                                   ["kind", "status"], registry=self.registry)
        self.duration = Histogram("panfaas_runtime_activation_seconds", "Activation duration (init included)",
                                  buckets=(.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 300),
                                  registry=self.registry)
        self.wait = Histogram("panfaas_runtime_wait_seconds", "Time from acceptance to start (waitTime)",
                              buckets=(.0005, .001, .0025, .005, .01, .025, .05, .1, .25, 1, 5, 30),
                              registry=self.registry)
        self.cold = Counter("panfaas_runtime_cold_starts", "Activations that started a new process",
                            registry=self.registry)
        self.throttled = Counter("panfaas_runtime_throttled", "Requests refused with 429", ["what"],
                                 registry=self.registry)
        self.fires = Counter("panfaas_runtime_trigger_fires", "Trigger fires accepted", registry=self.registry)
        self.feed_messages = Counter("panfaas_runtime_feed_messages", "Kafka messages fired by feeds",
                                     registry=self.registry)
        self.in_flight = Gauge("panfaas_runtime_in_flight", "Activations accepted and not yet recorded",
                               registry=self.registry)
        self.warm = Gauge("panfaas_runtime_warm_processes", "Idle warm action processes", registry=self.registry)


class Runtime:
    def __init__(self, store: Store, executor: ex.Executor, *, keys: dict[str, str] | None = None,
                 throttle: Throttle | None = None, memory: MemoryPool | None = None, ranges: dict | None = None,
                 feed_fetch_wait_ms: int = FETCH_WAIT_MS):
        """keys: namespace -> its 'uuid:key' (for actions annotated provide-api-key)."""
        self.store = store
        self.catalog = Catalog(store, ranges)
        self.executor = executor
        self.keys = keys or {}
        self.throttle = throttle or Throttle()
        self.memory = memory or MemoryPool(0)
        self.feeds = FeedManager(self.fire_from_feed, feed_fetch_wait_ms)
        self.running: dict[str, asyncio.Task] = {}
        self.metrics = Metrics()
        self.metrics.warm.set_function(executor.warm_count)
        self.metrics.in_flight.set_function(lambda: len(self.running))

    # -- invocation -------------------------------------------------------
    async def invoke(self, ns: str, fullname: str, payload: dict, *, blocking: bool = False,
                     cause: str | None = None, owner: str | None = None) -> tuple[str, asyncio.Future]:
        """Accept an activation of `fullname` in `owner` (default: the caller's namespace `ns`):
        (activationId, a future of its record). The feed action
        (/whisk.system/messaging/kafkaFeed) runs inline: its future is already done."""
        r = self.catalog.resolve(owner or ns, fullname)
        self._check_final(r, payload)
        if r.is_feed:
            rec = await self._feed_action(ns, r, payload)
            done = asyncio.get_running_loop().create_future()
            done.set_result(rec)
            return rec["activationId"], done
        try:
            self.throttle.admit(ns)
        except ApiError:
            self.metrics.throttled.labels("invoke").inc()
            raise
        aid, queued = new_id(), now_ms()
        self.store.enqueue([(aid, ns, fullname, payload, cause, blocking, queued)])
        return aid, self._spawn(ns, r, payload, aid, queued, cause)

    @staticmethod
    def _check_final(r: Resolved, payload: dict) -> None:
        if annotation(r.doc, "final") is True:
            fixed = {k for k, v in r.params.items() if v is not None}
            if fixed & set(payload):
                raise ApiError(400, errors.PARAMETERS_NOT_ALLOWED)

    def _spawn(self, ns: str, r: Resolved, payload: dict, aid: str, queued: int, cause: str | None) -> asyncio.Task:
        task = asyncio.create_task(self._activate(ns, r, payload, aid, queued, cause, kind=None))
        self.running[aid] = task

        def done(_t):
            self.running.pop(aid, None)
            self.throttle.done(ns)
        task.add_done_callback(done)
        return task

    async def _activate(self, ns: str, r: Resolved, payload: dict, aid: str, queued: int, cause: str | None,
                        kind: str | None, extra: list[dict] | None = None) -> dict:
        """Run one activation and record it. kind: 'component' for a sequence's component."""
        action = r.doc
        if action["exec"]["kind"] == "sequence":
            return await self._sequence(ns, r, payload, aid, queued, cause, kind, extra)
        limits = action.get("limits", {})
        init_env: dict = {}
        if isinstance(payload, dict):
            args: Any = {**r.params, **payload}
            init_keys = {p["key"] for p in action.get("parameters", []) if p.get("init")}
            init_env = {k: args.pop(k) for k in list(args) if k in init_keys}
        else:  # an array result flowing through a sequence
            args = payload
        async with self.memory.reserve(int(limits.get("memory", 256))):
            start = now_ms()
            meta = {"namespace": ns, "action_name": f"/{r.path}", "action_version": action["version"],
                    "activation_id": aid, "transaction_id": new_id(),
                    "deadline": str(start + int(limits.get("timeout", 60000)))}
            if annotation(action, "provide-api-key") is True and ns in self.keys:
                meta["api_key"] = self.keys[ns]
            try:
                outcome = await self.executor.execute(action, args, meta, init_env)
            except Exception as e:  # the runtime's own failure, not the action's
                log.exception("activation failed inside the runtime")
                outcome = ex.Outcome(ex.INTERNAL_ERROR, {"error": f"whisk internal error: {e}"}, [])
        end = now_ms()
        if outcome.init_ms is not None:
            self.metrics.cold.inc()
        anns = [{"key": "path", "value": r.path}, {"key": "waitTime", "value": start - queued},
                {"key": "kind", "value": action["exec"]["kind"]}, {"key": "timeout", "value": outcome.timed_out},
                {"key": "limits", "value": limits}]
        if outcome.init_ms is not None:
            anns.append({"key": "initTime", "value": outcome.init_ms})
        anns += self._context_annotations(r, kind, extra)
        rec = self._record(ns, r, aid, start, end, outcome.status, outcome.result, outcome.logs, anns, cause)
        await self._store(rec, payload, kind or "action", start - queued)
        return rec

    @staticmethod
    def _context_annotations(r: Resolved, kind: str | None, extra: list[dict] | None) -> list[dict]:
        anns = []
        if r.binding:
            anns.append({"key": "binding", "value": r.binding})
        if kind == "component":
            anns.append({"key": "causedBy", "value": "sequence"})
        return anns + (extra or [])

    def _record(self, ns: str, r: Resolved, aid: str, start: int, end: int, status: int, result: Any,
                logs: list, anns: list, cause: str | None) -> dict:
        rec = {"namespace": ns, "name": cat.split(r.fullname)[1], "version": r.doc["version"], "subject": ns,
               "activationId": aid, "start": start, "end": end, "duration": end - start, "statusCode": status,
               "response": {"status": ex.STATUS_NAMES[status], "statusCode": status, "success": status == ex.SUCCESS,
                            "result": result, "size": len(json.dumps(result))},
               "logs": logs, "annotations": anns, "publish": False}
        if cause:
            rec["cause"] = cause
        return rec

    async def _store(self, rec: dict, args: Any, kind: str, wait_ms: int) -> None:
        if rec["response"]["size"] + len(rec["logs"]) * 64 < SMALL_RECORD:
            self.store.put_activation(rec, args, kind)  # ~0.1 ms: cheaper than a hop to a thread
        else:
            await asyncio.to_thread(self.store.put_activation, rec, args, kind)
        self.metrics.activations.labels(kind, rec["response"]["status"]).inc()
        self.metrics.duration.observe(rec.get("duration", 0) / 1000.0)
        self.metrics.wait.observe(wait_ms / 1000.0)
        # Every record is in the store; the log keeps the failures (and, at debug, the rest).
        failed = not rec["response"]["success"]
        if failed or log.isEnabledFor(logging.DEBUG):
            result = rec["response"]["result"]
            error = str(result.get("error"))[:300] if failed and isinstance(result, dict) else None
            log.log(logging.INFO if failed else logging.DEBUG, "activation",
                    extra={"fields": {"path": next(a["value"] for a in rec["annotations"] if a["key"] == "path"),
                                      "activationId": rec["activationId"], "status": rec["response"]["status"],
                                      "duration": rec.get("duration"), "error": error}})

    async def _sequence(self, ns: str, r: Resolved, payload: dict, aid: str, queued: int, cause: str | None,
                        kind: str | None, extra: list[dict] | None) -> dict:
        """Each component's result is the next one's arguments; the first failure ends the sequence."""
        start = now_ms()
        args: Any = {**{k: v for k, v in r.params.items() if k != "_actions"}, **payload}
        ids: list[str] = []
        duration = 0
        status, result = ex.SUCCESS, args
        for comp in r.doc["exec"]["components"]:
            cns, _, cfull = comp.strip("/").partition("/")
            try:
                cr = self.catalog.resolve(cns, cfull)
            except ApiError:
                status, result = ex.APPLICATION_ERROR, {"error": errors.SEQUENCE_COMPONENT_MISSING}
                break
            cid = new_id()
            crec = await self._activate(ns, cr, args, cid, now_ms(), aid, "component")
            ids.append(cid)
            duration += crec.get("duration", 0)
            status, result = crec["statusCode"], crec["response"]["result"]
            if status != ex.SUCCESS:
                break
            args = result
        end = now_ms()
        anns = [{"key": "path", "value": r.path}, {"key": "waitTime", "value": start - queued},
                {"key": "kind", "value": "sequence"}, {"key": "limits", "value": r.doc.get("limits", {})}]
        anns += [{"key": "topmost", "value": True}] if kind != "component" else []
        anns += self._context_annotations(r, kind, extra)
        rec = self._record(ns, r, aid, start, end, status, result, ids, anns, cause)
        rec["duration"] = duration
        await self._store(rec, payload, kind or "sequence", start - queued)
        return rec

    # -- the Kafka feed action (/whisk.system/messaging/kafkaFeed) ---------
    async def _feed_action(self, ns: str, r: Resolved, payload: dict) -> dict:
        """The lifecycle events CREATE, READ, UPDATE and DELETE, run inline and recorded like an
        activation of the feed action (in the caller's namespace)."""
        args = {**r.params, **payload}
        aid, start = new_id(), now_ms()
        event = args.get("lifecycleEvent")
        status, result = ex.SUCCESS, {}
        try:
            tns, trigger = self._feed_trigger(ns, args.get("triggerName"))
            if event == "CREATE":
                self.catalog.require(tns, "triggers", trigger)
                conf = validate(args)
                await self.feeds.create(tns, trigger, conf)
                self.catalog.put_feed(tns, trigger, conf)
            elif event == "UPDATE":
                doc = self._feed_doc(tns, trigger)
                conf = update(doc["config"], args)
                await self.feeds.create(tns, trigger, conf)
                self.catalog.put_feed(tns, trigger, conf)
            elif event == "READ":
                doc = self._feed_doc(tns, trigger)
                result = {"config": {**doc["config"], "triggerName": f"/{tns}/{trigger}"},
                          "status": {"active": f"/{tns}/{trigger}" in self.feeds.feeds,
                                     "dateChanged": doc.get("dateChanged")}}
            elif event == "DELETE":
                await self.feeds.delete(tns, trigger)
                self.catalog.delete_feed(tns, trigger)
            else:
                raise FeedError("lifecycleEvent must be one of CREATE, READ, UPDATE, DELETE")
        except FeedError as e:
            status, result = ex.APPLICATION_ERROR, {"error": str(e)}
        except ApiError as e:
            status, result = ex.APPLICATION_ERROR, {"error": f"{e.message} ({args.get('triggerName')})"}
        except Exception as e:  # the broker is unreachable, the topic does not exist, ...
            status, result = ex.APPLICATION_ERROR, {"error": f"could not {event} the feed: {e}"}
        end = now_ms()
        anns = [{"key": "path", "value": r.path}, {"key": "waitTime", "value": 0}, {"key": "kind", "value": "blackbox"},
                {"key": "timeout", "value": False}, {"key": "limits", "value": r.doc["limits"]}]
        anns += self._context_annotations(r, None, None)
        safe = {k: v for k, v in args.items() if k != "authKey"}  # a credential: never stored
        rec = self._record(ns, r, aid, start, end, status, result, [], anns, None)
        await self._store(rec, safe, "feed", 0)
        return rec

    def _feed_trigger(self, ns: str, name: Any) -> tuple[str, str]:
        if not isinstance(name, str):
            raise FeedError("You must supply a 'triggerName' parameter: /namespace/trigger.")
        parts = name.strip("/").split("/")
        if len(parts) == 1:
            parts = [ns, parts[0]]
        if len(parts) != 2:
            raise FeedError("'triggerName' must be /namespace/trigger.")
        tns = ns if parts[0] == "_" else parts[0]
        if tns != ns:
            raise FeedError(errors.NOT_AUTHORIZED)
        return tns, parts[1]

    def _feed_doc(self, ns: str, trigger: str) -> dict:
        doc = self.catalog.feed(ns, trigger)
        if doc is None:
            raise FeedError(f"trigger /{ns}/{trigger} has no Kafka feed")
        return doc

    # -- triggers ---------------------------------------------------------
    async def fire(self, ns: str, trigger: str, payload: dict) -> tuple[int, str | None]:
        """202 and the trigger's activation id, or 204 when no rule of it is active. Limits are
        checked before anything is recorded, so a 429 leaves nothing half done (the feed retries)."""
        tdoc = self.catalog.require(ns, "triggers", trigger)
        rules = self.catalog.rules_of(ns, trigger)
        active = [rl for rl in rules if rl["status"] == "active"]
        if not active:
            return 204, None
        try:
            self.throttle.check_fire(ns)
            self.throttle.check_invoke(ns, len(active))
        except ApiError:
            self.metrics.throttled.labels("fire").inc()
            raise
        self.throttle.admit_fire(ns)
        aid, start = new_id(), now_ms()
        args = {**kv(tdoc.get("parameters")), **payload}
        logs, rows, runs = [], [], []
        for rule in sorted(rules, key=lambda x: x["name"]):
            act = rule["action"]
            entry = {"rule": f"{ns}/{rule['name']}", "action": f"{act['path']}/{act['name']}"}
            if rule["status"] != "active":
                logs.append({"statusCode": 1, "success": False, **entry,
                             "error": f"Rule '{ns}/{rule['name']}' is inactive, action "
                                      f"'{act['path']}/{act['name']}' was not activated."})
                continue
            ans, fullname = cat.locate(act["path"], act["name"])
            try:
                r = self.catalog.resolve(ans, fullname)
                self._check_final(r, args)
            except ApiError as e:
                logs.append({"statusCode": 1, "success": False, **entry, "error": e.message})
                continue
            cid = new_id()
            rows.append((cid, ns, f"/{ans}/{fullname}" if ans != ns else fullname, args, aid, False, start))
            runs.append((r, cid))
            logs.append({"statusCode": 0, "success": True, "activationId": cid, **entry})
        rec = {"namespace": ns, "name": trigger, "version": tdoc["version"], "subject": ns, "activationId": aid,
               "start": start, "statusCode": 0,
               "response": {"status": "success", "statusCode": 0, "success": True, "result": payload,
                            "size": len(json.dumps(payload))},
               "logs": [json.dumps(e, separators=(",", ":")) for e in logs],
               "annotations": [{"key": "path", "value": f"{ns}/{trigger}"}], "publish": False}
        await asyncio.to_thread(self.store.enqueue, rows, rec, payload, "trigger")
        self.metrics.activations.labels("trigger", "success").inc()
        self.metrics.fires.inc()
        for r, cid in runs:
            self.throttle.admit(ns)
            self._spawn(ns, r, args, cid, start, aid)
        return 202, aid

    async def fire_from_feed(self, ns: str, trigger: str, payload: dict) -> int:
        try:
            status, _ = await self.fire(ns, trigger, payload)
        except ApiError as e:
            return e.status
        if status == 202:
            self.metrics.feed_messages.inc(len(payload.get("messages", [])))
        return status

    # -- lifecycle --------------------------------------------------------
    async def recover(self) -> dict:
        """Run (or, if blocking, record as failed) what was accepted before a crash."""
        rerun = failed = 0
        for p in await asyncio.to_thread(self.store.pending):
            ns, name = p["namespace"], p["action"]
            aname = name.strip("/")
            ans, fullname = (aname.split("/", 1) if name.startswith("/") else (ns, aname))
            try:
                r = self.catalog.resolve(ans, fullname)
            except ApiError:
                r = None
            if p["blocking"] or r is None:
                failed += 1
                stub = r or Resolved({"version": "0.0.0", "exec": {"kind": "unknown"}}, {}, ans, fullname)
                t = now_ms()
                msg = RESTARTED_BLOCKING if p["blocking"] else ACTION_REMOVED
                rec = self._record(ns, stub, p["id"], t, t, ex.INTERNAL_ERROR, {"error": msg}, [],
                                   [{"key": "path", "value": stub.path},
                                    {"key": "waitTime", "value": t - p["queued"]}], p["cause"])
                await self._store(rec, p["args"], "action", t - p["queued"])
                continue
            rerun += 1
            self.throttle.started(ns)
            self._spawn(ns, r, p["args"], p["id"], p["queued"], p["cause"])
        if rerun or failed:
            log.warning("recovered accepted activations after a restart",
                        extra={"fields": {"rerun": rerun, "recorded_failed": failed}})
        return {"rerun": rerun, "failed": failed}

    async def restore_feeds(self) -> None:
        for ns, doc in self.store.all("feeds"):
            try:
                await self.feeds.create(ns, doc["trigger"], doc["config"])
            except Exception as e:
                log.error("cannot restore feed", extra={"fields": {"trigger": doc["trigger"], "error": repr(e)}})

    async def maintain(self, retention_days: float, every: float = 30.0) -> None:
        """Stop idle warm processes; drop activation records past their retention."""
        last_prune = 0.0
        while True:
            await asyncio.sleep(every)
            try:
                await self.executor.reap()
                if retention_days > 0 and time.monotonic() - last_prune > 3600:
                    last_prune = time.monotonic()
                    n = await asyncio.to_thread(self.store.prune, now_ms() - int(retention_days * 86400000))
                    if n:
                        log.info("activation records pruned", extra={"fields": {"count": n}})
            except Exception:
                log.exception("maintenance failed")

    async def drain(self, timeout: float) -> None:
        """Let running activations finish (SIGTERM); what is left stays pending for recovery."""
        if self.running:
            await asyncio.wait(list(self.running.values()), timeout=timeout)

    async def close(self) -> None:
        await self.feeds.close()
        for t in list(self.running.values()):
            t.cancel()
        await self.executor.close()
