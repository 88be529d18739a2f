"""Idempotent Heat stacks: decide whether a stack must be created or updated.

openstack.cloud.stack always updates an existing stack and reports `changed`. The
openstack_stack role therefore stamps each stack with a tag carrying a digest of everything
the stack is built from (the template, every nested template and get_file file it pulls in,
the environment files, the parameters) and only calls the module when the digest differs from
the tag the stack carries, or when the stack's last operation failed.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .heatcheck import TEMPLATE_SUFFIXES, is_template_type

TAG_PREFIX = "panfaas-digest-"


class StackStateError(RuntimeError):
    """The stack is in a state where Ansible must not touch it (an operation in progress)."""


def referenced_files(template: Path) -> list[Path]:
    """The template and every local file it pulls in: nested templates used as resource types
    (recursively) and get_file targets, as Heat's client uploads them."""
    seen: dict[Path, None] = {}

    def visit(path: Path) -> None:
        path = path.resolve()
        if path in seen:
            return
        seen[path] = None
        data = yaml.safe_load(path.read_text()) if path.suffix in TEMPLATE_SUFFIXES else None
        if not isinstance(data, dict):
            return
        for spec in (data.get("resources") or {}).values():
            kind = spec.get("type") if isinstance(spec, dict) else None
            if is_template_type(kind) and (path.parent / kind).is_file():
                visit(path.parent / kind)
        for name in _get_files(data):
            if "://" not in name and (path.parent / name).is_file():
                seen.setdefault((path.parent / name).resolve(), None)

    visit(template)
    return list(seen)


def _get_files(value: Any):
    if isinstance(value, dict):
        if len(value) == 1 and isinstance(value.get("get_file"), str):
            yield value["get_file"]
        for v in value.values():
            yield from _get_files(v)
    elif isinstance(value, list):
        for v in value:
            yield from _get_files(v)


def digest(template: Path, environments: list[Path] | None = None, parameters: dict | None = None) -> str:
    """sha256 over the template's files, the environments (in order) and the parameters."""
    template = Path(template).resolve()
    base = template.parent
    files = {}
    for f in referenced_files(template):
        try:
            key = str(f.relative_to(base))
        except ValueError:
            key = str(f)
        files[key] = hashlib.sha256(f.read_bytes()).hexdigest()
    envs = [hashlib.sha256(Path(e).read_bytes()).hexdigest() for e in environments or []]
    blob = json.dumps({"template": template.name, "files": files, "environments": envs,
                       "parameters": parameters or {}}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def tag(value: str) -> str:
    """The stack tag that carries a digest (Heat tags are short strings without commas)."""
    return TAG_PREFIX + value[:32]


def outputs(stack: dict | None) -> dict[str, Any]:
    """A stack's outputs (openstacksdk's list of output_key/output_value) as a dict."""
    result = {}
    for item in (stack or {}).get("outputs") or []:
        if isinstance(item, dict) and "output_key" in item:
            result[item["output_key"]] = item.get("output_value")
    return result


def placeholder_outputs(template: Path, name: str) -> dict[str, str]:
    """Stand-ins for the outputs of a stack that does not exist yet (check mode), so that the
    stages after it can still be dry-run."""
    data = yaml.safe_load(Path(template).read_text()) or {}
    return {key: f"({name}:{key}, known once the stack exists)" for key in data.get("outputs") or {}}


@dataclass(frozen=True)
class Plan:
    action: str   # create | update | none
    reason: str
    tag: str
    digest: str


def plan(name: str, current: dict | None, wanted_digest: str) -> Plan:
    """What to do with stack `name`, given what stack_info returned for it (None: absent)."""
    wanted = tag(wanted_digest)
    if not current:
        return Plan("create", "the stack does not exist", wanted, wanted_digest)
    status = str(current.get("status") or current.get("stack_status") or "")
    if status.endswith("_IN_PROGRESS"):
        raise StackStateError(f"stack {name} is {status}: wait for it to finish "
                              f"(openstack stack event list {name}) and run again")
    if status.startswith("DELETE_"):
        raise StackStateError(f"stack {name} is {status}: delete it (openstack stack delete {name}) "
                              "or see docs/runbooks/site-teardown.md, then run again")
    tags = current.get("tags") or []
    if isinstance(tags, str):
        tags = [t.strip() for t in tags.split(",")]
    if status.endswith("_FAILED"):
        return Plan("update", f"its last operation ended {status}", wanted, wanted_digest)
    if wanted not in tags:
        old = next((t for t in tags if t.startswith(TAG_PREFIX)), None)
        why = "the template, environment or parameters changed" if old else "it carries no digest tag yet"
        return Plan("update", why, wanted, wanted_digest)
    return Plan("none", f"unchanged ({status})", wanted, wanted_digest)
