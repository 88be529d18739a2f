"""The router between the real broker, the real storage element, and real HTTP servers."""

import json
import re
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
import yaml

from panfaas import events
from services import (
    BIN,
    consume,
    free_port,
    produce,
    produce_many,
    router_config,
    start_router,
    wait_healthz,
    wait_until,
)

RULE = {"target": None, "path-predicate": {"matching": r"/data/.*\.(cxi|h5)"},
        "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD"}},
                 "write": {"with-macaroon": {"activity": "UPLOAD"},
                           "derived-path": {"replacing": "([^/]*)$", "with": r"\1.png"}}}}


def transfer(path, **kw):
    args = dict(path=path, pnfsid="0000" + format(abs(hash(path)), "X"), size=10, is_write=True, client="127.0.0.1",
                client_port=4000, user="admin", uid=1000, gid=1000, session=f"door:WebDAV-aio@aioDomain:{path}",
                transfer_ms=3)
    args.update(kw)
    return events.billing_transfer(**args)


def upload_pair(path, **kw):
    """What dCache sends for one upload: the pool's transfer, then the door's request."""
    t = transfer(path, **kw)
    return [t, events.billing_request(t, user=t["subject"][2][18:-1], uid=1000, gid=1000, client=t["protocolInfo"]
                                      ["host"])]


def settled(bootstrap, topic, expect, timeout=10.0):
    """The messages of `topic` once `expect` of them arrived, and proof that no more follow."""
    got = consume(bootstrap, topic, expect, timeout=timeout)
    assert len(got) == expect, [m["value"] for m in got]
    more = consume(bootstrap, topic, expect + 1, timeout=0.3)
    assert len(more) == expect, [m["value"] for m in more[expect:]]
    return got


@pytest.fixture
def router(broker, storage, topics, tmp_path):
    """start(rules, **config) -> (router, source, dead); stopped at the end."""
    started = []

    def start(rules, *, source=None, with_storage=True, extra=None):
        src = source or topics("billing")
        dead = topics("dead")
        conf = router_config(broker.bootstrap, storage if with_storage else None, rules, source_topic=src,
                             dead_letter=dead)
        for key, value in (extra or {}).items():
            conf.setdefault(key, {}).update(value) if isinstance(value, dict) else conf.__setitem__(key, value)
        r = start_router(tmp_path / f"r{len(started)}", conf)
        started.append(r)
        return r, src, dead
    yield start
    for r in started:
        r.proc.stop()


def test_upload_becomes_one_task_with_working_urls(storage, broker, topics, router):
    tasks = topics("tasks")
    r, _, _ = router([dict(RULE, target=tasks)], source=storage.billing_topic)
    requests.request("MKCOL", storage.url + "/data", auth=storage.auth())
    assert requests.put(storage.url + "/data/run7.cxi", data=b"detector bytes", auth=storage.auth()).ok
    requests.put(storage.url + "/data/notes.txt", data=b"ignored", auth=storage.auth())
    task = settled(broker.bootstrap, tasks, 1)[0]["value"]   # the door's request makes no second task
    assert set(task) == {"read", "write", "event", "task_id"}
    ev = task["event"]
    assert (ev["path"], ev["size"], ev["user"], ev["client"], ev["source"]) == \
        ("/data/run7.cxi", 14, "admin", "127.0.0.1", "kafka")
    assert re.fullmatch(r"0000[0-9A-F]+", ev["pnfsid"]) and ev["time"]
    assert re.fullmatch(rf"{storage.url}/data/run7\.cxi\?authz=[\w=-]+", task["read"])
    # Each URL does what its activity says, and nothing else.
    assert requests.get(task["read"]).content == b"detector bytes"
    assert requests.put(task["read"], data=b"overwrite").status_code == 403
    assert requests.put(task["write"], data=b"png").status_code in (201, 204)
    assert (storage.data_dir / "data" / "run7.cxi.png").read_bytes() == b"png"
    assert requests.get(task["write"].replace(".png?", "?")).status_code == 403


def test_create_path_makes_the_output_directory(storage, broker, topics, router):
    tasks = topics("tasks")
    rule = {"target": tasks, "path-predicate": {"matching": r"/incoming/[^/]*\.(jpe?g|tiff?)"},
            "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD"}},
                     "write": {"with-macaroon": {"activity": "UPLOAD", "lifetime": "PT2M"},
                               "derived-path": {"replacing": r"([^/]*)\.([^.]*)$", "with": r"\1-output"},
                               "create-path": True}}}
    r, src, _ = router([rule])
    produce(broker.bootstrap, src, [transfer("/incoming/pic.jpeg")])
    task = consume(broker.bootstrap, tasks, 1, timeout=10)[0]["value"]
    assert (storage.data_dir / "incoming" / "pic-output").is_dir()    # MKCOL, with missing parents
    assert task["write"].startswith(f"{storage.url}/incoming/pic-output?authz=")
    url = task["write"].replace("/pic-output?", "/pic-output/frame1.png?")  # the macaroon covers the directory
    assert requests.put(url, data=b"x").status_code in (201, 204)
    assert (storage.data_dir / "incoming" / "pic-output" / "frame1.png").read_bytes() == b"x"


def test_dcache_message_types_and_quirks(broker, topics, router):
    uploads, removes, door_removes, restores, reads = topics("uploads", "removes", "doorrm", "restores", "reads")
    rules = [
        {"target": uploads, "path-predicate": {"matching": "/data/.*"}, "urls": {"read": {}}},
        {"target": removes, "path-predicate": {"matching": "/data/.*"}, "urls": {"gone": {}},
         "event-predicate": {"msgType": "remove"}},
        {"target": door_removes, "path-predicate": {"matching": "/data/.*"}, "urls": {"gone": {}},
         "event-predicate": {"msgType": "remove", "cellType": "door"}},
        {"target": restores, "path-predicate": {"matching": "/data/.*"}, "urls": {"staged": {}},
         "event-predicate": {"msgType": "restore"}},
        {"target": reads, "path-predicate": {"matching": "/data/.*"}, "urls": {"read": {}},
         "event-predicate": {"msgType": "transfer", "isWrite": "read"}},
    ]
    r, src, dead = router(rules, with_storage=False)
    rm = dict(path="/data/a.h5", pnfsid="0000AA", size=10, user="admin", uid=1000, gid=1000, client="127.0.0.1",
              session="s1")
    restore = {"version": "1.0", "msgType": "restore", "date": "2019-03-04T11:45:32.123+01:00", "queuingTime": 0,
               "transaction": "t", "cellName": "pool1", "cellType": "pool", "cellDomain": "d",
               "status": {"code": 0, "msg": ""}, "session": "s2", "hsm": {"type": "osm", "instance": "osm",
                                                                          "provider": "script"},
               "locations": [], "pnfsid": "0000BB", "billingPath": "/data/b.h5", "fileSize": 20,
               "storageInfo": "raw:tape@osm", "transferTime": 100}
    produce(broker.bootstrap, src, [
        *upload_pair("/data/a.h5"),                                          # one task, not two
        transfer("/data/p2p.h5") | {"isP2p": True},                          # pool to pool: none
        transfer("/data/failed.h5", status=(10006, "disk full")),            # failed: none
        transfer("/data/read.h5", is_write=False),                           # a read: only `reads`
        events.billing_remove(cell_type="door", cell="WebDAV-aio", **rm),    # WebDAV DELETE...
        events.billing_remove(cell_type="pool", cell="pool1", **rm),         # ...and the pool's remove
        restore,
        transfer("/data/zz-last.h5"),     # in order on one partition: its task means all were processed
    ])
    counts = {uploads: 2, removes: 2, door_removes: 1, restores: 1, reads: 1}
    by_topic = {t: settled(broker.bootstrap, t, n) for t, n in counts.items()}
    by_topic[uploads] = by_topic[uploads][:1]
    paths = {t: sorted((m["value"]["event"]["path"], m["value"]["event"]["cellType"]) for m in msgs)
             for t, msgs in by_topic.items()}
    assert paths == {uploads: [("/data/a.h5", "pool")], removes: [("/data/a.h5", "door"), ("/data/a.h5", "pool")],
                     door_removes: [("/data/a.h5", "door")], restores: [("/data/b.h5", "pool")],
                     reads: [("/data/read.h5", "pool")]}
    staged = by_topic[restores][0]["value"]
    assert staged["event"]["msgType"] == "restore" and staged["event"]["size"] == 20 and staged["event"]["user"] is None
    assert consume(broker.bootstrap, dead, 1, timeout=1) == []


def test_each_extension_filter_end_to_end(broker, topics, router):
    out = topics("filtered")
    rules = [{"target": out, "path-predicate": {"matching": "/data/.*"}, "urls": {"read": {}},
              "event-predicate": {"user": ["alice"], "client": "10.1.0.0/16", "file-size": {"min": 100, "max": "1 MB"},
                                  "storage-class": "raw:*"}}]
    r, src, _ = router(rules, with_storage=False)
    ok = dict(user="alice", client="10.1.2.3", size=500, storage_info="raw:disk@osm")
    produce(broker.bootstrap, src, [
        transfer("/data/ok.h5", **ok),
        transfer("/data/user.h5", **{**ok, "user": "bob"}),
        transfer("/data/client.h5", **{**ok, "client": "10.2.0.1"}),
        transfer("/data/small.h5", **{**ok, "size": 99}),
        transfer("/data/big.h5", **{**ok, "size": 1_000_001}),
        transfer("/data/class.h5", **{**ok, "storage_info": "user:disk@osm"}),
        transfer("/data/zz-last.h5", **ok),
    ])
    got = settled(broker.bootstrap, out, 2)
    assert [m["value"]["event"]["path"] for m in got] == ["/data/ok.h5", "/data/zz-last.h5"]


def test_malformed_events_are_dead_lettered_and_the_router_goes_on(broker, topics, router):
    tasks = topics("tasks")
    r, src, dead = router([dict(RULE, target=tasks)])
    produce(broker.bootstrap, src, [b"not json", {"msgType": 5}, transfer("/data/good.h5")])
    dead_msgs = consume(broker.bootstrap, dead, 2, timeout=10)
    docs = {m["value"]["value"]: m["value"] for m in dead_msgs}
    assert docs["not json"]["reason"].startswith("malformed event: not JSON")
    assert docs['{"msgType": 5}']["reason"] == "malformed event: field 'msgType' must be a string, got int"
    assert docs["not json"]["topic"] == src and docs["not json"]["offset"] == 0 and docs["not json"]["stage"] == "parse"
    assert consume(broker.bootstrap, tasks, 1, timeout=10)[0]["value"]["event"]["path"] == "/data/good.h5"
    assert r.proc.alive()


class MacaroonDoor(BaseHTTPRequestHandler):
    """A real HTTP server playing the storage door: answers `plan` statuses in turn, then 200;
    always `refuse[path]` for the paths in `refuse`."""

    plan: list = []
    refuse: dict = {}
    seen: list = []

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        type(self).seen.append((self.path, self.headers.get("Content-Type"), self.headers.get("Authorization"),
                                json.loads(body)))
        status = type(self).refuse.get(self.path) or (type(self).plan.pop(0) if type(self).plan else 200)
        doc = {"macaroon": f"M{len(type(self).seen)}"} if status == 200 else {"error": "door says no"}
        data = json.dumps(doc).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


@pytest.fixture
def door():
    server = ThreadingHTTPServer(("127.0.0.1", 0), MacaroonDoor)
    MacaroonDoor.plan, MacaroonDoor.seen, MacaroonDoor.refuse = [], [], {}
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/", MacaroonDoor
    server.shutdown()


def macaroon_rule(target):
    return {"target": target, "path-predicate": {"matching": "/data/.*"},
            "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD", "lifetime": "PT10M"}}}}


def test_macaroon_request_is_dynamic_processings_and_is_retried(broker, topics, router, door):
    url, handler = door
    handler.plan = [503, 503]                       # fails twice, then works
    tasks = topics("tasks")
    r, src, dead = router([macaroon_rule(tasks)], with_storage=False, extra={
        "url-generator": {"base": url, "macaroons": {"username": "agent", "password": "pw"},
                          "retries": 3, "backoff": 0.05}})
    produce(broker.bootstrap, src, [transfer("/data/a b.h5")])
    task = consume(broker.bootstrap, tasks, 1, timeout=10)[0]["value"]
    assert task["read"] == url + "data/a%20b.h5?authz=M3"
    path, ctype, auth, body = handler.seen[-1]
    assert (path, ctype, body) == ("/data/a%20b.h5", "application/macaroon-request",
                                   {"caveats": ["activity:DOWNLOAD"], "validity": "PT10M"})   # no path: caveat
    assert auth == "Basic YWdlbnQ6cHc="
    assert len(handler.seen) == 3


@pytest.mark.parametrize("status, attempts", [(503, 3), (401, 1)])
def test_failed_macaroon_request_is_dead_lettered_never_a_bare_url(broker, topics, router, door, status, attempts):
    url, handler = door
    handler.refuse = {"/data/x.h5": status}
    tasks = topics("tasks")
    r, src, dead = router([macaroon_rule(tasks)], with_storage=False, extra={
        "url-generator": {"base": url, "macaroons": {"username": "agent", "password": "pw"},
                          "retries": 2, "backoff": 0.05}})
    produce(broker.bootstrap, src, [transfer("/data/x.h5"), transfer("/data/y.h5")])
    got = consume(broker.bootstrap, tasks, 1, timeout=10)
    assert [m["value"]["event"]["path"] for m in got] == ["/data/y.h5"]     # the next event works
    assert "?authz=" in got[0]["value"]["read"]
    doc = settled(broker.bootstrap, dead, 1)[0]["value"]
    assert doc["reason"] == (f"macaroon request (DOWNLOAD) for /data/x.h5 failed after {attempts} attempt"
                             f"{'s' if attempts > 1 else ''}: HTTP {status}: door says no")
    assert doc["stage"] == "urls" and doc["target"] == tasks and len(doc["task_id"]) == 32
    assert json.loads(doc["value"])["transferPath"] == "/data/x.h5"
    settled(broker.bootstrap, tasks, 1)                                      # never a bare URL for x.h5


def test_restart_resumes_where_it_left_off(broker, topics, router, tmp_path):
    tasks = topics("tasks")
    rules = [{"target": tasks, "path-predicate": {"matching": "/data/.*"}, "urls": {"read": {}}}]
    r, src, _ = router(rules, with_storage=False)
    produce_many(broker.bootstrap, src, [transfer(f"/data/a{i}.h5") for i in range(20)])
    wait_until(lambda: len(consume(broker.bootstrap, tasks, 20, timeout=1)) == 20, 20, what="20 tasks")
    r.proc.stop()                                   # SIGTERM: a clean stop commits what was acked
    produce_many(broker.bootstrap, src, [transfer(f"/data/b{i}.h5") for i in range(20)])
    r.proc.start()
    wait_healthz(f"http://127.0.0.1:{r.port}/healthz")
    got = wait_until(lambda: (m := consume(broker.bootstrap, tasks, 41, timeout=1.5)) and len(m) >= 40 and m,
                     20, what="40 tasks")
    paths = [m["value"]["event"]["path"] for m in got]
    assert sorted(paths) == sorted([f"/data/a{i}.h5" for i in range(20)] + [f"/data/b{i}.h5" for i in range(20)])


def test_healthz_and_metrics(broker, topics, router):
    tasks = topics("tasks")
    rules = [{"target": tasks, "path-predicate": {"matching": "/data/.*"}, "urls": {"read": {}}}]
    r, src, dead = router(rules, with_storage=False)
    produce(broker.bootstrap, src, [*upload_pair("/data/m.h5"), b"{"])
    consume(broker.bootstrap, dead, 1, timeout=10)
    base = f"http://127.0.0.1:{r.port}"

    def settled():
        h = requests.get(base + "/healthz").json()
        return h if h.get("tasks_out") == 1 and h.get("dead_lettered") == 1 else None
    health = wait_until(settled, 10, what="tasks and dead letters counted")
    assert health["status"] == "ok" and health["events_in"] == 3 and health["matched"] == 1
    text = requests.get(base + "/metrics").text
    for line in ('router_events_in_total{source="kafka"} 3.0', "router_events_matched_total 1.0",
                 f'router_tasks_out_total{{target="{tasks}"}} 1.0', 'router_dead_lettered_total{stage="parse"} 1.0',
                 f'router_consumer_lag{{partition="{src}/0"}} 0.0'):
        assert line in text, line
    assert "router_macaroon_request_seconds_bucket" in text


def test_router_waits_for_its_source_topic(broker, topics, tmp_path):
    missing = f"billing-later-{free_port()}"
    conf = router_config(broker.bootstrap, None, [{"target": topics("t"), "path-predicate": {"matching": ".*"},
                                                   "urls": {"r": {}}}], source_topic=missing, dead_letter=topics("d"))
    path = tmp_path / "router.yml"
    path.write_text(yaml.safe_dump(conf))
    proc = subprocess.Popen([str(BIN / "panfaas"), "router", "serve", "--config", str(path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{conf['listen']['port']}/healthz"
        h = wait_until(lambda: (h := requests.get(url, timeout=1)).status_code == 503 and
                       "waiting for topic" in h.json()["source_status"] and h.json(), 30, what="waiting healthz")
        assert h["status"] == "starting" and f"waiting for topic '{missing}'" in h["source_status"]
        produce(broker.bootstrap, missing, [transfer("/data/late.h5")])   # tansu creates it on first use
        wait_healthz(url, 20)
    finally:
        proc.terminate()
        proc.wait(10)


def test_dry_run_mints_working_urls_without_a_broker(storage, tmp_path):
    conf = router_config(f"127.0.0.1:{free_port()}", storage, [dict(RULE, target="previews")],
                         source_topic="billing", dead_letter="dead-letter")
    path = tmp_path / "router.yml"
    path.write_text(yaml.safe_dump(conf))
    requests.request("MKCOL", storage.url + "/data", auth=storage.auth())
    requests.put(storage.url + "/data/dry.h5", data=b"dry", auth=storage.auth())
    out = subprocess.run([str(BIN / "panfaas"), "router", "dry-run", str(path), "--event",
                          json.dumps(transfer("/data/dry.h5"))], capture_output=True, text=True, timeout=60)
    line = json.loads(out.stdout)
    assert line["topic"] == "previews"
    assert requests.get(line["value"]["read"]).content == b"dry"
