"""A streamed backend answer, held open across the life of an HTTP streaming response.

The first chunk is awaited before the response starts, so a backend that fails
at once (unknown model, unreachable) gets a real HTTP status instead of a 200
with an error event. The backend slot is held until the stream is closed;
closing also closes the backend's generator, which cancels its upstream request
when the client disconnects.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack

import anyio
from starlette.requests import Request

from framelens import ChatChunk, ChatMessage, GenerationParams

from .state import ApiState

__all__ = ["BackendStream", "open_backend_stream"]

log = logging.getLogger("framelens.http")


async def _first(chunks: AsyncIterator[ChatChunk]) -> ChatChunk:
    try:
        return await chunks.__anext__()
    except StopAsyncIteration:
        return ChatChunk(finish_reason="stop")


async def _emulated(api: ApiState, messages: Sequence[ChatMessage],
                    params: GenerationParams) -> AsyncIterator[ChatChunk]:
    """One chunk from ``chat()``, for backends that cannot stream."""
    result = await api.backend.chat(messages, params)
    yield ChatChunk(text=result.text, finish_reason=result.finish_reason, usage=result.usage,
                    timings=result.timings, model=result.model, reasoning=result.reasoning)


async def _close_generator(chunks: AsyncIterator[ChatChunk]) -> None:
    aclose = getattr(chunks, "aclose", None)
    if aclose is None:
        return
    try:
        await aclose()
    except Exception:
        log.debug("closing a backend stream failed", exc_info=True)


class _Deadline:
    """Set off by a timer: cancels ``task`` if it is waiting for the backend, else marks the time as up."""

    __slots__ = ("expired", "fired", "task")

    def __init__(self) -> None:
        self.expired = False
        self.fired = False
        self.task: asyncio.Task[object] | None = None

    def expire(self) -> None:
        self.expired = True
        if self.task is not None and not self.fired:
            self.fired = True
            self.task.cancel()


class BackendStream:
    """Chunks of one backend answer; iterate :meth:`chunks`, then :meth:`aclose` (always)."""

    def __init__(self, first: ChatChunk, rest: AsyncIterator[ChatChunk], stack: AsyncExitStack,
                 deadline: float, started: float) -> None:
        self.first = first
        self.first_token_s = time.perf_counter() - started
        self._rest = rest
        self._stack = stack
        self._deadline = deadline

    async def chunks(self) -> AsyncIterator[ChatChunk]:
        """Every chunk, first included, up to the one with ``finish_reason``.

        Raises :class:`TimeoutError` when the request's time runs out mid-stream.
        """
        current: ChatChunk | None = self.first
        # One timer for the whole answer instead of an asyncio.wait_for (a task and a
        # timer) per chunk; it cancels the task only while it waits for the backend.
        loop = asyncio.get_running_loop()
        guard = _Deadline()
        timer = loop.call_later(max(0.0, self._deadline - time.perf_counter()), guard.expire)
        try:
            while current is not None:
                yield current
                if current.finish_reason is not None:
                    return
                guard.task = asyncio.current_task()
                if guard.expired:
                    # Out of time: what the backend has already sent still gets a moment, as before.
                    loop.call_later(0.001, guard.expire)
                try:
                    current = await self._rest.__anext__()
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not guard.fired:
                        raise
                    uncancel = getattr(guard.task, "uncancel", None)  # Python 3.11+: our cancellation, handled
                    if uncancel is not None and uncancel() > 0:
                        raise
                    raise TimeoutError("the backend stopped answering in time") from None
                finally:
                    guard.task = None
        finally:
            timer.cancel()

    async def aclose(self) -> None:
        with anyio.CancelScope(shield=True):
            await self._stack.aclose()


async def open_backend_stream(api: ApiState, request: Request, messages: Sequence[ChatMessage],
                              params: GenerationParams, started: float) -> BackendStream:
    """Take a backend slot, start the answer and wait for its first chunk (errors raise as ApiError)."""
    stack = AsyncExitStack()
    await stack.enter_async_context(api.limiter.slot())
    deadline = started + api.options.request_timeout
    try:
        if "stream" in api.backend.supports:
            rest = api.backend.stream(messages, params)
        else:
            rest = _emulated(api, messages, params)
        stack.push_async_callback(_close_generator, rest)
        first = await api.call(request, _first(rest), timeout=max(0.001, deadline - time.perf_counter()))
    except BaseException:
        with anyio.CancelScope(shield=True):
            await stack.aclose()
        raise
    stream = BackendStream(first, rest, stack, deadline, started)
    api.metrics.observe_first_token(api.backend_name, stream.first_token_s)
    return stream
