"""End to end: the seeds' clients (curl, requests, the openai and ollama SDKs, wasmVision's payload)
-> framelens ``http`` -> the real ``ollama``/``nim`` backends -> protocol-faithful fake servers."""

from __future__ import annotations

import base64
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import ollama
import openai
import pytest
import requests
from _http_support import Running, image_server, running_service, solid_png
from fakes import FakeOllama, FakeOpenAI, unused_url
from helpers import make_video

SEEDS: dict[str, Any] = json.loads((Path(__file__).parent.parent / "data" / "http_seed_requests.json").read_text())


@pytest.fixture(scope="module")
def fake_ollama() -> Iterator[FakeOllama]:
    with FakeOllama(models={"llava:latest": ["completion", "vision"],
                            "gemma3:4b": ["completion", "vision"]}) as server:
        yield server


@pytest.fixture(scope="module")
def via_ollama(fake_ollama: FakeOllama) -> Iterator[Running]:
    with running_service({"backend": "ollama", "allow-private-urls": True},
                         {"ollama": {"url": fake_ollama.url, "model": "llava"}}) as running:
        yield running


def curl(url: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    """The seeds' curl command line, pointed at ``url``."""
    out = subprocess.run(
        ["curl", "--silent", "--location", "--request", "POST", url, "--header", "Content-Type: application/json",
         "--data", json.dumps(body), "--write-out", "\n%{http_code}"],
        capture_output=True, text=True, timeout=60, check=True)
    text, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(text)


# -- the seeds' curl examples ----------------------------------------------------------------------


def test_seed_text_only_hello_without_model(via_ollama: Running, fake_ollama: FakeOllama) -> None:
    status, reply = curl(via_ollama.v1 + "/chat/completions", SEEDS["000_text_hello"])
    assert status == 200, reply
    assert reply["object"] == "chat.completion" and reply["choices"][0]["finish_reason"] == "stop"
    assert reply["choices"][0]["message"]["content"] == "Hello! How can I help you today?"
    sent = fake_ollama.requests_to("/api/chat")[-1].json()
    assert sent["model"] == "llava" and [m["role"] for m in sent["messages"]] == ["system", "user"]


@pytest.mark.parametrize(("seed", "size"), [("000_png_icon", "16x16"), ("001_png_icon", "16x16"),
                                            ("001_jpeg", "80x53")])
def test_seed_base64_images(via_ollama: Running, fake_ollama: FakeOllama, seed: str, size: str) -> None:
    status, reply = curl(via_ollama.v1 + "/chat/completions", SEEDS[seed])
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"] == f"I see an image of {size}."
    sent = fake_ollama.requests_to("/api/chat")[-1].json()
    assert sent["options"]["num_predict"] == SEEDS[seed]["max_tokens"]


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    with image_server(solid_png(64, 40)) as url:
        yield url


@pytest.mark.parametrize("seed", ["000_image_url", "001_image_url"])
def test_seed_image_url(via_ollama: Running, image_host: str, seed: str) -> None:
    body = json.loads(json.dumps(SEEDS[seed]))
    part = body["messages"][0]["content"][1]
    part["image_url"]["url"] = image_host + "/2560px-Gfp-wisconsin-madison-the-nature-boardwalk.jpg"
    status, reply = curl(via_ollama.v1 + "/chat/completions", body)
    assert status == 200, reply
    assert reply["choices"][0]["message"]["content"] == "I see an image of 64x40."


@pytest.mark.parametrize("seed", ["001_v4l2", "001_csi"])
def test_seed_camera_urls_fail_clearly_without_a_camera(via_ollama: Running, seed: str) -> None:
    status, reply = curl(via_ollama.v1 + "/chat/completions", SEEDS[seed])
    assert status in (400, 422)
    assert reply["error"]["param"] == "messages.1.content.1.image_url.url"
    assert "/dev/video0" in reply["error"]["message"] or "csi" in reply["error"]["message"]


# -- openai SDK -> framelens -> backends -> fakes ---------------------------------------------------


def test_openai_sdk_through_the_ollama_backend(via_ollama: Running, fake_ollama: FakeOllama) -> None:
    client = openai.OpenAI(base_url=via_ollama.v1, api_key="foo", max_retries=0)
    png = base64.b64encode(solid_png(32, 24)).decode()
    image = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}
    messages: Any = [{"role": "user", "content": [{"type": "text", "text": "what's in this image?"}, image]}]
    reply = client.chat.completions.create(model="gemma3:4b", messages=messages)
    assert reply.choices[0].message.content == "I see an image of 32x24."
    assert reply.usage is not None and reply.usage.prompt_tokens > 0
    sent = fake_ollama.requests_to("/api/chat")[-1].json()
    assert sent["model"] == "gemma3:4b" and sent["messages"][0]["images"] == [png]
    stream = client.chat.completions.create(model="gemma3:4b", messages=messages, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "I see an image of 32x24."
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    with pytest.raises(openai.NotFoundError, match="ollama pull nonexistent"):
        client.chat.completions.create(model="nonexistent", messages=[{"role": "user", "content": "hi"}])
    assert [m.id for m in client.models.list()] == ["llava:latest", "gemma3:4b"]


def test_openai_sdk_through_the_nim_backend_with_images_and_video(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=20, fps=10.0).read_bytes()
    with FakeOpenAI() as nim, running_service({"backend": "nim"}, {"nim": {"url": nim.base_url}}) as running:
        client = openai.OpenAI(base_url=running.v1, api_key="not-used", max_retries=0)
        model = "nvidia/nemotron-nano-12b-v2-vl"
        png = base64.b64encode(solid_png(20, 10)).decode()
        reply = client.chat.completions.create(model=model, max_tokens=64, messages=[{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png}"}}]}])
        assert reply.choices[0].message.content == "I see an image of 20x10."
        video = f"data:video/mp4;base64,{base64.b64encode(clip).decode()}"
        reply = client.chat.completions.create(
            model=model, max_tokens=64, extra_body={"media_io_kwargs": {"video": {"num_frames": 5}}},
            messages=[{"role": "user", "content": [{"type": "text", "text": "What is in this video?"},
                                                   {"type": "video_url", "video_url": {"url": video}}]}])  # type: ignore[list-item]
        assert reply.choices[0].message.content == "I see a video of 20 frames."  # the whole clip, sampled by NIM
        assert nim.requests_to("/v1/chat/completions")[-1].json()["media_io_kwargs"] == {"video": {"num_frames": 5}}
        nim.stream_error_after = 2
        with pytest.raises(openai.APIError):
            list(client.chat.completions.create(model=model, stream=True,
                                                messages=[{"role": "user", "content": "Hello there friend"}]))
    with running_service({"backend": "nim"}, {"nim": {"url": unused_url("/v1"), "retries": 0}}) as running:
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        with pytest.raises(openai.InternalServerError) as caught:
            client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == 503


# -- /infer (the llama.cpp vision service) ---------------------------------------------------------


def test_infer_with_the_seed_python_client(via_ollama: Running, fake_ollama: FakeOllama, tmp_path: Path) -> None:
    (tmp_path / "image.jpg").write_bytes(base64.b64decode(SEEDS["001_jpeg"]["messages"][1]["content"][1]
                                                          ["image_url"]["url"].split(",", 1)[1]))
    with open(tmp_path / "image.jpg", "rb") as f:
        image_data = base64.b64encode(f.read()).decode()
    response = requests.post(via_ollama.url + "/infer", json={
        "prompt": "What objects can you see in this image?", "image": image_data, "max_tokens": 300,
        "temperature": 0.7}, timeout=30)
    result = response.json()
    assert response.status_code == 200 and result["success"] is True and result["error"] is None
    assert result["response_text"] == "I see an image of 80x53."
    assert result["model"] == "llava" and result["token_usage"]["total_tokens"] > 0
    assert result["metadata"]["max_tokens"] == 300 and result["metadata"]["top_p"] == 0.95
    options = fake_ollama.requests_to("/api/chat")[-1].json()["options"]
    assert options["num_predict"] == 300 and options["temperature"] == 0.7
    status, reply = curl(via_ollama.url + "/infer", {"prompt": "Describe this image in detail",
                                                     "image": "data:image/jpeg;base64," + image_data})
    assert status == 200 and reply["success"] is True


@pytest.mark.parametrize(("body", "status", "error_type"), [
    ({"image": "aGk="}, 400, "validation"),
    ({"prompt": "hi", "image": base64.b64encode(b"not an image").decode()}, 422, "validation"),
    ({"prompt": "hi", "image": base64.b64encode(b"GIF89a\x01\x00\x01\x00").decode()}, 415, "validation"),
])
def test_infer_errors_use_the_services_error_body(via_ollama: Running, body: dict[str, Any], status: int,
                                                  error_type: str) -> None:
    reply = httpx.post(via_ollama.url + "/infer", json=body, timeout=30)
    assert reply.status_code == status
    data = reply.json()
    assert data["success"] is False and data["error_type"] == error_type and data["error"] and data["timestamp"]


def test_infer_backend_failure_is_a_model_error(fake_ollama: FakeOllama) -> None:
    with running_service({"backend": "ollama"}, {"ollama": {"url": unused_url(), "model": "llava",
                                                            "retries": 0}}) as running:
        png = base64.b64encode(solid_png()).decode()
        reply = httpx.post(running.url + "/infer", json={"prompt": "hi", "image": png}, timeout=30)
        assert reply.status_code == 503 and reply.json()["error_type"] == "model"


# -- Ollama's native API -----------------------------------------------------------------------------


def test_wasmvision_ollama_processor_payload(via_ollama: Running) -> None:
    jpeg = base64.b64encode(solid_png(30, 20)).decode()
    prompt = "Describe what is in this picture in highly complimentary terms using 6 words or less."
    raw = '{"model":"llava","prompt":"' + prompt + '","stream":false,"images":["' + jpeg + '"]}'
    reply = httpx.post(via_ollama.url + "/api/generate", content=raw, timeout=30)
    assert reply.status_code == 200
    assert reply.json()["response"].strip() == "I see an image of 30x20." and reply.json()["done"] is True


def test_ollama_python_client(via_ollama: Running) -> None:
    client = ollama.Client(host=via_ollama.url)
    assert [m.model for m in client.list().models] == ["llava:latest", "gemma3:4b"]
    reply = client.chat(model="llava", messages=[{"role": "user", "content": "What is this?",
                                                  "images": [solid_png(12, 8)]}])
    assert reply.message.content == "I see an image of 12x8." and reply.done
    pieces = [c.response for c in client.generate(model="llava", prompt="hi", stream=True)]
    assert "".join(pieces) == "Hello! How can I help you today?"
    with pytest.raises(ollama.ResponseError) as caught:
        client.chat(model="missing-model", messages=[{"role": "user", "content": "hi"}])
    assert caught.value.status_code == 404


def test_ollama_images_may_name_a_live_source(via_ollama: Running) -> None:
    opened = httpx.post(via_ollama.v1 + "/streams", json={"url": "testpattern", "id": "main2"}, timeout=30)
    assert opened.status_code == 201
    try:
        reply = httpx.post(via_ollama.url + "/api/chat", timeout=30, json={
            "model": "llava", "stream": False,
            "messages": [{"role": "user", "content": "what now?", "images": ["stream://main2"]}]})
        assert reply.json()["message"]["content"] == "I see an image of 640x480."
    finally:
        httpx.delete(via_ollama.v1 + "/streams/main2")


def test_jetson_live_stream_endpoints(via_ollama: Running) -> None:
    added = httpx.post(via_ollama.url + "/api/v1/live-stream", timeout=30,
                       json={"liveStreamUrl": "testpattern", "description": "pattern"})
    assert added.status_code == 200
    stream_id = added.json()["id"]
    assert httpx.get(via_ollama.url + "/api/v1/live-stream").json() == [
        {"id": stream_id, "liveStreamUrl": "testpattern", "description": "pattern"}]
    removed = httpx.delete(via_ollama.url + f"/api/v1/live-stream/{stream_id}")
    assert removed.json() == {"detail": "Stream removed successfully"}
    assert httpx.get(via_ollama.url + "/api/v1/health/ready").json() == {"detail": "healthy"}
