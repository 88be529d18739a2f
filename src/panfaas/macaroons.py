"""Macaroons as dCache mints and checks them (pymacaroons, V1 base64url).

Caveats (dCache's `CaveatType`): home, root, path, activity, id, before, ip,
max-upload, iid. Any other key invalidates the macaroon. Semantics:
* `activity:A,B`: several caveats intersect; READ_METADATA is implied by any.
* `path:` and `root:` concatenate: `path:/data` then `path:/run1` means /data/run1.
  `root:` also re-bases the request path (chroot).
* `before:` ISO-8601 instant ending in Z; the earliest wins.
* `ip:` addresses or CIDRs; every ip caveat must admit the client.
* `max-upload:` bytes; the smallest wins.
* `id:uid;gid[,gid];username` and `iid:` are added by the storage; exactly one each.
Reference: shared/reference/dcache-events-macaroons-cxi.md §3.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import ipaddress
import posixpath
import re
import secrets
from collections.abc import Iterable

import pymacaroons
from pymacaroons.exceptions import MacaroonException

ACTIVITIES = ("READ_METADATA", "UPDATE_METADATA", "LIST", "DOWNLOAD", "MANAGE", "UPLOAD",
              "DELETE", "STAGE")
CAVEAT_KEYS = ("home", "root", "path", "activity", "id", "before", "ip", "max-upload", "iid")

# What each HTTP method needs (dCache's WebDAV door). PUT over an existing file
# needs DELETE as well; PROPFIND on a directory needs LIST (checked by the door).
METHOD_ACTIVITY = {
    "GET": "DOWNLOAD", "HEAD": "READ_METADATA", "PUT": "UPLOAD", "DELETE": "DELETE",
    "MKCOL": "MANAGE", "MOVE": "MANAGE", "PROPFIND": "READ_METADATA", "OPTIONS": "READ_METADATA",
}


class MacaroonError(Exception):
    """Invalid, tampered with, or not valid for this request. `status` is the HTTP answer."""

    def __init__(self, message: str, status: int = 401):
        super().__init__(message)
        self.status = status


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<m>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$")


def parse_duration(text: str) -> dt.timedelta:
    """ISO-8601 duration (PT15M, P1DT12H) as java.time.Duration accepts it."""
    m = _DURATION.match(text.strip()) if isinstance(text, str) else None
    if not m or text.strip() in ("P", "PT") or not any(m.groupdict().values()):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return dt.timedelta(days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])


def format_instant(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + \
        f"{t.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> dt.datetime:
    if not text.endswith("Z"):
        raise ValueError("before: must be an ISO-8601 UTC instant ending in Z")
    return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)


def _join(base: str, rel: str) -> str:
    return posixpath.normpath(posixpath.join(base, rel.lstrip("/"))) if rel else base


@dataclasses.dataclass
class Grant:
    """What a verified macaroon allows."""

    uid: int
    gids: list[int]
    username: str
    iid: str
    activities: frozenset[str] | None = None   # None: unrestricted
    path: str = "/"                            # visible subtree, after root
    root: str = "/"
    home: str | None = None
    before: dt.datetime | None = None
    ips: list[list] = dataclasses.field(default_factory=list)
    max_upload: int | None = None
    caveats: list[str] = dataclasses.field(default_factory=list)

    def resolve(self, request_path: str) -> str:
        """The namespace path a request URL path refers to, with root applied."""
        return _join(self.root, request_path) if self.root != "/" else posixpath.normpath(request_path)

    def allows_path(self, ns_path: str) -> bool:
        limit = _join(self.root, self.path) if self.path != "/" else self.root
        return limit == "/" or ns_path == limit or ns_path.startswith(limit.rstrip("/") + "/") \
            or limit.startswith(ns_path.rstrip("/") + "/")  # ancestors are visible for traversal

    def within_path(self, ns_path: str) -> bool:
        limit = _join(self.root, self.path) if self.path != "/" else self.root
        return limit == "/" or ns_path == limit or ns_path.startswith(limit.rstrip("/") + "/")

    def allows(self, activity: str) -> bool:
        if self.activities is None:
            return True
        return activity in self.activities or (activity == "READ_METADATA" and bool(self.activities))

    def allows_ip(self, client: str) -> bool:
        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        return all(any(addr in net for net in nets) for nets in self.ips)


def _parse_ip_list(value: str) -> list:
    nets = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise MacaroonError(f"bad ip caveat value: {part!r}", 400) from None
    return nets


def check_caveats(caveats: Iterable[str], *, for_minting: bool = False) -> Grant:
    """Evaluate caveat semantics (not the signature); raises MacaroonError."""
    ids, iids = [], []
    g = Grant(uid=-1, gids=[], username="", iid="")
    acts: frozenset[str] | None = None
    for cav in caveats:
        key, sep, value = cav.partition(":")
        if not sep or key not in CAVEAT_KEYS:
            raise MacaroonError(f"unknown caveat: {cav!r}", 400 if for_minting else 401)
        if key == "activity":
            wanted = frozenset(a.strip() for a in value.split(",") if a.strip())
            bad = wanted - set(ACTIVITIES)
            if bad:
                raise MacaroonError(f"unknown activity: {','.join(sorted(bad))}", 400)
            acts = wanted if acts is None else acts & wanted
        elif key == "path":
            g.path = _join(g.path, value)
        elif key == "root":
            g.root = _join(g.root, value)
        elif key == "home":
            g.home = value
        elif key == "before":
            try:
                t = parse_instant(value)
            except ValueError as e:
                raise MacaroonError(f"bad before caveat: {e}", 400) from None
            g.before = t if g.before is None else min(g.before, t)
        elif key == "ip":
            g.ips.append(_parse_ip_list(value))
        elif key == "max-upload":
            try:
                n = int(value)
            except ValueError:
                raise MacaroonError(f"bad max-upload caveat: {value!r}", 400) from None
            g.max_upload = n if g.max_upload is None else min(g.max_upload, n)
        elif key == "id":
            ids.append(value)
        elif key == "iid":
            iids.append(value)
        g.caveats.append(cav)
    g.activities = acts
    if not for_minting:
        if len(ids) != 1 or len(iids) != 1:
            raise MacaroonError("macaroon must carry exactly one id and one iid caveat")
        uid, _, rest = ids[0].partition(";")
        gids, _, name = rest.partition(";")
        try:
            g.uid = int(uid)
            g.gids = [int(x) for x in gids.split(",") if x]
        except ValueError:
            raise MacaroonError(f"bad id caveat: {ids[0]!r}") from None
        g.username, g.iid = name, iids[0]
    return g


class MacaroonAuthority:
    """Mints and verifies macaroons with one root key (kept in the state directory)."""

    def __init__(self, root_key: bytes, location: str = "panfaas-aio",
                 default_lifetime: dt.timedelta = dt.timedelta(days=1),
                 max_lifetime: dt.timedelta = dt.timedelta(days=7)):
        if len(root_key) < 16:
            raise ValueError("macaroon root key must be at least 16 bytes")
        self.root_key = root_key
        self.location = location
        self.default_lifetime = default_lifetime
        self.max_lifetime = max_lifetime

    def mint(self, *, uid: int, gids: list[int], username: str, path: str,
             caveats: list[str] = (), validity: str | None = None,
             inherited: list[str] = (), now: dt.datetime | None = None) -> str:
        """A new macaroon for `path` (the request path, relative to `inherited`)."""
        now = now or dt.datetime.now(dt.UTC)
        requested = list(caveats)
        check_caveats(list(inherited) + requested, for_minting=True)  # rejects unknown keys early
        if any(c.startswith(("id:", "iid:")) for c in requested):
            raise MacaroonError("id and iid caveats are added by the storage", 400)
        lifetime = self.default_lifetime
        if validity:
            try:
                lifetime = parse_duration(validity)
            except ValueError as e:
                raise MacaroonError(str(e), 400) from None
        if lifetime > self.max_lifetime:
            raise MacaroonError("before: requested duration beyond maximum allowed", 400)
        expiry = now + lifetime
        for c in requested:
            if c.startswith("before:"):
                try:
                    t = parse_instant(c[7:])
                except ValueError as e:
                    raise MacaroonError(str(e), 400) from None
                if t - now > self.max_lifetime:
                    raise MacaroonError("before: requested duration beyond maximum allowed", 400)
        m = pymacaroons.Macaroon(location=self.location, identifier=secrets.token_urlsafe(12),
                                 key=self.root_key)
        # A macaroon requested with a macaroon keeps its caveats, identity included.
        all_caveats = list(inherited) or [f"id:{uid};{','.join(map(str, gids))};{username}",
                                          f"iid:{secrets.token_urlsafe(9)}"]
        if path and path != "/":
            all_caveats.append(f"path:{path}")
        all_caveats += requested
        all_caveats.append(f"before:{format_instant(expiry)}")
        for c in all_caveats:
            m.add_first_party_caveat(c)
        return m.serialize()

    def verify(self, token: str, *, now: dt.datetime | None = None) -> Grant:
        """Check signature, caveat syntax and expiry; path/activity/ip are the door's job."""
        try:
            m = pymacaroons.Macaroon.deserialize(token)
        except Exception:
            raise MacaroonError("malformed macaroon") from None
        caveats = [c.caveat_id for c in m.caveats]
        v = pymacaroons.Verifier()
        v.satisfy_general(lambda _c: True)  # semantics are checked below, not by predicate
        try:
            v.verify(m, self.root_key)
        except MacaroonException:
            raise MacaroonError("macaroon signature does not verify") from None
        except Exception:
            raise MacaroonError("macaroon signature does not verify") from None
        grant = check_caveats(caveats)
        now = now or dt.datetime.now(dt.UTC)
        if grant.before is None:
            raise MacaroonError("macaroon has no expiry")
        if now >= grant.before:
            raise MacaroonError("macaroon has expired")
        return grant
