"""The WebDAV door over real HTTP (requests and curl), publishing to the real broker."""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import subprocess
import time
import uuid
import zlib

import pytest
import requests

from services import consume

CHECKSUMS_PROP = ('<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop>'
                  '<R:Checksums xmlns:R="http://www.dcache.org/2013/webdav"/></D:prop></D:propfind>')


@pytest.fixture
def d(storage):
    base = f"/data/door-{uuid.uuid4().hex[:8]}"
    for p in ("/data", base):
        requests.request("MKCOL", storage.url + p, auth=storage.auth())
    return base


def put(storage, path, data=b"data", **kw):
    r = requests.put(storage.url + path, data=data, auth=storage.auth(), **kw)
    assert r.status_code in (201, 204), r.text
    return r


def adler(data: bytes) -> str:
    return f"{zlib.adler32(data):08x}"


def pnfsid(storage, path):
    return requests.get(storage.url + "/api/v1/namespace" + path, auth=storage.auth()).json()["pnfsId"]


def test_upload_publishes_pool_transfer_and_door_request(storage, broker):
    requests.request("MKCOL", storage.url + "/data", auth=storage.auth())
    body = b"x" * 1234
    r = requests.put(storage.url + "/data/billing-check.cxi", data=body, auth=storage.auth())
    assert r.status_code in (201, 204)
    msgs = [m for m in consume(broker.bootstrap, storage.billing_topic, 100000, timeout=3)
            if m["value"].get("transferPath", m["value"].get("billingPath")) == "/data/billing-check.cxi"]
    kinds = sorted((m["value"]["msgType"], m["value"]["cellType"]) for m in msgs)
    assert kinds == [("request", "door"), ("transfer", "pool")]
    transfer = next(m for m in msgs if m["value"]["msgType"] == "transfer")
    assert transfer["key"] is None                      # dCache sends a null key
    assert transfer["value"]["fileSize"] == 1234
    assert transfer["value"]["isWrite"] == "write"
    assert transfer["value"]["protocolInfo"]["host"] == "127.0.0.1"
    assert "UserNamePrincipal[admin]" in transfer["value"]["subject"]


def test_anonymous_and_wrong_password_get_401(storage):
    assert requests.get(storage.url + "/data").status_code == 401
    r = requests.get(storage.url + "/data", auth=("admin", "wrong"))
    assert r.status_code == 401 and "error" in r.json()
    assert requests.get(storage.url + "/data", auth=("nobody", "x")).status_code == 401


def test_curl_upload_with_basic_auth(storage, tmp_path):
    f = tmp_path / "c.bin"
    f.write_bytes(b"\0" * 4096)
    user, password = storage.auth()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", f"{user}:{password}",
                          "-T", str(f), storage.url + "/data/curl.bin"], capture_output=True, text=True)
    assert out.stdout in ("201", "204")
    assert (storage.data_dir / "data" / "curl.bin").stat().st_size == 4096


# -- methods -----------------------------------------------------------------------

def test_get_range_and_head(storage, d):
    data = bytes(range(256)) * 4
    put(storage, d + "/r.bin", data)
    r = requests.get(storage.url + d + "/r.bin", headers={"Range": "bytes=10-19"}, auth=storage.auth())
    assert r.status_code == 206 and r.content == data[10:20]
    assert r.headers["Content-Range"] == f"bytes 10-19/{len(data)}"
    r = requests.get(storage.url + d + "/r.bin", headers={"Range": "bytes=-5"}, auth=storage.auth())
    assert r.status_code == 206 and r.content == data[-5:]
    assert requests.get(storage.url + d + "/r.bin", headers={"Range": "bytes=5000-6000"},
                        auth=storage.auth()).status_code == 416
    h = requests.head(storage.url + d + "/r.bin", auth=storage.auth())
    assert h.status_code == 200 and h.headers["Content-Length"] == str(len(data)) and h.content == b""
    assert h.headers["Accept-Ranges"] == "bytes"
    assert requests.head(storage.url + d + "/nope", auth=storage.auth()).status_code == 404
    miss = requests.get(storage.url + d + "/nope", auth=storage.auth())
    assert miss.status_code == 404 and "not found" in miss.json()["error"]


def test_head_answers_carry_no_body_on_a_kept_alive_connection(storage, d):
    """A HEAD answer (found, missing or refused) sends headers only: any body bytes would be
    read as the start of the next response on the same connection."""
    put(storage, d + "/h.bin", b"0123456789")
    conn = http.client.HTTPConnection("127.0.0.1", storage.port, timeout=10)
    auth = {"Authorization": "Basic " + base64.b64encode(":".join(storage.auth()).encode()).decode()}
    for method, path, headers, status in [("HEAD", d + "/h.bin", auth, 200), ("HEAD", d + "/nope", auth, 404),
                                          ("HEAD", d + "/h.bin", {}, 401), ("HEAD", d, auth, 200),
                                          ("GET", d + "/h.bin", auth, 200)]:
        conn.request(method, path, headers=headers)
        r = conn.getresponse()
        body = r.read()
        assert r.status == status, (method, path, r.status, body)
    assert body == b"0123456789"
    conn.close()


def test_put_new_overwrite_and_errors(storage, d):
    assert put(storage, d + "/o.txt", b"one").status_code == 201
    first = pnfsid(storage, d + "/o.txt")
    assert put(storage, d + "/o.txt", b"two").status_code == 204
    assert requests.get(storage.url + d + "/o.txt", auth=storage.auth()).content == b"two"
    assert pnfsid(storage, d + "/o.txt") != first            # an overwrite is a new file, as in dCache
    r = requests.put(storage.url + d, data=b"x", auth=storage.auth())
    assert r.status_code == 405
    r = requests.put(storage.url + d + "/missing/x.txt", data=b"x", auth=storage.auth())
    assert r.status_code == 409 and "does not exist" in r.json()["error"]
    r = requests.put(storage.url + d + "/cr.txt", data=b"x", headers={"Content-Range": "bytes 0-0/1"},
                     auth=storage.auth())
    assert r.status_code == 400


def test_mkcol(storage, d):
    assert requests.request("MKCOL", storage.url + d + "/new", auth=storage.auth()).status_code == 201
    assert requests.request("MKCOL", storage.url + d + "/new", auth=storage.auth()).status_code == 405
    assert requests.request("MKCOL", storage.url + d + "/no/such", auth=storage.auth()).status_code == 409
    assert (storage.data_dir / d.lstrip("/") / "new").is_dir()


def test_move_keeps_the_pnfsid_and_honours_overwrite(storage, d):
    put(storage, d + "/a.txt", b"A")
    put(storage, d + "/b.txt", b"B")
    before = pnfsid(storage, d + "/a.txt")
    r = requests.request("MOVE", storage.url + d + "/a.txt", auth=storage.auth(),
                         headers={"Destination": storage.url + d + "/moved.txt"})
    assert r.status_code == 201
    assert pnfsid(storage, d + "/moved.txt") == before
    assert requests.get(storage.url + d + "/a.txt", auth=storage.auth()).status_code == 404
    r = requests.request("MOVE", storage.url + d + "/moved.txt", auth=storage.auth(),
                         headers={"Destination": storage.url + d + "/b.txt", "Overwrite": "F"})
    assert r.status_code == 412
    r = requests.request("MOVE", storage.url + d + "/moved.txt", auth=storage.auth(),
                         headers={"Destination": storage.url + d + "/b.txt"})
    assert r.status_code == 204
    assert requests.get(storage.url + d + "/b.txt", auth=storage.auth()).content == b"A"
    assert pnfsid(storage, d + "/b.txt") == before
    # Directories move with everything inside them.
    requests.request("MKCOL", storage.url + d + "/dir", auth=storage.auth())
    put(storage, d + "/dir/in.txt", b"in")
    inner = pnfsid(storage, d + "/dir/in.txt")
    r = requests.request("MOVE", storage.url + d + "/dir", auth=storage.auth(), headers={"Destination": d + "/dir2"})
    assert r.status_code == 201
    assert pnfsid(storage, d + "/dir2/in.txt") == inner
    r = requests.request("MOVE", storage.url + d + "/dir2", auth=storage.auth(), headers={"Destination": d + "/dir2/x"})
    assert r.status_code == 403                              # not below itself


def test_propfind_depth_0_and_1(storage, d):
    put(storage, d + "/p.txt")
    requests.request("MKCOL", storage.url + d + "/sub", auth=storage.auth())
    zero = requests.request("PROPFIND", storage.url + d, headers={"Depth": "0"}, auth=storage.auth())
    assert zero.status_code == 207 and zero.text.count("<ns0:response>") + zero.text.count("<d:response>") <= 1 \
        and "p.txt" not in zero.text
    one = requests.request("PROPFIND", storage.url + d, headers={"Depth": "1"}, auth=storage.auth())
    assert one.status_code == 207 and "p.txt" in one.text and f"{d}/sub" in one.text
    nodepth = requests.request("PROPFIND", storage.url + d, auth=storage.auth())
    assert nodepth.status_code == 207 and "p.txt" in nodepth.text
    inf = requests.request("PROPFIND", storage.url + d, headers={"Depth": "infinity"}, auth=storage.auth())
    assert inf.status_code == 403


def test_delete_file_and_directory_tree(storage, d, broker):
    requests.request("MKCOL", storage.url + d + "/tree", auth=storage.auth())
    requests.request("MKCOL", storage.url + d + "/tree/inner", auth=storage.auth())
    put(storage, d + "/tree/one.txt", b"1")
    put(storage, d + "/tree/inner/two.txt", b"22")
    ids = {p: pnfsid(storage, p) for p in (d + "/tree/one.txt", d + "/tree/inner/two.txt")}
    assert requests.delete(storage.url + d + "/tree/one.txt", auth=storage.auth()).status_code == 204
    assert requests.delete(storage.url + d + "/tree/one.txt", auth=storage.auth()).status_code == 404
    assert requests.delete(storage.url + d + "/tree", auth=storage.auth()).status_code == 204
    assert not (storage.data_dir / d.lstrip("/") / "tree").exists()
    removes = [m["value"] for m in consume(broker.bootstrap, storage.billing_topic, 100000, timeout=2)
               if m["value"]["msgType"] == "remove" and m["value"].get("billingPath") in ids]
    got = sorted((r["billingPath"], r["cellType"], r["pnfsid"], r["fileSize"]) for r in removes)
    assert got == sorted([(p, cell, ids[p], size) for p, size in ((d + "/tree/one.txt", 1),
                                                                  (d + "/tree/inner/two.txt", 2))
                          for cell in ("door", "pool")])


# -- checksums ---------------------------------------------------------------------

def test_adler32_on_upload_want_digest_and_digest(storage, d):
    data = os.urandom(100_000)
    r = put(storage, d + "/c.bin", data, headers={"Want-Digest": "adler32"})
    assert r.headers["Digest"] == f"adler32={adler(data)}"
    for method in ("GET", "HEAD"):
        r = requests.request(method, storage.url + d + "/c.bin", headers={"Want-Digest": "ADLER32"},
                             auth=storage.auth())
        assert r.headers["Digest"] == f"adler32={adler(data)}"
    # MD5 only when asked for at upload time, as dCache computes only its configured ADLER32.
    assert "Digest" not in requests.head(storage.url + d + "/c.bin", headers={"Want-Digest": "md5"},
                                         auth=storage.auth()).headers
    md5 = base64.b64encode(hashlib.md5(data).digest()).decode()
    r = put(storage, d + "/m.bin", data, headers={"Want-Digest": "md5"})
    assert r.headers["Digest"] == f"md5={md5}"
    r = requests.head(storage.url + d + "/m.bin", headers={"Want-Digest": "md5;q=1, adler32;q=0.5"},
                      auth=storage.auth())
    assert r.headers["Digest"] == f"md5={md5}"
    r = requests.head(storage.url + d + "/m.bin", headers={"Want-Digest": "sha-256"}, auth=storage.auth())
    assert "Digest" not in r.headers
    prop = requests.request("PROPFIND", storage.url + d + "/m.bin", data=CHECKSUMS_PROP, headers={"Depth": "0"},
                            auth=storage.auth())
    assert f"md5={md5},adler32={adler(data)}" in prop.text
    allprop = requests.request("PROPFIND", storage.url + d + "/m.bin", headers={"Depth": "0"}, auth=storage.auth())
    assert "Checksums" not in allprop.text              # not returned unless asked for, as in dCache


def test_supplied_checksum_is_verified_and_a_mismatch_writes_nothing(storage, d, broker):
    data = b"verified payload"
    assert put(storage, d + "/ok.bin", data, headers={"Digest": f"adler32={adler(data)}"}).status_code == 201
    r = requests.put(storage.url + d + "/bad.bin", data=data, headers={"Digest": "adler32=00000001"},
                     auth=storage.auth())
    assert r.status_code == 400 and "Checksum mismatch" in r.json()["error"]
    assert not (storage.data_dir / d.lstrip("/") / "bad.bin").exists()
    wrong_md5 = base64.b64encode(hashlib.md5(b"other").digest()).decode()
    r = requests.put(storage.url + d + "/bad2.bin", data=data, headers={"Content-MD5": wrong_md5}, auth=storage.auth())
    assert r.status_code == 400
    assert not (storage.data_dir / d.lstrip("/") / "bad2.bin").exists()
    # An overwrite that fails keeps the old content.
    r = requests.put(storage.url + d + "/ok.bin", data=b"new", headers={"Digest": "adler32=00000001"},
                     auth=storage.auth())
    assert r.status_code == 400
    assert requests.get(storage.url + d + "/ok.bin", auth=storage.auth()).content == data
    billed = [m["value"] for m in consume(broker.bootstrap, storage.billing_topic, 100000, timeout=1.5)
              if m["value"].get("billingPath") == d + "/bad.bin"]
    assert billed and all(b["status"]["code"] != 0 for b in billed)   # billed as failed, never as stored


# -- traversal and symlinks ----------------------------------------------------------

@pytest.mark.parametrize("raw", [
    "/data/../etc/passwd", "/data/%2e%2e/etc/passwd", "/data/%2E%2E/x", "/data/..%2fx", "/data/%2e%2e%2fx",
    "/data/%252e%252e/x", "/data/.%2e/x", "/data/%c0%ae%c0%ae/x", "/data/..%5cx", "/data/%00x",
    "/%2e%2e/%2e%2e/etc/passwd", "/data/%25252e%25252e/x", "/data/./x",
])
def test_path_traversal_is_refused(storage, raw, tmp_path):
    user, password = storage.auth()
    for args in ([], ["-T", "/etc/hostname"]):
        out = subprocess.run(["curl", "-s", "--path-as-is", "-u", f"{user}:{password}", "-o", str(tmp_path / "body"),
                              "-w", "%{http_code}", *args, storage.url + raw], capture_output=True, text=True)
        assert out.stdout == "400", (raw, args, out.stdout)
        assert "traversal" in (tmp_path / "body").read_text() or "UTF-8" in (tmp_path / "body").read_text()
    assert not (storage.data_dir.parent / "x").exists()


def test_symlinks_out_of_the_root_are_refused(storage, d, tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("TOP-SECRET-CONTENT")
    base = storage.data_dir / d.lstrip("/")
    os.symlink(outside, base / "escape")
    os.symlink(outside / "secret.txt", base / "secret-link")
    for path in ("/escape/secret.txt", "/secret-link", "/escape"):
        r = requests.get(storage.url + d + path, auth=storage.auth())
        assert r.status_code == 403 and "TOP-SECRET" not in r.text, path
    r = requests.put(storage.url + d + "/escape/planted.txt", data=b"x", auth=storage.auth())
    assert r.status_code == 403
    assert not (outside / "planted.txt").exists()
    r = requests.request("MOVE", storage.url + d + "/secret-link", auth=storage.auth(),
                         headers={"Destination": d + "/taken"})
    assert r.status_code == 403
    put(storage, d + "/mine.txt")
    r = requests.request("MOVE", storage.url + d + "/mine.txt", auth=storage.auth(),
                         headers={"Destination": d + "/escape/mine.txt"})
    assert r.status_code == 403 and not (outside / "mine.txt").exists()
    assert requests.delete(storage.url + d + "/escape", auth=storage.auth()).status_code == 403
    assert (outside / "secret.txt").exists()
    listing = requests.request("PROPFIND", storage.url + d, headers={"Depth": "1"}, auth=storage.auth())
    assert "escape" not in listing.text and "secret-link" not in listing.text


def test_healthz_metrics_and_unsupported_methods(storage, d):
    assert requests.get(storage.url + "/healthz").json() == {"status": "ok"}
    metrics = requests.get(storage.url + "/metrics").text
    assert "panfaas_storage_requests_total" in metrics and "panfaas_storage_billing_messages_total" in metrics
    for method in ("COPY", "LOCK"):
        r = requests.request(method, storage.url + d, auth=storage.auth())
        assert r.status_code == 501 and "not supported" in r.json()["error"]
    r = requests.post(storage.url + d, data=b"{}", auth=storage.auth(), headers={"Content-Type": "application/json"})
    assert r.status_code == 405
    assert json.loads(requests.request("PATCH", storage.url + d, auth=storage.auth()).text)["error"]


def test_conditional_get_and_if_range(storage, d):
    put(storage, d + "/cond.txt", b"0123456789")
    h = requests.head(storage.url + d + "/cond.txt", auth=storage.auth())
    etag, modified = h.headers["ETag"], h.headers["Last-Modified"]
    assert requests.get(storage.url + d + "/cond.txt", headers={"If-None-Match": etag},
                        auth=storage.auth()).status_code == 304
    assert requests.get(storage.url + d + "/cond.txt", headers={"If-Modified-Since": modified},
                        auth=storage.auth()).status_code == 304
    assert requests.get(storage.url + d + "/cond.txt", headers={"If-Match": '"other"'},
                        auth=storage.auth()).status_code == 412
    r = requests.get(storage.url + d + "/cond.txt", headers={"Range": "bytes=2-3", "If-Range": etag},
                     auth=storage.auth())
    assert r.status_code == 206 and r.content == b"23"
    r = requests.get(storage.url + d + "/cond.txt", headers={"Range": "bytes=2-3", "If-Range": '"stale"'},
                     auth=storage.auth())
    assert r.status_code == 200 and r.content == b"0123456789"
    etag_in_propfind = requests.request("PROPFIND", storage.url + d + "/cond.txt", headers={"Depth": "0"},
                                        auth=storage.auth()).text
    assert etag.strip('"') in etag_in_propfind


def test_large_uploads_are_checksummed_whichever_way_they_arrive(storage, d):
    data = os.urandom(5 << 20)                 # large enough for the splice(2) path
    r = put(storage, d + "/big.bin", data, headers={"Want-Digest": "adler32,md5"})
    assert r.headers["Digest"] == f"adler32={adler(data)}"
    assert requests.get(storage.url + d + "/big.bin", auth=storage.auth()).content == data
    r = requests.put(storage.url + d + "/big-bad.bin", data=data, headers={"Digest": "adler32=00000001"},
                     auth=storage.auth())
    assert r.status_code == 400 and not (storage.data_dir / d.lstrip("/") / "big-bad.bin").exists()

    def chunks():                                # chunked: no Content-Length
        for i in range(0, len(data), 300_000):
            yield data[i:i + 300_000]
    r = put(storage, d + "/chunked.bin", chunks(), headers={"Want-Digest": "adler32"})
    assert r.headers["Digest"] == f"adler32={adler(data)}"


def test_a_client_that_stops_sending_leaves_nothing(storage, d):
    import socket as s
    user, password = storage.auth()
    auth = base64.b64encode(f"{user}:{password}".encode()).decode()
    conn = s.create_connection(("127.0.0.1", storage.port))
    conn.sendall(f"PUT {d}/partial.bin HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\n"
                 f"Content-Length: {10 << 20}\r\n\r\n".encode() + os.urandom(3 << 20))
    conn.close()                                 # 3 of 10 MiB, then gone
    staging = storage.data_dir.parent / (storage.data_dir.name + ".staging")
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and (list(staging.glob(".upload-*"))
                                           or (storage.data_dir / d.lstrip("/") / "partial.bin").exists()):
        time.sleep(0.1)
    assert not (storage.data_dir / d.lstrip("/") / "partial.bin").exists()
    assert not list(staging.glob(".upload-*"))
