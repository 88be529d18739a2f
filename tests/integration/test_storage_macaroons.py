"""Every macaroon caveat, allowed and denied, against the running door (requests and curl).

Refused requests must leave nothing behind: no file, no staging leftovers, no
successful billing record.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import uuid
from pathlib import Path

import pymacaroons
import pytest
import requests
import yaml

from panfaas import macaroons
from services import consume, start_storage, unique_topic

MR = {"Content-Type": "application/macaroon-request"}


def ask(storage, path, caveats=(), validity="PT10M", auth=None, macaroon=None):
    """POST a macaroon request; returns the response."""
    headers = dict(MR)
    if macaroon:
        headers["Authorization"] = f"Bearer {macaroon}"
    body = {"caveats": list(caveats)}
    if validity is not None:
        body["validity"] = validity
    return requests.post(storage.url + path, data=json.dumps(body), headers=headers,
                         auth=None if macaroon else (auth or storage.auth()))


def mint(storage, path, *caveats, validity="PT10M") -> str:
    r = ask(storage, path, caveats, validity)
    assert r.status_code == 200, r.text
    return r.json()["macaroon"]


def bearer(mac):
    return {"Authorization": f"Bearer {mac}"}


def mkdirs(storage, *paths):
    for p in paths:
        r = requests.request("MKCOL", storage.url + p, auth=storage.auth())
        assert r.status_code in (201, 405), r.text


def put(storage, path, data=b"data"):
    r = requests.put(storage.url + path, data=data, auth=storage.auth())
    assert r.status_code in (201, 204), r.text


def caveats_of(mac) -> list[str]:
    return [c.caveat_id for c in pymacaroons.Macaroon.deserialize(mac).caveats]


def attenuate(mac, *extra) -> str:
    """Add caveats client-side, as anyone holding a macaroon may (no key needed)."""
    m = pymacaroons.Macaroon.deserialize(mac)
    for c in extra:
        m.add_first_party_caveat(c)
    return m.serialize()


def root_key(storage) -> bytes:
    conf = yaml.safe_load(storage.config_path.read_text())
    return Path(conf["macaroons"]["root-key-file"]).read_bytes().strip()


def nothing_written(storage, path, broker=None):
    assert not (storage.data_dir / path.lstrip("/")).exists(), f"{path} was written"
    staging = Path(str(storage.data_dir) + ".staging")
    assert not list(staging.glob(".upload-*")), "staging leftovers"
    if broker:
        ok = [m for m in consume(broker.bootstrap, storage.billing_topic, 100000, timeout=1.5)
              if m["value"].get("billingPath") == path and m["value"]["status"]["code"] == 0]
        assert ok == [], f"successful billing record for {path}"


@pytest.fixture
def d(storage):
    """A fresh directory per test, with one file in it."""
    base = f"/data/mac-{uuid.uuid4().hex[:8]}"
    mkdirs(storage, "/data", base)
    put(storage, base + "/f.txt", b"hello")
    return base


# -- requesting ------------------------------------------------------------------

def test_answer_has_dcache_shape_and_implicit_path(storage, d):
    r = ask(storage, d + "/f.txt", ["activity:DOWNLOAD"])
    doc = r.json()
    assert r.headers["Content-Type"] == "application/json"
    assert doc["uri"] == {"targetWithMacaroon": f"{storage.url}{d}/f.txt?authz={doc['macaroon']}",
                          "baseWithMacaroon": f"{storage.url}/?authz={doc['macaroon']}",
                          "target": f"{storage.url}{d}/f.txt", "base": f"{storage.url}/"}
    cavs = caveats_of(doc["macaroon"])
    assert cavs[0].startswith("iid:") and cavs[1] == "id:1000;1000;admin"
    assert f"path:{d}/f.txt" in cavs and "activity:DOWNLOAD" in cavs
    assert sum(c.startswith("before:") for c in cavs) == 1


def test_macaroon_works_as_bearer_and_authz_and_with_curl(storage, d):
    mac = mint(storage, d + "/f.txt", "activity:DOWNLOAD")
    assert requests.get(storage.url + d + "/f.txt", headers=bearer(mac)).content == b"hello"
    assert requests.get(storage.url + d + "/f.txt", params={"authz": mac}).content == b"hello"
    out = subprocess.run(["curl", "-sS", f"{storage.url}{d}/f.txt?authz={mac}"], capture_output=True)
    assert out.stdout == b"hello"


@pytest.mark.parametrize("body, reason", [
    ({"caveats": ["colour:blue"]}, "unknown caveat"),
    ({"caveats": ["activity:FLY"]}, "unknown activity"),
    ({"caveats": ["id:0;0;root"]}, "added by the storage"),
    ({"caveats": ["iid:x"]}, "added by the storage"),
    ({"caveats": ["ip:not-an-address"]}, "bad ip"),
    ({"caveats": ["max-upload:lots"]}, "bad max-upload"),
    ({"caveats": ["before:tomorrow"]}, "bad before"),
    ({"caveats": ["home:relative/dir"]}, "bad home"),
    ({"caveats": ["path:/a/../b"]}, "bad path"),
    ({"caveats": "activity:LIST"}, "must be a list"),
    ({"validity": "soon"}, "bad validity"),
    ({"validity": "P8D"}, "beyond maximum allowed"),
    ([1, 2], "JSON object"),
])
def test_bad_requests_are_refused_with_the_reason(storage, d, body, reason):
    r = requests.post(storage.url + d, data=json.dumps(body), headers=MR, auth=storage.auth())
    assert r.status_code == 400
    assert reason in r.json()["error"]


def test_requests_need_authentication(storage, d):
    assert requests.post(storage.url + d, data="{}", headers=MR).status_code == 401
    assert requests.post(storage.url + d, data="{}", headers=MR, auth=("admin", "nope")).status_code == 401


def test_default_lifetime_is_one_day_and_validity_and_before_are_honoured(storage, d):
    now = dt.datetime.now(dt.UTC)
    default = macaroons.check_caveats(caveats_of(mint(storage, d, validity=None))).before
    assert abs((default - now) - dt.timedelta(days=1)) < dt.timedelta(minutes=1)
    short = macaroons.check_caveats(caveats_of(mint(storage, d, validity="PT5M"))).before
    assert abs((short - now) - dt.timedelta(minutes=5)) < dt.timedelta(seconds=30)
    at = (now + dt.timedelta(hours=2)).strftime("%Y-%m-%dT%H:%M:%SZ")
    cavs = caveats_of(mint(storage, d, f"before:{at}", validity=None))
    assert [c for c in cavs if c.startswith("before:")] == [f"before:{at}"]   # no default added
    far = (now + dt.timedelta(days=8)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert ask(storage, d, [f"before:{far}"], validity=None).status_code == 400


def test_lifetimes_are_configurable(tmp_path, broker):
    s = start_storage(tmp_path / "lifetimes", broker.bootstrap, billing_topic=unique_topic("billing"),
                      macaroons={"root-key-file": str(tmp_path / "lifetimes" / "root-key"),
                                 "default-lifetime": "PT1H", "max-lifetime": "PT2H"})
    try:
        now = dt.datetime.now(dt.UTC)
        before = macaroons.check_caveats(caveats_of(mint(s, "/", validity=None))).before
        assert abs((before - now) - dt.timedelta(hours=1)) < dt.timedelta(minutes=1)
        assert mint(s, "/", validity="PT2H")
        r = ask(s, "/", validity="P1D")
        assert r.status_code == 400 and "beyond maximum allowed" in r.json()["error"]
    finally:
        s.proc.stop()


# -- activity ----------------------------------------------------------------------

@pytest.mark.parametrize("activity, allowed, denied", [
    ("DOWNLOAD", ["GET"], ["PUT-new", "DELETE", "MKCOL", "LIST", "PROPPATCH"]),
    ("LIST", ["LIST", "PROPFIND-0", "HEAD"], ["GET", "PUT-new", "DELETE"]),
    ("UPLOAD", ["PUT-new"], ["PUT-over", "GET", "DELETE", "MKCOL"]),
    ("UPLOAD,DELETE", ["PUT-over", "DELETE"], ["GET"]),
    ("DELETE", ["DELETE"], ["PUT-new", "GET"]),
    ("MANAGE", ["MKCOL", "MOVE"], ["GET", "DELETE", "PUT-new"]),
    ("READ_METADATA", ["HEAD", "PROPFIND-0"], ["GET", "LIST", "PUT-new"]),
    ("UPDATE_METADATA", ["PROPPATCH", "HEAD"], ["GET", "PUT-new"]),
])
def test_activity_caveat(storage, d, activity, allowed, denied):
    mac = mint(storage, d, f"activity:{activity}")
    h = bearer(mac)
    u = storage.url + d
    ops = {
        "GET": lambda: requests.get(u + "/f.txt", headers=h),
        "HEAD": lambda: requests.head(u + "/f.txt", headers=h),
        "PUT-new": lambda: requests.put(u + "/new.txt", data=b"n", headers=h),
        "PUT-over": lambda: requests.put(u + "/f.txt", data=b"over", headers=h),
        "DELETE": lambda: requests.delete(u + "/f.txt", headers=h),
        "MKCOL": lambda: requests.request("MKCOL", u + "/sub", headers=h),
        "MOVE": lambda: requests.request("MOVE", u + "/f.txt", headers={**h, "Destination": u + "/g.txt"}),
        "LIST": lambda: requests.request("PROPFIND", u, headers={**h, "Depth": "1"}),
        "PROPFIND-0": lambda: requests.request("PROPFIND", u, headers={**h, "Depth": "0"}),
        "PROPPATCH": lambda: requests.request("PROPPATCH", u + "/f.txt", headers=h, data=(
            '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:x"><D:set><D:prop>'
            '<Z:colour>blue</Z:colour></D:prop></D:set></D:propertyupdate>')),
    }
    for op in denied:
        r = ops[op]()
        assert r.status_code == 403, (activity, op, r.status_code, r.text)
        assert "macaroon does not allow" in r.json()["error"]
    assert (storage.data_dir / d.lstrip("/") / "f.txt").read_bytes() == b"hello"   # denials changed nothing
    assert not (storage.data_dir / d.lstrip("/") / "new.txt").exists()
    for op in allowed:
        r = ops[op]()
        assert r.status_code in (200, 201, 204, 207), (activity, op, r.status_code, r.text)


def test_several_activity_caveats_intersect(storage, d):
    mac = attenuate(mint(storage, d, "activity:DOWNLOAD,UPLOAD"), "activity:UPLOAD,DELETE")
    assert requests.put(storage.url + d + "/x.txt", data=b"x", headers=bearer(mac)).status_code == 201
    assert requests.get(storage.url + d + "/f.txt", headers=bearer(mac)).status_code == 403
    assert requests.delete(storage.url + d + "/f.txt", headers=bearer(mac)).status_code == 403


# -- path, root, home ----------------------------------------------------------------

def test_path_caveat_confines_and_keeps_ancestors_listable(storage, d):
    mkdirs(storage, d + "/a", d + "/b")
    put(storage, d + "/a/in.txt")
    put(storage, d + "/b/out.txt")
    mac = mint(storage, d + "/a", "activity:DOWNLOAD,LIST")
    h = bearer(mac)
    assert requests.get(storage.url + d + "/a/in.txt", headers=h).status_code == 200
    assert requests.get(storage.url + d + "/b/out.txt", headers=h).status_code == 403
    assert requests.get(storage.url + d + "/f.txt", headers=h).status_code == 403
    listing = requests.request("PROPFIND", storage.url + d, headers={**h, "Depth": "1"})
    assert listing.status_code == 207
    assert f"{d}/a" in listing.text and f"{d}/b" not in listing.text and "f.txt" not in listing.text


def test_path_caveats_concatenate(storage, d):
    mkdirs(storage, d + "/a", d + "/a/sub")
    put(storage, d + "/a/sub/deep.txt", b"deep")
    put(storage, d + "/a/top.txt", b"top")
    mac = attenuate(mint(storage, d + "/a", "activity:DOWNLOAD"), "path:/sub")
    assert requests.get(storage.url + d + "/a/sub/deep.txt", headers=bearer(mac)).content == b"deep"
    assert requests.get(storage.url + d + "/a/top.txt", headers=bearer(mac)).status_code == 403
    # A path caveat in the request body concatenates with the URL's (the dynamic-processing pitfall).
    doubled = mint(storage, d + "/a", "activity:DOWNLOAD", f"path:{d}/a")
    assert requests.get(storage.url + d + "/a/top.txt", headers=bearer(doubled)).status_code == 403


def test_attenuation_cannot_widen_with_dot_dot(storage, d):
    mac = attenuate(mint(storage, d, "activity:DOWNLOAD"), "path:/../..")
    r = requests.get(storage.url + d + "/f.txt", headers=bearer(mac))
    assert r.status_code == 401 and "bad path caveat" in r.json()["error"]


def test_root_caveat_is_a_chroot(storage, d, broker):
    mkdirs(storage, d + "/jail")
    put(storage, d + "/jail/inside.txt", b"inside")
    mac = mint(storage, "/", f"root:{d}/jail", "activity:DOWNLOAD,LIST,UPLOAD")
    h = bearer(mac)
    assert requests.get(storage.url + "/inside.txt", headers=h).content == b"inside"
    assert requests.get(storage.url + "/f.txt", headers=h).status_code == 404          # /f.txt below the root
    assert requests.get(storage.url + d + "/f.txt", headers=h).status_code == 404      # the real path is not visible
    listing = requests.request("PROPFIND", storage.url + "/", headers={**h, "Depth": "1"})
    assert "/inside.txt" in listing.text and d not in listing.text                     # hrefs as the client sees them
    assert requests.put(storage.url + "/up.txt", data=b"up", headers=h).status_code == 201
    assert (storage.data_dir / d.lstrip("/") / "jail" / "up.txt").read_bytes() == b"up"
    billed = [m["value"] for m in consume(broker.bootstrap, storage.billing_topic, 100000, timeout=1.5)
              if m["value"].get("billingPath") == f"{d}/jail/up.txt"]
    assert billed and billed[0]["transferPath"] == f"{d}/jail/up.txt"                # namespace paths in billing


def test_home_caveat_is_reported_and_must_be_absolute(storage, d):
    mac = mint(storage, d, f"home:{d}", "activity:LIST")
    me = requests.get(storage.url + "/api/v1/user", headers=bearer(mac)).json()
    assert me["homeDirectory"] == d and me["username"] == "admin"
    bad = attenuate(mac, "home:not/absolute")
    assert requests.get(storage.url + "/api/v1/user", headers=bearer(bad)).status_code == 401


# -- before, ip, max-upload, id, iid, unknown ---------------------------------------

def test_expired_and_future_before(storage, d, broker):
    key = root_key(storage)
    authority = macaroons.MacaroonAuthority(key)
    past = dt.datetime.now(dt.UTC) - dt.timedelta(hours=2)
    expired = authority.mint(uid=1000, gids=[1000], username="admin", path=d, validity="PT1H", now=past)
    valid = authority.mint(uid=1000, gids=[1000], username="admin", path=d, validity="PT1H")
    assert requests.get(storage.url + d + "/f.txt", headers=bearer(valid)).status_code == 200
    r = requests.put(storage.url + d + "/expired.txt", data=b"x", headers=bearer(expired))
    assert r.status_code == 401 and "expired" in r.json()["error"]
    nothing_written(storage, d + "/expired.txt", broker)
    # A client may shorten a macaroon's life, never lengthen it: every before caveat must hold.
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=30)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert requests.get(storage.url + d + "/f.txt", headers=bearer(attenuate(expired, f"before:{later}"))).status_code \
        == 401


def test_tampered_macaroon_is_refused_and_nothing_written(storage, d, broker):
    mac = mint(storage, d, "activity:DOWNLOAD")
    m = pymacaroons.Macaroon.deserialize(mac)
    forged = pymacaroons.Macaroon(location=m.location, identifier=m.identifier, key=b"guessed-key-guessed-key")
    for c in m.caveats:
        forged.add_first_party_caveat(c.caveat_id.replace("activity:DOWNLOAD", "activity:UPLOAD"))
    for token in (forged.serialize(), mac[:-6] + ("AAAAAA" if not mac.endswith("AAAAAA") else "BBBBBB"), "garbage"):
        r = requests.put(storage.url + d + "/tampered.txt", data=b"x", headers=bearer(token))
        assert r.status_code == 401, r.text
    nothing_written(storage, d + "/tampered.txt", broker)


def test_ip_caveat_lists_and_cidrs(storage, d, broker):
    def curl(mac, interface="127.0.0.1", method="GET"):
        args = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--interface", interface,
                "-H", f"Authorization: Bearer {mac}"]
        if method == "PUT":
            args += ["-T", "/etc/hostname"]
            return subprocess.run(args + [storage.url + d + "/ip-upload.txt"], capture_output=True, text=True).stdout
        return subprocess.run(args + [storage.url + d + "/f.txt"], capture_output=True, text=True).stdout

    other = mint(storage, d, "ip:192.0.2.0/24")
    assert curl(other) == "401"
    assert curl(other, method="PUT") == "401"
    nothing_written(storage, d + "/ip-upload.txt", broker)
    listed = mint(storage, d, "ip:192.0.2.7,127.0.0.2,2001:db8::/32")
    assert curl(listed, "127.0.0.2") == "200"          # another loopback address: still this machine
    assert curl(listed, "127.0.0.1") == "401"
    cidr = mint(storage, d, "ip:127.0.0.0/8")
    assert curl(cidr, "127.0.0.1") == curl(cidr, "127.0.0.2") == "200"
    both = attenuate(cidr, "ip:127.0.0.2/32")           # every ip caveat must admit the client
    assert curl(both, "127.0.0.2") == "200" and curl(both, "127.0.0.1") == "401"


def test_max_upload_caveat(storage, d, broker):
    mac = mint(storage, d, "activity:UPLOAD", "max-upload:100")
    h = bearer(mac)
    assert requests.put(storage.url + d + "/small.bin", data=b"s" * 100, headers=h).status_code == 201
    r = requests.put(storage.url + d + "/big.bin", data=b"b" * 101, headers=h)
    assert r.status_code == 403 and "max-upload" in r.json()["error"]
    nothing_written(storage, d + "/big.bin", broker)

    def chunked():           # no Content-Length: the door counts as the bytes come
        for _ in range(10):
            yield b"c" * 20
    r = requests.put(storage.url + d + "/chunked.bin", data=chunked(), headers=h)
    assert r.status_code == 403
    nothing_written(storage, d + "/chunked.bin", broker)
    smaller = attenuate(mac, "max-upload:10")        # the smallest wins
    assert requests.put(storage.url + d + "/eleven.bin", data=b"e" * 11, headers=bearer(smaller)).status_code == 403


@pytest.mark.parametrize("extra, reason", [
    ("id:0;0;root", "exactly one id"),
    ("iid:another", "exactly one id and one iid"),
    ("colour:blue", "unknown caveat"),
    ("activity:TELEPORT", "unknown activity"),
])
def test_added_identity_or_unknown_caveats_invalidate(storage, d, broker, extra, reason):
    mac = attenuate(mint(storage, d, "activity:UPLOAD"), extra)
    r = requests.put(storage.url + d + "/sneaky.txt", data=b"x", headers=bearer(mac))
    assert r.status_code == 401 and reason in r.json()["error"]
    nothing_written(storage, d + "/sneaky.txt")


def test_id_caveat_is_who_acts(storage, d, broker):
    r = ask(storage, d, ["activity:UPLOAD"], auth=storage.auth("bob"))
    mac = r.json()["macaroon"]
    assert "id:1002;1002;bob" in caveats_of(mac)
    assert requests.put(storage.url + d + "/by-bob.txt", data=b"b", headers=bearer(mac)).status_code == 201
    rec = [m["value"] for m in consume(broker.bootstrap, storage.billing_topic, 100000, timeout=1.5)
           if m["value"].get("billingPath") == d + "/by-bob.txt" and m["value"]["msgType"] == "transfer"]
    assert "UidPrincipal[1002]" in rec[0]["subject"] and "UserNamePrincipal[bob]" in rec[0]["subject"]


# -- a macaroon requested with a macaroon ----------------------------------------------

def test_macaroon_from_macaroon_inherits_everything(storage, d):
    mkdirs(storage, d + "/run1")
    put(storage, d + "/run1/frame.h5", b"frame")
    parent = mint(storage, d, "activity:DOWNLOAD,LIST", "ip:127.0.0.0/8", "max-upload:5")
    r = ask(storage, d + "/run1", ["activity:DOWNLOAD,UPLOAD"], validity="PT5M", macaroon=parent)
    assert r.status_code == 200, r.text
    child = r.json()["macaroon"]
    pc, cc = caveats_of(parent), caveats_of(child)
    assert [c for c in pc if not c.startswith("iid:")] == [c for c in cc if not c.startswith("iid:")][:len(pc) - 1]
    assert "path:/run1" in cc                                 # relative to the parent's path: /d/run1
    h = bearer(child)
    assert requests.get(storage.url + d + "/run1/frame.h5", headers=h).content == b"frame"
    assert requests.get(storage.url + d + "/f.txt", headers=h).status_code == 403            # narrowed path
    assert requests.put(storage.url + d + "/run1/new.h5", data=b"x", headers=h).status_code == 403  # no UPLOAD
    # Outside the parent's path there is nothing to ask for.
    outside = ask(storage, "/data", ["activity:DOWNLOAD"], macaroon=parent)
    assert outside.status_code in (200, 403)
    if outside.status_code == 200:       # an ancestor: same reach as the parent, never more
        wider = bearer(outside.json()["macaroon"])
        assert requests.get(storage.url + "/data/other", headers=wider).status_code == 403
    sibling = ask(storage, "/elsewhere", ["activity:DOWNLOAD"], macaroon=parent)
    assert sibling.status_code == 403


def test_unencrypted_channel_can_be_refused(tmp_path, broker):
    s = start_storage(tmp_path / "tls-only", broker.bootstrap, billing_topic=unique_topic("billing"),
                      macaroons={"root-key-file": str(tmp_path / "tls-only" / "root-key"),
                                 "accept-over-unencrypted-channel": False})
    try:
        mac = mint(s, "/")             # issuing works; using it over plain http does not
        r = requests.get(s.url + "/", headers=bearer(mac))
        assert r.status_code == 401 and "unencrypted" in r.json()["error"]
        assert requests.request("PROPFIND", s.url + "/", auth=s.auth(), headers={"Depth": "0"}).status_code == 207
    finally:
        s.proc.stop()
