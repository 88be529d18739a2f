"""The router's SSE source against the storage element's dCache frontend (/api/v1/events):
recursive watches, uploads as tasks, resume with Last-Event-ID after a restart, a channel that is
gone (404), and EVENT_LOSS. Real uploads over WebDAV, the real broker, the real macaroons."""

import json
import time

import pytest
import requests

from services import consume, router_config, start_router, start_storage, unique_topic, wait_until

pytestmark = pytest.mark.slow

BACKLOG = 8


@pytest.fixture(scope="module")
def st(session_dir, broker):
    s = start_storage(session_dir / f"router-sse-{unique_topic('s')}", broker.bootstrap,
                      billing_topic=unique_topic("billing"), frontend={"keepalive": 0.5, "backlog": BACKLOG})
    yield s
    s.proc.stop()


def sse_router(st, broker, topics, tmp_path, root):
    tasks, dead = topics("tasks", "dead")
    rule = {"target": tasks, "path-predicate": {"matching": rf"{root}/.*\.h5"},
            "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD"}},
                     "write": {"with-macaroon": {"activity": "UPLOAD"},
                               "derived-path": {"replacing": r"([^/]*)\.h5$", "with": r"\1.png"}}}}
    conf = router_config(broker.bootstrap, st, [rule], source_topic="unused", dead_letter=dead)
    state = tmp_path / "sse-state.json"
    conf["source"] = {"type": "sse", "url": st.url + "/api/v1", "paths": [root], "state-file": str(state),
                      "channel-timeout": 600}
    return start_router(tmp_path, conf), tasks, dead, state


def mkcol(st, path):
    assert requests.request("MKCOL", st.url + path, auth=st.auth()).status_code in (201, 405)


def upload(st, path, data=b"frame"):
    assert requests.put(st.url + path, data=data, auth=st.auth()).status_code in (201, 204)


def tasks_for(broker, topic, paths, timeout=30):
    """path -> [tasks] once every path has a task."""
    def got():
        by = {}
        for m in consume(broker.bootstrap, topic, 10 ** 6, timeout=0.7):
            by.setdefault(m["value"]["event"]["path"], []).append(m["value"])
        return by if set(paths) <= set(by) else None
    return wait_until(got, timeout, interval=0.2, what=f"tasks for {sorted(paths)}")


def watched(state, path):
    try:
        return path in json.loads(state.read_text())["watches"].values()
    except (FileNotFoundError, ValueError):
        return False


def test_uploads_anywhere_under_the_watched_tree_become_tasks(st, broker, topics, tmp_path):
    root = f"/{unique_topic('sse')}"
    mkcol(st, root)
    mkcol(st, f"{root}/run1")
    router, tasks, dead, state = sse_router(st, broker, topics, tmp_path, root)
    try:
        assert watched(state, f"{root}/run1")                   # listed and watched at start
        upload(st, f"{root}/run1/a.h5", b"aaaa")
        mkcol(st, f"{root}/run2")                                # a new directory: watched on IN_CREATE
        wait_until(lambda: watched(state, f"{root}/run2"), 10, what="watch on run2")
        upload(st, f"{root}/run2/b.h5", b"bb")
        upload(st, f"{root}/run2/notes.txt", b"no rule")
        by = tasks_for(broker, tasks, [f"{root}/run1/a.h5", f"{root}/run2/b.h5"])
        assert set(by) == {f"{root}/run1/a.h5", f"{root}/run2/b.h5"}
        task = by[f"{root}/run1/a.h5"][0]
        assert task["event"]["source"] == "sse" and task["event"]["mask"] == ["IN_CLOSE_WRITE"]
        assert task["event"]["size"] == 4 and task["event"]["pnfsid"]
        assert requests.get(task["read"]).content == b"aaaa"
        assert requests.put(task["write"], data=b"png").status_code in (201, 204)
        assert consume(broker.bootstrap, dead, 1, timeout=0.5) == []
    finally:
        router.proc.stop()


def test_restart_resumes_from_the_last_event_id(st, broker, topics, tmp_path):
    root = f"/{unique_topic('sse')}"
    mkcol(st, root)
    router, tasks, dead, state = sse_router(st, broker, topics, tmp_path, root)
    try:
        upload(st, f"{root}/before.h5")
        tasks_for(broker, tasks, [f"{root}/before.h5"])
        wait_until(lambda: json.loads(state.read_text())["last_id"] is not None, 10, what="a committed id")
        router.proc.stop()                                       # the channel keeps the events meanwhile
        channel = json.loads(state.read_text())["channel"]
        upload(st, f"{root}/while-down-1.h5")
        upload(st, f"{root}/while-down-2.h5")
        router.proc.start()
        by = tasks_for(broker, tasks, [f"{root}/before.h5", f"{root}/while-down-1.h5", f"{root}/while-down-2.h5"])
        assert json.loads(state.read_text())["channel"] == channel    # the same channel, resumed
        assert len(by[f"{root}/before.h5"]) == 1                      # not replayed: it was acknowledged
    finally:
        router.proc.stop()


def test_a_channel_that_is_gone_is_recreated_and_the_tree_resynchronised(st, broker, topics, tmp_path):
    root = f"/{unique_topic('sse')}"
    mkcol(st, root)
    mkcol(st, f"{root}/deep")
    router, tasks, dead, state = sse_router(st, broker, topics, tmp_path, root)
    try:
        upload(st, f"{root}/first.h5")
        tasks_for(broker, tasks, [f"{root}/first.h5"])
        wait_until(lambda: json.loads(state.read_text())["synced_at"], 10, what="a commit")
        router.proc.stop()
        old = json.loads(state.read_text())["channel"]
        assert requests.delete(old, auth=st.auth("router")).status_code == 204   # as dCache's timeout would
        upload(st, f"{root}/deep/lost.h5")                        # no channel: only a resync finds it
        router.proc.start()
        by = tasks_for(broker, tasks, [f"{root}/first.h5", f"{root}/deep/lost.h5"])
        assert json.loads(state.read_text())["channel"] != old
        # first.h5 may be reported again by the resync (it is recent): then with the same task_id
        assert len({t["task_id"] for t in by[f"{root}/first.h5"]}) == 1
        upload(st, f"{root}/deep/after.h5")                       # and the new channel's watches work
        tasks_for(broker, tasks, [f"{root}/deep/after.h5"])
    finally:
        router.proc.stop()


def test_event_loss_resynchronises(st, broker, topics, tmp_path):
    root = f"/{unique_topic('sse')}"
    mkcol(st, root)
    router, tasks, dead, state = sse_router(st, broker, topics, tmp_path, root)
    try:
        upload(st, f"{root}/seed.h5")
        tasks_for(broker, tasks, [f"{root}/seed.h5"])
        wait_until(lambda: json.loads(state.read_text())["last_id"] is not None, 10, what="a committed id")
        router.proc.stop()
        names = [f"{root}/burst-{i:02d}.h5" for i in range(3 * BACKLOG)]   # each upload is ~4 events
        for name in names:
            upload(st, name)
        time.sleep(0.2)
        router.proc.start()                                      # its Last-Event-ID left the ring buffer
        by = tasks_for(broker, tasks, names, timeout=45)
        assert set(names) <= set(by)
        assert "SSE resync" in router.proc.output() and "EVENT_LOSS" in router.proc.output()
    finally:
        router.proc.stop()
