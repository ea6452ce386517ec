"""Ollama's native API on framelens, driven by the ``ollama`` Python client and raw requests.

Errors on every ``/api/*`` route (unknown ones included) are Ollama's ``{"error": "..."}``;
sampling options, ``keep_alive``, ``think`` and ``num_ctx`` reach the backends that have
them and are refused, naming parameter and backend, by those that do not.
"""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import ollama
import pytest
from _http_support import EchoBackend, Running, echo_service, running_service, solid_png
from fakes import FakeOllama, FakeOpenAI


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Running, EchoBackend]]:
    with echo_service() as pair:
        yield pair


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={"llava:latest": ["completion", "vision"],
                            "qwen3-vl:latest": ["completion", "vision", "thinking"]}) as server:
        yield server


@pytest.fixture(scope="module")
def via_ollama(fake_ollama: FakeOllama) -> Iterator[Running]:
    with running_service({"backend": "ollama"}, {"ollama": {"url": fake_ollama.url, "model": "llava"}}) as running:
        yield running


@pytest.fixture(scope="module")
def fake_nim() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(reply="A cat.") as server:
        yield server


@pytest.fixture(scope="module")
def via_nim(fake_nim: FakeOpenAI) -> Iterator[Running]:
    with running_service({"backend": "nim"}, {"nim": {"url": fake_nim.base_url}}) as running:
        yield running


def test_show_describes_the_model_with_its_capabilities(echo: tuple[Running, EchoBackend]) -> None:
    client = ollama.Client(host=echo[0].url)
    info = client.show("echo-1")
    assert info.capabilities is not None and "vision" in info.capabilities and "completion" in info.capabilities
    assert info.details is not None and info.modified_at is not None
    with pytest.raises(ollama.ResponseError) as caught:
        client.show("nope")
    assert caught.value.status_code == 404 and "nope" in caught.value.error
    r = httpx.post(echo[0].url + "/api/show", json={"name": "echo-2"})  # older clients send name
    assert r.status_code == 200 and "vision" in r.json()["capabilities"]


def test_show_reports_thinking_where_the_backend_can_reason(via_nim: Running) -> None:
    info = ollama.Client(host=via_nim.url).show("nvidia/nemotron-nano-12b-v2-vl")
    assert info.capabilities is not None and {"vision", "thinking"} <= set(info.capabilities)


def test_ps_lists_the_default_model_while_the_backend_is_ready(echo: tuple[Running, EchoBackend]) -> None:
    [model] = ollama.Client(host=echo[0].url).ps().models
    assert model.model == "echo-1" and model.expires_at is not None


def test_embeddings_are_a_clear_error(echo: tuple[Running, EchoBackend]) -> None:
    client = ollama.Client(host=echo[0].url)
    for call in (lambda: client.embed(model="echo-1", input="hi"),
                 lambda: client.embeddings(model="echo-1", prompt="hi")):
        with pytest.raises(ollama.ResponseError) as caught:
            call()
        assert caught.value.status_code == 400
        assert "embeddings are not supported" in caught.value.error and "'echo'" in caught.value.error


def test_every_api_route_answers_errors_in_ollama_shape(echo: tuple[Running, EchoBackend]) -> None:
    url = echo[0].url
    for method, path, status in (("POST", "/api/nothing", 404), ("GET", "/api/chat", 405),
                                 ("POST", "/api/pull", 501), ("DELETE", "/api/delete", 501)):
        r = httpx.request(method, url + path, json={"model": "echo-1"})
        assert r.status_code == status, (method, path, r.text)
        body = r.json()
        assert set(body) == {"error"} and isinstance(body["error"], str) and body["error"]
    bad = httpx.post(url + "/api/chat", content=b"{not json")
    assert bad.status_code == 400 and isinstance(bad.json()["error"], str)
    with pytest.raises(ollama.ResponseError, match="not supported"):
        ollama.Client(host=url).pull("llava")
    # The OpenAI routes keep OpenAI's shape.
    assert isinstance(httpx.post(url + "/v1/nothing").json()["error"], dict)


def test_api_key_errors_on_ollama_routes_are_in_ollama_shape() -> None:
    with echo_service({"api-key": "sekret"}) as (running, _):
        r = httpx.get(running.url + "/api/tags")
        assert r.status_code == 401 and isinstance(r.json()["error"], str)
        ok = ollama.Client(host=running.url, headers={"Authorization": "Bearer sekret"}).list()
        assert [m.model for m in ok.models] == ["echo-1", "echo-2"]


def test_sampling_options_reach_the_ollama_backend(via_ollama: Running, fake_ollama: FakeOllama) -> None:
    client = ollama.Client(host=via_ollama.url)
    client.chat(model="llava", messages=[{"role": "user", "content": "hi"}], keep_alive="10m",
                options={"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "presence_penalty": 0.5,
                         "frequency_penalty": 0.25, "num_ctx": 8192, "temperature": 0.3, "mirostat": 0})
    sent = fake_ollama.requests_to("/api/chat")[-1].json()
    assert sent["options"] == {"top_k": 20, "min_p": 0.05, "repeat_penalty": 1.1, "presence_penalty": 0.5,
                               "frequency_penalty": 0.25, "num_ctx": 8192, "temperature": 0.3, "mirostat": 0}
    assert sent["keep_alive"] == "10m"


def test_think_brings_thinking_back_from_ollama(via_ollama: Running, fake_ollama: FakeOllama) -> None:
    client = ollama.Client(host=via_ollama.url)
    reply = client.chat(model="qwen3-vl", messages=[{"role": "user", "content": "hi"}], think=True)
    assert reply.message.thinking == "Let me look at the picture carefully."
    assert reply.message.content == "Hello! How can I help you today?"
    assert fake_ollama.requests_to("/api/chat")[-1].json()["think"] is True
    pieces = list(client.generate(model="qwen3-vl", prompt="hi", think=True, stream=True))
    assert "".join(p.thinking or "" for p in pieces) == "Let me look at the picture carefully."
    assert "".join(p.response for p in pieces) == "Hello! How can I help you today?"
    with pytest.raises(ollama.ResponseError, match="does not support thinking") as caught:
        client.chat(model="llava", messages=[{"role": "user", "content": "hi"}], think=True)
    assert caught.value.status_code == 400


def test_ollama_api_in_front_of_nim(via_nim: Running, fake_nim: FakeOpenAI) -> None:
    client = ollama.Client(host=via_nim.url)
    model = fake_nim.models[0]
    reply = client.chat(model=model, messages=[{"role": "user", "content": "What is it?",
                                                "images": [solid_png(8, 8)]}],
                        options={"top_k": 40, "min_p": 0.1, "repeat_penalty": 1.2, "num_predict": 20}, think=True)
    assert reply.message.content == "A cat."
    assert reply.message.thinking == "Let me look at the picture carefully."
    sent = fake_nim.requests_to("/v1/chat/completions")[-1].json()
    assert (sent["top_k"], sent["min_p"], sent["repetition_penalty"], sent["max_tokens"]) == (40, 0.1, 1.2, 20)
    assert sent["messages"][0] == {"role": "system", "content": "/think"}
    off = client.chat(model=model, messages=[{"role": "user", "content": "hi"}], think=False)
    assert off.message.thinking is None
    assert fake_nim.requests_to("/v1/chat/completions")[-1].json()["messages"][0]["content"] == "/no_think"


@pytest.mark.parametrize(("extra", "param"), [
    ({"keep_alive": "5m"}, "keep_alive"),
    ({"options": {"num_ctx": 4096}}, "options.num_ctx"),
    ({"options": {"mirostat": 1}}, "options.mirostat"),
])
def test_what_nim_cannot_take_is_refused_naming_parameter_and_backend(via_nim: Running, fake_nim: FakeOpenAI,
                                                                      extra: dict[str, object], param: str) -> None:
    before = len(fake_nim.requests_to("/v1/chat/completions"))
    r = httpx.post(via_nim.url + "/api/chat", json={"model": fake_nim.models[0], "stream": False,
                                                    "messages": [{"role": "user", "content": "hi"}], **extra})
    assert r.status_code == 400
    assert param in r.json()["error"] and "'nim'" in r.json()["error"]
    assert len(fake_nim.requests_to("/v1/chat/completions")) == before


def test_bad_option_types_are_400s_naming_the_option(echo: tuple[Running, EchoBackend]) -> None:
    r = httpx.post(echo[0].url + "/api/generate", json={"model": "echo-1", "prompt": "x",
                                                        "options": {"top_k": "many"}})
    assert r.status_code == 400 and "options.top_k" in r.json()["error"]
