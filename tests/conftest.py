"""Shared fixtures: a real tansu broker, storage element and function runtime per test session.

Topics are unique per test (services.unique_topic) so that tests sharing the
broker do not see each other's messages.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from services import start_broker, start_runtime, start_storage, unique_topic  # noqa: E402


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("services")


@pytest.fixture(scope="session")
def broker(session_dir):
    b = start_broker(session_dir)
    yield b
    b.proc.stop()


@pytest.fixture(scope="session")
def storage(session_dir, broker):
    """A storage element publishing billing events on a topic of its own."""
    topic = unique_topic("billing")
    asyncio.run(_ensure(broker.bootstrap, [topic]))
    s = start_storage(session_dir / "storage", broker.bootstrap, billing_topic=topic)
    yield s
    s.proc.stop()


@pytest.fixture(scope="session")
def runtime(session_dir, broker):
    r = start_runtime(session_dir / "runtime")
    yield r
    r.proc.stop()


async def _ensure(bootstrap, topics):
    from panfaas.kafka import ensure_topics
    return await ensure_topics(bootstrap, topics)


@pytest.fixture
def topics(broker):
    """make_topics("a", "b") -> unique, created topic names."""
    def make(*prefixes):
        names = [unique_topic(p) for p in prefixes]
        asyncio.run(_ensure(broker.bootstrap, names))
        return names if len(names) > 1 else names[0]
    return make
