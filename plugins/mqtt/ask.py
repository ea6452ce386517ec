"""``PREFIX/CAMERA/ask`` -> ``PREFIX/CAMERA/answer``: questions about a camera's newest frame.

A question is plain text or JSON ``{"question": "...", "id": "..."}``. Every
question gets exactly one answer, JSON on the answer topic::

    {"id": "q1", "camera": "main", "question": "...", "answer": "...", "model": "llava",
     "frame_index": 1234, "captured_at": 1732270000.1, "answered_at": 1732270001.4, "error": null}

With ``error`` set (and ``answer`` null) when the question was malformed, the
camera is unknown or has no frame yet, the backend failed, or too many
questions are already being answered.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from framelens import (
    BackendError,
    ChatMessage,
    Context,
    GenerationParams,
    ImagePart,
    TextPart,
    encode_jpeg,
    fit_max_side,
)

__all__ = ["AskHandler", "parse_question"]

log = logging.getLogger("framelens.mqtt")

Publish = Callable[[str, dict[str, Any]], None]
"""``publish(camera, answer)``."""


def parse_question(payload: bytes) -> tuple[str, str | None]:
    """``(question, id)`` from a text or JSON payload; :class:`ValueError` says what is wrong."""
    try:
        text = payload.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ValueError("the question is not UTF-8 text") from None
    if not text:
        raise ValueError("the question is empty")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"the question looks like JSON but is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ValueError('expected {"question": "...", "id": "..."}')
        question, qid = data.get("question"), data.get("id")
        if not isinstance(question, str) or not question.strip():
            raise ValueError('"question" must be a non-empty string')
        if qid is not None and not isinstance(qid, (str, int)):
            raise ValueError('"id" must be a string or a number')
        return question.strip(), None if qid is None else str(qid)
    return text, None


class AskHandler:
    """Answers questions on ``context.runner``; at most ``max_asks`` at once, each within ``timeout``."""

    def __init__(self, context: Context, *, backend: str | None, timeout: float, max_tokens: int, max_side: int,
                 max_asks: int, publish: Publish) -> None:
        self.context = context
        self.backend_name = backend or context.default_backend
        self.timeout = timeout
        self.max_tokens = max_tokens
        self.max_side = max_side
        self.max_asks = max_asks
        self._publish = publish
        self._running = 0
        self._lock = threading.Lock()
        self.answered = 0
        self.failed = 0

    def handle(self, camera: str, payload: bytes) -> None:
        """Called on paho's thread: validate, then answer in the background."""
        qid: str | None = None
        try:
            question, qid = parse_question(payload)
        except ValueError as exc:
            self._answer(camera, qid, None, error=str(exc))
            return
        with self._lock:
            busy = self._running >= self.max_asks
            if not busy:
                self._running += 1
        if busy:
            self._answer(camera, qid, question, error=f"busy: {self.max_asks} questions are being answered; "
                                                      "ask again later")
            return
        self.context.runner.submit(self._ask(camera, qid, question))

    async def _ask(self, camera: str, qid: str | None, question: str) -> None:
        try:
            fields = await asyncio.wait_for(self._call(camera, question), self.timeout)
        except asyncio.TimeoutError:
            self._answer(camera, qid, question, error=f"no answer within {self.timeout:g} s")
        except _AskError as exc:
            self._answer(camera, qid, question, error=str(exc))
        except BackendError as exc:
            self._answer(camera, qid, question, error=f"backend {self.backend_name}: {exc}")
        except Exception as exc:
            log.exception("mqtt ask about %s failed", camera)
            self._answer(camera, qid, question, error=f"internal error: {type(exc).__name__}: {exc}")
        else:
            self._answer(camera, qid, question, **fields)
        finally:
            with self._lock:
                self._running -= 1

    async def _call(self, camera: str, question: str) -> dict[str, Any]:
        try:
            stream = self.context.streams.get(camera)
        except KeyError:
            known = ", ".join(sorted(s.id for s in self.context.streams.list())) or "none"
            raise _AskError(f"no live camera {camera!r} (cameras: {known})") from None
        frame = stream.capture.latest()
        if frame is None:
            raise _AskError(f"camera {camera!r} has no frame yet ({stream.capture.state})")
        image = fit_max_side(frame.image, self.max_side or None)
        # Encoded here, off the I/O loop's hot path, so every backend gets the same JPEG.
        data = await asyncio.to_thread(encode_jpeg, image)
        backend = self.context.backend(self.backend_name)
        message = ChatMessage("user", (TextPart(question), ImagePart(data=data, mime="image/jpeg")))
        result = await backend.chat([message], GenerationParams(max_tokens=self.max_tokens, timeout=self.timeout))
        return {"answer": result.text, "model": result.model, "frame_index": frame.index,
                "captured_at": frame.timestamp}

    def _answer(self, camera: str, qid: str | None, question: str | None, *, error: str | None = None,
                answer: str | None = None, **fields: Any) -> None:
        if error is None:
            self.answered += 1
        else:
            self.failed += 1
        body = {"id": qid, "camera": camera, "question": question, "answer": answer, "model": None,
                "frame_index": None, "captured_at": None, **fields, "answered_at": time.time(), "error": error}
        self._publish(camera, body)


class _AskError(Exception):
    """A question that cannot be answered, with the reason for the asker."""
