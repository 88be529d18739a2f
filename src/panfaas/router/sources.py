"""Event sources. Each yields batches of records with a commit token, parses a record
into a StorageEvent, and commits a token once every task of its records is acked.

Interface: `start(stopping)`, `get()` -> lists of records, `token(records)`,
`parse(record)`, `origin(record)`, `value(record)`, `commit(token)`, `lag()`, `stop()`.

* `KafkaSource`: the billing topic (dynamic-processing's only source). Manual
  assignment of every partition, positions committed to the consumer group
  `kafka-client.id`, so a restarted router resumes where it left off at once.
* `panfaas.router.sse.SseSource`: dCache's inotify events over SSE.
"""

from __future__ import annotations

import asyncio
import logging

from aiokafka import TopicPartition

from .. import events
from ..kafka import start_consumer

log = logging.getLogger("panfaas.router")

# How long the broker may hold a fetch when there is nothing new. Kafka answers as soon as
# data arrives; tansu waits the full time, which would be every event's latency (aiokafka's
# default is 500 ms).
FETCH_MAX_WAIT_MS = 25


class KafkaSource:
    kind = "kafka"

    def __init__(self, conf, max_records: int = 2000):
        self.conf = conf
        self.topic = conf.source.topic
        self.max_records = max_records
        self.consumer = None
        self.status = "starting"
        self.committed: dict[TopicPartition, int] = {}

    async def start(self, stopping: asyncio.Event) -> bool:
        """Wait for the topic (a router may start before the storage creates it)."""
        warned = False
        while not stopping.is_set():
            try:
                self.consumer = await start_consumer(self.conf.bootstrap, self.topic, self.conf.client_id,
                                                     client_id=self.conf.client_id,
                                                     fetch_max_wait_ms=FETCH_MAX_WAIT_MS)
                for tp in self.consumer.assignment():  # the group's committed offsets (or the reset)
                    self.committed[tp] = await self.consumer.position(tp)
                self.status = "ok"
                return True
            except Exception as e:  # noqa: BLE001 - broker down or topic missing: keep trying, say so
                self.status = f"waiting for topic '{self.topic}' on {self.conf.bootstrap}: {e}"
                if not warned:
                    log.warning("source not ready", extra={"fields": {"reason": self.status}})
                    warned = True
                try:
                    await asyncio.wait_for(stopping.wait(), 2.0)
                except TimeoutError:
                    pass
        return False

    async def get(self, timeout_ms: int = 200) -> list[list]:
        """Lists of records, each from one partition, in offset order."""
        batch = await self.consumer.getmany(timeout_ms=timeout_ms, max_records=self.max_records)
        return [msgs for msgs in batch.values() if msgs]

    @staticmethod
    def token(records: list) -> dict:
        """What to commit once these records (of one partition) are done."""
        last = records[-1]
        return {TopicPartition(last.topic, last.partition): last.offset + 1}

    @staticmethod
    def parse(rec, kinds: frozenset | None = None) -> events.StorageEvent | None:
        """None: a well-formed record of a msgType no rule takes (not checked further)."""
        return events.parse_billing(rec.value, kinds)

    @staticmethod
    def origin(rec) -> dict:
        return {"topic": rec.topic, "partition": rec.partition, "offset": rec.offset}

    @staticmethod
    def value(rec):
        return rec.value

    async def commit(self, token: dict) -> None:
        await self.consumer.commit(token)
        self.committed.update(token)

    def lag(self) -> dict[str, int]:
        """Per partition: messages on the broker not yet committed by the router."""
        out = {}
        if not self.consumer:
            return out
        for tp in self.consumer.assignment():
            hw = self.consumer.highwater(tp)
            if hw is None:
                continue
            done = self.committed.get(tp)
            if done is not None:
                out[f"{tp.topic}/{tp.partition}"] = max(hw - done, 0)
        return out

    async def stop(self) -> None:
        if self.consumer:
            await self.consumer.stop()
            self.consumer = None
