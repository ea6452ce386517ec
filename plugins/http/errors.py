"""OpenAI-shaped errors: one exception type, one body shape, one mapping from backend failures.

Every failure a client sees is ``{"error": {"message", "type", "param", "code"}}``
with a status that says whose fault it was (4xx: the request, 5xx: the server
or the backend behind it). Route handlers raise :class:`ApiError`; anything
else is turned into one by the gateway, so no traceback ever reaches a client.
"""

from __future__ import annotations

from framelens import ApiError, BackendError, ConfigError, SourceError
from framelens.web import error_body, error_type_for

__all__ = ["ApiError", "api_error_from", "error_body", "error_type_for"]

# How each BackendError.kind reaches the client. A backend that rejects *our*
# credentials is a server misconfiguration (502), never the client's 401.
_BACKEND_STATUS = {
    "unreachable": 503,
    "model_not_found": 404,
    "timeout": 504,
    "rate_limited": 429,
    "bad_request": 400,
    "unsupported": 400,
    "auth": 502,
    "server": 502,
}


def api_error_from(exc: BaseException, *, backend: str = "backend") -> ApiError:
    """The :class:`ApiError` for a failure raised while serving a request.

    Backend failures keep their ``kind`` as ``code``; configuration and source
    problems caused by request input are 400/422. Anything unexpected becomes
    a 500 whose message hides the internals (they are logged with the request id).
    """
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, BackendError):
        status = exc.status if exc.kind == "bad_request" and exc.status in (400, 413, 415, 422) else None
        status = status or _BACKEND_STATUS.get(exc.kind, 502)
        headers = {"Retry-After": str(max(1, round(exc.retry_after)))} if exc.retry_after else {}
        if status == 404:
            code = "model_not_found"
        elif exc.kind == "unsupported":
            code = "unsupported_parameter"
        else:
            code = f"backend_{exc.kind}"
        return ApiError(status, f"{backend}: {exc}", param=exc.param, code=code, headers=headers)
    if isinstance(exc, SourceError):
        return ApiError(422, str(exc), code="source_unavailable")
    if isinstance(exc, ConfigError):
        return ApiError(400, str(exc), code="invalid_source")
    if isinstance(exc, TimeoutError):
        return ApiError(504, f"{backend} did not answer in time", code="backend_timeout")
    return ApiError(500, "internal error; see the server log for this request id", code="internal_error")
