"""``POST /v1/responses``: OpenAI's Responses API over the same backend layer as chat completions.

The request is turned into the chat-completions request it means and goes
through the same :class:`~.convert.RequestConverter` (images and live sources,
``model`` defaults, the "400 for what the backend cannot honour" rule); errors
name the Responses field (``input.0.content.1.image_url``, ``max_output_tokens``,
``text.format``). Nothing is stored: ``store`` is accepted and answered as
``false``, ``previous_response_id`` is a 400.
"""

from __future__ import annotations

import dataclasses
import re
import time
import uuid
from typing import Any

from pydantic import ValidationError
from starlette.requests import Request
from starlette.responses import Response

from framelens import ChatMessage, ChatResult

from .convert import Prepared
from .errors import ApiError
from .responses_schema import (
    InputImage,
    InputMessage,
    InputText,
    OtherItem,
    OutputText,
    ResponseObject,
    ResponsesRequest,
    TextFormatJSONSchema,
)
from .responses_stream import ResponseDraft, response_events
from .routing import RouteTable, json_response, read_json
from .schema import ChatCompletionRequest
from .state import api_state
from .streaming import BufferedStreamingResponse

__all__ = ["add_responses_routes", "to_chat_request"]

_RENAMES = {"messages": "input", "max_tokens": "max_output_tokens", "max_completion_tokens": "max_output_tokens",
            "response_format": "text.format", "reasoning_effort": "reasoning.effort"}
_MESSAGE_PARAM = re.compile(r"^messages\.(\d+)(.*)$")


def _unsupported(param: str, why: str) -> ApiError:
    return ApiError(400, f"{param}: {why}", param=param, code="unsupported_parameter")


def _reject_unsupported(req: ResponsesRequest) -> None:
    if req.previous_response_id is not None:
        raise _unsupported("previous_response_id", "framelens stores no responses (store is always false); "
                           "send the whole conversation in input")
    if req.conversation is not None:
        raise _unsupported("conversation", "framelens stores no conversations; send the whole conversation "
                           "in input")
    if req.background:
        raise _unsupported("background", "background responses need stored responses, which framelens "
                           "does not keep")
    if req.prompt is not None:
        raise _unsupported("prompt", "stored prompt templates are not supported; send the text in input")
    if req.tools:
        raise _unsupported("tools", "tool calling is not supported")
    if isinstance(req.tool_choice, dict) or req.tool_choice not in (None, "none", "auto"):
        raise _unsupported("tool_choice", "tool calling is not supported")
    if req.top_logprobs:
        raise _unsupported("top_logprobs", "log probabilities are not supported")
    if req.truncation == "auto":
        raise _unsupported("truncation", "only 'disabled': the backend gets the whole input")
    if req.text is not None and req.text.verbosity not in (None, "medium"):
        raise _unsupported("text.verbosity", "only 'medium' (the backends have no verbosity control)")
    if req.service_tier not in (None, "auto", "default"):
        raise _unsupported("service_tier", "only auto/default")
    for value in req.include or ():
        if value.startswith(("file_search_call", "web_search_call", "computer_call", "code_interpreter_call")):
            raise _unsupported("include", f"{value}: tool calling is not supported")


def _part(i: int, j: int, part: Any, role: str) -> dict[str, Any]:
    where = f"input.{i}.content.{j}"
    if isinstance(part, (InputText, OutputText)):
        return {"type": "text", "text": part.text}
    if isinstance(part, InputImage):
        if part.file_id is not None or part.image_url is None:
            raise _unsupported(f"{where}.file_id", "uploaded files are not supported; send image_url "
                               "(a URL, a data URI or a live source such as stream://main)")
        image: dict[str, Any] = {"url": part.image_url}
        if part.detail is not None:
            image["detail"] = part.detail
        return {"type": "image_url", "image_url": image}
    if getattr(part, "type", "") == "refusal":
        return {"type": "text", "text": part.refusal}
    raise _unsupported(where, "input_file is not supported; send images as input_image")


def _message(i: int, item: InputMessage) -> dict[str, Any]:
    if isinstance(item.content, str):
        return {"role": item.role, "content": item.content}
    return {"role": item.role, "content": [_part(i, j, p, item.role) for j, p in enumerate(item.content)]}


def to_chat_request(req: ResponsesRequest) -> tuple[ChatCompletionRequest, list[int]]:
    """The chat-completions request ``req`` means, and the ``input`` index of each of its messages."""
    _reject_unsupported(req)
    messages: list[dict[str, Any]] = []
    origin: list[int] = []
    if isinstance(req.input, str):
        messages.append({"role": "user", "content": req.input})
        origin.append(0)
    else:
        for i, item in enumerate(req.input):
            if isinstance(item, InputMessage):
                messages.append(_message(i, item))
                origin.append(i)
            elif isinstance(item, OtherItem):
                raise _unsupported(f"input.{i}", f"{item.type} items are not supported (tool calling is not "
                                   "supported)")
            # Reasoning items of earlier answers: the model never sees its old reasoning,
            # exactly as chat completions drops reasoning_content on assistant turns.
    if not messages:
        raise ApiError(400, "input has no messages", param="input")
    body: dict[str, Any] = {
        "model": req.model, "messages": messages, "stream": bool(req.stream),
        "max_tokens": req.max_output_tokens, "temperature": req.temperature, "top_p": req.top_p,
        "metadata": req.metadata, "user": req.user, "safety_identifier": req.safety_identifier,
        "prompt_cache_key": req.prompt_cache_key,
    }
    fmt = req.text.format if req.text is not None else None
    if isinstance(fmt, TextFormatJSONSchema):
        spec: dict[str, Any] = {"name": fmt.name, "schema": fmt.schema_}
        if fmt.strict is not None:
            spec["strict"] = fmt.strict
        body["response_format"] = {"type": "json_schema", "json_schema": spec}
    elif fmt is not None and fmt.type == "json_object":
        body["response_format"] = {"type": "json_object"}
    if req.reasoning is not None and req.reasoning.effort is not None:
        body["reasoning_effort"] = req.reasoning.effort
    try:
        return ChatCompletionRequest.model_validate({k: v for k, v in body.items() if v is not None}), origin
    except ValidationError as exc:  # the Responses schema admits nothing chat completions refuses
        raise ApiError(400, f"input: {exc.errors()[0].get('msg', 'invalid')}", param="input") from None


def renamed(error: ApiError, origin: list[int]) -> ApiError:
    """``error`` with the chat-completions field name replaced by the Responses one."""
    param = error.param or ""
    m = _MESSAGE_PARAM.match(param)
    if m is not None:
        i = int(m.group(1))
        rest = m.group(2).replace(".image_url.url", ".image_url")
        new = f"input.{origin[i] if i < len(origin) else i}{rest}"
    else:
        new = _RENAMES.get(param, param)
    if new == param:
        return error
    return ApiError(error.status, error.message.replace(param, new, 1), param=new, code=error.code,
                    type=error.type, headers=error.headers)


def _draft(req: ResponsesRequest, prepared: Prepared) -> ResponseDraft:
    fmt = req.text.format if req.text is not None and req.text.format is not None else None
    return ResponseDraft(
        id=f"resp_{uuid.uuid4().hex}", created_at=int(time.time()), model=prepared.model,
        echo={
            "instructions": req.instructions, "max_output_tokens": req.max_output_tokens,
            "temperature": req.temperature, "top_p": req.top_p, "metadata": req.metadata or {},
            "text": {"format": fmt.model_dump(by_alias=True) if fmt is not None else {"type": "text"},
                     "verbosity": "medium"},
            "reasoning": {"effort": req.reasoning.effort if req.reasoning else None,
                          "summary": req.reasoning.summary if req.reasoning else None},
            "user": req.user, "safety_identifier": req.safety_identifier,
            "prompt_cache_key": req.prompt_cache_key,
        },
        summary=bool(req.reasoning and (req.reasoning.summary or req.reasoning.generate_summary)),
    )


async def create_response(request: Request) -> Response:
    """Create a model response (OpenAI Responses API; ``stream: true`` gives its server-sent events).

    ``input_image.image_url`` may be a data URI, an http(s) URL, an allowed file:// URL
    or a live source (v4l2://, csi://, rtsp://, stream://ID: the model sees the newest frame).
    Responses are not stored: ``previous_response_id`` is a 400.
    """
    api = api_state(request)
    req = await read_json(request, ResponsesRequest)
    started = time.perf_counter()
    chat_req, origin = to_chat_request(req)
    try:
        prepared = await api.converter.prepare(chat_req, api.backend_name, api.backend)
    except ApiError as error:
        raise renamed(error, origin) from None
    if req.instructions:
        prepared = dataclasses.replace(prepared, messages=[ChatMessage("system", req.instructions),
                                                           *prepared.messages])
    draft = _draft(req, prepared)
    if prepared.stream:
        events = await response_events(api, request, prepared, draft, started)
        return BufferedStreamingResponse(events, media_type="text/event-stream",
                                         headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    async with api.limiter.slot():
        result: ChatResult = await api.call(request, api.backend.chat(prepared.messages, prepared.params))
    api.metrics.count_tokens(api.backend_name, result.usage.prompt_tokens, result.usage.completion_tokens)
    draft.model = result.model or prepared.model
    draft.reasoning = result.reasoning
    draft.text = result.text
    return json_response(draft.finished(result.finish_reason, result.usage))


async def no_stored_response(request: Request) -> Response:
    """Stored responses do not exist here: framelens keeps no responses (404 naming that)."""
    raise ApiError(404, f"response {request.path_params['id']!r} not found: framelens stores no responses "
                   "(store is always false)", param="response_id", code="response_not_found")


def add_responses_routes(routes: RouteTable) -> None:
    routes.register("/v1/responses", create_response, methods=["POST"], tags=["openai"],
                    request_model=ResponsesRequest, response_model=ResponseObject,
                    response_types=("application/json", "text/event-stream"),
                    extra_responses={"403": "URL not allowed", "415": "Unsupported image type",
                                     "422": "Undecodable image or unopenable source",
                                     "502": "Backend failed", "504": "Backend timed out"})
    routes.register("/v1/responses/{id}", no_stored_response, methods=["GET", "DELETE"], tags=["openai"],
                    extra_responses={"404": "No stored responses"})
