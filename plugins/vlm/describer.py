"""The describer: ask a VLM backend about the newest frame, without ever stalling the video.

``describe`` is this processor on any registered backend (``-c describe-backend=NAME``);
``ollama``, ``nim`` and ``openai`` are aliases of it bound to one backend, whose
backend options share the describer's namespace (``-c ollama-model=llava``).
Every frame is offered to a :class:`~framelens.BackgroundWorker`; when the
previous answer is in (and ``interval`` has passed) the worker takes the
newest frame, shrinks it to ``max-side``, encodes it and asks the backend.
The loop never waits. Each answer is published three ways:

- ``context.publish_result(KEY, Description)`` — a sticky result that
  implements ``HasCaption``, so ``captions`` draws it on every later frame;
  while a streaming answer arrives, partial descriptions replace each other;
- a ``description`` event (``--events``) with the payload of
  :meth:`Description.payload`;
- a log line on ``framelens.describer``.

When the backend fails the video goes on, the caption shows the error, the
log says what is wrong once (and again only when it changes), a ``describer``
event reports ``{"state": "error"}`` / ``{"state": "ok"}`` on each change, and
the describer asks again after a back-off (up to ``error-backoff`` seconds)
until the backend answers.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import dataclasses
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from framelens import (
    BackendError,
    BackgroundWorker,
    Caption,
    ChatMessage,
    ConfigError,
    ContentPart,
    Context,
    FairShare,
    Field,
    Frame,
    GenerationParams,
    ImagePart,
    Options,
    Processor,
    TextPart,
    Usage,
    VideoPart,
    VLMBackend,
    VLMTimings,
    encode_jpeg,
    fit_max_side,
)

from .media import encode_mp4
from .pool import ServerPool

__all__ = ["DescribeOptions", "Describer", "DescriberOptions", "Description"]

log = logging.getLogger("framelens.describer")


class DescriberOptions(Options):
    """What every describer asks, and how often. Mixed into each backend's options,
    so ``-c ollama-prompt=...`` and ``-c ollama-url=...`` share one namespace."""

    prompt: str = Field("Describe what is in this picture in one short sentence.", min_length=1,
                        description="What to ask about each frame")
    system: str | None = Field(None, description="System prompt sent before the question")
    interval: float = Field(0.0, ge=0, description="Seconds between the starts of two calls "
                            "(0 = as soon as the previous answer is in)")
    max_side: int = Field(1024, ge=0, description="Shrink frames so the longer side is at most this "
                          "(keeps the aspect ratio; 0 = send full size)")
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of the frames sent")
    max_tokens: int | None = Field(128, ge=1, description="Longest answer in tokens")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature (server default if unset)")
    stream: bool = Field(True, description="Stream the answer so the caption grows as tokens arrive")
    error_backoff: float = Field(10.0, gt=0, description="Longest wait before asking again while the backend "
                                 "fails (the wait doubles from 0.5 s up to this)")
    result_key: str | None = Field(None, description="Results key and event source (default: the processor's id, "
                            "e.g. cam2 for -p ollama:cam2)")
    frames: int = Field(1, ge=1, le=64, description="Recent frames to send as one MP4 clip (1 = a still image; "
                        "needs a backend that takes video, such as nim)")
    frame_spacing: float = Field(0.5, ge=0, description="At least this many seconds between the clip's frames")
    detail: Literal["low", "high", "auto"] | None = Field(None, description="OpenAI's image detail hint")


class DescribeOptions(DescriberOptions):
    """Options of ``describe``: which backend to ask, and what and how often."""

    backend: str | None = Field(None, description="Backend to ask, by name (default: the run's --backend, "
                                "else ollama); its own options are set as -c NAME-key=value")
    model: str | None = Field(None, description="Model to ask for (default: the backend's model)")


@dataclass(frozen=True)
class Description:
    """One answer about one frame; drawn by ``captions`` (it implements ``HasCaption``).

    ``partial`` marks a streamed answer still arriving; ``error`` is set (and
    ``text`` empty) when the backend failed.
    """

    text: str
    describer: str
    frame_index: int
    captured_at: float
    model: str = ""
    requested_at: float = 0.0
    answered_at: float = 0.0
    staleness: int = 0
    backend_s: float | None = None
    usage: Usage | None = None
    timings: VLMTimings | None = None
    finish_reason: str | None = None
    image_size: tuple[int, int] | None = None
    frames: int = 1
    partial: bool = False
    error: str | None = None
    error_kind: str | None = None

    @property
    def latency_s(self) -> float:
        """Seconds from the frame's capture to this answer."""
        return max(0.0, self.answered_at - self.captured_at)

    def caption(self) -> Caption | None:
        if self.error is not None:
            return Caption(f"{self.describer}: {self.error}", "error")
        if not self.text:
            return None
        return Caption(self.text + (" ..." if self.partial else ""), "info")

    def payload(self) -> dict[str, Any]:
        """The ``description`` event payload (stable keys)."""
        return {
            "describer": self.describer,
            "text": self.text,
            "model": self.model,
            "frame_index": self.frame_index,
            "captured_at": self.captured_at,
            "requested_at": self.requested_at,
            "answered_at": self.answered_at,
            "latency_s": round(self.latency_s, 4),
            "backend_s": None if self.backend_s is None else round(self.backend_s, 4),
            "staleness": self.staleness,
            "finish_reason": self.finish_reason,
            "usage": None if self.usage is None else {
                "prompt_tokens": self.usage.prompt_tokens, "completion_tokens": self.usage.completion_tokens},
            "timings": None if self.timings is None else dataclasses.asdict(self.timings),
            "image": None if self.image_size is None else {"width": self.image_size[0], "height": self.image_size[1]},
            "frames": self.frames,
        }


def _short(message: str, limit: int = 90) -> str:
    first = message.split(". ")[0].split(": run")[0]
    return first if len(first) <= limit else first[: limit - 3] + "..."


class Describer(Processor):
    """A processor that describes frames with a VLM backend (see the module docstring).

    Args:
        options: what to ask and how often.
        context: the run's context.
        get_backend: returns the backend to ask; called once, in :meth:`start`.
        id: the stage id, used as the results key and event source.
        model: the model to ask for (``None``: the backend's default model).
    """

    def __init__(
        self,
        options: DescriberOptions,
        context: Context,
        *,
        get_backend: Callable[[], VLMBackend],
        id: str,
        model: str | None = None,
    ) -> None:
        self.id = id
        self.options = options
        self.context = context
        self.key = options.result_key or self.id
        self.model = model
        self._get_backend = get_backend
        self.frames = options.frames
        self.frame_spacing = options.frame_spacing
        self.detail = options.detail
        self.backend: VLMBackend | None = None
        self.timeout = 60.0
        self.worker: BackgroundWorker[Description | None] | None = None
        self._recent: collections.deque[Frame] = collections.deque(maxlen=self.frames)
        self._recent_lock = threading.Lock()
        self._failures = 0
        self._resume_at = 0.0
        self._error_sig: tuple[str, str] | None = None
        self.described = 0
        self.last: Description | None = None
        self._closing = False

    # -- life cycle --------------------------------------------------------------------------

    def start(self) -> None:
        backend = self.backend = self._get_backend()
        if self.frames > 1 and "video" not in backend.supports:
            raise ConfigError(f"{self.id}: frames={self.frames} sends video clips, which backend {backend.name!r}"
                              " does not take; use frames=1 or a backend with video (nim)")
        self.timeout = backend.request_timeout
        self.worker = BackgroundWorker(
            self.key, self._describe, interval=self.options.interval, timeout=self.timeout + 1.0,
            on_result=self._on_result, on_error=self._on_error, runner=self.context.runner,
            share=self._fair_share(backend),
        )
        self.worker.start()

    def _fair_share(self, backend: VLMBackend) -> FairShare | None:
        """One first-come-first-served queue per pooled backend for all describers asking it
        (the cameras of a site), sized to what its servers take at once, so the pool's
        own wait never lets a quick re-asker overtake a camera that was waiting."""
        pool = getattr(backend, "pool", None)
        if not isinstance(pool, ServerPool):
            return None
        limit = pool.max_in_flight * len(pool.urls)
        return self.context.state(f"vlm.fair-share.{id(backend)}", lambda: FairShare(limit))

    def process(self, frame: Frame) -> Frame:
        if self.frames > 1:
            with self._recent_lock:
                if not self._recent or frame.timestamp - self._recent[-1].timestamp >= self.frame_spacing:
                    self._recent.append(frame)
        if self.worker is not None and time.monotonic() >= self._resume_at:
            self.worker.submit(frame)
        return frame

    def close(self) -> None:
        self._closing = True
        if self.worker is not None:
            self.worker.close()

    def stats(self) -> dict[str, Any]:
        out: dict[str, Any] = {"described": self.described}
        if self.worker is not None:
            out["worker"] = self.worker.stats()
        if self.last is not None:
            out["last_latency_s"] = round(self.last.latency_s, 4)
        return out

    # -- one call (on the I/O loop) ----------------------------------------------------------

    def _clip(self, frame: Frame) -> list[Frame]:
        with self._recent_lock:
            older = [f for f in self._recent if f.index < frame.index]
        return [*older[-(self.frames - 1):], frame] if self.frames > 1 else [frame]

    def _encode(self, clip: list[Frame]) -> tuple[ContentPart, tuple[int, int]]:
        """The image (or clip) part to send; CPU work, run in a thread."""
        images = [fit_max_side(f.image, self.options.max_side or None) for f in clip]
        size = (int(images[-1].shape[1]), int(images[-1].shape[0]))
        if len(images) == 1:
            data = encode_jpeg(images[0], self.options.jpeg_quality)
            return ImagePart(data=data, mime="image/jpeg", detail=self.detail), size
        span = clip[-1].timestamp - clip[0].timestamp
        fps = (len(clip) - 1) / span if span > 0 else 1.0
        return VideoPart(data=encode_mp4(images, fps), num_frames=len(images)), size

    def _messages(self, part: ContentPart) -> list[ChatMessage]:
        messages = []
        if self.options.system:
            messages.append(ChatMessage("system", self.options.system))
        messages.append(ChatMessage("user", (TextPart(self.options.prompt), part)))
        return messages

    async def _describe(self, frame: Frame) -> Description | None:
        assert self.backend is not None and self.worker is not None
        if time.monotonic() < self._resume_at:
            # Offered just before the last failure: skip it; process() offers a fresh
            # frame once the back-off is over.
            return None
        staleness = self.worker.last_staleness or 0
        requested = time.time()
        part, size = await asyncio.to_thread(self._encode, self._clip(frame))
        params = GenerationParams(
            model=self.model, max_tokens=self.options.max_tokens,
            temperature=self.options.temperature, timeout=self.timeout, priority="background",
        )
        base = Description("", self.key, frame.index, frame.timestamp, requested_at=requested,
                           staleness=staleness, image_size=size,
                           frames=part.num_frames or 1 if isinstance(part, VideoPart) else 1)
        messages = self._messages(part)
        if not (self.options.stream and "stream" in self.backend.supports):
            result = await self.backend.chat(messages, params)
            return dataclasses.replace(base, text=result.text.strip(), model=result.model, answered_at=time.time(),
                                       backend_s=result.timings.total_s, usage=result.usage,
                                       timings=result.timings, finish_reason=result.finish_reason)
        text, model = "", ""
        usage: Usage | None = None
        timings: VLMTimings | None = None
        finish: str | None = None
        async for chunk in self.backend.stream(messages, params):
            model = chunk.model or model
            if chunk.text:
                text += chunk.text
                self.context.publish_result(self.key, dataclasses.replace(
                    base, text=text.strip(), model=model, answered_at=time.time(), partial=True))
            if chunk.finish_reason is not None:
                finish, usage, timings = chunk.finish_reason, chunk.usage, chunk.timings
        return dataclasses.replace(base, text=text.strip(), model=model, answered_at=time.time(),
                                   backend_s=timings.total_s if timings else None, usage=usage,
                                   timings=timings, finish_reason=finish)

    # -- results and errors (on the worker thread) -------------------------------------------

    def _on_result(self, frame: Frame, desc: Description | None, seconds: float) -> None:
        if desc is None:
            return
        self.described += 1
        self.last = desc
        self.context.publish_result(self.key, desc)
        self.context.events.publish("description", desc.payload(), source=frame.source_id, frame_index=frame.index)
        tokens = f", {desc.usage.prompt_tokens}+{desc.usage.completion_tokens} tokens" if desc.usage else ""
        log.debug("%s: %r (frame %d, %.2f s after capture%s)", self.key, desc.text, frame.index, desc.latency_s,
                  tokens)
        if self._error_sig is not None:
            log.info("%s: the backend answers again", self.key)
            self.context.events.publish("describer", {"describer": self.key, "state": "ok"},
                                        source=frame.source_id, frame_index=frame.index)
        self._error_sig = None
        self._failures = 0
        self._resume_at = 0.0

    def _on_error(self, frame: Frame, exc: BaseException, seconds: float) -> None:
        if self._closing or isinstance(exc, (asyncio.CancelledError, concurrent.futures.CancelledError)):
            log.debug("%s: call on frame %d ended by shutdown: %r", self.key, frame.index, exc)
            return
        error = self._as_backend_error(exc)
        self._failures += 1
        wait = min(self.options.error_backoff, 0.5 * 2 ** (self._failures - 1))
        if error.retry_after is not None:
            wait = max(wait, min(error.retry_after, self.options.error_backoff * 6))
        self._resume_at = time.monotonic() + wait
        sig = (error.kind, str(error))
        if sig != self._error_sig:
            if isinstance(exc, BackendError) or isinstance(exc, TimeoutError):
                log.error("%s: %s", self.key, error)
            else:
                log.error("%s: describing frame %d failed", self.key, frame.index, exc_info=exc)
            self.context.events.publish(
                "describer", {"describer": self.key, "state": "error", "kind": error.kind, "message": str(error)},
                source=frame.source_id, frame_index=frame.index)
            self._error_sig = sig
        else:
            log.debug("%s: still failing: %s", self.key, error)
        self.context.publish_result(self.key, Description(
            "", self.key, frame.index, frame.timestamp, answered_at=time.time(),
            error=_short(str(error)), error_kind=error.kind))

    def _as_backend_error(self, exc: BaseException) -> BackendError:
        if isinstance(exc, BackendError):
            return exc
        if isinstance(exc, TimeoutError):
            return BackendError(f"no answer within {self.timeout:g} s (raise the backend's timeout option)",
                                kind="timeout")
        return BackendError(f"{type(exc).__name__}: {exc}", kind="server")
