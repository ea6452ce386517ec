"""A small, fully controllable HTTP/1.1 server for protocol-faithful fakes.

Real servers (Ollama, NIM, vLLM) cannot run in the test environment, so the
fakes in this package imitate them on 127.0.0.1. They are built on
:class:`FakeHTTPServer`, which runs its own asyncio loop in a thread and gives
tests what a framework server would hide:

- every request is recorded (:attr:`FakeHTTPServer.requests`), body bytes included;
- any answer can be streamed chunk by chunk (``Transfer-Encoding: chunked``),
  with pauses between chunks, and can end in a dropped connection;
- scripted faults (:meth:`FakeHTTPServer.fail_next`, :meth:`drop_next`,
  :meth:`delay_next`) replace the next answers on a path;
- the server can be stopped and started again on the same port, so clients can
  be tested for "the backend went away and came back".

Subclasses implement :meth:`FakeHTTPServer.handle`. Typical use::

    with FakeOllama() as server:                 # starts on a free port
        ... call server.url ...
        assert server.requests[-1].json()["model"] == "llava"
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "DROP",
    "FakeHTTPServer",
    "Fault",
    "RecordedRequest",
    "Reply",
    "StrictJSONError",
    "paced",
    "serve_forever",
    "strict_json",
]


class _Drop:
    """Sentinel: close the connection at once (no answer, or an unfinished stream)."""

    def __repr__(self) -> str:
        return "DROP"


DROP = _Drop()
"""Return it from a handler (or yield it from a stream) to cut the connection."""


class StrictJSONError(ValueError):
    """The body is not JSON that a strict (Go ``encoding/json``-like) parser accepts."""


def _reject_constant(name: str) -> Any:
    raise StrictJSONError(f"invalid character '{name[0]}' looking for beginning of value")


def strict_json(body: bytes) -> Any:
    """Parse ``body`` the way Go and pydantic servers do: UTF-8 only, no NaN/Infinity.

    Raises :class:`StrictJSONError` with a Go-style message.
    """
    if not body.strip():
        raise StrictJSONError("EOF")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StrictJSONError(f"invalid UTF-8 in request body at byte {exc.start}") from None
    try:
        return json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise StrictJSONError(f"invalid character at offset {exc.pos}: {exc.msg}") from None


@dataclass
class RecordedRequest:
    """One request as the server received it."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]  # lower-cased names
    body: bytes
    received_at: float = field(default_factory=time.time)

    def json(self) -> Any:
        """The body parsed as JSON (the fakes already rejected bodies that are not)."""
        return json.loads(self.body)


@dataclass
class Reply:
    """An answer. Either ``body`` (sent with Content-Length) or ``stream``
    (an async iterator of byte chunks, sent chunked; it may yield :data:`DROP`)."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    stream: AsyncIterator[bytes | _Drop] | None = None

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        body = json.dumps(data, separators=(",", ":")).encode()
        return cls(status, {"Content-Type": "application/json; charset=utf-8", **(headers or {})}, body)

    @classmethod
    def text(cls, text: str, status: int = 200, content_type: str = "text/plain; charset=utf-8") -> Reply:
        return cls(status, {"Content-Type": content_type}, text.encode())


@dataclass
class Fault:
    """A scripted answer that replaces the next ``times`` requests whose path starts with ``path``.

    ``reply`` is a :class:`Reply`, :data:`DROP`, or ``None`` to answer normally
    after waiting ``delay`` seconds (a slow server).
    """

    path: str
    reply: Reply | _Drop | None
    times: int = 1
    delay: float = 0.0


_REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 413: "Payload Too Large", 422: "Unprocessable Entity",
    429: "Too Many Requests", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable", 504: "Gateway Timeout",
}


class FakeHTTPServer:
    """An HTTP/1.1 server on 127.0.0.1 for tests; subclass and implement :meth:`handle`.

    Args:
        port: 0 picks a free port (kept across :meth:`stop`/:meth:`start`).
        delay: seconds to wait before answering every request (a slow server).
    """

    max_body = 64 * 1024 * 1024

    def __init__(self, *, port: int = 0, delay: float = 0.0) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.delay = delay
        self.requests: list[RecordedRequest] = []
        self.faults: list[Fault] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    # -- life cycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT`` (no trailing slash)."""
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None

    def start(self) -> FakeHTTPServer:
        """Listen and serve in a background thread; returns ``self``."""
        if self._thread is not None:
            return self
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        ready = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._server = loop.run_until_complete(asyncio.start_server(self._serve, sock=sock))
            ready.set()
            loop.run_forever()
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"{type(self).__name__}:{self.port}", daemon=True)
        self._thread.start()
        ready.wait(5)
        return self

    def stop(self) -> None:
        """Stop listening and cut every open connection (clients see a dropped connection)."""
        if self._thread is None or self._loop is None:
            return
        loop = self._loop

        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for t in tasks:
                t.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._server.wait_closed()

        asyncio.run_coroutine_threadsafe(shutdown(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        self._thread.join(5)
        self._thread = None
        self._loop = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- scripting --------------------------------------------------------------------------

    def fail_next(self, status: int, body: Any, *, path: str = "/", times: int = 1,
                  headers: dict[str, str] | None = None) -> None:
        """Answer the next ``times`` requests under ``path`` with ``status`` and JSON ``body``."""
        self.add_fault(Fault(path, Reply.json(body, status, headers), times))

    def drop_next(self, *, path: str = "/", times: int = 1) -> None:
        """Close the connection of the next ``times`` requests under ``path`` without answering."""
        self.add_fault(Fault(path, DROP, times))

    def delay_next(self, seconds: float, *, path: str = "/", times: int = 1) -> None:
        """Wait ``seconds`` before answering the next ``times`` requests under ``path`` normally."""
        self.add_fault(Fault(path, None, times, seconds))

    def add_fault(self, fault: Fault) -> None:
        with self._lock:
            self.faults.append(fault)

    def _take_fault(self, path: str) -> Fault | None:
        with self._lock:
            for fault in self.faults:
                if path.startswith(fault.path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self.faults.remove(fault)
                    return fault
        return None

    def requests_to(self, path: str) -> list[RecordedRequest]:
        """The recorded requests whose path is ``path`` exactly."""
        with self._lock:
            return [r for r in self.requests if r.path == path]

    # -- to implement -----------------------------------------------------------------------

    async def handle(self, request: RecordedRequest) -> Reply | _Drop:
        """Answer one request. Runs on the server's loop; may ``await asyncio.sleep``."""
        return Reply.json({"error": "not found"}, 404)

    # -- HTTP/1.1 ---------------------------------------------------------------------------

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        try:
            while True:
                request = await self._read_request(reader)
                if request is None:
                    return
                keep_alive = request.headers.get("connection", "").lower() != "close"
                with self._lock:
                    self.requests.append(request)
                    self.in_flight += 1
                    self.max_in_flight = max(self.max_in_flight, self.in_flight)
                try:
                    reply = await self._answer(request)
                    if reply is DROP:
                        writer.transport.abort()
                        return
                    assert isinstance(reply, Reply)
                    if not await self._write_reply(writer, reply, keep_alive):
                        return
                finally:
                    with self._lock:
                        self.in_flight -= 1
                if not keep_alive:
                    writer.close()
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            writer.transport.abort()
        finally:
            self._writers.discard(writer)

    async def _answer(self, request: RecordedRequest) -> Reply | _Drop:
        fault = self._take_fault(request.path)
        wait = self.delay + (fault.delay if fault else 0.0)
        if wait:
            await asyncio.sleep(wait)
        if fault is not None and fault.reply is not None:
            return fault.reply
        return await self.handle(request)

    async def _read_request(self, reader: asyncio.StreamReader) -> RecordedRequest | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            return None
        lines = head.decode("latin-1").split("\r\n")
        method, target, _version = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = b""
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16)
                chunk = await reader.readexactly(size + 2)
                if size == 0:
                    break
                body += chunk[:-2]
        else:
            length = int(headers.get("content-length", "0") or 0)
            body = await reader.readexactly(min(length, self.max_body)) if length else b""
        parts = urlsplit(target)
        return RecordedRequest(method, parts.path, parse_qs(parts.query), headers, body)

    async def _write_reply(self, writer: asyncio.StreamWriter, reply: Reply, keep_alive: bool) -> bool:
        head = [f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}"]
        headers = {"Date": time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime()), **reply.headers}
        if reply.stream is None:
            headers["Content-Length"] = str(len(reply.body))
        else:
            headers["Transfer-Encoding"] = "chunked"
        if not keep_alive:
            headers["Connection"] = "close"
        head += [f"{k}: {v}" for k, v in headers.items()]
        head_bytes = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
        if reply.stream is None:
            # One write: headers and body in separate segments meet Nagle + delayed ACK (40 ms stalls).
            writer.write(head_bytes + reply.body)
            await writer.drain()
            return True
        writer.write(head_bytes)
        await writer.drain()
        async for chunk in reply.stream:
            if chunk is DROP:
                writer.transport.abort()
                return False
            assert isinstance(chunk, bytes)
            if chunk:
                writer.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                await writer.drain()
        writer.write(b"0\r\n\r\n")
        await writer.drain()
        return True


async def paced(items: Iterable[bytes | _Drop], delay: float = 0.0) -> AsyncIterator[bytes | _Drop]:
    """Yield ``items`` with ``delay`` seconds between them (a helper for streamed replies)."""
    first = True
    for item in items:
        if not first and delay:
            await asyncio.sleep(delay)
        first = False
        yield item


def serve_forever(server: FakeHTTPServer, label: str) -> None:
    """Start ``server``, print where it listens, and serve until Ctrl-C (for ``python -m fakes....``)."""
    server.start()
    print(f"{label} on {server.url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        server.stop()
