"""checksum-validate called directly (main(args)): against expected values through the real
storage element, and against a real HTTP server that answers Want-Digest per RFC 3230 (the
storage element's own Want-Digest support is tested when it has it)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import zlib

import pytest
import requests

from services import free_port


def sums(data: bytes) -> dict:
    return {"adler32": f"{zlib.adler32(data):08x}", "md5": hashlib.md5(data).hexdigest(),
            "sha256": hashlib.sha256(data).hexdigest()}


@pytest.fixture(scope="module")
def payload():
    return os.urandom(3 * 1024 * 1024 + 123)  # more than one streaming chunk, not a multiple


@pytest.fixture
def on_door(door, payload):
    d = door.unique_dir("ck")
    return door.put(f"{d}/run.dat", payload)


def test_matches_expected_values_given_every_way(door, fn, on_door, payload):
    main, want = fn("checksum-validate").main, sums(payload)
    md5_b64 = base64.b64encode(bytes.fromhex(want["md5"])).decode()
    for expected in ({"adler32": want["adler32"]}, f"adler32:{want['adler32'].upper()}",
                     f"ADLER32={want['adler32']},md5={md5_b64}", want["md5"], {"sha256": want["sha256"]}):
        res = main({"read": door.signed(on_door), "expected": expected, "storage": False})
        assert "error" not in res, (expected, res)
        assert res["validated"] is True, (expected, res)
        assert res["computed"]["adler32"] == want["adler32"] and res["computed"]["md5"] == want["md5"]
        assert res["size"] == len(payload) and res["storage"] is None
        assert all(c["match"] and c["reference"] == "expected" for c in res["compared"])
    # SHA-256 is computed when asked for (or when a reference needs it), not by default.
    assert "sha256" not in main({"read": door.signed(on_door), "expected": want["adler32"],
                                 "storage": False})["computed"]
    res = main({"read": door.signed(on_door), "expected": want["adler32"], "sha256": True, "storage": False})
    assert res["computed"]["sha256"] == want["sha256"]


def test_mismatch_reports_both_values_and_writes_the_report(door, fn, on_door, payload):
    want = sums(payload)
    res = fn("checksum-validate").main({"read": door.signed(on_door), "expected": {"adler32": "00000001"},
                                        "storage": False, "write": door.signed(on_door + ".checksum.json", "UPLOAD")})
    assert res["validated"] is False and res["mismatches"] == ["adler32 (expected)"]
    assert res["compared"] == [{"algorithm": "adler32", "reference": "expected", "value": "00000001",
                                "computed": want["adler32"], "match": False}]
    report = json.loads(door.read_bytes(on_door + ".checksum.json"))
    assert report["validated"] is False and report["computed"] == res["computed"]
    assert res["report"] == door.bare(on_door + ".checksum.json")


def test_storage_digest_per_rfc3230(served, fn, tmp_path, payload):
    (tmp_path / "f.dat").write_bytes(payload)
    srv = served()
    main = fn("checksum-validate").main
    res = main({"read": srv.url("f.dat")})
    assert res["validated"] is True, res
    assert res["storage"] == {"adler32": sums(payload)["adler32"], "md5": sums(payload)["md5"]}
    assert [c["reference"] for c in res["compared"]] == ["storage", "storage"]
    assert srv.requests[0][0] == "GET" and len(srv.requests) == 1   # the Digest came with the GET
    # A storage whose checksum disagrees (a corrupted replica): validated false, both values.
    srv.digest = "ADLER32=deadbeef, MD5=" + base64.b64encode(hashlib.md5(payload).digest()).decode()
    res = main({"read": srv.url("f.dat")})
    assert res["validated"] is False and res["mismatches"] == ["adler32 (storage)"]
    assert res["storage"]["adler32"] == "deadbeef" and res["computed"]["adler32"] == sums(payload)["adler32"]
    # A storage answering with an algorithm not asked for (SHA-256): that one is computed too.
    srv.digest = "sha-256=" + base64.b64encode(hashlib.sha256(payload).digest()).decode()
    res = main({"read": srv.url("f.dat")})
    assert res["validated"] is True and res["computed"]["sha256"] == sums(payload)["sha256"]
    # Storage and expected both count.
    srv.digest = None
    res = main({"read": srv.url("f.dat"), "expected": {"md5": "0" * 32}})
    assert res["validated"] is False and res["mismatches"] == ["md5 (expected)"]


def test_no_reference_at_all_is_an_error_that_says_so(served, fn, tmp_path):
    (tmp_path / "f.dat").write_bytes(b"abc")
    srv = served()
    srv.digest = False
    res = fn("checksum-validate").main({"read": srv.url("f.dat")})
    assert res == {"error": f"nothing to compare {srv.url('f.dat')} with: the storage sent no Digest for "
                            "Want-Digest and no 'expected' value was given (computed adler32=024d0127, "
                            "md5=900150983cd24fb0d6963f7d28e17f72)"}
    assert [r[0] for r in srv.requests] == ["GET", "HEAD"]  # asked on GET, then on HEAD
    srv.digest = "md5=not-base64!"
    res = fn("checksum-validate").main({"read": srv.url("f.dat")})
    assert "the storage's Digest is unreadable (md5=not-base64!)" in res["error"]


def test_the_storage_door_digest(door, fn, on_door, payload):
    """The storage element answers Want-Digest (RFC 3230), and the function validates against it."""
    r = requests.head(door.signed(on_door), headers={"Want-Digest": "adler32, md5"}, timeout=10)
    assert "adler32=" in r.headers.get("Digest", ""), r.headers
    res = fn("checksum-validate").main({"read": door.signed(on_door)})
    assert res["validated"] is True, res
    assert res["storage"]["adler32"] == sums(payload)["adler32"]


def test_empty_file_has_well_defined_checksums(door, fn):
    d = door.unique_dir("ck")
    path = door.put(f"{d}/empty.dat", b"")
    res = fn("checksum-validate").main({"read": door.signed(path), "storage": False,
                                        "expected": "adler32:00000001,md5:d41d8cd98f00b204e9800998ecf8427e"})
    assert res["validated"] is True and res["size"] == 0, res


def test_transfer_that_breaks_off_is_an_error(served, fn, tmp_path, payload):
    (tmp_path / "f.dat").write_bytes(payload)
    srv = served()
    res = fn("checksum-validate").main({"read": srv.url("short/f.dat"), "expected": "00000001"})
    assert set(res) == {"error"} and res["error"].startswith(f"transfer of {srv.url('short/f.dat')} broke off")


@pytest.mark.parametrize("expected,message", [
    ("crc32:1234", "'expected' must look like adler32:0a1b2c3d"),
    ("adler32:xyz", "'expected': 'xyz' is not a adler32 checksum"),
    ({"md5": "abc"}, "'expected': 'abc' is not a md5 checksum"),
    ({"sha1": "0" * 40}, "'expected': unknown algorithm 'sha1'"),
    ({"md5": 5}, "the md5 value must be a string"),
    ([], "'expected' must be a checksum string or an object"),
])
def test_bad_expected_values(served, fn, expected, message):
    srv = served()
    res = fn("checksum-validate").main({"read": srv.url("x"), "expected": expected})
    assert set(res) == {"error"} and message in res["error"], res
    assert srv.requests == []


def test_unreachable_refused_missing(door, fn, on_door):
    main = fn("checksum-validate").main
    dead = f"http://127.0.0.1:{free_port()}/x"
    assert main({"read": dead, "expected": "00000001"})["error"].startswith(f"cannot reach {dead}:")
    assert "(HTTP 401" in main({"read": door.bare(on_door), "expected": "00000001"})["error"]
    assert "(HTTP 403" in main({"read": door.signed(on_door, "UPLOAD"), "expected": "00000001"})["error"]
    assert main({"read": door.signed(on_door + ".nope"), "expected": "00000001"})["error"].endswith("(HTTP 404)")
    assert main({}) == {"error": "'read' (the URL of the file to check) is required"}
    res = main({"read": door.signed(on_door), "expected": "00000001", "storage": False,
                "write": door.signed(on_door + ".ck.json", "DOWNLOAD")})
    assert "(HTTP 403" in res["error"] and not door.exists(on_door + ".ck.json")


def test_kafka_batch(door, fn, on_door, payload):
    msgs = [{"value": {"read": door.signed(on_door), "task_id": "a"}}, {"value": {"read": door.signed(on_door)}}]
    res = fn("checksum-validate").main({"messages": msgs, "expected": sums(payload)["adler32"], "storage": False})
    assert res["count"] == 2 and res["validated"] == 2 and res["failed"] == 0
    assert res["results"][0]["task_id"] == "a"
