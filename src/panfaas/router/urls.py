"""Pre-authorised URLs: macaroons requested from the storage door, as dynamic-processing does.

A macaroon request is `POST <door>/<path>` with `Content-Type:
application/macaroon-request`, basic auth, and the body
`{"caveats": ["activity:UPLOAD"], "validity": "PT15M"}`; only `macaroon` is read
from the answer and the URL becomes `scheme://authority/path?authz=<macaroon>`.
No `path:` caveat is sent: the door adds the request path itself (reference §3).

Unlike dynamic-processing, a request that still fails after the retries raises
`UrlFailure` (the router dead-letters the event with the reason) instead of
handing out a bare URL that the function cannot use.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import re
import ssl
import time
import urllib.parse
from collections.abc import Callable

import aiohttp

from .. import events
from .rules import DeriveError, Rule

# What java.net.URI leaves unescaped in a path (RFC 3986 pchar), so that URLs are
# byte for byte the ones dynamic-processing builds.
PATH_SAFE = "/:@!$&'()*+,;=-._~"
_PLAIN_PATH = re.compile(r"[A-Za-z0-9/._~-]*")
RETRY_STATUS = frozenset((408, 425, 429, 500, 502, 503, 504))


class UrlFailure(Exception):
    """A URL of a rule could not be made; the text is the dead-letter reason."""


def basic_auth(username: str, password: str | None) -> str:
    return "Basic " + base64.b64encode(f"{username}:{password or ''}".encode()).decode()


def ssl_setting(tls_verify: bool | str) -> ssl.SSLContext | bool:
    """aiohttp's `ssl=` for url-generator.tls-verify: true, false or the path of a CA bundle."""
    if isinstance(tls_verify, str):
        return ssl.create_default_context(cafile=tls_verify)
    return bool(tls_verify)


def origin(base: str) -> str:
    parts = urllib.parse.urlsplit(base)
    return f"{parts.scheme}://{parts.netloc}"


class UrlGenerator:
    def __init__(self, conf, *, observe: Callable[[float], None] | None = None):
        self.origin = origin(conf.base)
        self.headers = {"Authorization": basic_auth(conf.username, conf.password)} if conf.username else {}
        self.default_lifetime = conf.default_lifetime
        self.retries = conf.retries
        self.backoff = conf.backoff
        self.timeout = aiohttp.ClientTimeout(total=conf.timeout)
        self.concurrency = conf.concurrency
        self.tls = conf.tls_verify
        self.observe = observe or (lambda _s: None)
        self.session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        connector = aiohttp.TCPConnector(limit=self.concurrency, ssl=ssl_setting(self.tls))
        self.session = aiohttp.ClientSession(connector=connector)

    async def close(self) -> None:
        if self.session:
            await self.session.close()
            self.session = None

    def url(self, path: str) -> str:
        if _PLAIN_PATH.fullmatch(path):        # the usual case, and quote() is slow
            return self.origin + path
        return self.origin + urllib.parse.quote(path, safe=PATH_SAFE)

    async def _request(self, method: str, path: str, what: str, *, ok: tuple, body: bytes | None = None,
                       headers: dict | None = None):
        """(status, text) of the first answer in `ok`; retried with exponential backoff."""
        delay, last = self.backoff, "no attempt made"
        for attempt in range(self.retries + 1):
            retry = True
            try:
                async with self.session.request(method, self.url(path), data=body,
                                                headers={**self.headers, **(headers or {})},
                                                timeout=self.timeout) as r:
                    text = await r.text(errors="replace")
                    if r.status in ok:
                        return r.status, text
                    last = f"HTTP {r.status}: {_error_text(text)}"
                    retry = r.status in RETRY_STATUS
            except TimeoutError:
                last = f"no answer within {self.timeout.total:g} s"
            except aiohttp.ClientSSLError as e:
                last = f"TLS: {e} (set url-generator.tls-verify to a CA bundle, or false)"
                retry = False
            except aiohttp.ClientError as e:
                last = f"{type(e).__name__}: {e}"
            if not retry:
                break
            if attempt < self.retries:
                await asyncio.sleep(delay * (0.75 + random.random() / 2))
                delay *= 2
        attempts = attempt + 1
        raise UrlFailure(f"{what} failed after {attempts} attempt{'s' if attempts > 1 else ''}: {last}")

    async def macaroon(self, path: str, activity: str, lifetime: str | None) -> str:
        body = json.dumps({"caveats": [f"activity:{activity}"],
                           "validity": lifetime or self.default_lifetime}).encode()
        t0 = time.monotonic()
        what = f"macaroon request ({activity}) for {path}"
        try:
            _, text = await self._request("POST", path, what, ok=(200,), body=body,
                                          headers={"Content-Type": "application/macaroon-request"})
        finally:
            self.observe(time.monotonic() - t0)
        try:
            token = json.loads(text)["macaroon"].strip()
        except (ValueError, KeyError, TypeError, AttributeError):
            raise UrlFailure(f"{what}: the door's answer has no 'macaroon': {text[:200]!r}") from None
        if not token:
            raise UrlFailure(f"{what}: the door answered an empty macaroon")
        return urllib.parse.quote(token, safe="-_.~=")  # base64url: unchanged

    async def mkcol(self, path: str) -> None:
        """Create the collection (201; 405 means it exists). Missing parents (409) are created first."""
        what = f"MKCOL {path}"
        status, _ = await self._request("MKCOL", path, what, ok=(201, 405, 409))
        if status == 409:
            parent = path.rstrip("/").rsplit("/", 1)[0]
            if not parent or parent == path:
                raise UrlFailure(f"{what} failed: HTTP 409 and no parent to create")
            await self.mkcol(parent)
            await self._request("MKCOL", path, what, ok=(201, 405))

    async def _one(self, spec, path: str, create_paths: bool) -> str:
        if spec.create_path and create_paths:
            await self.mkcol(path)
        url = self.url(path)
        if spec.activity:
            url += "?authz=" + await self.macaroon(path, spec.activity, spec.lifetime)
        return url

    def paths(self, rule: Rule, ev: events.StorageEvent) -> list[tuple]:
        try:
            return [(spec, spec.derive(ev.path)) for spec in rule.urls]
        except DeriveError as e:
            raise UrlFailure(str(e)) from None

    def build_bare(self, rule: Rule, ev: events.StorageEvent) -> dict:
        """URLs without macaroons (rules that need none, or --no-macaroons)."""
        return {spec.name: self.url(path) for spec, path in self.paths(rule, ev)}

    async def build(self, rule: Rule, ev: events.StorageEvent, *, create_paths: bool = True) -> dict:
        """name -> URL for one rule, macaroons included; the URLs of a rule are requested
        concurrently. create_paths=False: no MKCOL (dry-run)."""
        pairs = self.paths(rule, ev)
        urls = await asyncio.gather(*(self._one(spec, path, create_paths) for spec, path in pairs))
        return {spec.name: url for (spec, _), url in zip(pairs, urls, strict=True)}


def _error_text(text: str) -> str:
    """dCache answers errors as text or JSON ({"error"} here, {"errors":[{"message"}]} there)."""
    try:
        doc = json.loads(text)
        if isinstance(doc, dict):
            if isinstance(doc.get("error"), str):
                return doc["error"]
            errs = doc.get("errors")
            if isinstance(errs, list) and errs and isinstance(errs[0], dict):
                return str(errs[0].get("message"))
    except ValueError:
        pass
    return " ".join(text.split())[:200] or "(no body)"
