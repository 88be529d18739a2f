"""panfaas.client against the real runtime and storage element, over HTTP: the same calls a
notebook makes against a site's OpenWhisk and dCache."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
import requests

from panfaas.client import AsyncFunctions, ClientError, Functions, Storage, api_url, read_wskprops
from services import start_runtime, unique_topic

ECHO = "def main(a):\n    print('got', sorted(a))\n    return a\n"
SLOW = "import time\ndef main(a):\n    time.sleep(a['s'])\n    return {'slept': a['s']}\n"
BOOM = "def main(a):\n    raise ValueError('bad input: ' + str(a.get('x')))\n"


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-client"))
    fn = Functions(r.api_host, r.auth)
    for name, code in (("echo", ECHO), ("slow", SLOW), ("boom", BOOM)):
        fn.put("actions", name, {"exec": {"kind": "python:3.11", "code": code}})
    yield r
    r.proc.stop()


@pytest.fixture
def fn(rt):
    with Functions(rt.api_host, rt.auth) as f:
        yield f


def test_invoke_result_record_and_errors(fn):
    assert fn.invoke("echo", {"a": 1}, b=2) == {"a": 1, "b": 2}
    rec = fn.invoke("echo", x=1, result=False)
    assert rec["response"]["success"] and rec["activationId"]
    accepted = fn.invoke("echo", x=2, blocking=False)
    assert set(accepted) == {"activationId"}
    assert fn.wait(accepted["activationId"])["response"]["result"] == {"x": 2}
    with pytest.raises(ClientError) as e:
        fn.invoke("boom", x=3)
    assert e.value.status == 502 and e.value.body == {"error": "bad input: 3"}
    assert "bad input: 3" in str(e.value)
    with pytest.raises(ClientError) as e:
        fn.invoke("no-such-action")
    assert e.value.status == 404


def test_a_call_outlasting_the_blocking_wait_is_polled_to_its_end(fn):
    t0 = time.monotonic()
    assert fn.invoke("slow", s=1.2, wait_ms=200) == {"slept": 1.2}
    assert time.monotonic() - t0 >= 1.2
    assert set(fn.invoke("slow", s=0.5, wait_ms=100, wait=False)) == {"activationId"}


def test_activations_logs_result(fn):
    since = int(time.time() * 1000)
    ids = [fn.invoke("echo", i=i, result=False)["activationId"] for i in range(3)]
    listed = fn.activations(name="echo", since=since)
    assert [a["activationId"] for a in listed] == ids[::-1]
    assert "response" not in fn.activations(name="echo", since=since, docs=False)[0]
    assert fn.activations(name="echo", since=since, limit=1, skip=1)[0]["activationId"] == ids[1]
    assert fn.logs(ids[0])[0].endswith("stdout: got ['i']")
    assert fn.result(ids[0])["result"] == {"i": 0}
    assert fn.activation(ids[2])["response"]["result"] == {"i": 2}


def test_fire_and_entities(fn):
    t = unique_topic("ct")
    fn.put("triggers", t, {})
    assert fn.fire(t, x=1) is None                       # no rule: 204
    fn.put("rules", f"{t}-r", {"trigger": f"/_/{t}", "action": "/_/echo"})
    tid = fn.fire(t, {"x": 1})
    assert fn.wait(tid)["name"] == t
    fn.rule_status(f"{t}-r", "inactive")
    assert fn.get("rules", f"{t}-r")["status"] == "inactive"
    assert any(x["name"] == t for x in fn.list("triggers"))
    assert fn.delete("rules", f"{t}-r") and not fn.delete("rules", f"{t}-r")
    assert fn.get("triggers", "no-such-trigger") is None


def test_async_client(rt):
    async def run():
        async with AsyncFunctions(rt.api_host, rt.auth) as afn:
            results = await asyncio.gather(*(afn.invoke("echo", i=i) for i in range(12)))
            assert sorted(r["i"] for r in results) == list(range(12))
            assert await afn.invoke("slow", s=0.6, wait_ms=100) == {"slept": 0.6}
            with pytest.raises(ClientError) as e:
                await afn.invoke("boom", x=1)
            assert e.value.status == 502 and e.value.body == {"error": "bad input: 1"}
            rec = await afn.invoke("echo", x=5, result=False)
            assert (await afn.activation(rec["activationId"]))["response"]["result"] == {"x": 5}
            assert (await afn.activations(name="echo", limit=1))[0]["name"] == "echo"
            t = unique_topic("at")
            Functions(rt.api_host, rt.auth).put("triggers", t, {})
            assert await afn.fire(t, x=1) is None
    asyncio.run(run())


def test_wskprops_and_endpoints(rt, tmp_path):
    props = tmp_path / "wskprops"
    props.write_text(f"# written by wsk property set\nAPIHOST={rt.api_host}\nAUTH={rt.auth}\nNAMESPACE=_\n")
    assert Functions.from_wskprops(props).invoke("echo", w=1) == {"w": 1}
    assert read_wskprops(props)["AUTH"] == rt.auth
    assert api_url("openwhisk.example.org:31001") == "https://openwhisk.example.org:31001"
    assert api_url("http://127.0.0.1:3233") == "http://127.0.0.1:3233"
    (tmp_path / "endpoints.json").write_text(
        json.dumps({"runtime": {"api_host": rt.api_host, "auth": rt.auth, "namespace": "guest"}}))
    assert Functions.from_endpoints(tmp_path / "endpoints.json").invoke("echo", e=1) == {"e": 1}
    with pytest.raises(ClientError, match="not found"):
        Functions.from_wskprops(tmp_path / "missing")


def test_storage_list_upload_download_macaroon(storage):
    st = Storage(storage.url, *storage.auth())
    base = f"/data/{unique_topic('client')}"
    st.mkdir(base + "/sub")
    st.upload(f"{base}/a.txt", b"hello")
    st.upload(f"{base}/b.bin", iter([b"ab", b"cd"]))
    entries = {e["name"]: e for e in st.list(base)}
    assert entries["a.txt"] == {**entries["a.txt"], "type": "file", "size": 5, "path": f"{base}/a.txt"}
    assert entries["sub"]["type"] == "dir"
    assert st.download(f"{base}/b.bin") == b"abcd" and st.exists(f"{base}/a.txt")
    url = st.url_for(f"{base}/a.txt", "DOWNLOAD")
    assert requests.get(url, timeout=10).content == b"hello"       # no credentials but the macaroon
    mac = st.macaroon(f"{base}/a.txt", ["DOWNLOAD", "LIST"], "PT5M")
    assert Storage(storage.url, macaroon=mac["macaroon"]).download(f"{base}/a.txt") == b"hello"
    assert st.path_of(storage.url + f"{base}/a.txt?authz=secret") == f"{base}/a.txt"
    assert st.path_of("http://elsewhere.example.org/x.png") is None
    st.delete(f"{base}/a.txt")
    assert not st.exists(f"{base}/a.txt")
    with pytest.raises(ClientError) as e:
        Storage(storage.url, "admin", "wrong").download(f"{base}/b.bin")
    assert e.value.status in (401, 403)
