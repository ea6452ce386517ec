"""The Responses API's response object and its server-sent event sequence.

A streamed response sends, in order: ``response.created``, ``response.in_progress``,
for reasoning models a ``reasoning`` item (``response.output_item.added``,
``response.content_part.added``, ``response.reasoning_text.delta``...,
``response.reasoning_text.done``, ``response.content_part.done``,
``response.output_item.done``), then the message item
(``response.output_item.added``, ``response.content_part.added``,
``response.output_text.delta``..., ``response.output_text.done``,
``response.content_part.done``, ``response.output_item.done``) and
``response.completed`` (``response.incomplete`` when the token limit cut it
short). A failure after the first event is an ``error`` event followed by
``response.failed``. Every event carries ``sequence_number``.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request

from framelens import Usage

from .backend_stream import open_backend_stream
from .convert import Prepared
from .gateway import request_id
from .state import ApiState

__all__ = ["ResponseDraft", "response_events"]

log = logging.getLogger("framelens.http")


@dataclass
class ResponseDraft:
    """One response being built: ids, the request fields it echoes, text and reasoning so far."""

    id: str
    created_at: int
    model: str
    echo: dict[str, Any]
    summary: bool = False
    text: str = ""
    reasoning: str = ""
    message_id: str = field(default_factory=lambda: f"msg_{uuid.uuid4().hex}")
    reasoning_id: str = field(default_factory=lambda: f"rs_{uuid.uuid4().hex}")

    def obj(self, status: str, output: list[dict[str, Any]], usage: Usage | None = None,
            incomplete: str | None = None, error: dict[str, Any] | None = None) -> dict[str, Any]:
        """The response object in ``status`` with these output items."""
        text = "".join(part["text"] for item in output if item["type"] == "message"
                       for part in item["content"] if part["type"] == "output_text")
        return {
            "id": self.id, "object": "response", "created_at": self.created_at, "status": status,
            "background": False, "error": error,
            "incomplete_details": {"reason": incomplete} if incomplete else None,
            "model": self.model, "output": output, "output_text": text,
            "parallel_tool_calls": True, "previous_response_id": None, "store": False,
            "tool_choice": "auto", "tools": [], "truncation": "disabled",
            "usage": _usage(usage) if usage is not None else None,
            **self.echo,
        }

    def message_item(self, status: str, text: str | None = None) -> dict[str, Any]:
        content = [] if text is None else [_text_part(text)]
        return {"id": self.message_id, "type": "message", "status": status, "role": "assistant", "content": content}

    def reasoning_item(self, status: str, text: str | None = None) -> dict[str, Any]:
        item: dict[str, Any] = {"id": self.reasoning_id, "type": "reasoning", "summary": [],
                                "encrypted_content": None, "status": status}
        if text is not None:
            item["content"] = [{"type": "reasoning_text", "text": text}]
            if self.summary:
                item["summary"] = [{"type": "summary_text", "text": text}]
        return item

    def output(self, status: str) -> list[dict[str, Any]]:
        items = [self.reasoning_item("completed", self.reasoning)] if self.reasoning else []
        return [*items, self.message_item(status, self.text)]

    def finished(self, finish_reason: str | None, usage: Usage) -> dict[str, Any]:
        """The final object: ``completed``, or ``incomplete`` when the token limit was reached."""
        if finish_reason == "length":
            return self.obj("incomplete", self.output("incomplete"), usage, incomplete="max_output_tokens")
        return self.obj("completed", self.output("completed"), usage)


def _text_part(text: str) -> dict[str, Any]:
    return {"type": "output_text", "text": text, "annotations": [], "logprobs": []}


def _usage(usage: Usage) -> dict[str, Any]:
    return {"input_tokens": usage.prompt_tokens, "input_tokens_details": {"cached_tokens": 0},
            "output_tokens": usage.completion_tokens, "output_tokens_details": {"reasoning_tokens": 0},
            "total_tokens": usage.total_tokens}


class _Events:
    """Numbers and encodes the events of one stream."""

    def __init__(self) -> None:
        self.sequence = 0

    def __call__(self, kind: str, **data: Any) -> bytes:
        payload = {"type": kind, "sequence_number": self.sequence, **data}
        self.sequence += 1
        return (f"event: {kind}\ndata: ".encode()
                + json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n")


async def response_events(api: ApiState, request: Request, prepared: Prepared, draft: ResponseDraft,
                          started: float) -> AsyncIterator[bytes]:
    """Start the backend stream (failures before the first piece raise as ApiError) and return its events."""
    stream = await open_backend_stream(api, request, prepared.messages, prepared.params, started)
    draft.model = stream.first.model or draft.model

    async def events() -> AsyncIterator[bytes]:
        event = _Events()
        message_index: int | None = None
        usage: Usage | None = None
        finish: str | None = None

        def open_message() -> list[bytes]:
            nonlocal message_index
            out: list[bytes] = []
            if draft.reasoning:
                out += [event("response.reasoning_text.done", item_id=draft.reasoning_id, output_index=0,
                              content_index=0, text=draft.reasoning),
                        event("response.content_part.done", item_id=draft.reasoning_id, output_index=0,
                              content_index=0, part={"type": "reasoning_text", "text": draft.reasoning}),
                        event("response.output_item.done", output_index=0,
                              item=draft.reasoning_item("completed", draft.reasoning))]
            message_index = 1 if draft.reasoning else 0
            out += [event("response.output_item.added", output_index=message_index,
                          item=draft.message_item("in_progress")),
                    event("response.content_part.added", item_id=draft.message_id, output_index=message_index,
                          content_index=0, part=_text_part(""))]
            return out

        try:
            yield event("response.created", response=draft.obj("in_progress", []))
            yield event("response.in_progress", response=draft.obj("in_progress", []))
            async for piece in stream.chunks():
                if piece.reasoning and message_index is None:
                    if not draft.reasoning:
                        yield event("response.output_item.added", output_index=0,
                                    item=draft.reasoning_item("in_progress"))
                        yield event("response.content_part.added", item_id=draft.reasoning_id, output_index=0,
                                    content_index=0, part={"type": "reasoning_text", "text": ""})
                    draft.reasoning += piece.reasoning
                    yield event("response.reasoning_text.delta", item_id=draft.reasoning_id, output_index=0,
                                content_index=0, delta=piece.reasoning)
                elif piece.reasoning:
                    # Reasoning after the answer began (rare): kept in the final object, not lost.
                    draft.reasoning += piece.reasoning
                if piece.text:
                    if message_index is None:
                        for opened in open_message():
                            yield opened
                    draft.text += piece.text
                    yield event("response.output_text.delta", item_id=draft.message_id, output_index=message_index,
                                content_index=0, delta=piece.text, logprobs=[])
                usage = piece.usage or usage
                finish = piece.finish_reason or finish
            if message_index is None:
                for opened in open_message():
                    yield opened
            status = "incomplete" if finish == "length" else "completed"
            yield event("response.output_text.done", item_id=draft.message_id, output_index=message_index,
                        content_index=0, text=draft.text, logprobs=[])
            yield event("response.content_part.done", item_id=draft.message_id, output_index=message_index,
                        content_index=0, part=_text_part(draft.text))
            yield event("response.output_item.done", output_index=message_index,
                        item=draft.message_item(status, draft.text))
            final = draft.finished(finish, usage or Usage())
            yield event(f"response.{final['status']}", response=final)
            if usage is not None:
                api.metrics.count_tokens(api.backend_name, usage.prompt_tokens, usage.completion_tokens)
        except Exception as exc:
            error = api.backend_failure(exc, request)
            log.warning("[%s] response stream failed mid-way: %s", request_id(request.scope), error.message)
            yield event("error", code=error.code, message=error.message, param=error.param)
            yield event("response.failed", response=draft.obj(
                "failed", draft.output("incomplete"), usage,
                error={"code": "server_error", "message": error.message}))
        finally:
            await stream.aclose()

    return events()
