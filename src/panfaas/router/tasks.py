"""What the router publishes: tasks, and dead letters for what could not become one.

A task is dynamic-processing's URL map (`{"read": url, "write": url}`) plus
`event` (what happened: path, pnfsid, size, user, client, time, source) and a
`task_id` that depends only on the event and the rule: a redelivered event
gives the same id, so consumers can de-duplicate.
"""

from __future__ import annotations

import base64
import hashlib
import time

import orjson

from .. import events
from .rules import Rule

DEAD_LETTER_VALUE_LIMIT = 64 * 1024   # the original message is kept up to this size


def event_digest(ev: events.StorageEvent) -> bytes:
    """The event's identity: its record in canonical JSON (key order and spacing do not count)."""
    return hashlib.sha256(orjson.dumps(ev.raw, option=orjson.OPT_SORT_KEYS, default=str)).digest()


def task_id(rule: Rule, ev: events.StorageEvent, digest: bytes | None = None) -> str:
    """Same event, same rule -> same id (32 hex digits)."""
    d = digest if digest is not None else event_digest(ev)
    return hashlib.sha256(f"{rule.index}:{rule.target}:".encode() + d).hexdigest()[:32]


def make_task(rule: Rule, ev: events.StorageEvent, urls: dict, digest: bytes | None = None) -> dict:
    return {**urls, "event": ev.summary(), "task_id": task_id(rule, ev, digest)}


def _iso_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1000):03d}Z"


def dead_letter(reason: str, *, stage: str, origin: dict, value: bytes | str | None, router: str,
                target: str | None = None, task_id: str | None = None) -> dict:
    """The dead-letter record: why, where the message came from, and the message itself
    (exact: UTF-8 text as `value`, anything else base64 as `value_base64`), so that an
    operator can fix the cause and replay it (docs/runbooks/event-router.md)."""
    doc: dict = {"reason": reason, "stage": stage, **origin}
    if target:
        doc["target"] = target
    if task_id:
        doc["task_id"] = task_id
    if isinstance(value, str):
        value = value.encode("utf-8", "surrogatepass")
    if value is None:
        doc["value"] = None
    else:
        doc["size"] = len(value)
        kept = value[:DEAD_LETTER_VALUE_LIMIT]
        try:
            doc["value"] = kept.decode("utf-8")
        except UnicodeDecodeError as e:
            if len(kept) < len(value) and e.start >= len(kept) - 3:  # cut inside a character
                doc["value"] = kept[:e.start].decode("utf-8")
            else:
                doc["value_base64"] = base64.b64encode(kept).decode()
        if len(kept) < len(value):
            doc["truncated"] = True
    doc["router"] = router
    doc["time"] = _iso_now()
    return doc
