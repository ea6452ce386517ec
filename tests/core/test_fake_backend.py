"""framelens.testing.FakeBackend: answers, streaming, delays, failures, records; registration by name."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

import numpy as np
import pytest

from framelens import (
    BackendError,
    ChatChunk,
    ChatMessage,
    Context,
    GenerationParams,
    ImagePart,
    ModelInfo,
    TextPart,
    VLMBackend,
)
from framelens.plugin_manager import get_plugin_manager
from framelens.testing import FakeBackend, FakeRequest, backend_registered

PARAMS = GenerationParams()


def ask(text: str, *, image: bool = False) -> list[ChatMessage]:
    parts: tuple[TextPart | ImagePart, ...] = (TextPart(text),)
    if image:
        parts = (ImagePart(image=np.zeros((4, 6, 3), np.uint8)), *parts)
    return [ChatMessage("system", "be brief"), ChatMessage("user", parts)]


async def collect(backend: VLMBackend, messages: Sequence[ChatMessage],
                  params: GenerationParams = PARAMS) -> list[ChatChunk]:
    return [chunk async for chunk in backend.stream(messages, params)]


def test_answers_from_a_list_a_function_and_records_requests() -> None:
    listed = FakeBackend(["first", "second"])
    texts = [asyncio.run(listed.chat(ask("q"), PARAMS)).text for _ in range(3)]
    assert texts == ["first", "second", "second"], "the last answer repeats"
    seen = FakeBackend(lambda r: f"{r.text} / {len(r.images())} image(s) / call {r.index}")
    result = asyncio.run(seen.chat(ask("what is it?", image=True), GenerationParams(max_tokens=5)))
    assert result.text == "what is it? / 1 image(s) / call 0"
    assert result.finish_reason == "stop" and result.usage.completion_tokens == len(result.text.split())
    (request,) = seen.requests
    assert isinstance(request, FakeRequest) and not request.stream
    assert request.params.max_tokens == 5 and request.messages[0].role == "system"

    async def slow_answer(r: FakeRequest) -> str:
        await asyncio.sleep(0)
        return r.text.upper()

    assert asyncio.run(FakeBackend(slow_answer).chat(ask("loud"), PARAMS)).text == "LOUD"
    with pytest.raises(ValueError, match="the list of answers is empty"):
        FakeBackend([])


def test_streams_in_words_or_chunks_and_the_last_chunk_finishes() -> None:
    chunks = asyncio.run(collect(FakeBackend("a red door"), ask("q")))
    assert [c.text for c in chunks] == ["a", " red", " door", ""]
    assert [c.finish_reason for c in chunks] == [None, None, None, "stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])
    pieces = asyncio.run(collect(FakeBackend("abcdefg", chunk_size=3), ask("q")))
    assert [c.text for c in pieces] == ["abc", "def", "g", ""]


def test_delay_and_chunk_delay_are_waited() -> None:
    t0 = time.monotonic()
    asyncio.run(collect(FakeBackend("a b c", delay=0.2, chunk_delay=0.1), ask("q")))
    assert time.monotonic() - t0 >= 0.5


def test_failures_on_chosen_calls_with_their_kinds() -> None:
    backend = FakeBackend("fine", fail="unreachable", fail_calls={1})
    assert asyncio.run(backend.chat(ask("q"), PARAMS)).text == "fine"
    with pytest.raises(BackendError, match=r"fake backend: unreachable \(call 1\)") as info:
        asyncio.run(backend.chat(ask("q"), PARAMS))
    assert info.value.kind == "unreachable"
    assert asyncio.run(backend.chat(ask("q"), PARAMS)).text == "fine"
    assert len(backend.requests) == 3 and backend.running == 0

    custom = FakeBackend("x", fail=lambda r: BackendError("too long", kind="bad_request") if "long" in r.text
                         else None)
    assert asyncio.run(custom.chat(ask("short"), PARAMS)).text == "x"
    with pytest.raises(BackendError, match="too long"):
        asyncio.run(custom.chat(ask("long"), PARAMS))

    midway = FakeBackend("one two three", fail=BackendError("server died", kind="server"), fail_after=2)
    got: list[str] = []

    async def read() -> None:
        async for chunk in midway.stream(ask("q"), PARAMS):
            got.append(chunk.text)

    with pytest.raises(BackendError, match="server died"):
        asyncio.run(read())
    assert got == ["one", " two"] and midway.running == 0


def test_models_default_model_supports_and_unknown_models() -> None:
    backend = FakeBackend(models=["m1", ModelInfo("m2", owned_by="lab")], supports={"images", "json_schema"})
    assert backend.default_model == "m1" and backend.supports == frozenset({"images", "json_schema"})
    assert [m.id for m in asyncio.run(backend.models())] == ["m1", "m2"]
    assert asyncio.run(backend.chat(ask("q"), GenerationParams(model="m2"))).text == "ok"
    with pytest.raises(BackendError, match=r"model 'm3' not found \(have: m1, m2\)") as info:
        asyncio.run(backend.chat(ask("q"), GenerationParams(model="m3")))
    assert info.value.kind == "model_not_found"
    assert asyncio.run(backend.health()).ready


def test_cancelled_calls_and_concurrency_are_counted() -> None:
    backend = FakeBackend(delay=5)

    async def run() -> None:
        tasks = [asyncio.create_task(backend.chat(ask("q"), PARAMS)) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert backend.running == 3
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    asyncio.run(run())
    assert (backend.max_running, backend.running, backend.cancelled) == (3, 0, 3)


def test_backend_registered_shares_the_instance_by_name() -> None:
    backend = FakeBackend("registered")
    with backend_registered("fakeone", backend):
        context = Context(get_plugin_manager().registry)
        assert context.backend("fakeone") is backend
        spec = get_plugin_manager().registry.get("backend", "fakeone")
        assert spec.plugin == "framelens-testing-backend-fakeone"
        context.runner.start()
        context.close()
    assert backend.closed, "the run closed the backend it used"
    assert get_plugin_manager().registry.find("backend", "fakeone") is None
