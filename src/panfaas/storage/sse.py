"""SSE channels as dCache's frontend keeps them (`/api/v1/events/channels/{id}`).

A channel belongs to one user and holds that user's subscriptions. Every event
a subscription produces gets the next `id:` of the channel (counting from 0) and
goes into the channel's ring buffer, connected client or not. A client that
reconnects with `Last-Event-ID` gets everything after that id while the id is
still in the buffer, and a SYSTEM `EVENT_LOSS` when it is not. Only one stream
per channel: a second GET ends the first with SYSTEM `COMPETING_CLIENT`. A
channel nobody listens to for `timeout` seconds is deleted (later requests get
404). SYSTEM events (NEW_SUBSCRIPTION, SUBSCRIPTION_CLOSED, EVENT_LOSS,
COMPETING_CLIENT, SHUTDOWN) go only to a connected stream and carry no id.
Semantics follow dCache's Channel.java; see reference §2.
"""

from __future__ import annotations

import collections
import itertools
import json
import secrets
import threading
import time
from collections.abc import Iterator

from . import notify


def _json(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def frame(event: str, data: str, event_id: int | None = None) -> str:
    head = f"event: {event}\n" + (f"id: {event_id}\n" if event_id is not None else "")
    return head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


class Channel:
    def __init__(self, channel_id: str, owner: int, username: str, client_id: str | None,
                 timeout: float, backlog: int, url: str):
        self.id = channel_id
        self.owner = owner
        self.username = username
        self.client_id = client_id
        self.timeout = timeout
        self.url = url
        self.ring: collections.deque[tuple[int, str, str]] = collections.deque(maxlen=backlog)
        self.next_id = 0
        self.subscriptions: dict[str, notify.Watch] = {}
        self.cond = threading.Condition()
        self.generation = 0            # which stream is the current one
        self.connected = 0             # generation of the connected stream, 0: nobody listens
        self.system: list[tuple[int, int, str]] = []   # (stream generation, next id then, data)
        self.idle_since: float | None = time.monotonic()   # dCache: the timeout runs from creation
        self.closed = False
        self.shutting_down = False

    def subscription_url(self, sub_id: str, kind: str = "inotify") -> str:
        return f"{self.url}/subscriptions/{kind}/{sub_id}"

    # -- producing --------------------------------------------------------
    def deliver(self, watch: notify.Watch, body: dict) -> None:
        data = _json({"event": body, "subscription": self.subscription_url(watch.sub_id)})
        with self.cond:
            if self.closed:
                return
            self.ring.append((self.next_id, "inotify", data))
            self.next_id += 1
            self.cond.notify_all()

    def system_event(self, body: dict) -> None:
        with self.cond:
            if self.connected and not self.closed:
                self.system.append((self.connected, self.next_id, _json(body)))
                self.cond.notify_all()

    # -- lifecycle --------------------------------------------------------
    def expired(self, now: float) -> bool:
        with self.cond:
            return (not self.closed and not self.connected and self.idle_since is not None
                    and now - self.idle_since >= self.timeout)

    def set_timeout(self, seconds: float) -> None:
        with self.cond:
            self.timeout = seconds

    def close(self, *, shutdown: bool = False) -> None:
        with self.cond:
            self.closed = True
            self.shutting_down = shutdown
            self.cond.notify_all()

    # -- consuming --------------------------------------------------------
    def stream(self, last_event_id: str | None, keepalive: float) -> Iterator[bytes]:
        """The SSE body for one GET; ends when replaced, closed, or the client goes away."""
        with self.cond:
            self.generation += 1
            gen = self.generation
            if self.connected:
                self.system.append((self.connected, self.next_id, _json({"type": "COMPETING_CLIENT"})))
            self.connected = gen
            self.idle_since = None
            self.cond.notify_all()
            cursor = self.next_id
            pending: list[str] = []
            if last_event_id is not None and last_event_id.strip().lstrip("-").isdigit():
                last = int(last_event_id)
                first = self.ring[0][0] if self.ring else self.next_id
                if first <= last < self.next_id:
                    cursor = last + 1
                else:
                    pending.append(frame("SYSTEM", _json({"type": "EVENT_LOSS"})))
        try:
            # Comments are ignored by SSE clients; this one gets the headers out at once.
            yield (":\n\n" + "".join(pending)).encode()
            while True:
                out: list[str] = []
                end = False
                with self.cond:
                    while True:
                        first = self.ring[0][0] if self.ring else self.next_id
                        if cursor < first:      # a slow reader fell out of the ring
                            out.append(frame("SYSTEM", _json({"type": "EVENT_LOSS"})))
                            cursor = first
                        # What is new is the ring's tail (its ids run up to next_id - 1): take
                        # only that, not a copy of the whole backlog at every wake-up.
                        ring = list(itertools.islice(reversed(self.ring), self.next_id - cursor))[::-1]
                        cursor = self.next_id
                        mine = [(after, d) for g, after, d in self.system if g == gen]
                        if mine:
                            self.system = [x for x in self.system if x[0] != gen]
                        # System events keep their place among the numbered ones.
                        for after, data in mine:
                            while ring and ring[0][0] < after:
                                eid, kind, payload = ring.pop(0)
                                out.append(frame(kind, payload, eid))
                            out.append(frame("SYSTEM", data))
                            if '"COMPETING_CLIENT"' in data:
                                end = True
                                break
                        if end:
                            break
                        out += [frame(kind, payload, eid) for eid, kind, payload in ring]
                        if self.closed:
                            if self.shutting_down:
                                out.append(frame("SYSTEM", _json({"type": "SHUTDOWN"})))
                            end = True
                            break
                        if out:
                            break
                        if not self.cond.wait(keepalive):
                            out.append(":\n\n")   # detects a vanished client on the next write
                            break
                if out:
                    yield "".join(out).encode()
                if end:
                    return
        finally:
            with self.cond:
                if self.connected == gen:
                    self.connected = 0
                    self.idle_since = time.monotonic()


class TooManyChannels(Exception):
    pass


class Registry:
    """All channels of this frontend; expires the ones left alone too long."""

    def __init__(self, hub: notify.Hub, base_url: str, *, default_timeout: float = 300,
                 max_timeout: float = 86400, max_per_user: int = 128, backlog: int = 16384,
                 keepalive: float = 10.0):
        self.hub = hub
        self.base_url = base_url.rstrip("/")
        self.default_timeout = default_timeout
        self.max_timeout = max_timeout
        self.max_per_user = max_per_user
        self.backlog = backlog
        self.keepalive = keepalive
        self._channels: dict[str, Channel] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sweeper = threading.Thread(target=self._sweep_loop, name="sse-expiry", daemon=True)
        hub.on_close = self._on_watch_closed
        self._watch_channel: dict[int, Channel] = {}

    def start(self) -> None:
        self._sweeper.start()

    def __len__(self) -> int:
        with self._lock:
            return len(self._channels)

    def create(self, owner: int, username: str, client_id: str | None) -> Channel:
        with self._lock:
            if sum(1 for c in self._channels.values() if c.owner == owner) >= self.max_per_user:
                raise TooManyChannels(f"at most {self.max_per_user} channels per user")
            cid = secrets.token_urlsafe(16)
            ch = Channel(cid, owner, username, client_id, self.default_timeout, self.backlog,
                         f"{self.base_url}/api/v1/events/channels/{cid}")
            self._channels[cid] = ch
            return ch

    def get(self, channel_id: str) -> Channel | None:
        with self._lock:
            ch = self._channels.get(channel_id)
        if ch is not None and ch.expired(time.monotonic()):
            self.delete(ch)
            return None
        return ch

    def ids_for(self, owner: int, client_id: str | None = None, *, filtered: bool = False) -> list[str]:
        self.expire()
        with self._lock:
            return [c.url for c in self._channels.values() if c.owner == owner
                    and (not filtered or c.client_id == client_id)]

    def delete(self, ch: Channel) -> None:
        with self._lock:
            self._channels.pop(ch.id, None)
        for w in list(ch.subscriptions.values()):
            self.hub.remove(w, ignored=False)
        ch.subscriptions.clear()
        ch.close()

    def expire(self) -> None:
        now = time.monotonic()
        with self._lock:
            gone = [c for c in self._channels.values() if c.expired(now)]
        for c in gone:
            self.delete(c)

    def _sweep_loop(self) -> None:
        while not self._stop.wait(0.5):
            self.expire()

    def shutdown(self) -> None:
        """Tell every connected stream SHUTDOWN and end it (the server is stopping)."""
        self._stop.set()
        with self._lock:
            chans = list(self._channels.values())
        for c in chans:
            c.close(shutdown=True)

    # -- subscriptions ----------------------------------------------------
    def subscribe(self, ch: Channel, watch: notify.Watch) -> None:
        ch.subscriptions[watch.sub_id] = watch
        self._watch_channel[id(watch)] = ch
        self.hub.add(watch)
        ch.system_event({"type": "NEW_SUBSCRIPTION", "subscription": ch.subscription_url(watch.sub_id)})

    def _on_watch_closed(self, watch: notify.Watch) -> None:
        ch = self._watch_channel.pop(id(watch), None)
        if ch is None or ch.subscriptions.pop(watch.sub_id, None) is None:
            return
        ch.system_event({"type": "SUBSCRIPTION_CLOSED", "subscription": ch.subscription_url(watch.sub_id)})
