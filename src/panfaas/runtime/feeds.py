"""The Kafka feed provider: what openwhisk-package-kafka's provider does, in process.

A trigger created with the `/whisk.system/messaging/kafkaFeed` feed gets one
consumer (group id = the trigger's fully qualified name). Messages are fired
at the trigger in `{"messages": [...]}` batches of at most 900 kB; the
offsets are committed only after the fire was accepted (2xx), so delivery to
the trigger is at-least-once. A new feed starts at the topic's end, like the
real provider, and pins that position with a commit before CREATE returns.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from collections.abc import Awaitable, Callable

from ..kafka import start_consumer

log = logging.getLogger("panfaas.runtime.feeds")

PAYLOAD_LIMIT = 900_000
FEED_ACTION = "/whisk.system/messaging/kafkaFeed"

# fire(namespace, trigger_name, payload) -> HTTP-like status code
FireFn = Callable[[str, str, dict], Awaitable[int]]


class FeedError(ValueError):
    pass


def validate(params: dict) -> dict:
    brokers = params.get("brokers")
    if isinstance(brokers, str):
        try:
            brokers = json.loads(brokers)
        except json.JSONDecodeError:
            brokers = [b.strip() for b in brokers.split(",") if b.strip()]
    if not isinstance(brokers, list) or not brokers or not all(isinstance(b, str) for b in brokers):
        raise FeedError("You must supply a 'brokers' parameter: a list of host:port strings.")
    topic = params.get("topic")
    if not isinstance(topic, str) or not topic:
        raise FeedError("You must supply a 'topic' parameter.")
    flags = {k: bool(params.get(k, False)) for k in ("isJSONData", "isBinaryKey", "isBinaryValue")}
    if flags["isJSONData"] and flags["isBinaryValue"]:
        raise FeedError("isJSONData and isBinaryValue cannot both be enabled.")
    return {"brokers": brokers, "topic": topic, **flags}


def message_payload(msg, conf: dict) -> dict:
    value = msg.value
    if value is not None:
        if conf["isBinaryValue"]:
            value = base64.b64encode(value).decode()
        else:
            value = value.decode("utf-8", "replace")
            if conf["isJSONData"]:
                try:
                    value = json.loads(value)
                except json.JSONDecodeError:
                    pass  # best effort, as the real provider: the string stays a string
    key = msg.key
    if key is not None:
        key = base64.b64encode(key).decode() if conf["isBinaryKey"] else key.decode("utf-8", "replace")
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "key": key,
            "value": value}


class Feed:
    def __init__(self, namespace: str, trigger: str, conf: dict, fire: FireFn):
        self.namespace, self.trigger, self.conf, self.fire = namespace, trigger, conf, fire
        self.group = f"/{namespace}/{trigger}"
        self.task: asyncio.Task | None = None
        self.consumer = None
        self.held = None  # a message that did not fit the previous batch

    async def start(self) -> None:
        self.consumer = await start_consumer(",".join(self.conf["brokers"]), self.conf["topic"],
                                             self.group, offset_reset="latest")
        # Pin the starting position so that nothing produced from now on is missed.
        positions = {}
        for tp in self.consumer.assignment():
            committed = await self.consumer.committed(tp)
            if committed is None:
                positions[tp] = await self.consumer.position(tp)
        if positions:
            await self.consumer.commit(positions)
        self.task = asyncio.create_task(self.loop(), name=f"feed {self.group}")

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
        if self.consumer:
            await self.consumer.stop()

    async def next_batch(self) -> tuple[list[dict], dict]:
        batch, size, offsets = [], 2, {}
        if self.held is not None:
            m, self.held = self.held, None
            batch.append(m[0])
            size += m[1]
            offsets[m[2]] = m[0]["offset"] + 1
        while True:
            got = await self.consumer.getmany(timeout_ms=100 if batch else 1000, max_records=500)
            if not got:
                return batch, offsets
            items = list(got.items())
            for i, (tp, msgs) in enumerate(items):
                for msg in msgs:
                    payload = message_payload(msg, self.conf)
                    n = len(json.dumps(payload)) + 1
                    if n > PAYLOAD_LIMIT:
                        log.error("message larger than the feed payload limit skipped",
                                  extra={"fields": {"trigger": self.group, "offset": msg.offset,
                                                    "bytes": n}})
                        offsets[tp] = msg.offset + 1
                        continue
                    if size + n > PAYLOAD_LIMIT:
                        # Hold it for the next batch; rewind the rest of this fetch.
                        self.held = (payload, n, tp)
                        self.consumer.seek(tp, msg.offset + 1)
                        for later_tp, later in items[i + 1:]:
                            self.consumer.seek(later_tp, later[0].offset)
                        return batch, offsets
                    batch.append(payload)
                    size += n
                    offsets[tp] = msg.offset + 1
            if size > PAYLOAD_LIMIT // 2:
                return batch, offsets

    async def loop(self) -> None:
        delay = 1.0
        while True:
            try:
                batch, offsets = await self.next_batch()
                if not batch:
                    if offsets:
                        await self.consumer.commit({tp: o for tp, o in offsets.items()})
                    continue
                while True:
                    status = await self.fire(self.namespace, self.trigger, {"messages": batch})
                    if 200 <= status < 300:
                        break
                    if status == 404:
                        log.error("feed trigger is gone; stopping", extra={"fields": {"trigger": self.group}})
                        return
                    log.warning("trigger fire refused; retrying",
                                extra={"fields": {"trigger": self.group, "status": status}})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
                delay = 1.0
                await self.consumer.commit({tp: o for tp, o in offsets.items()})
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker hiccup: keep going from the committed position
                log.warning("feed error; retrying", extra={"fields": {"trigger": self.group, "error": repr(e)}})
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30)
                await self._rewind()

    async def _rewind(self) -> None:
        self.held = None
        for tp in self.consumer.assignment():
            committed = await self.consumer.committed(tp)
            if committed is not None:
                self.consumer.seek(tp, committed)


class FeedManager:
    def __init__(self, fire: FireFn):
        self.fire = fire
        self.feeds: dict[str, Feed] = {}

    async def create(self, namespace: str, trigger: str, conf: dict) -> None:
        key = f"/{namespace}/{trigger}"
        old = self.feeds.pop(key, None)
        if old:
            await old.stop()
        feed = Feed(namespace, trigger, conf, self.fire)
        await feed.start()
        self.feeds[key] = feed
        log.info("feed started", extra={"fields": {"trigger": key, "topic": conf["topic"]}})

    async def delete(self, namespace: str, trigger: str) -> bool:
        feed = self.feeds.pop(f"/{namespace}/{trigger}", None)
        if feed:
            await feed.stop()
        return feed is not None

    async def close(self) -> None:
        for feed in list(self.feeds.values()):
            await feed.stop()
        self.feeds.clear()


