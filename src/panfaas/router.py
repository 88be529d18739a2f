"""The event router: dCache's "dynamic processing", as a small asyncio service.

Reads storage events (the Kafka `billing` topic), matches every rule of a
dynamic-processing YAML config against each event, asks the storage for
pre-authorised URLs (macaroons) and publishes one task per matching rule on
the rule's `target` topic. The task is the URL map dynamic-processing emits,
plus `event` (what happened) and a deterministic `task_id`.

Delivery is at-least-once: the source offset is committed only after the
broker has acknowledged every task of the events before it. Anything that
cannot become a task goes to the dead-letter topic with the reason.
Reference: shared/reference/dcache-events-macaroons-cxi.md §4.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import logging
import re
import signal
import time
import urllib.parse
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from . import config as cfg
from . import events
from .kafka import producer as kafka_producer
from .kafka import start_consumer

log = logging.getLogger("panfaas.router")

DEFAULTS: dict[str, Any] = {
    "kafka-client": {"id": "panfaas-router", "bootstrap-servers": "localhost:9092"},
    "url-generator": {"base": None, "macaroons": {"default-lifetime": "PT5M"}},
    "files": [],
    # panfaas extensions
    "source": {"type": "kafka", "topic": "billing"},
    "dead-letter-topic": "dead-letter",
    "listen": {"host": "127.0.0.1", "port": 0},
    "macaroon-retries": 4,
    "log-level": "info",
}

RESERVED_URL_NAMES = ("event", "task_id")


@dataclasses.dataclass
class UrlSpec:
    name: str
    activity: str | None = None       # None: no macaroon, a bare URL
    lifetime: str | None = None
    replacing: re.Pattern | None = None
    with_: str | None = None
    create_path: bool = False


@dataclasses.dataclass
class Rule:
    index: int
    target: str
    matching: re.Pattern
    ignoring: re.Pattern | None
    urls: list[UrlSpec]

    def matches(self, ev: events.StorageEvent) -> bool:
        if not ev.is_upload():
            return False
        if not self.matching.fullmatch(ev.path):
            return False
        return not (self.ignoring and self.ignoring.search(ev.path))


class RouterConfigError(cfg.ConfigError):
    pass


def _regex(text: Any, where: str) -> re.Pattern:
    if not isinstance(text, str):
        raise RouterConfigError(f"{where}: must be a regular expression string")
    try:
        return re.compile(text)
    except re.error as e:
        raise RouterConfigError(f"{where}: invalid regular expression: {e}") from None


def parse_rules(conf: dict) -> list[Rule]:
    files = conf.get("files")
    if not isinstance(files, list) or not files:
        raise RouterConfigError("files: at least one rule is required")
    rules = []
    for i, f in enumerate(files):
        where = f"files[{i}]"
        if not isinstance(f, dict):
            raise RouterConfigError(f"{where}: must be a mapping")
        target = f.get("target")
        if not isinstance(target, str) or not target:
            raise RouterConfigError(f"{where}.target: topic name required")
        pred = f.get("path-predicate") or {}
        if not isinstance(pred, dict) or "matching" not in pred:
            raise RouterConfigError(f"{where}.path-predicate.matching: required")
        matching = _regex(pred["matching"], f"{where}.path-predicate.matching")
        ignoring = _regex(pred["ignoring"], f"{where}.path-predicate.ignoring") if pred.get("ignoring") else None
        urls = []
        for name, spec in (f.get("urls") or {}).items():
            uw = f"{where}.urls.{name}"
            if name in RESERVED_URL_NAMES:
                raise RouterConfigError(f"{uw}: '{name}' is reserved for the task envelope")
            spec = spec or {}
            if not isinstance(spec, dict):
                raise RouterConfigError(f"{uw}: must be a mapping")
            u = UrlSpec(name=name)
            wm = spec.get("with-macaroon")
            if wm is not None:
                wm = wm or {}
                u.activity = wm.get("activity", "DOWNLOAD")
                u.lifetime = wm.get("lifetime")
            dp = spec.get("derived-path")
            if dp is not None:
                if not isinstance(dp, dict) or "replacing" not in dp or "with" not in dp:
                    raise RouterConfigError(f"{uw}.derived-path: needs 'replacing' and 'with'")
                u.replacing = _regex(dp["replacing"], f"{uw}.derived-path.replacing")
                u.with_ = str(dp["with"])
            u.create_path = bool(spec.get("create-path", False))
            if u.create_path and u.replacing is None:
                raise RouterConfigError(f"{uw}.create-path: only valid together with derived-path")
            urls.append(u)
        rules.append(Rule(i, target, matching, ignoring, urls))
    return rules


def derive(path: str, spec: UrlSpec) -> str:
    if spec.replacing is None:
        return path
    return spec.replacing.sub(spec.with_, path, count=1)


def task_id(rule: Rule, ev: events.StorageEvent) -> str:
    """Same event, same rule -> same id, so consumers can de-duplicate."""
    basis = json.dumps(ev.raw, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(f"{rule.index}:{rule.target}:{basis}".encode()).hexdigest()[:32]


class MacaroonFailure(Exception):
    pass


class UrlGenerator:
    def __init__(self, conf: dict, session: aiohttp.ClientSession | None, retries: int = 4):
        ug = conf.get("url-generator") or {}
        base = ug.get("base")
        if not base:
            raise RouterConfigError("url-generator.base: the storage door URL is required")
        parts = urllib.parse.urlsplit(base)
        self.origin = f"{parts.scheme}://{parts.netloc}"
        mac = ug.get("macaroons") or {}
        self.auth = aiohttp.BasicAuth(mac["username"], mac.get("password", "")) if mac.get("username") else None
        self.default_lifetime = mac.get("default-lifetime", "PT5M")
        self.session = session
        self.retries = retries

    def url(self, path: str) -> str:
        return self.origin + urllib.parse.quote(path)

    async def macaroon(self, path: str, activity: str, lifetime: str | None) -> str:
        body = {"caveats": [f"activity:{activity}"], "validity": lifetime or self.default_lifetime}
        delay, last = 0.2, None
        for attempt in range(self.retries + 1):
            try:
                async with self.session.post(
                        self.url(path), data=json.dumps(body), auth=self.auth,
                        headers={"Content-Type": "application/macaroon-request"},
                        timeout=aiohttp.ClientTimeout(total=10)) as r:
                    if r.status == 200:
                        return (await r.json(content_type=None))["macaroon"]
                    last = f"HTTP {r.status}: {(await r.text())[:200]}"
                    if 400 <= r.status < 500 and r.status not in (408, 429):
                        break  # refused, retrying will not help
            except (TimeoutError, aiohttp.ClientError, KeyError, ValueError) as e:
                last = repr(e)
            if attempt < self.retries:
                await asyncio.sleep(delay)
                delay *= 2
        raise MacaroonFailure(f"macaroon request for {path} failed: {last}")

    async def mkcol(self, path: str) -> None:
        async with self.session.request("MKCOL", self.url(path), auth=self.auth,
                                        timeout=aiohttp.ClientTimeout(total=10)) as r:
            if r.status not in (201, 405):
                raise MacaroonFailure(f"MKCOL {path} failed: HTTP {r.status}")

    async def build(self, rule: Rule, ev: events.StorageEvent, use_macaroons: bool = True) -> dict:
        out = {}
        for spec in rule.urls:
            path = derive(ev.path, spec)
            if spec.create_path and use_macaroons:
                await self.mkcol(path)
            url = self.url(path)
            if spec.activity and use_macaroons:
                url += "?authz=" + await self.macaroon(path, spec.activity, spec.lifetime)
            out[spec.name] = url
        return out


def make_task(rule: Rule, ev: events.StorageEvent, urls: dict) -> dict:
    return {**urls, "event": ev.summary(), "task_id": task_id(rule, ev)}


class Metrics:
    def __init__(self):
        self.registry = CollectorRegistry()
        r = self.registry
        self.events_in = Counter("router_events_in", "Storage events consumed", registry=r)
        self.matched = Counter("router_events_matched", "Events matching at least one rule", registry=r)
        self.tasks_out = Counter("router_tasks_out", "Tasks published", registry=r)
        self.dead = Counter("router_dead_lettered", "Messages sent to the dead-letter topic", registry=r)
        self.macaroon_latency = Histogram("router_macaroon_seconds", "Macaroon request latency", registry=r)


class Router:
    def __init__(self, conf: dict):
        self.conf = conf
        self.rules = parse_rules(conf)
        self.metrics = Metrics()
        self.stopping = asyncio.Event()
        self.ready = False

    async def dead_letter(self, producer, msg, reason: str) -> None:
        value = msg.value.decode("utf-8", "replace") if isinstance(msg.value, bytes) else str(msg.value)
        doc = {"reason": reason, "topic": msg.topic, "partition": msg.partition,
               "offset": msg.offset, "value": value[:65536], "time": time.time()}
        await producer.send_and_wait(self.conf["dead-letter-topic"], json.dumps(doc).encode())
        self.metrics.dead.inc()
        log.warning("dead-lettered", extra={"fields": {"reason": reason, "offset": msg.offset}})

    async def handle(self, producer, gen: UrlGenerator, msg) -> list:
        """Turn one record into sent tasks; returns the futures of the sends."""
        self.metrics.events_in.inc()
        try:
            ev = events.parse_billing(msg.value)
        except events.EventError as e:
            await self.dead_letter(producer, msg, f"malformed event: {e}")
            return []
        rules = [r for r in self.rules if r.matches(ev)]
        if not rules:
            return []
        self.metrics.matched.inc()
        tasks = []
        try:
            for rule in rules:
                t0 = time.monotonic()
                urls = await gen.build(rule, ev)
                self.metrics.macaroon_latency.observe(time.monotonic() - t0)
                tasks.append((rule, make_task(rule, ev, urls)))
        except MacaroonFailure as e:
            await self.dead_letter(producer, msg, str(e))
            return []
        futs = []
        for rule, task in tasks:
            futs.append(await producer.send(rule.target, json.dumps(task).encode()))
            log.info("task", extra={"fields": {"target": rule.target, "task_id": task["task_id"],
                                               "path": ev.path}})
        return futs

    async def run(self) -> None:
        kc = self.conf["kafka-client"]
        bootstrap = kc["bootstrap-servers"]
        src = self.conf["source"]
        consumer = await start_consumer(bootstrap, src["topic"], kc["id"])
        producer = kafka_producer(bootstrap)
        await producer.start()
        session = aiohttp.ClientSession()
        gen = UrlGenerator(self.conf, session, self.conf["macaroon-retries"])
        self.ready = True
        try:
            while not self.stopping.is_set():
                batch = await consumer.getmany(timeout_ms=200, max_records=500)
                for tp, msgs in batch.items():
                    pending = []
                    for msg in msgs:
                        pending += await self.handle(producer, gen, msg)
                    if pending:
                        await asyncio.gather(*pending)  # broker acked every task...
                        self.metrics.tasks_out.inc(len(pending))
                    await consumer.commit({tp: msgs[-1].offset + 1})  # ...then the offset moves
        finally:
            self.ready = False
            await session.close()
            await producer.stop()
            await consumer.stop()


async def _serve_http(router: Router, host: str, port: int) -> web.AppRunner:
    app = web.Application()

    async def healthz(_req):
        ok = router.ready
        return web.json_response({"status": "ok" if ok else "starting"}, status=200 if ok else 503)

    async def metrics(_req):
        return web.Response(body=generate_latest(router.metrics.registry),
                            content_type="text/plain", charset="utf-8")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


def load_config(path: str | None) -> dict:
    conf = cfg.load("router", path, DEFAULTS)
    parse_rules(conf)
    UrlGenerator(conf, None)
    return conf


async def _main(conf: dict) -> None:
    router = Router(conf)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, router.stopping.set)
    runner = None
    if conf["listen"]["port"]:
        runner = await _serve_http(router, conf["listen"]["host"], int(conf["listen"]["port"]))
    try:
        await router.run()
    finally:
        if runner:
            await runner.cleanup()


def serve(conf_path: str | None) -> int:
    from . import log as plog
    conf = load_config(conf_path)
    plog.setup("router", conf["log-level"])
    log.info("starting", extra={"fields": {"rules": len(conf["files"]),
                                           "bootstrap": conf["kafka-client"]["bootstrap-servers"]}})
    asyncio.run(_main(conf))
    return 0
