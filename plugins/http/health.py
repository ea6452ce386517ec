"""Health probes in the shapes their clients expect, Prometheus metrics and the OpenAPI document."""

from __future__ import annotations

import asyncio
from datetime import datetime

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import Response

from framelens import Health

from .routing import RouteTable, json_response
from .state import ApiState, api_state

__all__ = ["add_health_routes"]

_PROBE_TIMEOUT_S = 5.0


async def _health(api: ApiState) -> Health:
    try:
        return await asyncio.wait_for(api.backend.health(), _PROBE_TIMEOUT_S)
    except (TimeoutError, asyncio.TimeoutError):
        return Health(False, f"{api.backend_name} did not answer within {_PROBE_TIMEOUT_S:g} s")
    except Exception as exc:
        return Health(False, f"{api.backend_name}: {exc}")


async def health(request: Request) -> Response:
    """Service and backend health (the llama.cpp vision service's /health shape); 503 when not ready."""
    api = api_state(request)
    h = await _health(api)
    return json_response({
        "status": "healthy" if h.ready else "unhealthy",
        "model_loaded": h.ready,
        "model_name": api.backend.default_model,
        "backend": api.backend_name,
        "detail": h.detail,
        "timestamp": datetime.now().isoformat(),
    }, 200 if h.ready else 503)


async def nim_ready(request: Request) -> Response:
    """Readiness in NVIDIA NIM's shape; 503 while the backend cannot serve."""
    h = await _health(api_state(request))
    message = "Service is ready." if h.ready else f"Service is not ready: {h.detail}"
    return json_response({"object": "health.response", "message": message}, 200 if h.ready else 503)


async def nim_live(request: Request) -> Response:
    """Liveness in NVIDIA NIM's shape (the process answers)."""
    return json_response({"object": "health.response", "message": "Service is live."})


async def jps_ready(request: Request) -> Response:
    """Readiness in Jetson Platform Services' shape (process health, as JPS reports it)."""
    return json_response({"detail": "healthy"})


async def metrics(request: Request) -> Response:
    """Prometheus metrics of the run: requests, latency, tokens, backend errors, frames per source."""
    registry = api_state(request).context.metrics
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)


def add_health_routes(routes: RouteTable) -> None:
    tags = ("health",)
    routes.register("/health", health, public=True, tags=tags, extra_responses={"503": "Backend not ready"})
    routes.register("/v1/health/ready", nim_ready, public=True, tags=tags)
    routes.register("/v1/health/live", nim_live, public=True, tags=tags)
    routes.register("/api/v1/health/ready", jps_ready, public=True, tags=tags)
    routes.register("/metrics", metrics, tags=tags, response_types=("text/plain",))
