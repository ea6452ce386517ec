"""Assembling the ASGI application: routes (built-in and from plugins), error handlers, gateway, CORS."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Match, Route
from starlette.types import ASGIApp

from framelens import Context, RouteRegister, __version__, call_register_routes
from framelens.web import sessions_of

from .chat import add_chat_routes
from .compat_infer import add_infer_routes
from .compat_ollama import add_ollama_routes
from .convert import RequestConverter
from .errors import ApiError
from .fetch import Fetcher
from .gateway import Gateway, error_json, request_id
from .health import add_health_routes
from .limiter import Limiter
from .live import LiveSources
from .media import MediaResolver
from .metrics import metrics_for
from .openapi import openapi_document
from .options import HttpOptions
from .responses import add_responses_routes
from .routing import RouteTable, json_response
from .state import ApiState
from .streams_api import add_page_route, add_stream_routes
from .video import VideoSampler

__all__ = ["api_key", "build_app", "build_state"]

log = logging.getLogger("framelens.http")


def build_state(options: HttpOptions, context: Context) -> ApiState:
    """The shared state of one service; creates (or reuses) the backend named in the options."""
    backend_name = options.backend or context.default_backend
    backend = context.backend(backend_name)
    metrics = metrics_for(context)
    limiter = Limiter(options.max_concurrency, options.max_queue, options.queue_timeout)
    metrics.limiters[backend_name] = limiter
    fetcher = Fetcher(allow_private=options.allow_private_urls, timeout=options.fetch_timeout,
                      max_redirects=options.max_redirects)
    live = LiveSources(context, options)
    media = MediaResolver(context, options, fetcher, live)
    converter = RequestConverter(media, VideoSampler(media, live, options), live, options)
    # Known before the first request that names no model (and for /health's model_name);
    # a backend that is down now is asked again by requests and health probes.
    context.runner.submit(backend.discover_default_model())
    return ApiState(options, context, backend_name, backend, limiter, metrics, fetcher, live, media, converter)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    rid = request_id(request.scope)
    level = logging.WARNING if exc.status >= 500 else logging.INFO
    log.log(level, "[%s] %s %s -> %d %s", rid, request.method, request.url.path, exc.status, exc.message)
    return json_response(error_json(exc, request.url.path), exc.status, headers=exc.headers)


def _dormant_owner(request: Request) -> str | None:
    """The plugin that would serve this path had it been enabled in the run."""
    for route, plugin in request.app.state.dormant:
        match, _ = route.matches(request.scope)
        if match != Match.NONE:
            return str(plugin)
    return None


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    owner = _dormant_owner(request) if exc.status_code in (404, 405) else None
    if owner is not None:
        components = sorted(s.name for s in request.app.state.api.context.registry.all() if s.plugin == owner)
        enable = " or ".join(f"-p {c}" for c in components[:3]) or f"the {owner} plugin"
        error = ApiError(404, f"{request.method} {request.url.path} is served by plugin {owner!r}, which is not"
                         f" enabled in this run; start it with {enable}", code="plugin_not_enabled")
    elif exc.status_code == 404:
        error = ApiError(404, f"unknown route: {request.method} {request.url.path}", code="unknown_url")
    elif exc.status_code == 405:
        error = ApiError(405, f"method {request.method} is not allowed on {request.url.path}",
                         code="method_not_allowed", headers=dict(exc.headers or {}))
    else:
        error = ApiError(exc.status_code, str(exc.detail), headers=dict(exc.headers or {}))
    return await _api_error(request, error)


async def _internal_error(request: Request, exc: Exception) -> Response:
    rid = request_id(request.scope)
    log.error("[%s] %s %s failed: %s: %s", rid, request.method, request.url.path, type(exc).__name__, exc,
              exc_info=exc)
    exc.framelens_logged = True  # type: ignore[attr-defined]  # the gateway sees it re-raised
    error = ApiError(500, f"internal error; see the server log for request {rid}", code="internal_error")
    return json_response(error_json(error, request.url.path), 500)


def api_key(options: HttpOptions) -> str | None:
    """The key clients must send: ``-c http-api-key`` or ``$FRAMELENS_API_KEY``; ``None`` = no check."""
    return options.api_key or os.environ.get("FRAMELENS_API_KEY") or None


def build_app(state: ApiState) -> ASGIApp:
    """The ASGI application of one ``http`` service."""
    routes = RouteTable()
    add_chat_routes(routes)
    add_responses_routes(routes)
    add_stream_routes(routes)
    add_health_routes(routes)
    add_infer_routes(routes)
    add_ollama_routes(routes)
    dormant: list[tuple[Route, str]] = []

    def dormant_register(plugin: str) -> RouteRegister:
        def register(path: str, endpoint: Callable[..., Any], methods: Sequence[str] = ("GET",),
                     name: str | None = None, **_doc: Any) -> None:
            dormant.append((Route(path, endpoint, methods=list(methods), name=name), plugin))
        return register

    call_register_routes(routes.register, state.context, dormant=dormant_register)
    # A plugin's page (the dashboard) takes "/"; the built-in list of streams is the fallback.
    if not any(r.path == "/" and "GET" in (r.methods or ()) for r in routes.routes):
        add_page_route(routes)
    key = api_key(state.options)
    document: dict[str, Any] = {}

    async def openapi(request: Request) -> Response:
        """The OpenAPI document of these endpoints."""
        if not document:
            document.update(openapi_document(routes.docs, title="framelens", version=__version__,
                                             secured=key is not None))
        return json_response(document)

    routes.register("/openapi.json", openapi, public=True, include_in_schema=False)
    starlette = Starlette(routes=routes.routes, exception_handlers={
        ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error})
    starlette.state.api = state
    starlette.state.dormant = dormant
    app: ASGIApp = Gateway(starlette, metrics=state.metrics, api_key=key,
                           public_paths=routes.public_paths(),
                           max_body_bytes=state.options.max_body_bytes, sessions=sessions_of(state.context))
    origins = list(state.options.cors_origins)
    if origins:
        app = CORSMiddleware(app, allow_origins=origins, allow_methods=["*"], allow_headers=["*"],
                             expose_headers=["x-request-id"])
    return app
