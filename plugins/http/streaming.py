"""The streaming response of backend answers (SSE, NDJSON): what is ready goes out in one write.

Starlette's ``StreamingResponse`` sends every item of its iterator as its own
ASGI message (one socket write each, through every middleware's ``send``) and
watches for the client going away in an anyio task group. Under load a backend
delivers several events in one read, so here the iterator runs in a task of
its own that fills a buffer, and the response's task sends whatever has
accumulated each time it gets to run: one event per write while the service
keeps up, many per write once it falls behind, which is when writes cost the
most. The bytes on the wire are the same; only the HTTP chunk boundaries move.

A watcher task cancels the iterator when the client disconnects (closing it,
so backend streams are cancelled upstream), as ``StreamingResponse`` does;
the iterator is never more than :data:`MAX_BUFFERED` bytes ahead of a slow
client.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

__all__ = ["MAX_BUFFERED", "BufferedStreamingResponse"]

MAX_BUFFERED = 64 * 1024
"""Bytes the iterator may run ahead of the client before it waits."""


class _Pipe:
    """The buffer between the iterator's task and the response's task."""

    __slots__ = ("chunks", "done", "error", "gone", "room", "size", "wake")

    def __init__(self) -> None:
        self.chunks: list[bytes] = []
        self.size = 0
        self.done = False
        self.gone = False
        self.error: BaseException | None = None
        self.wake: asyncio.Future[None] | None = None  # the sender waits for data
        self.room: asyncio.Future[None] | None = None  # the iterator waits for the sender

    def notify(self) -> None:
        wake, self.wake = self.wake, None
        if wake is not None and not wake.done():
            wake.set_result(None)

    def take(self) -> bytes:
        body = b"".join(self.chunks)
        self.chunks.clear()
        self.size = 0
        room, self.room = self.room, None
        if room is not None and not room.done():
            room.set_result(None)
        return body


class BufferedStreamingResponse(Response):
    """``StreamingResponse(content, ...)`` for an async iterator of bytes, with batched writes (see above)."""

    def __init__(self, content: AsyncIterator[bytes], status_code: int = 200,
                 headers: Mapping[str, str] | None = None, media_type: str | None = None) -> None:
        self.body_iterator = content
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
        loop = asyncio.get_running_loop()
        pipe = _Pipe()
        producer = loop.create_task(self._produce(pipe))
        watcher = loop.create_task(_watch(receive, pipe, producer))
        try:
            while True:
                if not pipe.chunks and not pipe.done:
                    pipe.wake = loop.create_future()
                    await pipe.wake
                if pipe.gone:
                    return
                finished = pipe.done
                body = pipe.take()
                if finished and pipe.error is not None:
                    # As StreamingResponse: what was produced goes out, the failure ends the response unfinished.
                    if body:
                        await send({"type": "http.response.body", "body": body, "more_body": True})
                    raise pipe.error
                await send({"type": "http.response.body", "body": body, "more_body": not finished})
                if finished:
                    return
        finally:
            watcher.cancel()
            if not producer.done():
                producer.cancel()
                await asyncio.wait({producer})  # its cleanup (closing the backend stream) comes first

    async def _produce(self, pipe: _Pipe) -> None:
        try:
            async for chunk in self.body_iterator:
                pipe.chunks.append(chunk)
                pipe.size += len(chunk)
                pipe.notify()
                if pipe.size > MAX_BUFFERED:
                    pipe.room = asyncio.get_running_loop().create_future()
                    await pipe.room
        except Exception as exc:
            pipe.error = exc
        finally:
            pipe.done = True
            pipe.notify()


async def _watch(receive: Receive, pipe: _Pipe, producer: asyncio.Task[None]) -> None:
    try:
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
    except Exception:
        pass  # receive() failing means the connection is unusable: the same as a disconnect
    pipe.gone = True
    producer.cancel()
    pipe.notify()
