"""Macaroons as dCache mints and checks them (pymacaroons, V1 serialisation, base64url).

Caveats (dCache's `CaveatType`): home, root, path, activity, id, before, ip,
max-upload, iid. Any other key invalidates the macaroon. Semantics (dCache's
user guide, "Understanding dCache caveats"):
* `iid:` issue id, first caveat, and `id:uid;gid[,gid...];username`: added by
  the storage; exactly one of each.
* `activity:A,B`: several caveats intersect; READ_METADATA is implied by any
  other activity; an empty list allows nothing. What each HTTP method needs is
  the door's (`panfaas.storage.door.Door.authorize`).
* `path:` visible subtree, `root:` chroot; several of either concatenate
  (`path:/data` + `path:/run1` = `/data/run1`). Ancestors of the path stay
  visible (for listing) and the rest of the namespace is hidden. Values must be
  absolute and may not contain `..` (so attenuation can only narrow).
* `home:` the home directory (informational here; /api/v1/user reports it).
* `before:` ISO-8601 instant ending in Z; every one must hold.
* `ip:` addresses or CIDR subnets, comma-separated; every ip caveat must admit the client.
* `max-upload:` bytes; the smallest wins.
A macaroon requested with a macaroon inherits all of its caveats (and gets a
new iid). Reference: shared/reference/dcache-events-macaroons-cxi.md §3.
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

ACTIVITIES = ("READ_METADATA", "UPDATE_METADATA", "LIST", "DOWNLOAD", "MANAGE", "UPLOAD",
              "DELETE", "STAGE")
CAVEAT_KEYS = ("home", "root", "path", "activity", "id", "before", "ip", "max-upload", "iid")


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
    if not m or text.strip() in ("P", "PT") or text.strip().endswith("T") or not any(m.groupdict().values()):
        raise ValueError(f"not an ISO-8601 duration: {text!r}")
    g = {k: float(v) if v else 0.0 for k, v in m.groupdict().items()}
    return dt.timedelta(days=g["d"], hours=g["h"], minutes=g["m"], seconds=g["s"])


def format_instant(t: dt.datetime) -> str:
    t = t.astimezone(dt.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def parse_instant(text: str) -> dt.datetime:
    if not text.endswith("Z"):
        raise ValueError("an ISO-8601 UTC instant ending in Z is required")
    try:
        return dt.datetime.fromisoformat(text[:-1]).replace(tzinfo=dt.UTC)
    except ValueError:
        raise ValueError(f"not an ISO-8601 instant: {text!r}") from None


def join(base: str, rel: str) -> str:
    """`rel` resolved below `base` (concatenation, as dCache combines path and root caveats)."""
    rel = rel.strip("/")
    return posixpath.normpath(posixpath.join(base, rel)) if rel else posixpath.normpath(base)


def is_within(path: str, limit: str) -> bool:
    return limit == "/" or path == limit or path.startswith(limit.rstrip("/") + "/")


def _absolute_path(key: str, value: str) -> str:
    if not value.startswith("/") or ".." in value.split("/") or "\0" in value:
        raise MacaroonError(f"bad {key} caveat: {value!r} (an absolute path without '..' is required)")
    return value


@dataclasses.dataclass
class Grant:
    """What a verified macaroon allows."""

    uid: int
    gids: list[int]
    username: str
    iid: str
    activities: frozenset[str] | None = None   # None: unrestricted
    path: str = "/"                            # visible subtree, as the client sees it (after root)
    root: str = "/"
    home: str | None = None
    before: dt.datetime | None = None
    ips: list[list] = dataclasses.field(default_factory=list)
    max_upload: int | None = None
    caveats: list[str] = dataclasses.field(default_factory=list)

    @property
    def limit(self) -> str:
        """The visible subtree in namespace terms (root and path combined)."""
        return join(self.root, self.path)

    def allows_path(self, ns_path: str) -> bool:
        """Visible: inside the subtree, or one of its ancestors (for traversal and listing)."""
        return is_within(ns_path, self.limit) or is_within(self.limit, ns_path)

    def within_path(self, ns_path: str) -> bool:
        return is_within(ns_path, self.limit)

    def allows(self, activity: str) -> bool:
        if self.activities is None:
            return True
        return activity in self.activities or (activity == "READ_METADATA" and bool(self.activities))

    def allows_ip(self, client: str) -> bool:
        if not self.ips:
            return True
        try:
            addr = ipaddress.ip_address(client)
        except ValueError:
            return False
        return all(any(addr in net for net in nets) for nets in self.ips)

    def relative(self, client_path: str) -> str | None:
        """`client_path` relative to this grant's path; "" for an ancestor, None when outside."""
        if is_within(client_path, self.path):
            return "" if client_path == self.path else client_path[len(self.path.rstrip("/")):]
        if is_within(self.path, client_path):
            return ""
        return None


def _parse_ip_list(value: str) -> list:
    nets = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise MacaroonError(f"bad ip caveat value: {part!r}") from None
    if not nets:
        raise MacaroonError("bad ip caveat: no address given")
    return nets


def check_caveats(caveats: Iterable[str], *, for_minting: bool = False) -> Grant:
    """Evaluate caveat semantics (not the signature); raises MacaroonError.

    Errors are 401 when checking a macaroon that is used, 400 when a client asks
    for a macaroon with such caveats (`for_minting`)."""
    status = 400 if for_minting else 401
    try:
        return _check(caveats, for_minting)
    except MacaroonError as e:
        raise MacaroonError(str(e), status) from None


def _check(caveats: Iterable[str], for_minting: bool) -> Grant:
    ids, iids = [], []
    g = Grant(uid=-1, gids=[], username="", iid="")
    acts: frozenset[str] | None = None
    for cav in caveats:
        key, sep, value = cav.partition(":")
        if not sep or key not in CAVEAT_KEYS:
            raise MacaroonError(f"unknown caveat: {cav!r}")
        if key == "activity":
            wanted = frozenset(a.strip() for a in value.split(",") if a.strip())
            bad = wanted - set(ACTIVITIES)
            if bad:
                raise MacaroonError(f"unknown activity: {','.join(sorted(bad))}")
            acts = wanted if acts is None else acts & wanted
        elif key == "path":
            g.path = join(g.path, _absolute_path(key, value))
        elif key == "root":
            g.root = join(g.root, _absolute_path(key, value))
        elif key == "home":
            g.home = _absolute_path(key, value)
        elif key == "before":
            try:
                t = parse_instant(value)
            except ValueError as e:
                raise MacaroonError(f"bad before caveat: {e}") from None
            g.before = t if g.before is None else min(g.before, t)
        elif key == "ip":
            g.ips.append(_parse_ip_list(value))
        elif key == "max-upload":
            if not value.isdigit():
                raise MacaroonError(f"bad max-upload caveat: {value!r} (bytes expected)")
            g.max_upload = int(value) if g.max_upload is None else min(g.max_upload, int(value))
        elif key == "id":
            ids.append(value)
        elif key == "iid":
            iids.append(value)
        g.caveats.append(cav)
    g.activities = acts
    if for_minting:
        return g
    if len(ids) != 1 or len(iids) != 1:
        raise MacaroonError("macaroon must carry exactly one id and one iid caveat")
    uid, _, rest = ids[0].partition(";")
    gids, _, name = rest.partition(";")
    try:
        g.uid = int(uid)
        g.gids = [int(x) for x in gids.split(",") if x]
    except ValueError:
        raise MacaroonError(f"bad id caveat: {ids[0]!r}") from None
    if not name:
        raise MacaroonError(f"bad id caveat: {ids[0]!r} (no username)")
    g.username, g.iid = name, iids[0]
    return g


class MacaroonAuthority:
    """Mints and verifies macaroons with one root key (kept in the state directory)."""

    def __init__(self, root_key: bytes, location: str = "panfaas-aio",
                 default_lifetime: dt.timedelta = dt.timedelta(days=1),
                 max_lifetime: dt.timedelta = dt.timedelta(days=7)):
        if len(root_key) < 16:
            raise ValueError("macaroon root key must be at least 16 bytes")
        if default_lifetime > max_lifetime:
            raise ValueError("macaroon default lifetime is longer than the maximum lifetime")
        self.root_key = root_key
        self.location = location
        self.default_lifetime = default_lifetime
        self.max_lifetime = max_lifetime

    def mint(self, *, uid: int, gids: list[int], username: str, path: str,
             caveats: list[str] = (), validity: str | None = None,
             inherited: list[str] = (), home: str | None = None, root: str | None = None,
             now: dt.datetime | None = None) -> str:
        """A new macaroon for `path` (the request path, relative to what `inherited` allows).

        `inherited` are the caveats of the macaroon the request was made with: the
        new one keeps all of them (with a fresh iid). `home`/`root` are those of a
        user who asked with a password."""
        now = now or dt.datetime.now(dt.UTC)
        requested = list(caveats)
        if any(c.startswith(("id:", "iid:")) for c in requested):
            raise MacaroonError("id and iid caveats are added by the storage", 400)
        check_caveats(list(inherited) + requested, for_minting=True)
        expiry = None
        if validity is not None:
            try:
                lifetime = parse_duration(validity)
            except ValueError as e:
                raise MacaroonError(f"bad validity: {e}", 400) from None
            if lifetime <= dt.timedelta(0):
                raise MacaroonError("validity must be positive", 400)
            if lifetime > self.max_lifetime:
                raise MacaroonError("before: requested duration beyond maximum allowed", 400)
            expiry = now + lifetime
        requested_before = [parse_instant(c[7:]) for c in requested if c.startswith("before:")]
        for t in requested_before:
            if t - now > self.max_lifetime:
                raise MacaroonError("before: requested duration beyond maximum allowed", 400)
        if expiry is None and not requested_before:
            expiry = now + self.default_lifetime
        if inherited:
            base = [c for c in inherited if not c.startswith("iid:")]
        else:
            base = [f"id:{uid};{','.join(map(str, gids))};{username}"]
            if home and home != "/":
                base.append(f"home:{home}")
            if root and root != "/":
                base.append(f"root:{root}")
        all_caveats = [f"iid:{secrets.token_urlsafe(6)}", *base]
        if path and path != "/":
            all_caveats.append(f"path:{path}")
        all_caveats += requested
        if expiry is not None:
            all_caveats.append(f"before:{format_instant(expiry)}")
        check_caveats(all_caveats)  # what we hand out must verify
        m = pymacaroons.Macaroon(location=self.location, identifier=secrets.token_urlsafe(6),
                                 key=self.root_key)
        for c in all_caveats:
            m.add_first_party_caveat(c)
        return m.serialize()

    def verify(self, token: str, *, now: dt.datetime | None = None) -> Grant:
        """Check signature, caveat syntax and expiry; path/activity/ip are applied by the door."""
        try:
            m = pymacaroons.Macaroon.deserialize(token)
        except Exception:
            raise MacaroonError("malformed macaroon") from None
        if any(c.third_party() for c in m.caveats):
            raise MacaroonError("third-party caveats are not supported")
        caveats = [c.caveat_id for c in m.caveats]
        v = pymacaroons.Verifier()
        v.satisfy_general(lambda _c: True)  # semantics are checked below, not by predicate
        try:
            v.verify(m, self.root_key)
        except Exception:  # MacaroonException, or whatever else a forged token provokes
            raise MacaroonError("macaroon signature does not verify") from None
        grant = check_caveats(caveats)
        now = now or dt.datetime.now(dt.UTC)
        if grant.before is None:
            raise MacaroonError("macaroon has no expiry")
        if now >= grant.before:
            raise MacaroonError("macaroon has expired")
        return grant
