"""Ollama's native API (``/api/chat``, ``/api/generate``, ``/api/tags``, ``/api/version``) over any backend.

So Ollama clients, wasmVision's ``ollama`` processor among them, can use
framelens as their server. ``images`` entries are raw base64 (a data URI is
accepted too) or, as a framelens extension, a live source (``stream://main``,
``v4l2:///dev/video0``). Streaming is NDJSON, as Ollama's; errors are Ollama's
``{"error": "..."}`` with the same status codes as the OpenAI endpoints. The
model's reasoning comes back as ``thinking``. ``/api/show``, ``/api/ps`` and
the routes framelens does not serve are in :mod:`.compat_ollama_info`.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime, timezone
from typing import Any, Literal

from pydantic import Field
from starlette.requests import Request
from starlette.responses import Response

from framelens import ChatMessage, ContentPart, GenerationParams, TextPart, Usage, VLMTimings, __version__

from .backend_stream import BackendStream, open_backend_stream
from .compat_ollama_info import add_ollama_info_routes
from .convert import check_supported
from .errors import ApiError
from .live import is_live_url
from .media import decode_base64_image
from .routing import RouteTable, json_response, read_json
from .schema import MAX_TOKENS, StrictModel
from .state import ApiState, api_state
from .streaming import BufferedStreamingResponse

__all__ = ["OllamaChatRequest", "OllamaGenerateRequest", "add_ollama_routes"]

_MAPPED = {"num_predict": "max_tokens", "temperature": "temperature", "top_p": "top_p", "seed": "seed", "stop": "stop",
           "top_k": "top_k", "min_p": "min_p", "repeat_penalty": "repetition_penalty",
           "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}
_INTS = ("max_tokens", "seed", "top_k")
_FLOATS = ("temperature", "top_p", "min_p", "repetition_penalty", "presence_penalty", "frequency_penalty")


class _OllamaBase(StrictModel):
    model: str = Field(min_length=1)
    format: Literal["", "json"] | dict[str, Any] | None = None
    options: dict[str, Any] | None = None
    stream: bool = True
    keep_alive: str | float | None = None
    think: bool | Literal["low", "medium", "high"] | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None


class OllamaGenerateRequest(_OllamaBase):
    prompt: str = ""
    suffix: str | None = None
    images: list[str] | None = None
    system: str | None = None
    template: str | None = None
    context: list[int] | None = None
    raw: bool | None = None


class OllamaMessage(StrictModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str = ""
    images: list[str] | None = None
    thinking: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    tool_name: str | None = None


class OllamaChatRequest(_OllamaBase):
    messages: list[OllamaMessage] = Field(default_factory=list)
    tools: list[dict[str, Any]] | None = None


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _params(api: ApiState, req: _OllamaBase) -> GenerationParams:
    values: dict[str, Any] = {}
    rest: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    for key, value in (req.options or {}).items():
        if key in _MAPPED and value is not None:
            values[_MAPPED[key]] = value
        elif key == "num_ctx" and value is not None:
            extra["num_ctx"] = value
        else:
            rest[key] = value
    if values.get("max_tokens") is not None and not isinstance(values["max_tokens"], bool) \
            and isinstance(values["max_tokens"], (int, float)) and values["max_tokens"] < 0:
        del values["max_tokens"]  # -1/-2: no limit / fill the context
    if "stop" in values:
        values["stop"] = tuple(values["stop"]) if isinstance(values["stop"], list) else (str(values["stop"]),)
    if rest:
        extra["options"] = rest
    if req.keep_alive is not None:
        extra["keep_alive"] = req.keep_alive
    if req.think is not None:
        extra["think"] = req.think
    if req.logprobs or req.top_logprobs:
        raise ApiError(400, "logprobs are not supported", param="logprobs")
    for name in _INTS + _FLOATS:
        if name not in values:
            continue
        option = next(k for k, v in _MAPPED.items() if v == name)
        value = values[name]
        number_ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if name in _INTS and not (number_ok and float(value).is_integer()):
            raise ApiError(400, f"options.{option} must be an integer, got {value!r}", param=f"options.{option}")
        if not number_ok:
            raise ApiError(400, f"options.{option} must be a number, got {value!r}", param=f"options.{option}")
        values[name] = int(value) if name in _INTS else float(value)
        if name == "max_tokens" and values[name] > MAX_TOKENS:
            raise ApiError(400, f"options.{option} must be at most {MAX_TOKENS}, got {value!r}",
                           param=f"options.{option}")
    params = GenerationParams(
        model=req.model, stop=values.pop("stop", ()), json_object=req.format == "json",
        json_schema=req.format if isinstance(req.format, dict) else None,
        timeout=api.options.request_timeout, extra=extra, **values,
    )
    names = {"json_object": "format", "json_schema": "format", "num_ctx": "options.num_ctx"}
    names.update({field: f"options.{option}" for option, field in _MAPPED.items()})
    if rest:
        names["options"] = "options." + ", options.".join(sorted(rest))
    check_supported(api.backend_name, api.backend, params, names)
    return params


async def _images(api: ApiState, images: Sequence[str], where: str) -> list[ContentPart]:
    parts: list[ContentPart] = []
    for i, value in enumerate(images):
        param = f"{where}.{i}"
        if is_live_url(value.strip()):
            parts.append(await api.media.image(value.strip(), param))
            continue
        mime, data = decode_base64_image(value, max_bytes=api.options.max_image_bytes, param=param)
        parts.append(await api.media.checked_image(data, mime, param))
    return parts


async def _user(api: ApiState, text: str, images: Sequence[str] | None, where: str) -> ChatMessage:
    if not images:
        return ChatMessage("user", text)
    if len(images) > api.options.max_images:
        raise ApiError(400, f"{len(images)} images; at most {api.options.max_images}", param=where)
    if "images" not in api.backend.supports:
        raise ApiError(400, f"the {api.backend_name!r} backend does not take images", param=where)
    return ChatMessage("user", (TextPart(text), *await _images(api, images, where)))


def _error(error: ApiError) -> Response:
    return json_response({"error": error.message}, error.status, headers=error.headers)


def _final(usage: Usage | None, timings: VLMTimings | None, total_ns: int) -> dict[str, Any]:
    usage = usage or Usage()
    out: dict[str, Any] = {"total_duration": total_ns, "load_duration": 0,
                           "prompt_eval_count": usage.prompt_tokens, "eval_count": usage.completion_tokens}
    if timings is not None and timings.prompt_s is not None:
        out["prompt_eval_duration"] = int(timings.prompt_s * 1e9)
    if timings is not None and timings.generate_s is not None:
        out["eval_duration"] = int(timings.generate_s * 1e9)
    return out


async def _answer(api: ApiState, request: Request, req: _OllamaBase, messages: list[ChatMessage],
                  params: GenerationParams, chat: bool, started: float) -> Response:
    def piece(text: str, thinking: str = "") -> dict[str, Any]:
        if chat:
            message = {"role": "assistant", "content": text}
            return {"message": {**message, "thinking": thinking} if thinking else message}
        return {"response": text, "thinking": thinking} if thinking else {"response": text}

    stream = await open_backend_stream(api, request, messages, params, started)
    if not req.stream:
        try:
            text: list[str] = []
            thinking: list[str] = []
            last = stream.first
            async for chunk in stream.chunks():
                text.append(chunk.text)
                thinking.append(chunk.reasoning)
                last = chunk
        except Exception as exc:
            raise api.backend_failure(exc, request) from None
        finally:
            await stream.aclose()
        return json_response({"model": req.model, "created_at": _now(), **piece("".join(text), "".join(thinking)),
                              "done": True,
                              "done_reason": last.finish_reason or "stop",
                              **_final(last.usage, last.timings, int((time.perf_counter() - started) * 1e9))})
    return BufferedStreamingResponse(_ndjson(api, request, req, stream, piece, started),
                                     media_type="application/x-ndjson")


async def _ndjson(api: ApiState, request: Request, req: _OllamaBase, stream: BackendStream, piece: Any,
                  started: float) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream.chunks():
            if chunk.text or chunk.reasoning:
                yield _line({"model": req.model, "created_at": _now(), **piece(chunk.text, chunk.reasoning),
                             "done": False})
            if chunk.finish_reason is not None:
                yield _line({"model": req.model, "created_at": _now(), **piece(""), "done": True,
                             "done_reason": chunk.finish_reason,
                             **_final(chunk.usage, chunk.timings, int((time.perf_counter() - started) * 1e9))})
                return
        yield _line({"model": req.model, "created_at": _now(), **piece(""), "done": True, "done_reason": "stop",
                     **_final(None, None, int((time.perf_counter() - started) * 1e9))})
    except Exception as exc:
        yield _line({"error": api.backend_failure(exc, request).message})
    finally:
        await stream.aclose()


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


def _loaded(req: _OllamaBase, chat: bool) -> Response:
    """Ollama's answer to an empty request: the model is (un)loaded, nothing generated."""
    reason = "unload" if req.keep_alive in (0, "0", "0s") else "load"
    body: dict[str, Any] = {"model": req.model, "created_at": _now(), "done": True, "done_reason": reason}
    body.update({"message": {"role": "assistant", "content": ""}} if chat else {"response": ""})
    return json_response(body)


async def generate(request: Request) -> Response:
    """Ollama /api/generate: one prompt with optional images."""
    api = api_state(request)
    started = time.perf_counter()
    try:
        req = await read_json(request, OllamaGenerateRequest)
        for name in ("suffix", "template", "context", "raw"):
            if getattr(req, name):
                raise ApiError(400, f"{name} is not supported", param=name)
        params = _params(api, req)
        if not req.prompt and not req.images:
            return _loaded(req, chat=False)
        messages = [ChatMessage("system", req.system)] if req.system else []
        messages.append(await _user(api, req.prompt, req.images, "images"))
        return await _answer(api, request, req, messages, params, False, started)
    except ApiError as error:
        return _error(error)


async def chat(request: Request) -> Response:
    """Ollama /api/chat: a conversation with optional images per message."""
    api = api_state(request)
    started = time.perf_counter()
    try:
        req = await read_json(request, OllamaChatRequest)
        if req.tools:
            raise ApiError(400, "tool calling is not supported", param="tools")
        params = _params(api, req)
        if not req.messages:
            return _loaded(req, chat=True)
        messages: list[ChatMessage] = []
        for i, m in enumerate(req.messages):
            if m.role == "tool" or m.tool_calls:
                raise ApiError(400, "tool calling is not supported", param=f"messages.{i}")
            if m.role == "user":
                messages.append(await _user(api, m.content, m.images, f"messages.{i}.images"))
            elif m.images:
                raise ApiError(400, "images are only allowed in user messages", param=f"messages.{i}.images")
            else:
                messages.append(ChatMessage(m.role, m.content))
        return await _answer(api, request, req, messages, params, True, started)
    except ApiError as error:
        return _error(error)


async def tags(request: Request) -> Response:
    """Ollama /api/tags: the backend's models."""
    api = api_state(request)
    try:
        models = await api.call(request, api.backend.models(), timeout=30)
    except ApiError as error:
        return _error(error)
    out = []
    for m in models:
        when = datetime.fromtimestamp(m.created or 0, timezone.utc).isoformat().replace("+00:00", "Z")
        out.append({"name": m.id, "model": m.id, "modified_at": when, "size": 0, "digest": "",
                    "details": {"parent_model": "", "format": "", "family": "", "families": None,
                                "parameter_size": "", "quantization_level": ""}})
    return json_response({"models": out})


async def version(request: Request) -> Response:
    """Ollama /api/version (framelens's version)."""
    return json_response({"version": __version__})


def add_ollama_routes(routes: RouteTable) -> None:
    tags_ = ("ollama",)
    routes.register("/api/generate", generate, methods=["POST"], tags=tags_, request_model=OllamaGenerateRequest,
                    response_types=("application/json", "application/x-ndjson"))
    routes.register("/api/chat", chat, methods=["POST"], tags=tags_, request_model=OllamaChatRequest,
                    response_types=("application/json", "application/x-ndjson"))
    routes.register("/api/tags", tags, tags=tags_)
    routes.register("/api/version", version, tags=tags_)
    add_ollama_info_routes(routes)
