"""dCache storage events over SSE (the frontend's inotify channels) as a router source.

Protocol (reference §2; dCache's frontend.md "Storage Events" and the reference
client paulmillar/dcache-sse):
* `POST {api}/events/channels` -> 201, the channel URL in `Location`;
  `PATCH` it with `{"timeout": s}` so that it outlives a router restart.
* `POST {channel}/subscriptions/inotify` with `{"path", "flags"}` -> 201, the
  subscription URL in `Location`. Watches are not recursive: every directory
  under the watched paths is listed (`GET {api}/namespace{path}?children=true`)
  and watched, and so is every new one (IN_CREATE or IN_MOVED_TO with IN_ISDIR).
* `GET {channel}` with `Accept: text/event-stream` (and `Last-Event-ID`) is the
  stream: `event: inotify`, `id: N`, `data: {"event": {...}, "subscription": url}`,
  and SYSTEM events (no id) such as EVENT_LOSS.

What this source does about failures:
* The last event id whose tasks were all acknowledged is kept on disk (with the
  channel and its watches): after a restart the stream resumes there.
* A channel that is gone (404: it outlived its timeout) is re-created with its
  watches, and the tree is resynchronised.
* EVENT_LOSS (the resume point left dCache's ring buffer) and IN_Q_OVERFLOW
  resynchronise: directories are listed again, missing watches added, and every
  file modified since the last committed event is reported as if just written
  (IN_CLOSE_WRITE): duplicates are possible, losses are not (their task_id is the
  same as the original's when the file did not change since).
* Two readers of one channel steal it from each other (COMPETING_CLIENT): run
  the SSE source as a single replica; it backs off before taking it back.

A file written in a directory before that directory's watch is in place (it is
added when IN_CREATE arrives) is not reported until the next resynchronisation:
dCache's protocol has no recursive watch. The Kafka source has no such gap.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import random
import time
import urllib.parse
from pathlib import Path

import aiohttp

from .. import events
from .urls import basic_auth, ssl_setting

log = logging.getLogger("panfaas.router.sse")

RESYNC_MARGIN = 60.0        # seconds of clock skew tolerated between dCache and the router
QUEUE_SIZE = 10_000


class ChannelGone(Exception):
    """The channel answered 404: it was deleted (timeout) or never existed."""


class SseError(Exception):
    pass


@dataclasses.dataclass
class SseMessage:
    type: str            # the `event:` field; "message" when absent
    data: str
    id: str | None       # the `id:` field of this message, if it had one


class SseParser:
    """Incremental text/event-stream parser (WHATWG HTML, "server-sent events")."""

    def __init__(self):
        self._type = ""
        self._data: list[str] = []
        self._id: str | None = None
        self._saw_id = False

    def feed(self, line: str) -> SseMessage | None:
        """One line without its end of line; returns a message when a blank line completes one."""
        if line == "":
            msg = None
            if self._data:
                msg = SseMessage(self._type or "message", "\n".join(self._data), self._id if self._saw_id else None)
            self._type, self._data, self._saw_id = "", [], False
            return msg
        if line.startswith(":"):
            return None  # a comment (keep-alive)
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            self._type = value
        elif field == "data":
            self._data.append(value)
        elif field == "id" and "\0" not in value:
            self._id, self._saw_id = value, True
        return None


@dataclasses.dataclass
class SseRecord:
    """One source record: a parsed event, or the reason it could not be parsed."""

    data: str
    event: events.StorageEvent | None = None
    error: str | None = None
    id: str | None = None
    received: float = 0.0
    resync: str | None = None


class SseSource:
    kind = "sse"

    def __init__(self, conf):
        src = conf.source
        self.conf = conf
        self.api = src.url.rstrip("/")
        self.paths = [p.rstrip("/") or "/" for p in src.paths]
        self.flags = src.flags
        self.client_id = src.client_id or conf.client_id
        self.channel_timeout = src.channel_timeout
        self.state_path = Path(src.state_file)
        self.headers = {"Authorization": basic_auth(src.username, src.password)} if src.username else {}
        self.tls = conf.tls_verify
        self.session: aiohttp.ClientSession | None = None
        self.channel: str | None = None
        self.watches: dict[str, str] = {}     # subscription URL -> watched directory
        self.committed_id: str | None = None  # every task up to here is acknowledged
        self.received_id: str | None = None   # the stream resumes here after a reconnect
        self.synced_at: float | None = None   # receive time of the last committed event
        self.queue: asyncio.Queue = asyncio.Queue(QUEUE_SIZE)
        self.reader: asyncio.Task | None = None
        self.stopping: asyncio.Event | None = None
        self.status = "starting"
        self.backoff = 1.0

    # -- state on disk ---------------------------------------------------------
    def load_state(self) -> None:
        try:
            doc = json.loads(self.state_path.read_text())
        except FileNotFoundError:
            return
        except (OSError, ValueError) as e:
            log.warning("SSE state unreadable, starting afresh", extra={"fields": {"file": str(self.state_path),
                                                                               "error": repr(e)}})
            return
        self.channel = doc.get("channel")
        self.committed_id = self.received_id = doc.get("last_id")
        self.watches = dict(doc.get("watches") or {})
        self.synced_at = doc.get("synced_at")

    def save_state(self) -> None:
        doc = {"channel": self.channel, "last_id": self.committed_id, "synced_at": self.synced_at,
               "watches": self.watches, "client_id": self.client_id}
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(self.state_path.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, self.state_path)

    # -- HTTP ------------------------------------------------------------------
    async def _open(self) -> None:
        if self.session is None:
            self.session = aiohttp.ClientSession(headers=self.headers,
                                                 connector=aiohttp.TCPConnector(ssl=ssl_setting(self.tls)))

    async def _call(self, method: str, url: str, *, json_body=None, ok=(200, 201, 204)) -> aiohttp.ClientResponse:
        async with self.session.request(method, url, json=json_body, headers={"Accept": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=30), allow_redirects=False) as r:
            await r.read()
            if r.status == 404 and url.startswith(self.channel or "\0"):
                raise ChannelGone(f"{method} {url}: 404")
            if r.status not in ok:
                raise SseError(f"{method} {url}: HTTP {r.status}: {(await r.text())[:200]}")
            return r

    def namespace_url(self, path: str) -> str:
        return f"{self.api}/namespace{urllib.parse.quote(path)}"

    async def list_dir(self, path: str) -> list[dict]:
        async with self.session.get(self.namespace_url(path) + "?children=true",
                                    headers={"Accept": "application/json"},
                                    timeout=aiohttp.ClientTimeout(total=60)) as r:
            if r.status == 404:
                return []
            if r.status != 200:
                raise SseError(f"listing {path}: HTTP {r.status}")
            doc = await r.json(content_type=None)
        children = doc.get("children") if isinstance(doc, dict) else None
        return [c for c in children or [] if isinstance(c, dict) and isinstance(c.get("fileName"), str)]

    async def stat(self, path: str) -> dict | None:
        try:
            async with self.session.get(self.namespace_url(path), headers={"Accept": "application/json"},
                                        timeout=aiohttp.ClientTimeout(total=30)) as r:
                if r.status != 200:
                    return None
                doc = await r.json(content_type=None)
                return doc if isinstance(doc, dict) else None
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None

    async def create_channel(self) -> None:
        r = await self._call("POST", f"{self.api}/events/channels", json_body={"client-id": self.client_id},
                             ok=(201,))
        location = r.headers.get("Location")
        if not location:
            raise SseError("channel created without a Location header")
        self.channel = urllib.parse.urljoin(f"{self.api}/events/channels", location)
        self.watches = {}
        self.received_id = self.committed_id = None
        try:  # keep the channel (and its backlog) through a restart of the router
            await self._call("PATCH", self.channel, json_body={"timeout": self.channel_timeout})
        except SseError as e:
            log.warning("could not set the channel timeout", extra={"fields": {"error": str(e)}})
        log.info("SSE channel created", extra={"fields": {"channel": self.channel}})
        for root in self.paths:
            await self.watch_tree(root)
        self.save_state()

    async def watch(self, path: str) -> bool:
        if path in self.watches.values():
            return True
        try:
            # 201: a new subscription; 303: merged into the channel's watch of the same directory
            r = await self._call("POST", f"{self.channel}/subscriptions/inotify",
                                 json_body={"path": path, "flags": self.flags}, ok=(201, 303))
        except SseError as e:  # e.g. 400: the directory went away meanwhile
            log.warning("watch refused", extra={"fields": {"path": path, "error": str(e)}})
            return False
        sub = r.headers.get("Location")
        if sub:
            self.watches[urllib.parse.urljoin(self.channel + "/", sub)] = path
        return True

    async def watch_tree(self, path: str) -> list[dict]:
        """Watch `path` and every directory below it; returns the regular files found."""
        files, todo = [], [path]
        while todo:
            d = todo.pop()
            if not await self.watch(d):
                continue
            for child in await self.list_dir(d):
                child_path = d.rstrip("/") + "/" + child["fileName"]
                if child.get("fileType") == "DIR":
                    todo.append(child_path)
                else:
                    files.append({**child, "path": child_path})
        return files

    async def unwatch_under(self, path: str) -> None:
        prefix = path.rstrip("/") + "/"
        for sub, watched in list(self.watches.items()):
            if watched == path or watched.startswith(prefix):
                self.watches.pop(sub, None)
                try:
                    await self._call("DELETE", sub, ok=(200, 204, 404))
                except (SseError, ChannelGone, aiohttp.ClientError):
                    pass

    # -- resynchronisation -----------------------------------------------------
    async def resync(self, reason: str) -> None:
        """List the tree again, add missing watches, report files changed since the last commit."""
        since = self.synced_at
        log.warning("SSE resync", extra={"fields": {"reason": reason, "since": since}})
        files = []
        for root in self.paths:
            files += await self.watch_tree(root)
        self.save_state()
        if since is None:
            return  # nothing was ever committed: there is no "since"
        threshold = (since - RESYNC_MARGIN) * 1000
        now = time.time()
        for f in files:
            mtime = f.get("mtime")
            if not isinstance(mtime, (int, float)):
                attrs = await self.stat(f["path"])
                mtime = (attrs or {}).get("mtime")
                f = {**f, **(attrs or {})}
            if isinstance(mtime, (int, float)) and mtime >= threshold:
                directory, name = f["path"].rsplit("/", 1)
                ev = events.parse_inotify({"name": name, "mask": ["IN_CLOSE_WRITE"]}, directory=directory or "/",
                                          attributes=f, received=now)
                await self.queue.put(SseRecord(json.dumps({"resync": reason, "path": f["path"]}), ev,
                                               received=now, resync=reason))

    # -- the stream ------------------------------------------------------------
    async def start(self, stopping: asyncio.Event) -> bool:
        self.stopping = stopping
        await self._open()
        self.load_state()
        while not stopping.is_set():
            try:
                await self._ensure_channel()
                break
            except (SseError, aiohttp.ClientError, TimeoutError) as e:
                self.status = f"cannot set up the SSE channel at {self.api}: {e}"
                log.warning("SSE source not ready", extra={"fields": {"reason": self.status}})
                await self._sleep(self._next_backoff())
        if stopping.is_set():
            return False
        self.reader = asyncio.create_task(self._read_loop(), name="sse-reader")
        self.status = "ok"
        return True

    async def _ensure_channel(self) -> None:
        if self.channel:
            try:
                await self._call("GET", self.channel)
                return
            except ChannelGone:
                log.warning("SSE channel gone; creating a new one", extra={"fields": {"channel": self.channel}})
        had_state = self.synced_at is not None
        await self.create_channel()
        if had_state:
            await self.resync("channel re-created")

    def _next_backoff(self) -> float:
        delay = self.backoff * (0.75 + random.random() / 2)
        self.backoff = min(self.backoff * 2, 30.0)
        return delay

    async def _sleep(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self.stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _read_loop(self) -> None:
        while not self.stopping.is_set():
            pause = 0.0
            try:
                headers = {"Accept": "text/event-stream"}
                if self.received_id:
                    headers["Last-Event-ID"] = self.received_id
                async with self.session.get(self.channel, headers=headers, timeout=aiohttp.ClientTimeout(
                        total=None, sock_connect=30, sock_read=None)) as r:
                    if r.status == 404:
                        raise ChannelGone(f"GET {self.channel}: 404")
                    if r.status != 200:
                        raise SseError(f"stream: HTTP {r.status}")
                    self.status, self.backoff = "ok", 1.0
                    parser = SseParser()
                    async for raw in r.content:
                        msg = parser.feed(raw.decode("utf-8", "replace").rstrip("\r\n"))
                        if msg:
                            pause = max(pause, await self.dispatch(msg))
                self.status = "stream ended; reconnecting"
            except ChannelGone:
                self.status = "channel gone; re-creating"
                try:
                    self.channel = None
                    await self._ensure_channel()
                    continue
                except (SseError, aiohttp.ClientError, TimeoutError) as e:
                    self.status = f"cannot re-create the channel: {e}"
            except asyncio.CancelledError:
                raise
            except (SseError, aiohttp.ClientError, TimeoutError, ConnectionError) as e:
                self.status = f"stream interrupted: {e}"
                log.warning("SSE stream interrupted", extra={"fields": {"error": str(e)}})
            await self._sleep(max(pause, self._next_backoff()))

    async def dispatch(self, msg: SseMessage) -> float:
        """Handle one SSE message; returns how long to wait before reconnecting (COMPETING_CLIENT)."""
        now = time.time()
        if msg.type == "SYSTEM":
            return await self._system(msg.data)
        if msg.id is not None:
            self.received_id = msg.id
        if msg.type != "inotify":
            return 0.0  # e.g. metronome
        rec = SseRecord(msg.data, id=msg.id, received=now)
        try:
            envelope = json.loads(msg.data)
            if not isinstance(envelope, dict):
                raise events.EventError("SSE data must be a JSON object")
            sub = envelope.get("subscription")
            directory = self.watches.get(sub)
            if directory is None:
                raise events.EventError(f"event for a subscription this router does not know: {sub!r}")
            event = envelope.get("event")
            mask = events.inotify_mask(event)
        except (ValueError, events.EventError) as e:
            rec.error = str(e) if isinstance(e, events.EventError) else f"not JSON: {e}"
            await self.queue.put(rec)
            return 0.0
        if set(mask) & events.MANAGEMENT_FLAGS:
            if "IN_Q_OVERFLOW" in mask:
                await self.resync("IN_Q_OVERFLOW")
            else:  # IN_IGNORED / IN_UNMOUNT: the watch is gone
                self.watches.pop(sub, None)
            return 0.0
        name = event.get("name")
        path = directory.rstrip("/") + "/" + name if isinstance(name, str) else directory
        is_dir = "IN_ISDIR" in mask
        if is_dir and name is not None:
            if {"IN_CREATE", "IN_MOVED_TO"} & set(mask):
                await self.watch_tree(path)
                self.save_state()
            elif {"IN_MOVED_FROM", "IN_DELETE"} & set(mask):
                await self.unwatch_under(path)
                self.save_state()
        elif name is None and {"IN_DELETE_SELF", "IN_MOVE_SELF"} & set(mask):
            self.watches.pop(sub, None)
        attrs = None
        if not is_dir and name is not None and {"IN_CLOSE_WRITE", "IN_MOVED_TO", "IN_ATTRIB"} & set(mask):
            attrs = await self.stat(path)
        try:
            rec.event = events.parse_inotify(event, directory=directory, attributes=attrs, received=now)
        except events.EventError as e:
            rec.error = str(e)
        await self.queue.put(rec)
        return 0.0

    async def _system(self, data: str) -> float:
        try:
            doc = json.loads(data)
        except ValueError:
            log.warning("SSE SYSTEM event is not JSON", extra={"fields": {"data": data[:200]}})
            return 0.0
        kind = doc.get("type") if isinstance(doc, dict) else None
        if kind == "EVENT_LOSS":
            await self.resync("EVENT_LOSS")
        elif kind == "SUBSCRIPTION_CLOSED":
            self.watches.pop(doc.get("subscription"), None)
        elif kind == "COMPETING_CLIENT":
            log.error("another client took this SSE channel over: run a single router per channel "
                      "(source.client-id)", extra={"fields": {"channel": self.channel}})
            return 30.0
        elif kind == "SHUTDOWN":
            log.warning("dCache frontend shutting down; reconnecting", extra={"fields": {"channel": self.channel}})
            return 5.0
        return 0.0

    # -- the router's side -----------------------------------------------------
    async def get(self, timeout_ms: int = 200, max_records: int = 500) -> list[list]:
        try:
            first = await asyncio.wait_for(self.queue.get(), timeout_ms / 1000)
        except TimeoutError:
            return []
        records = [first]
        while len(records) < max_records and not self.queue.empty():
            records.append(self.queue.get_nowait())
        return [records]

    def token(self, records: list) -> tuple:
        ids = [r.id for r in records if r.id is not None]
        return (self.channel, ids[-1] if ids else None, max(r.received for r in records))

    @staticmethod
    def parse(rec: SseRecord, kinds: frozenset | None = None) -> events.StorageEvent:
        if rec.event is None:
            raise events.EventError(rec.error or "unusable SSE event")
        return rec.event

    def origin(self, rec: SseRecord) -> dict:
        doc = {"channel": self.channel, "event_id": rec.id}
        if rec.resync:
            doc["resync"] = rec.resync
        return doc

    @staticmethod
    def value(rec: SseRecord) -> str:
        return rec.data

    async def commit(self, token) -> None:
        channel, last_id, received = token
        if last_id is not None and channel == self.channel:  # ids of a replaced channel mean nothing
            self.committed_id = last_id
        self.synced_at = max(self.synced_at or 0.0, received)
        self.save_state()

    def lag(self) -> dict:
        return {"sse-queue": self.queue.qsize()}

    async def stop(self) -> None:
        if self.reader:
            self.reader.cancel()
            try:
                await self.reader
            except (asyncio.CancelledError, Exception):  # noqa: BLE001 - shutting down
                pass
        if self.session:
            await self.session.close()
            self.session = None
