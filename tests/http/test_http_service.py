"""The ``http`` service around its routes: lifecycle, CLI, API key, CORS, request ids, metrics,
OpenAPI document and routes added by plugins."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import openai
import pytest
from _http_support import echo_service
from fakes import FakeOllama
from helpers import ROOT, free_port, wait_ready
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from framelens import OutputError, RegisterFn, hookimpl
from framelens.plugins.http.errors import ApiError
from framelens.plugins.http.routing import read_json
from framelens.testing import plugin_registered


def test_port_in_use_is_a_clear_error() -> None:
    with echo_service() as (running, _):
        with pytest.raises(OutputError, match=f"port {running.service.port} .* already in use"):
            with echo_service({"port": running.service.port}):
                pass


def test_api_key_is_required_when_set() -> None:
    with echo_service({"api-key": "s3cret"}) as (running, _):
        body = {"messages": [{"role": "user", "content": "hi"}]}
        missing = httpx.post(running.v1 + "/chat/completions", json=body)
        assert missing.status_code == 401 and missing.json()["error"]["code"] == "invalid_api_key"
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = openai.OpenAI(base_url=running.v1, api_key="nope", max_retries=0)
        with pytest.raises(openai.AuthenticationError):
            wrong.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
        right = openai.OpenAI(base_url=running.v1, api_key="s3cret", max_retries=0)
        assert right.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
        for path in ("/v1/models", "/v1/streams", "/metrics", "/api/tags", "/infer"):
            assert httpx.get(running.url + path).status_code in (401, 405), path
        for path in ("/health", "/v1/health/ready", "/api/v1/health/ready", "/", "/openapi.json"):
            assert httpx.get(running.url + path).status_code == 200, path
        assert httpx.get(running.url + "/openapi.json").json()["components"]["securitySchemes"]


def test_api_key_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FRAMELENS_API_KEY", "envkey")
    with echo_service() as (running, _):
        assert httpx.get(running.v1 + "/models").status_code == 401
        assert httpx.get(running.v1 + "/models", headers={"Authorization": "Bearer envkey"}).status_code == 200


def test_cors_is_off_by_default_and_configurable() -> None:
    preflight = {"Origin": "http://ui.local", "Access-Control-Request-Method": "POST"}
    with echo_service() as (running, _):
        reply = httpx.get(running.v1 + "/models", headers={"Origin": "http://ui.local"})
        assert "access-control-allow-origin" not in reply.headers
    with echo_service({"cors-origins": "http://ui.local", "api-key": "k"}) as (running, _):
        reply = httpx.options(running.v1 + "/chat/completions", headers=preflight)
        assert reply.status_code == 200 and reply.headers["access-control-allow-origin"] == "http://ui.local"
        denied = httpx.get(running.v1 + "/models", headers={"Origin": "http://ui.local"})
        assert denied.status_code == 401 and denied.headers["access-control-allow-origin"] == "http://ui.local"


def test_every_response_carries_a_request_id_that_the_log_names(caplog: pytest.LogCaptureFixture) -> None:
    with echo_service() as (running, _):
        ok = httpx.get(running.v1 + "/models")
        assert ok.headers["x-request-id"].startswith("req_")
        mine = httpx.get(running.v1 + "/models", headers={"x-request-id": "trace-42"})
        assert mine.headers["x-request-id"] == "trace-42"
        with caplog.at_level(logging.INFO, logger="framelens.http"):
            bad = httpx.post(running.v1 + "/chat/completions", content=b"{", headers={"x-request-id": "bad-1"})
        assert bad.status_code == 400 and bad.headers["x-request-id"] == "bad-1"
        assert any("[bad-1]" in r.getMessage() and "400" in r.getMessage() for r in caplog.records)


def test_unknown_routes_and_methods_are_openai_errors() -> None:
    with echo_service() as (running, _):
        missing = httpx.get(running.url + "/v2/nothing")
        assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"
        wrong = httpx.delete(running.v1 + "/chat/completions")
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == "method_not_allowed"


def test_metrics_count_requests_tokens_errors_and_frames() -> None:
    with echo_service() as (running, backend):
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "a b c"}])
        list(client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "d e"}],
                                            stream=True))
        httpx.post(running.v1 + "/chat/completions", content=b"{")
        httpx.post(running.v1 + "/chat/completions", json={"model": "gone", "messages": [{"role": "user",
                                                                                          "content": "x"}]})
        httpx.post(running.v1 + "/streams", json={"url": "testpattern", "id": "tp"}, timeout=30)
        time.sleep(0.3)
        text = httpx.get(running.url + "/metrics").text
    assert 'framelens_http_requests_total{method="POST",route="/v1/chat/completions",status="200"} 2.0' in text
    assert 'framelens_http_requests_total{method="POST",route="/v1/chat/completions",status="400"} 1.0' in text
    assert 'framelens_http_request_duration_seconds_count{route="/v1/chat/completions"} 4.0' in text
    assert 'framelens_http_time_to_first_token_seconds_count{backend="echo"} 1.0' in text
    assert 'framelens_http_generated_tokens_total{backend="echo"} 5.0' in text
    assert 'framelens_http_backend_errors_total{backend="echo",kind="model_not_found"} 1.0' in text
    captured = 'framelens_stream_frames_captured_total{stream="tp"}'
    frames = [line for line in text.splitlines() if line.startswith(captured)]
    assert frames and float(frames[0].split()[-1]) > 0


class AlertIn(BaseModel):
    rule: str


class _RoutesPlugin:
    @hookimpl
    def register_routes(self, register: RegisterFn, context: object) -> None:
        async def create(request: Request) -> Response:
            """Create a test rule."""
            body = await read_json(request, AlertIn)
            if body.rule == "boom":
                raise RuntimeError("plugin bug")
            if body.rule == "refuse":
                raise ApiError(409, "refused", param="rule")
            return JSONResponse({"rule": body.rule}, status_code=201)

        register("/v1/test-rules", create, methods=["POST"], request_model=AlertIn, status_code=201)


def test_plugin_routes_get_auth_errors_metrics_and_openapi(caplog: pytest.LogCaptureFixture) -> None:
    with plugin_registered(_RoutesPlugin(), "test-routes"), echo_service({"api-key": "k"}) as (running, _):
        auth = {"Authorization": "Bearer k"}
        url = running.v1 + "/test-rules"
        assert httpx.post(url, json={"rule": "x"}).status_code == 401
        assert httpx.post(url, json={"rule": "x"}, headers=auth).json() == {"rule": "x"}
        bad = httpx.post(url, json={"rule": 1}, headers=auth)
        assert bad.status_code == 400 and bad.json()["error"]["param"] == "rule"
        assert httpx.post(url, json={"rule": "refuse"}, headers=auth).status_code == 409
        with caplog.at_level(logging.ERROR, logger="framelens.http"):
            crash = httpx.post(url, json={"rule": "boom"}, headers=auth)
        assert crash.status_code == 500 and "Traceback" not in crash.text and "plugin bug" not in crash.text
        rid = crash.headers["x-request-id"]
        assert rid in crash.json()["error"]["message"]
        assert any(rid in r.getMessage() for r in caplog.records)
        doc = httpx.get(running.url + "/openapi.json").json()
        op = doc["paths"]["/v1/test-rules"]["post"]
        assert op["requestBody"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/AlertIn"}
        assert op["security"] == [{"bearer": []}]
        metrics = httpx.get(running.url + "/metrics", headers=auth).text
        assert 'route="/v1/test-rules",status="201"' in metrics


def test_openapi_document_describes_the_api() -> None:
    with echo_service() as (running, _):
        doc = httpx.get(running.url + "/openapi.json").json()
    assert doc["openapi"] == "3.0.3"
    for path in ("/v1/chat/completions", "/v1/models", "/v1/streams", "/v1/streams/{id}", "/health",
                 "/v1/health/ready", "/metrics", "/infer", "/api/chat", "/api/generate", "/api/tags", "/"):
        assert path in doc["paths"], path
    request = doc["components"]["schemas"]["ChatCompletionRequest"]
    assert request["additionalProperties"] is False and "messages" in request["required"]
    assert "$defs" not in str(doc) and '"type": "null"' not in str(doc)


# -- the command line -------------------------------------------------------------------------------


@pytest.fixture
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama() as server:
        yield server


def _start(args: list[str]) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([sys.executable, "-m", "framelens", *args], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def _stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
        raise AssertionError("did not stop on SIGINT") from None
    assert proc.returncode == 0, err
    return err


def test_framelens_serve_standalone(fake_ollama: FakeOllama) -> None:
    port = free_port()
    proc = _start(["serve", "--port", str(port), "--backend", "ollama", "-c", f"ollama-url={fake_ollama.url}",
                   "-c", "ollama-model=llava"])
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="foo", max_retries=0)
        reply = client.chat.completions.create(model="llava", messages=[{"role": "user", "content": "Hello!"}])
        assert reply.choices[0].message.content == "Hello! How can I help you today?"
        opened = httpx.post(f"http://127.0.0.1:{port}/v1/streams", json={"url": "testpattern"}, timeout=30)
        assert opened.status_code == 201
        reply = client.chat.completions.create(model="llava", messages=[{"role": "user", "content": [
            {"type": "text", "text": "Describe the scene."},
            {"type": "image_url", "image_url": {"url": "stream://testpattern"}}]}])
        assert reply.choices[0].message.content == "I see an image of 640x480."
    finally:
        err = _stop(proc)
    assert f"http://127.0.0.1:{port}/v1" in err


def test_http_service_beside_a_pipeline(fake_ollama: FakeOllama) -> None:
    port = free_port()
    proc = _start(["run", "-s", "testpattern", "-p", "http", "-c", f"http-port={port}", "-c", "http-backend=ollama",
                   "-c", f"ollama-url={fake_ollama.url}", "-c", "ollama-model=llava", "-o", "none"])
    try:
        wait_ready(proc, f"http://127.0.0.1:{port}")
        streams = httpx.get(f"http://127.0.0.1:{port}/v1/streams").json()["data"]
        assert [(s["id"], s["origin"]) for s in streams] == [("main", "cli")]
        assert httpx.delete(f"http://127.0.0.1:{port}/v1/streams/main").status_code == 409
        body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What is here?"},
                                                          {"type": "image_url", "image_url": {"url": "stream://main"}}]}]}
        reply = httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=30)
        assert reply.json()["choices"][0]["message"]["content"] == "I see an image of 640x480."
    finally:
        _stop(proc)


def test_serve_reports_a_port_in_use(fake_ollama: FakeOllama) -> None:
    with echo_service() as (running, _):
        proc = _start(["serve", "--port", str(running.service.port), "--backend", "ollama",
                       "-c", f"ollama-url={fake_ollama.url}"])
        _, err = proc.communicate(timeout=60)
    assert proc.returncode == 1
    assert f"port {running.service.port}" in err and "already in use" in err and "Traceback" not in err
