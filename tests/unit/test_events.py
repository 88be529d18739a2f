import json

import pytest

from panfaas import events


def transfer(**kw):
    base = dict(path="/data/run1/f.cxi", pnfsid="0000ABC", size=42, is_write=True, client="127.0.0.1",
                client_port=5000, user="alice", uid=1000, gid=1000, session="door:WebDAV-aio@aioDomain:x1",
                transfer_ms=12)
    base.update(kw)
    return events.billing_transfer(**base)


def test_transfer_has_dcache_quirks():
    msg = transfer()
    assert msg["isWrite"] == "write"          # a string, not a boolean
    assert msg["isP2p"] is False
    assert msg["msgType"] == "transfer" and msg["cellType"] == "pool"
    assert msg["version"] == "1.0" and "VERSION" not in msg
    assert msg["protocolInfo"]["host"] == "127.0.0.1"
    assert "UserNamePrincipal[alice]" in msg["subject"]
    # ISO_OFFSET_DATE_TIME with a numeric offset (or Z), milliseconds
    assert msg["date"][23] in "+-Z" and msg["date"][19] == "."


def test_request_nests_mover_info_and_spells_version_upper_case():
    t = transfer()
    r = events.billing_request(t, user="alice", uid=1000, gid=1000, client="127.0.0.1")
    assert r["VERSION"] == "1.0" and "version" not in r
    assert r["cellType"] == "door" and r["msgType"] == "request"
    mover = r["moverInfo"]
    for dropped in ("subject", "pnfsid", "fileSize", "initiator", "billingPath", "storageInfo"):
        assert dropped not in mover
    assert mover["transferSize"] == 42 and mover["isWrite"] == "write"


def test_parse_transfer_is_upload():
    ev = events.parse_billing(json.dumps(transfer()).encode())
    assert ev.is_upload()
    assert (ev.path, ev.size, ev.user) == ("/data/run1/f.cxi", 42, "alice")
    assert (ev.client, ev.pnfsid) == ("127.0.0.1", "0000ABC")
    assert ev.storage_class == "aio:disk"


@pytest.mark.parametrize("change", [
    {"isWrite": "read"}, {"isP2p": True}, {"status": {"code": 666, "msg": "failed"}}, {"cellType": "door"},
])
def test_only_successful_non_p2p_pool_writes_are_uploads(change):
    msg = {**transfer(), **change}
    assert not events.parse_billing(msg).is_upload()


def test_door_request_is_not_an_upload():
    t = transfer()
    r = events.billing_request(t, user="alice", uid=1000, gid=1000, client="127.0.0.1")
    ev = events.parse_billing(r)
    assert ev.kind == "request" and not ev.is_upload()


def test_hit_message_spells_filesize_lower_case():
    ev = events.parse_billing({"version": "1.0", "msgType": "hit", "cellType": "pool", "status": {"code": 0, "msg": ""},
                               "billingPath": "/data/x", "filesize": 7, "pnfsid": "00"})
    assert ev.size == 7


@pytest.mark.parametrize("raw, reason", [
    (b"not json", "not JSON"),
    (b"[1, 2]", "expected a JSON object"),
    (b"\xff\xfe", "not UTF-8"),
    (json.dumps({"cellType": "pool", "status": {"code": 0}}).encode(), "missing field 'msgType'"),
    (json.dumps({"msgType": "transfer", "cellType": "pool", "status": {"code": "0"},
                 "transferPath": "/a"}).encode(), "status.code"),
    (json.dumps({"msgType": "transfer", "cellType": "pool", "status": {"code": 0}, "transferPath": "/a",
                 "isWrite": True}).encode(), "isWrite"),
    (json.dumps({"msgType": "transfer", "cellType": "pool", "status": {"code": 0}}).encode(), "transferPath"),
    (b"{" + b" " * (events.MAX_MESSAGE_BYTES + 1) + b"}", "too large"),
])
def test_malformed_messages_say_why(raw, reason):
    with pytest.raises(events.EventError, match=reason):
        events.parse_billing(raw)


def test_remove_from_door_and_pool():
    door = events.billing_remove(path="/data/x", pnfsid="00", size=1, user="a", uid=1, gid=1, client="::1",
                                 session="s", cell_type="door", cell="WebDAV-aio")
    pool = events.billing_remove(path="/data/x", pnfsid="00", size=1, user="a", uid=1, gid=1, client="::1",
                                 session="s", cell_type="pool", cell="pool1")
    assert door["VERSION"] == "1.0" and "moverInfo" not in door
    assert pool["version"] == "1.0" and pool["transaction"] == "s"
    assert events.parse_billing(door).kind == events.parse_billing(pool).kind == "remove"


def hsm(msg_type):
    """A store/restore message (StorageInfoMessage), the field list of reference §1.3."""
    return {"version": "1.0", "msgType": msg_type, "date": "2019-03-04T11:45:32.123+01:00", "queuingTime": 3,
            "transaction": "pool:pool1@d:1", "cellName": "pool1", "cellType": "pool", "cellDomain": "d",
            "status": {"code": 0, "msg": ""}, "session": "pool:pool1@d:1",
            "hsm": {"type": "osm", "instance": "osm", "provider": "script"}, "locations": ["osm://osm/?store=x"],
            "pnfsid": "0000FEED", "billingPath": "/data/raw/run1.h5", "fileSize": 99,
            "storageInfo": "raw:tape@osm", "transferTime": 1200}


@pytest.mark.parametrize("kind", ["store", "restore"])
def test_hsm_messages_use_billing_path(kind):
    ev = events.parse_billing(hsm(kind))
    assert (ev.kind, ev.cell_type, ev.path, ev.size, ev.storage_class) == (kind, "pool", "/data/raw/run1.h5", 99,
                                                                           "raw:tape")
    assert ev.user is None and not ev.is_upload()


def test_request_takes_is_write_and_client_from_the_door_and_its_mover():
    t = transfer()
    r = events.parse_billing(events.billing_request(t, user="alice", uid=1000, gid=1000, client="127.0.0.1"))
    assert r.is_write and r.client == "127.0.0.1" and r.user == "alice" and r.size == 42
    failed = events.billing_request(t, user="alice", uid=1000, gid=1000, client="127.0.0.1")
    failed["moverInfo"] = None                   # failed requests have no (or a null) moverInfo
    assert not events.parse_billing(failed).is_write


def test_warning_message_has_no_path():
    ev = events.parse_billing({"version": "1.0", "msgType": "warning", "date": "x", "cellName": "pool1",
                               "cellType": "pool", "cellDomain": "d", "status": {"code": 1, "msg": "low space"}})
    assert ev.kind == "warning" and ev.path == ""


def test_billing_path_unknown_is_not_a_path():
    msg = {**events.billing_remove(path="/x", pnfsid="0", size=0, user="a", uid=1, gid=1, client="::1",
                                   session="s", cell_type="pool", cell="pool1"), "billingPath": "Unknown"}
    with pytest.raises(events.EventError, match="Unknown"):
        events.parse_billing(msg)


@pytest.mark.parametrize("change, reason", [
    ({"fileSize": "42"}, "'fileSize' must be an integer"),
    ({"fileSize": True}, "'fileSize' must be an integer"),
    ({"pnfsid": 7}, "'pnfsid' must be a string"),
    ({"subject": "alice"}, "'subject' must be an array"),
    ({"protocolInfo": {"host": 127}}, "'protocolInfo.host' must be a string"),
    ({"storageInfo": ["x"]}, "'storageInfo' must be a string"),
    ({"date": 1551696332}, "'date' must be a string"),
    ({"isP2p": "false"}, "'isP2p' must be a boolean"),
    ({"status": [0]}, "'status' must be an object"),
    ({"status": {}}, "missing field 'status.code'"),
    ({"msgType": None}, "missing field 'msgType'"),
    ({"transferPath": 5, "billingPath": None}, "'transferPath' must be a string"),
])
def test_wrong_types_are_malformed(change, reason):
    with pytest.raises(events.EventError, match=reason):
        events.parse_billing({**transfer(), **change})


def test_transfer_without_is_write_is_malformed():
    msg = transfer()
    del msg["isWrite"]
    with pytest.raises(events.EventError, match="missing field 'isWrite'"):
        events.parse_billing(msg)


@pytest.mark.parametrize("value, reason", [
    (None, "null value"), (b"", "not JSON"), ("[" * 100_000 + "]" * 100_000, "nested too deeply|not JSON"),
    ("x" * (events.MAX_MESSAGE_BYTES + 1), "too large"), (b"null", "expected a JSON object, got NoneType"),
])
def test_more_malformed_values(value, reason):
    with pytest.raises(events.EventError, match=reason):
        events.parse_billing(value)


def test_inotify_child_event():
    ev = events.parse_inotify({"name": "f.cxi", "mask": ["IN_CLOSE_WRITE"]}, directory="/data/run1",
                              attributes={"pnfsId": "0000AA", "size": 12, "mtime": 1_551_696_332_123})
    assert (ev.kind, ev.cell_type, ev.source, ev.path, ev.size, ev.pnfsid) == \
        ("inotify", "frontend", "sse", "/data/run1/f.cxi", 12, "0000AA")
    assert ev.is_upload() and ev.time.startswith("2019-03-0")
    assert ev.summary()["mask"] == ["IN_CLOSE_WRITE"]


def test_inotify_identity_ignores_the_sse_id_but_not_the_file_version():
    a = events.parse_inotify({"name": "f", "mask": ["IN_CLOSE_WRITE"]}, directory="/d",
                             attributes={"pnfsId": "1", "size": 1, "mtime": 5})
    b = events.parse_inotify({"name": "f", "mask": ["IN_CLOSE_WRITE"]}, directory="/d/",
                             attributes={"pnfsId": "1", "size": 1, "mtime": 5})
    c = events.parse_inotify({"name": "f", "mask": ["IN_CLOSE_WRITE"]}, directory="/d",
                             attributes={"pnfsId": "1", "size": 2, "mtime": 6})
    assert a.raw == b.raw and a.raw != c.raw


def test_inotify_self_and_move_events():
    gone = events.parse_inotify({"mask": ["IN_DELETE_SELF"]}, directory="/data/run1")
    assert gone.path == "/data/run1" and not gone.is_upload()
    moved = events.parse_inotify({"name": "new-directory", "cookie": "0r6/JbKH+oZ0D2ETnzGMQA",
                                  "mask": ["IN_MOVED_FROM", "IN_ISDIR"]}, directory="/data")
    assert moved.is_dir and moved.raw["cookie"] == "0r6/JbKH+oZ0D2ETnzGMQA"


@pytest.mark.parametrize("event, reason", [
    ("x", "must be an object"), ({"name": "f"}, "needs 'mask'"), ({"name": "f", "mask": []}, "needs 'mask'"),
    ({"name": "f", "mask": ["IN_BOGUS"]}, "unknown inotify flag"), ({"name": "a/b", "mask": ["IN_CREATE"]}, "name"),
])
def test_malformed_inotify_events(event, reason):
    with pytest.raises(events.EventError, match=reason):
        events.parse_inotify(event, directory="/data")
