"""`panfaas router serve | check-config | dry-run`."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys

from .. import events
from . import config as rconfig
from .rules import matching_rules, wanted_kinds
from .tasks import dead_letter, event_digest, make_task, task_id
from .urls import UrlFailure, UrlGenerator


def serve(conf_path: str) -> int:
    from .. import log as plog
    from .service import main
    conf = rconfig.load(conf_path)
    plog.setup("router", conf.log_level)
    return asyncio.run(main(conf))


def check_config(args) -> int:
    conf, problems = rconfig.check(args.file)
    for line in problems:
        print(line, file=sys.stderr if conf is None else sys.stdout)
    if conf is None:
        errors = sum(1 for p in problems if ": warning: " not in p)
        print(f"{args.file}: {errors} error{'s' if errors != 1 else ''}", file=sys.stderr)
        return 2
    rules = len(conf.rules)
    print(f"{args.file}: ok ({rules} rule{'s' if rules != 1 else ''}, source {conf.source.type}, "
          f"targets {', '.join(conf.targets)})")
    return 0


async def dry_run_events(conf, lines, *, use_macaroons: bool, out=sys.stdout) -> int:
    """Print one {"topic", "value"} line per message the router would publish for each event."""
    gen = UrlGenerator(conf)
    kinds = wanted_kinds(conf.rules)
    if use_macaroons:
        await gen.start()
    try:
        for n, line in enumerate(lines, 1):
            text = line.strip()
            if not text:
                continue
            origin = {"input": "dry-run", "line": n}
            try:
                ev = events.parse_billing(text.encode("utf-8", "surrogateescape"), kinds)
            except events.EventError as e:  # shown as the dead letter the router would publish
                doc = dead_letter(f"malformed event: {e}", stage="parse", origin=origin, value=text,
                                  router=conf.client_id)
                _emit(out, conf.dead_letter_topic, doc)
                continue
            if ev is None:
                continue  # a msgType no rule takes: the router does not look further either
            digest = event_digest(ev)
            for rule in matching_rules(conf.rules, ev):
                try:
                    if use_macaroons and rule.needs_network:
                        # Side-effect free: macaroons are minted, MKCOL is not sent.
                        urls = await gen.build(rule, ev, create_paths=False)
                    else:
                        urls = gen.build_bare(rule, ev)
                except UrlFailure as e:
                    doc = dead_letter(str(e), stage="urls", origin=origin, value=text, router=conf.client_id,
                                      target=rule.target, task_id=task_id(rule, ev, digest))
                    _emit(out, conf.dead_letter_topic, doc)
                    continue
                _emit(out, rule.target, make_task(rule, ev, urls, digest))
    finally:
        await gen.close()
    return 0


def _emit(out, topic: str, value: dict) -> None:
    out.write(json.dumps({"topic": topic, "value": value}) + "\n")
    out.flush()


def dry_run(args) -> int:
    conf = rconfig.load(args.file)
    if args.event == "-":
        lines = sys.stdin
    else:
        lines = [" ".join(args.event.splitlines())]  # one event, pretty-printed or not
    conf.retries = min(conf.retries, 1)
    return asyncio.run(dry_run_events(conf, lines, use_macaroons=not args.no_macaroons))


def add_parser(sub) -> None:
    r = sub.add_parser("router", help="the event router (dCache dynamic processing)",
                       description="Storage events -> tasks with pre-authorised URLs, from a "
                                   "dynamic-processing YAML configuration (plus panfaas extensions).")
    rs = r.add_subparsers(dest="command", required=True, metavar="COMMAND")
    c = rs.add_parser("serve", help="run the router")
    c.add_argument("--config", required=True, help="dynamic-processing YAML configuration file")
    c.set_defaults(func=lambda a: serve(a.config))
    c = rs.add_parser("check-config", help="validate a configuration; explain every problem with its line",
                      description="Exit 0 if FILE is a valid router configuration (warnings are printed), "
                                  "2 otherwise, with one line per problem: FILE:LINE: setting: what is wrong.")
    c.add_argument("file", metavar="FILE")
    c.set_defaults(func=check_config)
    c = rs.add_parser(
        "dry-run", help="print what the router would publish for events; touches no broker",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Print one JSON object per line, {\"topic\": ..., \"value\": {...}}, for every task\n"
                    "(and dead letter) the router would publish for the event; nothing if no rule\n"
                    "matches. Macaroons are requested from the storage door as the router would\n"
                    "(but retried once at most; MKCOL for create-path is not sent); --no-macaroons\n"
                    "needs no storage element.")
    c.add_argument("file", metavar="FILE", help="router configuration")
    c.add_argument("--event", required=True, metavar="JSON",
                   help="a billing record as JSON, or '-' to read one record per line from standard input")
    c.add_argument("--no-macaroons", action="store_true", help="bare URLs, without ?authz=")
    c.set_defaults(func=dry_run)
