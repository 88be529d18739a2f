"""The router service: source -> rules -> URLs -> tasks, at least once.

The loop takes records from the source in chunks. For each record of a chunk: parse it
(malformed -> dead letter with the reason), match every rule, build the URLs, make one task
per matching rule. Tasks whose URLs need no storage door are appended to one record batch per
target and sent when the chunk is done; those that need macaroons (or MKCOL) run as tasks of
their own, up to `url-generator.concurrency` requests in flight, while later chunks are read
(the read-ahead is bounded). A chunk's commit token is handed to the source only once the
broker has acknowledged everything sent for it and for every chunk before it.

A send that fails for good (the broker lost for longer than the producer's delivery timeout)
stops the router with an error before anything later is committed: the supervisor restarts it
and it resumes from the last commit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter as Tally
from collections import deque

import orjson
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from .. import events
from ..kafka import ensure_topics
from ..kafka import producer as kafka_producer
from .config import RouterConfig
from .rules import matching_rules, wanted_kinds
from .sources import KafkaSource
from .tasks import dead_letter, event_digest, make_task, task_id
from .urls import UrlFailure, UrlGenerator

log = logging.getLogger("panfaas.router")

MAX_PENDING_BATCHES = 16     # batches sent but not yet acknowledged
# Records per chunk: the unit of commits (and of work redone after a kill -9). Small when rules
# wait for the storage door; large otherwise, so that each produce request carries many tasks.
CHUNK_WITH_MACAROONS = 256
CHUNK = 2000
PROGRESS_EVERY = 60.0        # seconds between progress log lines
TASK_LINES_PER_SECOND = 100  # `task` log lines; more are only counted


class Metrics:
    def __init__(self):
        self.registry = r = CollectorRegistry()
        self.events_in = Counter("router_events_in", "Source records consumed", ["source"], registry=r)
        self.matched = Counter("router_events_matched", "Events taken by at least one rule", registry=r)
        self.tasks_out = Counter("router_tasks_out", "Tasks acknowledged by the broker", ["target"], registry=r)
        self.dead = Counter("router_dead_lettered", "Records sent to the dead-letter topic, by stage",
                            ["stage"], registry=r)
        self.macaroon_latency = Histogram(
            "router_macaroon_request_seconds", "Macaroon requests to the storage door (with retries)",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30), registry=r)
        self.lag = Gauge("router_consumer_lag", "Source messages not yet committed, per partition",
                         ["partition"], registry=r)
        self.pending = Gauge("router_batches_in_flight", "Batches sent, waiting for broker acks", registry=r)
        self.totals = Tally()   # plain numbers for /healthz and the progress log

    def count(self, name: str, n: int = 1) -> None:
        self.totals[name] += n


class Batcher:
    """The tasks of one chunk of records, appended to one record batch per target topic and sent
    together (aiokafka's batch API: far less work per message than a send() each). Partitions
    are taken in turn, batch by batch (the tasks' key is null, as dynamic-processing's)."""

    def __init__(self, producer, partitions: dict):
        self.producer = producer
        self.partitions = partitions      # topic -> [partition ids, next index], shared by the router
        self.open: dict = {}              # topic -> (batch, count)

    async def add(self, topic: str, value: bytes) -> list:
        sent = []
        batch, n = self.open.get(topic) or (self.producer.create_batch(), 0)
        if batch.append(key=None, value=value, timestamp=None) is None:   # full: send it, start another
            sent.append(await self._send(topic, batch, n))
            batch, n = self.producer.create_batch(), 0
            if batch.append(key=None, value=value, timestamp=None) is None:
                raise ValueError(f"a task of {len(value)} bytes does not fit in a record batch")
        self.open[topic] = (batch, n + 1)
        return sent

    async def flush(self) -> list:
        sent = [await self._send(topic, batch, n) for topic, (batch, n) in self.open.items()]
        self.open = {}
        return sent

    async def _send(self, topic: str, batch, n: int):
        known = self.partitions.get(topic)
        if known is None:
            known = self.partitions[topic] = [sorted(await self.producer.partitions_for(topic)), 0]
        ids, i = known
        known[1] = (i + 1) % len(ids)
        # send_batch waits until the partition's previous batch has gone out: not here, in a task,
        # so that the next chunk is processed meanwhile.
        return ("task", topic, n), asyncio.ensure_future(self._acked(batch, topic, ids[i]))

    async def _acked(self, batch, topic: str, partition: int):
        return await (await self.producer.send_batch(batch, topic, partition=partition))


class Router:
    def __init__(self, conf: RouterConfig, *, source=None):
        self.conf = conf
        self.rules = conf.rules
        self.kinds = wanted_kinds(conf.rules)
        self.chunk = CHUNK_WITH_MACAROONS if any(r.needs_network for r in conf.rules) else CHUNK
        self.metrics = Metrics()
        self.gen = UrlGenerator(conf, observe=self.metrics.macaroon_latency.observe)
        self.source = source or make_source(conf)
        self.stopping = asyncio.Event()
        self.ready = False
        self.error: str | None = None
        self.waiting: str | None = None   # why it cannot start yet (the broker), for /healthz
        self.producer = None
        self.pending: deque = deque()
        self.last_poll = 0.0
        self._sem = asyncio.Semaphore(conf.concurrency)
        self._committing: asyncio.Task | None = None
        self._slow_inflight = 0
        self._log_window, self._log_budget = 0.0, TASK_LINES_PER_SECOND
        self._to_commit = None
        self._partitions: dict = {}
        self._last_progress = time.monotonic()

    # -- one batch -------------------------------------------------------------
    async def _send(self, topic: str, doc: dict):
        return await self.producer.send(topic, orjson.dumps(doc))

    async def _dead(self, rec, reason: str, stage: str, rule=None, tid=None):
        doc = dead_letter(reason, stage=stage, origin=self.source.origin(rec), value=self.source.value(rec),
                          router=self.conf.client_id, target=rule.target if rule else None, task_id=tid)
        log.warning("dead-lettered", extra={"fields": {"reason": reason, "stage": stage,
                                                       **self.source.origin(rec)}})
        return ("dead", stage, 1), await self._send(self.conf.dead_letter_topic, doc)

    async def _slow(self, rec, ev, rule, digest):
        """A rule whose URLs need the storage door (macaroons, MKCOL): runs as its own task,
        so that later records are read (and their requests made) while it waits.
        Returns its (kind, label) once the broker has acknowledged what it sent."""
        self._slow_inflight += 1
        try:
            return await self._slow_build(rec, ev, rule, digest)
        finally:
            self._slow_inflight -= 1

    async def _slow_build(self, rec, ev, rule, digest):
        async with self._sem:
            try:
                urls = await self.gen.build(rule, ev)
            except UrlFailure as e:
                label, fut = await self._dead(rec, str(e), "urls", rule, task_id(rule, ev, digest))
            else:
                task = make_task(rule, ev, urls, digest)
                label, fut = ("task", rule.target, 1), await self._send(rule.target, task)
                self._log_task(rule, ev, task)
        await fut
        return label

    def _log_task(self, rule, ev, task) -> None:
        """A `task` log line per task, up to TASK_LINES_PER_SECOND (a line costs more than routing
        the event); beyond that they are counted in the `progress` line. debug: every one."""
        now = time.monotonic()
        if now - self._log_window >= 1.0:
            self._log_window, self._log_budget = now, TASK_LINES_PER_SECOND
        if self._log_budget > 0 or log.isEnabledFor(logging.DEBUG):
            self._log_budget -= 1
            log.info("task", extra={"fields": {"target": rule.target, "path": ev.path, "task_id": task["task_id"]}})
        else:
            self.metrics.count("task_lines_skipped")

    async def process(self, records) -> list:
        """Send (or start) everything one batch of records gives; returns [((kind, label, count),
        future)], where the future is done once the broker acknowledged it (None: the future says)."""
        out = []
        batcher = Batcher(self.producer, self._partitions)
        matched = 0
        parse, gen, kinds = self.source.parse, self.gen, self.kinds
        for rec in records:
            try:
                ev = parse(rec, kinds)
            except events.EventError as e:
                out.append(await self._dead(rec, f"malformed event: {e}", "parse"))
                continue
            if ev is None:
                continue
            rules = matching_rules(self.rules, ev)
            if not rules:
                continue
            matched += 1
            digest = event_digest(ev)
            for rule in rules:
                if rule.needs_network:
                    out.append((None, asyncio.ensure_future(self._slow(rec, ev, rule, digest))))
                    continue
                try:
                    urls = gen.build_bare(rule, ev)
                except UrlFailure as e:
                    out.append(await self._dead(rec, str(e), "urls", rule, task_id(rule, ev, digest)))
                    continue
                task = make_task(rule, ev, urls, digest)
                out += await batcher.add(rule.target, orjson.dumps(task))
                self._log_task(rule, ev, task)
        out += await batcher.flush()
        self.metrics.events_in.labels(self.source.kind).inc(len(records))
        self.metrics.count("events_in", len(records))
        if matched:
            self.metrics.matched.inc(matched)
            self.metrics.count("matched", matched)
        return out

    # -- acks and commits ------------------------------------------------------
    async def settle(self, block: bool) -> None:
        """Commit the tokens of the oldest batches whose sends are all acknowledged."""
        token: dict = {}
        done_batches = 0
        while self.pending:
            batch_token, sent = self.pending[0]
            if not all(f.done() for _, f in sent):
                if not (block or len(self.pending) > MAX_PENDING_BATCHES):
                    break
                await asyncio.gather(*(f for _, f in sent))
            self.pending.popleft()
            tasks, dead = Tally(), Tally()
            for what, f in sent:
                result = f.result()  # a send that failed for good raises here: nothing later is committed
                kind, label, n = what or result
                (tasks if kind == "task" else dead)[label] += n
            for target, n in tasks.items():
                self.metrics.tasks_out.labels(target).inc(n)
                self.metrics.count("tasks_out", n)
            for stage, n in dead.items():
                self.metrics.dead.labels(stage).inc(n)
                self.metrics.count("dead_lettered", n)
            token = self._merge(token, batch_token)
            done_batches += 1
        if done_batches:
            self._commit_soon(token)
        if block:
            await self._flush_commits()
        self.metrics.pending.set(len(self.pending))
        for part, lag in self.source.lag().items():
            self.metrics.lag.labels(part).set(lag)

    def _commit_soon(self, token) -> None:
        """Commit in the background, one commit at a time, never going back."""
        self._to_commit = token if self._to_commit is None else self._merge(self._to_commit, token)
        if self._committing is not None:
            if not self._committing.done():
                return
            self._committing.result()  # a failed commit stops the router (it resumes from the last good one)
        token, self._to_commit = self._to_commit, None
        self._committing = asyncio.create_task(self.source.commit(token))

    async def _flush_commits(self) -> None:
        if self._committing is not None:
            await self._committing
            self._committing = None
        if self._to_commit is not None:
            token, self._to_commit = self._to_commit, None
            await self.source.commit(token)

    @staticmethod
    def _merge(a, b):
        if isinstance(b, dict):
            return {**a, **b}
        return b  # SSE: the newest event id

    # -- the loop --------------------------------------------------------------
    async def run(self) -> None:
        conf = self.conf
        self.producer = kafka_producer(conf.bootstrap, linger_ms=5, max_batch_size=1024 * 1024,
                                       client_id=conf.client_id)
        await self._start_producer()
        if self.stopping.is_set():   # stopped before the broker was there (or right after)
            await self.producer.stop()
            return
        await self.gen.start()
        try:
            if not await self.source.start(self.stopping):
                return
            self.ready = True
            log.info("routing", extra={"fields": {"source": self.source.kind, "rules": len(self.rules),
                                                  "targets": conf.targets}})
            while not self.stopping.is_set():
                batches = await self.source.get()
                self.last_poll = time.monotonic()
                for records in batches:
                    for i in range(0, len(records), self.chunk):
                        chunk = records[i:i + self.chunk]
                        self.pending.append((self.source.token(chunk), await self.process(chunk)))
                        await self.settle(block=False)
                        # Read ahead of the storage door only so far: what is in flight is redone after a crash.
                        while self._slow_inflight > 4 * conf.concurrency and self.pending:
                            await asyncio.gather(*(f for _, f in self.pending[0][1]))
                            await self.settle(block=False)
                await self.settle(block=not batches)
                self._progress()
            await self.settle(block=True)
        except Exception as e:
            self.error = f"{type(e).__name__}: {e}"
            log.error("router stopped", extra={"fields": {"error": self.error}}, exc_info=True)
            raise
        finally:
            self.ready = False
            await self.source.stop()
            await self.gen.close()
            await self.producer.stop()

    async def _start_producer(self) -> None:
        warned = False
        while not self.stopping.is_set():
            try:
                await self.producer.start()
                try:  # targets and dead-letter topic exist before the first send (Kafka may not auto-create)
                    await ensure_topics(self.conf.bootstrap, [*self.conf.targets, self.conf.dead_letter_topic])
                except Exception as e:  # noqa: BLE001 - not fatal: an admin may have created them, sends tell
                    log.warning("could not ensure topics", extra={"fields": {"error": repr(e)}})
                self.waiting = None
                return
            except Exception as e:  # noqa: BLE001 - broker not up yet: keep trying, say so once
                self.waiting = f"waiting for the broker at {self.conf.bootstrap}: {e!r}"
                if not warned:
                    log.warning("broker not reachable, retrying",
                                extra={"fields": {"bootstrap": self.conf.bootstrap, "error": repr(e)}})
                    warned = True
                try:
                    await asyncio.wait_for(self.stopping.wait(), 2.0)
                except TimeoutError:
                    pass

    def _progress(self) -> None:
        now = time.monotonic()
        if now - self._last_progress >= PROGRESS_EVERY:
            self._last_progress = now
            log.info("progress", extra={"fields": {**self.metrics.totals, "lag": self.source.lag()}})

    def health(self) -> tuple[int, dict]:
        body = {"status": "ok", "source": self.source.kind,
                "source_status": self.waiting or getattr(self.source, "status", ""),
                **self.metrics.totals, "lag": self.source.lag(), "batches_in_flight": len(self.pending)}
        if self.error:
            body["status"], body["error"] = "failed", self.error
            return 503, body
        if not self.ready:
            body["status"] = "starting"
            return 503, body
        if time.monotonic() - self.last_poll > 120:
            body["status"] = "stalled"  # e.g. stuck on a storage door that does not answer
            return 503, body
        return 200, body


def make_source(conf: RouterConfig):
    if conf.source.type == "sse":
        from .sse import SseSource
        return SseSource(conf)
    return KafkaSource(conf)


async def serve_http(router: Router, host: str, port: int) -> web.AppRunner:
    app = web.Application()

    async def healthz(_req):
        status, body = router.health()
        return web.json_response(body, status=status)

    async def metrics(_req):
        return web.Response(body=generate_latest(router.metrics.registry), content_type="text/plain",
                            charset="utf-8")

    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner


async def main(conf: RouterConfig) -> int:
    router = Router(conf)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, router.stopping.set)
    runner = await serve_http(router, conf.listen_host, conf.listen_port) if conf.listen_port else None
    try:
        await router.run()
        return 0
    except Exception:  # noqa: BLE001 - logged by run(); the exit status tells the supervisor
        return 1
    finally:
        if runner:
            await runner.cleanup()
        log.info("stopped", extra={"fields": dict(router.metrics.totals)})
