"""HTTP plumbing shared by the VLM backends: pooled client, retries, failover, limits.

One :class:`ServerPool` per backend instance holds one pooled
``httpx.AsyncClient`` for all its base URLs and gives every request:

- connect and read timeouts (per read: a streamed answer may take longer in
  total, which is why callers also bound the whole call);
- a bounded number of requests in flight (an ``asyncio.Semaphore``); requests
  over the limit wait for a slot;
- failover across base URLs: requests are spread round-robin over the servers
  that answer; one that refuses a connection is skipped for a cool-down that
  doubles while it stays dead (1 s .. 30 s), and is tried again afterwards;
- retries with exponential backoff on connection errors and dropped
  connections, and on 429/503 (waiting what ``Retry-After`` asks, when the
  deadline allows).

What a server says in an error body is turned into a
:class:`~framelens.BackendError` by the backend's ``parse_error`` callback, so
this module stays protocol-neutral.
"""

from __future__ import annotations

import asyncio
import contextlib
import json as json_module
import logging
import random
import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
from pydantic import SecretStr, field_validator

from framelens import BackendError, CommaList, Field, Options
from framelens.web import parse_retry_after

__all__ = ["HttpBackendOptions", "ServerPool", "parse_json_error", "parse_retry_after"]

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
    max_in_flight: int = Field(4, ge=1, le=256, description="Requests in flight at once; more wait")

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


@dataclass
class _Server:
    url: str
    dead_until: float = 0.0
    failures: int = 0
    last_error: str = ""


class ServerPool:
    """Sends requests to one of several servers of one service, with the behaviour above.

    Args:
        service: the name users know (``Ollama``, ``NIM``), used in messages.
        urls: base URLs, without trailing slash; paths are appended to them.
        parse_error: turns an error answer into a :class:`BackendError`.
        unreachable_hint: appended to "not reachable" messages (how to start the server).
        headers: sent with every request (``Authorization``...).
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
        max_in_flight: int = 4,
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
        self.requests = 0
        self.retried = 0
        self._cursor = 0
        self._client: httpx.AsyncClient | None = None
        self._slots: asyncio.Semaphore | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def urls(self) -> list[str]:
        return [s.url for s in self.servers]

    # -- client and limits, bound to the loop that first uses them --------------------------

    def _bind(self) -> tuple[httpx.AsyncClient, asyncio.Semaphore]:
        loop = asyncio.get_running_loop()
        if self._client is None or self._slots is None or self._loop is not loop:
            # A client's connections belong to one event loop; a backend normally
            # lives on context.runner's loop for its whole life.
            self._loop = loop
            self._client = httpx.AsyncClient(
                headers=self.headers,
                timeout=httpx.Timeout(self.timeout, connect=self.connect_timeout),
                limits=httpx.Limits(max_connections=self.max_in_flight * len(self.servers),
                                    max_keepalive_connections=self.max_in_flight * len(self.servers)),
            )
            self._slots = asyncio.Semaphore(self.max_in_flight)
        return self._client, self._slots

    async def aclose(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    # -- choosing a server -------------------------------------------------------------------

    def _order(self) -> list[_Server]:
        """Servers to try for one request: the live ones, rotated so load spreads;
        only when none is live, the dead ones, soonest back first."""
        now = time.monotonic()
        live = [s for s in self.servers if s.dead_until <= now]
        if not live:
            return sorted(self.servers, key=lambda s: s.dead_until)
        self._cursor = (self._cursor + 1) % len(live)
        return live[self._cursor:] + live[: self._cursor]

    def _mark_dead(self, server: _Server, reason: str) -> None:
        server.failures += 1
        server.last_error = reason
        cooldown = min(self.cooldown_max, 2.0 ** (server.failures - 1))
        server.dead_until = time.monotonic() + cooldown
        if server.failures == 1:
            others = " (using the other servers meanwhile)" if len(self.servers) > 1 else ""
            log.warning("%s at %s is not reachable: %s%s", self.service, server.url, reason, others)

    def _mark_alive(self, server: _Server) -> None:
        if server.failures:
            log.info("%s at %s answers again", self.service, server.url)
        server.failures = 0
        server.dead_until = 0.0
        server.last_error = ""

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
        which :meth:`translate` maps.
        """
        client, slots = self._bind()
        total = timeout if timeout is not None else self.timeout
        deadline = time.monotonic() + total
        async with slots:
            response = await self._open(client, method, path, json, deadline)
            try:
                yield response
            finally:
                await response.aclose()

    async def request(self, method: str, path: str, *, json: Any = None, timeout: float | None = None) -> Any:
        """Send a request and return its JSON body (a :class:`BackendError` if it is not JSON)."""
        async with self.stream(method, path, json=json, timeout=timeout) as response:
            try:
                body = await response.aread()
            except httpx.HTTPError as exc:
                raise self.translate(exc, str(response.request.url)) from None
        try:
            return response.json() if body else None
        except ValueError:
            raise BackendError(
                f"{self.service} at {response.request.url} answered with something that is not JSON: "
                f"{body[:200]!r}", kind="server", status=response.status_code) from None

    async def _open(self, client: httpx.AsyncClient, method: str, path: str, payload: Any,
                    deadline: float) -> httpx.Response:
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
            for server in self._order():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise BackendError(f"{self.service} did not answer within the time limit", kind="timeout")
                try:
                    request = client.build_request(
                        method, server.url + path, json=payload,
                        timeout=httpx.Timeout(remaining, connect=min(self.connect_timeout, remaining)),
                    )
                    response = await client.send(request, stream=True)
                except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                    self._mark_dead(server, _describe(exc))
                    errors.append((server.url, _describe(exc)))
                    continue
                except (httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
                    # It took the connection and dropped it before answering: try again.
                    errors.append((server.url, _describe(exc)))
                    continue
                except httpx.TimeoutException:
                    raise BackendError(f"{self.service} at {server.url} did not answer within "
                                       f"{self.timeout:g} s", kind="timeout") from None
                self._mark_alive(server)
                if response.status_code < 400:
                    return response
                error = self.parse_error(response.status_code, await _read_quietly(response), server.url)
                if response.status_code not in (429, 503):
                    raise error
                # Busy: another server may have room; otherwise wait as long as it asks.
                error.retry_after = parse_retry_after(response.headers.get("retry-after"))
                if busy is None or (error.retry_after or 0) < (busy.retry_after or 0):
                    busy = error
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
        if isinstance(err, ConnectionRefusedError) or "refused" in str(err).lower():
            return "connection refused"
        if isinstance(err, OSError) and err.errno is not None and err.strerror:
            return err.strerror.lower()
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
