"""The VLM backend interface: one provider-neutral way to ask a vision-language model.

Describers, alerts and the HTTP service speak only this interface, so any
backend (Ollama, an OpenAI-compatible server, a local engine) can sit behind
any of them. Messages follow OpenAI's chat shape; images travel as decoded
frames or encoded bytes and each backend encodes them the way its server wants.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from .errors import BackendError

__all__ = [
    "ChatChunk",
    "ChatMessage",
    "ChatResult",
    "ChoiceResult",
    "ContentPart",
    "GenerationParams",
    "Health",
    "ImagePart",
    "ModelInfo",
    "TextPart",
    "Usage",
    "VLMBackend",
    "VLMTimings",
    "VideoPart",
]


@dataclass(frozen=True)
class TextPart:
    """Text inside a message."""

    text: str


@dataclass(frozen=True)
class ImagePart:
    """One image: a decoded BGR ``image`` or encoded ``data`` (JPEG, PNG, WebP) of type ``mime``.

    ``detail`` carries OpenAI's ``low``/``high``/``auto`` hint to backends that use it.
    """

    image: np.ndarray | None = None
    data: bytes | None = None
    mime: str = "image/jpeg"
    detail: str | None = None

    def __post_init__(self) -> None:
        if (self.image is None) == (self.data is None):
            raise ValueError("ImagePart needs exactly one of image or data")


@dataclass(frozen=True)
class VideoPart:
    """A short clip: decoded ``frames`` (oldest first) or an encoded MP4 in ``data``.

    ``fps`` / ``num_frames`` are the sampling the client asked for
    (NIM's ``media_io_kwargs``); at most one of them is set.
    """

    frames: tuple[np.ndarray, ...] = ()
    data: bytes | None = None
    fps: float | None = None
    num_frames: int | None = None


ContentPart = TextPart | ImagePart | VideoPart


@dataclass(frozen=True)
class ChatMessage:
    """One chat turn. ``content`` is plain text or a sequence of parts."""

    role: Literal["system", "user", "assistant"]
    content: str | tuple[ContentPart, ...]

    def text(self) -> str:
        """All text of the message joined with newlines."""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def parts(self) -> tuple[ContentPart, ...]:
        if isinstance(self.content, str):
            return (TextPart(self.content),)
        return self.content


@dataclass(frozen=True)
class GenerationParams:
    """How to generate. ``None`` means "the backend's default".

    ``json_schema`` asks for output that matches the schema (structured output);
    ``json_object`` for any JSON object. ``top_k``, ``min_p``,
    ``repetition_penalty`` (Ollama's ``repeat_penalty``), ``presence_penalty``
    and ``frequency_penalty`` are the sampling knobs vLLM, NIM and Ollama share;
    each backend sends them under its own names. ``extra`` carries backend-specific
    request fields (``media_io_kwargs``, ``keep_alive``...) that the backend
    documents; backends ignore keys they do not know.

    ``priority`` is ``"background"`` for requests nobody waits on (the describer,
    alert rules); a backend that queues requests itself (the ``local`` engine)
    starts every waiting ``"interactive"`` one (an API client) first. Backends
    that do not queue ignore it.
    """

    model: str | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    seed: int | None = None
    top_k: int | None = None
    min_p: float | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    json_schema: Mapping[str, Any] | None = None
    json_object: bool = False
    timeout: float | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    priority: Literal["interactive", "background"] = "interactive"

    def used(self) -> set[str]:
        """Names of the parameters that are set, for :attr:`VLMBackend.supports` checks."""
        names = {"max_tokens", "temperature", "top_p", "seed", "json_schema", "top_k", "min_p",
                 "repetition_penalty", "presence_penalty", "frequency_penalty"}
        used = {n for n in names if getattr(self, n) is not None}
        if self.stop:
            used.add("stop")
        if self.json_object:
            used.add("json_object")
        return used


@dataclass(frozen=True)
class Usage:
    """Token counts of one call."""

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass(frozen=True)
class VLMTimings:
    """Where the time of one call went, in seconds; ``None`` when the server does not say."""

    total_s: float = 0.0
    first_token_s: float | None = None
    prompt_s: float | None = None
    generate_s: float | None = None


@dataclass(frozen=True)
class ChatResult:
    """The answer to a :meth:`VLMBackend.chat` call.

    ``reasoning`` is what a reasoning model thought before answering (vLLM's and
    NIM's ``reasoning_content``, Ollama's ``thinking``); it is never part of
    ``text``, and describers and alerts ignore it.
    """

    text: str
    finish_reason: str = "stop"
    usage: Usage = field(default_factory=Usage)
    timings: VLMTimings = field(default_factory=VLMTimings)
    model: str = ""
    reasoning: str = ""


@dataclass(frozen=True)
class ChatChunk:
    """One piece of a streamed answer. The last chunk has ``finish_reason`` and ``usage`` set.

    ``reasoning`` is a piece of the model's reasoning (see :class:`ChatResult`);
    reasoning pieces come before the answer's text.
    """

    text: str = ""
    finish_reason: str | None = None
    usage: Usage | None = None
    timings: VLMTimings | None = None
    model: str = ""
    reasoning: str = ""


@dataclass(frozen=True)
class ChoiceResult:
    """The answer of :meth:`VLMBackend.choose` for one conversation.

    ``probabilities`` maps every choice to its probability (they sum to 1);
    ``choice`` is the most probable one.
    """

    choice: str
    probabilities: Mapping[str, float]

    @property
    def probability(self) -> float:
        """The probability of :attr:`choice`."""
        return float(self.probabilities[self.choice])


@dataclass(frozen=True)
class ModelInfo:
    """A model a backend can serve."""

    id: str
    owned_by: str = "framelens"
    created: int = 0
    capabilities: tuple[str, ...] = ()


@dataclass(frozen=True)
class Health:
    """Whether a backend can take requests now, and why not."""

    ready: bool
    detail: str = ""


class VLMBackend(ABC):
    """A vision-language model service.

    Implementations keep one pooled HTTP client (or one loaded engine) for their
    lifetime and are called from ``context.runner``'s event loop. Every failure
    is raised as :class:`~framelens.BackendError` with a ``kind`` and a message
    a user can act on (the URL that did not answer, ``ollama pull MODEL``...).

    ``supports`` lists the :class:`GenerationParams` names and input kinds
    (``"images"``, ``"video"``, ``"stream"``) the backend honours; callers
    reject requests that need anything else instead of ignoring it.
    ``"choices"`` there means :meth:`choose` works (scoring fixed answers
    without generating; the alerts evaluator then uses it).
    """

    name: str = "backend"
    supports: frozenset[str] = frozenset({"images", "stream", "max_tokens", "temperature"})

    @property
    def default_model(self) -> str | None:
        """The model used when a request names none (``None``: the backend has no default)."""
        return None

    @property
    def request_timeout(self) -> float:
        """Seconds one call may take before callers give up on it (describers wait this long)."""
        return 60.0

    async def discover_default_model(self) -> str | None:
        """Ask the server for its default model where it has one to tell; then :attr:`default_model`.

        Called at start and whenever a request names no model, so a backend whose
        default is "the first model the server lists" knows it before the first
        request. Never raises: a server that is down leaves the default unknown.
        """
        return self.default_model

    @abstractmethod
    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        """Answer in one piece."""

    @abstractmethod
    def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        """Answer piece by piece (an async generator). Errors after the first chunk raise too."""

    @abstractmethod
    async def models(self) -> list[ModelInfo]:
        """The models this backend can use now."""

    async def choose(self, conversations: Sequence[Sequence[ChatMessage]], choices: Sequence[str],
                     params: GenerationParams) -> list[ChoiceResult]:
        """Score ``choices`` (e.g. ``("yes", "no")``) as the answer of each conversation, without generating.

        Only for backends whose :attr:`supports` has ``"choices"``. Conversations that
        share a prefix (the same system prompt and image, different questions) are
        meant to share its cost: the local engine computes the prefix once, forks it
        per conversation and reads the choices' probabilities from one batched step.
        Returns one :class:`ChoiceResult` per conversation, in order. Default: raises
        ``BackendError(kind="unsupported")``.
        """
        raise BackendError(f"backend {self.name!r} cannot score choices; ask with chat() instead",
                           kind="unsupported")

    async def health(self) -> Health:
        """Whether the backend can serve requests now. Default: ask for the models."""
        try:
            await self.models()
        except Exception as exc:
            return Health(False, str(exc))
        return Health(True, "ready")

    async def aclose(self) -> None:
        """Release connections and engines. Default: nothing."""
