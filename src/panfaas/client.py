"""The client notebooks, scripts and the Ansible modules use.

`Functions` speaks OpenWhisk's REST API and `Storage` speaks dCache's WebDAV
door: the same code works against the all-in-one and against a site's
OpenWhisk and dCache. `from_endpoints()` reads the all-in-one's
`<state>/endpoints.json`.
"""

from __future__ import annotations

import json
import os
import posixpath
import time
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import requests


class ClientError(Exception):
    """An HTTP call answered with an error; `status` and `body` say which."""

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


def _check(r: requests.Response, what: str) -> requests.Response:
    if r.status_code >= 400:
        try:
            body = r.json()
        except ValueError:
            body = r.text[:500]
        msg = body.get("error") if isinstance(body, dict) else body
        raise ClientError(f"{what}: HTTP {r.status_code}: {msg}", r.status_code, body)
    return r


class Functions:
    """OpenWhisk actions, triggers, rules and activations."""

    def __init__(self, api_host: str, auth: str, namespace: str = "_", verify: bool | str = True,
                 timeout: float = 70.0):
        self.base = api_host.rstrip("/") + "/api/v1/namespaces/" + urllib.parse.quote(namespace)
        user, _, key = auth.partition(":")
        self.session = requests.Session()
        self.session.auth = (user, key)
        self.session.verify = verify
        self.timeout = timeout

    @classmethod
    def from_endpoints(cls, path: str | os.PathLike | None = None) -> Functions:
        rt = load_endpoints(path)["runtime"]
        return cls(rt["api_host"], rt["auth"], rt.get("namespace", "_"))

    def _url(self, kind: str, name: str = "") -> str:
        return f"{self.base}/{kind}" + (f"/{urllib.parse.quote(name)}" if name else "")

    # -- invoking ---------------------------------------------------------
    def invoke(self, name: str, /, blocking: bool = True, result: bool = True, **args) -> Any:
        """Call a function. Blocking with result=True returns its result dict and
        raises ClientError (with the result as `body`) when it failed."""
        r = self.session.post(self._url("actions", name), json=args, timeout=self.timeout,
                              params={"blocking": str(blocking).lower(), "result": str(result).lower()})
        if r.status_code == 202:
            return r.json()  # {"activationId": ...}: not blocking, or still running after 60 s
        return _check(r, f"invoke {name}").json()

    def activation(self, activation_id: str) -> dict:
        return _check(self.session.get(self._url("activations", activation_id), timeout=self.timeout),
                      "activation").json()

    def wait(self, activation_id: str, timeout: float = 300.0, poll: float = 0.2) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            r = self.session.get(self._url("activations", activation_id), timeout=self.timeout)
            if r.status_code == 200:
                return r.json()
            if r.status_code != 404 or time.monotonic() > deadline:
                _check(r, "activation")
                raise ClientError(f"activation {activation_id} did not finish in {timeout} s")
            time.sleep(poll)

    def activations(self, name: str | None = None, limit: int = 30, skip: int = 0,
                    since: int | None = None, docs: bool = True) -> list[dict]:
        params: dict[str, Any] = {"limit": limit, "skip": skip, "docs": str(docs).lower()}
        if name:
            params["name"] = name
        if since is not None:
            params["since"] = since
        return _check(self.session.get(self._url("activations"), params=params, timeout=self.timeout),
                      "activations").json()

    def fire(self, trigger: str, **payload) -> str | None:
        r = _check(self.session.post(self._url("triggers", trigger), json=payload, timeout=self.timeout),
                   f"fire {trigger}")
        return None if r.status_code == 204 else r.json()["activationId"]

    # -- entities (what the Ansible modules use) --------------------------
    def get(self, kind: str, name: str) -> dict | None:
        r = self.session.get(self._url(kind, name), timeout=self.timeout)
        if r.status_code == 404:
            return None
        return _check(r, f"get {kind}/{name}").json()

    def put(self, kind: str, name: str, body: dict, overwrite: bool = True) -> dict:
        r = self.session.put(self._url(kind, name), json=body, timeout=self.timeout,
                             params={"overwrite": str(overwrite).lower()})
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
        """Run a feed action's lifecycle event (CREATE/READ/DELETE), as `wsk trigger create --feed`."""
        ns, _, rest = feed.strip("/").partition("/")
        url = f"{self.base.rsplit('/namespaces/', 1)[0]}/namespaces/{ns}/actions/{rest}"
        r = self.session.post(url, params={"blocking": "true", "result": "true"}, timeout=self.timeout,
                              json={"lifecycleEvent": lifecycle, "triggerName": trigger,
                                    "authKey": auth, **params})
        return _check(r, f"feed {feed} {lifecycle}").json()


class Storage:
    """A dCache WebDAV door: basic auth, or a macaroon (`authz`)."""

    def __init__(self, url: str, username: str | None = None, password: str | None = None,
                 macaroon: str | None = None, verify: bool | str = True, timeout: float = 60.0):
        self.url = url.rstrip("/")
        self.session = requests.Session()
        self.session.verify = verify
        if macaroon:
            self.session.headers["Authorization"] = f"Bearer {macaroon}"
        elif username:
            self.session.auth = (username, password or "")
        self.timeout = timeout

    @classmethod
    def from_endpoints(cls, path: str | os.PathLike | None = None) -> Storage:
        st = load_endpoints(path)["storage"]
        return cls(st["url"], st.get("username"), st.get("password"))

    def _u(self, path: str) -> str:
        return self.url + urllib.parse.quote("/" + path.lstrip("/"))

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
        """Ask the door for a macaroon for `path`; returns dCache's answer
        (`macaroon`, `uri.targetWithMacaroon`, ...)."""
        acts = activities if isinstance(activities, str) else ",".join(activities)
        body = {"caveats": [f"activity:{acts}", *caveats], "validity": validity}
        r = self.session.post(self._u(path), data=json.dumps(body), timeout=self.timeout,
                              headers={"Content-Type": "application/macaroon-request"})
        return _check(r, f"macaroon {path}").json()

    def url_for(self, path: str, activities: str | list[str] = "DOWNLOAD", validity: str = "PT1H") -> str:
        return self.macaroon(path, activities, validity)["uri"]["targetWithMacaroon"]
