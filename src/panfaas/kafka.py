"""Kafka helpers shared by every service (aiokafka).

Consumers use *manual assignment plus group commits* by default: the
consumer takes every partition of its topic and stores its position as the
committed offset of `group_id`. A restarted service resumes where it left off
without waiting for a group rebalance (seconds on tansu; a kill -9'd member
also holds the group until its session times out). Several replicas of one
service (production, real Kafka) use `mode="subscribe"` instead.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

log = logging.getLogger(__name__)


def producer(bootstrap: str, **kw) -> AIOKafkaProducer:
    # acks=all: a task counts as published only once the broker has it.
    opts = dict(bootstrap_servers=bootstrap, acks="all", linger_ms=1,
                max_request_size=4 * 1024 * 1024)
    opts.update(kw)
    return AIOKafkaProducer(**opts)


async def start_consumer(bootstrap: str, topic: str, group_id: str, *,
                         mode: str = "assign", offset_reset: str = "earliest",
                         **kw) -> AIOKafkaConsumer:
    """A started consumer positioned at the group's committed offsets."""
    opts = dict(bootstrap_servers=bootstrap, group_id=group_id,
                enable_auto_commit=False, auto_offset_reset=offset_reset,
                max_partition_fetch_bytes=4 * 1024 * 1024)
    opts.update(kw)
    if mode == "subscribe":
        consumer = AIOKafkaConsumer(topic, **opts)
        await consumer.start()
        return consumer
    consumer = AIOKafkaConsumer(**opts)
    await consumer.start()
    partitions = None
    for _ in range(50):
        partitions = consumer.partitions_for_topic(topic)
        if partitions:
            break
        await consumer._client.force_metadata_update()  # topic may be brand new
        await asyncio.sleep(0.1)
    if not partitions:
        await consumer.stop()
        raise RuntimeError(f"topic '{topic}' does not exist on {bootstrap}")
    consumer.assign([TopicPartition(topic, p) for p in sorted(partitions)])
    return consumer


async def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 1,
                        replication: int = 1) -> list[str]:
    """Create the topics that do not exist yet; return the names created."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        missing = [t for t in dict.fromkeys(topics) if t not in existing]
        if missing:
            try:
                await admin.create_topics([NewTopic(t, partitions, replication) for t in missing])
            except TopicAlreadyExistsError:
                pass
        return missing
    finally:
        await admin.close()


async def list_topics(bootstrap: str) -> list[str]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        return sorted(await admin.list_topics())
    finally:
        await admin.close()
