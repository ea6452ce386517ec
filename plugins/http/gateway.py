"""The ASGI layer in front of every route: request ids, API key, body cap, metrics, last-resort errors.

Pure ASGI (no ``BaseHTTPMiddleware``) so streaming responses pass straight
through and the per-request cost stays in microseconds.
"""

from __future__ import annotations

import hmac
import json
import logging
import os
import re
import time
from typing import Any

from prometheus_client import Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from framelens.web import Sessions, cookie_value

from .errors import ApiError
from .metrics import HttpMetrics
from .opens import CLIENT
from .routing import ROUTE_KEY

__all__ = ["REQUEST_ID_KEY", "Gateway", "error_json", "is_ollama_path", "json_error_response", "request_id"]

log = logging.getLogger("framelens.http")

REQUEST_ID_KEY = "framelens.request_id"
_CLIENT_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


def is_ollama_path(path: str) -> bool:
    """True for Ollama's native API (``/api/...``), whose errors are ``{"error": "..."}``.

    ``/api/v1/...`` is Jetson Platform Services' API, not Ollama's.
    """
    return path.startswith("/api/") and not path.startswith("/api/v1/")


def error_json(error: ApiError, path: str) -> dict[str, object]:
    """The error body clients of ``path`` read: Ollama's shape on its routes, OpenAI's elsewhere."""
    if is_ollama_path(path):
        return {"error": error.message}
    return error.body()


def request_id(scope: Scope) -> str:
    """The id of the request being served (``x-request-id`` of its response)."""
    return str(scope.get(REQUEST_ID_KEY, "-"))


async def json_error_response(send: Send, error: ApiError, rid: str, path: str = "") -> None:
    """Send ``error`` as a complete JSON response (``send`` adds the request id header)."""
    body = json.dumps(error_json(error, path)).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in error.headers.items()]
    await send({"type": "http.response.start", "status": error.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class _BodyTooLarge(ApiError):
    pass


class Gateway:
    """Wraps the application: every request gets an id, an auth check, a body cap and metrics."""

    def __init__(self, app: ASGIApp, *, metrics: HttpMetrics, api_key: str | None, public_paths: frozenset[str],
                 max_body_bytes: int, sessions: Sessions | None = None) -> None:
        self.app = app
        # Browser sessions (framelens.web.Sessions) stand in for the key: EventSource and <img> send no header.
        self.sessions = sessions
        self.metrics = metrics
        self.api_key = api_key.encode() if api_key else None
        self.public_paths = public_paths
        self.max_body_bytes = max_body_bytes
        self._children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        given = headers.get(b"x-request-id", b"").decode("latin-1")
        rid = given if _CLIENT_ID.match(given) else "req_" + os.urandom(12).hex()  # as uuid4().hex[:24], cheaper
        scope[REQUEST_ID_KEY] = rid
        client = scope.get("client")
        CLIENT.set(str(client[0]) if client else "-")
        rid_header = (b"x-request-id", rid.encode())
        started = time.perf_counter()
        state: dict[str, Any] = {"status": 500, "started": False}

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                state["status"] = message["status"]
                state["started"] = True
                message["headers"] = [*message.get("headers", ()), rid_header]
            await send(message)

        try:
            error = self._check(scope, headers)
            if error is not None:
                log.info("[%s] %s %s -> %d %s", rid, scope["method"], scope["path"], error.status, error.message)
                await json_error_response(send_with_id, error, rid, scope["path"])
                return
            await self.app(scope, self._capped(receive), send_with_id)
        except Exception as exc:
            if not state["started"]:
                log.exception("[%s] %s %s failed", rid, scope["method"], scope["path"])
                await json_error_response(send_with_id, ApiError(
                    500, f"internal error; see the server log for request {rid}", code="internal_error"), rid,
                    scope["path"])
            elif not getattr(exc, "framelens_logged", False):
                log.exception("[%s] %s %s failed after the response started", rid, scope["method"], scope["path"])
        finally:
            self._observe(scope.get(ROUTE_KEY, "unmatched"), scope["method"], state["status"],
                          time.perf_counter() - started)

    def _observe(self, route: str, method: str, status: int, seconds: float) -> None:
        # labels() validates and locks on every call; the children are looked up once per label set.
        key = (route, method, status)
        children = self._children.get(key)
        if children is None:
            children = self._children[key] = (self.metrics.requests.labels(route, method, str(status)),
                                               self.metrics.latency.labels(route))
        children[0].inc()
        children[1].observe(seconds)

    def _check(self, scope: Scope, headers: dict[bytes, bytes]) -> ApiError | None:
        length = headers.get(b"content-length", b"")
        if length.isdigit() and int(length) > self.max_body_bytes:
            return ApiError(413, f"request body is larger than {self.max_body_bytes} bytes "
                            "(-c http-max-body-bytes)", code="request_too_large")
        if self.api_key is None or scope["method"] == "OPTIONS" or scope["path"] in self.public_paths:
            return None
        auth = headers.get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if not auth and self.sessions is not None and self.sessions.valid(
                cookie_value(headers.get(b"cookie", b"").decode("latin-1"))):
            return None
        if not auth:
            return ApiError(401, "missing API key: send 'Authorization: Bearer KEY'", code="invalid_api_key",
                            headers={"WWW-Authenticate": "Bearer"})
        if scheme.lower() != b"bearer" or not hmac.compare_digest(token.strip(), self.api_key):
            return ApiError(401, "incorrect API key provided", code="invalid_api_key",
                            headers={"WWW-Authenticate": "Bearer"})
        return None

    def _capped(self, receive: Receive) -> Receive:
        seen = 0
        limit = self.max_body_bytes

        async def capped() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise _BodyTooLarge(413, f"request body is larger than {limit} bytes (-c http-max-body-bytes)",
                                        code="request_too_large")
            return message

        return capped
