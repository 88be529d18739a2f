"""The client notebooks, scripts and the Ansible modules use.

`Functions` (and `AsyncFunctions`) speaks OpenWhisk's REST API and `Storage` speaks dCache's
WebDAV door, so the same code works against the all-in-one and against a site's OpenWhisk and
dCache (docs/client.md says how to point it at each):

    fn = Functions.from_endpoints()                 # the all-in-one (<state>/endpoints.json)
    fn = Functions.from_wskprops()                  # whatever `wsk` is configured for
    fn = Functions("https://openwhisk.example.org", "uuid:key", verify="/etc/ssl/site-ca.pem")
    st = Storage("https://dcache.example.org:2880", macaroon=token)
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import posixpath
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, Self

import requests


class ClientError(Exception):
    """An HTTP call answered with an error; `status` and `body` say which. For a failed
    blocking invocation `body` is the activation's result (or record), with its `error`."""

    def __init__(self, message: str, status: int | None = None, body: Any = None):
        super().__init__(message)
        self.status = status
        self.body = body


def default_state_dir() -> Path:
    env = os.environ.get("PANFAAS_STATE_DIR")
    if env:
        return Path(env)
    here = Path.cwd()
    for p in (here, *here.parents):
        if (p / ".aio" / "endpoints.json").exists():
            return p / ".aio"
    return here / ".aio"


def load_endpoints(path: str | os.PathLike | None = None) -> dict:
    p = Path(path) if path else default_state_dir() / "endpoints.json"
    try:
        return json.loads(p.read_text())
    except FileNotFoundError:
        raise ClientError(f"{p} not found: run 'make deploy' first, or set PANFAAS_STATE_DIR") from None


def read_wskprops(path: str | os.PathLike | None = None) -> dict:
    """~/.wskprops (or $WSK_CONFIG_FILE): APIHOST, AUTH, NAMESPACE, as the wsk CLI writes it."""
    p = Path(path or os.environ.get("WSK_CONFIG_FILE") or Path.home() / ".wskprops")
    try:
        text = p.read_text()
    except FileNotFoundError:
        raise ClientError(f"{p} not found: run 'wsk property set --apihost ... --auth ...' first") from None
    props = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep and not line.lstrip().startswith("#"):
            props[key.strip()] = value.strip()
    if "APIHOST" not in props or "AUTH" not in props:
        raise ClientError(f"{p}: APIHOST and AUTH are required")
    return props


def api_url(host: str) -> str:
    """wsk's APIHOST may be a bare host[:port]; OpenWhisk then means https."""
    return host if "://" in host else f"https://{host}"


def _error_message(body: Any) -> str:
    if isinstance(body, dict):
        if "error" in body:
            return str(body["error"])
        result = body.get("response", {}).get("result")
        if isinstance(result, dict) and "error" in result:
            return str(result["error"])
    return str(body)[:500]


def _check(r: requests.Response, what: str) -> requests.Response:
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = r.text[:500]
        raise ClientError(f"{what}: HTTP {r.status_code}: {_error_message(body)}", r.status_code, body)
    return r


def _bool(v: bool) -> str:
    return "true" if v else "false"


class _Paths:
    """URLs and query parameters, shared by the sync and the async client."""

    def __init__(self, api_host: str, namespace: str):
        self.root = api_url(api_host).rstrip("/") + "/api/v1/namespaces/"
        self.namespace = namespace
        self.base = self.root + urllib.parse.quote(namespace, safe="")

    def url(self, kind: str, name: str = "") -> str:
        return f"{self.base}/{kind}" + (f"/{urllib.parse.quote(name.strip('/'))}" if name else "")

    def feed_url(self, feed: str) -> str:
        ns, _, rest = feed.strip("/").partition("/")
        return f"{self.root}{urllib.parse.quote(ns, safe='')}/actions/{urllib.parse.quote(rest)}"

    @staticmethod
    def payload(payload: dict | None, params: dict) -> dict:
        return {**(payload or {}), **params}

    @staticmethod
    def invoke_params(blocking: bool, result: bool, wait_ms: int | None) -> dict:
        q = {"blocking": _bool(blocking), "result": _bool(result and blocking)}
        if wait_ms is not None and blocking:
            q["timeout"] = str(int(wait_ms))
        return q

    @staticmethod
    def list_params(name, limit, skip, since, upto, docs) -> dict:
        q: dict[str, Any] = {"limit": limit, "skip": skip, "docs": _bool(docs)}
        if name:
            q["name"] = name
        if since is not None:
            q["since"] = int(since)
        if upto is not None:
            q["upto"] = int(upto)
        return q


def _finished(name: str, rec: dict, result: bool) -> Any:
    """What a blocking invoke returns once the record of an activation that outlasted the
    server's wait exists: its result (result=True) or the record; a failure raises, as a 502
    (application or developer error) or a 500 would have."""
    if not rec["response"]["success"]:
        body = rec["response"]["result"] if result else rec
        raise ClientError(f"invoke {name}: {rec['response']['status']}: {_error_message(body)}",
                          502 if rec["response"]["statusCode"] in (1, 2) else 500, body)
    return rec["response"]["result"] if result else rec


class _Sources:
    """Where the sync and the async client find their endpoint and credentials."""

    @classmethod
    def from_endpoints(cls, path: str | os.PathLike | None = None) -> Self:
        rt = load_endpoints(path)["runtime"]
        return cls(rt["api_host"], rt["auth"], rt.get("namespace", "_"))

    @classmethod
    def from_wskprops(cls, path: str | os.PathLike | None = None, verify: bool | str = True) -> Self:
        props = read_wskprops(path)
        return cls(props["APIHOST"], props["AUTH"], props.get("NAMESPACE", "_"), verify=verify)


class Functions(_Sources):
    """OpenWhisk actions, triggers, rules, packages and activations (the all-in-one's or a site's)."""

    def __init__(self, api_host: str, auth: str, namespace: str = "_", verify: bool | str = True,
                 timeout: float = 70.0):
        self.paths = _Paths(api_host, namespace)
        self.base = self.paths.base
        user, _, key = auth.partition(":")
        self.session = requests.Session()
        self.session.auth = (user, key)
        self.session.verify = verify
        self.timeout = timeout

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> Functions:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _url(self, kind: str, name: str = "") -> str:
        return self.paths.url(kind, name)

    # -- invoking ---------------------------------------------------------
    def invoke(self, name: str, payload: dict | None = None, /, *, blocking: bool = True, result: bool = True,
               wait: bool = True, wait_timeout: float = 300.0, wait_ms: int | None = None, **params) -> Any:
        """Call an action with `payload` and/or keyword parameters.

        blocking, result=True: its result; a failed activation raises ClientError (`body` is
        the result with its `error`). result=False: the whole activation record. Not blocking:
        {"activationId": ...}. A blocking call still running when the server stops holding it
        (OpenWhisk: 60 s, or `wait_ms`) is polled until it ends (wait=True, up to wait_timeout
        seconds), or its {"activationId"} is returned (wait=False)."""
        query = self.paths.invoke_params(blocking, result, wait_ms)
        r = self.session.post(self._url("actions", name), json=self.paths.payload(payload, params),
                              timeout=self.timeout, params=query)
        if r.status_code == 202:
            accepted = r.json()
            if not blocking or not wait:
                return accepted
            return _finished(name, self.wait(accepted["activationId"], timeout=wait_timeout), result)
        return _check(r, f"invoke {name}").json()

    def activation(self, activation_id: str) -> dict:
        return _check(self.session.get(self._url("activations", activation_id), timeout=self.timeout),
                      "activation").json()

    def logs(self, activation_id: str) -> list[str]:
        return _check(self.session.get(self._url("activations", activation_id) + "/logs", timeout=self.timeout),
                      "logs").json()["logs"]

    def result(self, activation_id: str) -> dict:
        """The activation's response: {status, success, result, ...}."""
        return _check(self.session.get(self._url("activations", activation_id) + "/result", timeout=self.timeout),
                      "result").json()

    def wait(self, activation_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict:
        """The activation record, once it exists (polling, as `wsk activation poll`)."""
        deadline = time.monotonic() + timeout
        while True:
            r = self.session.get(self._url("activations", activation_id), timeout=self.timeout)
            if r.status_code == 200:
                return r.json()
            if r.status_code != 404:
                _check(r, "activation")
            if time.monotonic() > deadline:
                raise ClientError(f"activation {activation_id} did not finish in {timeout:.0f} s")
            time.sleep(poll)

    def activations(self, name: str | None = None, limit: int = 30, skip: int = 0, since: int | None = None,
                    upto: int | None = None, docs: bool = True) -> list[dict]:
        """Newest first; since/upto in epoch ms; docs=False gives summaries (no result, no logs)."""
        return _check(self.session.get(self._url("activations"), timeout=self.timeout,
                                       params=self.paths.list_params(name, limit, skip, since, upto, docs)),
                      "activations").json()

    def fire(self, trigger: str, payload: dict | None = None, /, **params) -> str | None:
        """The trigger's activation id, or None when no rule of it is active (204)."""
        r = _check(self.session.post(self._url("triggers", trigger), json=self.paths.payload(payload, params),
                                     timeout=self.timeout), f"fire {trigger}")
        return None if r.status_code == 204 else r.json()["activationId"]

    # -- entities (what the Ansible modules use) --------------------------
    def get(self, kind: str, name: str) -> dict | None:
        r = self.session.get(self._url(kind, name), timeout=self.timeout)
        if r.status_code == 404:
            return None
        return _check(r, f"get {kind}/{name}").json()

    def list(self, kind: str, limit: int = 200, skip: int = 0) -> list[dict]:
        return _check(self.session.get(self._url(kind), params={"limit": limit, "skip": skip}, timeout=self.timeout),
                      f"list {kind}").json()

    def put(self, kind: str, name: str, body: dict, overwrite: bool = True) -> dict:
        r = self.session.put(self._url(kind, name), json=body, timeout=self.timeout,
                             params={"overwrite": _bool(overwrite)})
        return _check(r, f"put {kind}/{name}").json()

    def delete(self, kind: str, name: str) -> bool:
        r = self.session.delete(self._url(kind, name), timeout=self.timeout)
        if r.status_code == 404:
            return False
        _check(r, f"delete {kind}/{name}")
        return True

    def rule_status(self, name: str, status: str) -> None:
        _check(self.session.post(self._url("rules", name), json={"status": status}, timeout=self.timeout),
               f"rule {name}")

    def feed(self, feed: str, lifecycle: str, trigger: str, auth: str, **params) -> dict:
        """Run a feed action's lifecycle event (CREATE, READ, UPDATE, DELETE), as
        `wsk trigger create T --feed F -p ...` does; returns the feed action's result."""
        r = self.session.post(self.paths.feed_url(feed), params={"blocking": "true", "result": "true"},
                              timeout=self.timeout,
                              json={"lifecycleEvent": lifecycle, "triggerName": trigger, "authKey": auth, **params})
        return _check(r, f"feed {feed} {lifecycle}").json()


class AsyncFunctions(_Sources):
    """Functions for asyncio code (and notebooks that await): the same calls, as coroutines.

        async with AsyncFunctions(api_host, auth) as fn:
            results = await asyncio.gather(*(fn.invoke("panfaas/hdf5-preview", read=u, write=w)
                                             for u, w in pairs))
    """

    def __init__(self, api_host: str, auth: str, namespace: str = "_", verify: bool | str = True,
                 timeout: float = 70.0):
        self.paths = _Paths(api_host, namespace)
        self.auth = auth
        self.verify = verify
        self.timeout = timeout
        self._session = None

    def _client(self):
        import aiohttp
        if self._session is None or self._session.closed:
            user, _, key = self.auth.partition(":")
            ssl: Any = None
            if self.verify is False:
                ssl = False
            elif isinstance(self.verify, str):
                import ssl as ssl_mod
                ssl = ssl_mod.create_default_context(cafile=self.verify)
            basic = base64.b64encode(f"{user}:{key}".encode()).decode()
            self._session = aiohttp.ClientSession(headers={"Authorization": f"Basic {basic}"},
                                                  timeout=aiohttp.ClientTimeout(total=self.timeout),
                                                  connector=aiohttp.TCPConnector(ssl=ssl))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def __aenter__(self) -> AsyncFunctions:
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def _request(self, method: str, url: str, what: str, **kw) -> tuple[int, Any]:
        async with self._client().request(method, url, **kw) as r:
            text = await r.text()
            try:
                body = json.loads(text) if text else None
            except ValueError:
                body = text[:500]
            if r.status >= 400:
                raise ClientError(f"{what}: HTTP {r.status}: {_error_message(body)}", r.status, body)
            return r.status, body

    async def invoke(self, name: str, payload: dict | None = None, /, *, blocking: bool = True,
                     result: bool = True, wait: bool = True, wait_timeout: float = 300.0,
                     wait_ms: int | None = None, **params) -> Any:
        """As Functions.invoke."""
        status, body = await self._request(
            "POST", self.paths.url("actions", name), f"invoke {name}", json=self.paths.payload(payload, params),
            params=self.paths.invoke_params(blocking, result, wait_ms))
        if status == 202 and blocking and wait:
            return _finished(name, await self.wait(body["activationId"], timeout=wait_timeout), result)
        return body

    async def activation(self, activation_id: str) -> dict:
        return (await self._request("GET", self.paths.url("activations", activation_id), "activation"))[1]

    async def wait(self, activation_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            try:
                return await self.activation(activation_id)
            except ClientError as e:
                if e.status != 404:
                    raise
            if time.monotonic() > deadline:
                raise ClientError(f"activation {activation_id} did not finish in {timeout:.0f} s")
            await asyncio.sleep(poll)

    async def activations(self, name: str | None = None, limit: int = 30, skip: int = 0, since: int | None = None,
                          upto: int | None = None, docs: bool = True) -> list[dict]:
        return (await self._request("GET", self.paths.url("activations"), "activations",
                                    params=self.paths.list_params(name, limit, skip, since, upto, docs)))[1]

    async def fire(self, trigger: str, payload: dict | None = None, /, **params) -> str | None:
        status, body = await self._request("POST", self.paths.url("triggers", trigger), f"fire {trigger}",
                                           json=self.paths.payload(payload, params))
        return None if status == 204 else body["activationId"]


class Storage:
    """A dCache WebDAV door (or the all-in-one's): basic auth, a macaroon, or an OIDC token."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 macaroon: str | None = None, verify: bool | str = True, timeout: float = 60.0,
                 token: str | None = None):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = verify
        bearer = macaroon or token
        if bearer:
            self.session.headers["Authorization"] = f"Bearer {bearer}"
        elif username:
            self.session.auth = (username, password or "")
        self.timeout = timeout

    @classmethod
    def from_endpoints(cls, path: str | os.PathLike | None = None) -> Storage:
        st = load_endpoints(path)["storage"]
        return cls(st["url"], st.get("username"), st.get("password"))

    def _u(self, path: str) -> str:
        return self.url + urllib.parse.quote("/" + path.lstrip("/"))

    def path_of(self, url: str) -> str | None:
        """The door path of a URL on this door (its query, e.g. a macaroon, dropped), else None."""
        base = urllib.parse.urlsplit(self.url)
        u = urllib.parse.urlsplit(url)
        if (u.scheme, u.netloc) != (base.scheme, base.netloc) or not u.path.startswith(base.path):
            return None
        return urllib.parse.unquote(u.path[len(base.path):]) or "/"

    def upload(self, path: str, data: bytes | BinaryIO | Iterator[bytes]) -> None:
        _check(self.session.put(self._u(path), data=data, timeout=self.timeout), f"upload {path}")

    def download(self, path: str) -> bytes:
        return _check(self.session.get(self._u(path), timeout=self.timeout), f"download {path}").content

    def exists(self, path: str) -> bool:
        r = self.session.head(self._u(path), timeout=self.timeout)
        if r.status_code == 404:
            return False
        _check(r, f"head {path}")
        return True

    def delete(self, path: str) -> None:
        _check(self.session.delete(self._u(path), timeout=self.timeout), f"delete {path}")

    def mkdir(self, path: str, parents: bool = True) -> None:
        parts = [p for p in path.strip("/").split("/") if p]
        todo = ["/" + "/".join(parts[:i + 1]) for i in range(len(parts))] if parents else [path]
        for p in todo:
            r = self.session.request("MKCOL", self._u(p), timeout=self.timeout)
            if r.status_code not in (201, 405):
                _check(r, f"mkdir {p}")

    def list(self, path: str = "/") -> list[dict]:
        """The entries of a directory (PROPFIND, Depth 1): name, path, type, size, modified."""
        r = _check(self.session.request("PROPFIND", self._u(path), headers={"Depth": "1"},
                                        timeout=self.timeout), f"list {path}")
        ns = {"d": "DAV:"}
        out = []
        base = urllib.parse.urlsplit(self._u(path)).path.rstrip("/")
        for resp in ET.fromstring(r.content).findall("d:response", ns):
            href = urllib.parse.unquote(urllib.parse.urlsplit(resp.findtext("d:href", "", ns)).path)
            if href.rstrip("/") == urllib.parse.unquote(base):
                continue
            prop = resp.find("d:propstat/d:prop", ns)
            is_dir = prop is not None and prop.find("d:resourcetype/d:collection", ns) is not None
            size = prop.findtext("d:getcontentlength", None, ns) if prop is not None else None
            out.append({"name": posixpath.basename(href.rstrip("/")), "path": href.rstrip("/") or "/",
                        "type": "dir" if is_dir else "file", "size": int(size) if size else None,
                        "modified": prop.findtext("d:getlastmodified", None, ns) if prop is not None else None})
        return out

    def macaroon(self, path: str, activities: str | list[str] = "DOWNLOAD", validity: str = "PT1H",
                 caveats: list[str] = ()) -> dict:
        """Ask the door for a macaroon for `path` (dCache's `application/macaroon-request`);
        returns dCache's answer (`macaroon`, `uri.targetWithMacaroon`, ...)."""
        acts = activities if isinstance(activities, str) else ",".join(activities)
        body = {"caveats": [f"activity:{acts}", *caveats], "validity": validity}
        r = self.session.post(self._u(path), data=json.dumps(body), timeout=self.timeout,
                              headers={"Content-Type": "application/macaroon-request"})
        return _check(r, f"macaroon {path}").json()

    def url_for(self, path: str, activities: str | list[str] = "DOWNLOAD", validity: str = "PT1H") -> str:
        """A pre-authorised URL (the macaroon in its query) a function can use without credentials."""
        return self.macaroon(path, activities, validity)["uri"]["targetWithMacaroon"]
