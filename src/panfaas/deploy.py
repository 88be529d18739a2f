"""Idempotent deployment of OpenWhisk entities: what the Ansible modules (plugins/modules/
openwhisk_*) call.

Each `ensure_*` reads the deployed entity, compares it with the desired one, and writes only
when they differ, so a second run reports no change; in check mode it only reports. The same
code deploys to the all-in-one runtime and to a site's OpenWhisk controller: it uses only
OpenWhisk's REST API, as `wsk` does (PUT ?overwrite=true, the feed action's lifecycle
events, rule status changes).
"""

from __future__ import annotations

import base64
import io
import zipfile
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from .client import ClientError, Functions

FEED_KAFKA = "/whisk.system/messaging/kafkaFeed"
NATIVE_IMAGE = "openwhisk/dockerskeleton"   # what `wsk action create --native` uses
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
# Files of a function directory that are not the action's code: its description, its image
# recipe, its tests, and requirements.txt (the image installs them; shipped in the code, the
# python runtime would pip install them at every cold start).
NOT_CODE = ("function.yml", "Dockerfile", "README.md", "requirements.txt")


def action_code(src: str | Path, include: Sequence[str | Path] = ()) -> tuple[str, bool]:
    """(code, binary) for a function file or directory: a single `__main__.py` or `exec` as
    text; a directory with more than that as a deterministic base64 zip (fixed timestamps,
    sorted names), so that unchanged code is no change.

    include: more files to ship beside the code, each at the top of the zip under its own name
    (modules shared by several functions, e.g. lib/storagehttp.py). A relative path is taken
    from the directory that holds `src` (functions/ for functions/hdf5-preview)."""
    p = Path(src)
    if p.is_file():
        if include:
            raise ValueError("include needs a function directory, not a single file")
        return p.read_text(), False
    files = {f.relative_to(p).as_posix(): f for f in p.rglob("*")
             if f.is_file() and "__pycache__" not in f.parts and f.name not in NOT_CODE
             and not f.name.endswith(".pyc") and "tests" not in f.relative_to(p).parts}
    for item in include:
        f = p.parent / item   # an absolute item stays itself
        if not f.is_file():
            raise ValueError(f"include {item}: no such file {f}")
        if f.name in files:
            raise ValueError(f"include {item}: {f.name} is already part of the code")
        files[f.name] = f
    names = sorted(files, key=PurePosixPath)  # by path components, as the zips always were
    if names in (["__main__.py"], ["exec"]):
        return files[names[0]].read_text(), False
    if not names:
        raise ValueError(f"{p}: no code (neither __main__.py nor exec)")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for name in names:
            info = zipfile.ZipInfo(name, ZIP_EPOCH)
            executable = name == "exec" or files[name].stat().st_mode & 0o111
            info.external_attr = (0o755 if executable else 0o644) << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            z.writestr(info, files[name].read_bytes())
    return base64.b64encode(buf.getvalue()).decode(), True


def as_kv(d: dict | None) -> list[dict]:
    return [{"key": k, "value": v} for k, v in sorted((d or {}).items())]


def _kv_dict(items: Any) -> dict:
    return {i["key"]: i.get("value") for i in items or [] if isinstance(i, dict) and "key" in i}


# Annotations the controller adds itself; they are not part of what a deployment asks for.
SYSTEM_ANNOTATIONS = ("exec", "provide-api-key", "binding")


def _user_annotations(doc: dict) -> dict:
    return {k: v for k, v in _kv_dict(doc.get("annotations")).items() if k not in SYSTEM_ANNOTATIONS}


def _same_action(cur: dict, want: dict, inherited: dict | None = None) -> bool:
    """inherited: the package's parameters, which a GET of a packaged action merges in."""
    ce, we = cur.get("exec", {}), want["exec"]
    for k in ("kind", "code", "image"):
        if we.get(k) is not None and ce.get(k) != we.get(k):
            return False
    if we.get("components") is not None:
        cur_comps = [_tail(c) for c in ce.get("components") or []]
        want_comps = [_tail(c) for c in we["components"]]
        if len(cur_comps) != len(want_comps):
            return False
        for (wn, wt), (cn, ct) in zip(want_comps, cur_comps, strict=True):
            if wt != ct or (wn is not None and wn != cn):
                return False
    if (we.get("main") or "main") != (ce.get("main") or "main"):
        return False
    if we.get("code") is None and ce.get("code") and we.get("kind") != "sequence":
        return False  # code is to be removed (a blackbox action on its image only)
    for k, v in want.get("limits", {}).items():
        if cur.get("limits", {}).get(k) != v:
            return False
    cur_params = {k: v for k, v in _kv_dict(cur.get("parameters")).items() if k != "_actions"}
    want_params = _kv_dict(want.get("parameters"))
    for k, v in (inherited or {}).items():
        if k not in want_params and cur_params.get(k) == v:
            cur_params.pop(k)
    if cur_params != want_params:
        return False
    return _user_annotations(cur) == _kv_dict(want.get("annotations"))


def ensure_action(fn: Functions, name: str, exec_: dict, *, limits: dict | None = None,
                  parameters: dict | None = None, annotations: dict | None = None,
                  state: str = "present", check_mode: bool = False) -> dict:
    cur = fn.get("actions", name)
    if state == "absent":
        if cur and not check_mode:
            fn.delete("actions", name)
        return {"changed": cur is not None}
    exec_ = dict(exec_)
    if exec_.get("kind") == "blackbox" and not exec_.get("image"):
        exec_["image"] = NATIVE_IMAGE
    want = {"exec": exec_, "limits": limits or {}, "parameters": as_kv(parameters),
            "annotations": as_kv(annotations)}
    inherited = {}
    if cur and "/" in name:
        pkg = fn.get("packages", name.split("/", 1)[0]) or {}
        inherited = _kv_dict(pkg.get("parameters"))
    if cur and _same_action(cur, want, inherited):
        return {"changed": False, "action": cur}
    if check_mode:
        return {"changed": True}
    return {"changed": True, "action": fn.put("actions", name, want, overwrite=True)}


def ensure_package(fn: Functions, name: str, *, parameters: dict | None = None,
                   annotations: dict | None = None, binding: str | None = None, state: str = "present",
                   check_mode: bool = False) -> dict:
    """binding: '/namespace/package' to make this a package binding (`wsk package bind`)."""
    cur = fn.get("packages", name)
    if state == "absent":
        if cur and not check_mode:
            fn.delete("packages", name)
        return {"changed": cur is not None}
    want: dict[str, Any] = {"parameters": as_kv(parameters), "annotations": as_kv(annotations)}
    want_binding = None
    if binding:
        ns, _, pkg = binding.strip("/").partition("/")
        want_binding = {"namespace": ns, "name": pkg}
        want["binding"] = want_binding
    if cur is not None:
        cur_binding = cur.get("binding") or None
        same_binding = (cur_binding is None) == (want_binding is None) and (
            want_binding is None or (cur_binding["name"] == want_binding["name"]
                                     and want_binding["namespace"] in ("_", cur_binding["namespace"])))
        params = _kv_dict(cur.get("parameters"))
        if want_binding and cur_binding:  # a GET of a binding merges the bound package's parameters
            base = fn.get("packages", f"{cur_binding['name']}") if cur_binding["namespace"] == \
                cur.get("namespace") else None
            for k, v in _kv_dict((base or {}).get("parameters")).items():
                if k not in (parameters or {}) and params.get(k) == v:
                    params.pop(k)
        if same_binding and params == (parameters or {}) and _user_annotations(cur) == (annotations or {}):
            return {"changed": False, "package": cur}
    if check_mode:
        return {"changed": True}
    return {"changed": True, "package": fn.put("packages", name, want, overwrite=True)}


def _feed_config(fn: Functions, feed: str, trigger_fq: str, auth: str) -> dict | None:
    """The feed's configuration (lifecycle event READ), None when the trigger has no feed."""
    try:
        return fn.feed(feed, "READ", trigger_fq, auth).get("config", {})
    except ClientError:
        return None


def ensure_trigger(fn: Functions, name: str, *, parameters: dict | None = None,
                   feed: str | None = None, feed_parameters: dict | None = None,
                   auth: str | None = None, state: str = "present",
                   check_mode: bool = False) -> dict:
    """A trigger, optionally fed (`wsk trigger create T --feed F -p ...`): PUT the trigger with
    the `feed` annotation, then the feed's CREATE lifecycle event. A feed whose configuration
    changed is deleted and created again (the provider keeps the trigger's consumer group, so
    the topic is resumed where it was, not read again)."""
    cur = fn.get("triggers", name)
    trigger_fq = f"/_/{name}"
    auth = auth or ""
    if state == "absent":
        if cur and not check_mode:
            feed_of = _kv_dict(cur.get("annotations")).get("feed")
            if feed_of:
                try:
                    fn.feed(feed_of, "DELETE", trigger_fq, auth)
                except ClientError:
                    pass  # no feed left to delete: the trigger goes anyway
            fn.delete("triggers", name)
        return {"changed": cur is not None}
    annotations = {"feed": feed} if feed else {}
    feed_parameters = feed_parameters or {}
    same_trigger = cur is not None and _kv_dict(cur.get("parameters")) == (parameters or {}) and \
        _kv_dict(cur.get("annotations")) == annotations
    config = _feed_config(fn, feed, trigger_fq, auth) if feed and cur is not None else None
    same_feed = not feed or (config is not None and all(config.get(k) == v for k, v in feed_parameters.items()))
    if same_trigger and same_feed:
        return {"changed": False, "trigger": cur}
    if check_mode:
        return {"changed": True}
    doc = fn.put("triggers", name, {"parameters": as_kv(parameters), "annotations": as_kv(annotations)},
                 overwrite=True)
    if feed and not same_feed:
        if config is not None:
            fn.feed(feed, "DELETE", trigger_fq, auth)
        fn.feed(feed, "CREATE", trigger_fq, auth, **feed_parameters)
    return {"changed": True, "trigger": doc}


def _tail(ref: str) -> tuple[str | None, str]:
    """'/ns/pkg/name' -> (ns or None for '_', 'pkg/name')."""
    parts = ref.strip("/").split("/")
    if len(parts) == 1:
        return None, parts[0]
    return (None if parts[0] == "_" else parts[0]), "/".join(parts[1:])


def _same_ref(cur: dict, want: str) -> bool:
    ns, tail = _tail(want)
    path = cur.get("path", "")
    cur_ns, _, cur_pkg = path.partition("/")
    cur_tail = f"{cur_pkg}/{cur.get('name')}" if cur_pkg else cur.get("name")
    return cur_tail == tail and (ns is None or ns == cur_ns)


def ensure_rule(fn: Functions, name: str, *, trigger: str, action: str, active: bool = True,
                state: str = "present", check_mode: bool = False) -> dict:
    cur = fn.get("rules", name)
    if state == "absent":
        if cur and not check_mode:
            fn.delete("rules", name)
        return {"changed": cur is not None}
    status = "active" if active else "inactive"
    if cur is not None and _same_ref(cur.get("trigger", {}), trigger) and _same_ref(cur.get("action", {}), action):
        if cur.get("status") == status:
            return {"changed": False, "rule": cur}
        if check_mode:
            return {"changed": True}
        fn.rule_status(name, status)
        return {"changed": True, "rule": {**cur, "status": status}}
    if check_mode:
        return {"changed": True}
    doc = fn.put("rules", name, {"trigger": trigger, "action": action}, overwrite=True)
    if doc.get("status") != status:
        fn.rule_status(name, status)
        doc["status"] = status
    return {"changed": True, "rule": doc}
