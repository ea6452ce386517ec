"""Helpers for the ``http`` service tests: an in-process service and a scriptable test backend.

The ``echo`` backend (a :class:`framelens.testing.FakeBackend`) is a test double for
the service's own logic (validation, streaming, errors, limits). End-to-end tests use
the real ``ollama``/``nim`` backends against the protocol-faithful fakes in ``tests/fakes``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from framelens import (
    ChatMessage,
    Context,
    ImagePart,
    ModelInfo,
    TextPart,
    decode_image,
)
from framelens.options import parse_options
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.http import HttpOptions, HttpService
from framelens.testing import FakeBackend, FakeBackendPlugin, FakeRequest, plugin_registered

ALL_PARAMS = frozenset({"images", "video", "stream", "max_tokens", "temperature", "top_p", "seed", "stop",
                        "json_schema", "json_object", "frequency_penalty", "presence_penalty"})

Call = FakeRequest
"""One request the echo backend received."""


def image_size(part: ImagePart) -> tuple[int, int]:
    image = part.image if part.image is not None else decode_image(part.data or b"")
    return int(image.shape[1]), int(image.shape[0])


def echo_answer(request: FakeRequest) -> str:
    """``"<last user text> | 2 images: 16x16, 64x48"``: what the backend was sent."""
    out = request.text
    images, videos = request.images(), request.videos()
    if images:
        out += f" | {len(images)} images: " + ", ".join("{}x{}".format(*image_size(p)) for p in images)
    if videos:
        out += " | video: " + ", ".join(f"{len(v.frames)} frames" if v.frames else f"{len(v.data or b'')} bytes"
                                        for v in videos)
    return out


class EchoBackend(FakeBackend):
    """A :class:`FakeBackend` that answers with what it was sent (:func:`echo_answer`).

    Knobs (``echo_service(**knobs)``): ``supports``, ``delay`` (seconds before answering),
    ``chunk_delay``, ``fail`` (raised by every call), ``fail_after`` (chunks streamed
    before ``fail`` is raised mid-stream). ``calls`` records requests; ``cancelled``
    counts calls that were cancelled (client disconnects). Models: echo-1 (the default)
    and echo-2; another model is ``model_not_found``.
    """

    def __init__(self, **knobs: Any) -> None:
        knobs.setdefault("supports", ALL_PARAMS)
        models = [ModelInfo("echo-1", owned_by="test", created=1700000000), ModelInfo("echo-2", owned_by="test")]
        super().__init__(echo_answer, models=models, **knobs)

    @property
    def calls(self) -> list[FakeRequest]:
        return self.requests


@dataclass
class Running:
    service: HttpService
    context: Context

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def v1(self) -> str:
        return self.service.url + "/v1"


@contextlib.contextmanager
def running_service(http: Mapping[str, Any] | None = None,
                    namespaces: Mapping[str, Mapping[str, Any]] | None = None) -> Iterator[Running]:
    """An ``http`` service on 127.0.0.1 (free port) in this process, stopped afterwards."""
    spaces = {k: dict(v) for k, v in (namespaces or {}).items()}
    raw = {"port": 0, "backend": "echo", **(http or {})}
    manager = get_plugin_manager()
    context = Context(manager.registry, namespaces=spaces, plugins=manager)
    options = parse_options(HttpOptions, raw, namespace="http")
    assert isinstance(options, HttpOptions)
    context.runner.start()
    service = HttpService(options, context)
    service.start()
    try:
        yield Running(service, context)
    finally:
        service.stop()
        context.close()


_knobs: dict[str, Any] = {}
_PLUGIN = FakeBackendPlugin("echo", make=lambda: EchoBackend(**_knobs))
_users = 0


@contextlib.contextmanager
def echo_service(http: Mapping[str, Any] | None = None, *,
                 namespaces: Mapping[str, Mapping[str, Any]] | None = None,
                 **knobs: Any) -> Iterator[tuple[Running, EchoBackend]]:
    """:func:`running_service` in front of a fresh ``echo`` backend (``knobs`` set its attributes;
    ``namespaces`` other components' options, e.g. ``{"rtsp": {"open_timeout": 1}}``)."""
    global _users
    stack = contextlib.ExitStack()
    if _users == 0:
        stack.enter_context(plugin_registered(_PLUGIN, "test-echo-backend"))
    _users += 1
    try:
        with stack:
            _knobs.clear()
            _knobs.update(knobs)
            with running_service(http, namespaces) as running:
                backend = running.service.state.backend
                assert isinstance(backend, EchoBackend)
                yield running, backend
    finally:
        _users -= 1


def solid_png(width: int = 16, height: int = 16, color: tuple[int, int, int] = (0, 0, 255)) -> bytes:
    import cv2

    ok, buf = cv2.imencode(".png", np.full((height, width, 3), color, np.uint8))
    assert ok
    return buf.tobytes()


def text_of(messages: Sequence[ChatMessage]) -> list[tuple[str, str]]:
    return [(m.role, " ".join(p.text for p in m.parts() if isinstance(p, TextPart))) for m in messages]


@contextlib.contextmanager
def image_server(body: bytes, content_type: str = "image/png") -> Iterator[str]:
    """A plain HTTP server on 127.0.0.1 that answers every GET with ``body``; yields its base URL."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
