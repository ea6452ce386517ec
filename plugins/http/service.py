"""The ``http`` service: uvicorn serving the API on the run's I/O loop."""

from __future__ import annotations

import concurrent.futures
import errno
import logging
import socket
import time

import uvicorn

from framelens import ConfigError, Context, OutputError, Service

from .app import api_key, build_app, build_state
from .options import HttpOptions

__all__ = ["HttpService"]

log = logging.getLogger("framelens.http")

_START_TIMEOUT_S = 10.0
_STOP_TIMEOUT_S = 5.0


def bind_socket(host: str, port: int) -> socket.socket:
    """A bound (not yet listening) TCP socket; :class:`OutputError` naming the fix when it cannot be."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"-c http-host={host}: cannot resolve the address to bind: {exc.strerror}") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise OutputError(f"http: port {port} on {host} is already in use; pick another with "
                              f"-c http-port=N (or --port N)") from None
        if exc.errno == errno.EACCES:
            raise OutputError(f"http: no permission to bind port {port}; use a port above 1023") from None
        raise OutputError(f"http: cannot bind {host}:{port}: {exc.strerror}") from None
    sock.set_inheritable(True)
    return sock


class HttpService(Service):
    """The OpenAI-compatible API (and its compatibility endpoints) beside the pipeline.

    ``start()`` binds the port (a clear error if it is taken), starts uvicorn on
    ``context.runner``'s loop and returns once it accepts connections; ``port``
    then holds the bound port (useful with ``-c http-port=0``).
    """

    def __init__(self, options: HttpOptions, context: Context) -> None:
        self.options = options
        self.context = context
        self.state = build_state(options, context)
        self.app = build_app(self.state)
        self.port: int | None = None
        self._server: uvicorn.Server | None = None
        self._future: concurrent.futures.Future[None] | None = None

    @property
    def url(self) -> str:
        """Base URL of the running service, e.g. ``http://127.0.0.1:9000``."""
        host = self.options.host
        shown = "127.0.0.1" if host in ("0.0.0.0", "") else f"[{host}]" if ":" in host else host
        return f"http://{shown}:{self.port}"

    def start(self) -> None:
        sock = bind_socket(self.options.host, self.options.port)
        self.port = int(sock.getsockname()[1])
        config = uvicorn.Config(self.app, log_config=None, log_level="warning", access_log=False, lifespan="off",
                                proxy_headers=False, server_header=False, timeout_graceful_shutdown=3)
        server = uvicorn.Server(config)
        self._server = server
        self._future = self.context.runner.submit(server.serve(sockets=[sock]))
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not server.started:
            if self._future.done():
                exc = self._future.exception()
                sock.close()
                raise OutputError(f"http: the server did not start: {exc}")
            if time.monotonic() > deadline:
                self.stop()
                raise OutputError(f"http: the server did not start within {_START_TIMEOUT_S:g} s")
            time.sleep(0.01)
        if self.options.host not in ("127.0.0.1", "localhost", "::1"):
            log.warning("http: listening on %s, reachable from other machines%s", self.options.host,
                        "" if api_key(self.options) else " (no API key set: -c http-api-key=...)")
        log.info("OpenAI-compatible API at %s/v1 (backend %s)", self.url, self.state.backend_name)

    def stop(self) -> None:
        server, future = self._server, self._future
        if server is not None and future is not None:
            server.should_exit = True
            try:
                future.result(_STOP_TIMEOUT_S)
            except concurrent.futures.TimeoutError:
                server.force_exit = True
                log.warning("http: forced shutdown after %g s", _STOP_TIMEOUT_S)
            except Exception as exc:
                log.error("http: server stopped with an error: %s", exc)
        self._server = self._future = None
        if self.context.runner.loop.is_running():
            try:
                self.context.runner.run(self.state.fetcher.aclose(), timeout=2)
            except Exception as exc:
                log.debug("closing the URL fetcher failed: %s", exc)
