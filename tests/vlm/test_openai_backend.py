"""The ``nim`` / ``openai`` backend against a protocol-faithful fake OpenAI-compatible server."""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np
import pytest
from fakes import FakeOpenAI, Fault, Reply, unused_url

from framelens import BackendError, ChatMessage, Context, GenerationParams, ImagePart, TextPart, VideoPart
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.vlm.media import encode_mp4
from framelens.plugins.vlm.openai import NimOptions, OpenAICompatBackend, OpenAIOptions

MODEL = "nvidia/nemotron-nano-12b-v2-vl"


@pytest.fixture
def nim() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


@pytest.fixture(autouse=True)
def no_key_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("NIM_API_KEY", "NGC_API_KEY", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)


def backend(*urls: str, **options: Any) -> OpenAICompatBackend:
    return OpenAICompatBackend(NimOptions.model_validate({"url": list(urls), **options}))


def run(coro: Any) -> Any:
    return asyncio.run(coro)


async def chat(b: OpenAICompatBackend, messages: list[ChatMessage], params: GenerationParams | None = None) -> Any:
    try:
        return await b.chat(messages, params or GenerationParams())
    finally:
        await b.aclose()


async def stream(b: OpenAICompatBackend, messages: list[ChatMessage],
                 params: GenerationParams | None = None) -> list[Any]:
    try:
        return [c async for c in b.stream(messages, params or GenerationParams())]
    finally:
        await b.aclose()


def png(w: int = 50, h: int = 30) -> bytes:
    return cv2.imencode(".png", np.full((h, w, 3), 128, np.uint8))[1].tobytes()


def ask(*parts: Any, system: str | None = None) -> list[ChatMessage]:
    out = [ChatMessage("system", system)] if system else []
    return [*out, ChatMessage("user", (TextPart("What is in this image?"), *parts))]


def test_chat_sends_data_uris_and_parameters(nim: FakeOpenAI) -> None:
    data = png()
    schema = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}
    params = GenerationParams(max_tokens=64, temperature=0.1, top_p=0.5, seed=3, stop=("END",), json_schema=schema,
                              extra={"mm_processor_kwargs": {"max_num_tiles": 3}})
    result = run(chat(backend(nim.base_url), ask(ImagePart(data=data, detail="low")), params))
    body = nim.requests_to("/v1/chat/completions")[-1].json()
    assert body["model"] == MODEL  # the first model the server lists
    part = body["messages"][0]["content"][1]
    assert part == {"type": "image_url",
                    "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode(), "detail": "low"}}
    assert body["max_tokens"] == 64 and body["temperature"] == 0.1 and body["top_p"] == 0.5
    assert body["seed"] == 3 and body["stop"] == ["END"]
    assert body["response_format"] == {"type": "json_schema", "json_schema": {"name": "response", "schema": schema}}
    assert body["mm_processor_kwargs"] == {"max_num_tiles": 3}
    assert "stream" not in body and "stream_options" not in body
    assert result.text == '{"caption": "I see an image of 50x30."}'
    assert result.usage.prompt_tokens == len("What is in this image?".split()) + 5 + 256
    assert result.usage.completion_tokens == len(result.text.split(" "))  # the fake's tokens are words
    assert result.model == MODEL and result.finish_reason == "stop"
    assert [r.path for r in nim.requests] == ["/v1/models", "/v1/chat/completions"]


def test_plain_text_content_stays_a_string_and_model_option_skips_listing(nim: FakeOpenAI) -> None:
    run(chat(backend(nim.base_url, model=MODEL), [ChatMessage("user", "Hello!")], GenerationParams(json_object=True)))
    body = nim.requests[-1].json()
    assert body["messages"] == [{"role": "user", "content": "Hello!"}]
    assert body["response_format"] == {"type": "json_object"}
    assert nim.requests_to("/v1/models") == []


def test_streaming_with_usage(nim: FakeOpenAI) -> None:
    nim.token_delay = 0.01
    chunks = run(stream(backend(nim.base_url), ask(ImagePart(data=png(20, 10)))))
    body = nim.requests_to("/v1/chat/completions")[-1].json()
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert "".join(c.text for c in chunks) == "I see an image of 20x10."
    assert len([c for c in chunks if c.text]) == 6
    last = chunks[-1]
    assert last.finish_reason == "stop"
    assert last.usage is not None and last.usage.completion_tokens == 6 and last.usage.prompt_tokens > 256
    assert last.timings is not None and last.timings.first_token_s is not None


def test_think_switch_and_reasoning_are_kept_out_of_the_answer(nim: FakeOpenAI) -> None:
    result = run(chat(backend(nim.base_url, think=True), ask(ImagePart(data=png()), system="Be brief.")))
    body = nim.requests[-1].json()
    assert body["messages"][0] == {"role": "system", "content": "/think\nBe brief."}
    assert result.text == "I see an image of 50x30."  # reasoning_content is not the answer
    run(chat(backend(nim.base_url, think=False), ask()))
    assert nim.requests[-1].json()["messages"][0] == {"role": "system", "content": "/no_think"}


def test_inline_think_blocks_are_stripped_even_when_split_across_chunks(nim: FakeOpenAI) -> None:
    nim.reply = "<think>The user wants a caption. Keep it short.</think> A red square."
    chunks = run(stream(backend(nim.base_url), ask()))
    assert "".join(c.text for c in chunks) == "A red square."
    result = run(chat(backend(nim.base_url), ask()))
    assert result.text == "A red square."


def test_video_clip_is_an_mp4_data_uri_with_num_frames(nim: FakeOpenAI) -> None:
    frames = tuple(np.full((48, 64, 3), 40 * i, np.uint8) for i in range(4))
    result = run(chat(backend(nim.base_url), ask(VideoPart(frames=frames, num_frames=4))))
    body = nim.requests[-1].json()
    part = body["messages"][0]["content"][1]
    assert part["type"] == "video_url" and part["video_url"]["url"].startswith("data:video/mp4;base64,")
    assert body["media_io_kwargs"] == {"video": {"num_frames": 4}}
    assert len(nim.videos[-1].frames) == 4
    assert result.text == "I see a video of 4 frames."
    clip = encode_mp4(frames, 2.0)
    run(chat(backend(nim.base_url), ask(VideoPart(data=clip, fps=1.0))))
    body = nim.requests[-1].json()
    assert body["messages"][0]["content"][1]["video_url"]["url"] == "data:video/mp4;base64," + \
        base64.b64encode(clip).decode()
    assert body["media_io_kwargs"] == {"video": {"fps": 1.0}}


@pytest.mark.parametrize("style", ["openai", "vllm"])
def test_model_not_found_in_both_error_shapes(style: str) -> None:
    with FakeOpenAI(error_style=style) as server:
        with pytest.raises(BackendError) as err:
            run(chat(backend(server.base_url, model="llava-next"), ask()))
    assert err.value.kind == "model_not_found"
    assert "The model `llava-next` does not exist." in str(err.value)
    assert "-c nim-model=" in str(err.value)


@pytest.mark.parametrize("style", ["openai", "vllm"])
def test_bad_request_keeps_the_server_message_and_param(style: str) -> None:
    with FakeOpenAI(error_style=style) as server:
        frames = tuple(np.zeros((16, 16, 3), np.uint8) for _ in range(2))
        with pytest.raises(BackendError) as err:
            run(chat(backend(server.base_url), ask(VideoPart(frames=frames, num_frames=5))))
    assert err.value.kind == "bad_request" and err.value.status == 400
    assert "num_frames=5 is more than the video has (2)" in str(err.value)
    assert err.value.param == "media_io_kwargs"


def test_error_in_the_middle_of_a_stream(nim: FakeOpenAI) -> None:
    nim.stream_error_after = 3
    with pytest.raises(BackendError) as err:
        run(stream(backend(nim.base_url), ask()))
    assert "failed mid-answer" in str(err.value) and "illegal memory access" in str(err.value)


@pytest.mark.parametrize("event", [b"data: [1, 2]", b"data: {not json", b'data: "text"'])
def test_an_event_that_is_not_a_json_object_is_a_clear_error(nim: FakeOpenAI, event: bytes) -> None:
    nim.add_fault(Fault("/v1/chat/completions", Reply(200, {"Content-Type": "text/event-stream"},
                                                      event + b"\n\ndata: [DONE]\n\n")))
    with pytest.raises(BackendError) as err:
        run(stream(backend(nim.base_url), ask()))
    assert err.value.kind == "server"
    assert "sent an event that is not a JSON object" in str(err.value) and event[6:].decode() in str(err.value)


def test_stream_cut_before_the_end_is_an_error(nim: FakeOpenAI) -> None:
    nim.drop_after = 2
    with pytest.raises(BackendError) as err:
        run(stream(backend(nim.base_url), ask()))
    assert err.value.kind == "server"


def test_api_key_from_the_environment(nim: FakeOpenAI, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    nim.api_key = "nvapi-right"
    monkeypatch.setenv("NGC_API_KEY", "nvapi-right")
    run(chat(backend(nim.base_url), ask()))
    assert nim.requests[-1].headers["authorization"] == "Bearer nvapi-right"
    monkeypatch.setenv("NIM_API_KEY", "nvapi-wrong")  # NIM_API_KEY comes first
    with pytest.raises(BackendError) as err:
        run(chat(backend(nim.base_url, model=MODEL), ask()))
    assert err.value.kind == "auth" and "$NIM_API_KEY" in str(err.value)
    assert "nvapi-" not in str(err.value) and "nvapi-" not in caplog.text
    monkeypatch.delenv("NIM_API_KEY")
    monkeypatch.delenv("NGC_API_KEY")
    with pytest.raises(BackendError) as err:
        run(chat(backend(nim.base_url, model=MODEL), ask()))
    assert err.value.kind == "auth" and "without an API key" in str(err.value)
    run(chat(backend(nim.base_url, model=MODEL, api_key="nvapi-right"), ask()))  # the option works too


def test_rate_limit_with_retry_after_then_success(nim: FakeOpenAI) -> None:
    nim.fail_next(429, nim.error_body("Too many requests", 429), path="/v1/chat/completions",
                  headers={"Retry-After": "0.5"})
    result = run(chat(backend(nim.base_url, model=MODEL), ask()))
    assert result.text.startswith("Hello")
    first, second = nim.requests_to("/v1/chat/completions")
    assert second.received_at - first.received_at >= 0.45


def test_retry_after_longer_than_the_deadline_is_reported_not_waited(nim: FakeOpenAI) -> None:
    nim.fail_next(429, nim.error_body("Too many requests", 429), path="/v1/chat/completions",
                  headers={"Retry-After": "120"})
    with pytest.raises(BackendError) as err:
        run(chat(backend(nim.base_url, model=MODEL, timeout=2), ask()))
    assert err.value.kind == "rate_limited" and err.value.retry_after == pytest.approx(120)
    assert len(nim.requests_to("/v1/chat/completions")) == 1


def test_failover_list_from_the_command_line_skips_a_dead_server(nim: FakeOpenAI) -> None:
    dead = unused_url("/v1")
    ctx = Context(get_plugin_manager().registry, namespaces={"nim": {"url": f"{dead},{nim.base_url}"}})
    try:
        b = ctx.backend("nim")
        assert isinstance(b, OpenAICompatBackend) and b.pool.urls == [dead, nim.base_url]
        for _ in range(3):
            assert ctx.runner.run(b.chat(ask(), GenerationParams()), timeout=10).text.startswith("Hello")
        ready = ctx.runner.run(b.health(), timeout=10)
    finally:
        ctx.close()
    assert len(nim.requests_to("/v1/chat/completions")) == 3
    assert ready.ready and ready.detail == "Service is ready."


def test_health_of_nim_and_of_plain_openai_servers(nim: FakeOpenAI) -> None:
    async def health(b: OpenAICompatBackend) -> Any:
        try:
            return await b.health()
        finally:
            await b.aclose()

    nim.ready = False
    h = run(health(backend(nim.base_url)))
    assert not h.ready and "not ready" in h.detail
    nim.ready = True
    nim.fail_next(404, {"detail": "Not Found"}, path="/v1/health")  # a server without NIM's health route
    h = run(health(backend(nim.base_url)))
    assert h.ready
    assert [r.path for r in nim.requests][-2:] == ["/v1/health/ready", "/v1/models"]


def test_url_without_v1_gets_a_hint() -> None:
    with FakeOpenAI() as server:
        with pytest.raises(BackendError) as err:
            run(chat(backend(server.url, model=MODEL), ask()))
    assert "does the URL end in /v1?" in str(err.value)


def test_openai_registration_reads_openai_base_url(monkeypatch: pytest.MonkeyPatch, nim: FakeOpenAI) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", nim.base_url)
    assert OpenAIOptions().url == [nim.base_url]
    assert NimOptions().url == ["http://localhost:8000/v1"]
    ctx = Context(get_plugin_manager().registry)
    try:
        b = ctx.backend("openai")
        assert isinstance(b, OpenAICompatBackend) and b.name == "openai"
        models = ctx.runner.run(b.models(), timeout=10)
    finally:
        ctx.close()
    assert [m.id for m in models] == [MODEL]


def test_the_fake_speaks_what_the_official_sdk_expects(nim: FakeOpenAI) -> None:
    """The fake is only worth something if real clients accept its answers."""
    import openai

    nim.api_key = "k"
    client = openai.OpenAI(base_url=nim.base_url, api_key="k", max_retries=0)
    image = "data:image/png;base64," + base64.b64encode(png(8, 6)).decode()
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "What?"},
                                                  {"type": "image_url", "image_url": {"url": image}}]}]
    done = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=50)
    assert done.choices[0].message.content == "I see an image of 8x6." and done.usage is not None
    chunks = list(client.chat.completions.create(model=MODEL, messages=messages, stream=True,
                                                 stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "I see an image of 8x6."
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=messages)
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=nim.base_url, api_key="bad", max_retries=0).models.list()
    nim.stream_error_after = 1
    with pytest.raises(openai.APIError, match="illegal memory access"):
        list(client.chat.completions.create(model=MODEL, messages=messages, stream=True))


def test_reasoning_content_is_returned_apart_from_the_answer(nim: FakeOpenAI) -> None:
    result = run(chat(backend(nim.base_url, think=True), ask(ImagePart(data=png(20, 10)))))
    assert result.reasoning == "Let me look at the picture carefully."
    assert result.text == "I see an image of 20x10."
    chunks = run(stream(backend(nim.base_url, think=True), ask()))
    assert "".join(c.reasoning for c in chunks) == "Let me look at the picture carefully."
    first_text = next(i for i, c in enumerate(chunks) if c.text)
    assert all(not c.reasoning for c in chunks[first_text:])  # reasoning comes first, never mixed in
    assert all("Let me look" not in c.text for c in chunks)


def test_per_request_think_overrides_the_option(nim: FakeOpenAI) -> None:
    run(chat(backend(nim.base_url, think=False), ask(), GenerationParams(extra={"think": True})))
    assert nim.requests[-1].json()["messages"][0] == {"role": "system", "content": "/think"}
    run(chat(backend(nim.base_url), ask(), GenerationParams(extra={"think": "high"})))
    body = nim.requests[-1].json()
    assert body["reasoning_effort"] == "high" and body["messages"][0]["role"] == "user"


def test_sampling_knobs_are_sent_as_request_fields(nim: FakeOpenAI) -> None:
    params = GenerationParams(top_k=40, min_p=0.05, repetition_penalty=1.1, presence_penalty=0.5,
                              frequency_penalty=-0.5)
    run(chat(backend(nim.base_url), ask(), params))
    body = nim.requests[-1].json()
    assert (body["top_k"], body["min_p"], body["repetition_penalty"]) == (40, 0.05, 1.1)
    assert (body["presence_penalty"], body["frequency_penalty"]) == (0.5, -0.5)
    # The fake checks ranges as vLLM does; its message comes back with the parameter.
    with pytest.raises(BackendError, match="min_p") as caught:
        run(chat(backend(nim.base_url), ask(), GenerationParams(min_p=1.5)))
    assert caught.value.param == "min_p"


def test_default_model_is_discovered_and_refreshed_when_the_server_comes_back() -> None:
    server = FakeOpenAI(models=["first"])
    server.start()
    b = backend(server.base_url, retries=0)

    async def scenario() -> list[Any]:
        seen: list[Any] = [await b.discover_default_model()]
        server.stop()
        seen.append((await b.health()).ready)
        server.models = ["second"]
        server.start()
        seen += [(await b.health()).ready, b.default_model]
        await b.aclose()
        return seen

    try:
        assert run(scenario()) == ["first", False, True, "second"]
    finally:
        server.stop()


def test_discovery_never_raises_when_the_server_is_down() -> None:
    b = backend(unused_url("/v1"), retries=0)
    assert run(b.discover_default_model()) is None
    run(b.aclose())
