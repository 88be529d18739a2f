"""Namespace notifications modelled after inotify(7), as dCache's frontend serves them.

The door reports every namespace change here (`Hub.child`, `Hub.self_event`);
the hub hands an event to every *watch* on the object concerned. A watch is
one subscription of one SSE channel; it follows its target by PNFS-ID (so it
survives renames) and is **not recursive**, as in dCache: a watch on a
directory sees its direct children, a watch on a file sees the file.

Event payloads take dCache's four shapes (field order as dCache's JSON):
* child:      {"name": "f.h5", "mask": ["IN_CLOSE_WRITE"]}
* move child: {"name": "d", "cookie": "...", "mask": ["IN_MOVED_FROM", "IN_ISDIR"]}
* self:       {"mask": ["IN_DELETE_SELF"]}  (also file-level events on a watched file)
* management: {"mask": ["IN_IGNORED"]}, {"mask": ["IN_Q_OVERFLOW"]}
Reference: shared/reference/dcache-events-macaroons-cxi.md §2.
"""

from __future__ import annotations

import base64
import dataclasses
import secrets
import threading
from collections.abc import Callable

EVENTS = ("IN_ACCESS", "IN_ATTRIB", "IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE", "IN_CREATE", "IN_DELETE",
          "IN_DELETE_SELF", "IN_MODIFY", "IN_MOVE_SELF", "IN_MOVED_FROM", "IN_MOVED_TO", "IN_OPEN")
MACROS = {"IN_ALL_EVENTS": EVENTS, "IN_CLOSE": ("IN_CLOSE_WRITE", "IN_CLOSE_NOWRITE"),
          "IN_MOVE": ("IN_MOVED_FROM", "IN_MOVED_TO")}
MODIFIERS = ("IN_DONT_FOLLOW", "IN_EXCL_UNLINK", "IN_MASK_ADD", "IN_ONESHOT", "IN_ONLYDIR")
UNSUPPORTED = ("IN_DONT_FOLLOW", "IN_EXCL_UNLINK")   # dCache refuses these too
FLAGS = EVENTS + tuple(MACROS) + MODIFIERS


class SelectorError(ValueError):
    """A selector dCache would refuse with 400; the text is dCache's reason."""


def expand_flags(supplied: list[str] | None) -> frozenset[str]:
    """The event types a selector's `flags` select (all of them when absent)."""
    if supplied is None:
        return frozenset(EVENTS)
    if not isinstance(supplied, list) or not all(isinstance(f, str) for f in supplied):
        raise SelectorError("Bad selector value: 'flags' must be a list of strings")
    unknown = [f for f in supplied if f not in FLAGS]
    if unknown:
        raise SelectorError(f"Bad selector value: unknown flag {unknown[0]!r}")
    unsupported = [f for f in supplied if f in UNSUPPORTED]
    if unsupported:
        raise SelectorError(f"Unsupported flags: [{', '.join(unsupported)}]")
    out: set[str] = set()
    for f in supplied:
        out.update(MACROS.get(f, (f,) if f in EVENTS else ()))
    return frozenset(out)


def payload(event: str, *, name: str | None = None, cookie: str | None = None,
            is_dir: bool = False) -> dict:
    body: dict = {}
    if name is not None:
        body["name"] = name
    if cookie is not None:
        body["cookie"] = cookie
    body["mask"] = [event, "IN_ISDIR"] if is_dir else [event]
    return body


def new_cookie() -> str:
    """A move cookie shared by the IN_MOVED_FROM and IN_MOVED_TO of one rename."""
    return base64.b64encode(secrets.token_bytes(16)).decode().rstrip("=")


IGNORED = {"mask": ["IN_IGNORED"]}


@dataclasses.dataclass(eq=False)
class Watch:
    """One inotify subscription: a channel's interest in one object (by PNFS-ID)."""

    sub_id: str
    pnfsid: str
    ns_path: str                 # where the target is now (kept current across renames)
    is_dir: bool
    selector: dict               # as the client supplied it, returned by GET
    events: frozenset[str]
    oneshot: bool
    deliver: Callable[[Watch, dict], None]   # the channel's sink
    visible: Callable[[str], bool] = lambda _p: True   # the subscriber's path restriction
    closed: bool = False


class Hub:
    """Fans namespace changes out to the watches on the objects they concern."""

    def __init__(self):
        self._lock = threading.RLock()
        self._by_pnfsid: dict[str, list[Watch]] = {}
        self._count = 0
        self.on_close: Callable[[Watch], None] = lambda _w: None

    def __len__(self) -> int:
        return self._count

    @property
    def active(self) -> bool:
        """Any watch at all? (lets the door skip event bookkeeping when nobody listens)"""
        return self._count > 0

    def add(self, watch: Watch) -> None:
        with self._lock:
            self._by_pnfsid.setdefault(watch.pnfsid, []).append(watch)
            self._count += 1

    def remove(self, watch: Watch, *, ignored: bool = True) -> None:
        """Close a watch; like inotify, its last event is IN_IGNORED."""
        with self._lock:
            if watch.closed:
                return
            watch.closed = True
            ws = self._by_pnfsid.get(watch.pnfsid, [])
            if watch in ws:
                ws.remove(watch)
                self._count -= 1
            if not ws:
                self._by_pnfsid.pop(watch.pnfsid, None)
        if ignored:
            watch.deliver(watch, IGNORED)
        self.on_close(watch)

    def _send(self, watches: list[Watch], event: str, body: dict, path: str) -> None:
        for w in watches:
            if w.closed or event not in w.events or not w.visible(path):
                continue
            w.deliver(w, body)
            if w.oneshot:
                self.remove(w)

    def _watches(self, pnfsid: str | None) -> list[Watch]:
        if not pnfsid:
            return []
        with self._lock:
            return list(self._by_pnfsid.get(pnfsid, ()))

    def child(self, parent_pnfsid: str | None, name: str, event: str, *, path: str,
              is_dir: bool = False, cookie: str | None = None) -> None:
        """An event about `name` in a watched directory."""
        ws = self._watches(parent_pnfsid)
        if ws:
            self._send(ws, event, payload(event, name=name, cookie=cookie, is_dir=is_dir), path)

    def self_event(self, pnfsid: str | None, event: str, *, path: str, is_dir: bool = False) -> None:
        """An event about a watched object itself (no name); IN_DELETE_SELF ends its watches."""
        ws = self._watches(pnfsid)
        if not ws:
            return
        self._send(ws, event, payload(event, is_dir=is_dir), path)
        if event == "IN_DELETE_SELF":
            for w in ws:
                self.remove(w)

    def file_event(self, parent_pnfsid: str | None, pnfsid: str | None, name: str, event: str,
                   *, path: str, is_dir: bool = False) -> None:
        """A file-level event: to the parent's watches (with name) and the file's own."""
        self.child(parent_pnfsid, name, event, path=path, is_dir=is_dir)
        self.self_event(pnfsid, event, path=path, is_dir=is_dir)

    def moved(self, old: str, new: str) -> None:
        """Keep watch paths current after a rename of `old` (and everything below it)."""
        prefix = old.rstrip("/") + "/"
        with self._lock:
            for ws in self._by_pnfsid.values():
                for w in ws:
                    if w.ns_path == old:
                        w.ns_path = new
                    elif w.ns_path.startswith(prefix):
                        w.ns_path = new.rstrip("/") + "/" + w.ns_path[len(prefix):]
