"""Wiring and entry point of the function runtime service (`panfaas runtime serve`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import config as cfg
from .api import MAX_ENTITY, Api
from .entities import DEFAULT_RANGES
from .executor import Executor
from .feeds import FETCH_WAIT_MS
from .limits import MemoryPool, Throttle
from .service import Runtime
from .store import Store

log = logging.getLogger("panfaas.runtime")

DEFAULTS: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 3233},
    "api-host": None,              # what actions see as __OW_API_HOST; default http://host:port
    "state-dir": None,             # required: activations.db and unpacked action code
    "namespaces-file": None,       # required: {namespace: "uuid:key"}
    "python": None,                # interpreter for python actions; default: this one
    "keep-warm": 4,                # idle warm processes kept per action version
    "idle-timeout": 600,           # seconds an idle warm process is kept
    "activation-retention-days": 30,   # activation records older than this are pruned (0: never)
    "feed-fetch-wait-ms": FETCH_WAIT_MS,  # a feed's fetch waits this long at the broker (ms)
    "limits": {                    # OpenWhisk's per-namespace limits (0: no limit)
        "invocations-per-minute": 120,
        "concurrent-invocations": 100,
        "fires-per-minute": 60,
        # MB of running actions at once (an invoker's userMemory; deploy-kube's default is 2048,
        # one machine running everything holds more, and memory limits count address space)
        "user-memory": 4096,
        "ranges": {k: list(v) for k, v in DEFAULT_RANGES.items()},  # allowed action limits [min, max]
    },
    "log-level": "info",
}


def load_namespaces(path: str) -> dict[str, str]:
    data = cfg.load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise cfg.ConfigError(f"{path}: expected a mapping of namespace -> 'uuid:key'")
    for ns, auth in data.items():
        if not isinstance(auth, str) or ":" not in auth:
            raise cfg.ConfigError(f"{path}: namespace '{ns}' needs a 'uuid:key' string")
    return data


def load_config(path: str | None) -> dict:
    conf = cfg.load("runtime", path, DEFAULTS)
    for key in ("state-dir", "namespaces-file"):
        if not conf.get(key):
            raise cfg.ConfigError(f"runtime: missing required setting '{key}'")
    for key in ("invocations-per-minute", "concurrent-invocations", "fires-per-minute", "user-memory"):
        v = conf["limits"].get(key)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise cfg.ConfigError(f"runtime: limits.{key} must be an integer >= 0, got {v!r}")
    ranges = conf["limits"]["ranges"]
    for key in DEFAULT_RANGES:
        v = ranges.get(key)
        if not (isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v) and v[0] <= v[1]):
            raise cfg.ConfigError(f"runtime: limits.ranges.{key} must be [min, max], got {v!r}")
    load_namespaces(conf["namespaces-file"])
    return conf


def api_host(conf: dict) -> str:
    return conf.get("api-host") or f"http://{conf['listen']['host']}:{int(conf['listen']['port'])}"


async def build(conf: dict) -> tuple[web.Application, Runtime]:
    state = Path(conf["state-dir"])
    namespaces = load_namespaces(conf["namespaces-file"])
    limits = conf["limits"]
    store = Store(state / "activations.db")
    executor = Executor(state / "actions", api_host(conf), conf.get("python") or sys.executable,
                        keep_warm=int(conf["keep-warm"]), idle_timeout=float(conf["idle-timeout"]))
    runtime = Runtime(store, executor, keys=namespaces,
                      throttle=Throttle(limits["invocations-per-minute"], limits["concurrent-invocations"],
                                        limits["fires-per-minute"]),
                      memory=MemoryPool(limits["user-memory"]),
                      ranges={k: tuple(v) for k, v in limits["ranges"].items()},
                      feed_fetch_wait_ms=int(conf["feed-fetch-wait-ms"]))
    api = Api(runtime, namespaces)
    app = web.Application(middlewares=[api.middleware], client_max_size=MAX_ENTITY + 1024)
    api.routes(app)
    return app, runtime


async def _main(conf: dict) -> None:
    app, runtime = await build(conf)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, conf["listen"]["host"], int(conf["listen"]["port"]))
    await site.start()
    await runtime.recover()
    await runtime.restore_feeds()
    maintenance = asyncio.create_task(runtime.maintain(float(conf["activation-retention-days"])))
    log.info("listening", extra={"fields": {"port": conf["listen"]["port"]}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    maintenance.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await maintenance
    await runtime.feeds.close()       # no new fires; what is not committed is fired again at start
    await runtime.drain(timeout=10)   # what does not finish stays pending and is run at start
    await runtime.close()
    await runner.cleanup()
    runtime.store.close()


def serve(conf_path: str | None) -> int:
    from .. import log as plog
    conf = load_config(conf_path)
    plog.setup("runtime", conf["log-level"])
    asyncio.run(_main(conf))
    return 0
