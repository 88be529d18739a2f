"""Billing records on Kafka, as a dCache pool and WebDAV door send them.

Every completed upload and every download gives a pool `transfer` and a door
`request` (with `moverInfo`); a DELETE gives a door `remove` and a pool
`remove`. Records are JSON with a null Kafka key on the `billing` topic
(configurable), published in order from one asyncio loop; the request thread
waits for the broker's acknowledgement, so an event is on the broker before
the client gets its answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import secrets
import threading

from .. import events
from ..kafka import producer as kafka_producer
from . import metrics
from .auth import Identity

log = logging.getLogger("panfaas.storage.billing")

# CacheException.UNEXPECTED_SYSTEM_EXCEPTION: what dCache bills a failed transfer with.
UNEXPECTED_SYSTEM_EXCEPTION = 10006


class BillingEmitter:
    """Publishes billing messages from WSGI worker threads via one asyncio loop."""

    def __init__(self, bootstrap: str | None, topic: str, timeout: float = 10.0):
        self.topic = topic
        self.bootstrap = bootstrap
        self.timeout = timeout
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

    def emit(self, *messages: dict) -> None:
        """Send in order and wait for the broker's ack (key null, as dCache does).

        A failure is logged and counted, never raised: the transfer itself happened."""
        if not self.producer:
            return

        async def send():
            futs = [await self.producer.send(self.topic, json.dumps(m).encode()) for m in messages]
            await asyncio.gather(*futs)

        try:
            asyncio.run_coroutine_threadsafe(send(), self.loop).result(self.timeout)
        except Exception as e:  # noqa: BLE001 - the client's transfer succeeded; say loudly that its event did not
            metrics.BILLING_FAILED.inc(len(messages))
            log.error("billing event not published", extra={"fields": {
                "msgTypes": [m.get("msgType") for m in messages], "error": repr(e),
                "path": messages[0].get("billingPath") if messages else None}})
            return
        for m in messages:
            metrics.BILLING.labels(m["msgType"], m["cellType"]).inc()

    def stop(self) -> None:
        if self.producer:
            asyncio.run_coroutine_threadsafe(self.producer.stop(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


@dataclasses.dataclass
class Pool:
    name: str = "pool1"
    domain: str = "aioDomain"
    door: str = "WebDAV-aio"
    storage_info: str = "aio:disk@osm"
    local_endpoint: str | None = None


class Biller:
    """Builds dCache's records for one namespace operation and emits them."""

    def __init__(self, emitter: BillingEmitter, pool: Pool):
        self.emitter = emitter
        self.pool = pool

    def session(self) -> str:
        return f"door:{self.pool.door}@{self.pool.domain}:{secrets.token_urlsafe(8)}"

    def transfer(self, ident: Identity, *, path: str, pnfsid: str, size: int, moved: int,
                 is_write: bool, seconds: float, client_port: int,
                 status: tuple[int, str] = (0, "")) -> None:
        p = self.pool
        session = self.session()
        ms = int(seconds * 1000)
        transfer = events.billing_transfer(
            path=path, pnfsid=pnfsid, size=size, transfer_size=moved, is_write=is_write,
            client=ident.client, client_port=client_port, user=ident.username, uid=ident.uid,
            gid=ident.gid, session=session, transfer_ms=ms, cell=p.name, domain=p.domain,
            door=p.door, storage_info=p.storage_info, status=status,
            local_endpoint=p.local_endpoint)
        request = events.billing_request(transfer, user=ident.username, uid=ident.uid,
                                         gid=ident.gid, client=ident.client, door=p.door,
                                         domain=p.domain, session_ms=ms)
        self.emitter.emit(transfer, request)

    def remove(self, ident: Identity, *, path: str, pnfsid: str, size: int) -> None:
        p = self.pool
        session = self.session()
        common = dict(path=path, pnfsid=pnfsid, size=size, user=ident.username, uid=ident.uid,
                      gid=ident.gid, client=ident.client, session=session, domain=p.domain,
                      storage_info=p.storage_info)
        door = events.billing_remove(cell_type="door", cell=p.door, **common)
        pool = events.billing_remove(cell_type="pool", cell=p.name, **common)
        self.emitter.emit(door, pool)
