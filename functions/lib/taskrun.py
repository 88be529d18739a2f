"""How a reference function is called: on one task, or on a Kafka feed batch of tasks.

A notebook (or `wsk action invoke`) passes one task's arguments; the event path fires the
function with OpenWhisk kafkaFeed's `{"messages": [{"value": <task>, ...}, ...]}`. `handle()`
serves both, with the same rules in every function: bad input (a FunctionError) answers
`{"error": ...}`, a bug answers one clear line and leaves its trace in the logs, and a batch
answers task by task, with an `error` as soon as one task failed, so that the activation
is recorded as failed. `flag_arg()` and `url_arg()` read the arguments the functions share.
"""

import json
import sys
import traceback
import urllib.parse

from storagehttp import FunctionError, redact

TRUE, FALSE = ("true", "yes", "1"), ("false", "no", "0", "")


def call(handler, args, name):
    """`handler(args)`, with errors as results: the OpenWhisk way, never a stack trace."""
    try:
        return handler(args)
    except FunctionError as e:
        return {"error": str(e)}
    except Exception as e:  # a bug or an unforeseen file: one clear line, the trace in the logs
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{name} failed unexpectedly: {type(e).__name__}: {e}"}


def handle(args, handler, name, noun, *, brief=None, summary=None):
    """`handler(args) -> dict` on one task, or on each task of a feed batch.

    In a batch, the other keys of `args` (the action's default parameters) apply to every
    task. `brief(result)` shortens a task's result in the batch answer (what went to storage
    need not come back), `summary(results)` adds counts to it, and `noun` names the tasks
    in its error ("3 of 5 previews failed")."""
    messages = args.get("messages")
    if not isinstance(messages, list):
        return call(handler, args, name)
    defaults = {k: v for k, v in args.items() if k != "messages"}
    results = []
    for m in messages:
        value = m.get("value") if isinstance(m, dict) else None
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                value = None
        if not isinstance(value, dict):
            results.append({"error": "message value is not a task object"})
            continue
        res = call(handler, {**defaults, **value}, name)
        if brief:
            res = brief(res)
        if isinstance(value.get("task_id"), str):
            res["task_id"] = value["task_id"]
        results.append(res)
    failed = [r for r in results if "error" in r]
    out = {"results": results, "count": len(results), "failed": len(failed), **(summary(results) if summary else {})}
    if failed:
        out = {"error": failed[0]["error"] if len(failed) == 1 else
               f"{len(failed)} of {len(results)} {noun} failed", **out}
    return out


def flag_arg(args, key, default):
    """A boolean argument; "true"/"false" (and yes/no, 1/0, "" for false) as a web form sends them."""
    v = args.get(key, default)
    if isinstance(v, str) and v.strip().lower() in TRUE + FALSE:
        return v.strip().lower() in TRUE
    if not isinstance(v, bool):
        raise FunctionError(f"'{key}' must be true or false, got {v!r}")
    return v


def url_arg(args, key, what, required=True):
    """An http(s) URL argument (`what` says what it is for, in the error); None when optional and absent."""
    v = args.get(key)
    if v is None and not required:
        return None
    if not isinstance(v, str) or not v.strip():
        if required:
            raise FunctionError(f"'{key}' ({what}) is required")
        raise FunctionError(f"'{key}' ({what}) must be an http(s) URL, got {v!r}")
    v = v.strip()
    if urllib.parse.urlsplit(v).scheme not in ("http", "https"):
        raise FunctionError(f"'{key}' must be an http(s) URL, got {redact(v)!r}")
    return v
