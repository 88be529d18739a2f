"""The function runtime's REST API and action protocol, over real HTTP."""

import time

import pytest

from panfaas.client import ClientError, Functions
from services import produce


@pytest.fixture
def fn(runtime):
    return Functions(runtime.api_host, runtime.auth)


ECHO = """import os
def main(args):
    print('hello', args.get('x'))
    return {'x': args.get('x'), 'aid': os.environ['__OW_ACTIVATION_ID']}
"""


def test_put_invoke_and_activation_record(fn):
    fn.put("actions", "echo", {"exec": {"kind": "python:3.11", "code": ECHO}})
    res = fn.invoke("echo", x=3)
    assert res["x"] == 3
    act = fn.activation(res["aid"])
    assert act["response"] == {"status": "success", "statusCode": 0, "success": True, "result": res}
    keys = {a["key"] for a in act["annotations"]}
    assert {"path", "kind", "limits", "timeout", "waitTime"} <= keys
    assert any(line.endswith("stdout: hello 3") for line in act["logs"])


def test_overwrite_semantics(fn):
    fn.put("actions", "ow", {"exec": {"kind": "python:3.11", "code": ECHO}})
    with pytest.raises(ClientError) as e:
        fn.put("actions", "ow", {"exec": {"kind": "python:3.11", "code": ECHO}}, overwrite=False)
    assert e.value.status == 409


def test_application_error_is_502_and_runtime_survives(fn):
    fn.put("actions", "boom", {"exec": {"kind": "python:3.11", "code": "def main(a):\n    raise ValueError('no')\n"}})
    with pytest.raises(ClientError) as e:
        fn.invoke("boom")
    assert e.value.status == 502 and e.value.body == {"error": "no"}
    fn.put("actions", "echo2", {"exec": {"kind": "python:3.11", "code": ECHO}})
    assert fn.invoke("echo2", x=1)["x"] == 1


def test_unknown_action_and_bad_auth(fn, runtime):
    with pytest.raises(ClientError) as e:
        fn.invoke("does-not-exist")
    assert e.value.status == 404
    bad = Functions(runtime.api_host, "00000000-0000-0000-0000-000000000000:nope")
    with pytest.raises(ClientError) as e:
        bad.activations()
    assert e.value.status == 401


def test_kafka_feed_trigger_rule_runs_the_action(fn, runtime, broker, topics):
    topic = topics("feed")
    fn.put("actions", "collect", {"exec": {"kind": "python:3.11", "code":
           "def main(a):\n    return {'n': len(a['messages']), 'v': [m['value'] for m in a['messages']]}\n"}})
    fn.put("triggers", topic, {"annotations": [{"key": "feed", "value": "/whisk.system/messaging/kafkaFeed"}]})
    fn.feed("/whisk.system/messaging/kafkaFeed", "CREATE", f"/_/{topic}", runtime.auth,
            brokers=[broker.bootstrap], topic=topic, isJSONData=True)
    fn.put("rules", f"{topic}-rule", {"trigger": f"/_/{topic}", "action": "/_/collect"})
    since = int(time.time() * 1000)
    produce(broker.bootstrap, topic, [{"i": 1}, {"i": 2}])
    seen = []
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(seen) < 2:
        seen = [v for a in fn.activations(name="collect", since=since)
                for v in a["response"]["result"].get("v", [])]
        time.sleep(0.1)
    assert sorted(x["i"] for x in seen) == [1, 2]
