"""inotify routing and SSE channel semantics, without HTTP (the integration tests do HTTP)."""

import pytest

from panfaas.storage import notify, sse


def watch(pnfsid, events=notify.EVENTS, oneshot=False, visible=lambda p: True, got=None):
    got = [] if got is None else got
    return notify.Watch(sub_id=f"s-{pnfsid}", pnfsid=pnfsid, ns_path=f"/{pnfsid}", is_dir=True, selector={},
                        events=frozenset(events), oneshot=oneshot, deliver=lambda w, b: got.append((w.sub_id, b)),
                        visible=visible), got


def test_flag_macros_and_refusals():
    assert notify.expand_flags(None) == frozenset(notify.EVENTS)
    assert notify.expand_flags(["IN_CLOSE", "IN_MOVE", "IN_ONESHOT"]) == {
        "IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE", "IN_MOVED_FROM", "IN_MOVED_TO"}
    with pytest.raises(notify.SelectorError, match="Unsupported flags"):
        notify.expand_flags(["IN_EXCL_UNLINK"])
    with pytest.raises(notify.SelectorError, match="unknown flag"):
        notify.expand_flags(["IN_EVERYTHING"])


def test_payload_shapes_in_dcache_field_order():
    assert notify.payload("IN_CREATE", name="f") == {"name": "f", "mask": ["IN_CREATE"]}
    moved = notify.payload("IN_MOVED_FROM", name="d", cookie="c", is_dir=True)
    assert list(moved) == ["name", "cookie", "mask"] and moved["mask"] == ["IN_MOVED_FROM", "IN_ISDIR"]
    assert notify.payload("IN_DELETE_SELF") == {"mask": ["IN_DELETE_SELF"]}


def test_events_reach_only_watches_on_that_object_and_selected_types():
    hub = notify.Hub()
    parent, got = watch("P", events=["IN_CLOSE_WRITE"])
    other, got_other = watch("Q")
    hub.add(parent)
    hub.add(other)
    hub.file_event("P", "F", "f.h5", "IN_OPEN", path="/P/f.h5")
    hub.file_event("P", "F", "f.h5", "IN_CLOSE_WRITE", path="/P/f.h5")
    assert got == [("s-P", {"name": "f.h5", "mask": ["IN_CLOSE_WRITE"]})]
    assert got_other == []


def test_restricted_watches_do_not_see_hidden_children():
    hub = notify.Hub()
    w, got = watch("P", visible=lambda p: p.startswith("/P/mine"))
    hub.add(w)
    hub.child("P", "theirs", "IN_CREATE", path="/P/theirs")
    hub.child("P", "mine", "IN_CREATE", path="/P/mine")
    assert [b["name"] for _, b in got] == ["mine"]


def test_delete_self_and_oneshot_close_the_watch_with_in_ignored():
    hub = notify.Hub()
    closed = []
    hub.on_close = closed.append
    w, got = watch("P")
    one, got_one = watch("Q", oneshot=True)
    hub.add(w)
    hub.add(one)
    hub.self_event("P", "IN_DELETE_SELF", path="/P", is_dir=True)
    assert [b for _, b in got] == [{"mask": ["IN_DELETE_SELF", "IN_ISDIR"]}, {"mask": ["IN_IGNORED"]}]
    hub.child("Q", "a", "IN_CREATE", path="/Q/a")
    hub.child("Q", "b", "IN_CREATE", path="/Q/b")
    assert [b for _, b in got_one] == [{"name": "a", "mask": ["IN_CREATE"]}, {"mask": ["IN_IGNORED"]}]
    assert closed == [w, one] and len(hub) == 0 and not hub.active


def test_watch_paths_follow_renames():
    hub = notify.Hub()
    a, _ = watch("A")
    a.ns_path = "/data/run/a"
    hub.add(a)
    hub.moved("/data/run", "/data/run-renamed")
    assert a.ns_path == "/data/run-renamed/a"


def collect(stream, n):
    out = []
    for chunk in stream:
        out += [part for part in chunk.decode().split("\n\n") if part and part != ":"]
        if len(out) >= n:
            return out
    return out


def test_channel_ring_buffer_resume_and_event_loss():
    ch = sse.Channel("c", 1, "u", None, timeout=60, backlog=4, url="http://x/api/v1/events/channels/c")
    w, _ = watch("P")
    for i in range(3):
        ch.deliver(w, {"name": f"f{i}", "mask": ["IN_CREATE"]})
    resumed = ch.stream("0", keepalive=0.05)
    frames = collect(resumed, 2)
    assert [f.split("\n")[1] for f in frames] == ["id: 1", "id: 2"]
    resumed.close()
    for i in range(3, 9):                    # the ring keeps 4: ids 5..8
        ch.deliver(w, {"name": f"f{i}", "mask": ["IN_CREATE"]})
    lost = ch.stream("2", keepalive=0.05)
    assert collect(lost, 1)[0] == 'event: SYSTEM\ndata: {"type":"EVENT_LOSS"}'
    lost.close()
    kept = ch.stream("5", keepalive=0.05)
    assert [f.split("\n")[1] for f in collect(kept, 3)] == ["id: 6", "id: 7", "id: 8"]
    kept.close()


def test_channel_expiry_counts_only_disconnected_time():
    ch = sse.Channel("c", 1, "u", None, timeout=0, backlog=4, url="u")
    assert ch.expired(ch.idle_since + 1)
    stream = ch.stream(None, keepalive=0.01)
    next(stream)
    assert not ch.expired(10**12)
    stream.close()
    assert ch.expired(ch.idle_since)
