"""Six misbehaving functions, each recorded as OpenWhisk records it, and the runtime unharmed:
it answers at once afterwards, a well-behaved function still runs warm, nothing is left running."""

from __future__ import annotations

import os

import pytest
import requests
from test_runtime_api import Http

from services import start_runtime

MB = 1024 * 1024
LIMIT = {"timeout": 1000, "memory": 256, "logs": 10}

PYTHON = {
    "sleeps": "import time\ndef main(a):\n    print('going to sleep')\n    time.sleep(30)\n    return {}\n",
    "allocates": "def main(a):\n    hog = bytearray(1024 * 1024 * 1024)\n    return {'len': len(hog)}\n",
    "chatters": "import sys\ndef main(a):\n    line = 'x' * 1023\n    for _ in range(20 * 1024):\n"
                "        print(line)\n    return {'printed': 20 * 1024 * 1024}\n",
    "bloats": "def main(a):\n    return {'blob': 'x' * (2 * 1024 * 1024)}\n",
    "scalar": "def main(a):\n    return 'not a dict'\n",
    "raises": "def main(a):\n    raise RuntimeError('the detector file is corrupt')\n",
}
# The same six as blackbox executables (dockerskeleton's protocol).
BLACKBOX = {
    "sleeps": "#!/bin/sh\necho going to sleep\nsleep 30\necho '{}'\n",
    "allocates": "#!/usr/bin/env python3\nhog = bytearray(1024 * 1024 * 1024)\nprint('{}')\n",
    "chatters": "#!/bin/sh\nhead -c 20971520 /dev/zero | tr '\\0' 'x' | fold -w 1023\necho\necho '{\"printed\": 1}'\n",
    "bloats": "#!/usr/bin/env python3\nprint('{\"blob\": \"' + 'x' * (2 * 1024 * 1024) + '\"}')\n",
    "scalar": "#!/bin/sh\necho 42\n",
    "raises": "#!/usr/bin/env python3\nraise SystemExit('the detector file is corrupt')\n",
}
WELL = "def main(a):\n    return {'ok': True, 'n': a.get('n')}\n"


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-bad"))
    yield r
    r.proc.stop()


@pytest.fixture(scope="module")
def http(rt):
    h = Http(rt)
    for n, code in PYTHON.items():
        assert h("PUT", f"actions/py-{n}", {"exec": {"kind": "python:3.11", "code": code}, "limits": LIMIT}).ok
    for n, code in BLACKBOX.items():
        assert h("PUT", f"actions/bb-{n}", {"exec": {"kind": "blackbox", "image": "openwhisk/dockerskeleton",
                                                    "code": code}, "limits": LIMIT}).ok
    assert h("PUT", "actions/well", {"exec": {"kind": "python:3.11", "code": WELL}}).ok
    return h


def invoke(http, name):
    r = http("POST", f"actions/{name}", {}, blocking="true")
    rec = r.json()
    return r.status_code, rec, {a["key"]: a["value"] for a in rec["annotations"]}


def assert_unharmed(http, rt):
    """The runtime answers at once, a good function still works (warm), no action process is left over."""
    r = http("POST", "actions/well", {"n": 7}, blocking="true")
    assert r.status_code == 200 and r.json()["response"]["result"] == {"ok": True, "n": 7}
    assert requests.get(rt.api_host + "/healthz", timeout=2).status_code == 200
    assert rt.proc.alive()


def children(pid: int) -> list[int]:
    out = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                with open(f"/proc/{p}/stat") as fh:
                    if int(fh.read().rsplit(")", 1)[1].split()[1]) == pid:
                        out.append(int(p))
            except (OSError, ValueError, IndexError):
                pass
    return out


@pytest.mark.parametrize("kind", ["py", "bb"])
def test_sleeps_past_its_timeout(http, rt, kind):
    status, rec, anns = invoke(http, f"{kind}-sleeps")
    assert status == 502
    assert rec["response"]["status"] == "action developer error" and rec["statusCode"] == 2
    assert rec["response"]["result"] == {"error": "The action exceeded its time limits of 1000 milliseconds."}
    assert anns["timeout"] is True and anns["limits"]["timeout"] == 1000
    assert 1000 <= rec["duration"] < 5000
    assert any(line.endswith("stdout: going to sleep") for line in rec["logs"])
    assert_unharmed(http, rt)


@pytest.mark.parametrize("kind", ["py", "bb"])
def test_allocates_beyond_its_memory_limit(http, rt, kind):
    status, rec, anns = invoke(http, f"{kind}-allocates")
    assert status == 502
    assert rec["response"]["status"] == "action developer error"
    assert rec["response"]["result"] == {"error": "The action exhausted its memory and was aborted."}
    assert anns["timeout"] is False and anns["limits"]["memory"] == 256
    assert any("MemoryError" in line for line in rec["logs"])
    assert_unharmed(http, rt)


@pytest.mark.parametrize("kind", ["py", "bb"])
def test_prints_20_mb_of_logs(http, rt, kind):
    status, rec, _ = invoke(http, f"{kind}-chatters")
    # Logs beyond the limit are cut, with OpenWhisk's warning; the activation itself succeeds.
    assert status == 200 and rec["response"]["success"] is True
    assert rec["logs"][-1].endswith("stderr: Logs were truncated because the total bytes size exceeds the limit "
                                    f"of {10 * MB} bytes.")
    kept = sum(len(line.split(": ", 1)[1]) + 1 for line in rec["logs"][:-1])
    assert 9 * MB < kept <= 10 * MB
    assert_unharmed(http, rt)


@pytest.mark.parametrize("kind", ["py", "bb"])
def test_returns_2_mb(http, rt, kind):
    status, rec, _ = invoke(http, f"{kind}-bloats")
    assert status == 502 and rec["response"]["status"] == "application error"
    err = rec["response"]["result"]["error"]
    assert err.startswith("The action produced a response that exceeded the allowed length: ")
    assert f"> {MB} bytes. The truncated response was: " in err
    assert len(err) < MB + 300   # the record keeps at most the limit of it
    assert_unharmed(http, rt)


@pytest.mark.parametrize("kind", ["py", "bb"])
def test_returns_something_that_is_not_a_dict(http, rt, kind):
    status, rec, _ = invoke(http, f"{kind}-scalar")
    assert status == 502 and rec["response"]["status"] == "action developer error"
    assert rec["response"]["result"] == {"error": "The action did not return a dictionary or array."}
    assert_unharmed(http, rt)


def test_raises(http, rt):
    status, rec, _ = invoke(http, "py-raises")
    assert status == 502 and rec["response"]["status"] == "application error" and rec["statusCode"] == 1
    assert rec["response"]["result"] == {"error": "the detector file is corrupt"}
    assert any("Traceback" in line for line in rec["logs"])
    assert any("RuntimeError: the detector file is corrupt" in line for line in rec["logs"])
    # A blackbox that dies prints no result line: "did not return a dictionary", stderr in the logs.
    status, rec, _ = invoke(http, "bb-raises")
    assert status == 502 and rec["response"]["status"] == "action developer error"
    assert any("stderr: the detector file is corrupt" in line for line in rec["logs"])
    assert_unharmed(http, rt)


def test_nothing_is_left_running(http, rt):
    for name in ("py-sleeps", "bb-sleeps", "py-raises", "py-allocates"):
        invoke(http, name)
    # Only warm python processes (one per action that ended well) remain children of the runtime;
    # the timed-out and out-of-memory ones were killed with their process group.
    kids = children(rt.proc.popen.pid)
    cmdlines = [open(f"/proc/{k}/cmdline").read() for k in kids if os.path.exists(f"/proc/{k}")]
    assert not any("sleep" in c or "py-sleeps" in c or "py-allocates" in c for c in cmdlines), cmdlines
