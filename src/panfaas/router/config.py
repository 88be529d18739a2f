"""The router's configuration: dynamic-processing's YAML as is, plus panfaas extensions.

`load(path)` returns a `RouterConfig` or raises ConfigError with the first
problem; `check(path)` returns every problem, each with the line of the file it
is about, for `panfaas router check-config`. Unknown keys are errors (with a
suggestion), as they are for dynamic-processing's Jackson loader: a misspelt
`ignoring` must not silently match more.

Environment overrides (`PANFAAS_ROUTER__URL_GENERATOR__MACAROONS__PASSWORD=...`)
apply on top of the file, so secrets need not be in it.
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import ipaddress
import os
import re
import urllib.parse
from typing import Any

import yaml

from .. import config as cfg
from .. import macaroons
from .rules import EventPredicate, Rule, UrlSpec, compile_java_regex, template_groups

RESERVED_URL_NAMES = ("event", "task_id")
TOPIC_NAME = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
SSE_FLAGS = ["IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE", "IN_DELETE_SELF", "IN_MOVE_SELF", "IN_MOVE",
             "IN_ATTRIB"]  # what dCache's reference SSE client subscribes to
SELECTOR_FLAGS = frozenset((
    "IN_ACCESS", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE", "IN_CREATE", "IN_DELETE",
    "IN_DELETE_SELF", "IN_MODIFY", "IN_MOVE_SELF", "IN_MOVED_FROM", "IN_MOVED_TO", "IN_OPEN",
    "IN_ALL_EVENTS", "IN_CLOSE", "IN_MOVE", "IN_DONT_FOLLOW", "IN_EXCL_UNLINK", "IN_MASK_ADD",
    "IN_ONESHOT", "IN_ONLYDIR"))
MASK_FLAGS = frozenset(("IN_ACCESS", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE", "IN_CREATE",
                        "IN_DELETE", "IN_DELETE_SELF", "IN_MODIFY", "IN_MOVE_SELF", "IN_MOVED_FROM",
                        "IN_MOVED_TO", "IN_OPEN", "IN_ISDIR"))


class RouterConfigError(cfg.ConfigError):
    pass


@dataclasses.dataclass
class Problem:
    where: tuple            # key path, e.g. ("files", 0, "path-predicate", "matching")
    message: str
    line: int | None = None
    warning: bool = False

    @property
    def dotted(self) -> str:
        out = ""
        for p in self.where:
            out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
        return out

    def format(self, source: str) -> str:
        loc = f"{source}:{self.line}" if self.line else source
        what = f"{self.dotted}: " if self.where else ""
        return f"{loc}: {'warning: ' if self.warning else ''}{what}{self.message}"


@dataclasses.dataclass
class SourceConfig:
    type: str = "kafka"
    topic: str = "billing"
    # sse
    url: str | None = None                 # the frontend's API root, https://host:3880/api/v1
    paths: list[str] = dataclasses.field(default_factory=list)
    client_id: str | None = None
    state_file: str | None = None
    flags: list[str] = dataclasses.field(default_factory=lambda: list(SSE_FLAGS))
    channel_timeout: int = 3600
    username: str | None = None
    password: str | None = None


@dataclasses.dataclass
class RouterConfig:
    client_id: str
    bootstrap: str
    base: str
    rules: list[Rule]
    username: str | None = None
    password: str | None = None
    default_lifetime: str = "PT5M"
    retries: int = 4
    backoff: float = 0.2
    timeout: float = 10.0
    concurrency: int = 16
    tls_verify: bool | str = True
    source: SourceConfig = dataclasses.field(default_factory=SourceConfig)
    dead_letter_topic: str = "dead-letter"
    listen_host: str = "127.0.0.1"
    listen_port: int = 0
    log_level: str = "info"
    path: str | None = None

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys(r.target for r in self.rules))


# -- YAML with line numbers ------------------------------------------------------

def _lines(node: yaml.Node, path: tuple, out: dict) -> None:
    out.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for k, v in node.value:
            key = k.value if isinstance(k, yaml.ScalarNode) else None
            out[path + (key,)] = k.start_mark.line + 1
            _lines(v, path + (key,), out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _lines(item, path + (i,), out)


def read_document(path: str | os.PathLike) -> tuple[Any, dict]:
    """(data, {key path: line}); RouterConfigError for unreadable or invalid YAML."""
    data, node = cfg.read_yaml(path, RouterConfigError)
    lines: dict = {}
    if node is not None:
        _lines(node, (), lines)
    return data, lines


# -- validation -----------------------------------------------------------------

class _Checker:
    def __init__(self, lines: dict):
        self.lines = lines
        self.problems: list[Problem] = []

    def line(self, where: tuple) -> int | None:
        for n in range(len(where), -1, -1):
            if where[:n] in self.lines:
                return self.lines[where[:n]]
        return None

    def error(self, where: tuple, message: str) -> None:
        self.problems.append(Problem(where, message, self.line(where)))

    def warn(self, where: tuple, message: str) -> None:
        self.problems.append(Problem(where, message, self.line(where), warning=True))

    def mapping(self, value: Any, where: tuple, known: tuple | None = None, required: bool = False) -> dict:
        if value is None:
            if required:
                self.error(where, "required")
            return {}
        if not isinstance(value, dict):
            self.error(where, f"must be a mapping, got {_kind(value)}")
            return {}
        if known is not None:
            for key in value:
                if key not in known:
                    hint = difflib.get_close_matches(str(key), known, n=1)
                    self.error(where + (key,), "unknown setting"
                               + (f" (did you mean '{hint[0]}'?)" if hint else
                                  f"; expected one of: {', '.join(known)}"))
        return value

    def string(self, value: Any, where: tuple, required: bool = False, empty_ok: bool = False) -> str | None:
        if value is None:
            if required:
                self.error(where, "required")
            return None
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            self.error(where, f"must be a string, got {_kind(value)}")
            return None
        value = str(value)
        if not value.strip() and not empty_ok:
            self.error(where, "must not be empty")
            return None
        return value

    def number(self, value: Any, where: tuple, default, kind=int, minimum=0):
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, (int, float)) or (kind is int and value != int(value)):
            self.error(where, f"must be {'an integer' if kind is int else 'a number'}, got {_kind(value)}")
            return default
        if value < minimum:
            self.error(where, f"must be at least {minimum}")
            return default
        return kind(value)

    def regex(self, value: Any, where: tuple, required: bool = False) -> re.Pattern | None:
        text = self.string(value, where, required)
        if text is None:
            return None
        try:
            return compile_java_regex(text)
        except re.error as e:
            self.error(where, f"invalid regular expression {text!r}: {e}")
            return None

    def duration(self, value: Any, where: tuple) -> str | None:
        text = self.string(value, where)
        if text is None:
            return None
        try:
            macaroons.parse_duration(text)
        except ValueError:
            self.error(where, f"not an ISO-8601 duration: {text!r} (e.g. PT15M, PT1H, P1D)")
            return None
        return text

    def strings(self, value: Any, where: tuple) -> list[str] | None:
        """A string or a list of strings."""
        if value is None:
            return None
        items = value if isinstance(value, list) else [value]
        out = []
        for i, item in enumerate(items):
            s = self.string(item, where + ((i,) if isinstance(value, list) else ()))
            if s is not None:
                out.append(s)
        if not items:
            self.error(where, "must name at least one value")
        return out


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing"}.get(type(value), type(value).__name__)


_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kKMGTP]?)(i?)[bB]?\s*$")


def parse_size(value: Any) -> int:
    """1048576, '1 MiB', '10MB', '2G' -> bytes (SI for kB/MB, binary for KiB/MiB and bare K/M/G)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = _SIZE.match(str(value)) if isinstance(value, str) else None
    if not m:
        raise ValueError(f"not a size: {value!r} (e.g. 1048576, '1 MiB', '10 MB')")
    number, unit, binary = float(m.group(1)), m.group(2).upper(), m.group(3)
    power = " KMGTP".index(unit) if unit else 0
    base = 1024 if (binary or (unit and not str(value).strip().upper().endswith("B"))) else 1000
    return int(number * base ** power)


def _predicate(c: _Checker, value: Any, where: tuple) -> EventPredicate:
    known = ("msgType", "cellType", "isWrite", "isP2p", "status", "mask", "user", "client",
             "file-size", "storage-class")
    pred = c.mapping(value, where, known)

    def names(key: str) -> frozenset[str] | None:
        """A string or list of strings; None (the predicate's default: any) when absent."""
        values = c.strings(pred[key], where + (key,)) if key in pred else None
        return frozenset(values) if values is not None else None

    kw: dict = {"msg_types": names("msgType"), "cell_types": names("cellType")}
    if "isWrite" in pred:
        iw = pred["isWrite"]
        if iw not in ("write", "read", "any"):
            c.error(where + ("isWrite",), f"must be write, read or any (dCache's strings), got {iw!r}")
        else:
            kw["is_write"] = iw
    if "isP2p" in pred:
        p2p = pred["isP2p"]
        if p2p not in (True, False, "any"):
            c.error(where + ("isP2p",), f"must be true, false or any, got {p2p!r}")
        else:
            kw["is_p2p"] = None if p2p == "any" else p2p
    if "status" in pred:
        st = pred["status"]
        if st == "any":
            kw["status"] = None
        elif isinstance(st, int) and not isinstance(st, bool):
            kw["status"] = st
        else:
            c.error(where + ("status",), f"must be an integer status code or any, got {st!r}")
    if "mask" in pred:
        flags = c.strings(pred["mask"], where + ("mask",)) or []
        bad = [f for f in flags if f not in MASK_FLAGS]
        if bad:
            c.error(where + ("mask",), f"unknown inotify flag(s) {', '.join(bad)}; expected some of: "
                    + ", ".join(sorted(MASK_FLAGS)))
        elif flags:
            kw["mask"] = frozenset(flags)
    kw["users"] = names("user")
    if "client" in pred:
        nets = []
        for i, text in enumerate(c.strings(pred["client"], where + ("client",)) or []):
            try:
                nets.append(ipaddress.ip_network(text, strict=False))
            except ValueError:
                w = where + ("client",) + ((i,) if isinstance(pred["client"], list) else ())
                c.error(w, f"not an IP address or CIDR network: {text!r}")
        kw["clients"] = tuple(nets)
    if "file-size" in pred:
        fw = where + ("file-size",)
        rng = c.mapping(pred["file-size"], fw, ("min", "max"))
        for key in ("min", "max"):
            if key in rng:
                try:
                    kw[f"size_{key}"] = parse_size(rng[key])
                except ValueError as e:
                    c.error(fw + (key,), str(e))
        if kw.get("size_min") is not None and kw.get("size_max") is not None and kw["size_min"] > kw["size_max"]:
            c.error(fw, f"min ({kw['size_min']}) is larger than max ({kw['size_max']})")
        if rng and not {"min", "max"} & set(rng):
            c.error(fw, "needs min and/or max")
    kw["storage_classes"] = names("storage-class")
    return EventPredicate(**kw)


def _url(c: _Checker, name: Any, value: Any, where: tuple) -> UrlSpec | None:
    if not isinstance(name, str) or not name:
        c.error(where, "URL names must be strings")
        return None
    if name in RESERVED_URL_NAMES:
        c.error(where, f"'{name}' is reserved: the task carries the event and its task_id under these names")
        return None
    spec = c.mapping(value, where, ("with-macaroon", "derived-path", "create-path"))
    u = UrlSpec(name=name)
    if "with-macaroon" in spec:
        ww = where + ("with-macaroon",)
        wm = c.mapping(spec["with-macaroon"], ww, ("activity", "lifetime"))
        activity = c.string(wm.get("activity"), ww + ("activity",)) or "DOWNLOAD"
        bad = [a for a in activity.split(",") if a.strip() not in macaroons.ACTIVITIES]
        if bad:
            c.error(ww + ("activity",), f"unknown activity {', '.join(bad)}; dCache knows "
                    + ", ".join(macaroons.ACTIVITIES) + " (a comma list is allowed)")
        u.activity = ",".join(a.strip() for a in activity.split(","))
        u.lifetime = c.duration(wm.get("lifetime"), ww + ("lifetime",))
    if "derived-path" in spec:
        dw = where + ("derived-path",)
        dp = c.mapping(spec["derived-path"], dw, ("replacing", "with"))
        if dp and ("replacing" not in dp or "with" not in dp):
            c.error(dw, "needs both 'replacing' (a regular expression) and 'with' (its replacement)")
        elif dp:
            u.replacing = c.regex(dp["replacing"], dw + ("replacing",), required=True)
            u.with_ = c.string(dp["with"], dw + ("with",), required=True, empty_ok=True)
            if u.replacing is not None and u.with_ is not None:
                too_big = [n for n in template_groups(u.with_) if n > u.replacing.groups]
                if too_big:
                    c.warn(dw + ("with",), f"refers to group \\{too_big[0]} but 'replacing' has only "
                           f"{u.replacing.groups}: it stays in the path as written")
    if "create-path" in spec:
        cp = spec["create-path"]
        if not isinstance(cp, bool):
            c.error(where + ("create-path",), f"must be true or false, got {_kind(cp)}")
        elif cp and u.replacing is None:
            c.warn(where + ("create-path",), "has no effect without derived-path (as in dynamic-processing)")
        else:
            u.create_path = cp
    return u


def _rule(c: _Checker, index: int, value: Any) -> Rule | None:
    where = ("files", index)
    f = c.mapping(value, where, ("target", "path-predicate", "urls", "event-predicate"))
    if not isinstance(value, dict):
        return None
    target = c.string(f.get("target"), where + ("target",), required=True)
    if target and not TOPIC_NAME.match(target):
        c.error(where + ("target",), f"{target!r} is not a valid Kafka topic name "
                "(letters, digits, '.', '_', '-'; at most 249)")
    pw = where + ("path-predicate",)
    pred = c.mapping(f.get("path-predicate"), pw, ("matching", "ignoring"), required=True)
    matching = c.regex(pred.get("matching"), pw + ("matching",), required=bool(pred))
    ignoring = c.regex(pred.get("ignoring"), pw + ("ignoring",)) if pred.get("ignoring") is not None else None
    urls = []
    uw = where + ("urls",)
    for name, spec in c.mapping(f.get("urls"), uw).items():
        u = _url(c, name, spec, uw + (name,))
        if u:
            urls.append(u)
    if isinstance(f.get("urls"), dict) and not f["urls"]:
        c.warn(uw, "no URLs: the tasks carry only the event")
    predicate = _predicate(c, f.get("event-predicate"), where + ("event-predicate",))
    if target is None or matching is None:
        return None
    return Rule(index, target, matching, ignoring, urls, predicate)


def _rules(c: _Checker, files: Any) -> list[Rule]:
    rules: list[Rule] = []
    if not isinstance(files, list) or not files:
        c.error(("files",), "at least one rule is required" if files in (None, []) else
                f"must be a list of rules, got {_kind(files)}")
        return rules
    for i, f in enumerate(files):
        r = _rule(c, i, f)
        if r:
            rules.append(r)
    return rules


def parse_rules(conf: dict) -> list[Rule]:
    """The rules of a configuration's `files:` alone (for tools and tests; the rest of the
    configuration is not looked at). RouterConfigError with the first problem."""
    c = _Checker({})
    rules = _rules(c, conf.get("files") if isinstance(conf, dict) else None)
    errors = [p for p in c.problems if not p.warning]
    if errors:
        raise RouterConfigError(errors[0].format("rules"))
    return rules


def _absolute_url(c: _Checker, value: Any, where: tuple, required: bool = True) -> str | None:
    text = c.string(value, where, required)
    if text is None:
        return None
    parts = urllib.parse.urlsplit(text)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        c.error(where, f"must be an absolute http(s) URL, got {text!r}")
        return None
    return text


TOP_KEYS = ("kafka-client", "url-generator", "files", "source", "dead-letter-topic", "listen", "log-level")


def validate(data: Any, lines: dict | None = None, path: str | None = None) -> tuple[RouterConfig | None, list]:
    """(config or None, problems). The config is None when there is an error."""
    c = _Checker(lines or {})
    top = c.mapping(data, (), TOP_KEYS, required=True)

    kc = c.mapping(top.get("kafka-client"), ("kafka-client",), ("id", "bootstrap-servers"), required=True)
    client_id = c.string(kc.get("id"), ("kafka-client", "id"), required=bool(kc)) or ""
    bootstrap = c.string(kc.get("bootstrap-servers"), ("kafka-client", "bootstrap-servers"),
                         required=bool(kc)) or ""

    gw = ("url-generator",)
    ug = c.mapping(top.get("url-generator"), gw, ("base", "macaroons", "retries", "backoff", "timeout",
                                                   "concurrency", "tls-verify"), required=True)
    base = _absolute_url(c, ug.get("base"), gw + ("base",), required=bool(ug))
    mac = c.mapping(ug.get("macaroons"), gw + ("macaroons",), ("username", "password", "default-lifetime"))
    username = c.string(mac.get("username"), gw + ("macaroons", "username"))
    password = c.string(mac.get("password"), gw + ("macaroons", "password"), empty_ok=True)
    default_lifetime = c.duration(mac.get("default-lifetime"), gw + ("macaroons", "default-lifetime")) or "PT5M"
    tls = ug.get("tls-verify", True)
    if not isinstance(tls, (bool, str)):
        c.error(gw + ("tls-verify",), "must be true, false or the path of a CA bundle")
        tls = True

    rules = _rules(c, top.get("files"))
    macaroon_urls = [(r.index, u.name) for r in rules for u in r.urls if u.activity or u.create_path]
    if macaroon_urls and not username:
        i, name = macaroon_urls[0]
        c.error(gw + ("macaroons", "username"), f"required: files[{i}].urls.{name} needs a macaroon or MKCOL, "
                "which the router requests with this account (basic auth)")

    sw = ("source",)
    src_in = c.mapping(top.get("source"), sw, ("type", "topic", "url", "paths", "client-id", "state-file",
                                               "flags", "channel-timeout", "username", "password"))
    src = SourceConfig(type=src_in.get("type", "kafka"))
    if src.type not in ("kafka", "sse"):
        c.error(sw + ("type",), f"must be kafka (the billing topic) or sse (dCache's inotify events), "
                f"got {src.type!r}")
    src.topic = c.string(src_in.get("topic"), sw + ("topic",)) or "billing"
    if src.type == "sse":
        src.url = _absolute_url(c, src_in.get("url"), sw + ("url",))
        paths = c.strings(src_in.get("paths"), sw + ("paths",)) or []
        if not paths:
            c.error(sw + ("paths",), "required: the directories to watch (recursively), e.g. [/data]")
        for i, p in enumerate(paths):
            if not re.match(r"^/(.*[^/])?$", p):
                c.error(sw + ("paths", i), f"must be an absolute path without a trailing '/': {p!r}")
        src.paths = paths
        src.client_id = c.string(src_in.get("client-id"), sw + ("client-id",)) or client_id
        src.state_file = c.string(src_in.get("state-file"), sw + ("state-file",))
        if not src.state_file:
            c.error(sw + ("state-file",), "required for sse: where the channel and Last-Event-ID are kept "
                    "so that a restart resumes without losing events")
        flags = c.strings(src_in.get("flags"), sw + ("flags",))
        if flags is not None:
            bad = [f for f in flags if f not in SELECTOR_FLAGS]
            if bad:
                c.error(sw + ("flags",), f"unknown inotify flag(s): {', '.join(bad)}")
            src.flags = flags
        src.channel_timeout = c.number(src_in.get("channel-timeout"), sw + ("channel-timeout",), 3600, int, 1)
        src.username = c.string(src_in.get("username"), sw + ("username",)) or username
        src.password = c.string(src_in.get("password"), sw + ("password",), empty_ok=True) or password
    elif any(k in src_in for k in ("url", "paths", "state-file", "flags", "channel-timeout")):
        c.warn(sw, "sse settings are ignored with type: kafka")

    dead = c.string(top.get("dead-letter-topic", "dead-letter"), ("dead-letter-topic",)) or "dead-letter"
    if not TOPIC_NAME.match(dead):
        c.error(("dead-letter-topic",), f"{dead!r} is not a valid Kafka topic name")
    if dead in {r.target for r in rules}:
        c.error(("dead-letter-topic",), f"'{dead}' is also a rule's target")
    lw = ("listen",)
    listen = c.mapping(top.get("listen"), lw, ("host", "port"))
    port = c.number(listen.get("port"), lw + ("port",), 0, int, 0)
    if port > 65535:
        c.error(lw + ("port",), "must be a TCP port (0 disables /healthz and /metrics)")
    level = str(top.get("log-level", "info")).lower()
    if level not in ("debug", "info", "warning", "error"):
        c.error(("log-level",), f"must be debug, info, warning or error, got {level!r}")
        level = "info"

    conf = RouterConfig(
        client_id=client_id, bootstrap=bootstrap, base=base or "", rules=rules, username=username,
        password=password, default_lifetime=default_lifetime,
        retries=c.number(ug.get("retries"), gw + ("retries",), 4, int, 0),
        backoff=c.number(ug.get("backoff"), gw + ("backoff",), 0.2, float, 0),
        timeout=c.number(ug.get("timeout"), gw + ("timeout",), 10.0, float, 0.001),
        concurrency=c.number(ug.get("concurrency"), gw + ("concurrency",), 16, int, 1),
        tls_verify=tls, source=src, dead_letter_topic=dead,
        listen_host=c.string(listen.get("host"), lw + ("host",)) or "127.0.0.1", listen_port=port,
        log_level=level, path=path)
    errors = [p for p in c.problems if not p.warning]
    return (None if errors else conf), c.problems


def _with_env(data: Any) -> Any:
    overrides = cfg.env_overrides("router")
    if not overrides:
        return data
    return cfg.deep_merge(data if isinstance(data, dict) else {}, overrides)


def check(path: str | os.PathLike) -> tuple[RouterConfig | None, list[str]]:
    """(config or None, every problem as 'FILE:LINE: setting: message')."""
    try:
        data, lines = read_document(path)
    except cfg.ConfigError as e:
        return None, [str(e)]
    conf, problems = validate(_with_env(copy.deepcopy(data)), lines, str(path))
    problems.sort(key=lambda p: p.line or 0)
    return conf, [p.format(str(path)) for p in problems]


def load(path: str | os.PathLike) -> RouterConfig:
    """The configuration, or RouterConfigError with the first error (and how many more)."""
    data, lines = read_document(path)
    conf, problems = validate(_with_env(data), lines, str(path))
    errors = sorted((p for p in problems if not p.warning), key=lambda p: p.line or 0)
    if errors:
        more = f" (and {len(errors) - 1} more: run 'panfaas router check-config {path}')" if len(errors) > 1 else ""
        raise RouterConfigError(errors[0].format(str(path)) + more)
    return conf


def from_dict(data: dict) -> RouterConfig:
    """For tests and tools: validate a dict (no file, no environment)."""
    conf, problems = validate(copy.deepcopy(data))
    errors = [p for p in problems if not p.warning]
    if errors:
        raise RouterConfigError(errors[0].format("config"))
    return conf
