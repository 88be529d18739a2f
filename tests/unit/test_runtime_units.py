"""The runtime's pure parts: entity create/update semantics, throttles, feed batching and
parameters, replay's time arguments, the store's queue of accepted activations."""

from __future__ import annotations

import argparse
import json

import pytest

from panfaas.runtime import entities as ent
from panfaas.runtime import feeds, limits, replay
from panfaas.runtime.errors import ApiError
from panfaas.runtime.store import Store

RANGES = dict(ent.DEFAULT_RANGES)


def test_update_merges_what_the_body_leaves_out():
    old = ent.action_doc("guest", None, "a", {"exec": {"kind": "python:3.11", "code": "c"},
                                               "parameters": [{"key": "p", "value": 1}],
                                               "annotations": [{"key": "x", "value": 1}],
                                               "limits": {"timeout": 5000}}, None, RANGES)
    new = ent.action_doc("guest", None, "a", {"limits": {"memory": 512}, "delAnnotations": ["x"]}, old, RANGES)
    assert new["exec"] == old["exec"] and new["parameters"] == old["parameters"]
    assert new["limits"] == {"timeout": 5000, "memory": 512, "logs": 10, "concurrency": 1}
    assert new["version"] == "0.0.2" and ent.kv(new["annotations"]) == {"provide-api-key": False,
                                                                        "exec": "python:3.11"}


def test_binary_is_decided_by_the_server():
    import base64
    code = base64.b64encode(b"PK\x03\x04 a zip, say").decode()
    doc = ent.action_doc("guest", "pkg", "a", {"exec": {"kind": "python:3.11", "code": code, "binary": False}},
                         None, RANGES)
    assert doc["exec"]["binary"] is True and doc["namespace"] == "guest/pkg"
    text = ent.action_doc("guest", None, "a", {"exec": {"kind": "python:3.11", "code": "def main(a):\n  return a",
                                                        "binary": True}}, None, RANGES)
    assert text["exec"]["binary"] is False


@pytest.mark.parametrize("ref, expect", [
    ("/_/t", ("guest", "t")), ("/guest/pkg/a", ("guest/pkg", "a")), ("t", ("guest", "t")),
    ("other/t", ("other", "t")),
])
def test_fully_qualified_names(ref, expect):
    assert ent.fq_name(ref, "guest") == expect


def test_fully_qualified_name_errors():
    with pytest.raises(ApiError):
        ent.fq_name("/a/b/c/d", "guest")
    with pytest.raises(ApiError):
        ent.fq_name("", "guest")


def test_limits_ranges_are_checked_with_openwhisk_messages():
    with pytest.raises(ApiError) as e:
        ent.limits({"limits": {"memory": 4096}}, None, RANGES)
    assert e.value.message == "Memory 4096 MB exceeds allowed threshold of 2048 MB."
    with pytest.raises(ApiError):
        ent.limits({"limits": {"timeout": "soon"}}, None, RANGES)
    assert ent.limits({}, None, RANGES) == ent.DEFAULT_LIMITS


def test_throttle_counts_a_sliding_minute_and_in_flight():
    now = [0.0]
    t = limits.Throttle(invocations_per_minute=2, concurrent=2, fires_per_minute=1, clock=lambda: now[0])
    t.admit("ns")
    t.admit("ns")
    with pytest.raises(ApiError) as e:
        t.admit("ns")
    assert e.value.status == 429 and "(count: 3, allowed: 2)" in e.value.message
    t.admit("other")  # per namespace
    now[0] = 61.0
    t.done("ns")
    t.admit("ns")     # the minute moved on, one slot in flight was freed
    with pytest.raises(ApiError) as e:
        t.admit("ns")
    assert "concurrent" in e.value.message
    t.admit_fire("ns")
    with pytest.raises(ApiError):
        t.check_fire("ns")
    assert limits.Throttle(0, 0, 0).check_invoke("ns", 10**6) is None  # 0 disables


async def test_memory_pool_queues_what_does_not_fit():
    import asyncio
    pool = limits.MemoryPool(512)
    order = []

    async def run(name, mb, hold):
        async with pool.reserve(mb):
            order.append(f"+{name}")
            await asyncio.sleep(hold)
            order.append(f"-{name}")
    await asyncio.gather(run("a", 384, 0.05), run("b", 256, 0.0), run("huge", 4096, 0.0))
    assert order.index("-a") < order.index("+b")   # b waited for a's memory
    assert "+huge" in order                          # bigger than the pool: runs alone


def test_batch_size_is_what_json_dumps_writes():
    b = feeds.Batch(limit=200)
    items = [{"topic": "t", "partition": 0, "offset": i, "key": None, "value": "v" * 10} for i in range(5)]
    for item in items:
        n = feeds.Batch.measure(item)
        if b.fits(n):
            b.add(item, n)
    assert len(json.dumps(b.payload())) == b.size <= 200
    assert not b.fits(feeds.Batch.measure(items[0]))
    assert feeds.Batch().size == len(json.dumps({"messages": []}))


def test_feed_parameters_as_the_feed_action_checks_them():
    conf = feeds.validate({"brokers": '["k:9092"]', "topic": "raw", "isJSONData": "true"})
    assert conf == {"brokers": ["k:9092"], "topic": "raw", "isJSONData": True, "isBinaryKey": False,
                    "isBinaryValue": False}
    assert feeds.validate({"brokers": "a:1, b:2", "topic": "t"})["brokers"] == ["a:1", "b:2"]
    for bad in ({"topic": "t"}, {"brokers": ["a:1"]}, {"brokers": [], "topic": "t"},
                {"brokers": ["a:1"], "topic": "t", "isJSONData": True, "isBinaryValue": True}):
        with pytest.raises(feeds.FeedError):
            feeds.validate(bad)
    assert feeds.update(conf, {"isJSONData": False})["isJSONData"] is False
    with pytest.raises(feeds.FeedError):
        feeds.update(conf, {"topic": "other"})


def test_message_payload_decodes_like_the_provider():
    class M:
        topic, partition, offset = "t", 0, 7
        key, value = b"\x00\x01", b'{"a": 1}'
    conf = {"isJSONData": True, "isBinaryKey": True, "isBinaryValue": False}
    assert feeds.message_payload(M, conf) == {"topic": "t", "partition": 0, "offset": 7, "key": "AAE=",
                                              "value": {"a": 1}}
    M.value = b"not json"
    assert feeds.message_payload(M, conf)["value"] == "not json"
    assert feeds.message_payload(M, {**conf, "isJSONData": False, "isBinaryValue": True})["value"] == "bm90IGpzb24="


def test_replay_times():
    assert replay.parse_time("1718000000000") == 1718000000000
    assert replay.parse_time("2024-06-10T06:13:20Z") == 1718000000000
    assert replay.parse_time("2h", now=10_000.0) == (10_000 - 7200) * 1000
    with pytest.raises(argparse.ArgumentTypeError, match="not a time"):
        replay.parse_time("yesterday-ish")


def test_store_is_wal_and_keeps_accepted_until_recorded(tmp_path):
    s = Store(tmp_path / "a.db")
    assert s.journal_mode() == "wal"
    s.enqueue([("a" * 32, "guest", "act", {"x": 1}, None, False, 1)])
    assert [p["id"] for p in s.pending()] == ["a" * 32]
    rec = {"activationId": "a" * 32, "namespace": "guest", "name": "act", "start": 2, "statusCode": 0,
           "annotations": [{"key": "path", "value": "guest/act"}]}
    s.put_activation(rec, {"x": 1})
    assert s.pending() == [] and s.activation("guest", "a" * 32) == rec
    assert s.replayable("guest", name="act")[0]["args"] == {"x": 1}
    ro = Store(tmp_path / "a.db", readonly=True)
    assert ro.activation("guest", "a" * 32) == rec
    assert s.prune(3) == 1 and s.activation("guest", "a" * 32) is None
