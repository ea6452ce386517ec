"""The rest of Ollama's native API: ``/api/show``, ``/api/ps``, embeddings and model management.

``ollama.Client.show()`` and Open WebUI's model page call ``/api/show``;
``ollama ps`` calls ``/api/ps``. Both describe the backend's models as far as
framelens knows them (capabilities from what the backend takes; template and
parameters only where the backend reports them). The backends generate text
only, so ``/api/embed`` and ``/api/embeddings`` answer 400 naming that, and
model management (pull, push, create, copy, delete, blobs) is 501 pointing at
the backend's own tools. Errors are Ollama's ``{"error": "..."}``.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from pydantic import Field, model_validator
from starlette.requests import Request
from starlette.responses import Response

from framelens import ModelInfo

from .errors import ApiError
from .routing import RouteTable, json_response, read_json
from .schema import StrictModel
from .state import ApiState, api_state

__all__ = ["OllamaShowRequest", "add_ollama_info_routes"]

_DETAILS = {"parent_model": "", "format": "", "family": "", "families": None, "parameter_size": "",
            "quantization_level": ""}
_MANAGEMENT = (("/api/pull", "POST"), ("/api/push", "POST"), ("/api/create", "POST"), ("/api/copy", "POST"),
               ("/api/delete", "DELETE"), ("/api/blobs/{digest}", "POST"), ("/api/blobs/{digest}", "HEAD"))


class OllamaShowRequest(StrictModel):
    """``/api/show``: ``model`` (older clients: ``name``)."""

    model: str | None = Field(None, min_length=1)
    name: str | None = Field(None, min_length=1)
    verbose: bool | None = None

    @model_validator(mode="after")
    def _named(self) -> OllamaShowRequest:
        if not (self.model or self.name):
            raise ValueError("model is required")
        return self


class OllamaEmbedRequest(StrictModel):
    """``/api/embed`` (``input``) and the older ``/api/embeddings`` (``prompt``)."""

    model: str = Field(min_length=1)
    input: str | list[str] | None = None
    prompt: str | None = None
    truncate: bool | None = None
    options: dict[str, Any] | None = None
    keep_alive: str | float | None = None
    dimensions: int | None = None


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat().replace("+00:00", "Z")


async def _find(api: ApiState, request: Request, name: str) -> ModelInfo:
    """The backend's model called ``name`` (``llava`` also finds ``llava:latest`` and back)."""
    models = await api.call(request, api.backend.models(), timeout=30)
    wanted = {name, f"{name}:latest", name.removesuffix(":latest")}
    for m in models:
        if m.id in wanted:
            return m
    raise ApiError(404, f"model '{name}' not found", param="model", code="model_not_found")


def _capabilities(api: ApiState, model: ModelInfo) -> list[str]:
    caps = ["completion"]
    if "images" in api.backend.supports:
        caps.append("vision")
    if "think" in api.backend.supports or "reasoning_effort" in api.backend.supports:
        caps.append("thinking")
    return [*caps, *(c for c in model.capabilities if c not in caps)]


async def show(request: Request) -> Response:
    """Ollama /api/show: what framelens knows about one of the backend's models."""
    api = api_state(request)
    req = await read_json(request, OllamaShowRequest)
    model = await _find(api, request, str(req.model or req.name))
    return json_response({
        "license": "", "modelfile": "", "parameters": "", "template": "",
        "details": dict(_DETAILS), "model_info": {"general.architecture": "", "framelens.backend": api.backend_name},
        "capabilities": _capabilities(api, model), "modified_at": _iso(model.created),
    })


async def ps(request: Request) -> Response:
    """Ollama /api/ps: the backend's default model while the backend is ready (framelens loads nothing itself)."""
    api = api_state(request)
    name = api.backend.default_model or await api.backend.discover_default_model()
    health = await api.call(request, api.backend.health(), timeout=10)
    if not name or not health.ready:
        return json_response({"models": []})
    expires = datetime.now(timezone.utc) + timedelta(minutes=5)
    return json_response({"models": [{
        "name": name, "model": name, "size": 0, "digest": "", "details": dict(_DETAILS),
        "expires_at": expires.isoformat().replace("+00:00", "Z"), "size_vram": 0,
    }]})


async def embed(request: Request) -> Response:
    """Ollama /api/embed and /api/embeddings: refused (400 naming why); the backends generate text only."""
    api = api_state(request)
    req = await read_json(request, OllamaEmbedRequest)
    raise ApiError(400, f"embeddings are not supported: the {api.backend_name!r} backend behind framelens "
                   f"generates text only, so {req.model!r} cannot embed here; send embedding requests to the "
                   "embedding server itself", param="model", code="embeddings_unsupported")


async def management(request: Request) -> Response:
    """Ollama's model management: not available here (501); manage models on the backend."""
    api = api_state(request)
    raise ApiError(501, f"{request.method} {request.url.path} is not supported: framelens serves the models of "
                   f"its {api.backend_name!r} backend; manage them there (for Ollama: ollama pull/rm/create on "
                   "that machine)", code="not_implemented")


def add_ollama_info_routes(routes: RouteTable) -> None:
    tags = ("ollama",)
    routes.register("/api/show", show, methods=["POST"], tags=tags, request_model=OllamaShowRequest,
                    extra_responses={"404": "Unknown model"})
    routes.register("/api/ps", ps, tags=tags)
    routes.register("/api/embed", embed, methods=["POST"], tags=tags, request_model=OllamaEmbedRequest,
                    extra_responses={"400": "No embeddings"})
    routes.register("/api/embeddings", embed, methods=["POST"], tags=tags, request_model=OllamaEmbedRequest,
                    extra_responses={"400": "No embeddings"})
    for path, method in _MANAGEMENT:
        routes.register(path, management, methods=[method], tags=tags, include_in_schema=False)
