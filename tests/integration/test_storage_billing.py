"""Billing records on the real broker, in dCache's format with its quirks (reference §1)."""

from __future__ import annotations

import base64
import datetime as dt
import os
import random
import re
import socket
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from panfaas import events
from services import consume

DATE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}([+-]\d\d:\d\d|Z)$")


@pytest.fixture
def d(storage):
    base = f"/data/bill-{uuid.uuid4().hex[:8]}"
    for p in ("/data", base):
        requests.request("MKCOL", storage.url + p, auth=storage.auth())
    return base


def records(storage, broker, prefix: str, timeout: float = 2.0) -> list[dict]:
    out = []
    for m in consume(broker.bootstrap, storage.billing_topic, 1_000_000, timeout=timeout):
        v = m["value"]
        if str(v.get("billingPath", "")).startswith(prefix):
            out.append({**v, "_key": m["key"]})
    return out


def test_upload_download_delete_give_dcache_records(storage, broker, d):
    data = os.urandom(5000)
    r = requests.put(storage.url + d + "/f.h5", data=data, auth=storage.auth())
    assert r.status_code == 201
    got = requests.get(storage.url + d + "/f.h5", auth=storage.auth())
    assert got.content == data
    part = requests.get(storage.url + d + "/f.h5", headers={"Range": "bytes=0-99"}, auth=storage.auth())
    assert part.status_code == 206
    assert requests.delete(storage.url + d + "/f.h5", auth=storage.auth()).status_code == 204
    recs = records(storage, broker, d + "/f.h5")
    kinds = [(r["msgType"], r["cellType"], r.get("isWrite")) for r in recs]
    assert kinds == [("transfer", "pool", "write"), ("request", "door", None),
                     ("transfer", "pool", "read"), ("request", "door", None),
                     ("transfer", "pool", "read"), ("request", "door", None),
                     ("remove", "door", None), ("remove", "pool", None)]
    assert all(r["_key"] is None for r in recs)
    assert len({r["pnfsid"] for r in recs}) == 1 and len(recs[0]["pnfsid"]) == 36
    w, wreq, rd, rreq, partial, _, door_rm, pool_rm = recs
    # The pool's transfer, field by field.
    assert w["version"] == "1.0" and "VERSION" not in w
    assert DATE.match(w["date"]) and dt.datetime.fromisoformat(w["date"]).utcoffset() is not None
    assert (w["fileSize"], w["transferSize"], w["status"]) == (5000, 5000, {"code": 0, "msg": ""})
    assert w["isP2p"] is False and w["storageInfo"] == "aio:disk@osm"
    assert w["protocolInfo"] == {"protocol": "Http", "versionMajor": 1, "versionMinor": 1,
                                 "port": w["protocolInfo"]["port"], "host": "127.0.0.1"}
    assert w["protocolInfo"]["port"] > 0
    assert w["subject"] == ["UidPrincipal[1000]", "GidPrincipal[1000,primary]", "UserNamePrincipal[admin]",
                            "Origin[127.0.0.1]", "LoginNamePrincipal[admin]"]
    assert w["transferPath"] == w["billingPath"] == d + "/f.h5"
    assert "meanWriteBandwidth" in w and "meanReadBandwidth" in rd
    assert w["session"].startswith("door:WebDAV-aio@aioDomain:")
    # The door's request: VERSION upper case, moverInfo nested without the file's fields.
    assert wreq["VERSION"] == "1.0" and "version" not in wreq
    assert wreq["session"] == w["session"] and wreq["client"] == "127.0.0.1" and wreq["owner"] == "admin"
    assert (wreq["mappedUID"], wreq["mappedGID"]) == (1000, 1000)
    mover = wreq["moverInfo"]
    assert mover["isWrite"] == "write" and mover["transferSize"] == 5000
    for dropped in ("subject", "pnfsid", "fileSize", "initiator", "billingPath", "storageInfo"):
        assert dropped not in mover
    assert rreq["moverInfo"]["isWrite"] == "read"
    assert (partial["transferSize"], partial["fileSize"], partial["status"]["code"]) == (100, 5000, 0)
    # DELETE: a door remove in the request layout and a pool remove.
    assert door_rm["VERSION"] == "1.0" and "moverInfo" not in door_rm and door_rm["fileSize"] == 5000
    assert pool_rm["version"] == "1.0" and pool_rm["transaction"] == pool_rm["session"]
    # And the router's parser agrees on what they are.
    assert events.parse_billing(w).is_upload()
    assert not any(events.parse_billing(r).is_upload() for r in recs[1:])


def test_pnfsid_is_kept_across_a_rename(storage, broker, d):
    requests.put(storage.url + d + "/before.h5", data=b"x" * 10, auth=storage.auth())
    requests.request("MOVE", storage.url + d + "/before.h5", headers={"Destination": d + "/after.h5"},
                     auth=storage.auth())
    requests.get(storage.url + d + "/after.h5", auth=storage.auth())
    recs = records(storage, broker, d)
    write = next(r for r in recs if r["msgType"] == "transfer" and r["isWrite"] == "write")
    read = next(r for r in recs if r["msgType"] == "transfer" and r["isWrite"] == "read")
    assert write["billingPath"] == d + "/before.h5" and read["billingPath"] == d + "/after.h5"
    assert write["pnfsid"] == read["pnfsid"]


def test_a_download_cut_short_is_billed_as_failed(storage, broker, d):
    size = 64 << 20                 # more than the kernel's socket buffers can swallow at once
    requests.put(storage.url + d + "/big.bin", data=os.urandom(size), auth=storage.auth())
    auth = base64.b64encode(":".join(storage.auth()).encode()).decode()
    with socket.create_connection(("127.0.0.1", storage.port)) as conn:
        conn.sendall(f"GET {d}/big.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n\r\n".encode())
        conn.recv(65536)            # the client reads a little and goes away
    deadline = time.monotonic() + 15
    reads = []
    while time.monotonic() < deadline and not reads:
        reads = [r for r in records(storage, broker, d + "/big.bin", timeout=1)
                 if r["msgType"] == "transfer" and r["isWrite"] == "read"]
    assert reads, "no billing record for the interrupted download"
    assert reads[0]["status"] == {"code": 10006, "msg": "Client disconnected while proxying a download."}
    assert reads[0]["transferSize"] < size and reads[0]["fileSize"] == size


def test_100_concurrent_uploads_give_one_transfer_each(storage, broker, d):
    rng = random.Random(7)
    files = {f"{d}/u{i:03d}.h5": os.urandom(rng.randint(1, 200_000)) for i in range(100)}
    session = requests.Session()
    session.auth = storage.auth()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=100))

    def upload(item):
        path, data = item
        return session.put(storage.url + path, data=data, headers={"Want-Digest": "adler32"})

    with ThreadPoolExecutor(100) as pool:
        answers = list(pool.map(upload, files.items()))
    assert [a.status_code for a in answers] == [201] * 100
    for answer, path in zip(answers, files, strict=True):
        assert answer.headers["Digest"] == f"adler32={zlib.adler32(files[path]):08x}"
    recs = records(storage, broker, d + "/", timeout=3)
    transfers = [r for r in recs if r["msgType"] == "transfer" and r["cellType"] == "pool"]
    assert sorted(r["billingPath"] for r in transfers) == sorted(files)      # exactly one each
    assert len([r for r in recs if r["msgType"] == "request"]) == 100
    for t in transfers:
        data = files[t["billingPath"]]
        assert t["fileSize"] == t["transferSize"] == len(data) and t["status"]["code"] == 0
        head = session.head(storage.url + t["billingPath"], headers={"Want-Digest": "adler32"})
        assert head.headers["Digest"] == f"adler32={zlib.adler32(data):08x}"
        ns = session.get(storage.url + "/api/v1/namespace" + t["billingPath"]).json()
        assert ns["pnfsId"] == t["pnfsid"]
    assert len({t["pnfsid"] for t in transfers}) == 100
