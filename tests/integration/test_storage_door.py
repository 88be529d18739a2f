"""The storage element over real HTTP, publishing to the real broker."""

import json
import subprocess

import requests

from services import consume


def test_upload_publishes_pool_transfer_and_door_request(storage, broker):
    requests.request("MKCOL", storage.url + "/data", auth=storage.auth())
    body = b"x" * 1234
    r = requests.put(storage.url + "/data/billing-check.cxi", data=body, auth=storage.auth())
    assert r.status_code in (201, 204)
    msgs = [m for m in consume(broker.bootstrap, storage.billing_topic, 200, timeout=3)
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


def test_macaroon_request_and_use(storage):
    requests.request("MKCOL", storage.url + "/data", auth=storage.auth())
    requests.put(storage.url + "/data/m.txt", data=b"hello", auth=storage.auth())
    r = requests.post(storage.url + "/data/m.txt", auth=storage.auth(),
                      headers={"Content-Type": "application/macaroon-request"},
                      data=json.dumps({"caveats": ["activity:DOWNLOAD"], "validity": "PT5M"}))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert set(doc["uri"]) == {"targetWithMacaroon", "baseWithMacaroon", "target", "base"}
    url = doc["uri"]["targetWithMacaroon"]
    assert requests.get(url).content == b"hello"
    assert requests.get(storage.url + "/data/m.txt",
                        headers={"Authorization": f"Bearer {doc['macaroon']}"}).content == b"hello"
    # DOWNLOAD does not allow UPLOAD, and the path caveat confines it to this file.
    assert requests.put(url, data=b"overwrite").status_code == 403
    other = storage.url + "/data/other.txt?authz=" + doc["macaroon"]
    assert requests.get(other).status_code == 403


def test_curl_upload_with_basic_auth(storage, tmp_path):
    f = tmp_path / "c.bin"
    f.write_bytes(b"\0" * 4096)
    user, password = storage.auth()
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-u", f"{user}:{password}",
                          "-T", str(f), storage.url + "/data/curl.bin"], capture_output=True, text=True)
    assert out.stdout in ("201", "204")
    assert (storage.data_dir / "data" / "curl.bin").stat().st_size == 4096
