"""A protocol-faithful fake of an OpenAI-compatible VLM server: NVIDIA NIM for VLMs,
vLLM, llama.cpp's server, OpenAI itself.

Endpoints: ``POST /v1/chat/completions``, ``GET /v1/models``,
``GET /v1/health/ready`` and ``/v1/health/live`` (NIM). Requests are checked
like vLLM/NIM check them:

- strict JSON; ``messages`` roles and content parts (``text``, ``image_url``,
  ``video_url``) are validated; images must be ``data:image/...;base64,`` URIs
  of decodable JPEG/PNG/WebP (http URLs cannot be fetched here and are a 400);
  ``detail`` must be ``low``/``high``/``auto``; videos must be decodable MP4
  data URIs, at most one per request;
- ``max_tokens``/``max_completion_tokens``, ``temperature``, ``top_p``,
  vLLM's ``top_k``, ``min_p`` and ``repetition_penalty`` (ranges), ``stream``,
  ``stream_options`` (only with ``stream``), ``response_format``
  (``json_schema`` needs ``name`` and ``schema``) and ``media_io_kwargs``
  (``fps`` or ``num_frames``, not both, not more frames than the clip has);
- an unknown model is a 404; a wrong or missing bearer token (when
  ``api_key`` is set) a 401.

Errors use ``error_style``: ``"openai"`` gives ``{"error": {...}}`` (OpenAI,
newer vLLM), ``"vllm"`` gives the legacy top-level ``{"object": "error", ...}``.
Streaming is SSE: a role chunk, content deltas, a finish chunk, a usage chunk
with empty ``choices`` when ``stream_options.include_usage`` is set, then
``data: [DONE]``. A system prompt containing ``/think`` makes the model
"reason" (``reasoning``, a text) into ``reasoning_content`` first (vLLM's
reasoning parser shape).

Knobs: ``models``, ``reply`` (text or ``fn(body, images, videos)``), ``reasoning``,
``token_delay``, ``stream_error_after``, ``drop_after``, ``ready``,
``accept_video``, ``api_key``, ``error_style``, ``strict_fields`` (reject
unknown top-level fields like OpenAI does; vLLM ignores them), plus the
scripted faults of :class:`~fakes.http.FakeHTTPServer`.

Run it on its own: ``PYTHONPATH=tests python -m fakes.openai_server --port 8000``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import numpy as np

from ._openai_checks import KNOWN_FIELDS, ApiError, b64, check_media_kwargs, check_response_format
from ._vlm import (
    DecodedVideo,
    ReplyFn,
    decode_image_bytes,
    decode_video_bytes,
    default_reply,
    instance_for_schema,
    tokens,
)
from .http import DROP, FakeHTTPServer, RecordedRequest, Reply, StrictJSONError, _Drop, serve_forever, strict_json

__all__ = ["KNOWN_FIELDS", "FakeOpenAI"]

_IMAGE_URI = re.compile(r"^data:image/(jpeg|jpg|png|webp);base64,(.*)$", re.S)
_VIDEO_URI = re.compile(r"^data:video/(mp4|webm|quicktime);base64,(.*)$", re.S)
IMAGE_TOKENS = 256
"""Prompt tokens the fake counts per image (per video frame: a quarter of it)."""


class FakeOpenAI(FakeHTTPServer):
    """A fake OpenAI-compatible server. Its base URL for clients is :attr:`base_url` (``.../v1``)."""

    def __init__(
        self,
        *,
        models: list[str] | None = None,
        reply: str | ReplyFn = default_reply,
        token_delay: float = 0.0,
        api_key: str | None = None,
        error_style: str = "openai",
        accept_video: bool = True,
        strict_fields: bool = False,
        port: int = 0,
        delay: float = 0.0,
    ) -> None:
        super().__init__(port=port, delay=delay)
        self.models = list(models if models is not None else ["nvidia/nemotron-nano-12b-v2-vl"])
        self.reply = reply
        self.token_delay = token_delay
        self.api_key = api_key
        self.error_style = error_style
        self.accept_video = accept_video
        self.strict_fields = strict_fields
        self.ready = True
        self.reasoning = "Let me look at the picture carefully."
        self.stream_error_after: int | None = None
        self.stream_error = "CUDA error: an illegal memory access was encountered"
        self.drop_after: int | None = None
        self.images: list[np.ndarray] = []
        self.videos: list[DecodedVideo] = []

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``, what OpenAI clients take as ``base_url``."""
        return self.url + "/v1"

    def error_body(self, message: str, status: int, param: str | None = None,
                   type_: str = "BadRequestError") -> dict[str, Any]:
        """An error body in this server's ``error_style``."""
        if self.error_style == "vllm":
            return {"object": "error", "message": message, "type": type_, "param": param, "code": status}
        return {"error": {"message": message, "type": type_, "param": param, "code": status}}

    # -- routing ----------------------------------------------------------------------------

    async def handle(self, request: RecordedRequest) -> Reply | _Drop:
        try:
            if request.path == "/v1/health/ready" and request.method == "GET":
                if self.ready:
                    return Reply.json({"object": "health.response", "message": "Service is ready."})
                return Reply.json({"object": "health.response", "message": "Service is not ready."}, 503)
            if request.path == "/v1/health/live" and request.method == "GET":
                return Reply.json({"object": "health.response", "message": "Service is live."})
            self._check_auth(request)
            if request.path == "/v1/models" and request.method == "GET":
                return self._models()
            if request.path == "/v1/chat/completions" and request.method == "POST":
                return await self._chat(request)
            if request.path in ("/v1/models", "/v1/chat/completions"):
                raise ApiError("Method Not Allowed", 405)
            raise ApiError("Not Found", 404)
        except ApiError as exc:
            return Reply.json(self.error_body(str(exc), exc.status, exc.param, exc.type), exc.status)

    def _check_auth(self, request: RecordedRequest) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        if given != f"Bearer {self.api_key}":
            raise ApiError("Incorrect API key provided." if given else "You didn't provide an API key.",
                            401, type_="invalid_request_error")

    def _models(self) -> Reply:
        now = int(time.time())
        data = [{"id": m, "object": "model", "created": now, "owned_by": "system", "root": m,
                 "parent": None, "max_model_len": 16384,
                 "permission": [{"id": f"modelperm-{uuid.uuid4().hex}", "object": "model_permission",
                                 "created": now, "allow_sampling": True, "allow_view": True,
                                 "organization": "*", "is_blocking": False}]} for m in self.models]
        return Reply.json({"object": "list", "data": data})

    # -- validation -------------------------------------------------------------------------

    def _parse(self, request: RecordedRequest) -> dict[str, Any]:
        try:
            body = strict_json(request.body)
        except StrictJSONError as exc:
            raise ApiError(f"JSON decode error: {exc}") from None
        if not isinstance(body, dict):
            raise ApiError("Input should be a valid dictionary")
        if self.strict_fields:
            for key in body:
                if key not in KNOWN_FIELDS:
                    raise ApiError(f"Unrecognized request argument supplied: {key}", param=key)
        model = body.get("model")
        if not isinstance(model, str):
            raise ApiError("Field required: model", param="model")
        if model not in self.models:
            raise ApiError(f"The model `{model}` does not exist.", 404, param="model")
        for key in ("max_tokens", "max_completion_tokens"):
            v = body.get(key)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise ApiError(f"{key} must be at least 1, got {v}.", param=key)
        t = body.get("temperature")
        if t is not None and (isinstance(t, bool) or not isinstance(t, (int, float)) or not 0 <= t <= 2):
            raise ApiError(f"temperature must be in [0, 2], got {t}.", param="temperature")
        k = body.get("top_k")
        if k is not None and (isinstance(k, bool) or not isinstance(k, int) or (k < 1 and k not in (-1, 0))):
            raise ApiError(f"top_k must be 0, -1 (disable), or at least 1, got {k}.", param="top_k")
        for key, low, high in (("min_p", 0, 1), ("top_p", 0, 1), ("repetition_penalty", 0, None)):
            v = body.get(key)
            if v is None:
                continue
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < low or (high is not None and v > high) \
                    or (key == "repetition_penalty" and v == 0):
                raise ApiError(f"{key} is out of range, got {v}.", param=key)
        if "stream" in body and not isinstance(body["stream"], bool):
            raise ApiError("Input should be a valid boolean", param="stream")
        if body.get("stream_options") is not None:
            if not body.get("stream"):
                raise ApiError("Stream options can only be defined when `stream=True`.", param="stream_options")
            if not isinstance(body["stream_options"], dict):
                raise ApiError("Input should be a valid dictionary", param="stream_options")
        check_response_format(body.get("response_format"))
        return body

    def _media(self, body: dict[str, Any]) -> tuple[list[np.ndarray], list[DecodedVideo], int, bool]:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError("messages must be a non-empty list", param="messages")
        images: list[np.ndarray] = []
        videos: list[DecodedVideo] = []
        words = 0
        think = False
        for i, m in enumerate(messages):
            if not isinstance(m, dict) or m.get("role") not in ("system", "user", "assistant", "tool"):
                raise ApiError(f"messages[{i}].role must be system, user, assistant or tool",
                                param=f"messages[{i}].role")
            content = m.get("content")
            if isinstance(content, str):
                words += len(content.split())
                think = think or (m["role"] == "system" and "/think" in content.split())
                continue
            if not isinstance(content, list):
                raise ApiError(f"messages[{i}].content must be a string or a list of parts",
                                param=f"messages[{i}].content")
            for j, part in enumerate(content):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind == "text" and isinstance(part.get("text"), str):
                    words += len(part["text"].split())
                    think = think or (m["role"] == "system" and "/think" in part["text"].split())
                elif kind == "image_url":
                    images.append(self._image(part.get("image_url"), where))
                elif kind == "video_url":
                    videos.append(self._video(part.get("video_url"), where))
                else:
                    raise ApiError(f"{where}: unknown content part type {kind!r}", param=where)
        if len(videos) > 1:
            raise ApiError("At most 1 video(s) may be provided in one prompt.", param="messages")
        check_media_kwargs(body.get("media_io_kwargs"), videos)
        return images, videos, words, think

    def _image(self, spec: Any, where: str) -> np.ndarray:
        if isinstance(spec, str):
            spec = {"url": spec}
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ApiError(f"{where}.image_url.url is required", param=where)
        if spec.get("detail") not in (None, "low", "high", "auto"):
            raise ApiError(f"{where}.image_url.detail must be low, high or auto", param=where)
        url = spec["url"]
        if url.startswith(("http://", "https://")):
            raise ApiError(f"{where}: cannot fetch image URL {url} (no network)", param=where)
        m = _IMAGE_URI.match(url)
        if not m:
            raise ApiError(f"{where}: invalid image: expected a data:image/(jpeg|png|webp);base64, URI",
                            param=where)
        image = decode_image_bytes(b64(m.group(2), where))
        if image is None:
            raise ApiError(f"{where}: cannot identify image file", param=where)
        return image

    def _video(self, spec: Any, where: str) -> DecodedVideo:
        if not self.accept_video:
            raise ApiError("video input is not supported by this model", param=where)
        if not isinstance(spec, dict) or not isinstance(spec.get("url"), str):
            raise ApiError(f"{where}.video_url.url is required", param=where)
        m = _VIDEO_URI.match(spec["url"])
        if not m:
            raise ApiError(f"{where}: invalid video: expected a data:video/mp4;base64, URI", param=where)
        video = decode_video_bytes(b64(m.group(2), where))
        if video is None:
            raise ApiError(f"{where}: cannot decode video", param=where)
        return video

    # -- inference --------------------------------------------------------------------------

    async def _chat(self, request: RecordedRequest) -> Reply:
        body = self._parse(request)
        images, videos, words, think = self._media(body)
        self.images += images
        self.videos += videos
        text = self.reply if isinstance(self.reply, str) else self.reply(body, images, videos)
        rf = body.get("response_format") or {}
        if rf.get("type") == "json_schema":
            text = json.dumps(instance_for_schema(rf["json_schema"]["schema"], text))
        elif rf.get("type") == "json_object":
            text = json.dumps({"response": text})
        pieces = tokens(text)
        finish = "stop"
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if isinstance(limit, int) and limit < len(pieces):
            pieces, finish = pieces[:limit], "length"
        reasoning = tokens(self.reasoning) if think else []
        prompt_tokens = words + 5 + IMAGE_TOKENS * len(images) + sum(IMAGE_TOKENS // 4 * len(v.frames)
                                                                      for v in videos)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(pieces) + len(reasoning),
                 "total_tokens": prompt_tokens + len(pieces) + len(reasoning), "prompt_tokens_details": None}
        ident = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        model = body["model"]
        if not body.get("stream"):
            if self.stream_error_after is not None:
                return Reply.json(self.error_body(self.stream_error, 500, type_="InternalServerError"), 500)
            message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces), "tool_calls": []}
            message["reasoning_content"] = "".join(reasoning) if reasoning else None
            return Reply.json({
                "id": ident, "object": "chat.completion", "created": created, "model": model,
                "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish,
                             "stop_reason": None}],
                "usage": usage, "prompt_logprobs": None,
            })
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))

        def event(choices: list[dict[str, Any]], use: Any = None) -> bytes:
            obj: dict[str, Any] = {"id": ident, "object": "chat.completion.chunk", "created": created,
                                   "model": model, "choices": choices}
            if include_usage:
                obj["usage"] = use
            return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"

        def delta(d: dict[str, Any], finish_reason: str | None = None) -> list[dict[str, Any]]:
            return [{"index": 0, "delta": d, "logprobs": None, "finish_reason": finish_reason}]

        async def events() -> AsyncIterator[bytes | _Drop]:
            yield event(delta({"role": "assistant", "content": ""}))
            for piece in reasoning:
                yield event(delta({"reasoning_content": piece}))
            for i, piece in enumerate(pieces):
                if i and self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if self.drop_after is not None and i >= self.drop_after:
                    yield DROP
                    return
                if self.stream_error_after is not None and i >= self.stream_error_after:
                    err = self.error_body(self.stream_error, 500, type_="InternalServerError")
                    yield b"data: " + json.dumps(err, separators=(",", ":")).encode() + b"\n\n"
                    yield b"data: [DONE]\n\n"
                    return
                yield event(delta({"content": piece}))
            yield event(delta({}, finish))
            if include_usage:
                yield event([], usage)
            yield b"data: [DONE]\n\n"

        return Reply(200, {"Content-Type": "text/event-stream; charset=utf-8", "Cache-Control": "no-cache"},
                     stream=events())


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A fake OpenAI-compatible / NIM server for tests and benchmarks")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--model", action="append", default=[], help="served model id (repeatable)")
    parser.add_argument("--api-key")
    parser.add_argument("--error-style", choices=("openai", "vllm"), default="openai")
    args = parser.parse_args()
    server = FakeOpenAI(models=args.model or None, token_delay=args.token_delay, api_key=args.api_key,
                        error_style=args.error_style, port=args.port, delay=args.delay)
    serve_forever(server, "fake OpenAI-compatible server")


if __name__ == "__main__":
    main()
