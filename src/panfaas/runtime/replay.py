"""`panfaas runtime replay`: run work again through the *current* version of an action.

Two sources:

activations   activation records chosen by id, or by action name, time window and status,
              are invoked again with the arguments they ran with (the store keeps them; the
              API never shows them). Sequences run again as sequences, trigger activations
              are fired again.
topic         a Kafka topic is read again from an offset or a time, without touching the
              feed's consumer group, and fired at the trigger whose feed consumes it (or at
              another trigger, or straight at an action) in the same `{"messages": [...]}`
              batches of at most 900 kB the feed makes.

Replay goes through the runtime's REST API (it must be running), so replayed activations are
throttled, queued and recorded like any other; a 429 is waited out, not dropped. It reads the
runtime's SQLite store read-only (WAL allows that while the runtime writes).
Every replayed item is printed as one JSON line, then a summary line.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..config import ConfigError

# The service modules (aiohttp, aiokafka) are imported when replay runs, not when the CLI
# builds its parser: `panfaas --help` stays fast.


class ReplayError(Exception):
    """Nothing (or nothing sensible) to replay; the message says what to give instead."""


STATUS_CODES = {"success": 0, "application-error": 1, "developer-error": 2, "internal-error": 3}

EPILOG = """\
times: epoch milliseconds, ISO 8601 (2024-06-10T12:00:00Z), or an age such as 90s, 30m, 2h, 7d.

examples:
  # every failed hdf5-preview activation of the last 2 hours, through today's code
  panfaas runtime replay activations --name panfaas/hdf5-preview --since 2h --status application-error --wait
  # two activations by id
  panfaas runtime replay activations 8f2c0d...e1 5b17aa...0c
  # the whole preview-tasks topic again, into the trigger whose feed reads it
  panfaas runtime replay topic preview-tasks --from-offset 0
  # what arrived since 06:00 UTC, straight into an action, first only listing it
  panfaas runtime replay topic preview-tasks --from-time 2024-06-10T06:00:00Z --action panfaas/hdf5-preview --dry-run
"""


def parse_time(text: str, now: float | None = None) -> int:
    """Epoch ms, ISO 8601, or an age ('30m' = 30 minutes ago) -> epoch ms."""
    now = time.time() if now is None else now
    text = text.strip()
    if re.fullmatch(r"\d{10,}", text):
        return int(text)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*([smhd])", text)
    if m:
        seconds = float(m.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return int((now - seconds) * 1000)
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a time: {text!r} (epoch ms, ISO 8601 or an age like 2h)") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


def default_config() -> str:
    state = os.environ.get("PANFAAS_STATE_DIR")
    if state:
        return str(Path(state) / "etc" / "runtime.yml")
    for p in (Path.cwd(), *Path.cwd().parents):
        if (p / ".aio" / "etc" / "runtime.yml").exists():
            return str(p / ".aio" / "etc" / "runtime.yml")
    return ".aio/etc/runtime.yml"


DESCRIPTION = """\
Run work again through the *current* version of an action (the seeds' "replay whole queues
with updated code"): recorded activations, invoked again with the arguments they ran with,
or a Kafka topic read again from an offset or a time and fired in the feed's batches.
Replay goes through the running runtime's REST API: replayed activations are throttled,
queued and recorded like any other. Each replayed item is printed as a JSON line, then a
summary line."""


def parser(sub: argparse._SubParsersAction | None = None) -> argparse.ArgumentParser:
    fmt = dict(epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--config", default=None,
                        help="the runtime's configuration file (default: $PANFAAS_STATE_DIR/etc/runtime.yml, "
                             "or .aio/etc/runtime.yml)")
    common.add_argument("--namespace", help="namespace to replay in (default: the only one, or 'guest')")
    common.add_argument("--dry-run", action="store_true", help="only list what would be replayed")
    common.add_argument("--wait", action="store_true",
                        help="wait for the replayed activations and count their statuses")
    common.add_argument("--wait-timeout", type=float, default=600.0, help="seconds --wait waits at most (600)")
    if sub is not None:
        p = sub.add_parser("replay", help="run activations or a topic again through the current action code",
                           description=DESCRIPTION, **fmt)
    else:
        p = argparse.ArgumentParser(prog="panfaas runtime replay", description=DESCRIPTION, **fmt)
    what = p.add_subparsers(dest="source", required=True, metavar="SOURCE")

    a = what.add_parser("activations", parents=[common], help="invoke recorded activations again",
                        description="Invoke activations again, with the arguments they ran with, through the "
                                    "action's current version. Without ids: the action and sequence activations "
                                    "matching the filters, oldest first. A trigger's activation (by id) is fired "
                                    "again.", **fmt)
    a.add_argument("ids", nargs="*", metavar="ID", help="activation ids (32 hex characters)")
    a.add_argument("--name", help="only this action: 'name' or 'package/name'")
    a.add_argument("--since", type=parse_time, help="started at or after this time")
    a.add_argument("--upto", type=parse_time, help="started at or before this time")
    a.add_argument("--status", choices=sorted(STATUS_CODES), help="only activations that ended like this")
    a.add_argument("--limit", type=int, default=1000, help="at most this many (default 1000)")

    t = what.add_parser("topic", parents=[common], help="read a Kafka topic again and fire its messages",
                        description="Read a topic again from an offset or a time (the feed's consumer group is "
                                    "not touched) and fire the messages, in the feed's batches of at most "
                                    "900 kB, at the trigger whose feed consumes the topic, or at --trigger, or "
                                    "at --action.", **fmt)
    t.add_argument("topic")
    start = t.add_mutually_exclusive_group(required=True)
    start.add_argument("--from-offset", type=int, help="first offset (of every partition, or of --partition)")
    start.add_argument("--from-time", type=parse_time, help="first message at or after this time")
    t.add_argument("--to-offset", type=int, help="last offset included (default: the end when replay starts)")
    t.add_argument("--until", type=parse_time, help="stop at messages from this time on")
    t.add_argument("--partition", type=int, action="append", help="only this partition (repeatable)")
    target = t.add_mutually_exclusive_group()
    target.add_argument("--trigger", help="fire this trigger (default: the one whose feed reads the topic)")
    target.add_argument("--action", help="invoke this action with {\"messages\": [...]} instead")
    t.add_argument("--brokers", help="host:port[,host:port] (default: the feed's)")
    t.add_argument("--json", dest="is_json", action=argparse.BooleanOptionalAction, default=None,
                   help="parse message values as JSON (default: the feed's isJSONData, else true)")
    p.set_defaults(func=main)
    return p


class Target:
    """The runtime's REST API (through panfaas.client), with 429 waited out."""

    def __init__(self, conf: dict, namespace: str):
        from ..client import Functions
        from . import server
        keys = server.load_namespaces(conf["namespaces-file"])
        self.fn = Functions(server.api_host(conf), keys[namespace])

    def call(self, fn: Callable, *args, **kw):
        from ..client import ClientError
        delay = 1.0
        while True:
            try:
                return fn(*args, **kw)
            except ClientError as e:
                if e.status != 429:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, 30)

    def invoke(self, name: str, args: Any) -> str:
        return self.call(self.fn.invoke, name, args, blocking=False)["activationId"]

    def fire(self, trigger: str, payload: dict) -> str | None:
        return self.call(self.fn.fire, trigger, payload)


def _namespace(conf: dict, wanted: str | None) -> str:
    from . import server
    keys = server.load_namespaces(conf["namespaces-file"])
    if wanted:
        if wanted not in keys:
            raise ConfigError(f"namespace '{wanted}' is not in {conf['namespaces-file']}")
        return wanted
    return next(iter(keys)) if len(keys) == 1 else ("guest" if "guest" in keys else sorted(keys)[0])


def _emit(doc: dict) -> None:
    print(json.dumps(doc), flush=True)


def replay_activations(args, store, ns: str, target: Target | None) -> list[str]:
    rows = store.replayable(ns, ids=args.ids or None, name=args.name, since=args.since, upto=args.upto,
                            status=STATUS_CODES.get(args.status) if args.status else None, limit=args.limit)
    missing = set(args.ids) - {r["record"]["activationId"] for r in rows}
    for aid in sorted(missing):
        _emit({"replayed": aid, "error": "no such activation"})
    started = []
    for row in rows:
        rec, kind = row["record"], row["kind"]
        anns = {a["key"]: a["value"] for a in rec.get("annotations", [])}
        old = rec["activationId"]
        if kind == "feed":
            _emit({"replayed": old, "skipped": "a feed lifecycle event is not replayed"})
            continue
        if kind == "trigger":
            name = rec["name"]
            if args.dry_run or target is None:
                _emit({"replayed": old, "trigger": name, "dry_run": True})
                continue
            new = target.fire(name, row["args"])
            _emit({"replayed": old, "trigger": name, "activationId": new, "note": None if new else
                   "204: the trigger has no active rule"})
            if new:
                started.append(new)
            continue
        if anns.get("binding"):  # it ran through a package binding: invoke it the same way
            fullname = f"{anns['binding'].partition('/')[2]}/{rec['name']}"
        else:
            fullname = anns.get("path", f"{ns}/{rec['name']}").partition("/")[2]
        if args.dry_run or target is None:
            _emit({"replayed": old, "action": fullname, "dry_run": True})
            continue
        new = target.invoke(fullname, row["args"])
        _emit({"replayed": old, "action": fullname, "activationId": new})
        started.append(new)
    return started


async def _read_topic(args, conf_flags: dict, brokers: str) -> list[tuple[dict, str]]:
    """The messages to replay as (batch payload, description) in the feed's batches."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    from .feeds import Batch, message_payload
    consumer = AIOKafkaConsumer(bootstrap_servers=brokers, group_id=None, enable_auto_commit=False,
                                auto_offset_reset="earliest", fetch_max_wait_ms=100)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(args.topic)
        if parts is None:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(args.topic)
        if not parts:
            raise ReplayError(f"topic '{args.topic}' does not exist on {brokers}")
        tps = [TopicPartition(args.topic, p) for p in sorted(parts) if not args.partition or p in args.partition]
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        if args.from_time is not None:
            found = await consumer.offsets_for_times({tp: args.from_time for tp in tps})
            starts = {tp: (found[tp].offset if found.get(tp) else ends[tp]) for tp in tps}
        else:
            begins = await consumer.beginning_offsets(tps)
            starts = {tp: max(args.from_offset, begins[tp]) for tp in tps}
        stops = {tp: min(ends[tp], args.to_offset + 1) if args.to_offset is not None else ends[tp] for tp in tps}
        todo = {tp for tp in tps if starts[tp] < stops[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        out: list[tuple[dict, str]] = []
        batch, first = Batch(), None
        while todo:
            got = await consumer.getmany(*todo, timeout_ms=1000)
            if not got:
                continue
            for tp, msgs in got.items():
                for m in msgs:
                    if tp not in todo:
                        break
                    if m.offset >= stops[tp] or (args.until is not None and m.timestamp >= args.until):
                        todo.discard(tp)
                        break
                    item = message_payload(m, conf_flags)
                    n = Batch.measure(item)
                    if not batch.fits(n) and batch.messages:
                        out.append((batch.payload(), first))
                        batch = Batch()
                    if batch.fits(n):
                        first = first if batch.messages else f"{tp.topic}/{tp.partition}@{m.offset}"
                        batch.add(item, n)
                    else:
                        _emit({"skipped": f"{tp.topic}/{tp.partition}@{m.offset}",
                               "error": f"message larger than the feed payload limit ({n} bytes)"})
                    if m.offset + 1 >= stops[tp]:
                        todo.discard(tp)
        if batch.messages:
            out.append((batch.payload(), first))
        return out
    finally:
        await consumer.stop()


def replay_topic(args, store, ns: str, target: Target | None) -> list[str]:
    feeds = [(n, d) for n, d in store.all("feeds") if n == ns]
    feed = None
    if args.trigger:
        feed = next((d for _, d in feeds if d["trigger"] == args.trigger), None)
    else:
        on_topic = [d for _, d in feeds if d["config"]["topic"] == args.topic]
        if not args.action:
            if not on_topic:
                raise ReplayError(f"no feed trigger consumes '{args.topic}' in namespace {ns}: "
                                  "name one with --trigger or --action")
            if len(on_topic) > 1:
                names = ", ".join(sorted(d["trigger"] for d in on_topic))
                raise ReplayError(f"several feed triggers consume '{args.topic}' ({names}): choose one with --trigger")
        feed = on_topic[0] if on_topic else None
    conf = dict(feed["config"]) if feed else {"isJSONData": True, "isBinaryKey": False, "isBinaryValue": False}
    if args.is_json is not None:
        conf["isJSONData"] = args.is_json
        conf["isBinaryValue"] = conf.get("isBinaryValue", False) and not args.is_json
    brokers = args.brokers or (",".join(feed["config"]["brokers"]) if feed else None)
    if not brokers:
        raise ReplayError("no brokers: give --brokers (no feed reads this topic to take them from)")
    trigger = args.trigger or (None if args.action else feed["trigger"])
    batches = asyncio.run(_read_topic(args, conf, brokers))
    started = []
    for payload, first in batches:
        item = {"replayed": first, "messages": len(payload["messages"])}
        if args.dry_run or target is None:
            _emit({**item, "trigger" if trigger else "action": trigger or args.action, "dry_run": True})
            continue
        if trigger:
            new = target.fire(trigger, payload)
            _emit({**item, "trigger": trigger, "activationId": new,
                   "note": None if new else "204: the trigger has no active rule"})
        else:
            new = target.invoke(args.action, payload)
            _emit({**item, "action": args.action, "activationId": new})
        if new:
            started.append(new)
    return started


def wait_for(target: Target, ids: list[str], timeout: float) -> dict:
    """Statuses of the replayed activations (a trigger's: of the actions it started)."""
    counts: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    todo = list(ids)
    while todo:
        aid = todo.pop(0)
        rec = target.fn.wait(aid, timeout=max(deadline - time.monotonic(), 0.1))
        anns = {a["key"]: a["value"] for a in rec.get("annotations", [])}
        if "kind" not in anns and rec.get("logs") and rec["logs"][0].startswith("{"):  # a trigger's record
            todo += [json.loads(x)["activationId"] for x in rec["logs"] if "activationId" in json.loads(x)]
            continue
        status = rec["response"]["status"]
        counts[status] = counts.get(status, 0) + 1
    return counts


def main(args) -> int:
    from ..client import ClientError
    from . import server
    from .store import Store
    conf = server.load_config(args.config or default_config())
    ns = _namespace(conf, args.namespace)
    db = Path(conf["state-dir"]) / "activations.db"
    if not db.exists():
        raise ConfigError(f"{db} does not exist: is this the runtime's configuration?")
    store = Store(db, readonly=True)
    target = None if args.dry_run else Target(conf, ns)
    try:
        if args.source == "activations":
            if not (args.ids or args.name or args.since or args.upto or args.status):
                raise ReplayError("say what to replay: activation ids, or --name/--since/--upto/--status")
            started = replay_activations(args, store, ns, target)
        else:
            started = replay_topic(args, store, ns, target)
        summary: dict[str, Any] = {"started": len(started), "dry_run": args.dry_run}
        if args.wait and target and started:
            summary["statuses"] = wait_for(target, started, args.wait_timeout)
        _emit({"summary": summary})
    except ReplayError as e:
        print(f"panfaas: replay: {e}", file=sys.stderr)
        return 2
    except ClientError as e:
        print(f"panfaas: replay: {e}", file=sys.stderr)
        return 1
    finally:
        store.close()
    return 0
