"""Checksums as dCache keeps them: ADLER32 always, MD5 on request, RFC 3230 headers.

dCache computes ADLER32 for every new file (its default); a client that sends
`Want-Digest: md5` with the upload gets MD5 computed too. Values are served as
`Digest: adler32=03e2008c` (lower-case hex, 8 digits) or `md5=<base64>` on GET,
HEAD and the PUT response, and as the `Checksums` WebDAV property
(`{http://www.dcache.org/2013/webdav}Checksums`, comma-separated, only when a
PROPFIND asks for it by name). An upload that carries `Digest:` or `Content-MD5`
is verified and refused with 400 on a mismatch.
"""

from __future__ import annotations

import base64
import hashlib
import os
import zlib

SUPPORTED = ("adler32", "md5")
XATTR = "user.panfaas.checksums"
PROPERTY = "{http://www.dcache.org/2013/webdav}Checksums"


class Checksummer:
    """Streaming ADLER32 (and MD5 when asked for) over the bytes of an upload."""

    def __init__(self, algorithms: tuple[str, ...] | list[str] = ("adler32",)):
        self._adler = 1
        self._md5 = hashlib.md5(usedforsecurity=False) if "md5" in algorithms else None
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._adler = zlib.adler32(data, self._adler)
        if self._md5 is not None:
            self._md5.update(data)
        self.size += len(data)

    def values(self) -> dict[str, str]:
        out = {"adler32": f"{self._adler:08x}"}
        if self._md5 is not None:
            out["md5"] = base64.b64encode(self._md5.digest()).decode()
        return out


def compute(path: str, algorithms=("adler32",), block: int = 1 << 20) -> dict[str, str]:
    c = Checksummer(algorithms)
    with open(path, "rb") as f:
        while chunk := f.read(block):
            c.update(chunk)
    return c.values()


def format_values(values: dict[str, str]) -> str:
    """`md5=...,adler32=...`: the Checksums property / Digest list format."""
    return ",".join(f"{k}={v}" for k, v in sorted(values.items(), reverse=True))


def parse_values(text: str) -> dict[str, str]:
    out = {}
    for part in text.split(","):
        alg, sep, value = part.strip().partition("=")
        if sep and alg:
            out[alg.strip().lower()] = value.strip()
    return out


def parse_want_digest(header: str | None) -> list[str]:
    """Supported algorithms a `Want-Digest` asks for, best first (q-values honoured)."""
    if not header:
        return []
    ranked = []
    for i, item in enumerate(header.split(",")):
        name, *params = (p.strip() for p in item.split(";"))
        q = 1.0
        for p in params:
            k, _, v = p.partition("=")
            if k.strip().lower() == "q":
                try:
                    q = float(v)
                except ValueError:
                    q = 0.0
        name = name.lower()
        if name in SUPPORTED and q > 0:
            ranked.append((-q, i, name))
    return [name for _, _, name in sorted(ranked)]


def digest_header(values: dict[str, str], wanted: list[str]) -> str | None:
    """The `Digest` value for the best wanted algorithm that is known, or None."""
    for alg in wanted:
        if alg in values:
            return f"{alg}={values[alg]}"
    return None


def expected_from_request(digest: str | None, content_md5: str | None) -> dict[str, str]:
    """What the client says the upload's checksums are (`Digest:`, `Content-MD5:`)."""
    expected = {k: v for k, v in parse_values(digest or "").items() if k in SUPPORTED}
    if "adler32" in expected:
        expected["adler32"] = expected["adler32"].lower().rjust(8, "0")
    if content_md5:
        expected["md5"] = content_md5.strip()
    return expected


def mismatches(expected: dict[str, str], actual: dict[str, str]) -> list[str]:
    return [alg for alg, value in expected.items() if actual.get(alg) != value]


def store(path: str, values: dict[str, str]) -> bool:
    """Keep the checksums with the file (an extended attribute follows renames)."""
    try:
        os.setxattr(path, XATTR, format_values(values).encode())
        return True
    except OSError:
        return False


def load(path: str) -> dict[str, str]:
    """The stored checksums; ADLER32 is recomputed where the filesystem keeps no xattrs."""
    try:
        return parse_values(os.getxattr(path, XATTR).decode())
    except OSError:
        return compute(path)
