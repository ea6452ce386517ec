"""What every route handler of one ``http`` service shares, and safe calls to its backend."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TypeVar

from starlette.requests import Request

from framelens import BackendError, Context, VLMBackend

from .convert import RequestConverter
from .errors import ApiError, api_error_from
from .fetch import Fetcher
from .gateway import request_id
from .limiter import Limiter
from .live import LiveSources
from .media import MediaResolver
from .metrics import HttpMetrics
from .options import HttpOptions

__all__ = ["ApiState", "ClientGone", "api_state", "wait_for_disconnect"]

log = logging.getLogger("framelens.http")
T = TypeVar("T")


class ClientGone(ApiError):
    """The client closed the connection; the backend request was cancelled."""

    def __init__(self) -> None:
        super().__init__(499, "client closed the request", code="client_closed_request")


async def wait_for_disconnect(request: Request) -> None:
    """Return when the client has gone away (the body must already have been read)."""
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


@dataclass
class ApiState:
    """One service's options, backend, limits and media helpers."""

    options: HttpOptions
    context: Context
    backend_name: str
    backend: VLMBackend
    limiter: Limiter
    metrics: HttpMetrics
    fetcher: Fetcher
    live: LiveSources
    media: MediaResolver
    converter: RequestConverter

    def backend_failure(self, exc: BaseException, request: Request) -> ApiError:
        """Count and log a failed backend call, and turn it into the client's error."""
        kind = exc.kind if isinstance(exc, BackendError) else ("timeout" if isinstance(exc, TimeoutError) else "server")
        self.metrics.backend_errors.labels(self.backend_name, kind).inc()
        error = api_error_from(exc, backend=self.backend_name)
        if error.status >= 500 and not isinstance(exc, (BackendError, TimeoutError, ApiError)):
            log.error("[%s] backend %s failed: %s: %s", request_id(request.scope), self.backend_name,
                      type(exc).__name__, exc, exc_info=exc)
        return error

    async def call(self, request: Request, work: Awaitable[T], timeout: float | None = None) -> T:
        """Await ``work`` unless the client disconnects (cancelled, :class:`ClientGone`) or time runs out (504).

        ``work`` runs in the caller's task; a timer and one watcher task cancel it
        (two tasks and an ``asyncio.wait`` per request cost a tenth of a proxied
        request's CPU).
        """
        task = asyncio.current_task()
        assert task is not None
        stop = _Stop(task)
        timer = asyncio.get_running_loop().call_later(timeout or self.options.request_timeout, stop, "timeout")
        watcher = asyncio.ensure_future(_watch_disconnect(request, stop))
        failure: Exception | None = None
        try:
            result = await work
        except asyncio.CancelledError:
            if stop.reason is None:
                raise
        except ApiError:
            if stop.reason is None:
                raise
        except Exception as exc:
            failure = exc
        finally:
            timer.cancel()
            watcher.cancel()
        if stop.reason is not None:
            uncancel = getattr(task, "uncancel", None)  # Python 3.11+: count our cancellation as handled
            if uncancel is not None and uncancel() > 0:
                raise asyncio.CancelledError  # someone else cancelled this task too
            if stop.reason == "gone":
                log.info("[%s] client disconnected; backend request cancelled", request_id(request.scope))
                raise ClientGone()
            raise self.backend_failure(TimeoutError(), request)
        if failure is not None:
            raise self.backend_failure(failure, request) from None
        return result


class _Stop:
    """Cancels a task once, remembering why (``"timeout"`` or ``"gone"``)."""

    __slots__ = ("reason", "task")

    def __init__(self, task: asyncio.Task[object]) -> None:
        self.task = task
        self.reason: str | None = None

    def __call__(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
            self.task.cancel()


async def _watch_disconnect(request: Request, stop: _Stop) -> None:
    try:
        await wait_for_disconnect(request)
    except Exception:
        pass  # receive() failing means the connection is unusable: the same as a disconnect
    stop("gone")


def api_state(request: Request) -> ApiState:
    """The :class:`ApiState` of the service that serves ``request``."""
    state: ApiState = request.app.state.api
    return state
