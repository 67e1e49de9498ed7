"""The OpenAPI 3.1 document of the read API, generated from the route table (so it cannot drift from it)."""

from __future__ import annotations

from typing import Any

from indexer.serve import routes
from indexer.serve.postgrest import EXPOSED
from indexer.serve.stream import TOPICS

_CONSISTENCY = {
    "X-Indexed-Block": {"schema": {"type": "integer"}, "description": "Lowest block the tables read reflect"},
    "X-Indexed-Block-Hash": {"schema": {"type": "string"}, "description": "That block's hash"},
    "X-Data-Version": {"schema": {"type": "integer"}, "description": "Data version of the snapshot"},
    "ETag": {"schema": {"type": "string"}, "description": "Weak ETag on the data version"},
}
_MIN_BLOCK = {
    "name": "min_block",
    "in": "query",
    "required": False,
    "schema": {"type": "integer", "minimum": 0},
    "description": "Wait (bounded) until the tables reflect this block; 503 + Retry-After past the bound. "
    "Also accepted as the X-Min-Block header.",
}


def _responses() -> dict[str, Any]:
    return {
        "200": {"description": "OK", "headers": _CONSISTENCY, "content": {"application/json": {}}},
        "304": {"description": "Not modified (If-None-Match matched the current ETag)"},
        "400": {"description": "Bad input, with a JSON body naming the problem"},
        "429": {"description": "Rate limited (RateLimit-* and Retry-After headers)"},
        "503": {"description": "Tables behind min_block, or the database unavailable (Retry-After)"},
    }


def document() -> dict[str, Any]:
    paths: dict[str, Any] = {}
    for route in routes.ROUTES:
        params = [
            {"name": p, "in": "query", "required": p == "address", "schema": {"type": "string"}} for p in route.params
        ] + [_MIN_BLOCK]
        paths[route.path] = {
            m.lower(): {"summary": route.summary, "parameters": params, "responses": _responses()}
            for m in route.methods
        }
    paths["/api/realtime/stream"] = {
        "get": {
            "summary": "Server-Sent Events: state on connect, then changes tagged id: <block>:<version>",
            "parameters": [
                {"name": "address", "in": "query", "schema": {"type": "string"}},
                {
                    "name": "topics",
                    "in": "query",
                    "schema": {"type": "string"},
                    "description": "Comma-separated: " + ", ".join(TOPICS),
                },
                {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
            ],
            "responses": {"200": {"description": "text/event-stream"}},
        }
    }
    paths["/rest/v1/{table}"] = {
        "get": {
            "summary": "PostgREST-compatible read subset; tables: " + ", ".join(EXPOSED),
            "parameters": [
                {"name": "table", "in": "path", "required": True, "schema": {"type": "string", "enum": list(EXPOSED)}},
                {"name": "select", "in": "query", "schema": {"type": "string"}},
                {"name": "order", "in": "query", "schema": {"type": "string"}},
                {"name": "limit", "in": "query", "schema": {"type": "integer"}},
                {"name": "offset", "in": "query", "schema": {"type": "integer"}},
            ],
            "responses": {**_responses(), "406": {"description": "PGRST116: single object requested, not 1 row"}},
        }
    }
    for path, summary in (
        ("/healthz", "Process alive"),
        ("/readyz", "Database reachable and projections fresh"),
        ("/metrics", "Prometheus metrics"),
        ("/api/status", "The indexer's status as JSON"),
        ("/", "Status page"),
    ):
        paths[path] = {"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "rbtc-indexer read API", "version": "1"},
        "paths": paths,
    }
