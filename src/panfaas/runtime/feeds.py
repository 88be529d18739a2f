"""The Kafka feed provider: what openwhisk-package-kafka's provider does, in process.

A trigger created with the `/whisk.system/messaging/kafkaFeed` feed gets one consumer whose
group id is the trigger's fully qualified name. Messages are fired at the trigger as
`{"messages": [...]}` batches of at most 900 kB (the provider's PAYLOAD_LIMIT): a batch
collects what the broker has ready, then goes out at once, so a lone task is not held back.
The offsets are committed only after the fire was accepted (2xx), so delivery to the
trigger is at-least-once: a crash before the commit fires the batch again.

Differences from the real provider, on purpose: a refused fire (429, 5xx) is retried with
backoff until it is accepted instead of being dropped after 6 tries, and a new feed pins
its starting position (the topic's end, as the provider's `auto.offset.reset=latest`) with a
commit before CREATE returns, so nothing produced after CREATE is missed. Like the real
provider, a single message larger than the limit is skipped with an error in the log, and a
fire answered 204 (the trigger has no active rule) consumes its messages.
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
# How long a fetch waits at the broker for new messages. tansu (the all-in-one's broker)
# answers a waiting fetch only when this expires, so it is the feed's latency floor (half of
# it on average); Kafka answers as soon as a message arrives, and a longer wait costs nothing.
FETCH_WAIT_MS = 50
FLAGS = ("isJSONData", "isBinaryKey", "isBinaryValue")
EMPTY_BATCH = len(json.dumps({"messages": []}))

# fire(namespace, trigger_name, payload) -> HTTP-like status code
FireFn = Callable[[str, str, dict], Awaitable[int]]


class FeedError(ValueError):
    pass


def _flag(params: dict, key: str) -> bool:
    v = params.get(key, False)
    if isinstance(v, str):
        return v.strip().lower() in ("true", "1", "yes")
    return bool(v)


def validate(params: dict) -> dict:
    """The kafkaFeed parameters, checked as the feed action checks them."""
    brokers = params.get("brokers")
    if isinstance(brokers, str):
        try:
            brokers = json.loads(brokers)
        except json.JSONDecodeError:
            brokers = [b.strip() for b in brokers.split(",") if b.strip()]
    if not isinstance(brokers, list) or not brokers or not all(isinstance(b, str) and b for b in brokers):
        raise FeedError("You must supply a 'brokers' parameter: a list of host:port strings.")
    topic = params.get("topic")
    if not isinstance(topic, str) or not topic:
        raise FeedError("You must supply a 'topic' parameter.")
    flags = {k: _flag(params, k) for k in FLAGS}
    if flags["isJSONData"] and flags["isBinaryValue"]:
        raise FeedError("isJSONData and isBinaryValue cannot both be enabled.")
    return {"brokers": brokers, "topic": topic, **flags}


def update(conf: dict, params: dict) -> dict:
    """UPDATE may only change the isJSONData/isBinaryKey/isBinaryValue flags."""
    for k in ("brokers", "topic"):
        if params.get(k) is not None and params[k] != conf[k]:
            raise FeedError(f"'{k}' cannot be updated: delete the feed and create it again.")
    flags = {k: _flag(params, k) if params.get(k) is not None else conf[k] for k in FLAGS}
    if flags["isJSONData"] and flags["isBinaryValue"]:
        raise FeedError("isJSONData and isBinaryValue cannot both be enabled.")
    return {**conf, **flags}


def message_payload(msg, conf: dict) -> dict:
    """One Kafka message as the provider puts it into `messages`."""
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
    return {"topic": msg.topic, "partition": msg.partition, "offset": msg.offset, "key": key, "value": value}


class Batch:
    """A `{"messages": [...]}` payload that stays within the limit, counted exactly as
    json.dumps writes it."""

    def __init__(self, limit: int = PAYLOAD_LIMIT):
        self.limit = limit
        self.messages: list[dict] = []
        self.size = EMPTY_BATCH

    @staticmethod
    def measure(item: dict) -> int:
        return len(json.dumps(item))

    def fits(self, n: int) -> bool:
        return self.size + n + (2 if self.messages else 0) <= self.limit

    def add(self, item: dict, n: int) -> None:
        self.size += n + (2 if self.messages else 0)
        self.messages.append(item)

    def payload(self) -> dict:
        return {"messages": self.messages}


class Feed:
    def __init__(self, namespace: str, trigger: str, conf: dict, fire: FireFn, fetch_wait_ms: int = FETCH_WAIT_MS):
        self.namespace, self.trigger, self.conf, self.fire = namespace, trigger, conf, fire
        self.fetch_wait_ms = fetch_wait_ms
        self.group = f"/{namespace}/{trigger}"
        self.task: asyncio.Task | None = None
        self.consumer = None
        self.held = None  # (payload, size, tp): the message that did not fit the previous batch

    async def start(self) -> None:
        self.consumer = await start_consumer(",".join(self.conf["brokers"]), self.conf["topic"], self.group,
                                             offset_reset="latest", fetch_max_wait_ms=self.fetch_wait_ms)
        # Pin the starting position so that nothing produced from now on is missed.
        positions = {}
        for tp in self.consumer.assignment():
            if await self.consumer.committed(tp) is None:
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

    async def next_batch(self) -> tuple[Batch, dict]:
        """Wait for messages, then take what the broker has ready, up to the payload limit."""
        batch, offsets = Batch(), {}
        if self.held is not None:
            item, n, tp = self.held
            self.held = None
            batch.add(item, n)
            offsets[tp] = item["offset"] + 1
        while True:
            got = await self.consumer.getmany(timeout_ms=0 if batch.messages else 1000, max_records=500)
            if not got:
                return batch, offsets
            items = list(got.items())
            for i, (tp, msgs) in enumerate(items):
                for j, msg in enumerate(msgs):
                    item = message_payload(msg, self.conf)
                    n = Batch.measure(item)
                    if EMPTY_BATCH + n > batch.limit:
                        log.error("message larger than the feed payload limit skipped",
                                  extra={"fields": {"trigger": self.group, "partition": msg.partition,
                                                    "offset": msg.offset, "bytes": n}})
                        offsets[tp] = msg.offset + 1
                        continue
                    if not batch.fits(n):
                        # Hold it for the next batch; fetch the rest of this poll again.
                        self.held = (item, n, tp)
                        if j + 1 < len(msgs):
                            self.consumer.seek(tp, msgs[j + 1].offset)
                        for later_tp, later in items[i + 1:]:
                            self.consumer.seek(later_tp, later[0].offset)
                        return batch, offsets
                    batch.add(item, n)
                    offsets[tp] = msg.offset + 1

    async def loop(self) -> None:
        delay = 1.0
        while True:
            try:
                batch, offsets = await self.next_batch()
                if not batch.messages:
                    if offsets:  # only skipped messages
                        await self.consumer.commit(offsets)
                    continue
                while True:
                    status = await self.fire(self.namespace, self.trigger, batch.payload())
                    if 200 <= status < 300:
                        break
                    if status == 404:
                        log.error("feed trigger is gone; the feed stops", extra={"fields": {"trigger": self.group}})
                        return
                    log.warning("trigger fire refused; retrying",
                                extra={"fields": {"trigger": self.group, "status": status, "retry_in": delay}})
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30)
                delay = 1.0
                await self.consumer.commit(offsets)
            except asyncio.CancelledError:
                raise
            except Exception as e:  # broker hiccup: go on from the committed position
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
    def __init__(self, fire: FireFn, fetch_wait_ms: int = FETCH_WAIT_MS):
        self.fire = fire
        self.fetch_wait_ms = fetch_wait_ms
        self.feeds: dict[str, Feed] = {}

    async def create(self, namespace: str, trigger: str, conf: dict) -> None:
        key = f"/{namespace}/{trigger}"
        old = self.feeds.pop(key, None)
        if old:
            await old.stop()
        feed = Feed(namespace, trigger, conf, self.fire, self.fetch_wait_ms)
        try:
            await feed.start()
        except Exception:
            if feed.consumer:
                await feed.consumer.stop()
            raise
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
