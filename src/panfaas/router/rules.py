"""Rules: which events a `files:` entry takes, and the URLs it makes of them.

dynamic-processing semantics (reference §4, checked against its source):
* `path-predicate.matching` must match the whole path (Java `matches()`);
  `ignoring` rejects the path if found anywhere in it (Java `find()`).
* `derived-path`: the first `find()` of `replacing` in the path is replaced by
  `with`, whose `\\1`, `\\2` refer to its groups; the part of the path *before*
  the match is kept and the part after it is dropped (that is what
  dynamic-processing does; patterns usually end in `$`, so nothing follows).
* `with-macaroon.activity` defaults to DOWNLOAD; `lifetime` to the generator's
  `default-lifetime`. `create-path` (MKCOL) only acts together with derived-path.

panfaas extensions live in `event-predicate` (see roles/event_router/README.md).
"""

from __future__ import annotations

import dataclasses
import fnmatch
import ipaddress
import re

from .. import events

# dynamic-processing's filter, which is the default: pool `transfer` writes, not
# P2P, status 0. The SSE equivalent of "a finished upload" is IN_CLOSE_WRITE.
UPLOAD_KINDS = frozenset(("transfer", "inotify"))


class DeriveError(ValueError):
    """derived-path's `replacing` does not occur in the event's path."""


_GROUP_REF = re.compile(r"\\(\d+)")


def expand(template: str, m: re.Match) -> str:
    """`\\N` -> group N of the match (empty if it did not take part); `\\N` beyond
    the pattern's groups stays as written, as in dynamic-processing."""
    def group(g: re.Match) -> str:
        n = int(g.group(1))
        if n > (m.re.groups or 0):
            return g.group(0)
        return m.group(n) or ""
    return _GROUP_REF.sub(group, template)


def template_groups(template: str) -> list[int]:
    return [int(n) for n in _GROUP_REF.findall(template)]


_JAVA_NAMED_GROUP = re.compile(r"\(\?<(?![=!])")
_JAVA_BACKREF = re.compile(r"\\k<(\w+)>")


def compile_java_regex(text: str) -> re.Pattern:
    """A Java regular expression (what dynamic-processing configs are written in) as a
    Python pattern: named groups `(?<n>...)` and `\\k<n>` are translated; the rest of
    the common syntax is the same. Raises re.error with the reason."""
    py = _JAVA_BACKREF.sub(r"(?P=\1)", _JAVA_NAMED_GROUP.sub("(?P<", text))
    if "\\p{" in py or "\\P{" in py:
        raise re.error("Java character classes like \\p{Alpha} are not supported; "
                       "write the class out, e.g. [A-Za-z]")
    return re.compile(py)


@dataclasses.dataclass
class UrlSpec:
    name: str
    activity: str | None = None          # None: a bare URL, no macaroon
    lifetime: str | None = None          # None: url-generator's default-lifetime
    replacing: re.Pattern | None = None
    with_: str | None = None
    create_path: bool = False

    @property
    def needs_network(self) -> bool:
        return self.activity is not None or self.create_path

    def derive(self, path: str) -> str:
        if self.replacing is None:
            return path
        m = self.replacing.search(path)
        if not m:
            raise DeriveError(f"urls.{self.name}.derived-path: '{self.replacing.pattern}' "
                              f"does not occur in {path}")
        return path[:m.start()] + expand(self.with_, m)


def _ip_in(client: str | None, networks: tuple) -> bool:
    if not client:
        return False
    try:
        addr = ipaddress.ip_address(client.strip("[]").split("%", 1)[0])
    except ValueError:
        return False
    if addr.version == 6 and addr.ipv4_mapped:
        addr = addr.ipv4_mapped
    return any(addr in net for net in networks if net.version == addr.version)


@dataclasses.dataclass
class EventPredicate:
    """Which events a rule takes, besides the path. The default is dynamic-processing's."""

    msg_types: frozenset[str] | None = None   # None: the default, a finished upload
    cell_types: frozenset[str] | None = None  # None: any
    is_write: str = "write"                   # transfer/request: write | read | any
    is_p2p: bool | None = False               # transfer: None = any
    status: int | None = 0                    # None = any
    mask: frozenset[str] = frozenset(("IN_CLOSE_WRITE",))  # inotify: any of these
    users: frozenset[str] | None = None
    clients: tuple | None = None              # ip networks
    size_min: int | None = None
    size_max: int | None = None
    storage_classes: frozenset[str] | None = None  # glob patterns

    def __post_init__(self):
        self.default = (self.msg_types is None and self.cell_types is None and self.is_write == "write"
                        and self.is_p2p is False and self.status == 0
                        and self.mask == frozenset(("IN_CLOSE_WRITE",)))
        self.extra = any(x is not None for x in (self.users, self.clients, self.size_min, self.size_max,
                                                 self.storage_classes))

    def _kind_ok(self, ev: events.StorageEvent) -> bool:
        kinds = self.msg_types if self.msg_types is not None else UPLOAD_KINDS
        if ev.kind not in kinds:
            return False
        if self.cell_types is not None:
            if ev.cell_type not in self.cell_types:
                return False
        elif self.msg_types is None and ev.kind == "transfer" and ev.cell_type != "pool":
            return False
        if self.status is not None and ev.status != self.status:
            return False
        if ev.kind in ("transfer", "request") and self.is_write != "any" \
                and ev.is_write != (self.is_write == "write"):
            return False
        if ev.kind == "transfer" and self.is_p2p is not None and ev.is_p2p != self.is_p2p:
            return False
        if ev.kind == "inotify":
            if not self.mask.intersection(ev.mask):
                return False
            if ev.is_dir != ("IN_ISDIR" in self.mask):
                return False
        return True

    def matches(self, ev: events.StorageEvent) -> bool:
        if self.default:
            if not ev.is_upload():
                return False
        elif not self._kind_ok(ev):
            return False
        if not self.extra:
            return True
        if self.users is not None and ev.user not in self.users:
            return False
        if self.clients is not None and not _ip_in(ev.client, self.clients):
            return False
        if self.size_min is not None and (ev.size is None or ev.size < self.size_min):
            return False
        if self.size_max is not None and (ev.size is None or ev.size > self.size_max):
            return False
        if self.storage_classes is not None:
            sc = ev.storage_class
            if sc is None or not any(fnmatch.fnmatchcase(sc, p) for p in self.storage_classes):
                return False
        return True


@dataclasses.dataclass
class Rule:
    index: int
    target: str
    matching: re.Pattern
    ignoring: re.Pattern | None = None
    urls: list[UrlSpec] = dataclasses.field(default_factory=list)
    predicate: EventPredicate = dataclasses.field(default_factory=EventPredicate)

    def __post_init__(self):
        self.needs_network = any(u.needs_network for u in self.urls)

    def matches(self, ev: events.StorageEvent) -> bool:
        if not self.predicate.matches(ev):
            return False
        if not self.matching.fullmatch(ev.path):
            return False
        return not (self.ignoring and self.ignoring.search(ev.path))


def wanted_kinds(rules: list[Rule]) -> frozenset[str]:
    """Every msgType some rule may take: records of other types need no full parse."""
    out: set[str] = set()
    for r in rules:
        out |= r.predicate.msg_types if r.predicate.msg_types is not None else UPLOAD_KINDS
    return frozenset(out)


def matching_rules(rules: list[Rule], ev: events.StorageEvent) -> list[Rule]:
    """Every rule that takes the event: one task each (as dynamic-processing)."""
    return [r for r in rules if r.matches(ev)]
