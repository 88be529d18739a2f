import base64
import hashlib
import zlib

import pytest

from panfaas.storage import checksums as c


def test_streaming_values_match_zlib_and_hashlib():
    s = c.Checksummer(("adler32", "md5"))
    for part in (b"hello ", b"", b"world" * 1000):
        s.update(part)
    data = b"hello " + b"world" * 1000
    assert s.values() == {"adler32": f"{zlib.adler32(data):08x}",
                          "md5": base64.b64encode(hashlib.md5(data).digest()).decode()}
    assert s.size == len(data)
    assert c.Checksummer().values() == {"adler32": "00000001"}   # the empty file, zero-padded


@pytest.mark.parametrize("header, wanted", [
    (None, []), ("", []), ("adler32", ["adler32"]), ("ADLER32", ["adler32"]),
    ("md5;q=0.3, adler32;q=1", ["adler32", "md5"]), ("sha-256, md5", ["md5"]),
    ("adler32;q=0, md5", ["md5"]), ("UNIXsum;q=1.0,adler32;q=bad", []),
])
def test_want_digest_ranking(header, wanted):
    assert c.parse_want_digest(header) == wanted


def test_digest_header_picks_the_best_known():
    values = {"adler32": "0000abcd"}
    assert c.digest_header(values, ["md5", "adler32"]) == "adler32=0000abcd"
    assert c.digest_header(values, ["md5"]) is None


def test_expected_from_request_and_mismatches():
    exp = c.expected_from_request("ADLER32=ABCD, sha=xyz", "bWQ1")
    assert exp == {"adler32": "0000abcd", "md5": "bWQ1"}
    assert c.mismatches(exp, {"adler32": "0000abcd", "md5": "bWQ1"}) == []
    assert c.mismatches(exp, {"adler32": "0000abce", "md5": "bWQ1"}) == ["adler32"]


def test_property_format_round_trips():
    v = {"adler32": "03e2008c", "md5": "rFb0uPrFc5zNtFd30xO+zw=="}
    assert c.format_values(v) == "md5=rFb0uPrFc5zNtFd30xO+zw==,adler32=03e2008c"
    assert c.parse_values(c.format_values(v)) == v


def test_store_and_load_follow_the_file(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"abc")
    assert c.load(str(f)) == {"adler32": "024d0127"}     # nothing stored yet: computed
    assert c.store(str(f), {"adler32": "deadbeef"})
    g = tmp_path / "g"
    f.rename(g)
    assert c.load(str(g)) == {"adler32": "deadbeef"}
