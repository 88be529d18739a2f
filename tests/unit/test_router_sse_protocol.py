"""The SSE source's protocol handling: the text/event-stream parser and what the source does with
dCache's inotify and SYSTEM events (reference §2).

The HTTP side of dCache's frontend (channels, subscriptions, namespace listing) is replaced here by
an in-memory namespace, because this unit test is about event handling; the source runs against
the real storage element's SSE API in tests/integration/test_router_sse.py.
"""

import asyncio
import json

import pytest

from panfaas import router
from panfaas.router import sse

API = "https://dcache.example.org:3880/api/v1"


def parse_stream(text):
    p = sse.SseParser()
    return [m for line in text.split("\n") if (m := p.feed(line.rstrip("\r")))]


def test_parser_reads_dcache_stream_excerpt():
    # frontend.md's upload excerpt (subscription URL shortened)
    msgs = parse_stream(
        'event: inotify\nid: 4\ndata: {"event":{"name":"interesting-results.dat","mask":["IN_CREATE"]},'
        '"subscription":"S"}\n\n'
        'event: inotify\nid: 7\ndata: {"event":{"name":"interesting-results.dat","mask":["IN_CLOSE_WRITE"]},'
        '"subscription":"S"}\n\n')
    assert [(m.type, m.id) for m in msgs] == [("inotify", "4"), ("inotify", "7")]
    assert json.loads(msgs[1].data)["event"]["mask"] == ["IN_CLOSE_WRITE"]


def test_parser_follows_the_event_stream_rules():
    msgs = parse_stream(": keep-alive comment\n\n"           # comment only: nothing
                        "event: SYSTEM\ndata: {\"type\":\ndata: \"EVENT_LOSS\"}\n\n"  # no id; two data lines
                        "id: 9\n\n"                          # id without data: no event
                        "data:no-space\r\n\r\n"              # CRLF, no space after the colon
                        "event: x\ndata: a\ndata: b\n\n")
    assert [(m.type, m.data, m.id) for m in msgs] == [
        ("SYSTEM", '{"type":\n"EVENT_LOSS"}', None), ("message", "no-space", None), ("x", "a\nb", None)]


class Namespace(sse.SseSource):
    """SseSource with dCache's frontend replaced by a dict of directories (see module docstring)."""

    def __init__(self, tmp_path, tree):
        conf = router.from_dict({
            "kafka-client": {"id": "test", "bootstrap-servers": "127.0.0.1:1"},
            "url-generator": {"base": "https://dcache.example.org/"},
            "files": [{"target": "t", "path-predicate": {"matching": ".*"}, "urls": {"r": {}}}],
            "source": {"type": "sse", "url": API, "paths": ["/data"], "state-file": str(tmp_path / "sse.json")}})
        super().__init__(conf)
        self.tree = tree          # path -> {"DIR": [names]} or file attributes
        self.channel = API + "/events/channels/C1"
        self.calls = []
        self.next_sub = 0

    async def _call(self, method, url, *, json_body=None, ok=(200, 201, 204)):
        self.calls.append((method, url, json_body))

        class R:
            headers = {}
        if url.endswith("/subscriptions/inotify"):
            self.next_sub += 1
            R.headers = {"Location": f"{self.channel}/subscriptions/inotify/s{self.next_sub}"}
        return R

    async def list_dir(self, path):
        entry = self.tree.get(path, {})
        return [{"fileName": n, **({"fileType": "DIR"} if "DIR" in self.tree.get(f"{path}/{n}", {}) else
                                   {"fileType": "REGULAR", **self.tree.get(f"{path}/{n}", {})})}
                for n in entry.get("DIR", [])]

    async def stat(self, path):
        return self.tree.get(path)

    def sub_for(self, path):
        return next(s for s, p in self.watches.items() if p == path)

    async def inotify(self, path, event, id_):
        msg = sse.SseMessage("inotify", json.dumps({"event": event, "subscription": self.sub_for(path)}), id_)
        await self.dispatch(msg)


def drain(src):
    out = []
    while not src.queue.empty():
        out.append(src.queue.get_nowait())
    return out


TREE = {"/data": {"DIR": ["run1", "top.h5"]}, "/data/run1": {"DIR": ["a.h5"]},
        "/data/top.h5": {"pnfsId": "P0", "size": 3, "mtime": 1_000},
        "/data/run1/a.h5": {"pnfsId": "P1", "size": 5, "mtime": 2_000}}


@pytest.fixture
def src(tmp_path):
    s = Namespace(tmp_path, {k: dict(v) for k, v in TREE.items()})
    asyncio.run(s.watch_tree("/data"))
    return s


def test_watches_are_recursive(src):
    assert sorted(src.watches.values()) == ["/data", "/data/run1"]
    bodies = [b for m, u, b in src.calls if m == "POST"]
    assert bodies[0]["flags"] == ["IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_DELETE_SELF", "IN_MOVE_SELF",
                                  "IN_MOVE", "IN_ATTRIB"]


def test_close_write_becomes_an_upload_with_the_files_attributes(src):
    src.tree["/data/run1"]["DIR"].append("b.h5")
    src.tree["/data/run1/b.h5"] = {"pnfsId": "P2", "size": 9, "mtime": 3_000}

    async def go():
        await src.inotify("/data/run1", {"name": "b.h5", "mask": ["IN_CREATE"]}, "4")
        await src.inotify("/data/run1", {"name": "b.h5", "mask": ["IN_CLOSE_WRITE"]}, "7")
    asyncio.run(go())
    created, closed = drain(src)
    assert not created.event.is_upload()
    assert closed.event.is_upload() and closed.event.path == "/data/run1/b.h5"
    assert (closed.event.size, closed.event.pnfsid) == (9, "P2")
    assert src.received_id == "7"


def test_new_directory_gets_a_watch_and_so_do_its_subdirectories(src):
    src.tree["/data"]["DIR"].append("run2")
    src.tree["/data/run2"] = {"DIR": ["sub"]}
    src.tree["/data/run2/sub"] = {"DIR": []}
    asyncio.run(src.inotify("/data", {"name": "run2", "mask": ["IN_CREATE", "IN_ISDIR"]}, "5"))
    assert sorted(src.watches.values()) == ["/data", "/data/run1", "/data/run2", "/data/run2/sub"]
    assert src.state_path.exists() and "/data/run2/sub" in src.state_path.read_text()


def test_moved_away_directory_loses_its_watches(src):
    asyncio.run(src.inotify("/data", {"name": "run1", "cookie": "c", "mask": ["IN_MOVED_FROM", "IN_ISDIR"]}, "6"))
    assert sorted(src.watches.values()) == ["/data"]
    assert any(m == "DELETE" for m, _, _ in src.calls)


def test_event_loss_resyncs_and_reports_files_changed_since_the_last_commit(src):
    src.synced_at = 1.5 + sse.RESYNC_MARGIN   # committed up to t=1.5 s (mtimes are in ms)
    src.tree["/data"]["DIR"].append("run3")
    src.tree["/data/run3"] = {"DIR": ["c.h5"]}
    src.tree["/data/run3/c.h5"] = {"pnfsId": "P3", "size": 1, "mtime": 4_000}
    asyncio.run(src.dispatch(sse.SseMessage("SYSTEM", '{"type":"EVENT_LOSS"}', None)))
    assert "/data/run3" in src.watches.values()
    reported = {r.event.path: r for r in drain(src)}
    assert sorted(reported) == ["/data/run1/a.h5", "/data/run3/c.h5"]   # top.h5 (t=1 s) was before
    rec = reported["/data/run3/c.h5"]
    assert rec.resync == "EVENT_LOSS" and rec.event.is_upload() and rec.event.pnfsid == "P3"


def test_resynced_event_has_the_task_id_of_the_original(src):
    src.synced_at = sse.RESYNC_MARGIN
    asyncio.run(src.inotify("/data/run1", {"name": "a.h5", "mask": ["IN_CLOSE_WRITE"]}, "8"))
    original = drain(src)[0].event
    asyncio.run(src.resync("EVENT_LOSS"))
    again = next(r.event for r in drain(src) if r.event.path == "/data/run1/a.h5")
    rule = src.conf.rules[0]
    assert router.task_id(rule, original) == router.task_id(rule, again)


def test_bad_events_become_records_with_the_reason(src):
    async def go():
        await src.dispatch(sse.SseMessage("inotify", "not json", "10"))
        await src.dispatch(sse.SseMessage("inotify", json.dumps({"event": {"name": "x", "mask": ["IN_CREATE"]},
                                                                 "subscription": "https://elsewhere/s"}), "11"))
        await src.inotify("/data", {"name": "x"}, "12")
    asyncio.run(go())
    reasons = [r.error for r in drain(src)]
    assert reasons[0].startswith("not JSON")
    assert "subscription this router does not know" in reasons[1]
    assert "needs 'mask'" in reasons[2]
    with pytest.raises(router.rules.events.EventError):
        sse.SseSource.parse(sse.SseRecord("x", error="why"))


def test_management_and_system_events(src):
    sub = src.sub_for("/data/run1")
    asyncio.run(src.dispatch(sse.SseMessage(
        "inotify", json.dumps({"event": {"mask": ["IN_IGNORED"]}, "subscription": sub}), "13")))
    assert "/data/run1" not in src.watches.values() and src.queue.empty()
    assert asyncio.run(src.dispatch(sse.SseMessage("SYSTEM", '{"type":"COMPETING_CLIENT"}', None))) > 0
    sub = src.sub_for("/data")
    asyncio.run(src.dispatch(sse.SseMessage(
        "SYSTEM", json.dumps({"type": "SUBSCRIPTION_CLOSED", "subscription": sub}), None)))
    assert not src.watches


def test_commit_keeps_the_last_acknowledged_id_on_disk(src, tmp_path):
    asyncio.run(src.commit((src.channel, "42", 1234.5)))
    asyncio.run(src.commit((src.channel, None, 1300.0)))      # resync records carry no id
    asyncio.run(src.commit(("https://old/channel", "7", 1200.0)))   # a replaced channel's id means nothing
    state = json.loads(src.state_path.read_text())
    assert (state["channel"], state["last_id"], state["synced_at"]) == (src.channel, "42", 1300.0)
    again = Namespace(tmp_path, TREE)
    again.channel = None
    again.load_state()
    assert (again.channel, again.received_id, sorted(again.watches.values())) == \
        (src.channel, "42", ["/data", "/data/run1"])
