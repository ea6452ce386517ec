"""``/v1/chat/completions`` through the official ``openai`` SDK against the in-process ``http`` service."""

from __future__ import annotations

import base64
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import httpx
import numpy as np
import openai
import pytest
from _http_support import EchoBackend, Running, echo_service, solid_png, text_of
from helpers import make_video

from framelens import BackendError, ImagePart, VideoPart


@pytest.fixture(scope="module")
def echo() -> Iterator[tuple[Running, EchoBackend]]:
    with echo_service() as pair:
        yield pair


@pytest.fixture
def client(echo: tuple[Running, EchoBackend]) -> openai.OpenAI:
    return openai.OpenAI(base_url=echo[0].v1, api_key="unused", max_retries=0)


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def image_message(url: str, text: str = "What is in this image?") -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "text", "text": text},
                                         {"type": "image_url", "image_url": {"url": url}}]}]


def post(running: Running, body: object, **kw: object) -> httpx.Response:
    kw.setdefault("timeout", 30)
    return httpx.post(running.v1 + "/chat/completions", json=body, **kw)  # type: ignore[arg-type]


# -- text ----------------------------------------------------------------------------------------


def test_non_streaming_answer_has_the_openai_shape(echo: tuple[Running, EchoBackend], client: openai.OpenAI) -> None:
    reply = client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "Hello!"}])
    assert reply.object == "chat.completion"
    assert reply.id.startswith("chatcmpl-")
    assert reply.created > 0
    assert reply.model == "echo-1"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == "Hello!"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None and reply.usage.total_tokens == reply.usage.prompt_tokens + 1


def test_request_without_model_uses_the_backend_default(echo: tuple[Running, EchoBackend]) -> None:
    body = {"messages": [{"role": "system", "content": "You are a helpful assistant."},
                         {"role": "user", "content": "Hello!"}]}
    reply = post(echo[0], body)
    assert reply.status_code == 200, reply.text
    assert reply.json()["model"] == "echo-1"
    assert echo[1].calls[-1].params.model == "echo-1"


def test_multi_turn_conversation_reaches_the_backend_in_order(echo: tuple[Running, EchoBackend],
                                                              client: openai.OpenAI) -> None:
    client.chat.completions.create(model="echo-1", messages=[
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": "What is in this image?"},
        {"role": "assistant", "content": "A boardwalk.", "refusal": None, "tool_calls": []},
        {"role": "user", "content": [{"type": "text", "text": "Best season to visit?"}]},
    ])
    assert text_of(echo[1].calls[-1].messages) == [
        ("system", "Be brief."), ("user", "What is in this image?"), ("assistant", "A boardwalk."),
        ("user", "Best season to visit?")]


def test_generation_parameters_are_passed_to_the_backend(echo: tuple[Running, EchoBackend],
                                                         client: openai.OpenAI) -> None:
    schema = {"type": "object", "properties": {"door": {"type": "string"}}, "required": ["door"]}
    client.chat.completions.create(
        model="echo-1", messages=[{"role": "user", "content": "hi"}], max_completion_tokens=33, temperature=0.2,
        top_p=0.5, stop=["\n", "END"], seed=7,
        response_format={"type": "json_schema", "json_schema": {"name": "door", "schema": schema}})
    params = echo[1].calls[-1].params
    assert (params.max_tokens, params.temperature, params.top_p, params.stop, params.seed) == (
        33, 0.2, 0.5, ("\n", "END"), 7)
    assert params.json_schema == schema
    client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}], max_tokens=5,
                                   stop="STOP", response_format={"type": "json_object"})
    params = echo[1].calls[-1].params
    assert (params.max_tokens, params.stop, params.json_object, params.json_schema) == (5, ("STOP",), True, None)


def test_streaming_sends_chunks_a_final_usage_chunk_and_done(echo: tuple[Running, EchoBackend],
                                                             client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(model="echo-1", stream=True, stream_options={"include_usage": True},
                                            messages=[{"role": "user", "content": "one two three"}])
    chunks = list(stream)
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "one two three"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])
    assert echo[1].calls[-1].stream


def test_streaming_wire_format_ends_with_done(echo: tuple[Running, EchoBackend]) -> None:
    body = {"messages": [{"role": "user", "content": "a b"}], "stream": True}
    with httpx.stream("POST", echo[0].v1 + "/chat/completions", json=body, timeout=30) as reply:
        assert reply.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in reply.iter_lines() if line]
    assert lines[-1] == "data: [DONE]"
    events = [json.loads(line[6:]) for line in lines[:-1]]
    assert all("usage" not in e for e in events)  # only with stream_options.include_usage
    assert events[-1]["choices"][0]["delta"] == {} and events[-1]["choices"][0]["finish_reason"] == "stop"


@pytest.mark.parametrize(("extra", "param"), [
    ({"n": 2}, "n"),
    ({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    ({"logprobs": True}, "logprobs"),
    ({"top_k": 5}, "top_k"),
    ({"stream_options": {"include_usage": True}}, "stream_options"),
    ({"media_io_kwargs": {"video": {"fps": 1, "num_frames": 4}}}, "media_io_kwargs.video"),
    ({"temperature": 3}, "temperature"),
    ({"messages": []}, "messages"),
])
def test_bad_or_unsupported_parameters_are_400_naming_the_param(echo: tuple[Running, EchoBackend],
                                                                extra: dict[str, object], param: str) -> None:
    reply = post(echo[0], {"messages": [{"role": "user", "content": "hi"}], **extra})
    assert reply.status_code == 400, reply.text
    error = reply.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]


def test_parameters_the_backend_cannot_honour_are_refused() -> None:
    with echo_service(supports=frozenset({"images", "max_tokens", "temperature"})) as (running, backend):
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        for kwargs, param in (({"top_p": 0.3}, "top_p"), ({"seed": 1}, "seed"),
                              ({"response_format": {"type": "json_object"}}, "response_format"),
                              ({"max_completion_tokens": 5, "stop": "x"}, "stop")):
            with pytest.raises(openai.BadRequestError) as caught:
                client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}],
                                               **kwargs)  # type: ignore[call-overload]
            assert caught.value.body["param"] == param  # type: ignore[index]
        assert backend.calls == []
        # No "stream" support: the answer still streams, as one chunk.
        stream = client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "a b"}],
                                                stream=True)
        assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "a b"


def test_malformed_json_is_400_with_an_openai_error(echo: tuple[Running, EchoBackend]) -> None:
    reply = httpx.post(echo[0].v1 + "/chat/completions", content=b'{"messages": [', timeout=10)
    assert reply.status_code == 400
    assert reply.json()["error"]["code"] == "invalid_json"
    assert reply.headers["x-request-id"]


# -- images --------------------------------------------------------------------------------------


@pytest.mark.parametrize(("ext", "mime"), [(".png", "image/png"), (".jpg", "image/jpeg"), (".webp", "image/webp")])
def test_data_uri_images_reach_the_backend(echo: tuple[Running, EchoBackend], client: openai.OpenAI,
                                           ext: str, mime: str) -> None:
    ok, buf = cv2.imencode(ext, np.full((48, 64, 3), 200, np.uint8))
    reply = client.chat.completions.create(model="echo-1", messages=image_message(data_uri(buf.tobytes(), mime)))
    assert reply.choices[0].message.content == "What is in this image? | 1 images: 64x48"
    part = echo[1].calls[-1].images()[0]
    assert part.mime == mime and part.data == buf.tobytes()


@pytest.mark.parametrize(("url", "status", "code"), [
    (data_uri(b"GIF89a\x01\x00\x01\x00\x00\x00\x00;", "image/gif"), 415, "unsupported_image_type"),
    (data_uri(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40), 422, "invalid_image"),
    (data_uri(b"not an image at all", "image/jpeg"), 422, "invalid_image"),
    ("data:image/png;base64,@@@", 400, "invalid_image_url"),
    ("ftp://example.com/a.png", 400, "invalid_image_url"),
    ("file:///etc/passwd", 403, "url_not_allowed"),
    ("http://127.0.0.1:9/cat.png", 403, "url_not_allowed"),
    ("http://169.254.169.254/latest/meta-data", 403, "url_not_allowed"),
    ("http://[::1]/x.png", 403, "url_not_allowed"),
])
def test_bad_images_get_the_right_status(echo: tuple[Running, EchoBackend], url: str, status: int, code: str) -> None:
    reply = post(echo[0], {"messages": image_message(url)})
    assert reply.status_code == status, reply.text
    assert reply.json()["error"]["code"] == code
    assert reply.json()["error"]["param"] == "messages.0.content.1.image_url.url"


def test_image_too_large_is_413() -> None:
    big = solid_png(3000, 2000)
    with echo_service({"max-image-pixels": 1_000_000}) as (running, _):
        reply = post(running, {"messages": image_message(data_uri(big))})
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "image_too_large"
    with echo_service({"max-body-bytes": 4096}) as (running, _):
        reply = post(running, {"messages": image_message(data_uri(big))})
        assert reply.status_code == 413 and reply.json()["error"]["code"] == "request_too_large"


class _ImageHandler(BaseHTTPRequestHandler):
    routes: dict[str, tuple[int, dict[str, str], bytes]] = {}

    def do_GET(self) -> None:
        status, headers, body = self.routes.get(self.path, (404, {}, b"not found"))
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def image_server() -> Iterator[str]:
    png = solid_png(40, 30)
    _ImageHandler.routes = {
        "/cat.png": (200, {"Content-Type": "image/png"}, png),
        "/page.html": (200, {"Content-Type": "text/html"}, b"<html></html>"),
        "/moved": (302, {"Location": "/cat.png"}, b""),
        "/loop": (302, {"Location": "/loop"}, b""),
        "/big.png": (200, {"Content-Type": "image/png"}, solid_png(1200, 900, (1, 2, 3)) + b"\0" * 300_000),
    }
    server = ThreadingHTTPServer(("127.0.0.1", 0), _ImageHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_http_image_urls_are_fetched_when_private_addresses_are_allowed(image_server: str) -> None:
    with echo_service({"allow-private-urls": True, "max-image-bytes": 200_000}) as (running, backend):
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        reply = client.chat.completions.create(model="echo-1", messages=image_message(image_server + "/cat.png"))
        assert reply.choices[0].message.content == "What is in this image? | 1 images: 40x30"
        reply = client.chat.completions.create(model="echo-1", messages=image_message(image_server + "/moved"))
        assert reply.choices[0].message.content.endswith("40x30")
        for path, status in (("/page.html", 415), ("/missing.png", 400), ("/loop", 400), ("/big.png", 413)):
            assert post(running, {"messages": image_message(image_server + path)}).status_code == status, path


def test_file_urls_only_inside_allowed_directories(tmp_path: Path) -> None:
    allowed = tmp_path / "images"
    allowed.mkdir()
    (allowed / "a.png").write_bytes(solid_png(8, 6))
    (tmp_path / "secret.png").write_bytes(solid_png(8, 6))
    with echo_service({"allowed-file-dirs": str(allowed)}) as (running, _):
        ok = post(running, {"messages": image_message((allowed / "a.png").as_uri())})
        assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"].endswith("8x6")
        escape = (allowed / ".." / "secret.png").as_uri()
        assert post(running, {"messages": image_message(escape)}).status_code == 403
        assert post(running, {"messages": image_message((allowed / "none.png").as_uri())}).status_code == 400


# -- live sources ----------------------------------------------------------------------------------


def test_testpattern_stream_is_registered_listed_and_described(echo: tuple[Running, EchoBackend],
                                                              client: openai.OpenAI) -> None:
    running, backend = echo
    created = httpx.post(running.v1 + "/streams", json={"url": "testpattern", "id": "cam"}, timeout=30)
    assert created.status_code == 201, created.text
    assert httpx.post(running.v1 + "/streams", json={"url": "testpattern"}, timeout=30).status_code == 200
    listed = httpx.get(running.v1 + "/streams").json()["data"]
    assert [s["id"] for s in listed] == ["cam"] and listed[0]["state"] == "live"
    reply = client.chat.completions.create(model="echo-1", messages=image_message("stream://cam", "Describe."))
    assert reply.choices[0].message.content == "Describe. | 1 images: 640x480"
    assert backend.calls[-1].images()[0].image is not None
    jpeg = httpx.get(running.v1 + "/streams/cam/frame.jpg")
    assert jpeg.headers["content-type"] == "image/jpeg" and cv2.imdecode(
        np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR).shape == (480, 640, 3)
    # A video_url on a live source samples distinct frames.
    body = {"messages": [{"role": "user", "content": [{"type": "text", "text": "What happens?"},
                                                      {"type": "video_url", "video_url": {"url": "stream://cam"}}]}],
            "media_io_kwargs": {"video": {"num_frames": 3}}}
    reply = post(running, body)
    assert reply.status_code == 200, reply.text
    video = backend.calls[-1].videos()[0]
    assert len(video.frames) == 3 and not np.array_equal(video.frames[0], video.frames[2])
    assert httpx.delete(running.v1 + "/streams/cam").json() == {"id": "cam", "object": "stream", "deleted": True}
    assert httpx.get(running.v1 + "/streams").json()["data"] == []
    gone = post(running, {"messages": image_message("stream://cam")})
    assert gone.status_code == 404 and gone.json()["error"]["code"] == "stream_not_found"


@pytest.mark.parametrize("url", ["v4l2:///dev/video7", "csi://0"])
def test_cameras_that_cannot_open_give_a_clear_error(echo: tuple[Running, EchoBackend], url: str) -> None:
    reply = post(echo[0], {"messages": image_message(url), "max_tokens": 128})
    assert reply.status_code in (400, 422), reply.text
    error = reply.json()["error"]
    assert error["param"] == "messages.0.content.1.image_url.url" and len(error["message"]) > 20
    assert "Traceback" not in reply.text


def test_opening_sources_can_be_turned_off() -> None:
    with echo_service({"open-sources": False}) as (running, _):
        assert post(running, {"messages": image_message("rtsp://10.0.0.9/cam")}).status_code == 403
        assert httpx.post(running.v1 + "/streams", json={"url": "testpattern"}).status_code == 403


# -- video ---------------------------------------------------------------------------------------


def video_message(url: str) -> list[dict[str, object]]:
    return [{"role": "user", "content": [{"type": "text", "text": "What happens?"},
                                         {"type": "video_url", "video_url": {"url": url}}]}]


def test_video_files_go_to_video_backends_encoded_and_to_others_as_frames(tmp_path: Path) -> None:
    clip = make_video(tmp_path / "clip.mp4", frames=30, fps=10.0).read_bytes()
    url = data_uri(clip, "video/mp4")
    with echo_service() as (running, backend):
        body = {"messages": video_message(url), "media_io_kwargs": {"video": {"fps": 2.0}}}
        assert post(running, body).status_code == 200
        video = backend.calls[-1].videos()[0]
        assert video.data == clip and video.fps == 2.0
        assert backend.calls[-1].params.extra["media_io_kwargs"] == {"video": {"fps": 2.0}}
        too_many = post(running, {"messages": video_message(url), "media_io_kwargs": {"video": {"num_frames": 99}}})
        assert too_many.status_code == 400 and too_many.json()["error"]["param"] == "media_io_kwargs.video.num_frames"
        bad = post(running, {"messages": video_message(data_uri(b"\0" * 2000, "video/mp4"))})
        assert bad.status_code == 422
    with echo_service(supports=frozenset({"images", "stream", "max_tokens"})) as (running, backend):
        body = {"messages": video_message(url), "media_io_kwargs": {"video": {"num_frames": 4}}}
        reply = post(running, body)
        assert reply.status_code == 200, reply.text
        images = backend.calls[-1].images()
        assert len(images) == 4 and all(isinstance(p, ImagePart) for p in images)
        means = [float(p.image.mean()) for p in images if p.image is not None]
        assert means == sorted(means) and means[0] < means[-1]  # frames in order, spread over the clip
        assert not any(isinstance(p, VideoPart) for m in backend.calls[-1].messages for p in m.parts())


# -- backend failures, limits, disconnects ---------------------------------------------------------


@pytest.mark.parametrize(("fail", "status", "sdk_error"), [
    (BackendError("model 'x' not found; ollama pull x", kind="model_not_found"), 404, openai.NotFoundError),
    (BackendError("cannot reach http://127.0.0.1:1", kind="unreachable"), 503, openai.InternalServerError),
    (BackendError("upstream 500", kind="server"), 502, openai.InternalServerError),
    (BackendError("slow down", kind="rate_limited", retry_after=3), 429, openai.RateLimitError),
])
def test_backend_failures_map_to_status_codes(fail: BaseException, status: int, sdk_error: type[Exception]) -> None:
    with echo_service(fail=fail) as (running, _):
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        with pytest.raises(sdk_error) as caught:
            client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}])
        assert caught.value.status_code == status  # type: ignore[attr-defined]
        with pytest.raises(sdk_error):  # streaming requests fail before the stream starts
            client.chat.completions.create(model="echo-1", messages=[{"role": "user", "content": "hi"}], stream=True)


def test_backend_timeout_is_504() -> None:
    with echo_service({"request-timeout": 0.3}, delay=5) as (running, backend):
        reply = post(running, {"messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 504 and reply.json()["error"]["code"] == "backend_timeout"
        assert _eventually(lambda: backend.cancelled == 1)


def test_mid_stream_failure_is_an_sse_error_event() -> None:
    with echo_service(fail=BackendError("CUDA error", kind="server"), fail_after=2) as (running, _):
        client = openai.OpenAI(base_url=running.v1, api_key="x", max_retries=0)
        seen = []
        with pytest.raises(openai.APIError, match="CUDA error"):
            for chunk in client.chat.completions.create(
                    model="echo-1", messages=[{"role": "user", "content": "one two three four"}], stream=True):
                seen.append(chunk.choices[0].delta.content or "")
        assert "".join(seen) == "one two"


def test_requests_beyond_concurrency_and_queue_get_429() -> None:
    with echo_service({"max-concurrency": 1, "max-queue": 1, "queue-timeout": 30}, delay=0.6) as (running, backend):
        results: list[int] = []

        def call() -> None:
            results.append(post(running, {"messages": [{"role": "user", "content": "hi"}]}).status_code)

        threads = [threading.Thread(target=call) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert sorted(results) == [200, 200, 429, 429]
        assert backend.max_running == 1


def test_client_disconnect_cancels_the_backend_request() -> None:
    with echo_service(delay=10) as (running, backend):
        with pytest.raises(httpx.ReadTimeout):
            post(running, {"messages": [{"role": "user", "content": "hi"}]}, timeout=0.5)
        assert _eventually(lambda: backend.cancelled == 1)
        with pytest.raises(httpx.ReadTimeout), httpx.stream(
                "POST", running.v1 + "/chat/completions", timeout=0.5,
                json={"messages": [{"role": "user", "content": "hi"}], "stream": True}) as reply:
            reply.read()
        assert _eventually(lambda: backend.cancelled == 2)


def test_client_disconnect_mid_stream_cancels_the_backend_stream() -> None:
    with echo_service(chunk_delay=0.5) as (running, backend):
        with httpx.stream("POST", running.v1 + "/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "one two three four five six"}],
                                "stream": True}) as reply:
            lines = reply.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # the response has started
        assert _eventually(lambda: backend.cancelled == 1)


def test_request_timeout_mid_stream_is_an_sse_error_event() -> None:
    with echo_service({"request-timeout": 0.5}, chunk_delay=0.3) as (running, backend):
        with httpx.stream("POST", running.v1 + "/chat/completions", timeout=10,
                          json={"messages": [{"role": "user", "content": "one two three four five"}],
                                "stream": True}) as reply:
            events = [json.loads(line[5:]) for line in reply.iter_lines()
                      if line.startswith("data:") and line != "data: [DONE]"]
        assert reply.status_code == 200
        assert events[-1]["error"]["code"] == "backend_timeout"
        assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1]) == "one"
        assert _eventually(lambda: backend.cancelled == 1)


def _eventually(check: object, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():  # type: ignore[operator]
            return True
        time.sleep(0.02)
    return False


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    assert [m.id for m in client.models.list()] == ["echo-1", "echo-2"]
    assert client.models.retrieve("echo-2").id == "echo-2"
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("nope")
