"""`panfaas <service> <command>`: the entry points of every service and tool."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from . import __version__
from .config import ConfigError


def _storage(args) -> int:
    from . import storage
    return storage.serve(args.config)


def _runtime_serve(args) -> int:
    from .runtime import server
    return server.serve(args.config)


def _aio_preflight(args) -> int:
    from . import aio
    ports = {}
    for item in args.port:
        name, _, port = item.partition("=")
        ports[name] = int(port)
    try:
        aio.preflight(Path(args.state_dir), ports)
    except aio.PreflightError as e:
        print(f"panfaas: preflight failed: {e}", file=sys.stderr)
        return 2
    print("preflight ok")
    return 0


def _aio_smoke(args) -> int:
    from . import aio
    from .client import ClientError
    try:
        result = aio.smoke(Path(args.endpoints), timeout=args.timeout)
    except ClientError as e:
        print(json.dumps({"success": False, "error": str(e)}))
        return 1
    print(json.dumps(result))
    return 0 if result["success"] else 1


def _aio_supervisord(args) -> int:
    from . import supervise
    if supervise.is_running(args.state_dir):
        print("running")
    elif args.check:
        print("would start")
    else:
        supervise.start_supervisord(args.state_dir, args.bin_dir)
        print("started")
    return 0


def _kafka_topics(args) -> int:
    import asyncio

    from .kafka import ensure_topics
    created = asyncio.run(ensure_topics(args.bootstrap, args.topics))
    print(json.dumps({"created": created}))
    return 0


def _heat_validate(args) -> int:
    from . import heatcheck
    try:
        problems = heatcheck.validate_tree(Path(args.directory), Path(args.env_dir) if args.env_dir else None)
    except heatcheck.HeatUnavailable as e:
        print(f"panfaas: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(problem)
    files = len(heatcheck.templates_in(Path(args.directory)))
    if problems:
        print(f"{len(problems)} problem(s) in {args.directory}", file=sys.stderr)
        return 1
    print(f"{args.directory}: {files} templates valid")
    return 0


def _sample(args) -> int:
    from . import samples
    if args.layout == "cxi":
        samples.write_cxi(args.output, frames=args.frames)
    else:
        samples.write_cheetah(args.output)
    print(args.output)
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="panfaas", description="Storage events -> tasks -> functions: "
                                "the services and tools of the panfaas platform.")
    p.add_argument("--version", action="version", version=f"panfaas {__version__}")
    sub = p.add_subparsers(dest="service", required=True, metavar="SERVICE")

    s = sub.add_parser("storage", help="the all-in-one storage element (dCache-like WebDAV door)")
    ss = s.add_subparsers(dest="command", required=True)
    c = ss.add_parser("serve", help="run the door")
    c.add_argument("--config", required=True, help="YAML configuration file")
    c.set_defaults(func=_storage)

    from .router.cli import add_parser as add_router_parser
    add_router_parser(sub)

    rt = sub.add_parser("runtime", help="the embedded OpenWhisk-compatible function runtime")
    rts = rt.add_subparsers(dest="command", required=True)
    c = rts.add_parser("serve", help="run the REST API and the action executor")
    c.add_argument("--config", required=True, help="YAML configuration file")
    c.set_defaults(func=_runtime_serve)
    from .runtime import replay
    replay.parser(rts)

    k = sub.add_parser("kafka", help="Kafka helpers")
    ks = k.add_subparsers(dest="command", required=True)
    c = ks.add_parser("ensure-topics", help="create topics that do not exist yet")
    c.add_argument("--bootstrap", required=True, help="host:port of a broker")
    c.add_argument("topics", nargs="+")
    c.set_defaults(func=_kafka_topics)

    h = sub.add_parser("heat", help="Heat (HOT) template tools")
    hs = h.add_subparsers(dest="command", required=True)
    c = hs.add_parser("validate", help="validate templates and environment files offline, against Heat's own "
                      "resource schemas (the openstack-heat package); one problem per line, exit 1 if any")
    c.add_argument("directory", help="directory of templates (e.g. heat/); environments are read from <dir>/env/")
    c.add_argument("--env-dir", help="environment files directory (default: <directory>/env)")
    c.set_defaults(func=_heat_validate)

    a = sub.add_parser("aio", help="all-in-one deployment helpers")
    as_ = a.add_subparsers(dest="command", required=True)
    c = as_.add_parser("preflight", help="check ports and Python before deploying")
    c.add_argument("--state-dir", required=True)
    c.add_argument("--port", action="append", default=[], metavar="SERVICE=PORT")
    c.set_defaults(func=_aio_preflight)
    c = as_.add_parser("supervisord", help="start this state directory's supervisord unless it runs")
    c.add_argument("--state-dir", required=True)
    c.add_argument("--bin-dir", default=str(Path(sys.executable).parent))
    c.add_argument("--check", action="store_true", help="only say whether it would be started")
    c.set_defaults(func=_aio_supervisord)
    c = as_.add_parser("smoke", help="upload a CXI file and wait for its PNG preview")
    c.add_argument("--endpoints", required=True, help="path of <state>/endpoints.json")
    c.add_argument("--timeout", type=float, default=120.0)
    c.set_defaults(func=_aio_smoke)
    c = as_.add_parser("sample", help="write a synthetic detector file")
    c.add_argument("output")
    c.add_argument("--layout", choices=("cxi", "cheetah"), default="cxi")
    c.add_argument("--frames", type=int, default=1)
    c.set_defaults(func=_sample)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        return args.func(args)
    except ConfigError as e:
        print(f"panfaas: configuration error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
