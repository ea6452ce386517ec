"""The ``nim`` / ``openai`` backend and describer: any OpenAI-compatible chat server.

Speaks ``/v1/chat/completions`` the way NVIDIA NIM for VLMs, vLLM, llama.cpp's
server, LM Studio and OpenAI take it: images as ``image_url`` data URIs (with
``detail``), short clips as ``video_url`` MP4 data URIs with NIM's
``media_io_kwargs``, SSE streaming with ``stream_options.include_usage``,
``response_format`` json_schema, vLLM's sampling extras (``top_k``, ``min_p``,
``repetition_penalty``), and NIM's ``/think`` system-prompt switch for
reasoning models; the model's ``reasoning_content`` (or ``reasoning``) comes
back as ``ChatResult.reasoning``, never mixed into the answer. Models come from
``/v1/models`` (the first one is the default, discovered at start and again
when the server comes back), health from NIM's ``/v1/health/ready``. Both error shapes are read:
``{"error": {...}}`` and vLLM's older ``{"object": "error", ...}``.

The API key comes from the ``api-key`` option or the environment
(``NIM_API_KEY``, ``NGC_API_KEY``, ``OPENAI_API_KEY``) and is sent as a bearer token.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import httpx

from framelens import (
    BackendError,
    ChatChunk,
    ChatMessage,
    ChatResult,
    CommaList,
    Context,
    Field,
    GenerationParams,
    Health,
    ImagePart,
    ModelInfo,
    RegisterFn,
    TextPart,
    Usage,
    VideoPart,
    VLMBackend,
    VLMTimings,
)

from .describer import DescriberOptions
from .media import data_uri, encode_mp4, image_payload
from .pool import HttpBackendOptions, ServerPool, parse_json_error, register_pool_metrics
from .text import ThinkFilter
from .transport import iter_lines

__all__ = ["NimDescriberOptions", "NimOptions", "OpenAICompatBackend", "OpenAIDescriberOptions", "OpenAIOptions"]

log = logging.getLogger("framelens.backend.openai")

NIM_KEY_VARS = ("NIM_API_KEY", "NGC_API_KEY", "OPENAI_API_KEY")
OPENAI_KEY_VARS = ("OPENAI_API_KEY", "NIM_API_KEY", "NGC_API_KEY")


class NimOptions(HttpBackendOptions):
    """Options of the ``nim`` backend (``-c nim-KEY=VALUE``)."""

    url: CommaList = Field(default_factory=lambda: ["http://localhost:8000/v1"],
                           description="Base URL ending in /v1; several, comma-separated, spread the load "
                                       "and fail over")
    model: str | None = Field(None, description="Model id (default: the first model the server lists)")
    think: bool | None = Field(None, description="Reasoning models: true adds /think, false /no_think to the "
                                                 "system prompt (unset: leave it alone)")


class OpenAIOptions(NimOptions):
    """Options of the ``openai`` backend: like ``nim``, but the URL defaults to ``$OPENAI_BASE_URL``."""

    url: CommaList = Field(
        default_factory=lambda: [os.environ.get("OPENAI_BASE_URL") or "http://localhost:8000/v1"],
        description="Base URL ending in /v1 (default $OPENAI_BASE_URL or http://localhost:8000/v1); several, "
                    "comma-separated, spread the load and fail over")


class OpenAICompatBackend(VLMBackend):
    """An OpenAI-compatible chat server (see the module docstring).

    ``GenerationParams.extra`` keys sent as top-level request fields:
    ``media_io_kwargs``, ``mm_processor_kwargs``, ``nvext``, ``reasoning_effort``;
    ``json_schema_name`` names the schema of ``response_format`` (default
    ``response``); ``think`` (Ollama's spelling) is ``true``/``false`` for the
    ``/think``/``/no_think`` switch of this request, or an effort
    (``low``/``medium``/``high``) sent as ``reasoning_effort``.
    """

    supports = frozenset({
        "images", "video", "stream", "max_tokens", "temperature", "top_p", "seed", "stop", "json_schema",
        "json_object", "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
        "media_io_kwargs", "mm_processor_kwargs", "nvext", "reasoning_effort", "json_schema_name", "think",
    })
    _passthrough = ("media_io_kwargs", "mm_processor_kwargs", "nvext", "reasoning_effort")
    _sampling = ("temperature", "top_p", "seed", "top_k", "min_p", "repetition_penalty", "presence_penalty",
                 "frequency_penalty")

    def __init__(self, options: NimOptions, *, name: str = "nim", service: str = "NIM",
                 key_vars: Sequence[str] = NIM_KEY_VARS) -> None:
        self.name = name
        self.service = service
        self.options = options
        key = options.api_key.get_secret_value() if options.api_key is not None else None
        self.key_source = f"-c {name}-api-key" if key else None
        for var in key_vars:
            if key:
                break
            if os.environ.get(var):
                key, self.key_source = os.environ[var], f"${var}"
        headers = {"Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        self.pool = ServerPool(
            service, options.url, parse_error=self._error,
            unreachable_hint=f"Is the server running and does the URL end in /v1? Set it with -c {name}-url=...",
            headers=headers, timeout=options.timeout, connect_timeout=options.connect_timeout,
            retries=options.retries, max_in_flight=options.max_in_flight, probe_path="/models",
        )
        self._listed_model: str | None = None
        self._was_down = False

    @property
    def default_model(self) -> str | None:
        return self.options.model or self._listed_model

    @property
    def request_timeout(self) -> float:
        return self.options.timeout

    # -- errors ------------------------------------------------------------------------------

    def _error(self, status: int, body: bytes, url: str) -> BackendError:
        message = parse_json_error(body)
        param = _error_param(body)
        who = f"{self.service} at {url}"
        lowered = message.lower()
        if status in (401, 403):
            keys = ", ".join(f"${v}" for v in NIM_KEY_VARS)
            how = (f"the key from {self.key_source}" if self.key_source
                   else f"the request without an API key (set -c {self.name}-api-key or {keys})")
            return BackendError(f"{who} refused {how} (HTTP {status}): {message}", kind="auth", status=status)
        if status == 404:
            if "model" in lowered:
                return BackendError(f"{who} does not serve that model: {message} (GET {url}/models lists the "
                                    f"served models; set -c {self.name}-model=ID)", kind="model_not_found",
                                    status=404, param="model")
            return BackendError(f"{who} has no such endpoint (HTTP 404: {message}); does the URL end in /v1?",
                                kind="bad_request", status=404)
        if status == 429:
            return BackendError(f"{who} is rate limiting: {message}", kind="rate_limited", status=429)
        if status == 503:
            return BackendError(f"{who} is not ready or overloaded: {message}", kind="rate_limited", status=503)
        if status in (400, 413, 415, 422):
            unsupported = "not supported" in lowered or "does not support" in lowered
            return BackendError(f"{who} rejected the request: {message}",
                                kind="unsupported" if unsupported else "bad_request", status=status, param=param)
        return BackendError(f"{who} failed (HTTP {status}): {message}", kind="server", status=status)

    # -- requests ----------------------------------------------------------------------------

    async def resolve_model(self, params: GenerationParams) -> str:
        """The model to ask: the request's, the option's, or the first one the server lists."""
        model = params.model or self.default_model
        if model:
            return model
        if not await self.models() or self._listed_model is None:
            raise BackendError(f"{self.service} at {self.pool.urls[0]} lists no models; set -c {self.name}-model=ID",
                               kind="model_not_found", param="model")
        log.info("%s: using model %s (the first one %s lists)", self.name, self._listed_model, self.service)
        return self._listed_model

    def _content(self, message: ChatMessage, body: dict[str, Any]) -> str | list[dict[str, Any]]:
        if isinstance(message.content, str):
            return message.content
        parts: list[dict[str, Any]] = []
        for part in message.content:
            if isinstance(part, TextPart):
                parts.append({"type": "text", "text": part.text})
            elif isinstance(part, ImagePart):
                data, mime = image_payload(part)
                image: dict[str, Any] = {"url": data_uri(data, mime)}
                if part.detail is not None:
                    image["detail"] = part.detail
                parts.append({"type": "image_url", "image_url": image})
            elif isinstance(part, VideoPart):
                clip = part.data if part.data is not None else encode_mp4(part.frames, part.fps or 2.0)
                parts.append({"type": "video_url", "video_url": {"url": data_uri(clip, "video/mp4")}})
                sampling = {"fps": part.fps} if part.fps is not None else (
                    {"num_frames": part.num_frames} if part.num_frames is not None else None)
                if sampling is not None:
                    body.setdefault("media_io_kwargs", {"video": sampling})
        return parts

    def _payload(self, messages: Sequence[ChatMessage], params: GenerationParams, model: str,
                 stream: bool) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model}
        for key in self._passthrough:
            if key in params.extra:
                body[key] = params.extra[key]
        out = [{"role": m.role, "content": self._content(m, body)} for m in messages]
        think = self.options.think
        asked = params.extra.get("think")
        if isinstance(asked, bool):
            think = asked
        elif isinstance(asked, str) and asked:
            body["reasoning_effort"] = asked
        if think is not None:
            switch = "/think" if think else "/no_think"
            if out and out[0]["role"] == "system" and isinstance(out[0]["content"], str):
                out[0]["content"] = f"{switch}\n{out[0]['content']}"
            else:
                out.insert(0, {"role": "system", "content": switch})
        body["messages"] = out
        if params.max_tokens is not None:
            body["max_tokens"] = params.max_tokens
        for key in self._sampling:
            if getattr(params, key) is not None:
                body[key] = getattr(params, key)
        if params.stop:
            body["stop"] = list(params.stop)
        if params.json_schema is not None:
            name = str(params.extra.get("json_schema_name") or "response")
            body["response_format"] = {"type": "json_schema",
                                       "json_schema": {"name": name, "schema": dict(params.json_schema)}}
        elif params.json_object:
            body["response_format"] = {"type": "json_object"}
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return body

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        started = time.monotonic()
        model = await self.resolve_model(params)
        body = self._payload(messages, params, model, stream=False)
        data = await self.pool.request("POST", "/chat/completions", json=body, timeout=params.timeout)
        try:
            choice = data["choices"][0]
            content = choice["message"].get("content") or ""
            reasoning = _reasoning(choice["message"])
        except (KeyError, IndexError, TypeError, AttributeError):
            raise BackendError(f"{self.service} answered with an unexpected body: {str(data)[:200]}",
                               kind="server") from None
        think = ThinkFilter()
        text = think.feed(str(content)) + think.flush()
        return ChatResult(text=text, finish_reason=str(choice.get("finish_reason") or "stop"),
                          usage=_usage(data.get("usage")), timings=VLMTimings(total_s=time.monotonic() - started),
                          model=str(data.get("model") or model), reasoning=reasoning)

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        started = time.monotonic()
        model = await self.resolve_model(params)
        body = self._payload(messages, params, model, stream=True)
        first: float | None = None
        finish: str | None = None
        usage = Usage()
        think = ThinkFilter()
        done = False
        async with self.pool.stream("POST", "/chat/completions", json=body, timeout=params.timeout) as response:
            url = str(response.request.url).rsplit("/chat/completions", 1)[0]
            try:
                async for line in iter_lines(response):
                    if not line.startswith("data:"):
                        continue  # blank separators, ": keep-alive" comments, event: lines
                    payload = line[5:].strip()
                    if payload == "[DONE]":
                        done = True
                        break
                    try:
                        data = json.loads(payload)
                    except ValueError:
                        data = None
                    if not isinstance(data, dict):
                        raise BackendError(f"{self.service} sent an event that is not a JSON object: "
                                           f"{payload[:200]!r}", kind="server")
                    if "error" in data or data.get("object") == "error":
                        # Headers (and the 200) are already out: the error comes as an event.
                        raise BackendError(f"{self.service} at {url} failed mid-answer: "
                                           f"{parse_json_error(payload.encode())}", kind="server")
                    if data.get("usage"):
                        usage = _usage(data["usage"])
                    model = str(data.get("model") or model)
                    for choice in data.get("choices") or []:
                        delta = choice.get("delta") or {}
                        text = think.feed(str(delta.get("content") or ""))
                        reasoning = _reasoning(delta)
                        if choice.get("finish_reason"):
                            finish = str(choice["finish_reason"])
                        if text or reasoning:
                            if first is None:
                                first = time.monotonic() - started
                            yield ChatChunk(text=text, model=model, reasoning=reasoning)
            except httpx.HTTPError as exc:
                raise self.pool.translate(exc, url) from None
        if not done and finish is None:
            raise BackendError(f"{self.service} ended the stream before it finished the answer", kind="server")
        rest = think.flush()
        yield ChatChunk(text=rest, finish_reason=finish or "stop", usage=usage, model=model,
                        timings=VLMTimings(total_s=time.monotonic() - started, first_token_s=first))

    # -- models and health -------------------------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        data = await self.pool.request("GET", "/models")
        items = data.get("data") if isinstance(data, dict) else None
        if not isinstance(items, list):
            raise BackendError(f"{self.service} answered /models with an unexpected body: {str(data)[:200]}",
                               kind="server")
        models = [ModelInfo(id=str(m["id"]), owned_by=str(m.get("owned_by") or "system"),
                            created=int(m.get("created") or 0)) for m in items if isinstance(m, dict) and "id" in m]
        ids = [m.id for m in models]
        if ids and self._listed_model not in ids:
            self._listed_model = ids[0]  # becomes default_model when no model option is set
        return models

    async def discover_default_model(self) -> str | None:
        if self.default_model is None:
            try:
                await self.models()
            except BackendError as exc:
                log.info("%s: no default model yet (%s)", self.name, exc)
        return self.default_model

    async def health(self) -> Health:
        health = await self._health()
        if not health.ready:
            self._was_down = True
        elif self._was_down or self.default_model is None:
            # Back up: the server may have restarted with another model.
            self._was_down = False
            if self.options.model is None:
                try:
                    await self.models()
                except BackendError as exc:
                    return Health(False, str(exc))
        return health

    async def _health(self) -> Health:
        try:
            data = await self.pool.request("GET", "/health/ready", timeout=min(10.0, self.options.timeout))
            return Health(True, str((data or {}).get("message") or "ready"))
        except BackendError as exc:
            if exc.status != 404:
                return Health(False, str(exc))
        return await super().health()  # not a NIM: ready if it lists its models

    async def aclose(self) -> None:
        await self.pool.aclose()


def _usage(raw: Any) -> Usage:
    if not isinstance(raw, dict):
        return Usage()
    return Usage(prompt_tokens=int(raw.get("prompt_tokens") or 0),
                 completion_tokens=int(raw.get("completion_tokens") or 0))


def _reasoning(message: Any) -> str:
    """vLLM/NIM's ``reasoning_content`` (newer vLLM: ``reasoning``) of a message or delta."""
    if not isinstance(message, dict):
        return ""
    value = message.get("reasoning_content") or message.get("reasoning")
    return value if isinstance(value, str) else ""


def _error_param(body: bytes) -> str | None:
    try:
        data = json.loads(body)
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    error = data.get("error")
    inner: dict[str, Any] = error if isinstance(error, dict) else data
    param = inner.get("param")
    return str(param) if param else None


# -- registration ------------------------------------------------------------------------------


class NimDescriberOptions(DescriberOptions, NimOptions):
    """Options of the ``nim`` describer: the backend's plus what and how often to ask."""


class OpenAIDescriberOptions(OpenAIOptions, NimDescriberOptions):
    """Options of the ``openai`` describer."""


def _backend_factory(name: str) -> Any:
    service, key_vars = ("NIM", NIM_KEY_VARS) if name == "nim" else ("OpenAI-compatible server", OPENAI_KEY_VARS)

    def make(options: NimOptions) -> OpenAICompatBackend:
        return OpenAICompatBackend(options, name=name, service=service, key_vars=key_vars)

    return make


def register(register: RegisterFn) -> None:
    nim, openai = _backend_factory("nim"), _backend_factory("openai")

    def with_metrics(make: Callable[[Any], OpenAICompatBackend]) -> Callable[..., OpenAICompatBackend]:
        def create(options: Any, context: Context, id: str) -> OpenAICompatBackend:
            backend = make(options)
            register_pool_metrics(context, id, backend.pool)
            return backend

        return create

    register("nim", with_metrics(nim), options=NimOptions,
             help="NVIDIA NIM for VLMs (/v1/chat/completions, video clips, /think)")
    register("openai", with_metrics(openai), options=OpenAIOptions,
             help="Any OpenAI-compatible server: vLLM, llama.cpp, LM Studio, OpenAI")
