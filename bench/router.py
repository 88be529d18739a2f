#!/usr/bin/env python3
"""Event router throughput and latency, against a raw consume+produce through the same broker.

    .venv/bin/python bench/router.py                 # about a minute
    .venv/bin/python bench/router.py --events 200000 --macaroon-events 10000

Throughput (records already on the source topic; the clock runs from the first record
fetched to the last message acknowledged and committed):
* raw:    consume billing, produce each value unchanged to another topic, commit (the baseline);
* router: billing -> rules -> tasks, URLs without macaroons (issue targets: >= 0.5 of raw and
          >= 20,000 events/s);
* router with macaroons: two macaroons per upload from the real storage element; its baseline
          is the storage door's own minting rate, measured with the same concurrency.
The records are what dCache publishes for an upload: the pool's `transfer` and the door's
`request`; the router makes one task of each pair. "events/s" counts records.

Latency: uploads paced at --rate per second (--macaroon-rate with macaroons) through each
pipeline, each in its own process (`panfaas router serve`, and the raw pipe), from the bench's
send to its receipt of the task; the router's added latency is its figure minus the raw pipe's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
sys.path.insert(0, str(REPO / "src"))

import aiohttp  # noqa: E402
import yaml  # noqa: E402

from panfaas import events, router  # noqa: E402
from panfaas.kafka import ensure_topics, start_consumer  # noqa: E402
from panfaas.kafka import producer as kafka_producer  # noqa: E402
from panfaas.router.service import CHUNK, Batcher, Router  # noqa: E402
from panfaas.router.sources import FETCH_MAX_WAIT_MS  # noqa: E402
from panfaas.router.urls import basic_auth  # noqa: E402
from services import free_port, start_broker, start_storage, wait_healthz  # noqa: E402


def upload_records(n_uploads: int, prefix: str = "b") -> list[bytes]:
    out = []
    for i in range(n_uploads):
        path = f"/data/{prefix}/run{i // 1000:03d}/frame{i:06d}.h5"
        t = events.billing_transfer(path=path, pnfsid=f"0000{i:032X}", size=4_624_848, is_write=True,
                                    client="127.0.0.1", client_port=40000 + i % 20000, user="admin", uid=1000,
                                    gid=1000, session=f"door:WebDAV-aio@aioDomain:{prefix}{i}", transfer_ms=155)
        r = events.billing_request(t, user="admin", uid=1000, gid=1000, client="127.0.0.1")
        out += [json.dumps(t).encode(), json.dumps(r).encode()]
    return out


async def preload(bootstrap: str, topic: str, values: list[bytes]) -> None:
    await ensure_topics(bootstrap, [topic])
    p = kafka_producer(bootstrap, linger_ms=5, max_batch_size=256 * 1024)
    await p.start()
    try:
        futs = [await p.send(topic, v) for v in values]
        await asyncio.gather(*futs)
    finally:
        await p.stop()


async def raw_pipe(bootstrap: str, src: str, dst: str, expected: int | None, group: str) -> float:
    """The baseline: consume src, produce every value unchanged to dst, commit once acked.
    Pipelined and batched like the router (chunks of records appended to record batches,
    several in flight, commits after their acks), so that the comparison is about what the
    router does with each record. Returns seconds."""
    consumer = await start_consumer(bootstrap, src, group, fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
    producer = kafka_producer(bootstrap, linger_ms=5, max_batch_size=1024 * 1024)
    await producer.start()
    done, t0, pending, partitions = 0, None, [], {}

    async def settle(keep: int):
        while len(pending) > keep:
            tp, offset, futs = pending.pop(0)
            await asyncio.gather(*futs)
            await consumer.commit({tp: offset})
    try:
        while expected is None or done < expected:
            batch = await consumer.getmany(timeout_ms=200, max_records=2000)
            for tp, msgs in batch.items():
                if t0 is None:
                    t0 = time.perf_counter()
                for i in range(0, len(msgs), CHUNK):
                    chunk = msgs[i:i + CHUNK]
                    batcher = Batcher(producer, partitions)       # the router's way of sending
                    futs = []
                    for m in chunk:
                        futs += [f for _, f in await batcher.add(dst, m.value)]
                    futs += [f for _, f in await batcher.flush()]
                    pending.append((tp, chunk[-1].offset + 1, futs))
                    done += len(chunk)
                await settle(16)
            if not batch:
                await settle(0)
        await settle(0)
        return time.perf_counter() - (t0 or time.perf_counter())
    finally:
        await producer.stop()
        await consumer.stop()


class TimedRouter(Router):
    """The router as it runs in production, with a stopwatch: first record in, last task committed."""

    def __init__(self, conf, expected_records: int):
        super().__init__(conf)
        self.expected = expected_records
        self.t_first = self.t_done = None

    async def process(self, records):
        if self.t_first is None:
            self.t_first = time.perf_counter()
        return await super().process(records)

    async def settle(self, block):
        await super().settle(block)
        if self.t_done is None and self.metrics.totals["events_in"] >= self.expected and not self.pending:
            await self._flush_commits()
            self.t_done = time.perf_counter()
            self.stopping.set()


def router_conf(bootstrap: str, src: str, target: str, storage=None, concurrency: int = 16) -> dict:
    macaroon = {"with-macaroon": {"activity": "DOWNLOAD"}} if storage else {}
    upload = {"with-macaroon": {"activity": "UPLOAD"}} if storage else {}
    conf = {"kafka-client": {"id": f"bench-{target}", "bootstrap-servers": bootstrap},
            "url-generator": {"base": storage.url + "/" if storage else "https://dcache.example.org/",
                              "concurrency": concurrency},
            "files": [{"target": target, "path-predicate": {"matching": r"/data/.*\.h5"},
                       "urls": {"read": macaroon,
                                "write": {**upload, "derived-path": {"replacing": r"([^/]*)\.h5$",
                                                                     "with": r"\1.png"}}}}],
            "source": {"type": "kafka", "topic": src}, "dead-letter-topic": f"{target}-dead",
            "log-level": "warning"}
    if storage:
        conf["url-generator"]["macaroons"] = {"username": "router", "password": storage.users["router"]["password"],
                                              "default-lifetime": "PT1H"}
    return conf


async def run_router(conf: dict, records: int) -> tuple[float, dict]:
    r = TimedRouter(router.from_dict(conf), records)
    await r.run()
    return r.t_done - r.t_first, dict(r.metrics.totals)


async def door_rate(storage, n: int, concurrency: int) -> float:
    """Macaroons/s the storage door mints at this concurrency (the macaroon mode's ceiling)."""
    auth = {"Authorization": basic_auth("router", storage.users["router"]["password"]),
            "Content-Type": "application/macaroon-request"}
    sem = asyncio.Semaphore(concurrency)
    body = json.dumps({"caveats": ["activity:DOWNLOAD"], "validity": "PT1H"})
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=concurrency)) as s:
        async def one(i):
            async with sem, s.post(f"{storage.url}/data/door/f{i}.h5", data=body, headers=auth) as r:
                assert r.status == 200, await r.text()
                await r.read()
        t0 = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(n)))
        return n / (time.perf_counter() - t0)


# -- latency ------------------------------------------------------------------

async def paced_latency(bootstrap: str, src: str, dst: str, n_uploads: int, rate: float, prefix: str,
                        path_of) -> list[float]:
    """Send uploads at `rate`/s; seconds from each send to the receipt of its output message."""
    consumer = await start_consumer(bootstrap, dst, f"lat-{dst}", offset_reset="latest", fetch_max_wait_ms=5)
    for tp in consumer.assignment():
        await consumer.seek_to_end(tp)
    producer = kafka_producer(bootstrap, linger_ms=0)
    await producer.start()
    sent: dict[str, float] = {}
    latencies: list[float] = []
    records = upload_records(n_uploads, prefix)

    async def receive():
        while len(latencies) < n_uploads:
            batch = await consumer.getmany(timeout_ms=100)
            now = time.perf_counter()
            for msgs in batch.values():
                for m in msgs:
                    p = path_of(json.loads(m.value))
                    if p in sent:
                        latencies.append(now - sent.pop(p))
    rx = asyncio.create_task(receive())
    try:
        t0 = time.perf_counter()
        for i in range(n_uploads):
            delay = t0 + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            transfer, request = records[2 * i], records[2 * i + 1]
            sent[json.loads(transfer)["transferPath"]] = time.perf_counter()
            await producer.send(src, transfer)
            await producer.send(src, request)
        await asyncio.wait_for(rx, 60)
    finally:
        rx.cancel()
        await producer.stop()
        await consumer.stop()
    return latencies


def pct(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))] * 1000


def raw_pipe_main(argv: list[str]) -> None:
    bootstrap, src, dst = argv
    asyncio.run(raw_pipe(bootstrap, src, dst, None, f"rawpipe-{dst}"))


async def latency_of(name: str, argv: list[str], health: str | None, bootstrap: str, src: str, dst: str,
                     n: int, rate: float, path_of, workdir: Path) -> list[float]:
    log = open(workdir / f"{name}.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        if health:
            wait_healthz(health, 30)
        else:
            await asyncio.sleep(3)
        await paced_latency(bootstrap, src, dst, 20, rate, f"warm{name}", path_of)   # connections warm
        return await paced_latency(bootstrap, src, dst, n, rate, f"lat{name}", path_of)
    finally:
        proc.terminate()
        proc.wait(20)
        log.close()


async def main(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench-router-"))
    broker = start_broker(work)
    bs = broker.bootstrap
    storage = start_storage(work / "storage", None) if args.macaroon_events else None
    try:
        n_up = args.events // 2
        records = upload_records(n_up)
        print(f"router bench: {len(records)} billing records ({n_up} uploads: pool transfer + door request), "
              f"broker tansu at {bs}")
        await preload(bs, "raw-src", records)
        await preload(bs, "router-src", records)
        await ensure_topics(bs, ["raw-dst", "tasks", "tasks-dead"])

        c0 = time.process_time()
        raw_s = await raw_pipe(bs, "raw-src", "raw-dst", len(records), "bench-raw")
        raw_cpu = (time.process_time() - c0) / len(records) * 1e6
        raw = len(records) / raw_s
        c0 = time.process_time()
        rt_s, totals = await run_router(router_conf(bs, "router-src", "tasks"), len(records))
        rt_cpu = (time.process_time() - c0) / len(records) * 1e6
        assert totals["tasks_out"] == n_up and not totals.get("dead_lettered"), totals
        rt = len(records) / rt_s
        print("\nthroughput (events/s; a task per upload, so tasks/s is half; CPU: this process, per record)")
        print(f"  raw consume+produce         {raw:10,.0f} /s   ({raw_s:.2f} s)   CPU {raw_cpu:5.1f} us")
        print(f"  router, no macaroons        {rt:10,.0f} /s   ({rt_s:.2f} s)   CPU {rt_cpu:5.1f} us   "
              f"ratio {rt / raw:.2f} (CPU {raw_cpu / rt_cpu:.2f})")
        print(f"  targets: >= 0.50 of raw {'met' if rt / raw >= 0.5 else 'MISSED'}; "
              f">= 20,000 events/s {'met' if rt >= 20000 else 'MISSED'}")

        if storage:
            m_up = args.macaroon_events // 2
            m_records = upload_records(m_up, "m")
            await preload(bs, "mac-src", m_records)
            await ensure_topics(bs, ["mac-tasks", "mac-tasks-dead"])
            await door_rate(storage, 500, args.concurrency)      # warm: connections, the door's threads
            door = await door_rate(storage, min(4000, 2 * m_up), args.concurrency)
            mt_s, totals = await run_router(router_conf(bs, "mac-src", "mac-tasks", storage, args.concurrency),
                                            len(m_records))
            assert totals["tasks_out"] == m_up and not totals.get("dead_lettered"), totals
            mt = len(m_records) / mt_s
            print(f"  router, 2 macaroons/upload  {mt:10,.0f} /s   ({mt_s:.2f} s)   ratio to raw {mt / raw:.3f}")
            print(f"  storage door alone          {door:10,.0f} macaroons/s (concurrency {args.concurrency}); "
                  f"the router uses {2 * m_up / mt_s:,.0f}/s of it = {(2 * m_up / mt_s) / door:.2f}")

        if args.latency_uploads:
            n = args.latency_uploads
            print(f"\nlatency (ms, {n} uploads at {args.rate:g}/s, with macaroons at {args.macaroon_rate:g}/s; "
                  "send -> receipt of the output message)")
            await ensure_topics(bs, ["lat-raw-src", "lat-raw-dst", "lat-src", "lat-tasks", "lat-mac-src",
                                     "lat-mac-tasks"])
            rows = {}
            rows["raw consume+produce"] = await latency_of(
                "raw", [sys.executable, __file__, "--raw-pipe", bs, "lat-raw-src", "lat-raw-dst"], None, bs,
                "lat-raw-src", "lat-raw-dst", n, args.rate, lambda v: v.get("transferPath") if
                v.get("msgType") == "transfer" else None, work)
            runs = [("router, no macaroons", "lat-src", "lat-tasks", None, args.rate)]
            if storage:
                runs.append(("router, 2 macaroons", "lat-mac-src", "lat-mac-tasks", storage, args.macaroon_rate))
            for name, src, dst, st, rate in runs:
                conf = router_conf(bs, src, dst, st, args.concurrency)
                conf["listen"] = {"host": "127.0.0.1", "port": free_port()}
                path = work / f"{dst}.yml"
                path.write_text(yaml.safe_dump(conf))
                rows[name] = await latency_of(
                    dst, [str(Path(sys.executable).parent / "panfaas"), "router", "serve", "--config", str(path)],
                    f"http://127.0.0.1:{conf['listen']['port']}/healthz", bs, src, dst, n, rate,
                    lambda v: v["event"]["path"], work)
            base50, base99 = pct(rows["raw consume+produce"], 0.5), pct(rows["raw consume+produce"], 0.99)
            for name, lat in rows.items():
                p50, p99 = pct(lat, 0.5), pct(lat, 0.99)
                added = "" if name.startswith("raw") else f"   added by the router: p50 {p50 - base50:+.1f}  " \
                                                         f"p99 {p99 - base99:+.1f}"
                print(f"  {name:26} p50 {p50:6.1f}  p99 {p99:6.1f}  mean {statistics.mean(lat) * 1000:6.1f}{added}")
    finally:
        if storage:
            storage.proc.stop()
        broker.proc.stop()


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--raw-pipe":
        raw_pipe_main(sys.argv[2:])
        sys.exit(0)
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="billing records for the throughput runs")
    ap.add_argument("--macaroon-events", type=int, default=4000, help="records for the macaroon run (0: skip)")
    ap.add_argument("--concurrency", type=int, default=16, help="macaroon requests in flight")
    ap.add_argument("--latency-uploads", type=int, default=1000, help="uploads per latency run (0: skip)")
    ap.add_argument("--rate", type=float, default=200.0, help="uploads per second in the latency runs")
    ap.add_argument("--macaroon-rate", type=float, default=50.0,
                    help="uploads per second in the latency run with macaroons (2 requests each to the door)")
    asyncio.run(main(ap.parse_args()))
