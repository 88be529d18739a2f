"""`panfaas runtime replay`: activations and topics run again through the current action code,
with the real CLI against a real runtime and broker."""

from __future__ import annotations

import json
import subprocess
import time

import pytest
from test_runtime_feed import FEED, committed

from panfaas.client import Functions
from services import BIN, produce, start_runtime, wait_until

V1 = "def main(a):\n    if a.get('x') == 2:\n        return {'error': 'x=2 is not handled'}\n    return {'x': a['x']}\n"
V2 = "def main(a):\n    return {'x': a['x'], 'fixed': True}\n"
COLLECT = "VERSION = {v}\ndef main(a):\n    return {{'v': VERSION, 'offsets': [m['offset'] for m in a['messages']]}}\n"


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-replay"))
    yield r
    r.proc.stop()


def replay(rt, *args, check=True) -> tuple[list[dict], subprocess.CompletedProcess]:
    out = subprocess.run([str(BIN / "panfaas"), "runtime", "replay", *args, "--config", str(rt.config_path)],
                         capture_output=True, text=True, timeout=120)
    if check:
        assert out.returncode == 0, out.stderr
    return [json.loads(line) for line in out.stdout.splitlines() if line.startswith("{")], out


def test_replay_failed_activations_through_the_new_version(rt):
    fn = Functions(rt.api_host, rt.auth)
    fn.put("actions", "proc", {"exec": {"kind": "python:3.11", "code": V1}})
    since = int(time.time() * 1000)
    ids = [fn.invoke("proc", x=i, result=False) for i in (1, 3)]
    failed = fn.invoke("proc", x=2, blocking=False)["activationId"]
    assert fn.wait(failed)["response"]["status"] == "application error"
    fn.put("actions", "proc", {"exec": {"kind": "python:3.11", "code": V2}}, overwrite=True)

    listed, _ = replay(rt, "activations", "--dry-run", "--name", "proc", "--since", str(since),
                       "--status", "application-error")
    assert [x["replayed"] for x in listed if "replayed" in x and x.get("dry_run")] == [failed]
    assert len(fn.activations(name="proc", since=since)) == 3                 # a dry run invokes nothing

    lines, _ = replay(rt, "activations", "--name", "proc", "--since", str(since), "--status",
                      "application-error", "--wait")
    item, summary = lines[0], lines[-1]
    assert item["replayed"] == failed and item["action"] == "proc"
    assert summary == {"summary": {"started": 1, "dry_run": False, "statuses": {"success": 1}}}
    new = fn.activation(item["activationId"])
    assert new["version"] == "0.0.2" and new["response"]["result"] == {"x": 2, "fixed": True}

    lines, _ = replay(rt, "activations", ids[0]["activationId"], "0" * 32, "--wait")
    assert {"replayed": "0" * 32, "error": "no such activation"} in lines
    assert lines[-1]["summary"]["statuses"] == {"success": 1}

    _, out = replay(rt, "activations", check=False)
    assert out.returncode == 2 and "say what to replay" in out.stderr


def test_replay_a_topic_from_an_offset_and_from_a_time(rt, broker, topics):
    fn = Functions(rt.api_host, rt.auth)
    topic = topics("replay")
    fn.put("actions", "collect", {"exec": {"kind": "python:3.11", "code": COLLECT.format(v=1)}})
    fn.put("triggers", topic, {"annotations": [{"key": "feed", "value": FEED}]})
    fn.feed(FEED, "CREATE", f"/_/{topic}", rt.auth, brokers=[broker.bootstrap], topic=topic, isJSONData=True)
    fn.put("rules", f"{topic}-collect", {"trigger": f"/_/{topic}", "action": "/_/collect"})
    since = int(time.time() * 1000)
    produce(broker.bootstrap, topic, [{"i": i} for i in range(3)])
    time.sleep(0.3)
    middle = int(time.time() * 1000)
    time.sleep(0.3)
    produce(broker.bootstrap, topic, [{"i": i} for i in range(3, 6)])

    def offsets(version, after):
        return sorted(o for a in fn.activations(name="collect", since=after, limit=100)
                      if a["response"]["success"] and a["response"]["result"]["v"] == version
                      for o in a["response"]["result"]["offsets"])
    wait_until(lambda: offsets(1, since) == list(range(6)), 20, what="the feed delivering all six")
    group_offset = committed(broker.bootstrap, f"/guest/{topic}", topic)
    fn.put("actions", "collect", {"exec": {"kind": "python:3.11", "code": COLLECT.format(v=2)}}, overwrite=True)

    t1 = int(time.time() * 1000)
    lines, _ = replay(rt, "topic", topic, "--from-offset", "4", "--wait")
    assert lines[0]["trigger"] == topic and lines[0]["replayed"] == f"{topic}/0@4" and lines[0]["messages"] == 2
    assert lines[-1]["summary"]["statuses"] == {"success": 1}
    assert offsets(2, t1) == [4, 5]

    t2 = int(time.time() * 1000)
    lines, _ = replay(rt, "topic", topic, "--from-time", str(middle), "--to-offset", "4", "--action", "collect",
                      "--wait")
    assert lines[0]["action"] == "collect" and lines[-1]["summary"]["statuses"] == {"success": 1}
    assert offsets(2, t2) == [3, 4]
    assert committed(broker.bootstrap, f"/guest/{topic}", topic) == group_offset   # the feed's group untouched

    _, out = replay(rt, "topic", "no-feed-reads-this", "--from-offset", "0", check=False)
    assert out.returncode == 2 and "no feed trigger consumes 'no-feed-reads-this'" in out.stderr
