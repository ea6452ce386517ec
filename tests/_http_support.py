"""Helpers for the ``http`` service tests: an in-process service and a scriptable test backend.

The ``echo`` backend is a test double for the service's own logic (validation,
streaming, errors, limits). End-to-end tests use the real ``ollama``/``nim``
backends against the protocol-faithful fakes in ``tests/fakes``.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from framelens import (
    BackendError,
    ChatChunk,
    ChatMessage,
    ChatResult,
    Context,
    GenerationParams,
    ImagePart,
    ModelInfo,
    Options,
    RegisterFn,
    TextPart,
    Usage,
    VideoPart,
    VLMBackend,
    decode_image,
    hookimpl,
)
from framelens.options import parse_options
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.http import HttpOptions, HttpService
from framelens.testing import plugin_registered

ALL_PARAMS = frozenset({"images", "video", "stream", "max_tokens", "temperature", "top_p", "seed", "stop",
                        "json_schema", "json_object", "frequency_penalty", "presence_penalty"})


@dataclass
class Call:
    """One request the echo backend received."""

    messages: list[ChatMessage]
    params: GenerationParams
    stream: bool

    def images(self) -> list[ImagePart]:
        return [p for m in self.messages for p in m.parts() if isinstance(p, ImagePart)]

    def videos(self) -> list[VideoPart]:
        return [p for m in self.messages for p in m.parts() if isinstance(p, VideoPart)]


def image_size(part: ImagePart) -> tuple[int, int]:
    image = part.image if part.image is not None else decode_image(part.data or b"")
    return int(image.shape[1]), int(image.shape[0])


@dataclass
class EchoBackend(VLMBackend):
    """Answers with what it was sent: ``"<last user text> | 2 images: 16x16, 64x48"``.

    Knobs: ``supports``, ``delay`` (seconds before answering), ``chunk_delay``,
    ``fail`` (raised by every call), ``fail_after`` (chunks streamed before ``fail``
    is raised mid-stream). ``calls`` records requests; ``cancelled`` counts calls
    that were cancelled (client disconnects).
    """

    supports: frozenset[str] = ALL_PARAMS  # type: ignore[assignment]
    model_name: str | None = "echo-1"
    delay: float = 0.0
    chunk_delay: float = 0.0
    fail: BaseException | None = None
    fail_after: int | None = None
    calls: list[Call] = field(default_factory=list)
    cancelled: int = 0
    running: int = 0
    max_running: int = 0

    @property
    def default_model(self) -> str | None:
        return self.model_name

    def answer(self, messages: Sequence[ChatMessage], params: GenerationParams) -> str:
        if params.model not in (None, self.model_name, "echo-2"):
            raise BackendError(f"model {params.model!r} not found", kind="model_not_found")
        user = [m for m in messages if m.role == "user"]
        text = user[-1].text() if user else ""
        images = [p for m in messages for p in m.parts() if isinstance(p, ImagePart)]
        videos = [p for m in messages for p in m.parts() if isinstance(p, VideoPart)]
        out = text
        if images:
            out += f" | {len(images)} images: " + ", ".join("{}x{}".format(*image_size(p)) for p in images)
        if videos:
            out += " | video: " + ", ".join(f"{len(v.frames)} frames" if v.frames else f"{len(v.data or b'')} bytes"
                                            for v in videos)
        return out

    async def _enter(self) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.running -= 1
            raise
        if self.fail is not None and self.fail_after is None:
            self.running -= 1
            raise self.fail

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        self.calls.append(Call(list(messages), params, False))
        await self._enter()
        self.running -= 1
        text = self.answer(messages, params)
        return ChatResult(text, "stop", Usage(7, len(text.split())), model=params.model or "")

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        self.calls.append(Call(list(messages), params, True))
        await self._enter()
        try:
            words = self.answer(messages, params).split(" ")
            for i, word in enumerate(words):
                if self.fail is not None and self.fail_after is not None and i >= self.fail_after:
                    raise self.fail
                await asyncio.sleep(self.chunk_delay)
                yield ChatChunk(text=word if i == 0 else " " + word, model=params.model or "")
            yield ChatChunk(finish_reason="stop", usage=Usage(7, len(words)), model=params.model or "")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo("echo-1", owned_by="test", created=1700000000), ModelInfo("echo-2", owned_by="test")]


class EchoPlugin:
    """Registers the ``echo`` backend; ``backend`` is the instance the last context created."""

    def __init__(self, **knobs: Any) -> None:
        self.knobs: dict[str, Any] = knobs
        self.backend: EchoBackend | None = None

    @hookimpl
    def register_backends(self, register: RegisterFn) -> None:
        def make(options: Options, context: Context) -> EchoBackend:
            self.backend = EchoBackend(**self.knobs)
            return self.backend

        register("echo", make, help="test backend that echoes its input")


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


_PLUGIN = EchoPlugin()
_users = 0


@contextlib.contextmanager
def echo_service(http: Mapping[str, Any] | None = None, **knobs: Any) -> Iterator[tuple[Running, EchoBackend]]:
    """:func:`running_service` in front of a fresh ``echo`` backend (``knobs`` set its attributes)."""
    global _users
    stack = contextlib.ExitStack()
    if _users == 0:
        stack.enter_context(plugin_registered(_PLUGIN, "test-echo-backend"))
    _users += 1
    try:
        with stack:
            _PLUGIN.knobs = knobs
            with running_service(http) as running:
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
