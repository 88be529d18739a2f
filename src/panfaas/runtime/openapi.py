"""The OpenAPI document of what this runtime implements, served at GET /api/v1/api-docs.

Paths, parameters and bodies follow OpenWhisk's controller (apiv1swagger.json). A test
(tests/integration/test_runtime_openapi.py) checks that these paths and methods are exactly
the routes the server has, so the document cannot drift from the code.
"""

from __future__ import annotations

import copy

from .entities import KINDS

BASE = "/api/v1/namespaces/{namespace}"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict | str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": _ref(schema)
                                                                          if isinstance(schema, str) else schema}}}


def _error(description: str) -> dict:
    return _json("ErrorMessage", description)


def _param(name: str, where: str, description: str, schema: dict | None = None, required: bool = False) -> dict:
    return {"name": name, "in": where, "required": required or where == "path", "description": description,
            "schema": schema or {"type": "string"}}


NS = _param("namespace", "path", "The namespace, or `_` for the caller's")
BOOL = {"type": "boolean"}
INT = {"type": "integer"}
LIST = [_param("limit", "query", "Entries per page (default 30, 0 = 200, max 200)", INT),
        _param("skip", "query", "Entries to skip", INT),
        _param("count", "query", "Only count: {\"<collection>\": n}", BOOL)]
OVERWRITE = _param("overwrite", "query", "Update an existing entity (otherwise 409)", BOOL)
COMMON = {"401": _error("Missing or wrong credentials"), "403": _error("Not this caller's namespace"),
          "500": _error("Internal error")}


def _op(summary: str, tag: str, responses: dict, params: list | None = None, body: str | None = None,
        body_required: bool = False) -> dict:
    op = {"summary": summary, "tags": [tag], "parameters": params or [], "responses": {**responses, **COMMON}}
    if body:
        op["requestBody"] = {"required": body_required, "content": {"application/json": {"schema": _ref(body)}}}
    return op


def _entity(kind: str, tag: str, key: str, schema: str, put_schema: str, extra_params: list | None = None) -> dict:
    params = [NS, *(extra_params or []), _param(key, "path", f"The {kind} name")]
    return {
        "put": _op(f"Create or update a {kind}", tag, {
            "200": _json(schema, f"The {kind}"), "400": _error("Malformed request or invalid entity"),
            "404": _error("The package does not exist"),
            "409": _error(f"The {kind} exists and overwrite is not true, or the name is taken by another collection"),
            "413": _error("Request too large")}, [*params, OVERWRITE], put_schema, True),
        "get": _op(f"Get a {kind}", tag, {"200": _json(schema, f"The {kind}"), "404": _error("No such entity")},
                   params),
        "delete": _op(f"Delete a {kind}", tag, {"200": _json(schema, f"The deleted {kind}"),
                                                "404": _error("No such entity"),
                                                "409": _error("Package not empty")}, params),
    }


def _invoke(params: list) -> dict:
    return _op("Invoke an action", "Actions", {
        "200": _json({"oneOf": [_ref("Activation"), {"type": "object"}]},
                     "Finished successfully: the activation, or only its result with result=true"),
        "202": _json("ActivationId", "Accepted: not blocking, or still running after the blocking wait"),
        "400": _error("Bad query parameter, or a final parameter overridden"),
        "404": _error("No such action"), "413": _error("Payload larger than 1 MB"),
        "429": _error("Too many requests in the last minute, or too many concurrent requests"),
        "502": _json({"oneOf": [_ref("Activation"), {"type": "object"}]},
                     "Application or action developer error: the activation (or its result)")},
        [*params, _param("blocking", "query", "Wait for the result (up to timeout)", BOOL),
         _param("result", "query", "With blocking: return only the result", BOOL),
         _param("timeout", "query", "Blocking wait in milliseconds (default and maximum 60000)", INT)],
        "Payload")


def _paths() -> dict:
    action = _entity("action", "Actions", "actionName", "Action", "ActionPut")
    action["get"]["parameters"].append(_param("code", "query", "Include the code (default true)", BOOL))
    action["post"] = _invoke([NS, _param("actionName", "path", "The action name")])
    packaged = copy.deepcopy(_entity("action", "Actions", "actionName", "Action", "ActionPut",
                                     [_param("packageName", "path", "The package (or binding)")]))
    packaged["get"]["parameters"].append(_param("code", "query", "Include the code (default true)", BOOL))
    packaged["post"] = _invoke([NS, _param("packageName", "path", "The package (or binding)"),
                                _param("actionName", "path", "The action name")])
    trigger = _entity("trigger", "Triggers", "triggerName", "Trigger", "TriggerPut")
    trigger["post"] = _op("Fire a trigger", "Triggers", {
        "202": _json("ActivationId", "Fired: the trigger's activation id"),
        "204": {"description": "The trigger has no active rule: nothing was activated"},
        "404": _error("No such trigger"), "413": _error("Payload larger than 1 MB"),
        "429": _error("Too many fires or invocations in the last minute, or too many concurrent invocations")},
        [NS, _param("triggerName", "path", "The trigger name")], "Payload")
    rule = _entity("rule", "Rules", "ruleName", "Rule", "RulePut")
    rule["post"] = _op("Enable or disable a rule", "Rules", {
        "200": _json({"type": "object"}, "The rule is in the requested state"),
        "400": _error("status is not active or inactive"), "404": _error("No such rule, or its trigger is gone")},
        [NS, _param("ruleName", "path", "The rule name")], "RuleStatus", True)
    package = _entity("package", "Packages", "packageName", "Package", "PackagePut")
    package["delete"]["parameters"].append(_param("force", "query", "Delete its actions too", BOOL))
    lists = {kind: {"get": _op(f"List {kind}", tag, {"200": _json({"type": "array", "items": _ref(schema)}, kind),
                                                     "400": _error("Bad limit or skip")}, [NS, *LIST])}
             for kind, tag, schema in (("actions", "Actions", "ActionSummary"), ("triggers", "Triggers", "Trigger"),
                                       ("rules", "Rules", "Rule"), ("packages", "Packages", "Package"))}
    aid = _param("activationid", "path", "32 hex characters")
    one = {"400": _error("Not an activation id"), "404": _error("No such activation")}
    return {
        "/healthz": {"get": {"summary": "Liveness", "tags": ["Service"], "parameters": [],
                             "responses": {"200": _json({"type": "object"}, "ok")}}},
        "/metrics": {"get": {"summary": "Prometheus metrics", "tags": ["Service"], "parameters": [],
                             "responses": {"200": {"description": "text exposition format"}}}},
        "/api/v1": {"get": {"summary": "API information", "tags": ["Service"], "parameters": [],
                            "responses": {"200": _json({"type": "object"}, "description, paths, runtimes, limits")}}},
        "/api/v1/api-docs": {"get": {"summary": "This document", "tags": ["Service"], "parameters": [],
                                     "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0")}}},
        "/api/v1/namespaces": {"get": _op("The caller's namespaces", "Namespaces",
                                          {"200": _json({"type": "array", "items": {"type": "string"}}, "names")})},
        BASE + "/limits": {"get": _op("The namespace's limits", "Namespaces", {"200": _json("UserLimits", "limits")},
                                      [NS])},
        BASE + "/actions": lists["actions"],
        BASE + "/actions/{packageName}/": {"get": _op("List the actions of a package", "Actions", {
            "200": _json({"type": "array", "items": _ref("ActionSummary")}, "actions"),
            "404": _error("No such package")}, [NS, _param("packageName", "path", "The package"), *LIST])},
        BASE + "/actions/{actionName}": action,
        BASE + "/actions/{packageName}/{actionName}": packaged,
        BASE + "/triggers": lists["triggers"],
        BASE + "/triggers/{triggerName}": trigger,
        BASE + "/rules": lists["rules"],
        BASE + "/rules/{ruleName}": rule,
        BASE + "/packages": lists["packages"],
        BASE + "/packages/{packageName}": package,
        BASE + "/activations": {"get": _op("List activations, newest first", "Activations", {
            "200": _json({"type": "array", "items": {"oneOf": [_ref("ActivationSummary"), _ref("Activation")]}},
                         "summaries, or full records with docs=true"),
            "400": _error("Bad limit, skip, since, upto or name; or docs with count")},
            [NS, *LIST, _param("docs", "query", "Full records", BOOL),
             _param("name", "query", "Only this action ('name' or 'package/name')"),
             _param("since", "query", "Started at or after (epoch ms)", INT),
             _param("upto", "query", "Started at or before (epoch ms)", INT)])},
        BASE + "/activations/{activationid}": {"get": _op("Get an activation", "Activations", {
            "200": _json("Activation", "The activation record"), **one}, [NS, aid])},
        BASE + "/activations/{activationid}/logs": {"get": _op("Get an activation's logs", "Activations", {
            "200": _json({"type": "object", "properties": {"logs": {"type": "array", "items": {"type": "string"}}}},
                         "logs"), **one}, [NS, aid])},
        BASE + "/activations/{activationid}/result": {"get": _op("Get an activation's response", "Activations", {
            "200": _json("ActivationResponse", "response"), **one}, [NS, aid])},
    }


STR, OBJ, ARR = {"type": "string"}, {"type": "object"}, {"type": "array"}
KV = {"type": "array", "items": _ref("KeyValue")}
SCHEMAS = {
    "ErrorMessage": {"type": "object", "required": ["error", "code"],
                     "properties": {"error": STR, "code": {"type": "string", "description": "request id"}}},
    "ActivationId": {"type": "object", "required": ["activationId"], "properties": {"activationId": STR}},
    "KeyValue": {"type": "object", "required": ["key"],
                 "properties": {"key": STR, "value": {}, "init": {"type": "boolean"}}},
    "Payload": {"type": "object", "description": "Parameters of the invocation or fire", "additionalProperties": True},
    "Exec": {"type": "object", "required": ["kind"], "properties": {
        "kind": {"type": "string", "enum": list(KINDS)},
        "code": {"type": "string", "description": "source text, or base64 of a zip"},
        "image": {"type": "string", "description": "blackbox only"}, "main": STR,
        "binary": {"type": "boolean", "description": "set by the server"},
        "components": {"type": "array", "items": STR, "description": "sequence only"}}},
    "Limits": {"type": "object", "properties": {
        "timeout": {"type": "integer", "description": "ms, default 60000, 100..300000"},
        "memory": {"type": "integer", "description": "MB, default 256"},
        "logs": {"type": "integer", "description": "MB, default 10, 0..10"},
        "concurrency": {"type": "integer", "description": "1"}}},
    "ActionPut": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "exec": _ref("Exec"),
        "annotations": KV, "delAnnotations": {"type": "array", "items": STR}, "parameters": KV,
        "limits": _ref("Limits")}},
    "Action": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "exec": _ref("Exec"),
        "annotations": KV, "parameters": KV, "limits": _ref("Limits"), "updated": {"type": "integer"}}},
    "ActionSummary": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "annotations": KV,
        "limits": _ref("Limits"), "exec": {"type": "object", "properties": {"binary": {"type": "boolean"}}},
        "updated": {"type": "integer"}}},
    "TriggerPut": {"type": "object", "properties": {
        "name": STR, "version": STR, "publish": {"type": "boolean"}, "parameters": KV, "annotations": KV,
        "limits": OBJ}},
    "Trigger": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "parameters": KV,
        "annotations": KV, "limits": OBJ, "updated": {"type": "integer"},
        "rules": {"type": "object", "description": "'ns/rule' -> {action: {path, name}, status}"}}},
    "RulePut": {"type": "object", "properties": {
        "name": STR, "version": STR, "publish": {"type": "boolean"}, "annotations": KV,
        "trigger": {"type": "string", "description": "/namespace/trigger"},
        "action": {"type": "string", "description": "/namespace/[package/]action"}}},
    "RuleStatus": {"type": "object", "required": ["status"],
                   "properties": {"status": {"type": "string", "enum": ["active", "inactive"]}}},
    "EntityRef": {"type": "object", "properties": {"path": STR, "name": STR}},
    "Rule": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "annotations": KV,
        "status": {"type": "string", "enum": ["active", "inactive"]}, "trigger": _ref("EntityRef"),
        "action": _ref("EntityRef"), "updated": {"type": "integer"}}},
    "Binding": {"type": "object", "properties": {"namespace": STR, "name": STR}},
    "PackagePut": {"type": "object", "properties": {
        "name": STR, "version": STR, "publish": {"type": "boolean"}, "parameters": KV, "annotations": KV,
        "binding": _ref("Binding")}},
    "Package": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "parameters": KV,
        "annotations": KV, "binding": _ref("Binding"), "actions": ARR, "feeds": ARR,
        "updated": {"type": "integer"}}},
    "ActivationResponse": {"type": "object", "properties": {
        "status": {"type": "string", "enum": ["success", "application error", "action developer error",
                                              "whisk internal error"]},
        "statusCode": {"type": "integer", "enum": [0, 1, 2, 3]}, "success": {"type": "boolean"}, "result": {},
        "size": {"type": "integer"}}},
    "ActivationSummary": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "publish": {"type": "boolean"}, "annotations": KV,
        "activationId": STR, "start": {"type": "integer"}, "end": {"type": "integer"},
        "duration": {"type": "integer"}, "statusCode": {"type": "integer"}, "cause": STR}},
    "Activation": {"type": "object", "properties": {
        "namespace": STR, "name": STR, "version": STR, "subject": STR, "publish": {"type": "boolean"},
        "activationId": STR, "start": {"type": "integer"}, "end": {"type": "integer"},
        "duration": {"type": "integer"}, "statusCode": {"type": "integer"},
        "response": _ref("ActivationResponse"), "logs": {"type": "array", "items": STR},
        "annotations": {"type": "array", "items": _ref("KeyValue"),
                        "description": "path, kind, limits, timeout, waitTime, initTime (cold start), causedBy, "
                                       "binding, topmost"},
        "cause": STR}},
    "UserLimits": {"type": "object", "properties": {
        k: {"type": "integer"} for k in ("invocationsPerMinute", "concurrentInvocations", "firesPerMinute",
                                         "minActionMemory", "maxActionMemory", "minActionTimeout",
                                         "maxActionTimeout", "minActionLogSize", "maxActionLogSize",
                                         "maxActionConcurrency", "maxActionInstances")}},
}


def document() -> dict:
    return {
        "openapi": "3.0.3",
        "info": {"title": "panfaas function runtime: OpenWhisk REST API (subset)", "version": "1.0.0",
                 "description": "The part of OpenWhisk's controller API the all-in-one implements. Basic "
                                "authentication with the namespace's uuid:key. Errors are "
                                "{\"error\": message, \"code\": request id}. The feed action "
                                "/whisk.system/messaging/kafkaFeed takes lifecycleEvent CREATE, READ, UPDATE or "
                                "DELETE with triggerName, brokers, topic and isJSONData."},
        "servers": [{"url": "/"}],
        "security": [{"basic": []}],
        "paths": _paths(),
        "components": {"schemas": SCHEMAS,
                       "securitySchemes": {"basic": {"type": "http", "scheme": "basic",
                                                     "description": "user: the uuid, password: the key"}}},
    }
