"""At-least-once, end to end: kill -9 while uploads flow; a flood of malformed messages.

Billing records are produced straight to the broker (the upload itself is not the point here);
macaroons come from the real storage element.
"""

import json
import os
import random
import signal
import threading
import time

import pytest
import requests

from panfaas import events
from services import consume, produce_many, router_config, start_router, wait_healthz

pytestmark = pytest.mark.slow


def upload(i: int) -> list:
    """One upload as dCache reports it: the pool's transfer, then the door's request."""
    path = f"/data/run{i // 100:02d}/frame{i:04d}.h5"
    t = events.billing_transfer(path=path, pnfsid=f"0000{i:032X}", size=1000 + i, is_write=True, client="127.0.0.1",
                                client_port=40000 + i % 1000, user="admin", uid=1000, gid=1000,
                                session=f"door:WebDAV-aio@aioDomain:s{i}", transfer_ms=5)
    return [t, events.billing_request(t, user="admin", uid=1000, gid=1000, client="127.0.0.1")]


def all_messages(bootstrap, topic, distinct, timeout, key=lambda v: json.dumps(v, sort_keys=True)):
    """Every message of the topic (duplicates included), once `distinct` different ones arrived;
    whatever arrived by the timeout otherwise (the caller's assertions say what is missing)."""
    deadline = time.monotonic() + timeout
    while True:
        got = consume(bootstrap, topic, 10 ** 9, timeout=1.0)
        if len({key(m["value"]) for m in got}) >= distinct or time.monotonic() > deadline:
            return got


def test_kill_9_at_random_points_loses_no_upload(broker, storage, topics, tmp_path):
    seed = int(os.environ.get("ROUTER_KILL_SEED", time.time()))
    rnd = random.Random(seed)
    source, tasks, dead = topics("billing", "tasks", "dead")
    rule = {"target": tasks, "path-predicate": {"matching": r"/data/.*\.h5"},
            "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD"}},
                     "write": {"with-macaroon": {"activity": "UPLOAD"},
                               "derived-path": {"replacing": r"([^/]*)\.h5$", "with": r"\1.png"}}}}
    conf = router_config(broker.bootstrap, storage, [rule], source_topic=source, dead_letter=dead)
    router = start_router(tmp_path, conf)
    n = 1000
    done = threading.Event()

    def flow():  # 1000 uploads in bursts, over several seconds
        try:
            for start in range(0, n, 50):
                produce_many(broker.bootstrap, source, [m for i in range(start, start + 50) for m in upload(i)])
                time.sleep(rnd.uniform(0.05, 0.4))
        finally:
            done.set()

    producer = threading.Thread(target=flow)
    producer.start()
    kills = 0
    try:
        while not done.is_set() or kills < 4:
            time.sleep(rnd.uniform(0.2, 1.5))
            os.killpg(router.proc.popen.pid, signal.SIGKILL)      # no shutdown, no last commit
            router.proc.popen.wait(10)
            kills += 1
            router.proc.start()
            wait_healthz(f"http://127.0.0.1:{router.port}/healthz", 30)
        producer.join()
        got = all_messages(broker.bootstrap, tasks, n, timeout=120, key=lambda v: v["event"]["path"])
        by_path: dict[str, set] = {}
        for m in got:
            task = m["value"]
            by_path.setdefault(task["event"]["path"], set()).add(task["task_id"])
            assert task["write"].split("?")[0].endswith(".png") and "?authz=" in task["read"]
        expected = {upload(i)[0]["transferPath"] for i in range(n)}
        assert set(by_path) == expected, f"seed {seed}: missing {sorted(expected - set(by_path))[:5]}"
        assert all(len(ids) == 1 for ids in by_path.values()), f"seed {seed}: a duplicate with another task_id"
        assert len({next(iter(ids)) for ids in by_path.values()}) == n
        assert consume(broker.bootstrap, dead, 1, timeout=0.5) == []
        print(f"seed {seed}: {kills} kills, {len(got)} tasks for {n} uploads ({len(got) - n} duplicates)")
        # A spot check that the URLs work: the storage element serves what the read URL names.
        sample = next(m["value"] for m in got if m["value"]["event"]["path"] == "/data/run00/frame0000.h5")
        assert requests.get(sample["read"]).status_code == 404   # authorised, but the file was never uploaded
    finally:
        done.set()
        producer.join()
        router.proc.stop()


# Malformed kinds: (make(marker) -> bytes, expected reason fragment)
MALFORMED = [
    (lambda m: f"garbage {m}".encode(), "not JSON"),
    (lambda m: b"\xff\xfe" + m.encode(), "not UTF-8"),
    (lambda m: json.dumps([m, 1]).encode(), "expected a JSON object, got list"),
    (lambda m: json.dumps({"m": m, "cellType": "pool", "status": {"code": 0}}).encode(), "missing field 'msgType'"),
    (lambda m: json.dumps({"m": m, "msgType": 7, "cellType": "pool", "status": {"code": 0}}).encode(),
     "field 'msgType' must be a string, got int"),
    (lambda m: json.dumps({"m": m, "msgType": "transfer", "cellType": "pool", "status": "ok"}).encode(),
     "field 'status' must be an object"),
    (lambda m: json.dumps({"m": m, "msgType": "transfer", "cellType": "pool", "status": {"code": 0},
                           "isWrite": "write"}).encode(), "transfer message without a usable"),
    (lambda m: json.dumps({**upload(0)[0], "m": m, "isWrite": True}).encode(), "field 'isWrite' must be"),
    (lambda m: json.dumps({**upload(0)[0], "m": m, "fileSize": "big"}).encode(), "field 'fileSize' must be an int"),
    (lambda m: json.dumps({**upload(0)[0], "m": m, "subject": {"user": "x"}}).encode(), "field 'subject' must be"),
    (lambda m: m.encode() + b"[" * 5000, "not JSON"),
]


def marker_of(doc: dict) -> str:
    import base64
    text = doc.get("value")
    if text is None:
        text = base64.b64decode(doc["value_base64"]).decode("latin-1")
    return text[text.index("m0"):text.index("m0") + 6]


def test_ten_thousand_malformed_messages_interleaved_with_valid_ones(broker, topics, tmp_path):
    source, tasks, dead = topics("billing", "tasks", "dead")
    rule = {"target": tasks, "path-predicate": {"matching": r"/data/.*"}, "urls": {"read": {}}}
    conf = router_config(broker.bootstrap, None, [rule], source_topic=source, dead_letter=dead)
    router = start_router(tmp_path, conf)
    try:
        values, expected_reason, valid_paths = [], {}, []
        rnd = random.Random(4)
        bad = 0
        for i in range(11_000):
            if i % 11 == 5:
                t = upload(i)[0]
                valid_paths.append(t["transferPath"])
                values.append(json.dumps(t).encode())
                continue
            marker = f"m{bad:05d}"
            make, reason = MALFORMED[rnd.randrange(len(MALFORMED))]
            if bad % 2500 == 7:  # huge: over the 1 MiB limit
                make, reason = (lambda m: json.dumps({"m": m, "pad": "x" * (events.MAX_MESSAGE_BYTES + 10)}).encode(),
                                "message too large")
            values.append(make(marker))
            expected_reason[marker] = reason
            bad += 1
        assert bad == 10_000 and len(valid_paths) == 1000
        produce_many(broker.bootstrap, source, values)
        got = all_messages(broker.bootstrap, tasks, 1000, timeout=60)
        assert sorted(m["value"]["event"]["path"] for m in got) == sorted(valid_paths)
        letters = all_messages(broker.bootstrap, dead, 10_000, timeout=60)
        assert len(letters) == 10_000
        seen = set()
        for m in letters:
            doc = m["value"]
            marker = marker_of(doc)
            assert expected_reason[marker] in doc["reason"], (marker, doc["reason"])
            assert doc["reason"].startswith("malformed event: ") and doc["stage"] == "parse"
            assert doc["topic"] == source and isinstance(doc["offset"], int)
            seen.add(marker)
        assert seen == set(expected_reason)
        huge = [m["value"] for m in letters if "too large" in m["value"]["reason"]]
        assert len(huge) == 4 and all(d["truncated"] and d["size"] > events.MAX_MESSAGE_BYTES for d in huge)
        assert router.proc.alive()
        health = requests.get(f"http://127.0.0.1:{router.port}/healthz").json()
        assert health["status"] == "ok" and health["dead_lettered"] == 10_000 and health["tasks_out"] == 1000
    finally:
        router.proc.stop()
