"""The alerts HTTP API, added to the ``http`` service through the ``register_routes`` hook.

=========  ===========================  ==================================================
method     path                         what
=========  ===========================  ==================================================
``POST``   ``/v1/alerts``               set (``"mode": "replace"``, default) or add rules;
                                        ``{"alerts": ["Is there smoke?", {...}]}``
``GET``    ``/v1/alerts``               rules with state, last evaluation time and result
``DELETE`` ``/v1/alerts``               delete every rule
``GET``    ``/v1/alerts/events``        Server-Sent Events stream of transitions
``GET``    ``/v1/alerts/{id}``          one rule
``PUT``    ``/v1/alerts/{id}``          create or replace one rule
``DELETE`` ``/v1/alerts/{id}``          delete one rule
``POST``   ``/api/v1/alerts``           the same as ``POST /v1/alerts`` (NVIDIA JPS's path)
=========  ===========================  ==================================================

Errors are the ``http`` service's OpenAI error objects. With several alerts
processors in one run, ``?processor=ID`` picks one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from framelens import Context
from framelens.web import ApiError, json_response

from .api_models import AlertDeleted, AlertList, AlertsDeleted, AlertsRequest, AlertsSet, AlertView
from .hub import AlertsHandle, handles
from .rules import AlertRule, RuleError
from .store import StoreError

__all__ = ["register_alert_routes"]

Handler = Callable[[Request, AlertsHandle], Awaitable[Response]]

_POST_KEYS = tuple(AlertsRequest.model_fields)


def _handle(request: Request, context: Context) -> AlertsHandle:
    running = handles(context)
    if not running:
        raise ApiError(404, "alerts are not enabled in this run: start framelens with -p alerts"
                       " (e.g. framelens serve -p alerts -c alerts-backend=ollama)", code="alerts_disabled")
    wanted = request.query_params.get("processor")
    if wanted is None:
        if len(running) > 1:
            raise ApiError(400, f"this run has several alerts processors ({', '.join(running)});"
                           " choose one with ?processor=ID", param="processor")
        return next(iter(running.values()))
    if wanted not in running:
        raise ApiError(404, f"no alerts processor {wanted!r} (running: {', '.join(running)})",
                       param="processor", code="not_found")
    return running[wanted]


def _bind(handler: Handler, context: Context) -> Callable[[Request], Awaitable[Response]]:
    """An endpoint that finds the processor and turns rule and store errors into API errors."""

    async def endpoint(request: Request) -> Response:
        try:
            return await handler(request, _handle(request, context))
        except RuleError as exc:
            raise ApiError(400, str(exc), param=exc.param, code="invalid_alert") from None
        except StoreError as exc:
            raise ApiError(500, str(exc), code="store_failed") from None

    endpoint.__name__ = handler.__name__
    endpoint.__qualname__ = f"alerts.{handler.__name__}"
    endpoint.__doc__ = handler.__doc__
    return endpoint


async def _json_object(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = json.loads(body) if body else None
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"could not parse the JSON body of the request: {exc}", code="invalid_json") from None
    except RecursionError:
        raise ApiError(400, "could not parse the JSON body of the request: nested too deeply",
                       code="invalid_json") from None
    if not isinstance(data, dict):
        raise ApiError(400, "the request body must be a JSON object", code="invalid_request")
    return data


def _views(views: list[dict[str, Any]]) -> list[AlertView]:
    return [AlertView.model_validate(v) for v in views]


def _reply(model: Any) -> Response:
    return json_response(model.model_dump(mode="json"))


async def set_alerts(request: Request, handle: AlertsHandle) -> Response:
    """Set or add alert rules.

    The body is ``{"alerts": [...]}`` with prompt strings (as NVIDIA's Jetson
    VLM service takes them) and/or rule objects. ``mode`` ``replace`` (the
    default) makes these all the rules; ``add`` adds them, replacing rules
    with the same id. Rules that keep their id and prompt keep their state.
    """
    data = await _json_object(request)
    unknown = sorted(set(data) - set(_POST_KEYS))
    if unknown:
        raise ApiError(400, f"unknown field {unknown[0]!r} (allowed: {', '.join(_POST_KEYS)})", param=unknown[0],
                       code="unknown_parameter")
    if "alerts" not in data:
        raise ApiError(400, "missing field 'alerts': a list of prompts or rule objects", param="alerts")
    mode = data.get("mode", "replace")
    if mode not in ("replace", "add"):
        raise ApiError(400, f"mode must be 'replace' or 'add', not {mode!r}", param="mode")
    stream_id = data.get("id", "")
    if not isinstance(stream_id, str) or len(stream_id) > 100:
        raise ApiError(400, "id (the JPS stream id) must be a string of at most 100 characters", param="id")
    views = await asyncio.to_thread(handle.engine.set_rules, data["alerts"], mode=mode)
    return _reply(AlertsSet(data=_views(views)))


async def list_alerts(request: Request, handle: AlertsHandle) -> Response:
    """Alert rules with their state, last evaluation time and result."""
    engine = handle.engine
    return _reply(AlertList(data=_views(engine.view()), processor=engine.id, backend=engine.backend_name,
                            backend_state="down" if engine.backend_down else "ok",
                            max_rules=engine.limits.max_rules))


async def delete_all(request: Request, handle: AlertsHandle) -> Response:
    """Delete every alert rule."""
    deleted = await asyncio.to_thread(handle.engine.delete, None)
    return _reply(AlertsDeleted(deleted=deleted))


def _one(handle: AlertsHandle, rule_id: str) -> AlertView:
    found = handle.engine.view(rule_id)
    if not found:
        raise ApiError(404, f"no alert rule {rule_id!r}", param="id", code="not_found")
    return AlertView.model_validate(found[0])


async def get_one(request: Request, handle: AlertsHandle) -> Response:
    """One alert rule with its state."""
    return _reply(_one(handle, request.path_params["rule_id"]))


async def put_one(request: Request, handle: AlertsHandle) -> Response:
    """Create or replace one alert rule (the body is a rule object; its id may be left out)."""
    data = await _json_object(request)
    view = await asyncio.to_thread(handle.engine.put_rule, request.path_params["rule_id"], data)
    return _reply(AlertView.model_validate(view))


async def delete_one(request: Request, handle: AlertsHandle) -> Response:
    """Delete one alert rule."""
    rule_id = request.path_params["rule_id"]
    deleted = await asyncio.to_thread(handle.engine.delete, rule_id)
    if not deleted:
        raise ApiError(404, f"no alert rule {rule_id!r}", param="id", code="not_found")
    return _reply(AlertDeleted(id=rule_id))


async def events(request: Request, handle: AlertsHandle) -> Response:
    """A Server-Sent Events stream of alert transitions.

    Each event is ``event: alert`` with the ``--events`` JSON object as data
    and a numeric ``id``; reconnect with ``Last-Event-ID`` (or
    ``?last_event_id=``) to get the events missed meanwhile.
    """
    last = request.headers.get("last-event-id") or request.query_params.get("last_event_id")
    return StreamingResponse(handle.sse.stream(last), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


def register_alert_routes(register: Any, context: Context) -> None:
    """Add the alerts API to the ``http`` service (see the module docstring)."""
    tags = ("alerts",)

    def add(path: str, handler: Handler, method: str, **doc: Any) -> None:
        register(path, _bind(handler, context), methods=[method], tags=tags, **doc)

    add("/v1/alerts", list_alerts, "GET", response_model=AlertList)
    add("/v1/alerts", set_alerts, "POST", request_model=AlertsRequest, response_model=AlertsSet)
    add("/v1/alerts", delete_all, "DELETE", response_model=AlertsDeleted)
    add("/api/v1/alerts", set_alerts, "POST", request_model=AlertsRequest, response_model=AlertsSet)
    # Before /v1/alerts/{rule_id}: the router takes the first full match.
    add("/v1/alerts/events", events, "GET", response_types=("text/event-stream",))
    add("/v1/alerts/{rule_id}", get_one, "GET", response_model=AlertView)
    add("/v1/alerts/{rule_id}", put_one, "PUT", request_model=AlertRule, response_model=AlertView)
    add("/v1/alerts/{rule_id}", delete_one, "DELETE", response_model=AlertDeleted)
