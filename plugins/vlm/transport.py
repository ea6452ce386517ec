"""An ``httpx`` transport for the VLM backends: HTTP/1.1 keep-alive on asyncio protocols and httptools.

httpx's own pool (httpcore) scans every pooled connection against every queued
request on each state change, so its CPU cost per request grows with the pool
and the queue: at 64 concurrent backend calls it spent 5 ms of CPU per request
and the service collapsed (issue 15). Here a free keep-alive connection comes
off a per-origin stack and a waiter off a FIFO, whatever their number. Each
connection is an :class:`asyncio.Protocol` fed to httptools' parser (llhttp,
the one uvicorn uses), and a request goes out in one write: a request
costs about half the CPU that aiohttp's client cost under the same httpx objects.
The backends keep httpx's API (``AsyncClient``, requests, streamed responses,
``httpx.HTTPError``); only the transport underneath changes.

Failures are the httpx exceptions that mean the same thing, so the pool's retry
and failover rules and its messages stay right:

============================================  ==========================
what happened                                 httpx
============================================  ==========================
connection refused, DNS, TLS handshake        ``ConnectError``
connect took longer than ``connect``          ``ConnectTimeout``
no free connection within ``pool``            ``PoolTimeout``
no byte for ``read`` seconds                  ``ReadTimeout``
server closed before / during the answer      ``RemoteProtocolError``
socket error (a reset, a broken pipe)         ``ReadError``
malformed HTTP                                ``RemoteProtocolError``
============================================  ==========================

A dropped connection is never reported as a timeout. A kept-alive connection
that the server closed while it lay idle (the answer had not begun) is retried
once on a fresh connection, as browsers and httpcore do. No proxies (as before:
backends are dialled directly) and no HTTP/2; Content-Encoding is left to
httpx, which decodes it as usual.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

import httpx

from .connection import Connection, Origin

__all__ = ["HttpTransport", "iter_lines", "read_body"]


class _Body(httpx.AsyncByteStream):
    """An answer's body as httpx's stream; reading it to the end frees the connection for the next request."""

    def __init__(self, transport: HttpTransport, conn: Connection, request: httpx.Request,
                 read_timeout: float | None) -> None:
        self._transport = transport
        self._conn: Connection | None = conn
        self._request = request
        self._timeout = read_timeout

    async def __aiter__(self) -> AsyncIterator[bytes]:
        conn = self._conn
        while conn is not None:
            if conn.chunks:
                yield conn.take()
                conn = self._conn
                continue
            if conn.complete:
                self._finish(conn)
                return
            await conn.wait(self._timeout, self._request)

    async def read_all(self) -> bytes:
        """The whole body in one piece (what ``Response.aread()`` gets through four generators)."""
        conn = self._conn
        if conn is None:
            return b""
        while not conn.complete:
            await conn.wait(self._timeout, self._request)
        data = conn.take() if conn.chunks else b""
        self._finish(conn)
        return data

    def _finish(self, conn: Connection) -> None:
        self._conn = None
        self._transport._release(conn)

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            if not conn.complete:
                conn.close()  # the rest of the answer would still arrive on it
            self._transport._release(conn)


async def read_body(response: httpx.Response) -> bytes:
    """``await response.aread()``, in one read when the body came through this transport undecoded.

    For callers that only need the bytes (``response.content`` stays unset then).
    """
    stream = response.stream
    if isinstance(stream, _Body) and not response.is_stream_consumed and (
            response.headers.get("content-encoding", "identity").strip().lower() == "identity"):
        response.is_stream_consumed = True
        return await stream.read_all()
    return await response.aread()


async def iter_lines(response: httpx.Response) -> AsyncIterator[str]:
    """``response.aiter_lines()`` (lines split at LF, CRLF or CR, without them), in one generator instead of
    httpx's four when the body came through this transport undecoded and is UTF-8 (as SSE always is).

    Streamed answers cost a quarter less CPU per token event this way.
    """
    stream = response.stream
    headers = response.headers
    # (httpx's charset_encoding parses Content-Type with the email package: only when a charset is named)
    if not isinstance(stream, _Body) or response.is_stream_consumed or (
            headers.get("content-encoding", "identity").strip().lower() != "identity") or (
            "charset" in headers.get("content-type", "").lower()
            and (response.charset_encoding or "").lower().replace("-", "") != "utf8"):
        async for line in response.aiter_lines():
            yield line
        return
    response.is_stream_consumed = True
    pending = b""
    async for data in stream:
        if pending:
            data = pending + data
        if not data:
            continue
        lines = data.splitlines(keepends=True)
        # The last line may be unfinished, and a CR at the very end may be the first half of a CRLF.
        pending = lines.pop() if not lines[-1].endswith(b"\n") else b""
        for raw in lines:
            yield raw.rstrip(b"\r\n").decode("utf-8", "replace")
    if pending:
        for raw in pending.splitlines():
            yield raw.decode("utf-8", "replace")


class HttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=HttpTransport())``: httpx's API on a lean HTTP/1.1 keep-alive pool.

    ``max_connections`` bounds the connections per origin (0: unbounded; the
    callers bound concurrency themselves), and a request waits, first come first
    served, for a free one at most its ``pool`` timeout. Idle connections are
    reused newest first and closed after ``keepalive_expiry`` seconds. Timeouts
    come from each request's httpx ``timeout`` extension. ``ssl_context``
    verifies ``https`` servers (default: httpx's, with certifi's roots). Bound to
    the event loop that sends the first request.
    """

    def __init__(self, *, max_connections: int = 0, keepalive_expiry: float = 30.0,
                 ssl_context: ssl.SSLContext | None = None) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._ssl = ssl_context
        self._idle: dict[Origin, list[Connection]] = {}
        self._open: dict[Origin, int] = {}
        self._queued: dict[Origin, deque[asyncio.Future[None]]] = {}
        self._sweeper: asyncio.TimerHandle | None = None
        self._closed = False

    # -- connections -------------------------------------------------------------------------

    async def _connect(self, origin: Origin, timeout: float | None, request: httpx.Request) -> Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == b"https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            tls = self._ssl
        name = host.decode("ascii")
        try:
            _, conn = await asyncio.wait_for(
                loop.create_connection(lambda: Connection(origin), name, port, ssl=tls,
                                       server_hostname=name if tls else None),
                timeout)
        except asyncio.TimeoutError:
            raise httpx.ConnectTimeout(f"no connection to {name}:{port} within {timeout:g} s",
                                       request=request) from None
        except (OSError, ssl.SSLError) as exc:
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from exc
        return conn

    async def _acquire(self, origin: Origin, timeouts: dict[str, Any], request: httpx.Request) -> Connection:
        while True:
            idle = self._idle.get(origin)
            while idle:
                conn = idle.pop()
                if not conn.closed and time.monotonic() - conn.idle_since < self.keepalive_expiry:
                    return conn
                self._forget(conn)
            if not self.max_connections or self._open.get(origin, 0) < self.max_connections:
                break
            waiter = asyncio.get_running_loop().create_future()
            queue = self._queued.setdefault(origin, deque())
            queue.append(waiter)
            pool = timeouts.get("pool")
            try:
                await asyncio.wait_for(waiter, pool) if pool is not None else await waiter
            except asyncio.TimeoutError:
                raise httpx.PoolTimeout(f"no free connection within {pool:g} s", request=request) from None
            finally:
                if waiter in queue:
                    queue.remove(waiter)
        self._open[origin] = self._open.get(origin, 0) + 1
        try:
            return await self._connect(origin, timeouts.get("connect"), request)
        except BaseException:
            self._open[origin] -= 1
            self._hand_over(origin)
            raise

    def _release(self, conn: Connection) -> None:
        if conn.reusable() and not self._closed:
            conn.idle_since = time.monotonic()
            self._idle.setdefault(conn.origin, []).append(conn)
            if self._sweeper is None:
                self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_expiry, self._sweep)
        else:
            self._forget(conn)
        self._hand_over(conn.origin)

    def _forget(self, conn: Connection) -> None:
        conn.close()
        self._open[conn.origin] = self._open.get(conn.origin, 1) - 1

    def _hand_over(self, origin: Origin) -> None:
        queue = self._queued.get(origin)
        while queue:
            waiter = queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _sweep(self) -> None:
        self._sweeper = None
        now = time.monotonic()
        for origin, idle in self._idle.items():
            for conn in [c for c in idle if c.closed or now - c.idle_since >= self.keepalive_expiry]:
                idle.remove(conn)
                self._forget(conn)
            self._hand_over(origin)
        if any(self._idle.values()):
            self._sweeper = asyncio.get_running_loop().call_later(self.keepalive_expiry, self._sweep)

    # -- httpx ---------------------------------------------------------------------------------

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self._closed:
            raise RuntimeError("the transport is closed")
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        url = request.url
        scheme = url.raw_scheme
        if scheme not in (b"http", b"https"):
            raise httpx.UnsupportedProtocol(f"unsupported URL scheme {url.scheme!r}", request=request)
        origin: Origin = (scheme, url.raw_host, url.port or (443 if scheme == b"https" else 80))
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        head = [request.method.encode("ascii"), b" ", url.raw_path, b" HTTP/1.1\r\n"]
        chunked = False
        for name, value in request.headers.raw:
            if name.lower() == b"transfer-encoding" and value.lower() == b"chunked":
                chunked = True  # a streamed request body, read above: sent as one chunk
            head += (name, b": ", value, b"\r\n")
        head.append(b"\r\n")
        if chunked:
            head += (b"%x\r\n" % len(body), body, b"\r\n0\r\n\r\n") if body else (b"0\r\n\r\n",)
        elif body:
            head.append(body)
        data = b"".join(head)
        for attempt in (0, 1):
            conn = await self._acquire(origin, timeouts, request)
            reused = conn.idle_since > 0
            try:
                conn.send(data)
                while not conn.head_done:
                    await conn.wait(timeouts.get("read"), request)
            except (httpx.RemoteProtocolError, httpx.ReadError):
                self._release(conn)
                # A kept-alive connection that the server closed while it lay idle: the same request
                # once more on a fresh one (what a browser or httpcore does; not a server failure).
                if reused and not conn.head_done and attempt == 0:
                    continue
                raise
            except BaseException:
                conn.close()
                self._release(conn)
                raise
            break
        if request.method == "HEAD":
            conn.complete = True  # HEAD answers have no body whatever their Content-Length says
            conn.close()
        return httpx.Response(
            status_code=conn.status,
            headers=conn.headers,
            stream=_Body(self, conn, request, timeouts.get("read")),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": conn.reason},
            request=request,
        )

    async def aclose(self) -> None:
        self._closed = True
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for idle in self._idle.values():
            for conn in idle:
                conn.close()
        self._idle.clear()

