"""Namespace limits (OpenWhisk's throttles) and the invoker's memory pool.

Throttle     invocations per minute and concurrent invocations per namespace, and trigger
             fires per minute: over a limit the API answers 429 with OpenWhisk's messages.
MemoryPool   like an invoker's `userMemory`: an activation waits (its `waitTime`) until the
             memory its action declares is free, so a burst of 512 MB actions queues instead
             of starting more processes than the machine holds.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time

from .errors import ApiError


def too_many_requests(count: int, allowed: int) -> ApiError:
    return ApiError(429, f"Too many requests in the last minute (count: {count}, allowed: {allowed}).")


def too_many_concurrent(count: int, allowed: int) -> ApiError:
    return ApiError(429, f"Too many concurrent requests in flight (count: {count}, allowed: {allowed}).")


class Window:
    """Events in the last 60 seconds, per key."""

    def __init__(self, allowed: int, clock=time.monotonic):
        self.allowed = allowed
        self.clock = clock
        self.events: dict[str, collections.deque] = collections.defaultdict(collections.deque)

    def count(self, key: str) -> int:
        q = self.events[key]
        horizon = self.clock() - 60.0
        while q and q[0] <= horizon:
            q.popleft()
        return len(q)

    def full(self, key: str, n: int = 1) -> bool:
        return self.allowed > 0 and self.count(key) + n > self.allowed

    def add(self, key: str, n: int = 1) -> None:
        now = self.clock()
        self.events[key].extend([now] * n)


class Throttle:
    """OpenWhisk's per-namespace limits; 0 disables a limit."""

    def __init__(self, invocations_per_minute: int = 120, concurrent: int = 100, fires_per_minute: int = 60,
                 clock=time.monotonic):
        self.invocations = Window(invocations_per_minute, clock)
        self.fires = Window(fires_per_minute, clock)
        self.concurrent_allowed = concurrent
        self.in_flight: dict[str, int] = collections.defaultdict(int)

    def check_invoke(self, ns: str, n: int = 1) -> None:
        """Raise 429 if `n` more invocations would exceed a limit (nothing is counted)."""
        if self.invocations.full(ns, n):
            raise too_many_requests(self.invocations.count(ns) + n, self.invocations.allowed)
        if self.concurrent_allowed > 0 and self.in_flight[ns] + n > self.concurrent_allowed:
            raise too_many_concurrent(self.in_flight[ns] + n, self.concurrent_allowed)

    def check_fire(self, ns: str) -> None:
        if self.fires.full(ns):
            raise too_many_requests(self.fires.count(ns) + 1, self.fires.allowed)

    def admit(self, ns: str, n: int = 1) -> None:
        self.check_invoke(ns, n)
        self.invocations.add(ns, n)
        self.in_flight[ns] += n

    def admit_fire(self, ns: str) -> None:
        self.check_fire(ns)
        self.fires.add(ns)

    def started(self, ns: str) -> None:
        """An activation recovered after a restart: in flight, but not counted as a new request."""
        self.in_flight[ns] += 1

    def done(self, ns: str) -> None:
        self.in_flight[ns] = max(self.in_flight[ns] - 1, 0)

    def limits(self) -> dict:
        return {"invocationsPerMinute": self.invocations.allowed, "concurrentInvocations": self.concurrent_allowed,
                "firesPerMinute": self.fires.allowed}


class MemoryPool:
    """Memory (MB) reserved by running activations; waits while the pool is full.
    An action larger than the whole pool still runs, alone."""

    def __init__(self, capacity_mb: int):
        self.capacity = capacity_mb
        self.used = 0
        self.cond = asyncio.Condition()

    @contextlib.asynccontextmanager
    async def reserve(self, mb: int):
        if self.capacity <= 0:
            yield
            return
        async with self.cond:
            await self.cond.wait_for(lambda: self.used == 0 or self.used + mb <= self.capacity)
            self.used += mb
        try:
            yield
        finally:
            async with self.cond:
                self.used -= mb
                self.cond.notify_all()
