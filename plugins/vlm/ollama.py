"""The ``ollama`` backend and describer: Ollama's native API over HTTP.

The backend speaks ``/api/chat`` (images as raw base64, NDJSON streaming,
``format`` for structured output, ``options``, ``keep_alive``), lists models
with ``/api/tags`` and checks with ``/api/show`` that a model can see images
before sending it any. The ``ollama`` processor is the describer of
:mod:`framelens.plugins.vlm.describer` on top of it, with wasmVision's option
names and defaults (``-c ollama-url=... -c ollama-model=llava -c ollama-prompt=...``).
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any

import httpx
from pydantic import field_validator

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
from .media import image_payload
from .pool import HttpBackendOptions, ServerPool, parse_json_error, register_pool_metrics
from .transport import iter_lines

__all__ = ["OllamaBackend", "OllamaDescriberOptions", "OllamaOptions"]

log = logging.getLogger("framelens.backend.ollama")

DEFAULT_PROMPT = "Describe what is in this picture in highly complimentary terms using 6 words or less."


class OllamaOptions(HttpBackendOptions):
    """Options of the ``ollama`` backend (``-c ollama-KEY=VALUE``)."""

    url: CommaList = Field(default_factory=lambda: ["http://localhost:11434"],
                     description="Ollama base URL; several, comma-separated, spread the load and fail over")
    model: str = Field("llava", min_length=1, description="Vision model to use (see `ollama list`)")
    keep_alive: str | None = Field(
        None, description="How long Ollama keeps the model loaded after a call (5m, 1h, -1 = forever)")
    num_ctx: int | None = Field(None, ge=1, description="Context window in tokens (Ollama's num_ctx)")
    check_vision: bool = Field(True, description="Ask /api/show that the model can see images before using it")

    @field_validator("keep_alive")
    @classmethod
    def _check_keep_alive(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.strip()
        if value.lstrip("-").replace(".", "", 1).isdigit():
            return value  # seconds
        if not re.fullmatch(r"-?(\d+(\.\d*)?(ns|us|µs|ms|s|m|h))+", value):
            raise ValueError("expected a duration such as 30s, 5m, 1h or -1")
        return value


def _ollama_error(status: int, body: bytes, url: str) -> BackendError:
    """A :class:`BackendError` for an Ollama ``{"error": "..."}`` answer."""
    message = parse_json_error(body)
    lowered = message.lower()
    if status == 404 and "not found" in lowered:
        model = message.split("'")[1] if message.count("'") >= 2 else (
            message.split('"')[1] if message.count('"') >= 2 else "")
        pull = f"ollama pull {model}" if model else "ollama pull MODEL"
        return BackendError(f"Ollama at {url} has no model {model or '(unnamed)'!r}: run `{pull}` on that "
                            f"machine, or pick an installed one (`ollama list`)", kind="model_not_found",
                            status=404, param="model")
    if "missing data required for image input" in lowered or "does not support" in lowered:
        return BackendError(f"Ollama at {url}: {message} (pick a vision model such as llava, moondream, "
                            "gemma3 or qwen2.5vl)", kind="unsupported", status=status)
    if status in (429, 503):  # 503: the request queue is full (OLLAMA_MAX_QUEUE)
        return BackendError(f"Ollama at {url} is busy: {message}", kind="rate_limited", status=status)
    if status in (401, 403):
        return BackendError(f"Ollama at {url} refused the request (HTTP {status}): {message}; check the "
                            "api-key option", kind="auth", status=status)
    if status in (400, 422):
        return BackendError(f"Ollama at {url} rejected the request: {message}", kind="bad_request", status=status)
    return BackendError(f"Ollama at {url} failed (HTTP {status}): {message}", kind="server", status=status)


def _ns(value: Any) -> float | None:
    return float(value) / 1e9 if isinstance(value, (int, float)) and value > 0 else None


class OllamaBackend(VLMBackend):
    """Ollama's native ``/api/chat``; see the module docstring.

    The sampling knobs of :class:`GenerationParams` go into Ollama's ``options``
    (``repetition_penalty`` as ``repeat_penalty``). ``GenerationParams.extra``
    keys it understands: ``keep_alive``, ``think``, ``num_ctx`` and ``options``
    (merged into Ollama's options last). The model's ``thinking`` comes back as
    ``ChatResult.reasoning``. Video is not supported (send frames as images).
    """

    name = "ollama"
    supports = frozenset({
        "images", "stream", "max_tokens", "temperature", "top_p", "seed", "stop", "json_schema", "json_object",
        "top_k", "min_p", "repetition_penalty", "frequency_penalty", "presence_penalty",
        "keep_alive", "think", "num_ctx", "options",
    })
    _options = {"top_k": "top_k", "min_p": "min_p", "repetition_penalty": "repeat_penalty",
                "presence_penalty": "presence_penalty", "frequency_penalty": "frequency_penalty"}

    def __init__(self, options: OllamaOptions) -> None:
        self.options = options
        headers = {"Accept": "application/json"}
        if options.api_key is not None:
            headers["Authorization"] = f"Bearer {options.api_key.get_secret_value()}"
        self.pool = ServerPool(
            "Ollama", options.url, parse_error=_ollama_error,
            unreachable_hint="Is Ollama running there (`ollama serve`)? Set the URL with the url option "
                             "(-c ollama-url=http://HOST:11434).",
            headers=headers, timeout=options.timeout, connect_timeout=options.connect_timeout,
            retries=options.retries, max_in_flight=options.max_in_flight, probe_path="/api/version",
        )
        self._vision_ok: set[str] = set()

    @property
    def default_model(self) -> str | None:
        return self.options.model

    @property
    def request_timeout(self) -> float:
        return self.options.timeout

    # -- requests ----------------------------------------------------------------------------

    def _payload(self, messages: Sequence[ChatMessage], params: GenerationParams, stream: bool) -> dict[str, Any]:
        out_messages = []
        for m in messages:
            text: list[str] = []
            images: list[str] = []
            for part in m.parts():
                if isinstance(part, TextPart):
                    text.append(part.text)
                elif isinstance(part, ImagePart):
                    data, _mime = image_payload(part)
                    images.append(base64.b64encode(data).decode("ascii"))  # raw, no data: prefix
                elif isinstance(part, VideoPart):
                    raise BackendError("Ollama takes no video; send the frames as images", kind="unsupported",
                                       param="video")
            msg: dict[str, Any] = {"role": m.role, "content": "\n".join(text)}
            if images:
                msg["images"] = images
            out_messages.append(msg)
        options: dict[str, Any] = {}
        if params.temperature is not None:
            options["temperature"] = params.temperature
        if params.max_tokens is not None:
            options["num_predict"] = params.max_tokens
        if params.top_p is not None:
            options["top_p"] = params.top_p
        if params.seed is not None:
            options["seed"] = params.seed
        if params.stop:
            options["stop"] = list(params.stop)
        for field, option in self._options.items():
            if getattr(params, field) is not None:
                options[option] = getattr(params, field)
        num_ctx = params.extra.get("num_ctx", self.options.num_ctx)
        if num_ctx is not None:
            options["num_ctx"] = num_ctx
        options.update(params.extra.get("options") or {})
        body: dict[str, Any] = {"model": params.model or self.options.model, "messages": out_messages,
                                "stream": stream}
        if options:
            body["options"] = options
        if params.json_schema is not None:
            body["format"] = dict(params.json_schema)
        elif params.json_object:
            body["format"] = "json"
        keep_alive = params.extra.get("keep_alive", self.options.keep_alive)
        if keep_alive is not None:
            body["keep_alive"] = _keep_alive_value(keep_alive)
        if "think" in params.extra:
            body["think"] = params.extra["think"]
        return body

    async def _check_vision(self, messages: Sequence[ChatMessage], model: str, timeout: float | None) -> None:
        if not self.options.check_vision or model in self._vision_ok:
            return
        if not any(isinstance(p, ImagePart) for m in messages for p in m.parts()):
            return
        info = await self.pool.request("POST", "/api/show", json={"model": model}, timeout=timeout)
        caps = info.get("capabilities") if isinstance(info, dict) else None
        if isinstance(caps, list) and "vision" not in caps:
            raise BackendError(
                f"Ollama model {model!r} cannot see images (its capabilities: {', '.join(caps) or 'none'}); "
                "pick a vision model such as llava, moondream, gemma3 or qwen2.5vl", kind="unsupported",
                param="model")
        self._vision_ok.add(model)  # older servers list no capabilities: let the model decide

    async def chat(self, messages: Sequence[ChatMessage], params: GenerationParams) -> ChatResult:
        body = self._payload(messages, params, stream=False)
        started = time.monotonic()
        await self._check_vision(messages, body["model"], params.timeout)
        data = await self.pool.request("POST", "/api/chat", json=body, timeout=params.timeout)
        if not isinstance(data, dict) or "message" not in data:
            raise BackendError(f"Ollama answered /api/chat with an unexpected body: {str(data)[:200]}",
                               kind="server")
        usage, timings = _stats(data, time.monotonic() - started, None)
        return ChatResult(text=str(data["message"].get("content") or ""),
                          finish_reason=str(data.get("done_reason") or "stop"), usage=usage, timings=timings,
                          model=str(data.get("model") or body["model"]),
                          reasoning=str(data["message"].get("thinking") or ""))

    async def stream(self, messages: Sequence[ChatMessage], params: GenerationParams) -> AsyncIterator[ChatChunk]:
        body = self._payload(messages, params, stream=True)
        started = time.monotonic()
        await self._check_vision(messages, body["model"], params.timeout)
        first: float | None = None
        async with self.pool.stream("POST", "/api/chat", json=body, timeout=params.timeout) as response:
            url = str(response.request.url)
            lines = iter_lines(response)
            while True:
                try:
                    line = await lines.__anext__()
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise _reading_error(self.pool, exc, url) from None
                if not line.strip():
                    continue
                try:
                    data = json.loads(line)
                except ValueError:
                    raise BackendError(f"Ollama sent a line that is not JSON: {line[:200]!r}",
                                       kind="server") from None
                if "error" in data:  # an error after the 200 arrives as its own NDJSON line
                    error = _ollama_error(500, line.encode(), url.rsplit("/api/", 1)[0])
                    raise BackendError(f"Ollama at {url} failed mid-answer: {data['error']}",
                                       kind="unsupported" if error.kind == "unsupported" else "server")
                message = data.get("message") or {}
                text = str(message.get("content") or "")
                thinking = str(message.get("thinking") or "")
                if first is None and (text or thinking):
                    first = time.monotonic() - started
                if data.get("done"):
                    usage, timings = _stats(data, time.monotonic() - started, first)
                    yield ChatChunk(text=text, finish_reason=str(data.get("done_reason") or "stop"),
                                    usage=usage, timings=timings, model=str(data.get("model") or ""),
                                    reasoning=thinking)
                    return
                if text or thinking:
                    yield ChatChunk(text=text, model=str(data.get("model") or ""), reasoning=thinking)
        raise BackendError("Ollama ended the stream without its final (done) line", kind="server")

    # -- models and health -------------------------------------------------------------------

    async def models(self) -> list[ModelInfo]:
        data = await self.pool.request("GET", "/api/tags")
        out = []
        for m in (data or {}).get("models") or []:
            created = 0
            try:
                created = int(datetime.fromisoformat(str(m.get("modified_at", "")).replace("Z", "+00:00"))
                              .timestamp())
            except ValueError:
                pass
            out.append(ModelInfo(id=str(m.get("name") or m.get("model")), owned_by="library", created=created))
        return out

    async def health(self) -> Health:
        try:
            names = [m.id for m in await self.models()]
        except BackendError as exc:
            return Health(False, str(exc))
        model = self.options.model
        if model not in names and f"{model}:latest" not in names:
            return Health(False, f"Ollama has no model {model!r}: run `ollama pull {model}`")
        return Health(True, f"ready ({model})")

    async def aclose(self) -> None:
        await self.pool.aclose()


def _keep_alive_value(value: Any) -> Any:
    """Ollama takes seconds as a number and durations as strings."""
    if isinstance(value, str) and value.lstrip("-").replace(".", "", 1).isdigit():
        number = float(value)
        return int(number) if number.is_integer() else number
    return value


def _stats(data: dict[str, Any], total: float, first: float | None) -> tuple[Usage, VLMTimings]:
    usage = Usage(prompt_tokens=int(data.get("prompt_eval_count") or 0),
                  completion_tokens=int(data.get("eval_count") or 0))
    timings = VLMTimings(total_s=total, first_token_s=first, prompt_s=_ns(data.get("prompt_eval_duration")),
                         generate_s=_ns(data.get("eval_duration")))
    return usage, timings


def _reading_error(pool: ServerPool, exc: Exception, url: str) -> BackendError:
    if isinstance(exc, httpx.HTTPError):
        return pool.translate(exc, url)
    return BackendError(f"reading the answer from {url} failed: {exc}", kind="server")


# -- registration ------------------------------------------------------------------------------


class OllamaDescriberOptions(DescriberOptions, OllamaOptions):
    """Options of the ``ollama`` describer: the backend's plus what and how often to ask."""

    prompt: str = Field(DEFAULT_PROMPT, min_length=1, description="What to ask about each frame")


def register(register_backend: RegisterFn) -> None:
    def make(options: OllamaOptions, context: Context, id: str) -> OllamaBackend:
        backend = OllamaBackend(options)
        register_pool_metrics(context, id, backend.pool)
        return backend

    register_backend("ollama", make, options=OllamaOptions,
                     help="Ollama's native API (/api/chat) on one or more servers")
