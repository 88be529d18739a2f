"""The router between the real broker and the real storage element."""

import json

import requests

from services import consume, produce, router_config, start_router

RULE = {"target": None, "path-predicate": {"matching": r"/data/.*\.(cxi|h5)"},
        "urls": {"read": {"with-macaroon": {"activity": "DOWNLOAD"}},
                 "write": {"with-macaroon": {"activity": "UPLOAD"},
                           "derived-path": {"replacing": "([^/]*)$", "with": r"\1.png"}}}}


def test_upload_becomes_one_task_with_working_urls(storage, broker, topics, tmp_path):
    tasks, dead = topics("tasks", "dead")
    rule = dict(RULE, target=tasks)
    conf = router_config(broker.bootstrap, storage, [rule], source_topic=storage.billing_topic, dead_letter=dead)
    r = start_router(tmp_path, conf)
    try:
        requests.request("MKCOL", storage.url + "/data", auth=storage.auth())
        requests.put(storage.url + "/data/run7.cxi", data=b"detector bytes", auth=storage.auth())
        requests.put(storage.url + "/data/notes.txt", data=b"ignored", auth=storage.auth())
        got = consume(broker.bootstrap, tasks, 2, timeout=4)
        assert len(got) == 1, got          # the door's request message must not make a second task
        task = got[0]["value"]
        assert set(task) == {"read", "write", "event", "task_id"}
        assert task["event"]["path"] == "/data/run7.cxi" and task["event"]["size"] == 14
        assert requests.get(task["read"]).content == b"detector bytes"
        assert requests.put(task["write"], data=b"png").status_code in (201, 204)
        assert (storage.data_dir / "data" / "run7.cxi.png").read_bytes() == b"png"
    finally:
        r.proc.stop()


def test_malformed_events_are_dead_lettered_and_the_router_goes_on(broker, storage, topics, tmp_path):
    source, tasks, dead = topics("billing", "tasks", "dead")
    rule = dict(RULE, target=tasks)
    conf = router_config(broker.bootstrap, storage, [rule], source_topic=source, dead_letter=dead)
    r = start_router(tmp_path, conf)
    try:
        good = json.loads(json.dumps({
            "version": "1.0", "msgType": "transfer", "cellType": "pool", "status": {"code": 0, "msg": ""},
            "transferPath": "/data/good.h5", "isWrite": "write", "isP2p": False, "fileSize": 1,
            "pnfsid": "0001", "subject": ["UserNamePrincipal[admin]"], "protocolInfo": {"host": "127.0.0.1"}}))
        produce(broker.bootstrap, source, [b"not json", {"msgType": 5}, good])
        dead_msgs = consume(broker.bootstrap, dead, 2, timeout=10)
        reasons = [m["value"]["reason"] for m in dead_msgs]
        assert any("not JSON" in x for x in reasons) and any("msgType" in x for x in reasons)
        assert consume(broker.bootstrap, tasks, 1, timeout=10)[0]["value"]["event"]["path"] == "/data/good.h5"
        assert r.proc.alive()
    finally:
        r.proc.stop()
