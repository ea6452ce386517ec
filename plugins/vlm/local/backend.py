"""The ``local`` backend: the :class:`~framelens.VLMBackend` in front of the in-process engine.

Every backend of the same model, runtime, device and dtype in a process shares
one engine (:func:`shared_engine`), whatever its name, so ``-p local`` and
``-p alerts -c alerts-backend=local`` and ``serve --backend local`` load the
weights once. Prompts are built (chat template, image decoding and
preprocessing) on a worker thread; generation happens on the engine's own
thread; this side only awaits a queue, so the video loop never waits.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

from framelens import (
    BackendError,
    ChatChunk,
    ChatMessage,
    ChatResult,
    ChoiceResult,
    ConfigError,
    GenerationParams,
    Health,
    ModelInfo,
    Usage,
    VLMBackend,
    VLMTimings,
)

from .options import LocalOptions

__all__ = ["LocalBackend", "release_engine", "shared_engine"]

log = logging.getLogger("framelens.local")

_ENGINES: dict[tuple[str, ...], tuple[Any, int]] = {}
_LOCK = threading.Lock()


def _key(options: LocalOptions) -> tuple[str, ...]:
    model = str(Path(options.model).expanduser().resolve()) if Path(options.model).expanduser().is_dir() \
        else options.model
    return (model, options.revision or "", options.runtime, options.device, options.dtype)


def shared_engine(options: LocalOptions) -> Any:
    """The process's engine for these options, loaded on first use (ConfigError if it cannot be)."""
    key = _key(options)
    with _LOCK:
        found = _ENGINES.get(key)
        if found is not None:
            _ENGINES[key] = (found[0], found[1] + 1)
            return found[0]
        from .runtime import load_engine  # torch and transformers are imported here, not at `framelens list`

        engine = load_engine(options)
        _ENGINES[key] = (engine, 1)
        return engine


def release_engine(options: LocalOptions) -> None:
    """Drop one user of the shared engine; the last one stops its thread and frees the device."""
    key = _key(options)
    with _LOCK:
        found = _ENGINES.get(key)
        if found is None:
            return
        engine, users = found
        if users > 1:
            _ENGINES[key] = (engine, users - 1)
            return
        del _ENGINES[key]
    engine.close()


class LocalBackend(VLMBackend):
    """The in-process engine (see the module docstring).

    ``GenerationParams.extra`` keys: ``top_k`` (int), ``replace_key`` (a string:
    a newer request with the same key replaces this one while it still waits,
    and this one raises ``BackendError(kind="cancelled")``). ``json_schema`` is not
    supported (the alerts evaluator uses :meth:`choose` instead).
    """

    name = "local"
    supports = frozenset({"images", "stream", "max_tokens", "temperature", "top_p", "seed", "stop", "top_k",
                          "replace_key", "choices"})

    def __init__(self, options: LocalOptions) -> None:
        self.options = options
        self.engine = shared_engine(options)
        self._closed = False

    @property
    def default_model(self) -> str | None:
        return self.options.model

    @property
    def request_timeout(self) -> float:
        return self.options.timeout

    def _names(self) -> set[str]:
        return {self.options.model, Path(self.options.model).name, "local"}

    def _check(self, messages: Sequence[ChatMessage], params: GenerationParams) -> None:
        if params.model is not None and params.model not in self._names():
            raise BackendError(f"the local engine serves {self.options.model!r}, not {params.model!r}; load another "
                               "model with -c local-model=...", kind="model_not_found", status=404, param="model")
        if params.json_schema is not None or params.json_object:
            raise BackendError("the local engine does not constrain output to JSON", kind="unsupported",
                               status=400, param="response_format")
        if not messages:
            raise BackendError("no messages", kind="bad_request", status=400, param="messages")

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        self._check(messages, params)
        started = time.monotonic()
        timeout = params.timeout or self.options.timeout
        engine = self.engine
        prompt = await asyncio.to_thread(engine.model.prompt, messages)
        budget = engine.capacity - len(prompt.ids)
        if budget < 1:
            raise BackendError(f"the prompt has {len(prompt.ids)} tokens, which does not fit the context of "
                               f"{engine.capacity} tokens (raise local-max-context, or send less text or fewer "
                               "images)", kind="bad_request", status=400, param="messages")
        temperature = 0.0 if params.temperature is None else float(params.temperature)
        top_k = int(params.extra.get("top_k", 0) or 0)
        sampling = engine.sampling(temperature=temperature, top_p=1.0 if params.top_p is None else params.top_p,
                                   top_k=top_k, seed=params.seed)
        loop = asyncio.get_running_loop()
        events: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()

        def sink(kind: str, value: Any) -> None:
            try:
                loop.call_soon_threadsafe(events.put_nowait, (kind, value))
            except RuntimeError:  # the caller's loop is closed: nobody is waiting any more
                job.cancelled.set()

        job = engine.job(prompt, max_tokens=min(params.max_tokens or self.options.max_tokens, budget),
                         sampling=sampling, sink=sink, stops=tuple(params.stop),
                         replace_key=params.extra.get("replace_key"), background=params.priority == "background")
        engine.submit(job)
        model = self.options.model
        try:
            while True:
                left = timeout - (time.monotonic() - started)
                try:
                    kind, value = await asyncio.wait_for(events.get(), timeout=max(left, 0.001))
                except TimeoutError:
                    raise BackendError(f"the local engine gave no answer within {timeout:g} s (raise "
                                       "local-timeout, or lower the load)", kind="timeout", status=504) from None
                if kind == "text":
                    yield ChatChunk(text=value, model=model)
                elif kind == "done":
                    finish, usage, timings = value
                    yield ChatChunk(finish_reason=finish, usage=usage, timings=timings, model=model)
                    return
                else:
                    raise value
        finally:
            job.cancelled.set()  # a caller that left (or timed out) frees its KV slot at the next step

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        text: list[str] = []
        finish, usage, timings = "stop", Usage(), VLMTimings()
        async for chunk in self.stream(messages, params):
            text.append(chunk.text)
            if chunk.finish_reason is not None:
                finish, usage, timings = chunk.finish_reason, chunk.usage or usage, chunk.timings or timings
        return ChatResult("".join(text), finish, usage, timings, self.options.model)

    async def choose(self, conversations: Sequence[Sequence[ChatMessage]], choices: Sequence[str],
                     params: GenerationParams) -> list[ChoiceResult]:
        if not conversations:
            return []
        for c in conversations:
            self._check(c, params)
        if len(choices) < 2:
            raise BackendError("choose() needs at least two choices", kind="bad_request", status=400)
        engine = self.engine
        ids = engine.choice_tokens(choices)
        prompts = await asyncio.to_thread(lambda: [engine.model.prompt(c) for c in conversations])
        for p in prompts:
            if len(p.ids) >= engine.capacity:
                raise BackendError(f"a prompt of {len(p.ids)} tokens does not fit the context of {engine.capacity} "
                                   "tokens (local-max-context)", kind="bad_request", status=400, param="messages")
        loop = asyncio.get_running_loop()
        result: asyncio.Future[Any] = loop.create_future()

        def sink(kind: str, value: Any) -> None:
            def deliver() -> None:
                if result.done():
                    return
                if kind == "done":
                    result.set_result(value)
                else:
                    result.set_exception(value)
            try:
                loop.call_soon_threadsafe(deliver)
            except RuntimeError:  # the caller's loop is closed
                pass

        job = engine.choice_job(prompts, ids, sink, background=params.priority == "background")
        engine.submit(job)
        timeout = params.timeout or self.options.timeout
        try:
            probs = await asyncio.wait_for(result, timeout=timeout)
        except TimeoutError:
            job.cancelled.set()
            raise BackendError(f"the local engine gave no answer within {timeout:g} s", kind="timeout",
                               status=504) from None
        out = []
        for row in probs:
            table = {c: float(p) for c, p in zip(choices, row, strict=True)}
            out.append(ChoiceResult(max(table, key=lambda c: table[c]), table))
        return out

    async def models(self) -> list[ModelInfo]:
        return [ModelInfo(id=self.options.model, owned_by="framelens-local", capabilities=("vision", "completion"))]

    async def health(self) -> Health:
        if self._closed:
            return Health(False, "closed")
        if not self.engine.alive:
            return Health(False, "the local engine thread has stopped; restart framelens")
        return Health(True, f"{self.options.model} loaded ({self.engine.describe()})")

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            await asyncio.to_thread(release_engine, self.options)


def register(register_backend: Any) -> None:
    """Register the ``local`` backend (called from the vlm plugin's ``register_backends``)."""

    def make(options: LocalOptions, context: Any) -> LocalBackend:
        try:
            return LocalBackend(options)
        except ImportError as exc:
            raise ConfigError(f"the local backend needs torch and transformers ({exc}): "
                              "pip install 'framelens[local]'") from None

    register_backend("local", make, options=LocalOptions,
                     help="The in-process VLM engine (PyTorch, ONNX Runtime or TensorRT; Llava and Gemma 3)")
