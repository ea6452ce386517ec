"""``POST /v1/chat/completions`` and ``GET /v1/models``: OpenAI's contract in front of any backend."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from framelens import ChatResult, Usage

from .backend_stream import BackendStream, open_backend_stream
from .convert import Prepared
from .errors import ApiError
from .gateway import request_id
from .routing import RouteTable, json_response, read_json
from .schema import ChatCompletion, ChatCompletionRequest, ModelList
from .state import ApiState, api_state
from .streaming import BufferedStreamingResponse

__all__ = ["add_chat_routes"]

log = logging.getLogger("framelens.http")

_FINISH = {"stop", "length", "content_filter", "tool_calls", "function_call"}
# json.dumps(..., ensure_ascii=False, separators=(",", ":")) without building an encoder per call
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _completion_id() -> str:
    """``chatcmpl-`` and 32 random hex digits (the shape of ``uuid4().hex``, at a fraction of its cost)."""
    return "chatcmpl-" + os.urandom(16).hex()


def _usage(usage: Usage) -> dict[str, int]:
    return {"prompt_tokens": usage.prompt_tokens, "completion_tokens": usage.completion_tokens,
            "total_tokens": usage.total_tokens}


def _finish(reason: str | None) -> str:
    return reason if reason in _FINISH else "stop"


async def list_models(request: Request) -> Response:
    """List the backend's models (OpenAI's list shape)."""
    api = api_state(request)
    models = await api.call(request, api.backend.models(), timeout=30)
    return json_response({"object": "list", "data": [
        {"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by} for m in models]})


async def get_model(request: Request) -> Response:
    """Describe one model of the backend."""
    api = api_state(request)
    wanted = request.path_params["model"]
    for m in await api.call(request, api.backend.models(), timeout=30):
        if m.id == wanted:
            return json_response({"id": m.id, "object": "model", "created": m.created, "owned_by": m.owned_by})
    raise ApiError(404, f"the model {wanted!r} does not exist on the {api.backend_name!r} backend",
                   param="model", code="model_not_found")


async def chat_completions(request: Request) -> Response:
    """Create a chat completion (OpenAI Chat Completions; streaming with SSE).

    Images may be data URIs, http(s) URLs, allowed file:// URLs or live sources
    (v4l2://, csi://, rtsp://, stream://ID: the model sees the newest frame).
    """
    api = api_state(request)
    req = await read_json(request, ChatCompletionRequest)
    started = time.perf_counter()
    prepared = await api.converter.prepare(req, api.backend_name, api.backend)
    if prepared.stream:
        return await _stream(api, request, prepared, started)
    async with api.limiter.slot():
        result: ChatResult = await api.call(request, api.backend.chat(prepared.messages, prepared.params))
    _count(api, result.usage, result.timings.first_token_s)
    return json_response({
        "id": _completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": result.model or prepared.model,
        "system_fingerprint": None,
        "choices": [{
            "index": 0,
            "message": _message(result),
            "logprobs": None,
            "finish_reason": _finish(result.finish_reason),
        }],
        "usage": _usage(result.usage),
    })


def _message(result: ChatResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text, "refusal": None}
    if result.reasoning:
        message["reasoning_content"] = result.reasoning  # vLLM's and NIM's field name
    return message


def _count(api: ApiState, usage: Usage | None, first_token_s: float | None) -> None:
    if usage is not None:
        api.metrics.count_tokens(api.backend_name, usage.prompt_tokens, usage.completion_tokens)
    if first_token_s is not None:
        api.metrics.observe_first_token(api.backend_name, first_token_s)


def _sse(data: dict[str, Any]) -> bytes:
    return b"data: " + _dumps(data).encode() + b"\n\n"


def _chunk_encoder(cid: str, created: int, model: str, include_usage: bool) -> Callable[..., bytes]:
    """``chunk(delta, finish=None)``: one ``chat.completion.chunk`` SSE event of this answer.

    The same bytes as :func:`_sse` of the whole event, but the parts that never
    change within an answer are encoded once, not for every token.
    """
    head = (f'data: {{"id":{_dumps(cid)},"object":"chat.completion.chunk","created":{_dumps(created)},'
            f'"model":{_dumps(model)},"system_fingerprint":null,"choices":[{{"index":0,"delta":').encode()
    middle = b',"logprobs":null,"finish_reason":'
    tail = b'}],"usage":null}\n\n' if include_usage else b"}]}\n\n"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        return b"".join((head, _dumps(delta).encode(), middle, b"null" if finish is None else _dumps(finish).encode(),
                         tail))

    return chunk


async def _stream(api: ApiState, request: Request, prepared: Prepared, started: float) -> Response:
    stream = await open_backend_stream(api, request, prepared.messages, prepared.params, started)
    return BufferedStreamingResponse(_events(api, request, prepared, stream), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def _events(api: ApiState, request: Request, prepared: Prepared, stream: BackendStream) -> AsyncIterator[bytes]:
    """SSE ``chat.completion.chunk`` events; a failure mid-way is one ``{"error": ...}`` event, then the end."""
    cid = _completion_id()
    created = int(time.time())
    model = stream.first.model or prepared.model
    chunk = _chunk_encoder(cid, created, model, prepared.include_usage)
    usage: Usage | None = None
    finish: str | None = None
    try:
        yield chunk({"role": "assistant", "content": ""})
        async for piece in stream.chunks():
            if piece.reasoning:
                yield chunk({"reasoning_content": piece.reasoning})
            if piece.text:
                yield chunk({"content": piece.text})
            usage = piece.usage or usage
            finish = piece.finish_reason or finish
        yield chunk({}, _finish(finish))
        if prepared.include_usage:
            yield _sse({"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                        "system_fingerprint": None, "choices": [], "usage": _usage(usage or Usage())})
        yield b"data: [DONE]\n\n"
        _count(api, usage, None)
    except Exception as exc:
        error = api.backend_failure(exc, request)
        log.warning("[%s] stream failed mid-way: %s", request_id(request.scope), error.message)
        yield _sse(error.body())
    finally:
        await stream.aclose()


def add_chat_routes(routes: RouteTable) -> None:
    routes.register("/v1/chat/completions", chat_completions, methods=["POST"], tags=["openai"],
                    request_model=ChatCompletionRequest, response_model=ChatCompletion,
                    response_types=("application/json", "text/event-stream"),
                    extra_responses={"403": "URL not allowed", "415": "Unsupported image type",
                                     "422": "Undecodable image or unopenable source",
                                     "502": "Backend failed", "504": "Backend timed out"})
    routes.register("/v1/models", list_models, tags=["openai"], response_model=ModelList)
    routes.register("/v1/models/{model:path}", get_model, tags=["openai"])
