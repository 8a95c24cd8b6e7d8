"""Every JSON route documents what it returns: `/openapi.json` names a typed schema for its success answer."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

from tests.factories.http import app_client


def _is_json_route(path: str) -> bool:
    return path.startswith("/api/") or path == "/healthz"


def _resolve(schema: dict[str, Any], doc: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[1]
        schema = doc["components"]["schemas"][name]
    return schema


def _untyped(schema: dict[str, Any], doc: dict[str, Any]) -> bool:
    """True for no schema, `{}`, or an object with no declared properties (a bare dict)."""
    schema = _resolve(schema, doc)
    if not schema:
        return True
    if schema.get("type") == "array":
        return _untyped(schema.get("items", {}), doc)
    if "anyOf" in schema or "oneOf" in schema:
        return any(_untyped(s, doc) for s in schema.get("anyOf", schema.get("oneOf", []))
                   if s.get("type") != "null")
    if schema.get("type") == "object" or "additionalProperties" in schema:
        return not schema.get("properties")
    return False


def undocumented_routes(doc: dict[str, Any]) -> list[str]:
    """`METHOD path (why)` for each JSON route whose success answer has no typed JSON schema."""
    bad = []
    for path, ops in doc.get("paths", {}).items():
        if not _is_json_route(path):
            continue
        for method, op in ops.items():
            ok = {code: r for code, r in op.get("responses", {}).items() if code.startswith("2")}
            if not ok:
                bad.append(f"{method.upper()} {path} (no success response)")
                continue
            for code, resp in ok.items():
                schema = resp.get("content", {}).get("application/json", {}).get("schema")
                if schema is None:
                    bad.append(f"{method.upper()} {path} ({code}: no application/json schema)")
                elif _untyped(schema, doc):
                    bad.append(f"{method.upper()} {path} ({code}: untyped object)")
    return sorted(bad)


def test_every_json_route_has_a_typed_response_schema(client: TestClient) -> None:
    doc = client.get("/openapi.json").json()
    assert any(_is_json_route(p) for p in doc["paths"])
    bad = undocumented_routes(doc)
    assert not bad, "JSON routes without a typed response schema:\n  " + "\n  ".join(bad)


class Thing(BaseModel):
    name: str


def test_the_checker_flags_a_route_without_a_response_model() -> None:
    scratch = FastAPI()

    @scratch.get("/api/typed")
    def typed() -> Thing:
        return Thing(name="x")

    @scratch.get("/api/typed-list")
    def typed_list() -> list[Thing]:
        return []

    @scratch.get("/api/bare")
    def bare():  # type: ignore[no-untyped-def]
        return {"anything": 1}

    @scratch.get("/api/bare-dict")
    def bare_dict() -> dict[str, Any]:
        return {}

    @scratch.get("/pages/not-json", include_in_schema=True)
    def not_json():  # type: ignore[no-untyped-def]
        return {}

    doc = app_client(scratch).get("/openapi.json").json()
    assert undocumented_routes(doc) == ["GET /api/bare (200: untyped object)",
                                        "GET /api/bare-dict (200: untyped object)"]
