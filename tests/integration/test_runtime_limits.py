"""Namespace limits over HTTP: 429 with OpenWhisk's messages, and the 500 of a whisk internal error."""

from __future__ import annotations

import pytest
from test_runtime_api import SLEEP, Http, assert_error, put_python

from services import start_runtime, wait_until


@pytest.fixture(scope="module")
def tight(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-limits"),
                      limits={"invocations-per-minute": 4, "concurrent-invocations": 1, "fires-per-minute": 1})
    yield r
    r.proc.stop()


def test_concurrency_then_rate_per_namespace(tight):
    http = Http(tight)
    put_python(http, "sleepy", SLEEP)
    first = http("POST", "actions/sleepy", {"s": 0.8})
    assert first.status_code == 202
    assert_error(http("POST", "actions/sleepy", {"s": 0}), 429,
                 "Too many concurrent requests in flight (count: 2, allowed: 1).")
    aid = first.json()["activationId"]
    wait_until(lambda: http("GET", f"activations/{aid}").status_code == 200, 10, what="first activation")
    # the refused call did not count; two more fit in the minute, the fifth does not
    for _ in range(2):
        assert http("POST", "actions/sleepy", {"s": 0}, blocking="true").status_code == 200
    assert http("POST", "actions/sleepy", {"s": 0}, blocking="true").status_code == 200
    assert_error(http("POST", "actions/sleepy", {"s": 0}, blocking="true"), 429,
                 "Too many requests in the last minute (count: 5, allowed: 4).")
    assert http("GET", "limits").json()["invocationsPerMinute"] == 4


def test_trigger_fires_per_minute(tmp_path):
    rt = start_runtime(tmp_path, limits={"fires-per-minute": 1})
    try:
        http = Http(rt)
        http("PUT", "triggers/tick", {})
        assert http("POST", "triggers/tick", {}).status_code == 204  # no active rule: not a fire
        put_python(http, "ticked", "def main(a):\n    return a\n")
        http("PUT", "rules/tick-rule", {"trigger": "/_/tick", "action": "/_/ticked"})
        assert http("POST", "triggers/tick", {}).status_code == 202
        assert_error(http("POST", "triggers/tick", {}), 429,
                     "Too many requests in the last minute (count: 2, allowed: 1).")
        assert http("POST", "actions/ticked", {}, blocking="true").status_code == 200  # invocations are apart
    finally:
        rt.proc.stop()


def test_whisk_internal_error_is_500(tmp_path):
    broken = start_runtime(tmp_path, python="/nonexistent/python3")
    try:
        http = Http(broken)
        put_python(http, "any", "def main(a):\n    return a\n")
        r = http("POST", "actions/any", {}, blocking="true")
        assert r.status_code == 500
        assert r.json()["response"]["status"] == "whisk internal error"
        assert r.json()["response"]["statusCode"] == 3 and "error" in r.json()["response"]["result"]
        assert http("GET", "/healthz").status_code == 200
    finally:
        broken.proc.stop()


def test_activations_wait_for_memory_and_say_so(tmp_path):
    # An invoker with 256 MB of user memory runs one 256 MB action at a time; the next waits.
    rt = start_runtime(tmp_path, limits={"user-memory": 256})
    try:
        http = Http(rt)
        put_python(http, "hold", SLEEP, limits={"memory": 256})
        first = http("POST", "actions/hold", {"s": 1})
        second = http("POST", "actions/hold", {"s": 0})
        records = []
        for r in (first, second):
            aid = r.json()["activationId"]
            records.append(wait_until(lambda a=aid: http("GET", f"activations/{a}").json()
                                      if http("GET", f"activations/{a}").status_code == 200 else None, 10,
                                      what="activation"))
        wait_ms = [next(a["value"] for a in rec["annotations"] if a["key"] == "waitTime") for rec in records]
        assert wait_ms[0] < 500 and wait_ms[1] >= 900          # it waited for the first one's memory
        assert records[1]["start"] >= records[0]["end"]
    finally:
        rt.proc.stop()
