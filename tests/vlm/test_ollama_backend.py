"""The ``ollama`` backend against a protocol-faithful fake Ollama on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from typing import Any

import cv2
import httpx
import numpy as np
import pytest
from fakes import FakeOllama, Reply, unused_url

from framelens import BackendError, ChatMessage, ConfigError, Context, GenerationParams, ImagePart, TextPart, VideoPart
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.vlm.ollama import OllamaBackend, OllamaOptions


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def backend(*urls: str, **options: Any) -> OllamaBackend:
    return OllamaBackend(OllamaOptions.model_validate({"url": list(urls), **options}))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def chat(b: OllamaBackend, messages: list[ChatMessage], params: GenerationParams | None = None) -> Any:
    try:
        return await b.chat(messages, params or GenerationParams())
    finally:
        await b.aclose()


async def stream(b: OllamaBackend, messages: list[ChatMessage], params: GenerationParams | None = None) -> list[Any]:
    try:
        return [c async for c in b.stream(messages, params or GenerationParams())]
    finally:
        await b.aclose()


def jpeg(w: int = 64, h: int = 48) -> bytes:
    img = np.zeros((h, w, 3), np.uint8)
    cv2.rectangle(img, (5, 5), (w // 2, h // 2), (0, 200, 255), -1)
    return cv2.imencode(".jpg", img)[1].tobytes()


def ask(data: bytes | None = None, text: str = "What is this?") -> list[ChatMessage]:
    parts: tuple[Any, ...] = (TextPart(text),) if data is None else (TextPart(text), ImagePart(data=data))
    return [ChatMessage("system", "Be brief."), ChatMessage("user", parts)]


def test_chat_sends_raw_base64_and_maps_every_parameter(ollama: FakeOllama) -> None:
    data = jpeg()
    params = GenerationParams(max_tokens=40, temperature=0.2, top_p=0.9, seed=7, stop=("\n",),
                              json_schema={"type": "object", "properties": {"caption": {"type": "string"}}})
    b = backend(ollama.url, keep_alive="10m", num_ctx=2048)
    result = run(chat(b, ask(data), params))
    body = ollama.requests_to("/api/chat")[-1].json()
    assert body["model"] == "llava"
    assert body["stream"] is False
    assert body["messages"][0] == {"role": "system", "content": "Be brief."}
    user = body["messages"][1]
    assert user["content"] == "What is this?"
    # Byte for byte: raw standard base64 of exactly the JPEG we passed, no data: prefix.
    assert user["images"] == [base64.b64encode(data).decode()]
    assert body["options"] == {"temperature": 0.2, "num_predict": 40, "top_p": 0.9, "seed": 7, "stop": ["\n"],
                               "num_ctx": 2048}
    assert body["keep_alive"] == "10m"
    assert body["format"] == params.json_schema
    assert result.text == '{"caption": "I see an image of 64x48."}'
    assert ollama.images[-1].shape == (48, 64, 3)


def test_decoded_frames_are_encoded_as_jpeg_and_json_mode_uses_format_json(ollama: FakeOllama) -> None:
    frame = np.full((30, 40, 3), 90, np.uint8)
    b = backend(ollama.url, keep_alive="-1")
    run(chat(b, [ChatMessage("user", (TextPart("hi"), ImagePart(image=frame)))],
             GenerationParams(json_object=True)))
    body = ollama.requests_to("/api/chat")[-1].json()
    sent = base64.b64decode(body["messages"][0]["images"][0])
    assert sent[:3] == b"\xff\xd8\xff"
    assert body["format"] == "json"
    assert body["keep_alive"] == -1  # seconds go as a number


def test_usage_and_server_timings_are_extracted(ollama: FakeOllama) -> None:
    result = run(chat(backend(ollama.url), ask(jpeg())))
    final = ollama.requests_to("/api/chat")
    assert len(final) == 1
    words = len("Be brief. What is this?".split())
    assert result.usage.prompt_tokens == words + 2 + 576  # what the fake counted: text + one image
    assert result.usage.completion_tokens == len("I see an image of 64x48.".split())
    assert result.timings.prompt_s == pytest.approx(0.12)
    assert result.timings.generate_s == pytest.approx(0.025 * result.usage.completion_tokens)
    assert result.timings.total_s > 0
    assert result.finish_reason == "stop"
    assert result.model == "llava"


def test_num_predict_limit_reports_length(ollama: FakeOllama) -> None:
    result = run(chat(backend(ollama.url), ask(jpeg()), GenerationParams(max_tokens=2)))
    assert result.text == "I see"
    assert result.finish_reason == "length"


def test_streaming_yields_tokens_then_usage(ollama: FakeOllama) -> None:
    ollama.token_delay = 0.01
    chunks = run(stream(backend(ollama.url), ask(jpeg(80, 60))))
    assert ollama.requests_to("/api/chat")[-1].json()["stream"] is True
    texts = [c.text for c in chunks if c.text]
    assert len(texts) == len("I see an image of 80x60.".split())
    assert "".join(c.text for c in chunks) == "I see an image of 80x60."
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == len(texts)
    assert last.timings is not None and last.timings.first_token_s is not None
    assert last.timings.first_token_s <= last.timings.total_s
    assert all(c.finish_reason is None for c in chunks[:-1])


def test_error_line_after_200_is_raised(ollama: FakeOllama) -> None:
    ollama.stream_error_after = 2
    with pytest.raises(BackendError) as err:
        run(stream(backend(ollama.url), ask(jpeg())))
    assert err.value.kind == "server"
    assert "unexpected EOF" in str(err.value)


def test_data_uri_prefix_is_rejected_by_the_fake_like_ollama(ollama: FakeOllama) -> None:
    # The fake must be as strict as Ollama, or the test above would prove nothing.
    prefixed = "data:image/jpeg;base64," + base64.b64encode(jpeg()).decode()
    with httpx.Client(base_url=ollama.url) as client:
        r = client.post("/api/chat", json={"model": "llava", "stream": False, "messages": [
            {"role": "user", "content": "x", "images": [prefixed]}]})
    assert r.status_code == 400
    assert r.json() == {"error": "illegal base64 data at input byte 4"}


def test_missing_model_tells_the_user_to_pull_it(ollama: FakeOllama) -> None:
    b = backend(ollama.url, model="moondream", check_vision=False)
    with pytest.raises(BackendError) as err:
        run(chat(b, ask(jpeg()), GenerationParams(model="moondream")))
    assert err.value.kind == "model_not_found"
    assert "ollama pull moondream" in str(err.value)
    assert ollama.url in str(err.value)


def test_vision_check_refuses_a_text_only_model_before_sending_frames(ollama: FakeOllama) -> None:
    ollama.models["qwen3:latest"] = ["completion", "tools"]
    with pytest.raises(BackendError) as err:
        run(chat(backend(ollama.url, model="qwen3"), ask(jpeg())))
    assert err.value.kind == "unsupported"
    assert "cannot see images" in str(err.value)
    assert ollama.requests_to("/api/show")[-1].json() == {"model": "qwen3"}
    assert ollama.requests_to("/api/chat") == []


def test_vision_check_happens_once_per_model(ollama: FakeOllama) -> None:
    async def twice() -> None:
        b = backend(ollama.url)
        try:
            for _ in range(2):
                await b.chat(ask(jpeg()), GenerationParams())
        finally:
            await b.aclose()

    run(twice())
    assert len(ollama.requests_to("/api/show")) == 1
    assert len(ollama.requests_to("/api/chat")) == 2


def test_connection_refused_names_the_url() -> None:
    url = unused_url()
    with pytest.raises(BackendError) as err:
        run(chat(backend(url, retries=1), ask()))
    assert err.value.kind == "unreachable"
    assert f"Ollama is not reachable at {url}" in str(err.value)
    assert "connection refused" in str(err.value)


def test_video_is_refused_with_a_clear_error(ollama: FakeOllama) -> None:
    msg = [ChatMessage("user", (TextPart("what happens?"), VideoPart(frames=(np.zeros((8, 8, 3), np.uint8),))))]
    with pytest.raises(BackendError) as err:
        run(chat(backend(ollama.url), msg))
    assert err.value.kind == "unsupported"
    assert ollama.requests == []


def test_failover_skips_a_dead_server_and_spreads_load() -> None:
    dead = unused_url()
    with FakeOllama() as a, FakeOllama() as b:
        async def many(be: OllamaBackend, n: int) -> list[str]:
            try:
                return [(await be.chat(ask(), GenerationParams())).text for _ in range(n)]
            finally:
                await be.aclose()

        texts = run(many(backend(dead, a.url), 3))
        assert len(texts) == 3 and len(a.requests_to("/api/chat")) == 3
        run(many(backend(a.url, b.url), 6))
        # Both live servers get work.
        assert len(b.requests_to("/api/chat")) >= 2
        assert len(a.requests_to("/api/chat")) >= 3 + 2


def test_rate_limit_waits_for_retry_after(ollama: FakeOllama) -> None:
    ollama.fail_next(429, {"error": "too many requests"}, path="/api/chat", headers={"Retry-After": "1"})
    result = run(chat(backend(ollama.url), ask()))
    assert result.text.startswith("Hello")
    first, second = ollama.requests_to("/api/chat")
    assert second.received_at - first.received_at >= 0.9


def test_busy_server_past_retries_is_rate_limited(ollama: FakeOllama) -> None:
    ollama.fail_next(503, {"error": "server busy, please try again.  maximum pending requests exceeded"},
                     path="/api/chat", times=5, headers={"Retry-After": "0.1"})
    with pytest.raises(BackendError) as err:
        run(chat(backend(ollama.url, retries=2), ask()))
    assert err.value.kind == "rate_limited"
    assert err.value.retry_after == pytest.approx(0.1)
    assert len(ollama.requests_to("/api/chat")) == 3


def test_dropped_connection_is_retried(ollama: FakeOllama) -> None:
    ollama.drop_next(path="/api/chat")
    result = run(chat(backend(ollama.url), ask()))
    assert result.text.startswith("Hello")
    assert len(ollama.requests_to("/api/chat")) == 2


def test_drop_mid_stream_is_an_error(ollama: FakeOllama) -> None:
    ollama.drop_after = 2
    with pytest.raises(BackendError) as err:
        run(stream(backend(ollama.url), ask()))
    assert "dropped the connection" in str(err.value)


def test_slow_answer_times_out(ollama: FakeOllama) -> None:
    ollama.delay_next(1.5, path="/api/chat")
    with pytest.raises(BackendError) as err:
        run(chat(backend(ollama.url, timeout=0.3, retries=0), ask()))
    assert err.value.kind == "timeout"


def test_requests_in_flight_are_bounded(ollama: FakeOllama) -> None:
    ollama.delay = 0.2

    async def burst() -> None:
        b = backend(ollama.url, max_in_flight=2)
        try:
            await asyncio.gather(*(b.chat(ask(), GenerationParams()) for _ in range(6)))
        finally:
            await b.aclose()

    run(burst())
    assert len(ollama.requests_to("/api/chat")) == 6
    assert ollama.max_in_flight == 2


def test_api_key_is_sent_but_never_logged(ollama: FakeOllama, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    ollama.fail_next(401, {"error": "unauthorized"}, path="/api/chat")
    with pytest.raises(BackendError) as err:
        run(chat(backend(ollama.url, api_key="s3cret-token"), ask()))
    assert err.value.kind == "auth"
    assert ollama.requests[-1].headers["authorization"] == "Bearer s3cret-token"
    assert "s3cret-token" not in str(err.value)
    assert "s3cret-token" not in caplog.text
    assert "s3cret-token" not in repr(OllamaOptions.model_validate({"api_key": "s3cret-token"}))


def test_models_and_health(ollama: FakeOllama) -> None:
    ollama.models["moondream:latest"] = ["completion", "vision"]

    async def check() -> tuple[Any, Any, Any]:
        good, bad = backend(ollama.url), backend(ollama.url, model="bakllava")
        try:
            return await good.models(), await good.health(), await bad.health()
        finally:
            await good.aclose()
            await bad.aclose()

    models, ok, missing = run(check())
    assert {m.id for m in models} == {"llava:latest", "moondream:latest"}
    assert ok.ready
    assert not missing.ready and "ollama pull bakllava" in missing.detail


def test_bad_options_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="duration"):
        OllamaOptions.model_validate({"keep_alive": "five minutes"})
    with pytest.raises(ValueError, match="not an http"):
        OllamaOptions.model_validate({"url": "localhost:11434"})


def test_backend_is_registered_and_built_from_namespace_options(ollama: FakeOllama) -> None:
    registry = get_plugin_manager().registry
    ctx = Context(registry, namespaces={"ollama": {"url": f"{unused_url()},{ollama.url}", "model": "llava",
                                                   "timeout": "5"}})
    b = ctx.backend("ollama")
    assert isinstance(b, OllamaBackend)
    assert b.options.url[1] == ollama.url and b.options.timeout == 5.0
    assert ctx.backend("ollama") is b
    try:
        result = ctx.runner.run(b.chat(ask(jpeg()), GenerationParams()), timeout=10)
        assert result.text == "I see an image of 64x48."
    finally:
        ctx.close()
    bad = Context(registry, namespaces={"ollama": {"timeout": "soon"}})
    with pytest.raises(ConfigError, match="ollama-timeout"):
        bad.backend("ollama")


def test_fake_answers_custom_replies(ollama: FakeOllama) -> None:
    ollama.fail_next(500, {"error": "boom"}, path="/api/chat")
    assert isinstance(ollama.faults[0].reply, Reply)
    with pytest.raises(BackendError) as err:
        run(chat(backend(ollama.url), ask()))
    assert err.value.kind == "server" and "boom" in str(err.value) and "HTTP 500" in str(err.value)


def test_sampling_knobs_go_into_options_under_ollamas_names(ollama: FakeOllama) -> None:
    params = GenerationParams(top_k=20, min_p=0.05, repetition_penalty=1.15, presence_penalty=0.5,
                              frequency_penalty=0.25, extra={"num_ctx": 8192, "options": {"mirostat": 2}})
    run(chat(backend(ollama.url, num_ctx=2048), ask(), params))
    options = ollama.requests_to("/api/chat")[-1].json()["options"]
    assert options == {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.15, "presence_penalty": 0.5,
                       "frequency_penalty": 0.25, "num_ctx": 8192, "mirostat": 2}  # the request's num_ctx wins


def test_thinking_is_returned_as_reasoning(ollama: FakeOllama) -> None:
    ollama.models["qwen3-vl:latest"] = ["completion", "vision", "thinking"]
    params = GenerationParams(model="qwen3-vl", extra={"think": True})
    result = run(chat(backend(ollama.url), ask(), params))
    assert result.reasoning == "Let me look at the picture carefully."
    assert result.text == "Hello! How can I help you today?"
    chunks = run(stream(backend(ollama.url), ask(), params))
    assert "".join(c.reasoning for c in chunks) == result.reasoning
    assert "".join(c.text for c in chunks) == result.text
    with pytest.raises(BackendError, match="does not support thinking"):
        run(chat(backend(ollama.url), ask(), GenerationParams(extra={"think": True})))  # llava cannot think
