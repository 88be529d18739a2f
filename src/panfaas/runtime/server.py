"""Wiring and entry point of the function runtime service."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from pathlib import Path
from typing import Any

from aiohttp import web

from .. import config as cfg
from .api import Api
from .executor import Executor
from .service import Runtime
from .store import Store

log = logging.getLogger("panfaas.runtime")

DEFAULTS: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 3233},
    "api-host": None,              # what actions see as __OW_API_HOST; default http://host:port
    "state-dir": None,             # required: activations.db and unpacked action code
    "namespaces-file": None,       # required: {namespace: "uuid:key"}
    "python": None,                # interpreter for python actions; default: this one
    "keep-warm": 4,                # warm processes kept per action version
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
    load_namespaces(conf["namespaces-file"])
    return conf


async def build(conf: dict) -> tuple[web.Application, Runtime]:
    state = Path(conf["state-dir"])
    host, port = conf["listen"]["host"], int(conf["listen"]["port"])
    api_host = conf.get("api-host") or f"http://{host}:{port}"
    store = Store(state / "activations.db")
    executor = Executor(state / "actions", api_host, conf.get("python") or sys.executable,
                        keep_warm=int(conf["keep-warm"]))
    runtime = Runtime(store, executor)
    api = Api(runtime, load_namespaces(conf["namespaces-file"]))
    app = web.Application(middlewares=[api.middleware], client_max_size=8 * 1024 * 1024)
    api.routes(app)
    return app, runtime


async def _main(conf: dict) -> None:
    app, runtime = await build(conf)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, conf["listen"]["host"], int(conf["listen"]["port"]))
    await site.start()
    await runtime.restore_feeds()
    log.info("listening", extra={"fields": {"port": conf["listen"]["port"]}})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down")
    await runtime.close()
    await runner.cleanup()
    runtime.store.close()


def serve(conf_path: str | None) -> int:
    from .. import log as plog
    conf = load_config(conf_path)
    plog.setup("runtime", conf["log-level"])
    asyncio.run(_main(conf))
    return 0
