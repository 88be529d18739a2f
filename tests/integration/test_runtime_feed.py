"""Kafka feed triggers end to end, against the real broker: batches of at most 900 kB,
offsets committed only once a fire was accepted, and no task lost when the runtime is
killed with kill -9 while it consumes."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import threading
import time

import pytest

from panfaas.client import Functions
from services import produce, start_runtime, wait_healthz, wait_until

FEED = "/whisk.system/messaging/kafkaFeed"

COLLECT = """import json
def main(args):
    msgs = args['messages']
    return {'n': len(msgs), 'offsets': [m['offset'] for m in msgs], 'first': msgs[0]['value'].get('i')}
"""

RECORD_TASKS = """import os, time
def main(args):
    time.sleep(args.get('work', 0))
    for m in args['messages']:
        open(os.path.join(args['out'], 'task-%d' % m['value']['task']), 'a').write(m['topic'] + '\\n')
    return {'done': [m['value']['task'] for m in args['messages']]}
"""


def feed_trigger(fn: Functions, auth: str, bootstrap: str, topic: str, action: str, code: str,
                 parameters: dict | None = None, rule_first: bool = False) -> str:
    """Action, trigger, Kafka feed and rule. With `rule_first`, the rule exists before the feed
    starts, for a topic that already holds messages (a fire with no rule would drop them)."""
    fn.put("actions", action, {"exec": {"kind": "python:3.11", "code": code},
                               "parameters": [{"key": k, "value": v} for k, v in (parameters or {}).items()]})
    fn.put("triggers", topic, {"annotations": [{"key": "feed", "value": FEED}]})
    if rule_first:
        fn.put("rules", f"{topic}-{action}", {"trigger": f"/_/{topic}", "action": f"/_/{action}"})
    fn.feed(FEED, "CREATE", f"/_/{topic}", auth, brokers=[bootstrap], topic=topic, isJSONData=True)
    if not rule_first:
        fn.put("rules", f"{topic}-{action}", {"trigger": f"/_/{topic}", "action": f"/_/{action}"})
    return topic


def committed(bootstrap: str, group: str, topic: str) -> int | None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            return await c.committed(TopicPartition(topic, 0))
        finally:
            await c.stop()
    return asyncio.run(run())


def commit(bootstrap: str, group: str, topic: str, offset: int) -> None:
    from aiokafka import AIOKafkaConsumer, TopicPartition

    async def run():
        c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
        await c.start()
        try:
            tp = TopicPartition(topic, 0)
            c.assign([tp])
            await c.commit({tp: offset})
        finally:
            await c.stop()
    asyncio.run(run())


def trigger_records(fn: Functions, trigger: str, since: int) -> list[dict]:
    return [a for a in fn.activations(name=trigger, since=since, limit=200) if a["name"] == trigger]


def test_batches_stay_under_900_kb_and_keep_every_message(tmp_path, broker, topics):
    rt = start_runtime(tmp_path)
    try:
        fn = Functions(rt.api_host, rt.auth)
        topic = topics("batch")
        since = int(time.time() * 1000)
        pad = "x" * 100_000
        values = [{"i": i, "pad": pad} for i in range(12)]
        values.insert(5, {"i": "too big", "pad": "y" * 905_000})  # larger than a whole batch: skipped
        values += [{"i": i, "pad": ""} for i in range(12, 40)]
        # Every message is in the broker before the feed starts (its consumer group resumes at
        # offset 0), so how full the batches are does not depend on timing.
        produce(broker.bootstrap, topic, values)
        commit(broker.bootstrap, f"/guest/{topic}", topic, 0)
        feed_trigger(fn, rt.auth, broker.bootstrap, topic, "collect", COLLECT, rule_first=True)

        def delivered():
            runs = [a for a in fn.activations(name="collect", since=since, limit=200) if a["response"]["success"]]
            got = sorted(o for a in runs for o in a["response"]["result"]["offsets"])
            return runs if len(got) >= len(values) - 1 else None
        runs = wait_until(delivered, 30, what="every message delivered")
        offsets = sorted(o for a in runs for o in a["response"]["result"]["offsets"])
        assert offsets == [o for o in range(len(values)) if o != 5]          # each once, the big one skipped
        fires = trigger_records(fn, topic, since)
        assert len(fires) >= 2                                               # 1.2 MB do not fit one batch
        assert all(f["response"]["size"] <= 900_000 for f in fires)
        assert max(f["response"]["size"] for f in fires) > 700_000            # and batches are filled up
        for f in fires:
            payload = f["response"]["result"]
            assert len(json.dumps(payload)) == f["response"]["size"]
            m = payload["messages"][0]
            assert set(m) == {"topic", "partition", "offset", "key", "value"} and m["topic"] == topic
            assert isinstance(m["value"], dict)                             # isJSONData
        assert "message larger than the feed payload limit skipped" in rt.proc.output()
        assert committed(broker.bootstrap, f"/guest/{topic}", topic) == len(values)
    finally:
        rt.proc.stop()


def test_offsets_are_committed_only_after_the_fire_is_accepted(tmp_path, broker, topics):
    # One invocation at a time: while the first batch runs, the next fire is refused (429).
    rt = start_runtime(tmp_path, limits={"concurrent-invocations": 1})
    try:
        fn = Functions(rt.api_host, rt.auth)
        topic = feed_trigger(fn, rt.auth, broker.bootstrap, topics("commit"), "slow", RECORD_TASKS,
                             {"out": str(tmp_path), "work": 2.5})
        group = f"/guest/{topic}"
        start = committed(broker.bootstrap, group, topic)
        produce(broker.bootstrap, topic, [{"task": 1}])
        wait_until(lambda: committed(broker.bootstrap, group, topic) == start + 1, 10, what="first commit")
        produce(broker.bootstrap, topic, [{"task": 2}])
        wait_until(lambda: 'panfaas_runtime_throttled_total{what="fire"}' in
                   fn.session.get(rt.api_host + "/metrics").text, 10, what="the second fire refused")
        assert committed(broker.bootstrap, group, topic) == start + 1     # refused: not committed
        assert not (tmp_path / "task-2").exists()
        wait_until(lambda: (tmp_path / "task-2").exists(), 20, what="task 2 after the retry")
        wait_until(lambda: committed(broker.bootstrap, group, topic) == start + 2, 10, what="second commit")
        assert "trigger fire refused; retrying" in rt.proc.output()
    finally:
        rt.proc.stop()


@pytest.mark.slow
def test_kill_9_while_consuming_loses_no_task(tmp_path, broker, topics):
    rt = start_runtime(tmp_path / "rt")
    out = tmp_path / "out"
    out.mkdir()
    try:
        fn = Functions(rt.api_host, rt.auth)
        topic = feed_trigger(fn, rt.auth, broker.bootstrap, topics("crash"), "record", RECORD_TASKS,
                             {"out": str(out), "work": 0.4})
        total = 400
        produced = threading.Event()

        def producer():
            for start in range(0, total, 10):          # a steady stream for about 4 s
                produce(broker.bootstrap, topic, [{"task": i} for i in range(start, start + 10)])
                time.sleep(0.1)
            produced.set()
        t = threading.Thread(target=producer)
        t.start()
        wait_until(lambda: len(list(out.iterdir())) >= 30, 20, what="tasks being processed")
        rt.proc.kill(signal.SIGKILL)                     # kill -9, mid-stream, with activations in flight
        time.sleep(0.5)
        rt.proc.start()
        wait_healthz(rt.api_host + "/healthz")
        t.join()
        assert produced.is_set()
        done = wait_until(lambda: {int(p.name.split("-")[1]) for p in out.iterdir()} >= set(range(total)) or None,
                          60, what="every task after the restart")
        assert done
        recovered = re.search(r'"msg": "recovered accepted activations after a restart", "rerun": (\d+)',
                              rt.proc.output())
        assert recovered and int(recovered.group(1)) > 0, "no accepted activation was pending at the kill"
        dupes = sum(len(p.read_text().splitlines()) - 1 for p in out.iterdir())
        print(f"{total} tasks, all done; {recovered.group(1)} accepted activations re-run after kill -9; "
              f"{dupes} tasks ran twice (at-least-once)")
    finally:
        rt.proc.stop()
