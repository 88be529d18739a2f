"""The entities of every namespace: create, update, read, delete, list, and resolving an
action name (through its package or package binding) to what runs and with which defaults.

Names are unique across a namespace's actions, triggers, rules and packages (OpenWhisk keeps
them in one document store): a name taken by another collection is a 409. Parsed documents
are cached in memory: this process is the only writer, and an action's code (a zip can be
tens of MB) must not be parsed again for every invocation.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from . import entities as ent
from . import errors
from .errors import ApiError
from .store import Store

SYSTEM_NAMESPACE = "whisk.system"
FEED_PACKAGE = "messaging"
FEED_ACTION = "kafkaFeed"
FEED_PATH = f"/{SYSTEM_NAMESPACE}/{FEED_PACKAGE}/{FEED_ACTION}"

# The one system package this runtime provides (openwhisk-package-kafka's catalog).
SYSTEM_ENTITIES = {
    ("packages", FEED_PACKAGE): {
        "namespace": SYSTEM_NAMESPACE, "name": FEED_PACKAGE, "version": "0.0.1", "publish": True, "binding": {},
        "parameters": [], "updated": 0,
        "annotations": [{"key": "description", "value": "Kafka feed: fire a trigger for the messages of a topic"}],
        "actions": [{"name": FEED_ACTION, "version": "0.0.1", "annotations": [{"key": "feed", "value": True}]}],
        "feeds": []},
    ("actions", f"{FEED_PACKAGE}/{FEED_ACTION}"): {
        "namespace": f"{SYSTEM_NAMESPACE}/{FEED_PACKAGE}", "name": FEED_ACTION, "version": "0.0.1", "publish": True,
        "exec": {"kind": "blackbox", "image": "panfaas/kafka-feed-provider", "binary": False},
        "annotations": [{"key": "feed", "value": True},
                        {"key": "description", "value": "lifecycleEvent CREATE, READ, UPDATE or DELETE with "
                                                        "triggerName, brokers, topic, isJSONData, isBinaryKey, "
                                                        "isBinaryValue"}],
        "parameters": [],
        "limits": dict(ent.DEFAULT_LIMITS), "updated": 0},
}


@dataclasses.dataclass
class Resolved:
    """An action ready to run: its document, the defaults it inherits (package < binding <
    action), and where it lives."""
    doc: dict
    params: dict
    namespace: str          # the action's own namespace (a binding may point elsewhere)
    fullname: str           # [package/]name inside that namespace
    binding: str | None = None  # 'ns/binding' when invoked through a package binding

    @property
    def path(self) -> str:
        return f"{self.namespace}/{self.fullname}"

    @property
    def is_feed(self) -> bool:
        return self.namespace == SYSTEM_NAMESPACE and self.fullname == f"{FEED_PACKAGE}/{FEED_ACTION}"


def split(fullname: str) -> tuple[str | None, str]:
    pkg, _, name = fullname.rpartition("/")
    return (pkg or None), name


def locate(path: str, name: str) -> tuple[str, str]:
    """An entity reference as rules and `fq_name` hold it, (path 'ns' or 'ns/pkg', name), as
    what `resolve` takes: (ns, '[pkg/]name')."""
    ns, _, pkg = path.partition("/")
    return ns, f"{pkg}/{name}" if pkg else name


class Catalog:
    def __init__(self, store: Store, ranges: dict | None = None):
        self.store = store
        self.ranges = ranges or dict(ent.DEFAULT_RANGES)
        self.cache: dict[tuple[str, str, str], dict | None] = {}

    # -- plumbing ---------------------------------------------------------
    def get(self, ns: str, kind: str, name: str) -> dict | None:
        if ns == SYSTEM_NAMESPACE:
            return SYSTEM_ENTITIES.get((kind, name))
        key = (ns, kind, name)
        if key not in self.cache:
            self.cache[key] = self.store.get(ns, kind, name)
        return self.cache[key]

    def _put(self, ns: str, kind: str, name: str, doc: dict) -> dict:
        self.store.put(ns, kind, name, doc, doc.get("updated", ent.now_ms()))
        self.cache[(ns, kind, name)] = doc
        return doc

    def _delete(self, ns: str, kind: str, name: str) -> None:
        self.store.delete(ns, kind, name)
        self.cache.pop((ns, kind, name), None)

    def require(self, ns: str, kind: str, name: str) -> dict:
        doc = self.get(ns, kind, name)
        if doc is None:
            self._conformance(ns, kind, name)
            raise errors.not_found()
        return doc

    def _conformance(self, ns: str, kind: str, name: str) -> None:
        if "/" not in name and ns != SYSTEM_NAMESPACE:
            other = self.store.kind_of(ns, name)
            if other is not None and other != kind:
                raise ApiError(409, errors.WRONG_COLLECTION)

    def _existing(self, ns: str, kind: str, name: str, overwrite: bool) -> dict | None:
        if ns == SYSTEM_NAMESPACE:
            raise ApiError(403, errors.NOT_AUTHORIZED)
        old = self.get(ns, kind, name)
        if old is None:
            self._conformance(ns, kind, name)
        elif not overwrite:
            raise ApiError(409, errors.CONFLICT)
        return old

    def list(self, ns: str, kind: str, limit: int, skip: int, prefix: str | None = None) -> list[dict]:
        if ns == SYSTEM_NAMESPACE:
            docs = [d for (k, n), d in SYSTEM_ENTITIES.items()
                    if k == kind and (prefix is None or n.startswith(prefix))]
            return docs[skip:skip + limit]
        # Like `wsk action list`, the namespace's list holds the actions of its packages too;
        # GET .../actions/{package}/ lists one package's.
        return self.store.list(ns, kind, prefix, limit=limit, skip=skip)

    def count(self, ns: str, kind: str, prefix: str | None = None) -> int:
        return self.store.count(ns, kind, prefix)

    # -- actions ----------------------------------------------------------
    def put_action(self, ns: str, fullname: str, body: dict, overwrite: bool) -> dict:
        pkg, name = split(fullname)
        ent.check_name(name)
        if pkg:
            pdoc = self.require(ns, "packages", pkg)
            if pdoc.get("binding"):
                raise ApiError(400, errors.NOT_ALLOWED_ON_BINDING)
        old = self._existing(ns, "actions", fullname, overwrite)
        components = None
        exec_ = (body.get("exec") or {}) if isinstance(body.get("exec"), dict) else {}
        if exec_.get("kind") == "sequence":
            components = self._check_sequence(ns, fullname, exec_.get("components"))
        return self._put(ns, "actions", fullname, ent.action_doc(ns, pkg, name, body, old, self.ranges, components))

    def _check_sequence(self, ns: str, fullname: str, comps: Any) -> list[str]:
        if not isinstance(comps, list) or not comps:
            raise ApiError(400, errors.SEQUENCE_EMPTY)
        if len(comps) > ent.MAX_SEQUENCE:
            raise ApiError(400, errors.SEQUENCE_TOO_LONG)
        resolved = []
        for c in comps:
            path, name = ent.fq_name(c, ns)
            cns, cfull = locate(path, name)
            if (cns, cfull) == (ns, fullname):
                raise ApiError(400, errors.SEQUENCE_CYCLIC)
            try:
                r = self.resolve(cns, cfull)
            except ApiError:
                raise ApiError(400, errors.SEQUENCE_COMPONENT_MISSING) from None
            if r.doc["exec"]["kind"] == "sequence" and f"/{ns}/{fullname}" in self._atomic(r.doc, 0):
                raise ApiError(400, errors.SEQUENCE_CYCLIC)
            resolved.append(f"/{path}/{name}")
        return resolved

    def _atomic(self, seq: dict, depth: int) -> set[str]:
        """Every action a sequence reaches (to find cycles)."""
        if depth > ent.MAX_SEQUENCE:
            raise ApiError(400, errors.SEQUENCE_TOO_LONG)
        out: set[str] = set()
        for c in seq["exec"].get("components", []):
            out.add(c)
            cns, _, cfull = c.strip("/").partition("/")
            doc = self.get(cns, "actions", cfull)
            if doc and doc["exec"]["kind"] == "sequence":
                out |= self._atomic(doc, depth + 1)
        return out

    def get_action(self, ns: str, fullname: str, code: bool = True) -> dict:
        r = self.resolve(ns, fullname)
        doc = dict(r.doc, parameters=[{"key": k, "value": v} for k, v in r.params.items()]
                   if r.binding or split(fullname)[0] else r.doc.get("parameters", []))
        if not code:
            doc["exec"] = {k: v for k, v in doc["exec"].items() if k != "code"}
        return doc

    def delete_action(self, ns: str, fullname: str) -> dict:
        pkg, _ = split(fullname)
        if pkg:
            pdoc = self.require(ns, "packages", pkg)
            if pdoc.get("binding"):
                raise ApiError(400, errors.NOT_ALLOWED_ON_BINDING)
        if ns == SYSTEM_NAMESPACE:
            raise ApiError(403, errors.NOT_AUTHORIZED)
        doc = self.require(ns, "actions", fullname)
        self._delete(ns, "actions", fullname)
        return doc

    def resolve(self, ns: str, fullname: str) -> Resolved:
        """The action `fullname` of `ns`, through its package (and binding): 404 if any is missing."""
        pkg, name = split(fullname)
        if not pkg:
            doc = self.require(ns, "actions", name)
            return Resolved(doc, ent.kv(doc.get("parameters")), ns, name)
        pdoc = self.require(ns, "packages", pkg)
        params: dict = {}
        binding = None
        target_ns, target_pkg = ns, pkg
        if pdoc.get("binding"):
            b = pdoc["binding"]
            target_ns, target_pkg = b["namespace"], b["name"]
            base = self.get(target_ns, "packages", target_pkg)
            if base is None:
                raise errors.not_found()
            params.update(ent.kv(base.get("parameters")))
            binding = f"{ns}/{pkg}"
        params.update(ent.kv(pdoc.get("parameters")))
        doc = self.require(target_ns, "actions", f"{target_pkg}/{name}")
        params.update(ent.kv(doc.get("parameters")))
        return Resolved(doc, params, target_ns, f"{target_pkg}/{name}", binding)

    # -- packages ---------------------------------------------------------
    def put_package(self, ns: str, name: str, body: dict, overwrite: bool, readable: set[str]) -> dict:
        """readable: namespaces whose (published) packages may be bound."""
        ent.check_name(name)
        if name == "default":
            raise errors.package_name_reserved(name)
        old = self._existing(ns, "packages", name, overwrite)
        binding = None
        if body.get("binding"):
            if old is not None and not old.get("binding"):
                raise ApiError(409, errors.PACKAGE_CANNOT_BECOME_BINDING)
            b = body["binding"]
            if not isinstance(b, dict) or not isinstance(b.get("name"), str) or not isinstance(b.get("namespace"), str):
                raise errors.malformed("'binding' must be {\"namespace\": string, \"name\": string}")
            bns = ns if b["namespace"] == "_" else b["namespace"]
            target = self.get(bns, "packages", b["name"])
            if target is None or (bns != ns and bns not in readable and not target.get("publish")):
                raise ApiError(400, errors.BINDING_MISSING)
            if target.get("binding"):
                raise ApiError(400, errors.BINDING_OF_BINDING)
            binding = {"namespace": bns, "name": b["name"]}
        elif old is not None and old.get("binding"):
            binding = old["binding"]
        return self._put(ns, "packages", name, ent.package_doc(ns, name, body, old, binding))

    def get_package(self, ns: str, name: str) -> dict:
        doc = self.require(ns, "packages", name)
        if ns == SYSTEM_NAMESPACE:
            return doc
        params = ent.kv(doc.get("parameters"))
        base_ns, base_name = ns, name
        if doc.get("binding"):
            base_ns, base_name = doc["binding"]["namespace"], doc["binding"]["name"]
            base = self.get(base_ns, "packages", base_name)
            if base is None:
                raise errors.not_found()
            if base_ns == SYSTEM_NAMESPACE:
                return dict(doc, parameters=[{"key": k, "value": v} for k, v in
                                             {**ent.kv(base.get("parameters")), **params}.items()],
                            actions=base["actions"], feeds=base.get("feeds", []))
            params = {**ent.kv(base.get("parameters")), **params}
        members = self.store.list(base_ns, "actions", base_name + "/")
        return dict(doc, parameters=[{"key": k, "value": v} for k, v in params.items()],
                    actions=[{"name": a["name"], "version": a["version"], "annotations": a["annotations"]}
                             for a in members], feeds=[])

    def delete_package(self, ns: str, name: str, force: bool) -> dict:
        if ns == SYSTEM_NAMESPACE:
            raise ApiError(403, errors.NOT_AUTHORIZED)
        doc = self.require(ns, "packages", name)
        if not doc.get("binding"):
            members = self.store.list(ns, "actions", name + "/")
            if members and not force:
                raise errors.package_not_empty(len(members))
            for a in members:
                self._delete(ns, "actions", f"{name}/{a['name']}")
        self._delete(ns, "packages", name)
        return doc

    # -- triggers ---------------------------------------------------------
    def put_trigger(self, ns: str, name: str, body: dict, overwrite: bool) -> dict:
        ent.check_name(name)
        old = self._existing(ns, "triggers", name, overwrite)
        return self.with_rules(self._put(ns, "triggers", name, ent.trigger_doc(ns, name, body, old)))

    def rules_of(self, ns: str, trigger: str) -> list[dict]:
        return [r for r in self.store.list(ns, "rules")
                if r["trigger"]["path"] == ns and r["trigger"]["name"] == trigger]

    def with_rules(self, tdoc: dict) -> dict:
        ns = tdoc["namespace"]
        rules = {f"{ns}/{r['name']}": {"action": r["action"], "status": r["status"]}
                 for r in self.rules_of(ns, tdoc["name"])}
        return dict(tdoc, rules=rules) if rules else tdoc

    def get_trigger(self, ns: str, name: str) -> dict:
        return self.with_rules(self.require(ns, "triggers", name))

    def delete_trigger(self, ns: str, name: str) -> dict:
        if ns == SYSTEM_NAMESPACE:
            raise ApiError(403, errors.NOT_AUTHORIZED)
        doc = self.get_trigger(ns, name)
        self._delete(ns, "triggers", name)
        return doc

    # -- rules ------------------------------------------------------------
    def put_rule(self, ns: str, name: str, body: dict, overwrite: bool) -> dict:
        ent.check_name(name)
        old = self._existing(ns, "rules", name, overwrite)
        if old is None and not (body.get("trigger") and body.get("action")):
            raise ApiError(400, errors.RULE_NEEDS_TRIGGER_AND_ACTION)
        trigger = ent.fq_name(body["trigger"], ns) if body.get("trigger") else \
            (old["trigger"]["path"], old["trigger"]["name"])
        action = ent.fq_name(body["action"], ns) if body.get("action") else \
            (old["action"]["path"], old["action"]["name"])
        if "/" in trigger[0] or self.get(trigger[0], "triggers", trigger[1]) is None:
            raise ApiError(400, f"trigger /{trigger[0]}/{trigger[1]} does not exist")
        try:
            self.resolve(*locate(*action))
        except ApiError:
            raise ApiError(400, f"action /{action[0]}/{action[1]} does not exist") from None
        return self._put(ns, "rules", name, ent.rule_doc(ns, name, body, old, trigger, action))

    def get_rule(self, ns: str, name: str) -> dict:
        doc = self.require(ns, "rules", name)
        if self.get(doc["trigger"]["path"], "triggers", doc["trigger"]["name"]) is None:
            return dict(doc, status="inactive")
        return doc

    def set_rule_status(self, ns: str, name: str, status: Any) -> None:
        if status not in ("active", "inactive"):
            raise errors.malformed("'status' must be 'active' or 'inactive'")
        doc = self.require(ns, "rules", name)
        if self.get(doc["trigger"]["path"], "triggers", doc["trigger"]["name"]) is None:
            raise ApiError(404, errors.RULE_TRIGGER_MISSING)
        if doc["status"] != status:
            self._put(ns, "rules", name, dict(doc, status=status, updated=ent.now_ms()))

    def delete_rule(self, ns: str, name: str) -> dict:
        if ns == SYSTEM_NAMESPACE:
            raise ApiError(403, errors.NOT_AUTHORIZED)
        doc = self.require(ns, "rules", name)
        self._delete(ns, "rules", name)
        return dict(doc, status="inactive")

    # -- feeds (the Kafka feed provider's trigger documents) ---------------
    def feed(self, ns: str, trigger: str) -> dict | None:
        return self.store.get(ns, "feeds", trigger)

    def put_feed(self, ns: str, trigger: str, conf: dict) -> None:
        self.store.put(ns, "feeds", trigger, {"trigger": trigger, "config": conf, "dateChanged": ent.now_ms()},
                       ent.now_ms())

    def delete_feed(self, ns: str, trigger: str) -> bool:
        return self.store.delete(ns, "feeds", trigger)
