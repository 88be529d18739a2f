"""The function runtime's REST API over real HTTP: the status code and body of every endpoint
and every error, compared with what OpenWhisk's controller answers."""

from __future__ import annotations

import json
import re
import time
import uuid

import pytest
import requests

from panfaas.client import Functions
from services import start_runtime, wait_until

ECHO = ("import os\ndef main(args):\n    print('hello', args.get('x'))\n"
        "    return dict(args, aid=os.environ['__OW_ACTIVATION_ID'])\n")
SLEEP = "import time\ndef main(args):\n    time.sleep(args.get('s', 1))\n    return {'slept': args.get('s', 1)}\n"
CODE = re.compile(r"\A[0-9a-f]{32}\Z")


class Http:
    """Raw requests against the API (the client would hide status codes)."""

    def __init__(self, rt, auth=None):
        self.base = rt.api_host + "/api/v1/namespaces/_"
        self.root = rt.api_host
        self.s = requests.Session()
        self.s.auth = tuple((auth or rt.auth).split(":", 1))

    def __call__(self, method, path, json=None, **params):
        url = path if path.startswith("http") else (self.root + path if path.startswith("/") else
                                                     f"{self.base}/{path}")
        return self.s.request(method, url, json=json, params={k: v for k, v in params.items() if v is not None},
                              timeout=70)


@pytest.fixture(scope="module")
def rt(tmp_path_factory):
    r = start_runtime(tmp_path_factory.mktemp("rt-api"))
    yield r
    r.proc.stop()


@pytest.fixture
def http(rt):
    return Http(rt)


@pytest.fixture
def fn(rt):
    return Functions(rt.api_host, rt.auth)


def name(prefix="e"):
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def assert_error(r, status, message=None):
    assert r.status_code == status, (r.status_code, r.text)
    body = r.json()
    assert set(body) == {"error", "code"} and CODE.match(body["code"]), body
    assert r.headers["x-request-id"] == body["code"]
    if message is not None:
        assert body["error"] == message, body["error"]
    return body["error"]


def put_python(http, n, code=ECHO, **extra):
    r = http("PUT", f"actions/{n}", {"exec": {"kind": "python:3.11", "code": code}, **extra})
    assert r.status_code == 200, r.text
    return r.json()


# -- authentication, namespaces, plumbing ---------------------------------------

def test_authentication_and_namespace_errors(rt, http):
    assert_error(requests.get(http.base + "/actions"), 401,
                 "The resource requires authentication, which was not supplied with the request.")
    bad = Http(rt, "00000000-0000-0000-0000-000000000000:nope")
    assert_error(bad("GET", "actions"), 401, "The supplied authentication is invalid.")
    wrong_key = Http(rt, rt.auth.split(":")[0] + ":wrong")
    assert_error(wrong_key("GET", "actions"), 401, "The supplied authentication is invalid.")
    assert_error(http("GET", rt.api_host + "/api/v1/namespaces/someone-else/actions"), 403,
                 "The supplied authentication is not authorized to access this resource.")
    assert_error(http("GET", "/api/v1/namespaces/_/nothing-here"), 404, "The requested resource does not exist.")
    assert_error(http("PATCH", "actions/x"), 405)


def test_info_namespaces_and_limits(rt, http):
    info = requests.get(rt.api_host + "/api/v1").json()
    assert info["api_paths"] == ["/api/v1"] and "python" in info["runtimes"]
    assert http("GET", "/api/v1/namespaces").json() == ["guest"]
    limits = http("GET", "limits").json()
    assert limits["maxActionTimeout"] == 300000 and limits["minActionTimeout"] == 100
    assert {"invocationsPerMinute", "concurrentInvocations", "firesPerMinute"} <= set(limits)
    assert requests.get(rt.api_host + "/healthz").json()["status"] == "ok"
    assert "panfaas_runtime_activations" in requests.get(rt.api_host + "/metrics").text


# -- actions ------------------------------------------------------------------

def test_action_create_conflict_update_get_delete(http):
    n = name()
    doc = put_python(http, n, parameters=[{"key": "p", "value": 1}], limits={"timeout": 5000})
    assert doc["namespace"] == "guest" and doc["name"] == n and doc["version"] == "0.0.1"
    assert doc["exec"] == {"kind": "python:3.11", "code": ECHO, "binary": False}
    assert doc["limits"] == {"timeout": 5000, "memory": 256, "logs": 10, "concurrency": 1}
    assert {"key": "provide-api-key", "value": False} in doc["annotations"]
    assert {"key": "exec", "value": "python:3.11"} in doc["annotations"]
    # PUT over an existing action without overwrite=true: 409, nothing changed
    assert_error(http("PUT", f"actions/{n}", {"exec": {"kind": "python:3.11", "code": "x"}}), 409,
                 "resource already exists")
    assert http("GET", f"actions/{n}").json()["exec"]["code"] == ECHO
    # overwrite merges: what the body leaves out keeps its old value, limits field by field
    upd = http("PUT", f"actions/{n}", {"limits": {"memory": 512}}, overwrite="true").json()
    assert upd["version"] == "0.0.2" and upd["exec"]["code"] == ECHO
    assert upd["limits"]["timeout"] == 5000 and upd["limits"]["memory"] == 512
    assert upd["parameters"] == [{"key": "p", "value": 1}]
    assert "code" not in http("GET", f"actions/{n}", code="false").json()["exec"]
    r = http("DELETE", f"actions/{n}")
    assert r.status_code == 200 and r.json()["version"] == "0.0.2"
    assert_error(http("DELETE", f"actions/{n}"), 404, "The requested resource does not exist.")
    assert_error(http("GET", f"actions/{n}"), 404, "The requested resource does not exist.")


@pytest.mark.parametrize("body, status, message", [
    ({}, 400, "exec undefined"),
    ({"exec": {"kind": "nodejs:20", "code": "x"}}, 400, None),
    ({"exec": {"kind": "blackbox"}}, 400, "The request content was malformed:\n'image' must be a string defined "
                                          "in 'exec' for 'blackbox' actions"),
    ({"exec": {"kind": "python:3.11"}}, 400, None),
    ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"timeout": 400000}}, 400,
     "Time limit 400000 ms exceeds allowed threshold of 300000 ms."),
    ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"timeout": 50}}, 400,
     "Time limit 50 ms below allowed threshold of 100 ms."),
    ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"memory": 64}}, 400,
     "Memory 64 MB below allowed threshold of 128 MB."),
    ({"exec": {"kind": "python:3.11", "code": "x"}, "limits": {"logs": 11}}, 400,
     "Log size 11 MB exceeds allowed threshold of 10 MB."),
    ({"exec": {"kind": "python:3.11", "code": "x"}, "parameters": {"a": 1}}, 400, None),
    ({"exec": {"kind": "sequence", "components": []}}, 400, "No component specified for the sequence."),
    ({"exec": {"kind": "sequence", "components": ["/_/does-not-exist"]}}, 400, "Sequence component does not exist."),
])
def test_action_put_validation(http, body, status, message):
    err = assert_error(http("PUT", f"actions/{name()}", body), status, message)
    assert err


def test_malformed_bodies_names_and_queries(http):
    r = http.s.put(http.base + "/actions/x", data="{not json", timeout=10)
    assert assert_error(r, 400).startswith("The request content was malformed:")
    assert_error(http("PUT", "actions/x", [1, 2]), 400, "The request content was malformed:\nexpected a JSON object")
    assert_error(http("PUT", "actions/-bad-", {"exec": {"kind": "python:3.11", "code": "x"}}), 400,
                 "The name of the entity contains illegal characters.")
    assert_error(http("PUT", "actions/x", {"exec": {"kind": "python:3.11", "code": "x"}}, overwrite="yes"), 400)


def test_names_are_unique_across_collections(http):
    n = name("shared")
    assert http("PUT", f"triggers/{n}", {}).status_code == 200
    assert_error(http("PUT", f"actions/{n}", {"exec": {"kind": "python:3.11", "code": "x"}}), 409,
                 "Resource by this name exists but is not in this collection.")
    assert_error(http("GET", f"actions/{n}"), 409, "Resource by this name exists but is not in this collection.")


def test_list_actions_paging_and_count(http):
    pkg = name("lp")
    assert http("PUT", f"packages/{pkg}", {}).status_code == 200
    for i in range(3):
        put_python(http, f"{pkg}/a{i}")
    listed = http("GET", f"actions/{pkg}/").json()
    assert sorted(a["name"] for a in listed) == ["a0", "a1", "a2"]
    assert all(set(a) == {"namespace", "name", "version", "publish", "annotations", "limits", "exec", "updated"}
               and a["exec"] == {"binary": False} and a["namespace"] == f"guest/{pkg}" for a in listed)
    assert len(http("GET", f"actions/{pkg}/", limit=2).json()) == 2
    assert len(http("GET", f"actions/{pkg}/", limit=2, skip=2).json()) == 1
    assert http("GET", f"actions/{pkg}/", count="true").json() == {"actions": 3}
    everything = http("GET", "actions", limit=0).json()
    assert {f"guest/{pkg}"} <= {a["namespace"] for a in everything}
    assert_error(http("GET", "actions", limit=201), 400, "The value '201' is not in the range of 0 to 200 for actions.")
    assert_error(http("GET", "actions", limit="many"), 400, "The value 'many' is not an integer for actions.")
    assert_error(http("GET", "actions", skip=-1), 400, "The value '-1' is not greater than or equal to 0 for actions.")
    assert_error(http("GET", f"actions/{name('nopkg')}/"), 404)


def test_action_in_missing_package_or_binding(http):
    assert_error(http("PUT", f"actions/{name('nopkg')}/a", {"exec": {"kind": "python:3.11", "code": "x"}}), 404)
    base, bind = name("base"), name("bind")
    http("PUT", f"packages/{base}", {})
    http("PUT", f"packages/{bind}", {"binding": {"namespace": "_", "name": base}})
    assert_error(http("PUT", f"actions/{bind}/a", {"exec": {"kind": "python:3.11", "code": "x"}}), 400,
                 "Operation not permitted on package binding.")


# -- invoke ---------------------------------------------------------------------

def test_invoke_blocking_result_and_non_blocking(http):
    n = name()
    put_python(http, n)
    r = http("POST", f"actions/{n}", {"x": 1}, blocking="true")
    assert r.status_code == 200
    rec = r.json()
    assert r.headers["x-openwhisk-activation-id"] == rec["activationId"] and CODE.match(rec["activationId"])
    assert rec["response"]["result"]["x"] == 1 and rec["response"]["success"] is True
    r = http("POST", f"actions/{n}", {"x": 2}, blocking="true", result="true")
    assert r.status_code == 200 and r.json()["x"] == 2 and "activationId" not in r.json()
    # result=true alone does not block (the server's semantics; wsk -r sets both)
    r = http("POST", f"actions/{n}", {"x": 3}, result="true")
    assert r.status_code == 202 and set(r.json()) == {"activationId"}
    r = http("POST", f"actions/{n}", {"x": 4})
    assert r.status_code == 202 and r.headers["x-openwhisk-activation-id"] == r.json()["activationId"]
    aid = r.json()["activationId"]
    done = wait_until(lambda: http("GET", f"activations/{aid}").status_code == 200 and
                      http("GET", f"activations/{aid}").json(), 10, what="activation")
    assert done["response"]["result"]["x"] == 4


def test_blocking_invoke_that_outlasts_the_wait_answers_202(http):
    n = name("slow")
    put_python(http, n, SLEEP)
    # The call waits 300 ms for a 4 s action: a 202, and no record yet, show it did not wait
    # for the end (no wall-clock assertion: the margin is the 3.7 s left).
    r = http("POST", f"actions/{n}", {"s": 4}, blocking="true", timeout=300)
    assert r.status_code == 202
    aid = r.json()["activationId"]
    assert_error(http("GET", f"activations/{aid}"), 404)  # still running: no record yet
    rec = wait_until(lambda: http("GET", f"activations/{aid}").json()
                     if http("GET", f"activations/{aid}").status_code == 200 else None, 10, what="record")
    assert rec["response"]["result"] == {"slept": 4}
    assert_error(http("POST", f"actions/{n}", {}, blocking="true", timeout=60001), 400,
                 "Timeout must be number of milliseconds up to 60000.")


def test_invoke_errors(http):
    n = name("boom")
    put_python(http, n, "def main(a):\n    raise ValueError('no')\n")
    r = http("POST", f"actions/{n}", {}, blocking="true")
    assert r.status_code == 502 and r.json()["response"]["status"] == "application error"
    r = http("POST", f"actions/{n}", {}, blocking="true", result="true")
    assert r.status_code == 502 and r.json() == {"error": "no"}
    d = name("notdict")
    put_python(http, d, "def main(a):\n    return 42\n")
    r = http("POST", f"actions/{d}", {}, blocking="true", result="true")
    assert r.status_code == 502 and r.json() == {"error": "The action did not return a dictionary or array."}
    assert_error(http("POST", f"actions/{name('missing')}", {}), 404, "The requested resource does not exist.")
    assert_error(http("POST", f"actions/{n}", [1]), 400)
    assert_error(http("POST", f"actions/{n}", {"big": "x" * (1024 * 1024)}), 413)
    assert_error(http("POST", f"actions/{n}", {}, blocking="maybe"), 400)


def test_final_parameters_cannot_be_overridden(http):
    n = name("final")
    put_python(http, n, parameters=[{"key": "bucket", "value": "results"}],
               annotations=[{"key": "final", "value": True}])
    assert_error(http("POST", f"actions/{n}", {"bucket": "other"}, blocking="true"), 400,
                 "Request defines parameters that are not allowed (e.g., reserved properties).")
    assert http("POST", f"actions/{n}", {"x": 1}, blocking="true", result="true").json()["bucket"] == "results"


def test_array_results_and_environment(http, rt):
    n = name("env")
    put_python(http, n, "import os\ndef main(a):\n    return [{k: v for k, v in os.environ.items() "
                        "if k.startswith('__OW_')}]\n", annotations=[{"key": "provide-api-key", "value": True}])
    r = http("POST", f"actions/{n}", {}, blocking="true")
    assert r.status_code == 200
    env = r.json()["response"]["result"][0]
    assert env["__OW_NAMESPACE"] == "guest" and env["__OW_ACTION_NAME"] == f"/guest/{n}"
    assert env["__OW_ACTIVATION_ID"] == r.json()["activationId"] and env["__OW_ACTION_VERSION"] == "0.0.1"
    assert env["__OW_API_HOST"] == rt.api_host and env["__OW_API_KEY"] == rt.auth
    assert int(env["__OW_DEADLINE"]) > r.json()["start"] and env["__OW_TRANSACTION_ID"]
    m = name("nokey")
    put_python(http, m, "import os\ndef main(a):\n    return {'key': os.environ.get('__OW_API_KEY')}\n")
    assert http("POST", f"actions/{m}", {}, blocking="true", result="true").json() == {"key": None}


# -- activations ----------------------------------------------------------------

def test_activation_record_logs_result(http):
    n = name()
    put_python(http, n)
    first = http("POST", f"actions/{n}", {"x": 1}, blocking="true").json()
    rec = http("POST", f"actions/{n}", {"x": 2}, blocking="true").json()
    got = http("GET", f"activations/{rec['activationId']}").json()
    assert got == rec
    assert {"namespace", "name", "version", "subject", "activationId", "start", "end", "duration", "statusCode",
            "response", "logs", "annotations", "publish"} <= set(rec)
    assert rec["response"] == {"status": "success", "statusCode": 0, "success": True,
                               "result": rec["response"]["result"], "size": rec["response"]["size"]}
    anns = {a["key"]: a["value"] for a in rec["annotations"]}
    assert anns["path"] == f"guest/{n}" and anns["kind"] == "python:3.11" and anns["timeout"] is False
    assert anns["limits"] == {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
    assert isinstance(anns["waitTime"], int) and "initTime" not in anns  # warm: no initTime
    assert "initTime" in {a["key"] for a in first["annotations"]}          # cold: initTime
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z +stdout: hello 2", rec["logs"][0])
    assert rec["logs"][0].index("stdout:") == 31                          # "%-30s stdout: ..."
    logs = http("GET", f"activations/{rec['activationId']}/logs")
    assert logs.status_code == 200 and logs.json() == {"logs": rec["logs"]}
    res = http("GET", f"activations/{rec['activationId']}/result")
    assert res.status_code == 200 and res.json() == rec["response"]
    assert_error(http("GET", "activations/not-an-id"), 400, "The activation id is not valid.")
    assert_error(http("GET", f"activations/{uuid.uuid4().hex}"), 404)
    assert_error(http("GET", f"activations/{uuid.uuid4().hex}/logs"), 404)


def test_activation_list_filters(http):
    pkg, n = name("ap"), name("listed")
    http("PUT", f"packages/{pkg}", {})
    put_python(http, n)
    put_python(http, f"{pkg}/{n}")
    since = int(time.time() * 1000)
    ids = []
    for i in range(4):
        ids.append(http("POST", f"actions/{n}", {"x": i}, blocking="true").json()["activationId"])
        time.sleep(0.01)  # distinct start times
    packaged = http("POST", f"actions/{pkg}/{n}", {}, blocking="true").json()["activationId"]
    by_path = http("GET", "activations", name=f"{pkg}/{n}", docs="true").json()
    assert [a["activationId"] for a in by_path] == [packaged]
    simple = http("GET", "activations", name=n, since=since, docs="true").json()
    assert {a["activationId"] for a in simple} == {*ids, packaged}    # a simple name matches in any package
    newest = http("GET", "activations", name=n, since=since, limit=2).json()
    assert [a["activationId"] for a in newest] == [packaged, ids[-1]]
    assert "response" not in newest[0] and "logs" not in newest[0]     # summaries without docs=true
    assert [a["activationId"] for a in http("GET", "activations", name=n, since=since, limit=2, skip=2).json()] \
        == [ids[2], ids[1]]
    start = [http("GET", f"activations/{i}").json()["start"] for i in ids]
    window = http("GET", "activations", name=n, since=start[1], upto=start[2]).json()
    assert [a["activationId"] for a in window] == [ids[2], ids[1]]
    assert http("GET", "activations", name=n, since=since, count="true").json() == {"activations": 5}
    assert_error(http("GET", "activations", count="true", docs="true"), 400,
                 "The parameter 'docs' is not permitted with 'count'.")
    assert_error(http("GET", "activations", since="yesterday"), 400,
                 "Parameter is not a valid value for epoch seconds: yesterday")
    assert_error(http("GET", "activations", name="a/b/c"), 400)
    assert_error(http("GET", "activations", limit=500), 400)


# -- triggers and rules ---------------------------------------------------------

def test_trigger_fire_204_without_rules_then_202(http):
    t, a = name("t"), name("a")
    r = http("PUT", f"triggers/{t}", {"parameters": [{"key": "from_trigger", "value": 1}]})
    assert r.status_code == 200 and r.json()["limits"] == {} and "rules" not in r.json()
    assert_error(http("PUT", f"triggers/{t}", {}), 409, "resource already exists")
    r = http("POST", f"triggers/{t}", {"x": 1})
    assert r.status_code == 204 and r.content == b""
    put_python(http, a)
    r = http("PUT", f"rules/{t}-r", {"trigger": f"/_/{t}", "action": f"/_/{a}"})
    assert r.status_code == 200 and r.json()["status"] == "active"
    assert r.json()["trigger"] == {"path": "guest", "name": t} and r.json()["action"] == {"path": "guest", "name": a}
    trig = http("GET", f"triggers/{t}").json()
    assert trig["rules"] == {f"guest/{t}-r": {"action": {"path": "guest", "name": a}, "status": "active"}}
    r = http("POST", f"triggers/{t}", {"x": 1})
    assert r.status_code == 202 and r.headers["x-openwhisk-activation-id"] == r.json()["activationId"]
    tid = r.json()["activationId"]
    trec = http("GET", f"activations/{tid}").json()
    assert trec["name"] == t and trec["response"]["result"] == {"x": 1} and "end" not in trec
    entry = json.loads(trec["logs"][0])
    assert entry["success"] is True and entry["rule"] == f"guest/{t}-r" and entry["action"] == f"guest/{a}"
    child = wait_until(lambda: http("GET", f"activations/{entry['activationId']}").json()
                       if http("GET", f"activations/{entry['activationId']}").status_code == 200 else None, 10,
                       what="rule's activation")
    assert child["cause"] == tid and child["response"]["result"]["from_trigger"] == 1
    assert child["response"]["result"]["x"] == 1
    assert_error(http("POST", f"triggers/{name('missing')}", {}), 404)
    assert_error(http("PUT", f"triggers/{name()}", {"annotations": [{"key": "feed", "value": "/a/b/c/d"}]}), 400,
                 "Feed name is not valid")


def test_rule_enable_disable_and_errors(http):
    t, a, t2, rl = name("t"), name("a"), name("t"), name("r")
    http("PUT", f"triggers/{t}", {})
    http("PUT", f"triggers/{t2}", {})
    put_python(http, a)
    assert_error(http("PUT", f"rules/{rl}", {"trigger": f"/_/{t}"}), 400,
                 "rule requires a valid trigger and a valid action")
    assert_error(http("PUT", f"rules/{rl}", {"trigger": "/_/nope", "action": f"/_/{a}"}), 400,
                 "trigger /guest/nope does not exist")
    assert_error(http("PUT", f"rules/{rl}", {"trigger": f"/_/{t}", "action": "/_/nope"}), 400,
                 "action /guest/nope does not exist")
    assert http("PUT", f"rules/{rl}", {"trigger": f"/_/{t}", "action": f"/_/{a}"}).status_code == 200
    assert_error(http("PUT", f"rules/{rl}", {"trigger": f"/_/{t}", "action": f"/_/{a}"}), 409)
    r = http("POST", f"rules/{rl}", {"status": "inactive"})
    assert r.status_code == 200 and r.json() == {}
    assert http("GET", f"rules/{rl}").json()["status"] == "inactive"
    assert http("POST", f"rules/{rl}", {"status": "inactive"}).status_code == 200  # already so: 200
    assert http("POST", f"triggers/{t}", {}).status_code == 204                   # no active rule
    # an update keeps the status and may move the rule to another trigger
    upd = http("PUT", f"rules/{rl}", {"trigger": f"/_/{t2}"}, overwrite="true").json()
    assert upd["status"] == "inactive" and upd["trigger"]["name"] == t2 and upd["version"] == "0.0.2"
    assert_error(http("POST", f"rules/{rl}", {"status": "paused"}), 400)
    assert_error(http("POST", f"rules/{rl}", {}), 400)
    # an active and an inactive rule: the trigger's record says which ran
    on = name("r")
    http("POST", f"rules/{rl}", {"status": "active"})
    http("PUT", f"rules/{on}", {"trigger": f"/_/{t2}", "action": f"/_/{a}"})
    http("POST", f"rules/{rl}", {"status": "inactive"})
    tid = http("POST", f"triggers/{t2}", {}).json()["activationId"]
    logs = [json.loads(x) for x in http("GET", f"activations/{tid}").json()["logs"]]
    inactive = next(x for x in logs if x["rule"] == f"guest/{rl}")
    assert inactive == {"statusCode": 1, "success": False, "rule": f"guest/{rl}", "action": f"guest/{a}",
                        "error": f"Rule 'guest/{rl}' is inactive, action 'guest/{a}' was not activated."}
    assert next(x for x in logs if x["rule"] == f"guest/{on}")["success"] is True
    assert http("DELETE", f"triggers/{t2}").status_code == 200
    assert_error(http("POST", f"rules/{rl}", {"status": "active"}), 404,
                 "Only rules with existing triggers can be activated")
    assert http("GET", f"rules/{rl}").json()["status"] == "inactive"
    deleted = http("DELETE", f"rules/{rl}")
    assert deleted.status_code == 200 and deleted.json()["status"] == "inactive"
    assert_error(http("GET", f"rules/{rl}"), 404)


# -- packages and sequences -------------------------------------------------------

def test_packages_bindings_and_parameter_precedence(http):
    pkg, bind, a = name("pkg"), name("bind"), "echo"
    r = http("PUT", f"packages/{pkg}", {"parameters": [{"key": "p", "value": "package"},
                                                      {"key": "b", "value": "package"}]})
    assert r.status_code == 200 and r.json()["binding"] == {}
    put_python(http, f"{pkg}/{a}", parameters=[{"key": "a", "value": "action"}])
    r = http("PUT", f"packages/{bind}", {"binding": {"namespace": "_", "name": pkg},
                                         "parameters": [{"key": "b", "value": "binding"}]})
    assert r.status_code == 200 and r.json()["binding"] == {"namespace": "guest", "name": pkg}
    assert {"key": "binding", "value": {"namespace": "guest", "name": pkg}} in r.json()["annotations"]
    got = http("GET", f"packages/{pkg}").json()
    assert [x["name"] for x in got["actions"]] == [a] and got["feeds"] == []
    merged = {p["key"]: p["value"] for p in http("GET", f"packages/{bind}").json()["parameters"]}
    assert merged == {"p": "package", "b": "binding"}
    # package < binding < action < invocation payload
    res = http("POST", f"actions/{bind}/{a}", {"x": 1, "a": "payload"}, blocking="true").json()
    assert {k: res["response"]["result"][k] for k in ("p", "b", "a")} == \
        {"p": "package", "b": "binding", "a": "payload"}
    assert {"key": "binding", "value": f"guest/{bind}"} in res["annotations"]
    assert {"key": "path", "value": f"guest/{pkg}/{a}"} in res["annotations"]
    res = http("POST", f"actions/{pkg}/{a}", {}, blocking="true", result="true").json()
    assert (res["p"], res["b"], res["a"]) == ("package", "package", "action")
    assert_error(http("PUT", f"packages/{name()}", {"binding": {"namespace": "_", "name": "nope"}}), 400,
                 "Binding references a package that does not exist.")
    assert_error(http("PUT", f"packages/{name()}", {"binding": {"namespace": "_", "name": bind}}), 400,
                 "Cannot bind to another package binding.")
    assert_error(http("PUT", f"packages/{pkg}", {"binding": {"namespace": "_", "name": bind}}, overwrite="true"),
                 409, "Resource is a package and cannot be converted into a binding.")
    assert_error(http("PUT", "packages/default", {}), 400, "Package name 'default' is reserved.")
    assert_error(http("DELETE", f"packages/{pkg}"), 409, "Package not empty (contains 1 entity)")
    assert http("DELETE", f"packages/{bind}").status_code == 200
    assert http("DELETE", f"packages/{pkg}", force="true").status_code == 200
    assert_error(http("GET", f"actions/{pkg}/{a}"), 404)


def test_sequences(http):
    first, second, boom, seq = name("s1"), name("s2"), name("sb"), name("seq")
    put_python(http, first, "def main(a):\n    return {'n': a.get('n', 0) + 1}\n")
    put_python(http, second, "def main(a):\n    return {'n': a['n'] * 10}\n")
    put_python(http, boom, "def main(a):\n    return {'error': 'stop here'}\n")
    r = http("PUT", f"actions/{seq}", {"exec": {"kind": "sequence", "components": [f"/_/{first}", f"{second}"]}})
    assert r.status_code == 200
    assert r.json()["exec"] == {"kind": "sequence", "components": [f"/guest/{first}", f"/guest/{second}"]}
    assert r.json()["parameters"] == [{"key": "_actions", "value": [f"/guest/{first}", f"/guest/{second}"]}]
    assert_error(http("PUT", f"actions/{seq}", {"exec": {"kind": "sequence", "components": [f"/_/{seq}"]}},
                      overwrite="true"), 400, "Sequence may not refer to itself.")
    rec = http("POST", f"actions/{seq}", {"n": 1}, blocking="true").json()
    assert rec["response"]["result"] == {"n": 20} and len(rec["logs"]) == 2
    anns = {a["key"]: a["value"] for a in rec["annotations"]}
    assert anns["kind"] == "sequence" and anns["topmost"] is True
    comp = http("GET", f"activations/{rec['logs'][0]}").json()
    assert comp["cause"] == rec["activationId"] and {"key": "causedBy", "value": "sequence"} in comp["annotations"]
    assert rec["duration"] == sum(http("GET", f"activations/{i}").json()["duration"] for i in rec["logs"])
    failing = name("seqf")
    http("PUT", f"actions/{failing}", {"exec": {"kind": "sequence",
                                                "components": [f"/_/{first}", f"/_/{boom}", f"/_/{second}"]}})
    r = http("POST", f"actions/{failing}", {}, blocking="true")
    assert r.status_code == 502 and r.json()["response"]["result"] == {"error": "stop here"}
    assert len(r.json()["logs"]) == 2  # the third component never ran


# -- the Kafka feed action ---------------------------------------------------------

def test_feed_action_lifecycle_over_http(http, broker, topics):
    topic, t = topics("feedapi"), name("ft")
    feed = "/api/v1/namespaces/whisk.system/actions/messaging/kafkaFeed"
    assert http("GET", feed).status_code == 200
    assert http("GET", "/api/v1/namespaces/whisk.system/packages/messaging").json()["actions"][0]["name"] == \
        "kafkaFeed"
    assert_error(http("PUT", feed, {"exec": {"kind": "python:3.11", "code": "x"}}), 403)
    http("PUT", f"triggers/{t}", {"annotations": [{"key": "feed", "value": "/whisk.system/messaging/kafkaFeed"}]})
    args = {"authKey": "uuid:key", "triggerName": f"/_/{t}", "brokers": [broker.bootstrap], "topic": topic,
            "isJSONData": True}
    r = http("POST", feed, {**args, "lifecycleEvent": "CREATE"}, blocking="true")
    assert r.status_code == 200 and r.json()["response"]["success"] is True
    assert "authKey" not in str(http("GET", f"activations/{r.json()['activationId']}").json())
    r = http("POST", feed, {"lifecycleEvent": "READ", "triggerName": f"/_/{t}"}, blocking="true", result="true")
    assert r.status_code == 200
    assert r.json()["config"] == {"brokers": [broker.bootstrap], "topic": topic, "isJSONData": True,
                                  "isBinaryKey": False, "isBinaryValue": False, "triggerName": f"/guest/{t}"}
    r = http("POST", feed, {"lifecycleEvent": "UPDATE", "triggerName": f"/_/{t}", "isJSONData": False},
             blocking="true", result="true")
    assert r.status_code == 200
    r = http("POST", feed, {"lifecycleEvent": "UPDATE", "triggerName": f"/_/{t}", "topic": "other"},
             blocking="true", result="true")
    assert r.status_code == 502 and "cannot be updated" in r.json()["error"]
    r = http("POST", feed, {"lifecycleEvent": "CREATE", "triggerName": f"/_/{t}", "brokers": [broker.bootstrap]},
             blocking="true", result="true")
    assert r.status_code == 502 and r.json() == {"error": "You must supply a 'topic' parameter."}
    r = http("POST", feed, {**args, "lifecycleEvent": "CREATE", "triggerName": "/_/no-such-trigger"},
             blocking="true", result="true")
    assert r.status_code == 502 and "does not exist" in r.json()["error"]
    r = http("POST", feed, {**args, "lifecycleEvent": "CREATE", "isBinaryValue": True}, blocking="true",
             result="true")
    assert r.status_code == 502 and r.json() == {"error": "isJSONData and isBinaryValue cannot both be enabled."}
    assert http("POST", feed, {"lifecycleEvent": "DELETE", "triggerName": f"/_/{t}"},
                blocking="true").status_code == 200
    r = http("POST", feed, {"lifecycleEvent": "READ", "triggerName": f"/_/{t}"}, blocking="true", result="true")
    assert r.status_code == 502 and "has no Kafka feed" in r.json()["error"]


def test_zip_action_with_helper_module_virtualenv_and_init_parameters(http):
    import base64
    import io
    import zipfile
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__main__.py", "import os, helper, vendored\n"
                                  "def handle(args):\n"
                                  "    return {'double': helper.double(args['n']), 'vendored': vendored.VERSION,\n"
                                  "            'token_env': os.environ.get('TOKEN'), 'token_arg': args.get('TOKEN')}\n")
        z.writestr("helper.py", "def double(n):\n    return 2 * n\n")
        # A virtualenv as the python runtime expects it: bin/activate_this.py puts its site-packages first.
        z.writestr("virtualenv/bin/activate_this.py",
                   "import os, sys\nsys.path.insert(0, os.path.join(os.path.dirname(__file__), '..', 'site'))\n")
        z.writestr("virtualenv/site/vendored.py", "VERSION = '1.2.3'\n")
    n = name("zip")
    r = http("PUT", f"actions/{n}", {"exec": {"kind": "python:3.11", "code": base64.b64encode(buf.getvalue()).decode(),
                                              "main": "handle"},
                                     "parameters": [{"key": "TOKEN", "value": "s3cret", "init": True}]})
    assert r.status_code == 200 and r.json()["exec"]["binary"] is True
    res = http("POST", f"actions/{n}", {"n": 21}, blocking="true", result="true").json()
    # init parameters reach the process environment (as OpenWhisk's /init env), not the arguments
    assert res == {"double": 42, "vendored": "1.2.3", "token_env": "s3cret", "token_arg": None}
    bad = name("badvenv")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("__main__.py", "def main(a):\n    return a\n")
        z.writestr("virtualenv/README", "no activate_this.py")
    http("PUT", f"actions/{bad}", {"exec": {"kind": "python:3.11", "code": base64.b64encode(buf.getvalue()).decode()}})
    r = http("POST", f"actions/{bad}", {}, blocking="true", result="true")
    assert r.status_code == 502
    assert "Invalid virtualenv. Zip file does not include 'activate_this.py'." in r.json()["error"]
    assert r.json()["error"].startswith("The action failed during initialization: ")
