"""HTTP to the storage for the reference functions: one kept-alive connection per origin,
redirects followed as dCache's doors send them, clear one-line errors that never show a
macaroon.

Shipped beside each function's code (function.yml `include: [lib/storagehttp.py]`, and the
function's Dockerfile copies it into /action), so the functions stay standalone OpenWhisk
actions. Standard library only: it runs in every function's process.
"""

import http.client
import json
import os
import urllib.parse


class FunctionError(Exception):
    """Bad input, or a URL that is refused or unreachable: the call returns {"error": str(e)}."""


def redact(url):
    """The URL without its query: a macaroon in ?authz= is a credential."""
    p = urllib.parse.urlsplit(str(url))
    return urllib.parse.urlunsplit((p.scheme, p.netloc, p.path, "", ""))


def reason(e):
    """What went wrong, in a few words, for an OSError or an http.client error."""
    return getattr(e, "reason", None) or getattr(e, "strerror", None) or str(e) or type(e).__name__


class Http:
    """HTTP/1.1 with one kept-alive connection per origin, following redirects as dCache's
    doors send them (a GET or PUT redirected to a pool)."""

    REDIRECTS = (301, 302, 303, 307, 308)

    def __init__(self, timeout=60):
        self.timeout = timeout
        self.conns = {}

    def _conn(self, scheme, netloc):
        key = (scheme, netloc)
        if key not in self.conns:
            cls = http.client.HTTPSConnection if scheme == "https" else http.client.HTTPConnection
            self.conns[key] = cls(netloc, timeout=self.timeout)
        return self.conns[key]

    def _drop(self, scheme, netloc):
        conn = self.conns.pop((scheme, netloc), None)
        if conn:
            conn.close()

    def close(self):
        for key in list(self.conns):
            self._drop(*key)

    def request(self, method, url, headers=None, body=None):
        """The response (status, headers, body still to read), redirects followed."""
        for _hop in range(6):
            p = urllib.parse.urlsplit(url)
            if p.scheme not in ("http", "https") or not p.netloc:
                raise FunctionError(f"not an http(s) URL: {redact(url)!r}")
            target = (p.path or "/") + ("?" + p.query if p.query else "")
            for attempt in (0, 1):
                reused = (p.scheme, p.netloc) in self.conns
                conn = self._conn(p.scheme, p.netloc)
                try:
                    if hasattr(body, "seek"):
                        body.seek(0)
                    conn.request(method, target, body=body, headers=dict(headers or {}))
                    resp = conn.getresponse()
                    break
                except (http.client.HTTPException, OSError) as e:
                    self._drop(p.scheme, p.netloc)
                    if attempt == 0 and reused:  # the server closed a kept-alive connection
                        continue
                    raise FunctionError(f"cannot reach {redact(url)}: {reason(e)}") from None
            location = resp.getheader("Location")
            if resp.status in self.REDIRECTS and location:
                resp.read()
                url = urllib.parse.urljoin(url, location)
                if resp.status == 303:
                    method, body = "GET", None
                continue
            return resp
        raise FunctionError(f"too many redirects from {redact(url)}")

    def read_all(self, resp, url):
        try:
            return resp.read()
        except (http.client.HTTPException, OSError) as e:
            self._drop(*urllib.parse.urlsplit(url)[:2])
            raise FunctionError(f"transfer from {redact(url)} broke off: {reason(e)}") from None

    def stream(self, resp, url, sink, chunk=1 << 20):
        """Feed the body to `sink(bytes)` a `chunk` at a time, never holding it whole; its size.
        A transfer that breaks off, or ends short of its Content-Length, is a clear error."""
        size = 0
        try:
            while data := resp.read(chunk):
                sink(data)
                size += len(data)
        except (http.client.HTTPException, OSError) as e:
            self.close()
            raise FunctionError(f"transfer of {redact(url)} broke off after {size} bytes: {reason(e)}") from None
        declared = resp.getheader("Content-Length")
        if declared is not None and declared.isdigit() and int(declared) != size:
            raise FunctionError(f"transfer of {redact(url)} broke off: {size} of {declared} bytes")
        return size


def check(http_, resp, url, ok=(200, 201, 204, 206, 207)):
    """Raise a clear FunctionError for an error answer (the body is read either way)."""
    if resp.status in ok:
        return resp
    text = http_.read_all(resp, url)[:600].decode("utf-8", "replace").strip()
    try:
        detail = json.loads(text).get("error") or text
    except (ValueError, AttributeError):
        detail = text.splitlines()[0] if text else ""
    detail = f": {detail[:200]}" if detail else ""
    if resp.status in (401, 403):
        raise FunctionError(f"storage refused access to {redact(url)} (HTTP {resp.status}{detail}); "
                            "the URL's macaroon is missing, expired or lacks the activity")
    if resp.status == 404:
        raise FunctionError(f"{redact(url)} does not exist (HTTP 404)")
    raise FunctionError(f"HTTP {resp.status} from {redact(url)}{detail}")


def put(http_, url, body, content_type):
    """Upload `body` (bytes, or a file opened for reading) in one PUT."""
    size = len(body) if isinstance(body, (bytes, bytearray)) else os.fstat(body.fileno()).st_size
    resp = http_.request("PUT", url, {"Content-Type": content_type, "Content-Length": str(size)}, body)
    check(http_, resp, url, ok=(200, 201, 204))
    http_.read_all(resp, url)
    return size
