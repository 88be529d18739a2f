"""checksum-validate: the check before data goes to tape.

A standalone OpenWhisk python action (standard library only, and storagehttp.py and taskrun.py
from functions/lib, shipped beside it). It streams the file once and computes ADLER32 and MD5 (and SHA-256 on
request), then compares them with the checksums the storage keeps, asked for with
`Want-Digest` (RFC 3230; dCache answers `Digest: adler32=<8 hex>,md5=<base64>`), and/or with
values given as `expected`. README.md lists the arguments.
"""

import base64
import binascii
import hashlib
import json
import re
import time
import zlib

from storagehttp import FunctionError, Http, check, put, redact
from taskrun import flag_arg, handle, url_arg

ALGORITHMS = ("adler32", "md5", "sha256")
# RFC 3230 digest-algorithm tokens (case-insensitive) -> our names.
TOKENS = {"adler32": "adler32", "md5": "md5", "sha-256": "sha256", "sha256": "sha256"}
DIGEST_BYTES = {"adler32": 4, "md5": 16, "sha256": 32}
WANT = {"adler32": "adler32", "md5": "md5;q=0.8", "sha256": "sha-256;q=0.5"}  # Want-Digest entries


# -- digests -------------------------------------------------------------------------------

def normalise(algorithm, value):
    """A checksum as lowercase hex: ADLER32 as hex (RFC 3230: 8 digits), MD5 and SHA-256 as
    hex or as base64 (the Digest header's encoding, RFC 1864 / RFC 5843)."""
    value = value.strip().strip('"')
    n = DIGEST_BYTES[algorithm]
    if re.fullmatch(r"[0-9a-fA-F]+", value) and (len(value) == 2 * n or algorithm == "adler32" and len(value) <= 8):
        return value.lower().zfill(2 * n)
    if algorithm != "adler32":
        try:
            raw = base64.b64decode(value, validate=True)
        except (binascii.Error, ValueError):
            raw = b""
        if len(raw) == n:
            return raw.hex()
    raise ValueError(f"{value!r} is not a {algorithm} checksum")


def parse_digest(header):
    """{algorithm: hex} from an RFC 3230 Digest header; unknown algorithms are ignored,
    malformed values listed in the second element."""
    found, bad = {}, []
    for item in (header or "").split(","):
        token, sep, value = item.strip().partition("=")
        name = TOKENS.get(token.strip().lower())
        if not sep or name is None:
            continue
        try:
            found[name] = normalise(name, value)
        except ValueError:
            bad.append(item.strip())
    return found, bad


def parse_expected(v):
    """`expected`: {"adler32": "...", "md5": "..."}, or "adler32:...,md5=...", or one bare hex
    value whose length says the algorithm (8 adler32, 32 md5, 64 sha256)."""
    if v is None:
        return {}
    if isinstance(v, str):
        pairs = {}
        for part in v.split(","):
            part = part.strip()
            m = re.fullmatch(r"([A-Za-z0-9-]+)\s*[:=]\s*(.+)", part)
            if m and m.group(1).lower() in TOKENS:
                pairs[m.group(1)] = m.group(2)
            elif re.fullmatch(r"[0-9a-fA-F]{8}|[0-9a-fA-F]{32}|[0-9a-fA-F]{64}", part):
                pairs[{8: "adler32", 32: "md5", 64: "sha256"}[len(part)]] = part
            else:
                raise FunctionError(f"'expected' must look like adler32:0a1b2c3d or md5=<hex or base64>, got {part!r}")
        v = pairs
    if not isinstance(v, dict) or not v:
        raise FunctionError("'expected' must be a checksum string or an object such as {\"adler32\": \"0a1b2c3d\"}")
    out = {}
    for k, value in v.items():
        name = TOKENS.get(str(k).lower())
        if name is None:
            raise FunctionError(f"'expected': unknown algorithm {k!r} (use {', '.join(ALGORITHMS)})")
        if not isinstance(value, str):
            raise FunctionError(f"'expected': the {name} value must be a string, got {value!r}")
        try:
            out[name] = normalise(name, value)
        except ValueError as e:
            raise FunctionError(f"'expected': {e}") from None
    return out


class Checksums:
    def __init__(self, algorithms):
        self.adler = 1 if "adler32" in algorithms else None
        self.hashes = {a: hashlib.new(a) for a in algorithms if a != "adler32"}

    def update(self, data):
        if self.adler is not None:
            self.adler = zlib.adler32(data, self.adler)
        for h in self.hashes.values():
            h.update(data)

    def hex(self):
        out = {a: h.hexdigest() for a, h in self.hashes.items()}
        if self.adler is not None:
            out["adler32"] = f"{self.adler:08x}"
        return {a: out[a] for a in ALGORITHMS if a in out}


# -- the action --------------------------------------------------------------------------


def want_digest(algorithms):
    return ", ".join(WANT[a] for a in ALGORITHMS if a in algorithms)


def stream(http_, url, sums, algorithms):
    """GET the file with Want-Digest; feed every byte to `sums`. (size, storage Digest header)."""
    resp = http_.request("GET", url, {"Want-Digest": want_digest(algorithms)})
    check(http_, resp, url, ok=(200,))
    return http_.stream(resp, url, sums.update), resp.getheader("Digest")


def storage_digest(http_, url, algorithms):
    resp = http_.request("HEAD", url, {"Want-Digest": want_digest(algorithms)})
    check(http_, resp, url, ok=(200, 204))
    http_.read_all(resp, url)
    return resp.getheader("Digest")


def validate(args):
    t0 = time.perf_counter()
    read = url_arg(args, "read", "the URL of the file to check")
    write = url_arg(args, "write", "the URL to PUT the report to", required=False)
    expected = parse_expected(args.get("expected"))
    ask_storage = flag_arg(args, "storage", True)
    algorithms = {"adler32", "md5", *expected}
    if flag_arg(args, "sha256", False):
        algorithms.add("sha256")
    http_ = Http(timeout=120)
    try:
        sums = Checksums(algorithms)
        size, header = stream(http_, read, sums, algorithms)
        if ask_storage and header is None:  # some doors answer Want-Digest on HEAD only
            header = storage_digest(http_, read, algorithms)
        storage, unreadable = parse_digest(header) if ask_storage else ({}, [])
        if set(storage) - algorithms:  # the storage answered with another algorithm: read again for it
            sums_more = Checksums(set(storage) - algorithms)
            stream(http_, read, sums_more, set(storage) - algorithms)
            computed = {**sums.hex(), **sums_more.hex()}
        else:
            computed = sums.hex()
        t_read = time.perf_counter()
        compared = [{"algorithm": a, "reference": ref, "value": refs[a], "computed": computed[a],
                     "match": refs[a] == computed[a]}
                    for ref, refs in (("storage", storage), ("expected", expected)) for a in ALGORITHMS if a in refs]
        if not compared:
            why = ("the storage sent no Digest for Want-Digest" if not unreadable else
                   f"the storage's Digest is unreadable ({'; '.join(unreadable)})") if ask_storage else \
                "the storage was not asked (storage: false)"
            raise FunctionError(f"nothing to compare {redact(read)} with: {why} and no 'expected' value was "
                                "given (computed " + ", ".join(f"{a}={v}" for a, v in computed.items()) + ")")
        report = {"validated": all(c["match"] for c in compared), "file": redact(read), "size": size,
                  "computed": computed, "storage": storage or None, "expected": expected or None,
                  "compared": compared, "mismatches": [c["algorithm"] + " (" + c["reference"] + ")"
                                                       for c in compared if not c["match"]]}
        if unreadable:
            report["storage_unreadable"] = unreadable
        seconds = t_read - t0
        report["seconds"] = round(seconds, 4)
        report["MB_per_s"] = round(size / 1e6 / seconds, 1) if seconds > 0 else None
        if write:
            put(http_, write, json.dumps(report, indent=1).encode(), "application/json")
            report["report"] = redact(write)
    finally:
        http_.close()
    return report


def validated_count(results):
    return {"validated": sum(1 for r in results if r.get("validated") is True)}


def main(args):
    # One task, or a Kafka feed batch (one check per task, and how many validated).
    return handle(args, validate, "checksum-validate", "checks", summary=validated_count)
