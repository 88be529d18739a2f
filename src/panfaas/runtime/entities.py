"""What a PUT of an action, trigger, rule or package stores, as OpenWhisk's controller builds it.

Create uses the body plus defaults; update (`?overwrite=true`) merges: every field the body
leaves out keeps its old value, limits field by field, and the patch version goes up
(Actions.scala `makeWhiskAction` / `updateWhiskAction`, and the same for the others).
Lookups in the store (does the package or the component exist?) are the caller's.
"""

from __future__ import annotations

import base64
import re
import time
from typing import Any

from . import errors
from .errors import ApiError, malformed

NAME_RE = re.compile(r"\A([\w]|[\w][\w@ .-]*[\w@.-]+)\Z")
BASE64_RE = re.compile(r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{3}=|[A-Za-z0-9+/]{2}==)?$")

PYTHON_KINDS = ("python:3", "python:3.9", "python:3.10", "python:3.11", "python:3.12", "python:default")
KINDS = (*PYTHON_KINDS, "blackbox", "sequence")
DEFAULT_LIMITS = {"timeout": 60000, "memory": 256, "logs": 10, "concurrency": 1}
# OpenWhisk's defaults, except memory: its maximum is 512 MB (deploy-kube raises it with
# whisk.limits.actions.memory.max); the all-in-one allows 2048 (runtime config `limits.ranges`).
DEFAULT_RANGES = {"timeout": (100, 300000), "memory": (128, 2048), "logs": (0, 10), "concurrency": (1, 1)}
LIMIT_TEXT = {"timeout": ("Time limit", "ms"), "memory": ("Memory", "MB"), "logs": ("Log size", "MB"),
              "concurrency": ("Concurrency limit", "")}
MAX_SEQUENCE = 50


def now_ms() -> int:
    return int(time.time() * 1000)


def check_name(name: str) -> None:
    if len(name) > 256 or not NAME_RE.match(name):
        raise ApiError(400, errors.ILLEGAL_NAME)


def bump(version: str) -> str:
    parts = str(version).split(".")
    try:
        parts[-1] = str(int(parts[-1]) + 1)
    except ValueError:
        return version
    return ".".join(parts)


def kv(params: Any) -> dict:
    """OpenWhisk's [{key, value}] list as a dict."""
    return {p["key"]: p.get("value") for p in params or [] if isinstance(p, dict) and "key" in p}


def annotation(doc: dict, key: str, default=None):
    return kv(doc.get("annotations")).get(key, default)


def kv_list(value: Any, field: str) -> list[dict]:
    """Validate a [{key, value}] list (parameters, annotations)."""
    if value is None:
        return []
    if not isinstance(value, list) or not all(isinstance(p, dict) and isinstance(p.get("key"), str)
                                              for p in value):
        raise malformed(f"'{field}' must be a list of {{\"key\": string, \"value\": any}} objects")
    out = []
    for p in value:
        item = {"key": p["key"], "value": p.get("value")}
        if p.get("init") is True:
            item["init"] = True
        out.append(item)
    return out


def is_binary_code(code: str) -> bool:
    """The controller decides `binary` itself (Exec.isBinaryCode): base64 text is a zip or binary."""
    t = code.strip()
    return len(t) > 0 and len(t) % 4 == 0 and BASE64_RE.match(t) is not None and _decodes(t)


def _decodes(t: str) -> bool:
    try:
        base64.b64decode(t, validate=True)
    except ValueError:
        return False
    return True


def fq_name(ref: Any, namespace: str) -> tuple[str, str]:
    """'/ns/[pkg/]name', 'ns/name' or 'name' -> (path, name) with '_' resolved; path is
    'ns' or 'ns/pkg'."""
    if not isinstance(ref, str) or not ref.strip("/"):
        raise malformed("a fully qualified entity name is required")
    parts = ref.strip("/").split("/")
    if len(parts) == 1 and not ref.startswith("/"):
        return namespace, parts[0]
    if len(parts) not in (2, 3):
        raise ApiError(400, "The fully qualified name of the entity must contain at least the namespace "
                            "and the name of the entity.")
    ns = namespace if parts[0] == "_" else parts[0]
    for p in parts[1:]:
        check_name(p)
    return "/".join([ns, *parts[1:-1]]), parts[-1]


def _version(body: dict, old: dict | None) -> str:
    v = body.get("version")
    if v is not None:
        if not isinstance(v, str) or not re.fullmatch(r"\d+\.\d+\.\d+", v):
            raise malformed("'version' must be a semantic version like 0.0.1")
        return v
    return bump(old["version"]) if old else "0.0.1"


def _publish(body: dict, old: dict | None) -> bool:
    p = body.get("publish")
    if p is None:
        return bool(old.get("publish", False)) if old else False
    if not isinstance(p, bool):
        raise malformed("'publish' must be a boolean")
    return p


def _annotations(body: dict, old: dict | None) -> list[dict]:
    anns = kv_list(body["annotations"], "annotations") if "annotations" in body and body["annotations"] is not None \
        else list((old or {}).get("annotations", []))
    drop = body.get("delAnnotations") or []
    if not isinstance(drop, list):
        raise malformed("'delAnnotations' must be a list of keys")
    return [a for a in anns if a["key"] not in drop]


def limits(body: dict, old: dict | None, ranges: dict) -> dict:
    out = dict(DEFAULT_LIMITS)
    if old:
        out.update(old.get("limits", {}))
    given = body.get("limits") or {}
    if not isinstance(given, dict):
        raise malformed("'limits' must be an object")
    for k, v in given.items():
        if k in DEFAULT_LIMITS and v is not None:
            out[k] = v
    for k, (lo, hi) in ranges.items():
        v = out[k]
        what, unit = LIMIT_TEXT[k]
        unit = f" {unit}" if unit else ""
        if not isinstance(v, int) or isinstance(v, bool):
            raise malformed(f"limits.{k} must be an integer")
        if v < lo:
            raise ApiError(400, f"{what} {v}{unit} below allowed threshold of {lo}{unit}.")
        if v > hi:
            raise ApiError(400, f"{what} {v}{unit} exceeds allowed threshold of {hi}{unit}.")
    return {k: out[k] for k in DEFAULT_LIMITS}


def exec_of(body: dict, old: dict | None) -> dict:
    """The validated `exec` (from the body, or the old action's on update)."""
    e = body.get("exec")
    if e is None:
        if old:
            return old["exec"]
        raise ApiError(400, errors.EXEC_UNDEFINED)
    if not isinstance(e, dict):
        raise malformed("'exec' must be an object")
    kind = e.get("kind")
    if kind not in KINDS:
        raise malformed(f"kind '{kind}' not in Set({', '.join(KINDS)})")
    if kind == "sequence":
        comps = e.get("components")
        if not isinstance(comps, list) or not all(isinstance(c, str) for c in comps):
            raise malformed("'components' must be a list of fully qualified action names for 'sequence' actions")
        return {"kind": kind, "components": comps}
    out: dict[str, Any] = {"kind": kind}
    code = e.get("code")
    if kind == "blackbox":
        if not isinstance(e.get("image"), str) or not e["image"]:
            raise malformed("'image' must be a string defined in 'exec' for 'blackbox' actions")
        out["image"] = e["image"]
        if code is not None and not isinstance(code, str):
            raise malformed("'code' must be a string defined in 'exec' for 'blackbox' actions")
    elif not isinstance(code, str) or not code:
        raise malformed(f"'code' must be a string or attachment object defined in 'exec' for '{kind}' actions")
    if code:
        out["code"] = code
    if e.get("main") is not None:
        if not isinstance(e["main"], str) or not e["main"]:
            raise malformed("'main' must be a non-empty string")
        out["main"] = e["main"]
    out["binary"] = bool(code) and is_binary_code(code)
    return out


def action_doc(namespace: str, pkg: str | None, name: str, body: dict, old: dict | None,
               ranges: dict, components: list[str] | None = None) -> dict:
    """components: the sequence's components already resolved to '/ns/[pkg/]name'."""
    exec_ = exec_of(body, old)
    if exec_["kind"] == "sequence":
        exec_ = {"kind": "sequence", "components": components if components is not None else exec_["components"]}
        params = [{"key": "_actions", "value": exec_["components"]}]
    elif "parameters" in body and body["parameters"] is not None:
        params = kv_list(body["parameters"], "parameters")
    elif old and old["exec"]["kind"] != "sequence":
        params = old.get("parameters", [])
    else:
        params = []
    anns = [a for a in _annotations(body, old) if a["key"] != "exec"]
    if "provide-api-key" not in kv(anns):
        anns.append({"key": "provide-api-key", "value": False})
    anns.append({"key": "exec", "value": exec_["kind"]})
    return {"namespace": f"{namespace}/{pkg}" if pkg else namespace, "name": name,
            "version": _version(body, old), "publish": _publish(body, old), "exec": exec_,
            "annotations": anns, "parameters": params, "limits": limits(body, old, ranges), "updated": now_ms()}


def action_summary(doc: dict) -> dict:
    """An action as the list view shows it (no code, no parameters)."""
    return {"namespace": doc["namespace"], "name": doc["name"], "version": doc["version"],
            "publish": doc["publish"], "annotations": doc["annotations"], "limits": doc["limits"],
            "exec": {"binary": doc["exec"].get("binary", False)}, "updated": doc["updated"]}


def trigger_doc(namespace: str, name: str, body: dict, old: dict | None) -> dict:
    anns = _annotations(body, old)
    feed = kv(anns).get("feed")
    if feed is not None and (not isinstance(feed, str) or not _valid_path(feed)):
        raise ApiError(400, errors.FEED_NAME_INVALID)
    params = kv_list(body["parameters"], "parameters") if body.get("parameters") is not None \
        else (old or {}).get("parameters", [])
    return {"namespace": namespace, "name": name, "version": _version(body, old), "publish": _publish(body, old),
            "parameters": params, "annotations": anns, "limits": {}, "updated": now_ms()}


def _valid_path(path: str) -> bool:
    parts = path.strip("/").split("/")
    return 1 <= len(parts) <= 3 and all(NAME_RE.match(p) or (i == 0 and p == "_") for i, p in enumerate(parts))


def package_doc(namespace: str, name: str, body: dict, old: dict | None, binding: dict | None) -> dict:
    """binding: {"namespace", "name"} already checked by the caller (as the name), or None."""
    anns = [a for a in _annotations(body, old) if a["key"] != "binding"]
    if binding:
        anns.append({"key": "binding", "value": binding})
    params = kv_list(body["parameters"], "parameters") if body.get("parameters") is not None \
        else (old or {}).get("parameters", [])
    return {"namespace": namespace, "name": name, "version": _version(body, old), "publish": _publish(body, old),
            "binding": binding or {}, "parameters": params, "annotations": anns, "updated": now_ms()}


def rule_doc(namespace: str, name: str, body: dict, old: dict | None, trigger: tuple[str, str],
             action: tuple[str, str]) -> dict:
    return {"namespace": namespace, "name": name, "version": _version(body, old), "publish": _publish(body, old),
            "annotations": _annotations(body, old),
            "status": old["status"] if old else "active",
            "trigger": {"path": trigger[0], "name": trigger[1]},
            "action": {"path": action[0], "name": action[1]}, "updated": now_ms()}
