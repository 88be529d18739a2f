"""dCache frontend storage events (inotify over SSE) from the running storage element.

Real HTTP throughout: requests and curl for the REST calls and uploads, the
standard library's http.client for the SSE streams (so that a test can cut a
stream off mid-way, as a crashing client would).
"""

from __future__ import annotations

import http.client
import json
import queue
import socket
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from services import start_storage, unique_topic

BACKLOG = 64


@pytest.fixture(scope="module")
def st(session_dir, broker):
    s = start_storage(session_dir / f"sse-{unique_topic('s')}", broker.bootstrap, billing_topic=unique_topic("billing"),
                      frontend={"keepalive": 0.2, "backlog": BACKLOG})
    requests.request("MKCOL", s.url + "/data", auth=s.auth())
    yield s
    s.proc.stop()


class SSE:
    """A minimal SSE client on http.client; `cut()` drops the connection like a crash would."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None, last_event_id: str | None = None,
                 headers: dict | None = None):
        u = urllib.parse.urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=30)
        hdrs = {"Accept": "text/event-stream", **(headers or {})}
        if auth:
            hdrs["Authorization"] = requests.auth._basic_auth_str(*auth)
        if last_event_id is not None:
            hdrs["Last-Event-ID"] = last_event_id
        self.conn.request("GET", u.path + (f"?{u.query}" if u.query else ""), headers=hdrs)
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.events: queue.Queue = queue.Queue()
        self.ended = threading.Event()
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self):
        ev: dict = {}
        try:
            while True:
                line = self.resp.readline()
                if not line:
                    break
                line = line.decode().rstrip("\n")
                if not line:
                    if "data" in ev:
                        ev["data"] = json.loads(ev["data"])
                        self.events.put(ev)
                    ev = {}
                elif line.startswith(":"):
                    continue
                else:
                    key, _, value = line.partition(":")
                    value = value[1:] if value.startswith(" ") else value
                    ev[key] = ev[key] + "\n" + value if key == "data" and key in ev else value
        except Exception:  # noqa: BLE001 - cut() closes the connection under the reader
            pass
        finally:
            self.ended.set()

    def next(self, timeout: float = 10.0) -> dict:
        return self.events.get(timeout=timeout)

    def take(self, n: int, timeout: float = 10.0) -> list[dict]:
        return [self.next(timeout) for _ in range(n)]

    def quiet(self, seconds: float = 0.5) -> list[dict]:
        """Whatever arrives within `seconds` (to check that nothing more comes)."""
        out, deadline = [], time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                out.append(self.events.get(timeout=left))
            except queue.Empty:
                break
        return out

    def cut(self) -> None:
        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        self.ended.wait(5)


def new_channel(st, user="admin", **body) -> str:
    r = requests.post(st.url + "/api/v1/events/channels", auth=st.auth(user), json=body or None)
    assert r.status_code == 201, r.text
    return r.headers["Location"]


def subscribe(st, channel: str, path: str, flags=None, user="admin") -> requests.Response:
    sel = {"path": path} if flags is None else {"path": path, "flags": flags}
    return requests.post(channel + "/subscriptions/inotify", auth=st.auth(user), json=sel, allow_redirects=False)


def mkdir(st, path):
    r = requests.request("MKCOL", st.url + path, auth=st.auth())
    assert r.status_code == 201, r.text


def put(st, path, data=b"x"):
    r = requests.put(st.url + path, data=data, auth=st.auth())
    assert r.status_code in (201, 204), r.text


def inotify(events):
    return [(e["data"]["event"].get("name"), e["data"]["event"]["mask"]) for e in events if e["event"] == "inotify"]


# -- authentication and the REST surface ----------------------------------------

@pytest.mark.parametrize("method, path", [
    ("GET", "/api/v1/events"), ("GET", "/api/v1/events/eventTypes"), ("GET", "/api/v1/events/channels"),
    ("POST", "/api/v1/events/channels"), ("GET", "/api/v1/events/channels/xyz"),
    ("POST", "/api/v1/events/channels/xyz/subscriptions/inotify"), ("GET", "/api/v1/namespace/data"),
])
def test_anonymous_gets_401(st, method, path):
    r = requests.request(method, st.url + path)
    assert r.status_code == 401
    assert r.json()["errors"][0]["status"] == "401"


def test_wrong_password_gets_401_on_the_stream(st):
    ch = new_channel(st)
    s = SSE(ch, ("admin", "wrong"))
    assert s.status == 401


def test_service_metadata_and_event_types(st):
    meta = requests.get(st.url + "/api/v1/events", auth=st.auth()).json()
    assert meta == {"channels": {"maximumPerUser": 128,
                                 "lifetimeWhenDisconnected": {"minimum": 1, "maximum": 86400, "default": 300}}}
    assert requests.get(st.url + "/api/v1/events/eventTypes", auth=st.auth()).json() == ["inotify"]
    desc = requests.get(st.url + "/api/v1/events/eventTypes/inotify", auth=st.auth()).json()
    assert "inotify(7)" in desc["description"]
    schema = requests.get(st.url + "/api/v1/events/eventTypes/inotify/selector", auth=st.auth()).json()
    assert schema["required"] == ["path"] and "IN_CLOSE_WRITE" in schema["properties"]["flags"]["items"]["enum"]
    assert requests.get(st.url + "/api/v1/events/eventTypes/metronome", auth=st.auth()).status_code == 404


def test_channel_lifecycle(st):
    ch = new_channel(st, **{"client-id": "lifecycle-1"})
    plain = new_channel(st)
    assert ch.startswith(st.url + "/api/v1/events/channels/")
    everything = requests.get(st.url + "/api/v1/events/channels", auth=st.auth()).json()
    assert ch in everything and plain in everything
    mine = requests.get(st.url + "/api/v1/events/channels", params={"client-id": "lifecycle-1"}, auth=st.auth())
    assert mine.json() == [ch]
    without = requests.get(st.url + "/api/v1/events/channels?client-id=", auth=st.auth()).json()
    assert plain in without and ch not in without
    assert requests.get(ch, auth=st.auth()).json() == {"timeout": 300}
    assert requests.patch(ch, json={"timeout": 3600}, auth=st.auth()).status_code == 204
    assert requests.get(ch, auth=st.auth()).json() == {"timeout": 3600}
    for bad in ({"timeout": 0}, {"timeout": 86401}, {"timeout": "60"}, {}):
        r = requests.patch(ch, json=bad, auth=st.auth())
        assert r.status_code == 400 and r.json()["error"], bad
    # Another user may not touch it; bob does not even see it listed.
    assert requests.get(ch, auth=st.auth("bob")).status_code == 403
    assert ch not in requests.get(st.url + "/api/v1/events/channels", auth=st.auth("bob")).json()
    assert requests.delete(ch, auth=st.auth()).status_code == 204
    gone = requests.get(ch, auth=st.auth())
    assert gone.status_code == 404
    assert gone.json()["errors"] == [{"message": "Not Found", "status": "404"}]
    assert requests.delete(ch, auth=st.auth()).status_code == 404
    assert SSE(ch, st.auth()).status == 404


def test_subscriptions_are_created_listed_merged_and_removed(st):
    mkdir(st, "/data/subs")
    ch = new_channel(st)
    r = subscribe(st, ch, "/data/subs", ["IN_CLOSE_WRITE"])
    assert r.status_code == 201
    sub = r.headers["Location"]
    assert sub.startswith(ch + "/subscriptions/inotify/")
    assert requests.get(ch + "/subscriptions", auth=st.auth()).json() == [sub]
    assert requests.get(sub, auth=st.auth()).json() == {"path": "/data/subs", "flags": ["IN_CLOSE_WRITE"]}
    # The same target again merges into the existing subscription (303 See Other), as in dCache.
    again = subscribe(st, ch, "/data/subs", ["IN_CREATE"])
    assert again.status_code == 303 and again.headers["Location"] == sub
    assert requests.get(sub, auth=st.auth()).json()["flags"] == ["IN_CREATE"]
    added = subscribe(st, ch, "/data/subs", ["IN_DELETE", "IN_MASK_ADD"])
    assert added.status_code == 303
    assert requests.get(sub, auth=st.auth()).json()["flags"] == ["IN_CREATE", "IN_DELETE"]
    assert requests.delete(sub, auth=st.auth()).status_code == 204
    assert requests.get(sub, auth=st.auth()).status_code == 404
    assert requests.get(ch + "/subscriptions", auth=st.auth()).json() == []


@pytest.mark.parametrize("selector, reason", [
    ({}, "Missing path"),
    ({"path": "data"}, "must match"),
    ({"path": "/data/"}, "must match"),
    ({"path": "/data", "flags": ["IN_NOPE"]}, "unknown flag"),
    ({"path": "/data", "flags": ["IN_DONT_FOLLOW"]}, "Unsupported flags"),
    ({"path": "/data", "flags": "IN_CREATE"}, "must be a list"),
    ({"path": "/data/no-such-dir"}, "Not found"),
    ({"path": "/data/../etc"}, "traversal"),
    ({"path": "/data", "colour": "red"}, "unknown field"),
])
def test_bad_selectors_get_400_with_dcache_reasons(st, selector, reason):
    ch = new_channel(st)
    r = requests.post(ch + "/subscriptions/inotify", auth=st.auth(), json=selector)
    assert r.status_code == 400
    assert reason in r.json()["errors"][0]["message"]


def test_only_dir_flag_and_unknown_event_type(st):
    put(st, "/data/plain-file.txt")
    ch = new_channel(st)
    r = subscribe(st, ch, "/data/plain-file.txt", ["IN_ONLYDIR"])
    assert r.status_code == 400 and "IN_ONLYDIR" in r.json()["error"]
    r = requests.post(ch + "/subscriptions/metronome", auth=st.auth(), json={"frequency": 1})
    assert r.status_code == 400 and "Unknown event type" in r.json()["error"]
    r = requests.post(ch + "/subscriptions/inotify", auth=st.auth(), data=b"",
                      headers={"Content-Type": "application/json"})
    assert r.status_code == 400


# -- the events ------------------------------------------------------------------

def test_upload_mkdir_move_delete_events_with_ids(st, tmp_path):
    mkdir(st, "/data/ev")
    ch = new_channel(st)
    sub = subscribe(st, ch, "/data/ev").headers["Location"]
    s = SSE(ch, st.auth())
    assert s.status == 200
    f = tmp_path / "interesting-results.dat"
    f.write_bytes(b"results" * 1000)
    out = subprocess.run(["curl", "-sS", "-u", ":".join(st.auth()), "-T", str(f), "-o", "/dev/null",
                          "-w", "%{http_code}", st.url + "/data/ev/interesting-results.dat"],
                         capture_output=True, text=True)
    assert out.stdout == "201", out.stderr
    upload = s.take(5)
    assert inotify(upload) == [("interesting-results.dat", [m]) for m in
                               ("IN_CREATE", "IN_OPEN", "IN_MODIFY", "IN_CLOSE_WRITE", "IN_ATTRIB")]
    ids = [int(e["id"]) for e in upload]
    assert ids == list(range(ids[0], ids[0] + 5))
    assert all(e["data"]["subscription"] == sub for e in upload)
    mkdir(st, "/data/ev/sub")
    assert inotify([s.next()]) == [("sub", ["IN_CREATE", "IN_ISDIR"])]
    r = requests.request("MOVE", st.url + "/data/ev/sub", auth=st.auth(),
                         headers={"Destination": st.url + "/data/ev/renamed"})
    assert r.status_code == 201
    moves = s.take(2)
    assert sorted(inotify(moves)) == [("renamed", ["IN_MOVED_TO", "IN_ISDIR"]), ("sub", ["IN_MOVED_FROM", "IN_ISDIR"])]
    cookies = {e["data"]["event"]["cookie"] for e in moves}
    assert len(cookies) == 1 and cookies != {""}
    assert requests.delete(st.url + "/data/ev/interesting-results.dat", auth=st.auth()).status_code == 204
    assert inotify([s.next()]) == [("interesting-results.dat", ["IN_DELETE"])]
    s.cut()


def test_watches_are_not_recursive(st):
    mkdir(st, "/data/flat")
    mkdir(st, "/data/flat/inner")
    ch = new_channel(st)
    subscribe(st, ch, "/data/flat", ["IN_CREATE", "IN_CLOSE_WRITE"])
    s = SSE(ch, st.auth())
    put(st, "/data/flat/inner/deep.h5")       # a grandchild: not seen
    put(st, "/data/flat/top.h5")
    got = s.take(2)
    assert inotify(got) == [("top.h5", ["IN_CREATE"]), ("top.h5", ["IN_CLOSE_WRITE"])]
    assert s.quiet(0.3) == []
    s.cut()


def test_file_watch_sees_the_file_itself_and_follows_a_rename(st):
    put(st, "/data/watched.txt", b"one")
    ch = new_channel(st)
    subscribe(st, ch, "/data/watched.txt", ["IN_CLOSE_WRITE", "IN_MOVE_SELF", "IN_DELETE_SELF", "IN_ATTRIB",
                                            "IN_CLOSE_NOWRITE"])
    s = SSE(ch, st.auth())
    r = requests.request("MOVE", st.url + "/data/watched.txt", auth=st.auth(),
                         headers={"Destination": "/data/moved.txt"})
    assert r.status_code == 201
    assert [e["data"]["event"] for e in s.take(1)] == [{"mask": ["IN_MOVE_SELF"]}]
    assert requests.get(st.url + "/data/moved.txt", auth=st.auth()).content == b"one"
    assert [e["data"]["event"] for e in s.take(1)] == [{"mask": ["IN_CLOSE_NOWRITE"]}]
    assert requests.delete(st.url + "/data/moved.txt", auth=st.auth()).status_code == 204
    got = s.take(3)
    assert [e["data"]["event"] for e in got[:2]] == [{"mask": ["IN_DELETE_SELF"]}, {"mask": ["IN_IGNORED"]}]
    assert got[2]["event"] == "SYSTEM" and got[2]["data"]["type"] == "SUBSCRIPTION_CLOSED"
    assert "id" not in got[2]
    assert requests.get(ch + "/subscriptions", auth=st.auth()).json() == []
    s.cut()


def test_system_events_for_new_and_closed_subscriptions(st):
    mkdir(st, "/data/sys")
    ch = new_channel(st)
    s = SSE(ch, st.auth())
    sub = subscribe(st, ch, "/data/sys").headers["Location"]
    assert s.next()["data"] == {"type": "NEW_SUBSCRIPTION", "subscription": sub}
    requests.delete(sub, auth=st.auth())
    ignored, closed = s.take(2)
    assert ignored["data"]["event"] == {"mask": ["IN_IGNORED"]}
    assert closed["data"] == {"type": "SUBSCRIPTION_CLOSED", "subscription": sub}
    s.cut()


def test_oneshot_watch_closes_after_its_first_event(st):
    mkdir(st, "/data/once")
    ch = new_channel(st)
    subscribe(st, ch, "/data/once", ["IN_CLOSE_WRITE", "IN_ONESHOT"])
    s = SSE(ch, st.auth())
    put(st, "/data/once/a")
    put(st, "/data/once/b")
    got = s.take(3)
    assert inotify(got) == [("a", ["IN_CLOSE_WRITE"]), (None, ["IN_IGNORED"])]
    assert got[2]["data"]["type"] == "SUBSCRIPTION_CLOSED"
    assert s.quiet(0.3) == []
    s.cut()


def test_a_second_stream_replaces_the_first(st):
    ch = new_channel(st)
    first = SSE(ch, st.auth())
    time.sleep(0.1)
    second = SSE(ch, st.auth())
    assert first.next()["data"] == {"type": "COMPETING_CLIENT"}
    assert first.ended.wait(5)
    assert second.status == 200
    second.cut()


# -- resuming --------------------------------------------------------------------

def test_disconnect_and_resume_with_last_event_id_misses_nothing(st):
    mkdir(st, "/data/resume")
    ch = new_channel(st)
    subscribe(st, ch, "/data/resume", ["IN_CLOSE_WRITE"])
    s = SSE(ch, st.auth())
    for i in range(5):
        put(st, f"/data/resume/f{i:02d}")
    seen = s.take(5)
    s.cut()                                  # the client crashes ...
    for i in range(5, 25):                   # ... while uploads go on
        put(st, f"/data/resume/f{i:02d}")
    resumed = SSE(ch, st.auth(), last_event_id=seen[-1]["id"])
    rest = resumed.take(20)
    for i in range(25, 30):                  # and the resumed stream stays live
        put(st, f"/data/resume/f{i:02d}")
    rest += resumed.take(5)
    names = [e["data"]["event"]["name"] for e in seen + rest]
    assert names == [f"f{i:02d}" for i in range(30)]
    ids = [int(e["id"]) for e in seen + rest]
    assert ids == list(range(ids[0], ids[0] + 30))
    assert resumed.quiet(0.3) == []
    resumed.cut()


def test_resume_with_curl_and_last_event_id(st):
    mkdir(st, "/data/curl-resume")
    ch = new_channel(st)
    subscribe(st, ch, "/data/curl-resume", ["IN_CLOSE_WRITE"])
    s = SSE(ch, st.auth())
    put(st, "/data/curl-resume/a")
    first = s.next()
    s.cut()
    put(st, "/data/curl-resume/b")
    out = subprocess.run(["curl", "-sS", "-N", "--max-time", "1.5", "-u", ":".join(st.auth()),
                          "-H", "Accept: text/event-stream", "-H", f"Last-Event-ID: {first['id']}", ch],
                         capture_output=True, text=True)
    assert f"id: {int(first['id']) + 1}\n" in out.stdout
    assert '"name":"b","mask":["IN_CLOSE_WRITE"]' in out.stdout


def test_an_id_no_longer_in_the_ring_buffer_gives_event_loss(st):
    mkdir(st, "/data/loss")
    ch = new_channel(st)
    subscribe(st, ch, "/data/loss", ["IN_CLOSE_WRITE"])
    s = SSE(ch, st.auth())
    put(st, "/data/loss/first")
    first = s.next()
    s.cut()
    for i in range(BACKLOG + 5):
        put(st, f"/data/loss/g{i:03d}")
    resumed = SSE(ch, st.auth(), last_event_id=first["id"])
    loss = resumed.next()
    assert loss["event"] == "SYSTEM" and loss["data"] == {"type": "EVENT_LOSS"}
    assert resumed.quiet(0.3) == []          # the lost events are not replayed; new ones come
    put(st, "/data/loss/after")
    assert inotify([resumed.next()]) == [("after", ["IN_CLOSE_WRITE"])]
    resumed.cut()
    # A reconnect without Last-Event-ID starts afresh, with no EVENT_LOSS.
    fresh = SSE(ch, st.auth())
    assert fresh.quiet(0.3) == []
    fresh.cut()


def test_a_channel_left_alone_longer_than_its_timeout_is_gone(st):
    ch = new_channel(st)
    assert requests.patch(ch, json={"timeout": 1}, auth=st.auth()).status_code == 204
    s = SSE(ch, st.auth())
    time.sleep(1.3)                          # connected: does not expire
    assert requests.get(ch, auth=st.auth()).status_code == 200
    s.cut()
    deadline = time.monotonic() + 5
    while requests.get(ch, auth=st.auth()).status_code != 404:
        assert time.monotonic() < deadline, "channel did not expire"
        time.sleep(0.2)
    assert ch not in requests.get(st.url + "/api/v1/events/channels", auth=st.auth()).json()
    # Never connected at all: the timeout runs from creation.
    idle = new_channel(st)
    requests.patch(idle, json={"timeout": 1}, auth=st.auth())
    time.sleep(1.5)
    assert requests.get(idle, auth=st.auth()).status_code == 404


# -- macaroons and the namespace API -----------------------------------------------

def test_macaroon_restricted_subscriber(st):
    mkdir(st, "/data/mine")
    mkdir(st, "/data/theirs")
    r = requests.post(st.url + "/data/mine", auth=st.auth(), data=json.dumps({"caveats": ["activity:LIST,DOWNLOAD"]}),
                      headers={"Content-Type": "application/macaroon-request"})
    mac = r.json()["macaroon"]
    bearer = {"Authorization": f"Bearer {mac}"}
    r = requests.post(st.url + "/api/v1/events/channels", headers=bearer)
    assert r.status_code == 201
    ch = r.headers["Location"]
    assert requests.post(ch + "/subscriptions/inotify", headers=bearer, json={"path": "/data/theirs"}).json()["error"] \
        == "Permission denied: Not allowed."
    assert requests.post(ch + "/subscriptions/inotify", headers=bearer, json={"path": "/data/mine"}).status_code == 201
    s = SSE(ch, headers=bearer)
    put(st, "/data/mine/ok.h5")
    assert ("ok.h5", ["IN_CLOSE_WRITE"]) in inotify(s.take(5))
    s.cut()
    assert requests.get(ch, params={"authz": mac}).status_code == 200


def test_namespace_listing_for_recursive_watch_emulation(st):
    mkdir(st, "/data/tree")
    mkdir(st, "/data/tree/d1")
    put(st, "/data/tree/f1.h5", b"abc")
    doc = requests.get(st.url + "/api/v1/namespace/data/tree", params={"children": "true", "checksum": "true"},
                       auth=st.auth()).json()
    assert doc["fileType"] == "DIR" and len(doc["pnfsId"]) == 36
    kids = {c["fileName"]: c for c in doc["children"]}
    assert kids["d1"]["fileType"] == "DIR" and kids["f1.h5"]["fileType"] == "REGULAR"
    assert kids["f1.h5"]["size"] == 3
    assert kids["f1.h5"]["checksums"] == [{"type": "ADLER32", "value": "024d0127"}]
    assert requests.get(st.url + "/api/v1/namespace/data/nope", auth=st.auth()).status_code == 404
    me = requests.get(st.url + "/api/v1/user", auth=st.auth()).json()
    assert me["status"] == "AUTHENTICATED" and me["username"] == "admin" and me["uid"] == 1000
    assert requests.get(st.url + "/api/v1/user").json()["status"] == "ANONYMOUS"


def test_shutdown_tells_connected_streams(tmp_path, broker):
    s = start_storage(tmp_path / "shut", broker.bootstrap, billing_topic=unique_topic("billing"),
                      frontend={"keepalive": 0.2})
    try:
        ch = new_channel(s)
        stream = SSE(ch, s.auth())
        time.sleep(0.2)
        s.proc.stop()
        assert stream.next()["data"] == {"type": "SHUTDOWN"}
        assert s.proc.popen.returncode == 0
    finally:
        s.proc.stop()
