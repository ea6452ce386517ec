"""``POST /v1/responses`` through the official ``openai`` SDK (``responses.create``, ``responses.stream``)."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from _http_support import ALL_PARAMS, EchoBackend, Running, echo_service, running_service, solid_png, text_of
from fakes import FakeOpenAI

STREAM_ORDER = ["response.created", "response.in_progress", "response.output_item.added",
                "response.content_part.added", "response.output_text.delta", "response.output_text.done",
                "response.content_part.done", "response.output_item.done", "response.completed"]


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Running, EchoBackend]]:
    with echo_service() as pair:
        yield pair


@pytest.fixture
def client(echo: tuple[Running, EchoBackend]) -> openai.OpenAI:
    return openai.OpenAI(base_url=echo[0].v1, api_key="unused", max_retries=0)


def png_uri(width: int = 16, height: int = 16) -> str:
    return "data:image/png;base64," + base64.b64encode(solid_png(width, height)).decode()


def post(running: Running, body: object) -> httpx.Response:
    return httpx.post(running.v1 + "/responses", json=body, timeout=30)


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event name, data)`` of every event of a server-sent event body."""
    out = []
    for block in text.strip().split("\n\n"):
        lines = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((lines["event"], json.loads(lines["data"])))
    return out


def test_create_answers_with_the_response_object(echo: tuple[Running, EchoBackend], client: openai.OpenAI) -> None:
    reply = client.responses.create(model="echo-1", input="Hello there", instructions="Be brief.",
                                    max_output_tokens=50, temperature=0.2, top_p=0.9,
                                    metadata={"job": "42"}, store=False)
    assert reply.id.startswith("resp_") and reply.object == "response" and reply.status == "completed"
    assert reply.output_text == "Hello there" and reply.model == "echo-1"
    [item] = reply.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert [(p.type, p.text) for p in item.content] == [("output_text", "Hello there")]  # type: ignore[union-attr]
    assert reply.usage is not None
    assert (reply.usage.input_tokens, reply.usage.output_tokens, reply.usage.total_tokens) == (7, 2, 9)
    assert reply.metadata == {"job": "42"} and reply.instructions == "Be brief." and reply.store is False
    call = echo[1].calls[-1]
    assert text_of(call.messages) == [("system", "Be brief."), ("user", "Hello there")]
    assert (call.params.max_tokens, call.params.temperature, call.params.top_p) == (50, 0.2, 0.9)


def test_messages_with_input_text_and_input_image_reach_the_backend(echo: tuple[Running, EchoBackend],
                                                                    client: openai.OpenAI) -> None:
    reply = client.responses.create(model="echo-1", input=[
        {"role": "developer", "content": "Answer in one line."},
        {"role": "user", "content": [{"type": "input_text", "text": "What is it?"},
                                     {"type": "input_image", "image_url": png_uri(24, 12), "detail": "low"}]},
        {"type": "message", "role": "assistant", "id": "msg_1", "status": "completed",
         "content": [{"type": "output_text", "text": "A square.", "annotations": []}]},
        {"type": "reasoning", "id": "rs_1", "summary": []},
        {"role": "user", "content": [{"type": "input_text", "text": "Which colour?"},
                                     {"type": "input_image", "image_url": png_uri(8, 8)}]},
    ])
    assert reply.output_text == "Which colour? | 2 images: 24x12, 8x8"
    call = echo[1].calls[-1]
    assert [m.role for m in call.messages] == ["system", "user", "assistant", "user"]
    assert [p.detail for p in call.images()] == ["low", None]


def test_a_live_source_as_input_image(echo: tuple[Running, EchoBackend], client: openai.OpenAI) -> None:
    opened = httpx.post(echo[0].v1 + "/streams", json={"url": "testpattern", "id": "resp-tp"}, timeout=30)
    assert opened.status_code in (200, 201), opened.text
    stream_id = opened.json()["id"]
    reply = client.responses.create(model="echo-1", input=[{"role": "user", "content": [
        {"type": "input_text", "text": "What do you see?"},
        {"type": "input_image", "image_url": f"stream://{stream_id}"}]}])
    assert reply.output_text.startswith("What do you see? | 1 images: ")
    assert len(echo[1].calls[-1].images()) == 1


def test_text_format_json_schema_and_json_object(echo: tuple[Running, EchoBackend], client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"caption": {"type": "string"}}, "required": ["caption"]}
    client.responses.create(model="echo-1", input="caption it",
                            text={"format": {"type": "json_schema", "name": "caption", "schema": schema,
                                             "strict": True}})
    assert echo[1].calls[-1].params.json_schema == schema
    client.responses.create(model="echo-1", input="caption it", text={"format": {"type": "json_object"}})
    assert echo[1].calls[-1].params.json_object


def test_stream_sends_the_documented_event_sequence(echo: tuple[Running, EchoBackend],
                                                    client: openai.OpenAI) -> None:
    with client.responses.stream(model="echo-1", input="one two three") as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "one two three" and final.status == "completed"
    deduped = [k for i, k in enumerate(kinds) if i == 0 or k != kinds[i - 1]]
    assert deduped == STREAM_ORDER
    assert kinds.count("response.output_text.delta") == 3
    raw = httpx.post(echo[0].v1 + "/responses", json={"input": "a b", "stream": True}, timeout=30)
    assert raw.headers["content-type"].startswith("text/event-stream")
    events = sse_events(raw.text)
    assert [data["sequence_number"] for _, data in events] == list(range(len(events)))
    assert all(name == data["type"] for name, data in events)
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == "a b"
    assert events[-1][1]["response"]["usage"]["output_tokens"] == 2


def test_previous_response_id_and_tools_are_clear_400s(echo: tuple[Running, EchoBackend],
                                                       client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="stores no responses") as caught:
        client.responses.create(model="echo-1", input="again", previous_response_id="resp_123")
    assert caught.value.body["param"] == "previous_response_id"  # type: ignore[index]
    r = post(echo[0], {"input": "x", "tools": [{"type": "function", "name": "f", "parameters": {}}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
    r = post(echo[0], {"input": [{"type": "function_call_output", "call_id": "c", "output": "1"}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input.0"
    r = post(echo[0], {"input": "x", "frobnicate": 1})
    assert r.status_code == 400 and r.json()["error"]["param"] == "frobnicate"
    r = post(echo[0], {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]})
    assert r.status_code == 400 and r.json()["error"]["param"] == "input.0.content.0.file_id"
    r = httpx.get(echo[0].v1 + "/responses/resp_1")
    assert r.status_code == 404 and "stores no responses" in r.json()["error"]["message"]


def test_bad_images_name_the_responses_field(echo: tuple[Running, EchoBackend]) -> None:
    r = post(echo[0], {"input": [{"role": "user", "content": "hi"},
                                 {"role": "user", "content": [{"type": "input_image", "image_url": "ftp://x/y"}]}]})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "input.1.content.0.image_url"


def test_parameters_the_backend_cannot_honour_are_400s_naming_them() -> None:
    with echo_service(supports=frozenset({"images", "stream"})) as (running, _):
        for body, param in (({"input": "x", "max_output_tokens": 5}, "max_output_tokens"),
                            ({"input": "x", "top_p": 0.5}, "top_p"),
                            ({"input": "x", "text": {"format": {"type": "json_object"}}}, "text.format"),
                            ({"input": "x", "reasoning": {"effort": "low"}}, "reasoning.effort")):
            r = post(running, body)
            assert r.status_code == 400, body
            error = r.json()["error"]
            assert error["param"] == param and error["code"] == "unsupported_parameter"
            assert param in error["message"] and "'echo'" in error["message"]
    with echo_service(supports=ALL_PARAMS | {"reasoning_effort"}) as (running, backend):
        assert post(running, {"input": "x", "reasoning": {"effort": "low"}}).status_code == 200
        assert backend.calls[-1].params.extra["reasoning_effort"] == "low"


def test_backend_errors_have_the_openai_error_shape(echo: tuple[Running, EchoBackend],
                                                    client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.responses.create(model="no-such-model", input="hi")
    assert caught.value.body["code"] == "model_not_found"  # type: ignore[index]


# -- real backends: reasoning, token limits ---------------------------------------------------------


@pytest.fixture(scope="module")
def nim() -> Iterator[tuple[FakeOpenAI, Running]]:
    with FakeOpenAI(reply="A red square.") as server, \
            running_service({"backend": "nim"}, {"nim": {"url": server.base_url, "think": True}}) as running:
        yield server, running


def test_reasoning_becomes_a_reasoning_item(nim: tuple[FakeOpenAI, Running]) -> None:
    client = openai.OpenAI(base_url=nim[1].v1, api_key="x", max_retries=0)
    reply = client.responses.create(input="What is it?")
    assert [item.type for item in reply.output] == ["reasoning", "message"]
    reasoning = reply.output[0]
    assert reasoning.content is not None  # type: ignore[union-attr]
    assert reasoning.content[0].text == "Let me look at the picture carefully."  # type: ignore[union-attr]
    assert reply.output_text == "A red square."
    with client.responses.stream(model=nim[0].models[0], input="What is it?",
                                 reasoning={"summary": "auto"}) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_response()
    assert final.output_text == "A red square."
    assert kinds.index("response.reasoning_text.delta") < kinds.index("response.output_text.delta")
    assert [item.type for item in final.output] == ["reasoning", "message"]
    assert final.output[0].summary[0].text == "Let me look at the picture carefully."  # type: ignore[union-attr]


def test_the_token_limit_makes_the_response_incomplete(nim: tuple[FakeOpenAI, Running]) -> None:
    r = post(nim[1], {"input": "What is it?", "max_output_tokens": 2})
    assert r.status_code == 200
    body = r.json()
    assert body["status"] == "incomplete" and body["incomplete_details"] == {"reason": "max_output_tokens"}
    assert nim[0].requests_to("/v1/chat/completions")[-1].json()["max_tokens"] == 2
    streamed = httpx.post(nim[1].v1 + "/responses", json={"input": "What is it?", "max_output_tokens": 2,
                                                          "stream": True}, timeout=30)
    names = [name for name, _ in sse_events(streamed.text)]
    assert names[-1] == "response.incomplete" and "response.completed" not in names


def test_a_failure_mid_stream_is_an_error_event_then_response_failed() -> None:
    with FakeOpenAI(reply="one two three four", token_delay=0.01) as server, \
            running_service({"backend": "nim"}, {"nim": {"url": server.base_url}}) as running:
        server.stream_error_after = 2
        r = httpx.post(running.v1 + "/responses", json={"input": "hi", "stream": True}, timeout=30)
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names[-2:] == ["error", "response.failed"]
    assert "CUDA error" in events[-2][1]["message"]
    assert events[-1][1]["response"]["status"] == "failed"
    assert "".join(d["delta"] for n, d in events if n == "response.output_text.delta") == "one two"
