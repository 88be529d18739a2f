"""Configuration and the process: `panfaas storage serve --config FILE`.

Settings (YAML; `PANFAAS_STORAGE__<KEY>__<SUB>` environment variables override):

    listen: {host: 127.0.0.1, port: 2880}      # the WebDAV door
    public-url: http://127.0.0.1:2880          # how clients reach it (macaroon URIs)
    data-dir: <state>/storage                   # the namespace (required)
    staging-dir: <data-dir>.staging             # uploads in progress (same filesystem)
    users-file: <state>/secrets/storage-users.yml   # required
    macaroons: {root-key-file: ..., default-lifetime: P1D, max-lifetime: P7D,
                accept-over-unencrypted-channel: true}
    kafka: {bootstrap: 127.0.0.1:9092, topic: billing, timeout: 10}
    pool: {name: pool1, domain: aioDomain, door: WebDAV-aio, storage-info: aio:disk@osm}
    frontend:                                   # dCache's /api/v1 (SSE storage events)
      listen: null                              # null: on the door's port; or {host, port} (dCache: 3880)
      public-url: null
      channels-per-user: 128
      disconnect-timeout: {default: 300, maximum: 86400}   # seconds
      backlog: 16384                            # events kept per channel for Last-Event-ID
      keepalive: 10                             # seconds between SSE comments to an idle stream
    threads: 32
    log-level: info
"""

from __future__ import annotations

import logging
import signal
import threading
from pathlib import Path
from typing import Any

from .. import config as cfg
from .. import macaroons
from . import dav, metrics
from .auth import Authenticator, load_users
from .billing import Biller, BillingEmitter, Pool
from .door import Door
from .frontend import Frontend
from .gateway import Gateway
from .namespace import Namespace
from .notify import Hub
from .sse import Registry

log = logging.getLogger("panfaas.storage")

DEFAULTS: dict[str, Any] = {
    "listen": {"host": "127.0.0.1", "port": 2880},
    "public-url": None,
    "data-dir": None,
    "staging-dir": None,
    "users-file": None,
    "macaroons": {"root-key-file": None, "default-lifetime": "P1D", "max-lifetime": "P7D",
                  "accept-over-unencrypted-channel": True},
    "kafka": {"bootstrap": None, "topic": "billing", "timeout": 10},
    "pool": {"name": "pool1", "domain": "aioDomain", "door": "WebDAV-aio", "storage-info": "aio:disk@osm"},
    "frontend": {"listen": None, "public-url": None, "channels-per-user": 128,
                 "disconnect-timeout": {"default": 300, "maximum": 86400},
                 "backlog": 16384, "keepalive": 10},
    "threads": 32,
    "log-level": "info",
}


def _positive(conf: dict, dotted: str) -> float:
    value = cfg.require(conf, dotted, (int, float), "storage")
    if isinstance(value, bool) or value <= 0:
        raise cfg.ConfigError(f"storage: '{dotted}' must be a positive number, got {value!r}")
    return value


def _duration(conf: dict, dotted: str):
    text = cfg.require(conf, dotted, str, "storage")
    try:
        return macaroons.parse_duration(text)
    except ValueError as e:
        raise cfg.ConfigError(f"storage: '{dotted}': {e}") from None


def url_of(listen: dict, public: str | None) -> str:
    return (public or f"http://{listen['host']}:{listen['port']}").rstrip("/")


class Storage:
    """Every part of the storage element, wired together (what `serve` runs; tests build it too)."""

    def __init__(self, conf: dict, emitter: BillingEmitter | None = None):
        for key in ("data-dir", "users-file", "macaroons.root-key-file"):
            section, _, leaf = key.rpartition(".")
            if not (conf.get(section, {}) if section else conf).get(leaf):
                raise cfg.ConfigError(f"storage: missing required setting '{key}'")
            cfg.require(conf, key, str, "storage")
        default, maximum = _duration(conf, "macaroons.default-lifetime"), _duration(conf, "macaroons.max-lifetime")
        if default > maximum:
            raise cfg.ConfigError("storage: 'macaroons.default-lifetime' is longer than 'macaroons.max-lifetime'")
        key_file = Path(conf["macaroons"]["root-key-file"])
        try:
            key = key_file.read_bytes().strip()
        except OSError as e:
            raise cfg.ConfigError(f"storage: cannot read macaroon root key {key_file}: {e.strerror}") from None
        if len(key) < 16:
            raise cfg.ConfigError(f"storage: macaroon root key in {key_file} is shorter than 16 bytes")
        fconf = conf["frontend"]
        timeouts = fconf["disconnect-timeout"]
        for dotted in ("frontend.disconnect-timeout.default", "frontend.disconnect-timeout.maximum",
                       "frontend.keepalive", "frontend.backlog", "frontend.channels-per-user", "threads"):
            _positive(conf, dotted)
        self.conf = conf
        self.url = url_of(conf["listen"], conf.get("public-url"))
        self.frontend_url = url_of(fconf["listen"], fconf.get("public-url")) if fconf.get("listen") else \
            (fconf.get("public-url") or self.url).rstrip("/")
        data_dir = conf["data-dir"]
        self.emitter = emitter or BillingEmitter(conf["kafka"]["bootstrap"], conf["kafka"]["topic"],
                                                 float(conf["kafka"].get("timeout", 10)))
        pool = conf["pool"]
        biller = Biller(self.emitter, Pool(pool["name"], pool["domain"], pool["door"], pool["storage-info"],
                                           f"{conf['listen']['host']}:{conf['listen']['port']}"))
        self.hub = Hub()
        self.ns = Namespace(data_dir, conf.get("staging-dir") or str(data_dir).rstrip("/") + ".staging",
                            self.hub, biller)
        self.authority = macaroons.MacaroonAuthority(key, default_lifetime=default, max_lifetime=maximum)
        self.authn = Authenticator(load_users(conf["users-file"]), self.authority,
                                   bool(conf["macaroons"].get("accept-over-unencrypted-channel", True)))
        self.registry = Registry(self.hub, self.frontend_url, default_timeout=timeouts["default"],
                                 max_timeout=timeouts["maximum"], max_per_user=int(fconf["channels-per-user"]),
                                 backlog=int(fconf["backlog"]), keepalive=float(fconf["keepalive"]))
        self.frontend = Frontend(ns=self.ns, authn=self.authn, registry=self.registry,
                                 public_url=self.frontend_url)
        self.door = Door(ns=self.ns, authn=self.authn, authority=self.authority, dav=dav.build(self.ns),
                         public_url=self.url, frontend=None if fconf.get("listen") else self.frontend)
        metrics.SSE_CHANNELS.set_function(lambda: len(self.registry))
        metrics.SSE_WATCHES.set_function(lambda: len(self.hub))

    def start(self) -> None:
        self.emitter.start()
        self.registry.start()

    def stop(self) -> None:
        self.registry.shutdown()
        self.emitter.stop()


def serve(conf_path: str | None) -> int:
    from cheroot import wsgi

    from .. import log as plog
    conf = cfg.load("storage", conf_path, DEFAULTS)
    plog.setup("storage", conf["log-level"])
    storage = Storage(conf)
    storage.start()
    threads = int(conf["threads"])
    servers = []
    for (host, port), app in [((conf["listen"]["host"], int(conf["listen"]["port"])), storage.door)] + (
            [((conf["frontend"]["listen"]["host"], int(conf["frontend"]["listen"]["port"])), storage.frontend)]
            if conf["frontend"].get("listen") else []):
        # A listen backlog of cheroot's default 5 resets clients when many connect at once.
        server = wsgi.Server((host, port), app, numthreads=threads, server_name="panfaas-storage",
                             request_queue_size=256, shutdown_timeout=2)
        server.max_request_body_size = 0
        server.keep_alive_conn_limit = 4 * threads
        server.gateway = Gateway          # wsgi.file_wrapper: downloads by sendfile(2)
        servers.append(server)

    def on_signal(signum, _frame):
        log.info("shutting down", extra={"fields": {"signal": signum}})
        storage.registry.shutdown()   # SSE streams say SHUTDOWN and end, so the servers can stop
        for s in servers:
            threading.Thread(target=s.stop, daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    for s in servers:
        s.prepare()
    log.info("listening", extra={"fields": {"url": storage.url, "frontend": storage.frontend_url + "/api/v1",
                                            "data": conf["data-dir"]}})
    extra = [threading.Thread(target=s.serve, name="frontend", daemon=True) for s in servers[1:]]
    for t in extra:
        t.start()
    try:
        servers[0].serve()
    finally:
        for s in servers[1:]:
            s.stop()
        storage.stop()
    return 0
