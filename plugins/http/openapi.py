"""The OpenAPI 3.0 document of every route, built from the pydantic models the routes validate with."""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from .schema import ErrorResponse

__all__ = ["RouteDoc", "openapi_document", "to_openapi30"]

_REF = "#/components/schemas/{model}"
_ERRORS = {
    "400": "Malformed request, or a parameter the backend cannot honour",
    "401": "Missing or wrong API key",
    "404": "Unknown route, model or stream",
    "413": "Body or image too large",
    "429": "Too many requests in flight",
    "503": "Backend unavailable",
    "default": "Any other error (403 refused URL, 409, 415, 422 unusable input, 499, 5xx), in the same shape",
}


class OllamaError(BaseModel):
    """Ollama's error body, which every ``/api/...`` route (but JPS's ``/api/v1/...``) answers with."""

    model_config = ConfigDict(extra="allow")
    error: str


class InferErrorDetails(BaseModel):
    model_config = ConfigDict(extra="allow")
    param: str | None = None
    code: str | None = None
    request_id: str | None = None


class InferError(BaseModel):
    """The llama.cpp vision service's error body (``/infer``)."""

    model_config = ConfigDict(extra="allow")
    success: bool
    error: str
    error_type: str
    timestamp: str
    details: InferErrorDetails


def _error_schema(path: str, openai: dict[str, Any], components: dict[str, Any]) -> dict[str, Any]:
    """The error body that ``path`` really answers with (the gateway and handlers agree on it)."""
    # The same rule as gateway.is_ollama_path (not imported: the gateway imports this module).
    if path.startswith("/api/") and not path.startswith("/api/v1/"):
        return _schema_ref(OllamaError, components)
    if path == "/infer":
        # The handler's own shape; the gateway's refusals (401, 413 before the body) stay OpenAI's.
        return {"anyOf": [_schema_ref(InferError, components), openai]}
    return openai


@dataclass(frozen=True)
class RouteDoc:
    """What the OpenAPI document says about one route."""

    path: str
    methods: tuple[str, ...]
    summary: str = ""
    description: str = ""
    request_model: type[BaseModel] | None = None
    response_model: type[BaseModel] | None = None
    status_code: int = 200
    response_types: tuple[str, ...] = ("application/json",)
    tags: tuple[str, ...] = ()
    public: bool = False
    extra_responses: dict[str, str] = field(default_factory=dict)


def to_openapi30(schema: Any) -> Any:
    """Rewrite pydantic's JSON Schema (2020-12) into the OpenAPI 3.0 dialect."""
    if isinstance(schema, list):
        return [to_openapi30(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: to_openapi30(v) for k, v in schema.items() if k not in ("$defs", "const")}
    if "const" in schema:
        out["enum"] = [schema["const"]]
    for bound, plain in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(schema.get(bound), (int, float)) and not isinstance(schema.get(bound), bool):
            out[plain] = schema[bound]
            out[bound] = True
    variants = schema.get("anyOf")
    if isinstance(variants, list) and any(v == {"type": "null"} for v in variants):
        rest = [to_openapi30(v) for v in variants if v != {"type": "null"}]
        del out["anyOf"]
        if len(rest) == 1 and "$ref" not in rest[0]:
            out.update(rest[0])
        elif rest:
            out["anyOf" if len(rest) > 1 else "allOf"] = rest
        out["nullable"] = True
    if out.get("type") == "null":
        del out["type"]
        out["nullable"] = True
        out["enum"] = [None]
    return out


def _schema_ref(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    schema = model.model_json_schema(ref_template=_REF, by_alias=True)
    for name, sub in schema.pop("$defs", {}).items():
        components[name] = to_openapi30(sub)
    components[model.__name__] = to_openapi30(schema)
    return {"$ref": _REF.format(model=model.__name__)}


def _operation_id(method: str, path: str) -> str:
    words = re.sub(r"[^A-Za-z0-9]+", "_", path).strip("_") or "root"
    return f"{method.lower()}_{words}"


def openapi_document(docs: Iterable[RouteDoc], *, title: str, version: str, secured: bool) -> dict[str, Any]:
    """An OpenAPI 3.0.3 document for ``docs``."""
    components: dict[str, Any] = {}
    error_ref = _schema_ref(ErrorResponse, components)
    paths: dict[str, dict[str, Any]] = {}
    for doc in docs:
        for method in doc.methods:
            if method == "HEAD":
                continue
            op: dict[str, Any] = {"operationId": _operation_id(method, doc.path), "summary": doc.summary}
            if doc.description:
                op["description"] = doc.description
            if doc.tags:
                op["tags"] = list(doc.tags)
            params = [{"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
                      for n in re.findall(r"{(\w+)(?::\w+)?}", doc.path)]
            if params:
                op["parameters"] = params
            if doc.request_model is not None:
                op["requestBody"] = {"required": True, "content": {
                    "application/json": {"schema": _schema_ref(doc.request_model, components)}}}
            ok_schema = _schema_ref(doc.response_model, components) if doc.response_model else {}
            content = {t: {"schema": ok_schema if t == "application/json" else {"type": "string"}}
                       for t in doc.response_types}
            responses: dict[str, Any] = {str(doc.status_code): {"description": "Success", "content": content}}
            error_schema = _error_schema(doc.path, error_ref, components)
            for status, text in {**_ERRORS, **doc.extra_responses}.items():
                responses[status] = {"description": text,
                                     "content": {"application/json": {"schema": error_schema}}}
            op["responses"] = responses
            if secured and not doc.public:
                op["security"] = [{"bearer": []}]
            paths.setdefault(re.sub(r"{(\w+):\w+}", r"{\1}", doc.path), {})[method.lower()] = op
    document: dict[str, Any] = {
        "openapi": "3.0.3",
        "info": {"title": title, "version": version},
        "paths": paths,
        "components": {"schemas": components},
    }
    if secured:
        document["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    return document
