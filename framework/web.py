"""What an HTTP route plugin needs: the ``register`` callable's type, errors, JSON in and out.

Routes are added through the ``register_routes`` hook and served by the ``http``
service behind its API-key check, error handling and metrics::

    from framelens import ApiError, Context, RouteRegister, hookimpl, json_response, read_json

    @hookimpl
    def register_routes(register: RouteRegister, context: Context) -> None:
        async def hello(request):
            \"\"\"Say hello.\"\"\"
            return json_response({"hello": request.query_params.get("name", "world")})
        register("/v1/hello", hello, methods=["GET"])

Endpoints read their body with :func:`read_json` (a 400 naming the field on bad
input) and raise :class:`ApiError` for failures; anything else they raise
becomes a 500 whose details stay in the server log.
"""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, Protocol, TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import Response

from .sessions import SESSION_COOKIE, Sessions, cookie_value, sessions_of

__all__ = [
    "SESSION_COOKIE",
    "ApiError",
    "RouteRegister",
    "Sessions",
    "cookie_value",
    "error_body",
    "error_type_for",
    "json_response",
    "parse_retry_after",
    "read_json",
    "sessions_of",
    "validation_error",
]

M = TypeVar("M", bound=BaseModel)


class RouteRegister(Protocol):
    """The ``register`` callable handed to ``register_routes``.

    ``endpoint`` is a Starlette endpoint (``async def endpoint(request) -> Response``).
    The keywords describe the route in ``/openapi.json``: ``summary`` and
    ``description`` (default: the endpoint's docstring), ``request_model`` and
    ``response_model`` (pydantic models), ``status_code``, ``response_types``
    (media types of a success), ``tags`` and ``extra_responses`` (status ->
    description). ``public=True`` skips the API-key check (health probes only);
    ``include_in_schema=False`` leaves the route out of ``/openapi.json``.
    Registering a path and method that is already taken raises :class:`ValueError`.
    """

    def __call__(
        self,
        path: str,
        endpoint: Callable[..., Any],
        methods: Sequence[str] = ("GET",),
        name: str | None = None,
        *,
        summary: str | None = None,
        description: str | None = None,
        request_model: type[BaseModel] | None = None,
        response_model: type[BaseModel] | None = None,
        status_code: int = 200,
        response_types: Sequence[str] = ("application/json",),
        tags: Sequence[str] = (),
        public: bool = False,
        include_in_schema: bool = True,
        extra_responses: dict[str, str] | None = None,
    ) -> None: ...


_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    415: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_type_for(status: int) -> str:
    """OpenAI's ``error.type`` for an HTTP status."""
    return _TYPES.get(status, "server_error" if status >= 500 else "invalid_request_error")


class ApiError(Exception):
    """A failure to report to the client as an OpenAI error object.

    ``param`` names the request field at fault (``messages.0.content.1.image_url.url``);
    ``code`` is a stable machine-readable reason (``model_not_found``); ``headers``
    are added to the response (``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        type: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.type = type or error_type_for(status)
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """The JSON body of an error response (and of a mid-stream SSE error event)."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}




_TYPE_LABELS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "function-after", "function-before"})


def _clean_loc(loc: Sequence[int | str]) -> list[str]:
    """A field path without pydantic's union-member labels (``str``, ``list[...]``, ``ImageURL``, tags)."""
    out: list[str] = []
    for part in map(str, loc):
        if "[" in part or part in _TYPE_LABELS or part[:1].isupper() or part.startswith("function-"):
            continue
        if out and out[-1] == part:  # a tagged union repeats its tag before the field of the same name
            continue
        out.append(part)
    return out


def validation_error(exc: ValidationError) -> ApiError:
    """The 400 for a pydantic error: the most specific problem, its field as ``param``.

    A value that fails every member of a union (``content`` as text or parts)
    is reported by the member that got furthest, not by the first one tried.
    """
    errors = exc.errors(include_url=False)
    err = max(errors, key=lambda e: (not str(e["type"]).endswith("_type"), len(e.get("loc", ()))))
    if err["type"] == "json_invalid":
        return ApiError(400, f"could not parse the JSON body of the request: {err['msg']}", code="invalid_json")
    loc = _clean_loc(err.get("loc", ()))
    param = ".".join(loc) or None
    if err["type"] == "extra_forbidden":
        return ApiError(400, f"unrecognized request argument supplied: {param}", param=param,
                        code="unknown_parameter")
    if err["type"] in ("model_type", "model_attributes_type") and not loc:
        return ApiError(400, "the request body must be a JSON object", code="invalid_request")
    where = f"{param}: " if param else ""
    return ApiError(400, f"{where}{str(err['msg']).removeprefix('Value error, ')}", param=param,
                    code="invalid_value")


async def read_json(request: Request, model: type[M]) -> M:
    """The request body validated as ``model``; a 400 :class:`ApiError` otherwise."""
    body = await request.body()
    try:
        return model.model_validate_json(body)
    except ValidationError as exc:
        raise validation_error(exc) from None
    except (ValueError, json.JSONDecodeError) as exc:  # pragma: no cover - pydantic reports json_invalid
        raise ApiError(400, f"could not parse the JSON body: {exc}", code="invalid_json") from None


_compact_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode  # not one encoder per call


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """A compact JSON response (``ensure_ascii=False``: captions are often not English)."""
    body = _compact_json(data)
    return Response(body, status, headers=headers, media_type="application/json")


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or an HTTP date); ``None`` if absent/bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
