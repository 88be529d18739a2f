"""Who is asking: basic auth against the users file, or a macaroon.

A macaroon is accepted as `Authorization: Bearer <macaroon>` or as the `authz`
query parameter, on the door and on the frontend alike. Users come from the
users file the inventory generates into the state directory:
`{users: {name: {password, uid, gid, [gids], [home], [root]}}}`.
"""

from __future__ import annotations

import base64
import dataclasses
import hmac
import posixpath
import urllib.parse

from .. import config as cfg
from .. import macaroons


class AuthError(Exception):
    """The credentials are invalid (401); `str()` says why."""


@dataclasses.dataclass
class Identity:
    username: str
    uid: int
    gids: list[int]
    client: str
    home: str = "/"
    root: str = "/"
    grant: macaroons.Grant | None = None

    @property
    def gid(self) -> int:
        return self.gids[0] if self.gids else 0

    def resolve(self, request_path: str) -> str:
        """The namespace path a client path means (the root caveat or the user's root applied)."""
        root = self.grant.root if self.grant else self.root
        return macaroons.join(root, request_path)

    def visible(self, ns_path: str) -> bool:
        """May this identity see `ns_path` at all (path caveats; ancestors stay visible)?"""
        return self.grant.allows_path(ns_path) if self.grant else macaroons.is_within(ns_path, self.root)

    def within(self, ns_path: str) -> bool:
        """Is `ns_path` inside what this identity may act on (not just an ancestor of it)?"""
        return self.grant.within_path(ns_path) if self.grant else macaroons.is_within(ns_path, self.root)

    def allows(self, activity: str) -> bool:
        return self.grant.allows(activity) if self.grant else True


def load_users(path: str) -> dict:
    data = cfg.load_yaml(path) or {}
    users = data.get("users") if isinstance(data, dict) else None
    if not isinstance(users, dict) or not users:
        raise cfg.ConfigError(f"{path}: expected 'users:' with at least one user")
    for name, u in users.items():
        if not isinstance(u, dict) or not {"password", "uid", "gid"} <= set(u):
            raise cfg.ConfigError(f"{path}: user '{name}' needs password, uid and gid")
        for key in ("home", "root"):
            if key in u and not (isinstance(u[key], str) and u[key].startswith("/")):
                raise cfg.ConfigError(f"{path}: user '{name}': '{key}' must be an absolute path")
    return users


class Authenticator:
    def __init__(self, users: dict, authority: macaroons.MacaroonAuthority,
                 accept_unencrypted: bool = True):
        self.users = users
        self.authority = authority
        self.accept_unencrypted = accept_unencrypted

    def _user(self, name: str, client: str) -> Identity:
        u = self.users[name]
        gids = [int(u["gid"])] + [int(g) for g in u.get("gids", []) if int(g) != int(u["gid"])]
        root = posixpath.normpath(u.get("root", "/"))
        return Identity(name, int(u["uid"]), gids, client, home=u.get("home", "/"), root=root)

    def authenticate(self, environ: dict) -> Identity | None:
        """The caller's identity, None when anonymous; raises AuthError when the credentials fail."""
        client = environ.get("REMOTE_ADDR", "")
        auth = environ.get("HTTP_AUTHORIZATION", "")
        if auth[:6].lower() == "basic ":
            try:
                user, _, password = base64.b64decode(auth[6:].strip(), validate=True).decode().partition(":")
            except (ValueError, UnicodeDecodeError):
                raise AuthError("malformed basic authorization") from None
            entry = self.users.get(user)
            # Compare even for unknown users, so that timing does not tell which names exist.
            expected = str(entry["password"]) if entry else "\0" * 32
            if not hmac.compare_digest(expected.encode(), password.encode()) or not entry:
                raise AuthError("invalid username or password")
            return self._user(user, client)
        token = None
        if auth[:7].lower() == "bearer ":
            token = auth[7:].strip()
        else:
            qs = urllib.parse.parse_qs(environ.get("QUERY_STRING", ""))
            token = (qs.get("authz") or [None])[0]
        if not token:
            return None
        if not self.accept_unencrypted and not is_encrypted(environ):
            raise AuthError("macaroons are not accepted over an unencrypted channel")
        try:
            grant = self.authority.verify(token)
        except macaroons.MacaroonError as e:
            raise AuthError(str(e)) from None
        if not grant.allows_ip(client):
            raise AuthError(f"macaroon is not valid for client address {client}")
        return Identity(grant.username, grant.uid, grant.gids, client, home=grant.home or "/",
                        root=grant.root, grant=grant)


def is_encrypted(environ: dict) -> bool:
    return environ.get("wsgi.url_scheme") == "https"
