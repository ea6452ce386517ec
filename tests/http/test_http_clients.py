"""The clients the seeds use, unchanged, against framelens: LangChain (``langchain-openai`` with
and without the Responses API, ``langchain-ollama``), n8n's and Open WebUI's recorded request
bodies, ``framelens serve --backend nim`` without a model option, and small protocol faults."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from _http_support import EchoBackend, Running, echo_service, image_server, running_service, solid_png
from fakes import FakeOllama, FakeOpenAI
from helpers import ROOT, free_port

CLIENTS: dict[str, Any] = json.loads((Path(__file__).parent.parent / "data" / "client_requests.json").read_text())


def recorded(name: str, **replace: str) -> dict[str, Any]:
    """A recorded request body with its placeholders (``IMAGE_URL``...) filled in."""
    text = json.dumps(CLIENTS[name])
    for key, value in replace.items():
        text = text.replace(key, value)
    body: dict[str, Any] = json.loads(text)
    return body


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with image_server(solid_png(40, 30)) as url:
        yield url


@pytest.fixture(scope="module")
def fake_nim() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(models=["google/gemma-3-4b-it"], reply="A hoover.") as server:
        yield server


@pytest.fixture(scope="module")
def via_nim(fake_nim: FakeOpenAI) -> Iterator[Running]:
    with running_service({"backend": "nim", "allow-private-urls": True}, {"nim": {"url": fake_nim.base_url}}) as r:
        yield r


# -- n8n ---------------------------------------------------------------------------------------------


def test_n8n_analyze_image_request(via_nim: Running, fake_nim: FakeOpenAI, image_host: str) -> None:
    body = recorded("n8n_analyze_image", IMAGE_URL=image_host + "/hoover.jpg")
    r = httpx.post(via_nim.v1 + "/responses", json=body, timeout=30)
    assert r.status_code == 200, r.text
    reply = r.json()
    [item] = reply["output"]  # n8n reads response.output
    assert item["type"] == "message" and item["content"][0] == {"type": "output_text", "text": "A hoover.",
                                                                "annotations": [], "logprobs": []}
    sent = fake_nim.requests_to("/v1/chat/completions")[-1].json()
    assert sent["model"] == "google/gemma-3-4b-it" and sent["max_tokens"] == 300
    assert fake_nim.images[-1].shape[:2] == (30, 40)
    assert sent["messages"][0]["content"][1]["image_url"]["detail"] == "auto"


# -- Open WebUI --------------------------------------------------------------------------------------


def test_open_webui_openai_connection_sends_top_k_and_min_p(via_nim: Running, fake_nim: FakeOpenAI) -> None:
    uri = "data:image/png;base64," + base64.b64encode(solid_png(16, 16)).decode()
    body = recorded("openwebui_openai_chat", IMAGE_DATA_URI=uri)
    with httpx.stream("POST", via_nim.v1 + "/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        text = "".join(json.loads(line[6:])["choices"][0]["delta"].get("content") or ""
                       for line in r.iter_lines() if line.startswith("data: {"))
    assert text == "A hoover."
    sent = fake_nim.requests_to("/v1/chat/completions")[-1].json()
    for key in ("top_k", "min_p", "frequency_penalty", "presence_penalty", "temperature", "top_p", "seed"):
        assert sent[key] == body[key], key


def test_open_webui_ollama_connection_sends_options() -> None:
    png = base64.b64encode(solid_png(16, 16)).decode()
    body = recorded("openwebui_ollama_chat", IMAGE_BASE64=png)
    with FakeOllama() as fake, running_service({"backend": "ollama"}, {"ollama": {"url": fake.url}}) as running:
        r = httpx.post(running.url + "/api/chat", json=body, timeout=30)
        assert r.status_code == 200
        lines = [json.loads(line) for line in r.text.splitlines()]
        assert lines[-1]["done"] and "".join(x["message"]["content"] for x in lines) == "I see an image of 16x16."
        sent = fake.requests_to("/api/chat")[-1].json()
    assert sent["options"] == body["options"] and sent["keep_alive"] == "5m"
    assert sent["messages"][0]["images"] == [png]


# -- LangChain ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Running, EchoBackend]]:
    with echo_service() as pair:
        yield pair


@pytest.mark.parametrize("responses_api", [True, False])
def test_langchain_chat_openai(echo: tuple[Running, EchoBackend], responses_api: bool) -> None:
    from langchain_core.messages import AIMessage, HumanMessage, SystemMessage
    from langchain_openai import ChatOpenAI

    llm = ChatOpenAI(base_url=echo[0].v1, api_key="unused", model="echo-1",  # type: ignore[arg-type]
                     use_responses_api=responses_api, max_retries=0, temperature=0.1)
    first = llm.invoke([SystemMessage("Be brief."), HumanMessage("What is this?")])
    assert first.text == "What is this?"
    assert isinstance(first, AIMessage) and first.usage_metadata is not None
    assert first.usage_metadata["total_tokens"] == 7 + 3
    # The answer goes back as history, as agents do.
    second = llm.invoke([HumanMessage("What is this?"), first, HumanMessage([
        {"type": "text", "text": "And now?"},
        {"type": "image_url", "image_url": {"url": "data:image/png;base64,"
                                                   + base64.b64encode(solid_png(8, 6)).decode()}}])])
    assert second.text == "And now? | 1 images: 8x6"
    call = echo[1].calls[-1]
    assert [m.role for m in call.messages] == ["user", "assistant", "user"]
    assert call.params.temperature == 0.1
    assert "".join(chunk.text for chunk in llm.stream("a b c")) == "a b c"


def test_langchain_chat_ollama(echo: tuple[Running, EchoBackend]) -> None:
    from langchain_core.messages import HumanMessage
    from langchain_ollama import ChatOllama

    llm = ChatOllama(base_url=echo[0].url, model="echo-1", temperature=0.2, top_k=30)
    with pytest.raises(Exception, match="options.top_k"):
        llm.invoke([HumanMessage("hello")])  # the echo backend has no top_k: refused, not ignored
    llm = ChatOllama(base_url=echo[0].url, model="echo-1", temperature=0.2)
    assert llm.invoke([HumanMessage("hello there")]).text == "hello there"
    assert echo[1].calls[-1].params.temperature == 0.2
    assert "".join(c.text for c in llm.stream("x y")) == "x y"


# -- defaults that follow the service ------------------------------------------------------------------


class Serve:
    """``python -m framelens serve ...`` in a subprocess on a free port."""

    def __init__(self, *args: str) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        port = self.url.rsplit(":", 1)[1]
        self.proc = subprocess.Popen([sys.executable, "-m", "framelens", "serve", "--port", port, *args],
                                     cwd=ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"}, text=True,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.proc.stderr.read()}")  # type: ignore[union-attr]
            try:
                httpx.get(self.url + "/v1/health/live", timeout=1)
                return
            except httpx.HTTPError:
                time.sleep(0.1)
            if time.monotonic() > deadline:
                self.stop()
                raise AssertionError("serve did not come up")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.communicate()


def test_serve_nim_without_a_model_option_knows_the_model_before_the_first_request() -> None:
    with FakeOpenAI(models=["nvidia/cosmos-reason1-7b", "other"], reply="Hi.") as nim:
        serve = Serve("--backend", "nim", "-c", f"nim-url={nim.base_url}")
        try:
            health = httpx.get(serve.url + "/health", timeout=10).json()
            assert health["model_name"] == "nvidia/cosmos-reason1-7b"
            listed_by_clients = len(nim.requests_to("/v1/models"))
            r = httpx.post(serve.url + "/v1/chat/completions", timeout=30,
                           json={"messages": [{"role": "user", "content": "Hello!"}]})
            assert r.status_code == 200, r.text
            assert r.json()["model"] == "nvidia/cosmos-reason1-7b"
            assert len(nim.requests_to("/v1/models")) == listed_by_clients  # nobody had to list models first
        finally:
            serve.stop()


def test_the_default_model_is_found_when_the_backend_comes_back() -> None:
    nim = FakeOpenAI(models=["late-model"])
    nim.start()
    nim.stop()  # known port, nothing listening: the backend is down at start
    try:
        with running_service({"backend": "nim"}, {"nim": {"url": nim.base_url, "retries": 0}}) as running:
            down = httpx.get(running.url + "/health", timeout=30)
            assert down.status_code == 503 and down.json()["model_name"] is None
            nim.start()
            up = httpx.get(running.url + "/health", timeout=30)
            assert up.status_code == 200 and up.json()["model_name"] == "late-model"
            r = httpx.post(running.v1 + "/responses", json={"input": "hi"}, timeout=30)
            assert r.status_code == 200 and r.json()["model"] == "late-model"
    finally:
        nim.stop()


def test_serve_with_the_nim_backend_evaluates_alerts_on_nim(tmp_path: Path) -> None:
    with FakeOpenAI(reply="no.") as nim:
        nim.reasoning = "YES. There is smoke, yes."  # the reasoning must not decide the alert
        serve = Serve("--backend", "nim", "-c", f"nim-url={nim.base_url}", "-c", "nim-think=true",
                      "-s", "testpattern",
                      "-c", "testpattern-fps=10", "-o", "none", "-p", "alerts", "-c", "alerts-interval=0",
                      "-c", f"alerts-snapshot-dir={tmp_path}")
        try:
            r = httpx.post(serve.url + "/v1/alerts", json={"alerts": ["Is there smoke?"]}, timeout=10)
            assert r.status_code in (200, 201), r.text
            deadline = time.monotonic() + 20
            while not nim.requests_to("/v1/chat/completions") and time.monotonic() < deadline:
                time.sleep(0.1)
            sent = nim.requests_to("/v1/chat/completions")
            assert sent, "alerts never asked the nim backend"
            assert "smoke" in json.dumps(sent[0].json())
            rule = httpx.get(serve.url + "/v1/alerts/r0", timeout=10).json()
            while rule["last_answer"] is None and time.monotonic() < deadline:
                time.sleep(0.1)
                rule = httpx.get(serve.url + "/v1/alerts/r0", timeout=10).json()
            assert (rule["state"], rule["last_result"], rule["last_answer"]) == ("off", "false", "no.")
            assert sent[0].json()["messages"][0]["content"].startswith("/think")  # so the model did reason
        finally:
            serve.stop()


# -- small protocol faults ---------------------------------------------------------------------------


def test_x_request_id_is_sent_once_on_401() -> None:
    with echo_service({"api-key": "right"}) as (running, _):
        r = httpx.get(running.v1 + "/models", headers={"x-request-id": "req_abc"})
        assert r.status_code == 401 and r.headers.get_list("x-request-id") == ["req_abc"]
        client = openai.OpenAI(base_url=running.v1, api_key="wrong", max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.models.list()
        assert caught.value.request_id is not None and "," not in caught.value.request_id


def test_a_second_id_for_an_open_url_is_a_409_naming_the_open_one(echo: tuple[Running, EchoBackend]) -> None:
    streams = echo[0].v1 + "/streams"
    first = httpx.post(streams, json={"url": "testpattern", "id": "tp-main"}, timeout=30)
    assert first.status_code == 201, first.text
    try:
        again = httpx.post(streams, json={"url": "testpattern", "id": "tp2"}, timeout=30)
        assert again.status_code == 409
        error = again.json()["error"]
        assert error["param"] == "id" and "'tp-main'" in error["message"] and "tp2" in error["message"]
        same = httpx.post(streams, json={"url": "testpattern", "id": "tp-main"}, timeout=30)
        assert same.status_code == 200 and same.json()["id"] == "tp-main"
        unnamed = httpx.post(streams, json={"url": "testpattern"}, timeout=30)
        assert unnamed.status_code == 200 and unnamed.json()["id"] == "tp-main"
    finally:
        httpx.delete(streams + "/tp-main")


# -- reasoning and sampling on chat completions -------------------------------------------------------


def test_reasoning_content_passes_through_chat_completions() -> None:
    with FakeOpenAI(reply="A red square.") as nim, \
            running_service({"backend": "nim"}, {"nim": {"url": nim.base_url, "think": True}}) as running:
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        messages: Any = [{"role": "user", "content": "What is it?"}]
        reply = client.chat.completions.create(model=nim.models[0], messages=messages)
        message = reply.choices[0].message
        assert message.content == "A red square."
        assert message.reasoning_content == "Let me look at the picture carefully."  # type: ignore[attr-defined]
        chunks = list(client.chat.completions.create(model=nim.models[0], messages=messages, stream=True))
        deltas = [c.choices[0].delta for c in chunks if c.choices]
        thought = "".join(getattr(d, "reasoning_content", None) or "" for d in deltas)
        assert thought == "Let me look at the picture carefully."
        assert "".join(d.content or "" for d in deltas) == "A red square."


def test_sampling_knobs_a_backend_lacks_are_400s_naming_them(echo: tuple[Running, EchoBackend]) -> None:
    for key, value in (("top_k", 40), ("min_p", 0.1), ("repetition_penalty", 1.1)):
        r = httpx.post(echo[0].v1 + "/chat/completions", timeout=30,
                       json={"messages": [{"role": "user", "content": "hi"}], key: value})
        assert r.status_code == 400, key
        assert r.json()["error"]["param"] == key and "'echo'" in r.json()["error"]["message"]
    ok = httpx.post(echo[0].v1 + "/chat/completions", timeout=30,
                    json={"messages": [{"role": "user", "content": "hi"}], "presence_penalty": 0.3})
    assert ok.status_code == 200 and echo[1].calls[-1].params.presence_penalty == 0.3
