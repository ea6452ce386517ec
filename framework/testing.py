"""Helpers for testing plugins: fake sources, a fake VLM backend, collecting outputs, in-process runs.

Also available to third-party plugin authors::

    from framelens.testing import CollectingOutput, FakeBackend, backend_registered, run_pipeline
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import io
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .backend import (
    ChatChunk,
    ChatMessage,
    ChatResult,
    GenerationParams,
    ImagePart,
    ModelInfo,
    Usage,
    VideoPart,
    VLMBackend,
)
from .errors import BackendError
from .frame import Frame
from .hookspecs import hookimpl
from .options import Options
from .output import Output
from .pipeline import Pipeline
from .plugin_manager import get_plugin_manager
from .registry import RegisterBackend, RegisterOutput
from .runtime import Runtime
from .source import Source, SourceInfo

__all__ = [
    "CollectingOutput",
    "FakeBackend",
    "FakeBackendPlugin",
    "FakeRequest",
    "ListSource",
    "backend_registered",
    "plugin_registered",
    "run_pipeline",
]


class ListSource(Source):
    """Plays a fixed list of images, once (``live=False``) or as a live source."""

    def __init__(self, images: Sequence[np.ndarray], *, live: bool = False) -> None:
        super().__init__("list")
        self.images = list(images)
        self.live = live
        self.reconnect = False
        self._i = 0

    def open(self) -> SourceInfo:
        self._i = 0
        h, w = self.images[0].shape[:2] if self.images else (None, None)
        return SourceInfo(w, h, None, len(self.images))

    def read(self) -> np.ndarray | None:
        if self._i >= len(self.images):
            return None
        self._i += 1
        return self.images[self._i - 1]


class CollectingOutput(Output):
    """Keeps every frame written to it (``frames``), for assertions."""

    def __init__(self) -> None:
        self.frames: list[Frame] = []
        self.started = False
        self.closed = False
        self._lock = threading.Lock()

    def start(self) -> None:
        self.started = True

    def write(self, frame: Frame) -> None:
        with self._lock:
            self.frames.append(frame)

    def close(self) -> None:
        self.closed = True


# -- a fake VLM backend ------------------------------------------------------------------------


@dataclass(frozen=True)
class FakeRequest:
    """One call a :class:`FakeBackend` received: ``index`` counts calls from 0."""

    index: int
    messages: tuple[ChatMessage, ...]
    params: GenerationParams
    stream: bool

    @property
    def text(self) -> str:
        """The text of the last user message."""
        user = [m for m in self.messages if m.role == "user"]
        return user[-1].text() if user else ""

    def images(self) -> list[ImagePart]:
        return [p for m in self.messages for p in m.parts() if isinstance(p, ImagePart)]

    def videos(self) -> list[VideoPart]:
        return [p for m in self.messages for p in m.parts() if isinstance(p, VideoPart)]


Answer = str | Sequence[str] | Callable[[FakeRequest], "str | Awaitable[str]"]
Failure = BaseException | str | Callable[[FakeRequest], "BaseException | None"]


class FakeBackend(VLMBackend):
    """A deterministic :class:`~framelens.VLMBackend` for tests: no server, no model.

    - ``answer``: the text of every answer; a list (call ``i`` gets item ``i``, the last
      one repeats); or ``fn(request) -> str`` (sync or async; it may raise).
    - streaming splits the answer in words (``"a b"`` -> ``"a"``, ``" b"``) or, with
      ``chunk_size``, in pieces of that many characters; the last chunk carries
      ``finish_reason="stop"`` and ``usage``, as the backend contract says.
    - ``delay`` seconds before answering, ``chunk_delay`` between chunks.
    - ``fail``: raised instead of answering, on the calls in ``fail_calls`` (indexes from 0;
      default every call). A string is a :class:`~framelens.BackendError` ``kind``
      (``"unreachable"``, ``"timeout"``...); a callable returns the exception for a request
      or ``None``. With ``fail_after=N``, streams send N chunks before failing.
    - ``models``: model ids (or :class:`~framelens.ModelInfo`); a request naming another
      model fails with kind ``model_not_found``. The first is ``default_model``.
    - ``supports``: the capability set callers check (default: images, stream, max_tokens,
      temperature).

    It records ``requests`` (:class:`FakeRequest`), counts ``cancelled`` calls and the
    most calls ``running`` at once (``max_running``), and sets ``closed`` in ``aclose``.
    """

    name = "fake"

    def __init__(
        self,
        answer: Answer = "ok",
        *,
        models: Sequence[str | ModelInfo] = ("fake-1",),
        supports: Collection[str] | None = None,
        delay: float = 0.0,
        chunk_delay: float = 0.0,
        chunk_size: int | None = None,
        fail: Failure | None = None,
        fail_calls: Collection[int] | None = None,
        fail_after: int | None = None,
        prompt_tokens: int = 7,
        request_timeout: float = 60.0,
    ) -> None:
        if isinstance(answer, Sequence) and not isinstance(answer, str) and not answer:
            raise ValueError("FakeBackend: the list of answers is empty")
        self.answer = answer
        self.model_infos = [m if isinstance(m, ModelInfo) else ModelInfo(m, owned_by="test") for m in models]
        if supports is not None:
            self.supports = frozenset(supports)
        self.delay = delay
        self.chunk_delay = chunk_delay
        self.chunk_size = chunk_size
        self.fail = fail
        self.fail_calls = fail_calls
        self.fail_after = fail_after
        self.prompt_tokens = prompt_tokens
        self._timeout = request_timeout
        self.requests: list[FakeRequest] = []
        self.cancelled = 0
        self.running = 0
        self.max_running = 0
        self.closed = False

    @property
    def default_model(self) -> str | None:
        return self.model_infos[0].id if self.model_infos else None

    @property
    def request_timeout(self) -> float:
        return self._timeout

    def plugin(self, name: str = "fake") -> FakeBackendPlugin:
        """A plugin object that registers this instance as the backend ``name``."""
        return FakeBackendPlugin(name, self)

    # -- behaviour -------------------------------------------------------------------------

    def _record(self, messages: Sequence[ChatMessage], params: GenerationParams, stream: bool) -> FakeRequest:
        request = FakeRequest(len(self.requests), tuple(messages), params, stream)
        self.requests.append(request)
        return request

    def _failure(self, request: FakeRequest) -> BaseException | None:
        if self.fail is None or (self.fail_calls is not None and request.index not in self.fail_calls):
            return None
        if isinstance(self.fail, BaseException):
            return self.fail
        if isinstance(self.fail, str):
            return BackendError(f"fake backend: {self.fail} (call {request.index})", kind=self.fail)
        return self.fail(request)

    async def _text(self, request: FakeRequest) -> str:
        known = [m.id for m in self.model_infos]
        if request.params.model is not None and known and request.params.model not in known:
            raise BackendError(f"model {request.params.model!r} not found (have: {', '.join(known)})",
                               kind="model_not_found")
        if isinstance(self.answer, str):
            return self.answer
        if callable(self.answer):
            text = self.answer(request)
            return await text if inspect.isawaitable(text) else text
        return self.answer[min(request.index, len(self.answer) - 1)]

    def _chunks(self, text: str) -> list[str]:
        if self.chunk_size:
            return [text[i:i + self.chunk_size] for i in range(0, len(text), self.chunk_size)] or [""]
        words = text.split(" ")
        return [w if i == 0 else " " + w for i, w in enumerate(words)]

    async def _enter(self, request: FakeRequest) -> None:
        self.running += 1
        self.max_running = max(self.max_running, self.running)
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            self.running -= 1
            raise
        failure = self._failure(request)
        if failure is not None and (self.fail_after is None or not request.stream):
            self.running -= 1
            raise failure

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        request = self._record(messages, params, False)
        await self._enter(request)
        try:
            text = await self._text(request)
        finally:
            self.running -= 1
        return ChatResult(text, "stop", Usage(self.prompt_tokens, len(text.split())), model=params.model or "")

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        request = self._record(messages, params, True)
        await self._enter(request)
        try:
            chunks = self._chunks(await self._text(request))
            failure = self._failure(request) if self.fail_after is not None else None
            for i, piece in enumerate(chunks):
                if failure is not None and self.fail_after is not None and i >= self.fail_after:
                    raise failure
                await asyncio.sleep(self.chunk_delay)
                yield ChatChunk(text=piece, model=params.model or "")
            yield ChatChunk(finish_reason="stop", usage=Usage(self.prompt_tokens, len(chunks)),
                            model=params.model or "")
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        finally:
            self.running -= 1

    async def models(self) -> list[ModelInfo]:
        return list(self.model_infos)

    async def aclose(self) -> None:
        self.closed = True


class FakeBackendPlugin:
    """Registers a backend under ``name``: the same ``backend`` for every run, or a fresh one
    from ``make()`` per run. ``last`` is the instance the newest run got."""

    def __init__(self, name: str, backend: VLMBackend | None = None, *,
                 make: Callable[[], VLMBackend] | None = None) -> None:
        if (backend is None) == (make is None):
            raise ValueError("FakeBackendPlugin needs exactly one of backend or make")
        self.name = name
        self.backend = backend
        self.make = make
        self.last: VLMBackend | None = None

    def _create(self, options: Options, context: object) -> VLMBackend:
        backend = self.make() if self.make is not None else self.backend
        assert backend is not None
        self.last = backend
        return backend

    @hookimpl
    def register_backends(self, register: RegisterBackend) -> None:
        register(self.name, self._create, help="test backend (framelens.testing)")


@contextlib.contextmanager
def plugin_registered(plugin: object, name: str) -> Iterator[None]:
    """Register ``plugin`` with the process's plugin manager for the ``with`` block."""
    pm = get_plugin_manager()
    pm.register(plugin, name)
    try:
        yield
    finally:
        pm.unregister(name)


@contextlib.contextmanager
def backend_registered(name: str, backend: VLMBackend) -> Iterator[VLMBackend]:
    """Make ``backend`` the backend called ``name`` (``--backend NAME``,
    ``-c describe-backend=NAME``) for runs in the ``with`` block."""
    with plugin_registered(FakeBackendPlugin(name, backend), f"framelens-testing-backend-{name}"):
        yield backend


# -- in-process runs ---------------------------------------------------------------------------


class _CollectPlugin:
    def __init__(self, output: CollectingOutput) -> None:
        self.output = output

    @hookimpl
    def register_outputs(self, register: RegisterOutput) -> None:
        register("collect", lambda target, options, context: self.output, help="test output")


def run_pipeline(argv: Sequence[str]) -> tuple[dict[str, Any], CollectingOutput, Runtime]:
    """Run ``framelens run ARGV`` in this process with an extra ``-o collect`` output.

    Returns the benchmark report, the collected frames and the runtime.
    """
    from .cli import build_parser, config_from_args

    output = CollectingOutput()
    args = build_parser(plugin_commands=False).parse_args(["run", *argv])
    if "collect" not in args.output:
        args.output = [*args.output, "collect"]
    with plugin_registered(_CollectPlugin(output), "framelens-testing-collect"):
        pipeline = Pipeline.from_config(config_from_args(args), stdout=io.StringIO())
        report = pipeline.run()
    assert isinstance(pipeline.runtime, Runtime), "run_pipeline runs one camera; use Pipeline(cameras=...)"
    return report, output, pipeline.runtime
