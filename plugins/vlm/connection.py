"""One HTTP/1.1 keep-alive connection to a backend: an asyncio protocol fed to httptools' parser.

:class:`Connection` carries one request at a time for
:class:`~.transport.HttpTransport`; it knows the answer's head, the body bytes
gathered so far, whether the answer has ended and whether the connection may
carry another request, and turns every way a connection can fail into the
httpx exception that means the same thing (see the transport's table).
"""

from __future__ import annotations

import asyncio
from collections import deque

import httptools
import httpx

__all__ = ["Connection", "Origin"]

_HIGH_WATER = 256 * 1024  # body bytes buffered before the socket stops being read
Origin = tuple[bytes, bytes, int]  # scheme, host, port


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection, one request at a time.

    :meth:`send` writes a whole request; :meth:`wait` returns when something new
    has arrived (the head, body bytes, the end) and raises the connection's
    failure; :meth:`take` hands over the body bytes gathered so far. Reading
    pauses while more than 256 KiB of body wait to be taken.
    """

    def __init__(self, origin: Origin) -> None:
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.idle_since = 0.0
        self._reset()

    def _reset(self) -> None:
        self.status = 0
        self.reason = b""
        self.headers: list[tuple[bytes, bytes]] = []
        self.chunks: deque[bytes] = deque()
        self.buffered = 0
        self.head_done = False
        self.complete = False
        self.keep_alive = False
        self.until_eof = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.paused = False

    # -- asyncio.Protocol --------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's are not asyncio.Transport subclasses

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(httpx.RemoteProtocolError(f"malformed HTTP answer: {exc}"))
            self.close()
            return
        if self.buffered > _HIGH_WATER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()

    def eof_received(self) -> bool | None:
        return None  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.until_eof and self.head_done and not self.complete and exc is None:
            self.complete = True  # no length, no chunks: the answer ends with the connection
            self._wake()
        elif not self.complete:
            reason = f" ({exc})" if exc else ""
            error: httpx.TransportError = (httpx.ReadError if isinstance(exc, OSError) else
                                           httpx.RemoteProtocolError)(
                ("the server closed the connection mid-answer" if self.head_done else
                 "the server closed the connection without answering") + reason)
            self._fail(error)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_status(self, reason: bytes) -> None:
        self.reason = reason

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            self.headers = []  # an interim answer (100 Continue...): the real one follows
            return
        self.status = status
        self.head_done = True
        names = {n.lower() for n, _ in self.headers}
        self.until_eof = (b"content-length" not in names and b"transfer-encoding" not in names
                          and status not in (204, 304))
        self._wake()

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)
        self.buffered += len(body)
        self._wake()

    def on_message_complete(self) -> None:
        if self.head_done:
            self.keep_alive = self.parser.should_keep_alive()  # (the parser forgets it for the next message)
            self.complete = True
            self._wake()

    # -- used by the transport ---------------------------------------------------------------

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _fail(self, error: BaseException) -> None:
        if self.error is None:
            self.error = error
        self._wake()

    async def wait(self, timeout: float | None, request: httpx.Request) -> None:
        """Until something new arrives (a head, body bytes, the end, or a failure)."""
        if self.error is not None:
            raise _bind(self.error, request)
        loop = asyncio.get_running_loop()
        self.waiter = waiter = loop.create_future()
        timer = loop.call_later(timeout, _expire, waiter, timeout, request) if timeout is not None else None
        try:
            await waiter
        finally:
            self.waiter = None
            if timer is not None:
                timer.cancel()
        if self.error is not None:
            raise _bind(self.error, request)

    def take(self) -> bytes:
        """The body bytes gathered so far (reading resumes if it had paused)."""
        data = self.chunks.popleft() if len(self.chunks) == 1 else b"".join(self.chunks)
        self.chunks.clear()
        self.buffered = 0
        if self.paused and self.transport is not None and not self.closed:
            self.paused = False
            self.transport.resume_reading()
        return data

    def send(self, data: bytes) -> None:
        assert self.transport is not None
        self._reset()
        if self.closed:
            self._fail(httpx.RemoteProtocolError("the server closed the connection without answering"))
            return
        self.transport.write(data)

    def reusable(self) -> bool:
        return self.complete and self.keep_alive and not self.closed and self.error is None

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()


def _expire(waiter: asyncio.Future[None], timeout: float, request: httpx.Request) -> None:
    if not waiter.done():
        waiter.set_exception(httpx.ReadTimeout(f"no answer for {timeout:g} s", request=request))


def _bind(error: BaseException, request: httpx.Request) -> BaseException:
    if isinstance(error, httpx.RequestError):
        try:
            error.request = request
        except AttributeError:
            pass
    return error
