"""``mjpeg``: watch the processed video in a browser, as MJPEG over HTTP.

``-o mjpeg`` serves, by default on ``http://127.0.0.1:8080/`` (``-c mjpeg-host=0.0.0.0``
to reach it from other machines):

* ``/`` a page that shows the stream,
* ``/stream.mjpg`` the stream itself (``multipart/x-mixed-replace``; any number of viewers),
* ``/snapshot.jpg`` the newest frame as one JPEG.

``-o http://127.0.0.1:9090/cam/`` picks this output by its URL scheme and moves all
three under ``/cam/``.

With an API key (``-c mjpeg-api-key``, else the ``http`` service's
``-c http-api-key`` or ``$FRAMELENS_API_KEY``) every path wants it, as
``Authorization: Bearer KEY`` or, for players and ``<img>`` tags that cannot
send headers, ``?key=KEY`` (the page passes its own ``?key=`` on to the stream).

How it keeps the loop fast: ``write()`` only swaps a reference to the newest
frame. One encoder thread turns that frame into JPEG, at most once per frame and
only while somebody watches, and every viewer is sent the newest JPEG there is.
A viewer that reads slowly skips frames instead of queueing them, so it neither
grows memory nor delays the others.
"""

from __future__ import annotations

import concurrent.futures
import errno
import functools
import hmac
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import AsyncIterator
from importlib import resources
from urllib.parse import parse_qs, urlsplit

import pydantic
import uvicorn
from prometheus_client import CollectorRegistry, Counter, Gauge
from pydantic import field_validator
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from framelens import (
    ConfigError,
    Context,
    Field,
    Frame,
    Options,
    Output,
    OutputError,
    RegisterFn,
)

from .broadcast import EncodedFrame, JpegBroadcaster

__all__ = ["MjpegOptions", "MjpegOutput"]

log = logging.getLogger("framelens.mjpeg")

BOUNDARY = "frame"
SEND_BUFFER = 128 * 1024
NO_CACHE = {"Cache-Control": "no-cache, no-store, must-revalidate", "Pragma": "no-cache", "Expires": "0"}


class MjpegOptions(Options):
    host: str = Field("127.0.0.1", description="Address to listen on; 0.0.0.0 serves the video to other machines")
    api_key: str | None = Field(None, description="Key viewers must send (Authorization: Bearer KEY or ?key=KEY);"
                                " default: -c http-api-key, else $FRAMELENS_API_KEY, else none")
    port: int = Field(8080, ge=0, le=65535, description="TCP port; 0 picks a free one (logged at start)")
    path: str = Field("/", description="URL path of the page; the stream is PATH/stream.mjpg")
    quality: int = Field(80, ge=1, le=100, description="JPEG quality")
    max_fps: float = Field(0.0, ge=0, description="Encode at most this many frames per second; 0 sends every frame")
    max_side: int = Field(0, ge=0, description="Shrink frames so the longer side is at most this; 0 keeps the size")

    @field_validator("path")
    @classmethod
    def _normalise_path(cls, value: str) -> str:
        if not value.startswith("/"):
            raise ValueError("must start with '/', e.g. /cam/")
        return value if value.endswith("/") else value + "/"


_METRICS: weakref.WeakKeyDictionary[CollectorRegistry, tuple[Gauge, Counter]] = weakref.WeakKeyDictionary()
_METRICS_LOCK = threading.Lock()


def _metrics(registry: CollectorRegistry) -> tuple[Gauge, Counter]:
    # One set per registry: a run with two mjpeg outputs must not register the names twice.
    with _METRICS_LOCK:
        if registry not in _METRICS:
            _METRICS[registry] = (
                Gauge("framelens_mjpeg_viewers", "MJPEG streams being watched", ["port"], registry=registry),
                Counter("framelens_mjpeg_frames_encoded", "Frames encoded for MJPEG viewers", ["port"],
                        registry=registry),
            )
        return _METRICS[registry]


LOOPBACK = ("127.0.0.1", "localhost", "::1")
_warned: set[str] = set()


def warn_unprotected(what: str, host: str, key: str | None, fix: str) -> None:
    """Warn once per output kind when video is served beyond this machine without a key."""
    if host in LOOPBACK or host.startswith("127.") or key or what in _warned:
        return
    _warned.add(what)
    log.warning("%s: serving video on %s to anyone who can reach it (no API key; set %s)", what, host, fix)


def shared_api_key(own: str | None, context: Context) -> str | None:
    """The output's own key, else the ``http`` service's key, else ``$FRAMELENS_API_KEY``."""
    if own:
        return own
    http = context.namespace_options("http")
    value = http.get("api_key", http.get("api-key"))
    return str(value) if value else os.environ.get("FRAMELENS_API_KEY") or None


class KeyCheck:
    """ASGI wrapper: 401 unless the request carries the key (bearer header or ``?key=``)."""

    def __init__(self, app: ASGIApp, key: str) -> None:
        self.app = app
        self.key = key.encode()

    def _allowed(self, scope: Scope) -> bool:
        auth = dict(scope.get("headers", ())).get(b"authorization", b"")
        scheme, _, token = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self.key):
            return True
        given = parse_qs(scope.get("query_string", b"").decode("latin-1")).get("key", [""])[-1]
        return hmac.compare_digest(given.encode("latin-1", "replace"), self.key)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self._allowed(scope):
            await self.app(scope, receive, send)
            return
        response = Response("this video needs the API key: send 'Authorization: Bearer KEY' or add ?key=KEY\n",
                            status_code=401, media_type="text/plain", headers={"WWW-Authenticate": "Bearer"})
        await response(scope, receive, send)


@functools.cache
def _page() -> str:
    package = resources.files(__package__ or "framelens.plugins.outputs")
    return package.joinpath("mjpeg_page.html").read_text(encoding="utf-8")


class MjpegOutput(Output):
    """Serves the frames written to it as an MJPEG stream, a page and snapshots."""

    def __init__(self, options: MjpegOptions, context: Context) -> None:
        self.options = options
        self.context = context
        self.port = options.port
        self.frames_sent = 0
        self._broadcaster: JpegBroadcaster | None = None
        self._server: uvicorn.Server | None = None
        self._serving: concurrent.futures.Future[None] | None = None
        self._sock: socket.socket | None = None
        self._viewers = 0
        self._metrics = _metrics(context.metrics)

    @property
    def viewers(self) -> int:
        """How many streams are being watched right now."""
        return self._viewers

    @property
    def frames_encoded(self) -> int:
        """How many frames were turned into JPEG (never more than were written)."""
        return self._broadcaster.encoded if self._broadcaster else 0

    @property
    def url(self) -> str:
        host = self.options.host
        shown = "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
        return f"http://{shown}:{self.port}{self.options.path}"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        o = self.options
        try:
            sock = socket.create_server((o.host, o.port), family=_family(o.host), backlog=64)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise OutputError(
                    f"mjpeg: port {o.port} on {o.host} is already in use; stop the other server or pick another"
                    f" port with -c mjpeg-port=N (or -o http://{o.host}:N/)"
                ) from None
            raise OutputError(f"mjpeg: cannot listen on {o.host} port {o.port}: {exc.strerror or exc}") from None
        # Accepted connections inherit this. Without a cap, Linux lets a slow viewer's socket
        # buffer grow to megabytes of old frames (seconds of lag); capped, it holds a few
        # frames, so a slow viewer skips to the newest frame instead of watching the past.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, SEND_BUFFER)
        self._sock = sock
        self.port = sock.getsockname()[1]
        runner = self.context.runner
        encoded_total = self._metrics[1].labels(str(self.port))
        self._broadcaster = JpegBroadcaster(runner.loop, quality=o.quality, max_fps=o.max_fps, max_side=o.max_side,
                                            on_encoded=lambda _e: encoded_total.inc())
        self._broadcaster.start()
        key = shared_api_key(o.api_key, self.context)
        app: ASGIApp = self._app() if key is None else KeyCheck(self._app(), key)
        warn_unprotected("mjpeg", o.host, key, "-c mjpeg-api-key or -c http-api-key")
        config = uvicorn.Config(app, log_config=None, log_level="warning", access_log=False,
                                lifespan="off", timeout_graceful_shutdown=2)
        self._server = uvicorn.Server(config)
        self._serving = runner.submit(self._server.serve(sockets=[sock]))
        deadline = time.monotonic() + 10
        while not self._server.started:
            if self._serving.done() or time.monotonic() > deadline:
                self.close()
                raise OutputError(f"mjpeg: the HTTP server on port {self.port} did not start")
            time.sleep(0.01)
        log.info("MJPEG stream at %s (stream: %sstream.mjpg)", self.url, self.options.path)

    def write(self, frame: Frame) -> None:
        if self._broadcaster is not None:
            self._broadcaster.put(frame)

    def close(self) -> None:
        if self._broadcaster is not None:
            self._broadcaster.stop()  # ends every stream, so the server can shut down gracefully
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            try:
                self._serving.result(timeout=5)
            except Exception as exc:
                self._server.force_exit = True
                log.warning("mjpeg: server on port %d did not stop cleanly: %r", self.port, exc)
            self._server = self._serving = None
        if self._sock is not None:
            self._sock.close()  # uvicorn closes it on a clean shutdown; this covers the others
            self._sock = None

    # -- HTTP ------------------------------------------------------------------------------

    def _app(self) -> Starlette:
        base = self.options.path
        routes = [
            Route(base, self._index),
            Route(base + "stream.mjpg", self._stream),
            Route(base + "snapshot.jpg", self._snapshot),
        ]
        if base != "/":
            routes.append(Route(base.rstrip("/"), self._to_page))
        return Starlette(routes=routes)

    async def _to_page(self, _request: Request) -> Response:
        # The page uses relative URLs, so it must be served from a path ending in '/'.
        return RedirectResponse(self.options.path)

    async def _index(self, _request: Request) -> Response:
        return HTMLResponse(_page(), headers=NO_CACHE)

    async def _snapshot(self, _request: Request) -> Response:
        assert self._broadcaster is not None
        encoded = await self._broadcaster.snapshot(timeout=5)
        if encoded is None:
            return Response("no frame yet\n", status_code=503, media_type="text/plain",
                            headers={"Retry-After": "1", **NO_CACHE})
        return Response(encoded.jpeg, media_type="image/jpeg", headers={**NO_CACHE, **_frame_headers(encoded)})

    async def _stream(self, _request: Request) -> Response:
        return StreamingResponse(self._parts(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                                 headers=NO_CACHE)

    async def _parts(self) -> AsyncIterator[bytes]:
        bc = self._broadcaster
        assert bc is not None
        viewers = self._metrics[0].labels(str(self.port))
        bc.want()
        self._viewers += 1
        viewers.inc()
        try:
            # The boundary goes *after* each part, so a browser shows a frame as soon as it
            # arrives instead of when the next one starts (matters for slow streams).
            yield f"--{BOUNDARY}\r\n".encode()
            seq = 0
            while True:
                encoded = await bc.next_after(seq)
                if encoded is None:
                    return
                seq = encoded.seq
                head = "".join(f"{k}: {v}\r\n" for k, v in _frame_headers(encoded).items())
                yield (f"Content-Type: image/jpeg\r\nContent-Length: {len(encoded.jpeg)}\r\n{head}\r\n".encode()
                       + encoded.jpeg + f"\r\n--{BOUNDARY}\r\n".encode())
                self.frames_sent += 1
        finally:
            bc.unwant()
            self._viewers -= 1
            viewers.dec()


def _frame_headers(encoded: EncodedFrame) -> dict[str, str]:
    return {"X-Frame-Index": str(encoded.index), "X-Timestamp": f"{encoded.timestamp:.6f}"}


def _family(host: str) -> socket.AddressFamily:
    return socket.AF_INET6 if ":" in host else socket.AF_INET


def _from_target(target: str, options: MjpegOptions) -> MjpegOptions:
    """Lay ``http://HOST:PORT/PATH`` over the options; an option set to something else is an error."""
    if target == "mjpeg":
        return options
    parts = urlsplit(target)
    try:
        port = parts.port if parts.port is not None else 80
    except ValueError:
        raise ConfigError(f"-o {target}: the port is not a number between 0 and 65535") from None
    if parts.scheme != "http" or not parts.hostname or parts.query or parts.fragment:
        raise ConfigError(f"-o {target}: expected mjpeg or http://HOST:PORT/PATH")
    from_url = {"host": parts.hostname, "port": port, "path": parts.path or "/"}
    try:
        merged = MjpegOptions.model_validate({**options.model_dump(), **from_url})
    except pydantic.ValidationError as exc:
        raise ConfigError(f"-o {target}: {exc.errors()[0]['msg']}") from None
    for key, value in from_url.items():
        if key in options.model_fields_set and getattr(options, key) != getattr(merged, key):
            raise ConfigError(
                f"-o {target}: the URL gives {key} {value!r} but -c mjpeg-{key} gives {getattr(options, key)!r}"
            )
    return merged


def register(register: RegisterFn) -> None:
    def make(target: str, options: MjpegOptions, context: Context) -> MjpegOutput:
        return MjpegOutput(_from_target(target, options), context)

    register("mjpeg", make, options=MjpegOptions, schemes=("http",),
             help="MJPEG over HTTP for browsers: page at /, stream at /stream.mjpg, /snapshot.jpg")
