"""The OpenAPI document the runtime serves describes exactly the routes it has."""

from __future__ import annotations

import requests
from aiohttp import web

from panfaas.runtime.api import Api


def served_routes() -> set[tuple[str, str]]:
    """(method, path) of every route the server registers (built without a runtime behind it)."""
    app = web.Application()
    Api.__new__(Api).routes(app)
    return {(r.method.lower(), r.resource.canonical) for r in app.router.routes() if r.method != "HEAD"}


def documented(doc: dict) -> set[tuple[str, str]]:
    return {(method, path) for path, ops in doc["paths"].items() for method in ops}


def resolve(doc: dict, ref: str) -> dict:
    node = doc
    for part in ref.removeprefix("#/").split("/"):
        node = node[part]
    return node


def refs(node):
    if isinstance(node, dict):
        if "$ref" in node:
            yield node["$ref"]
        for v in node.values():
            yield from refs(v)
    elif isinstance(node, list):
        for v in node:
            yield from refs(v)


def test_document_matches_the_routes(runtime):
    doc = requests.get(runtime.api_host + "/api/v1/api-docs", timeout=5).json()  # served without credentials
    assert doc["openapi"].startswith("3.")
    routes = served_routes()
    assert documented(doc) == routes, {"undocumented": routes - documented(doc),
                                       "documented but not served": documented(doc) - routes}


def test_document_is_complete_and_consistent(runtime):
    doc = requests.get(runtime.api_host + "/api/v1/api-docs", timeout=5).json()
    for ref in set(refs(doc)):
        assert resolve(doc, ref), ref
    for path, ops in doc["paths"].items():
        placeholders = {p.strip("{}") for p in path.split("/") if p.startswith("{")}
        for method, op in ops.items():
            declared = {p["name"] for p in op["parameters"] if p["in"] == "path"}
            assert declared == placeholders, (method, path)
            assert op["responses"], (method, path)
            if path.startswith("/api/v1/namespaces/"):
                assert {"401", "403"} <= set(op["responses"]), (method, path)
    invoke = doc["paths"]["/api/v1/namespaces/{namespace}/actions/{actionName}"]["post"]["responses"]
    assert {"200", "202", "404", "429", "502"} <= set(invoke)
    fire = doc["paths"]["/api/v1/namespaces/{namespace}/triggers/{triggerName}"]["post"]["responses"]
    assert {"202", "204", "404", "429"} <= set(fire)
