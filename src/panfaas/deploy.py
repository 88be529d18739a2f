"""Idempotent deployment of OpenWhisk entities: what the Ansible modules call.

Each `ensure_*` compares the deployed entity with the desired one and only
writes when they differ, so a second run reports no change. The same code
deploys to the all-in-one runtime and to a site's OpenWhisk controller.
"""

from __future__ import annotations

import base64
import io
import zipfile
from pathlib import Path
from typing import Any

from .client import Functions

FEED_KAFKA = "/whisk.system/messaging/kafkaFeed"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)


def action_code(src: str | Path) -> tuple[str, bool]:
    """(code, binary) for a function file or directory: a single python file or
    `exec` as text; a directory with more than that as a deterministic base64 zip."""
    p = Path(src)
    if p.is_file():
        return p.read_text(), False
    files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts
                   and f.name not in ("function.yml", "Dockerfile", "README.md") and not f.name.endswith(".pyc")
                   and "tests" not in f.relative_to(p).parts)
    names = [f.relative_to(p).as_posix() for f in files]
    if names in (["__main__.py"], ["exec"]):
        return files[0].read_text(), False
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for f, name in zip(files, names, strict=True):
            info = zipfile.ZipInfo(name, ZIP_EPOCH)
            info.external_attr = (0o755 if name == "exec" else 0o644) << 16
            z.writestr(info, f.read_bytes(), zipfile.ZIP_DEFLATED)
    return base64.b64encode(buf.getvalue()).decode(), True


def as_kv(d: dict | None) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted((d or {}).items())]


def _kv_dict(items: Any) -> dict:
    return {i["key"]: i.get("value") for i in items or [] if isinstance(i, dict) and "key" in i}


SYSTEM_ANNOTATIONS = ("exec", "provide-api-key")


def _same_action(cur: dict, want: dict) -> bool:
    ce, we = cur.get("exec", {}), want["exec"]
    for k in ("kind", "code", "image", "main", "components"):
        if we.get(k) is not None and ce.get(k) != we.get(k):
            return False
    if "main" not in we and ce.get("main") not in (None, "main"):
        return False
    for k, v in want.get("limits", {}).items():
        if cur.get("limits", {}).get(k) != v:
            return False
    if _kv_dict(cur.get("parameters")) != _kv_dict(want.get("parameters")):
        return False
    cur_ann = {k: v for k, v in _kv_dict(cur.get("annotations")).items() if k not in SYSTEM_ANNOTATIONS}
    want_ann = {k: v for k, v in _kv_dict(want.get("annotations")).items() if k not in SYSTEM_ANNOTATIONS}
    return cur_ann == want_ann


def ensure_action(fn: Functions, name: str, exec_: dict, *, limits: dict | None = None,
                  parameters: dict | None = None, annotations: dict | None = None,
                  state: str = "present", check_mode: bool = False) -> dict:
    cur = fn.get("actions", name)
    if state == "absent":
        if cur and not check_mode:
            fn.delete("actions", name)
        return {"changed": cur is not None}
    want = {"exec": exec_, "limits": limits or {}, "parameters": as_kv(parameters),
            "annotations": as_kv(annotations)}
    if cur and _same_action(cur, want):
        return {"changed": False, "action": cur}
    if check_mode:
        return {"changed": True}
    return {"changed": True, "action": fn.put("actions", name, want, overwrite=True)}


def ensure_package(fn: Functions, name: str, *, parameters: dict | None = None,
                   annotations: dict | None = None, state: str = "present",
                   check_mode: bool = False) -> dict:
    cur = fn.get("packages", name)
    if state == "absent":
        if cur and not check_mode:
            fn.delete("packages", name)
        return {"changed": cur is not None}
    want = {"parameters": as_kv(parameters), "annotations": as_kv(annotations)}
    if cur and _kv_dict(cur.get("parameters")) == (parameters or {}) and \
            _kv_dict(cur.get("annotations")) == (annotations or {}):
        return {"changed": False, "package": cur}
    if check_mode:
        return {"changed": True}
    return {"changed": True, "package": fn.put("packages", name, want, overwrite=True)}


def ensure_trigger(fn: Functions, name: str, *, parameters: dict | None = None,
                   feed: str | None = None, feed_parameters: dict | None = None,
                   auth: str | None = None, state: str = "present",
                   check_mode: bool = False) -> dict:
    """A trigger, optionally fed (`wsk trigger create T --feed F -p ...`):
    PUT the trigger with the `feed` annotation, then the feed's CREATE lifecycle event."""
    cur = fn.get("triggers", name)
    trigger_fq = f"/_/{name}"
    if state == "absent":
        if cur and not check_mode:
            feed_of = _kv_dict(cur.get("annotations")).get("feed")
            if feed_of:
                fn.feed(feed_of, "DELETE", trigger_fq, auth or "")
            fn.delete("triggers", name)
        return {"changed": cur is not None}
    annotations = {"feed": feed} if feed else {}
    feed_parameters = feed_parameters or {}
    same_trigger = cur is not None and _kv_dict(cur.get("parameters")) == (parameters or {}) and \
        _kv_dict(cur.get("annotations")) == annotations
    same_feed = True
    if feed and cur is not None:
        try:
            config = fn.feed(feed, "READ", trigger_fq, auth or "").get("config", {})
        except Exception:
            config = None
        same_feed = config is not None and all(config.get(k) == v for k, v in feed_parameters.items())
    if same_trigger and same_feed:
        return {"changed": False, "trigger": cur}
    if check_mode:
        return {"changed": True}
    doc = fn.put("triggers", name, {"parameters": as_kv(parameters), "annotations": as_kv(annotations)},
                 overwrite=True)
    if feed:
        fn.feed(feed, "CREATE", trigger_fq, auth or "", **feed_parameters)
    return {"changed": True, "trigger": doc}


def ensure_rule(fn: Functions, name: str, *, trigger: str, action: str, active: bool = True,
                state: str = "present", check_mode: bool = False) -> dict:
    cur = fn.get("rules", name)
    if state == "absent":
        if cur and not check_mode:
            fn.delete("rules", name)
        return {"changed": cur is not None}

    def ref(x: dict) -> str:
        return f"{x.get('path')}/{x.get('name')}"

    trig_name = trigger.strip("/").split("/")[-1]
    act_parts = action.strip("/").split("/")
    act_tail = "/".join(act_parts[1:]) if len(act_parts) > 1 else act_parts[0]
    status = "active" if active else "inactive"
    if cur is not None:
        same = ref(cur.get("trigger", {})).endswith("/" + trig_name) and \
            ref(cur.get("action", {})).endswith("/" + act_tail) and cur.get("status") == status
        if same:
            return {"changed": False, "rule": cur}
    if check_mode:
        return {"changed": True}
    doc = fn.put("rules", name, {"trigger": trigger, "action": action}, overwrite=True)
    if doc.get("status") != status:
        fn.rule_status(name, status)
        doc["status"] = status
    return {"changed": True, "rule": doc}
