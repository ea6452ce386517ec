"""An ``httpx`` transport on aiohttp's connection pool, for the VLM backends.

httpx's own pool (httpcore) scans every pooled connection against every queued
request on each state change, so its CPU cost per request grows with the pool
and the queue: at 64 concurrent backend calls it spent 5 ms of CPU per request
and the service collapsed (issue 15). aiohttp's connector hands a free
keep-alive connection out of a per-host deque, whose cost does not depend on
how many there are. The backends keep httpx's API (``AsyncClient``, requests,
streamed responses, ``httpx.HTTPError``); only the transport underneath changes.

aiohttp's errors become the httpx exceptions that mean the same thing, so the
pool's retry and failover rules and its messages stay right:

==========================================  ==========================
aiohttp                                     httpx
==========================================  ==========================
connection refused, DNS, TLS handshake      ``ConnectError``
connect timeout                             ``ConnectTimeout``
read timeout (no byte for ``read`` s)       ``ReadTimeout``
server closed before / during the answer    ``RemoteProtocolError``
socket error while reading / writing        ``ReadError`` / ``WriteError``
malformed HTTP                              ``RemoteProtocolError``
==========================================  ==========================

A dropped connection is never reported as a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
from yarl import URL

__all__ = ["AiohttpTransport", "map_error", "read_body"]

_CHUNK = 64 * 1024
_NO_USER_AGENT = ("User-Agent",)


def map_error(exc: BaseException, request: httpx.Request, *, sent: bool) -> httpx.TransportError:
    """The httpx exception for an aiohttp (or socket) error; ``sent``: the request was written."""
    message = str(exc) or type(exc).__name__
    if isinstance(exc, aiohttp.ConnectionTimeoutError):
        return httpx.ConnectTimeout(message, request=request)
    if isinstance(exc, (aiohttp.SocketTimeoutError, aiohttp.ServerTimeoutError, asyncio.TimeoutError)):
        return httpx.ReadTimeout(message, request=request)
    if isinstance(exc, aiohttp.ClientConnectorError):
        return httpx.ConnectError(message, request=request)
    if isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError,
                        aiohttp.ClientResponseError)):
        return httpx.RemoteProtocolError(message, request=request)
    if isinstance(exc, (aiohttp.ClientOSError, OSError)):
        return (httpx.ReadError if sent else httpx.WriteError)(message, request=request)
    return httpx.RemoteProtocolError(message, request=request)


class _Body(httpx.AsyncByteStream):
    """An aiohttp response body as httpx's stream; closing it returns the connection to the pool."""

    def __init__(self, response: aiohttp.ClientResponse, request: httpx.Request) -> None:
        self._response = response
        self._request = request

    async def __aiter__(self) -> AsyncIterator[bytes]:
        try:
            async for chunk in self._response.content.iter_chunked(_CHUNK):
                yield chunk
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise map_error(exc, self._request, sent=True) from exc

    async def read_all(self) -> bytes:
        """The whole body in one read (what ``Response.aread()`` gets through four generators)."""
        try:
            return await self._response.read()
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            raise map_error(exc, self._request, sent=True) from exc

    async def aclose(self) -> None:
        # release() keeps a fully read connection alive and closes one that was cut short.
        self._response.release()


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


class AiohttpTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=AiohttpTransport())``: httpx's API on aiohttp's pool.

    ``max_connections`` bounds the pool per host (0: unbounded; callers bound
    concurrency themselves). Content-Encoding is left to httpx, which decodes it
    as usual. Timeouts come from each request's httpx ``timeout`` extension.
    Bound to the event loop that sends the first request.
    """

    def __init__(self, *, max_connections: int = 0, keepalive_expiry: float = 30.0) -> None:
        self.max_connections = max_connections
        self.keepalive_expiry = keepalive_expiry
        self._session: aiohttp.ClientSession | None = None
        self._urls: dict[str, URL] = {}

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(limit=0, limit_per_host=self.max_connections,
                                             keepalive_timeout=self.keepalive_expiry, enable_cleanup_closed=False,
                                             ttl_dns_cache=10)
            # No cookies, no User-Agent of aiohttp's, no decoding: httpx does what it always does with the
            # answer. (The User-Agent is skipped per request: a session-wide skip list costs a header
            # copy on every request, even the ones that bring their own User-Agent, as httpx's do.)
            self._session = aiohttp.ClientSession(connector=connector, auto_decompress=False,
                                                  cookie_jar=aiohttp.DummyCookieJar(),
                                                  timeout=aiohttp.ClientTimeout(total=None))
        return self._session

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        timeouts: dict[str, Any] = request.extensions.get("timeout") or {}
        connect = timeouts.get("connect")
        pool = timeouts.get("pool")
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=None if connect is None and pool is None else (connect or 0) + (pool or 0),
            sock_connect=connect,
            sock_read=timeouts.get("read"),
        )
        body = request.content if isinstance(request.stream, httpx.ByteStream) else await request.aread()
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
        skip = None if any(k.lower() == "user-agent" for k, _ in headers) else _NO_USER_AGENT
        key = str(request.url)
        url = self._urls.get(key)
        if url is None:
            if len(self._urls) > 256:
                self._urls.clear()
            url = self._urls[key] = URL(key, encoded=True)
        sent = False
        try:
            response = await self._get_session().request(
                request.method, url, headers=headers, data=body or None,
                timeout=timeout, allow_redirects=False, compress=None, auto_decompress=False,
                skip_auto_headers=skip,
            )
            sent = True
        except (aiohttp.ClientError, OSError, asyncio.TimeoutError) as exc:
            # A server that closed the connection before answering was sent the request.
            sent = isinstance(exc, (aiohttp.ServerDisconnectedError, aiohttp.ClientPayloadError))
            raise map_error(exc, request, sent=sent) from exc
        return httpx.Response(
            status_code=response.status,
            headers=list(response.raw_headers),  # bytes pairs: httpx keeps them as they are
            stream=_Body(response, request),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": (response.reason or "").encode("latin-1")},
            request=request,
        )

    async def aclose(self) -> None:
        session, self._session = self._session, None
        if session is not None:
            await session.close()
