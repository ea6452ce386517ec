"""HTTP plumbing shared by the VLM backends: pooled client, retries, a pool of servers, limits.

One :class:`ServerPool` per backend instance holds one ``httpx.AsyncClient``
(on :class:`~.transport.HttpTransport`, whose cost per request does not grow
with the number of connections) for all its base URLs and gives every request:

- connect and read timeouts (per read: a streamed answer may take longer in
  total, which is why callers also bound the whole call);
- the least-loaded healthy server: each request goes to the server with the
  fewest requests in flight (ties in turn), at most ``max_in_flight`` per
  server; requests over that wait for a slot;
- health: a server that refuses connections is taken out with a back-off that
  doubles while it stays dead (1 s .. 30 s) and is probed in the background
  (``probe_path``); it takes requests again once a probe gets any HTTP answer.
  Only when every server is out do requests try them anyway, soonest back first;
- retries with exponential backoff on connection errors and dropped
  connections (on the other servers first), and on 429/503 (waiting what
  ``Retry-After`` asks, when the deadline allows).

Per-server health, load and outcomes are Prometheus metrics on
``context.metrics`` (:func:`register_pool_metrics`), served at ``/metrics``.

What a server says in an error body is turned into a
:class:`~framelens.BackendError` by the backend's ``parse_error`` callback, so
this module stays protocol-neutral.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json as json_module
import logging
import os
import random
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import SecretStr, field_validator

from framelens import BackendError, CommaList, Context, Field, Options, redact
from framelens.web import parse_retry_after

from .transport import HttpTransport, read_body

__all__ = ["HttpBackendOptions", "ServerPool", "parse_json_error", "parse_retry_after", "register_pool_metrics"]

log = logging.getLogger("framelens.backend")


class HttpBackendOptions(Options):
    """Options every HTTP VLM backend takes. Subclasses give ``url`` its default."""

    url: CommaList = Field(
        default_factory=list,
        description="Server base URL; several, comma-separated, spread the load and fail over",
    )
    api_key: SecretStr | None = Field(None, description="Bearer token sent as Authorization (never logged)")
    timeout: float = Field(60.0, gt=0, description="Seconds to wait for an answer (per call)")
    connect_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a connection")
    retries: int = Field(2, ge=0, le=10, description="Retries on connection errors, 429 and 503")
    max_in_flight: int = Field(64, ge=1, le=4096, description="Requests in flight per server (a pool of N "
                                                            "servers takes N times as many); more wait")

    @field_validator("url")
    @classmethod
    def _check_urls(cls, urls: list[str]) -> list[str]:
        out = []
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ValueError(f"{url!r} is not an http:// or https:// URL")
            out.append(url.rstrip("/"))
        if not out:
            raise ValueError("at least one URL is needed")
        return out


def parse_json_error(body: bytes) -> str:
    """The message of an error body in any shape VLM servers use.

    ``{"error": "..."}`` (Ollama, some vLLM auth errors), ``{"error": {"message": ...}}``
    (OpenAI, newer vLLM), ``{"object": "error", "message": ...}`` (older vLLM/NIM),
    ``{"detail": ...}`` (FastAPI); anything else is shown as text.
    """
    text = body.decode("utf-8", "replace").strip()
    try:
        data = json_module.loads(text)
    except ValueError:
        return text[:300] or "(empty answer)"
    if isinstance(data, dict):
        error = data.get("error")
        if isinstance(error, str):
            return error
        if isinstance(error, dict) and error.get("message"):
            return str(error["message"])
        if data.get("object") == "error" and data.get("message"):
            return str(data["message"])
        detail = data.get("detail")
        if isinstance(detail, str):
            return detail
        if isinstance(detail, list) and detail:
            first = detail[0]
            if isinstance(first, dict):
                loc = ".".join(str(x) for x in first.get("loc", []) if x != "body")
                return f"{loc}: {first.get('msg', '')}".strip(": ")
        if isinstance(data.get("message"), str):
            return str(data["message"])
    return text[:300]


ErrorParser = Callable[[int, bytes, str], BackendError]
"""``parse_error(status, body, url) -> BackendError`` for an answer with status >= 400."""


@dataclass(eq=False)
class _Server:
    url: str
    dead_until: float = 0.0
    failures: int = 0
    last_error: str = ""
    in_flight: int = 0
    last_pick: int = 0
    requests: int = 0
    errors: int = 0
    probing: asyncio.Task[None] | None = field(default=None, repr=False)

    @property
    def up(self) -> bool:
        return self.failures == 0


class ServerPool:
    """Sends requests to one of several servers of one service, with the behaviour above.

    Args:
        service: the name users know (``Ollama``, ``NIM``), used in messages.
        urls: base URLs, without trailing slash; paths are appended to them.
        parse_error: turns an error answer into a :class:`BackendError`.
        unreachable_hint: appended to "not reachable" messages (how to start the server).
        headers: sent with every request (``Authorization``...).
        max_in_flight: requests in flight per server.
        probe_path: ``GET url + probe_path`` checks a server that was taken out.
    """

    cooldown_max = 30.0
    backoff_base = 0.25

    def __init__(
        self,
        service: str,
        urls: Sequence[str],
        *,
        parse_error: ErrorParser,
        unreachable_hint: str = "",
        headers: Mapping[str, str] | None = None,
        timeout: float = 60.0,
        connect_timeout: float = 5.0,
        retries: int = 2,
        max_in_flight: int = 64,
        probe_path: str = "",
    ) -> None:
        if not urls:
            raise ValueError("ServerPool needs at least one URL")
        self.service = service
        self.servers = [_Server(u.rstrip("/")) for u in urls]
        self.parse_error = parse_error
        self.unreachable_hint = unreachable_hint
        self.headers = dict(headers or {})
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.retries = retries
        self.max_in_flight = max_in_flight
        self.probe_path = probe_path
        self.requests = 0
        self.retried = 0
        self._picks = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._client: httpx.AsyncClient | None = None
        self._transport = HttpTransport()
        self._parsed: dict[str, httpx.URL] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    def stats(self) -> list[dict[str, Any]]:
        """Per server: ``url``, ``up``, ``in_flight``, ``requests``, ``errors``, ``last_error``."""
        return [{"url": s.url, "up": s.up, "in_flight": s.in_flight, "requests": s.requests, "errors": s.errors,
                 "last_error": s.last_error} for s in self.servers]

    # -- client, bound to the loop that first uses it ---------------------------------------

    def _bind(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            # A client's connections belong to one event loop; a backend normally
            # lives on context.runner's loop for its whole life.
            self._loop = loop
            self._waiters.clear()
            self._transport = HttpTransport()
            self._client = httpx.AsyncClient(
                headers=self.headers,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                transport=self._transport,
            )
        return self._client

    def _url(self, server: _Server, path: str) -> httpx.URL:
        # Parsing a URL is a third of httpx's cost per request; a pool only ever asks a few.
        key = server.url + path
        url = self._parsed.get(key)
        if url is None:
            if len(self._parsed) > 256:
                self._parsed.clear()
            url = self._parsed[key] = httpx.URL(key)
        return url

    async def aclose(self) -> None:
        for server in self.servers:
            task, server.probing = server.probing, None
            if task is not None:
                task.cancel()
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- choosing a server -------------------------------------------------------------------

    def _candidates(self, tried: set[_Server]) -> list[_Server]:
        """Servers this request may still use: the healthy ones; only when none is
        healthy, the ones taken out, soonest back first."""
        if len(self.servers) == 1:
            return [] if self.servers[0] in tried else self.servers  # dead or alive, it is the one to try
        now = time.monotonic()
        live = [s for s in self.servers if s.dead_until <= now]
        if live:
            return [s for s in live if s not in tried]
        return [s for s in sorted(self.servers, key=lambda s: s.dead_until) if s not in tried]

    async def _acquire(self, tried: set[_Server], deadline: float) -> _Server | None:
        """A slot on the least-loaded candidate (waiting while all are full); ``None`` if none is left."""
        while True:
            candidates = self._candidates(tried)
            if not candidates:
                return None
            best = candidates[0] if len(candidates) == 1 else min(candidates, key=lambda s: (s.in_flight, s.last_pick))
            if best.in_flight < self.max_in_flight:
                self._picks += 1
                best.last_pick = self._picks
                best.in_flight += 1
                return best
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise BackendError(f"{self.service}: every server had {self.max_in_flight} requests in flight "
                                   "for the whole time limit", kind="timeout")
            waiter = asyncio.get_running_loop().create_future()
            self._waiters.append(waiter)
            try:
                await asyncio.wait_for(waiter, remaining)
            except asyncio.TimeoutError:
                pass
            finally:
                if not waiter.done():
                    waiter.cancel()

    def _release(self, server: _Server) -> None:
        server.in_flight -= 1
        self._wake_one()

    def _mark_dead(self, server: _Server, reason: str) -> None:
        server.errors += 1
        server.last_error = reason
        if server.dead_until > time.monotonic():
            # Requests that were under way when it died: one outage, one back-off step (the probe grows it).
            return
        server.failures += 1
        cooldown = min(self.cooldown_max, 2.0 ** (server.failures - 1))
        server.dead_until = time.monotonic() + cooldown
        if server.failures == 1:
            others = " (using the other servers meanwhile)" if len(self.servers) > 1 else ""
            log.warning("%s at %s is not reachable: %s%s", self.service, server.url, reason, others)
        if server.probing is None or server.probing.done():
            server.probing = asyncio.get_running_loop().create_task(self._probe(server))

    def _mark_alive(self, server: _Server) -> None:
        if server.failures:
            log.info("%s at %s answers again", self.service, server.url)
        server.failures = 0
        server.dead_until = 0.0
        server.last_error = ""
        # A server that is back has room: wake requests that waited for a slot.
        for _ in range(min(len(self._waiters), self.max_in_flight)):
            self._wake_one()

    def _wake_one(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def _probe(self, server: _Server) -> None:
        """Until ``server`` answers again: wait out its back-off, then try it."""
        while server.failures:
            await asyncio.sleep(max(0.0, server.dead_until - time.monotonic()))
            if not server.failures or self._client is None:
                return
            try:
                response = await self._client.get(server.url + self.probe_path,
                                                  timeout=httpx.Timeout(self.connect_timeout))
                await response.aclose()
            except httpx.HTTPError as exc:
                if server.failures:
                    server.failures += 1
                    server.last_error = _describe(exc)
                    server.dead_until = time.monotonic() + min(self.cooldown_max, 2.0 ** (server.failures - 1))
                continue
            # Any HTTP answer, even an error status, means requests reach it again.
            self._mark_alive(server)

    def _unreachable(self, errors: list[tuple[str, str]]) -> BackendError:
        hint = f" {self.unreachable_hint}" if self.unreachable_hint else ""
        if len(errors) == 1 or len({u for u, _ in errors}) == 1:
            url, why = errors[-1]
            return BackendError(f"{self.service} is not reachable at {url} ({why}).{hint}", kind="unreachable")
        seen = dict(errors)
        listed = "; ".join(f"{u} ({w})" for u, w in seen.items())
        return BackendError(f"no {self.service} server is reachable: {listed}.{hint}", kind="unreachable")

    # -- sending -----------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def stream(
        self, method: str, path: str, *, json: Any = None, timeout: float | None = None
    ) -> AsyncIterator[httpx.Response]:
        """Open a request and yield the successful (status < 400) response, body unread.

        Retries and failover happen before anything is yielded. Errors are raised
        as :class:`BackendError`; reading the body may still raise httpx errors,
        which :meth:`translate` maps. The server's slot is held until the block ends.
        """
        client = self._bind()
        total = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + total
        response, server = await self._open(client, method, path, json, deadline)
        try:
            yield response
        except BaseException:
            server.errors += 1
            raise
        finally:
            try:
                await response.aclose()
            finally:
                self._release(server)

    async def request(self, method: str, path: str, *, json: Any = None, timeout: float | None = None) -> Any:
        """Send a request and return its JSON body (a :class:`BackendError` if it is not JSON)."""
        async with self.stream(method, path, json=json, timeout=timeout) as response:
            try:
                body = await read_body(response)
            except httpx.HTTPError as exc:
                raise self.translate(exc, str(response.request.url)) from None
        try:
            return json_module.loads(body) if body else None
        except ValueError:
            raise BackendError(
                f"{self.service} at {response.request.url} answered with something that is not JSON: "
                f"{body[:200]!r}", kind="server", status=response.status_code) from None

    async def _open(self, client: httpx.AsyncClient, method: str, path: str, payload: Any,
                    deadline: float) -> tuple[httpx.Response, _Server]:
        self.requests += 1
        errors: list[tuple[str, str]] = []
        busy: BackendError | None = None
        for attempt in range(self.retries + 1):
            if attempt:
                pause = busy.retry_after if busy is not None and busy.retry_after is not None else (
                    self.backoff_base * 2 ** (attempt - 1) * random.uniform(0.8, 1.2))
                if time.monotonic() + pause > deadline:
                    break
                self.retried += 1
                await asyncio.sleep(pause)
            busy = None
            tried: set[_Server] = set()
            while (server := await self._acquire(tried, deadline)) is not None:
                tried.add(server)
                held = True
                try:
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        raise BackendError(f"{self.service} did not answer within the time limit", kind="timeout")
                    server.requests += 1
                    try:
                        # What client.build_request() makes (the client's headers, no cookies, no query
                        # to merge) without merging them again on every request.
                        request = httpx.Request(
                            method, self._url(server, path), json=payload, headers=client.headers,
                            extensions={"timeout": {"connect": min(self.connect_timeout, remaining),
                                                    "read": remaining, "write": remaining, "pool": remaining}},
                        )
                        # Straight to the transport: no redirects, cookies or auth flows to run (the
                        # client's headers and timeouts are already on the request), a fifth less CPU.
                        response = await self._transport.handle_async_request(request)
                    except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                        self._mark_dead(server, _describe(exc))
                        errors.append((server.url, _describe(exc)))
                        continue
                    except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                        # It took the connection and dropped it before answering: the other servers next.
                        # (A kept-alive connection it had closed while idle is retried by the transport.)
                        server.errors += 1
                        errors.append((server.url, _describe(exc)))
                        continue
                    except httpx.TimeoutException:
                        server.errors += 1
                        raise BackendError(f"{self.service} at {server.url} did not answer within "
                                           f"{self.timeout:g} s", kind="timeout") from None
                    self._mark_alive(server)
                    if response.status_code < 400:
                        held = False
                        return response, server
                    server.errors += 1
                    error = self.parse_error(response.status_code, await _read_quietly(response), server.url)
                    if response.status_code not in (429, 503):
                        raise error
                    # Busy: another server may have room; otherwise wait as long as it asks.
                    error.retry_after = parse_retry_after(response.headers.get("retry-after"))
                    if busy is None or (error.retry_after or 0) < (busy.retry_after or 0):
                        busy = error
                finally:
                    if held:
                        self._release(server)
        if busy is not None:
            raise busy
        raise self._unreachable(errors)

    def translate(self, exc: httpx.HTTPError, url: str) -> BackendError:
        """A :class:`BackendError` for an httpx error raised while reading an answer."""
        if isinstance(exc, httpx.TimeoutException):
            return BackendError(f"{self.service} at {url} stopped answering for {self.timeout:g} s",
                                kind="timeout")
        return BackendError(f"{self.service} at {url} dropped the connection mid-answer ({_describe(exc)})",
                            kind="server")


def _describe(exc: BaseException) -> str:
    """A short reason for a connection failure, from the OS error under httpx's wrapper."""
    chain: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and len(chain) < 8:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__
    for err in chain:
        if isinstance(err, ConnectionRefusedError) or "refused" in str(err).lower() or (
                isinstance(err, OSError) and err.errno == errno.ECONNREFUSED):
            return "connection refused"
        if isinstance(err, OSError) and err.errno is not None:
            # asyncio's strerror is "Connect call failed (...)"; the OS's wording is clearer.
            return os.strerror(err.errno).lower()
    if isinstance(exc, httpx.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, httpx.RemoteProtocolError):
        return "connection closed by the server"
    if any("name or service not known" in str(e).lower() or "nodename" in str(e).lower() for e in chain):
        return "unknown host name"
    return str(exc) or type(exc).__name__


async def _read_quietly(response: httpx.Response) -> bytes:
    try:
        return await response.aread()
    except httpx.HTTPError:
        return b""
    finally:
        await response.aclose()


class _PoolMetrics(Collector):
    """``framelens_backend_server_*``: every pool of the run, read at scrape time."""

    def __init__(self, context: Context) -> None:
        self.pools: dict[str, ServerPool] = {}
        context.metrics.register(self)

    def collect(self) -> Iterator[Metric]:
        labels = ["backend", "server"]
        up = GaugeMetricFamily("framelens_backend_server_up",
                               "1 while the server takes requests, 0 while it is out (probed in the background)",
                               labels=labels)
        in_flight = GaugeMetricFamily("framelens_backend_server_in_flight", "Requests in flight on the server",
                                      labels=labels)
        requests = CounterMetricFamily("framelens_backend_server_requests", "Requests sent to the server",
                                       labels=labels)
        errors = CounterMetricFamily("framelens_backend_server_errors",
                                     "Requests to the server that failed (refused, dropped, timed out, HTTP >= 400)",
                                     labels=labels)
        for name, pool in list(self.pools.items()):
            for s in pool.servers:
                key = [name, redact(s.url)]
                up.add_metric(key, 1.0 if s.up else 0.0)
                in_flight.add_metric(key, s.in_flight)
                requests.add_metric(key, s.requests)
                errors.add_metric(key, s.errors)
        yield from (up, in_flight, requests, errors)


def register_pool_metrics(context: Context, backend: str, pool: ServerPool) -> None:
    """Expose ``pool``'s per-server health and load in ``/metrics``, labelled ``backend=NAME``."""
    context.state("vlm.pool-metrics", lambda: _PoolMetrics(context)).pools[backend] = pool
