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
