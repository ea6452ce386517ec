"""From a validated OpenAI request to backend messages and parameters.

The rule: a parameter the backend cannot honour is a 400 naming it, never
silently dropped. OpenAI parameters that do not change the answer (``user``,
``metadata``, ``service_tier: auto``) are accepted.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from framelens import ChatMessage, ContentPart, GenerationParams, ImagePart, TextPart, VideoPart, VLMBackend

from .errors import ApiError
from .live import LiveSources
from .media import MediaResolver
from .options import HttpOptions
from .schema import ChatCompletionRequest, ChatMessageIn, ImageContent, StreamContent, TextContent, VideoContent
from .video import VideoSampler

__all__ = ["Prepared", "RequestConverter", "check_supported"]


@dataclass(frozen=True)
class Prepared:
    """What to send to the backend, and how to answer."""

    messages: list[ChatMessage]
    params: GenerationParams
    model: str
    stream: bool
    include_usage: bool


def _unsupported(param: str, why: str) -> ApiError:
    return ApiError(400, f"{param}: {why}", param=param, code="unsupported_parameter")


def check_supported(backend_name: str, backend: VLMBackend, params: GenerationParams,
                    names: dict[str, str] | None = None) -> None:
    """400 for every set parameter the backend does not list in ``supports``.

    ``names`` maps :class:`GenerationParams` names to what the client called them.
    """
    names = names or {}
    for used in sorted(params.used() | set(params.extra)):
        if used not in backend.supports:
            shown = names.get(used, used)
            raise _unsupported(shown, f"not supported by the {backend_name!r} backend")


def _reject_unsupported_openai_fields(req: ChatCompletionRequest) -> None:
    if req.n not in (None, 1):
        raise _unsupported("n", "only n=1 is supported")
    if req.tools or req.functions:
        raise _unsupported("tools" if req.tools else "functions", "tool calling is not supported")
    if req.tool_choice not in (None, "none") or req.function_call not in (None, "none"):
        raise _unsupported("tool_choice" if req.tool_choice else "function_call", "tool calling is not supported")
    if req.logprobs or req.top_logprobs:
        raise _unsupported("logprobs" if req.logprobs else "top_logprobs", "log probabilities are not supported")
    if req.logit_bias:
        raise _unsupported("logit_bias", "not supported")
    if req.modalities and req.modalities != ["text"]:
        raise _unsupported("modalities", "only text output is supported")
    for name in ("audio", "prediction", "web_search_options"):
        if getattr(req, name) is not None:
            raise _unsupported(name, "not supported")
    if req.store:
        raise _unsupported("store", "completions are not stored")
    if req.service_tier not in (None, "auto", "default"):
        raise _unsupported("service_tier", "only auto/default")
    if req.stream_options is not None and not req.stream:
        raise ApiError(400, "stream_options is only allowed when stream is true", param="stream_options")


class RequestConverter:
    """Validates what the backend must honour and resolves every image and video in the messages."""

    def __init__(self, media: MediaResolver, video: VideoSampler, live: LiveSources, options: HttpOptions) -> None:
        self.media = media
        self.video = video
        self.live = live
        self.options = options

    async def prepare(self, req: ChatCompletionRequest, backend_name: str, backend: VLMBackend) -> Prepared:
        _reject_unsupported_openai_fields(req)
        model = req.model or backend.default_model or await backend.discover_default_model()
        if not model:
            raise ApiError(400, f"no model given and the {backend_name!r} backend has no default "
                           f"(set -c {backend_name}-model=NAME)", param="model", code="model_required")
        params, names = self._params(req, model)
        check_supported(backend_name, backend, params, names)
        messages = await self._messages(req, backend_name, backend)
        has_video = any(isinstance(p, VideoPart) for m in messages for p in m.parts())
        if has_video and req.media_io_kwargs is not None and req.media_io_kwargs.video is not None:
            # Only backends that take video get here (the others got frames), and they
            # sample themselves: the request's sampling travels with the video.
            video = req.media_io_kwargs.video.model_dump(exclude_none=True)
            params = dataclasses.replace(params, extra={**params.extra, "media_io_kwargs": {"video": video}})
        return Prepared(messages, params, model, bool(req.stream),
                        bool(req.stream_options and req.stream_options.include_usage))

    def _params(self, req: ChatCompletionRequest, model: str) -> tuple[GenerationParams, dict[str, str]]:
        names: dict[str, str] = {"json_schema": "response_format", "json_object": "response_format"}
        limits = [v for v in (req.max_tokens, req.max_completion_tokens) if v is not None]
        names["max_tokens"] = "max_tokens" if req.max_completion_tokens is None else "max_completion_tokens"
        extra: dict[str, Any] = {}
        if req.reasoning_effort is not None:
            extra["reasoning_effort"] = req.reasoning_effort
        if req.mm_processor_kwargs:
            extra["mm_processor_kwargs"] = req.mm_processor_kwargs
        fmt = req.response_format
        json_schema: dict[str, Any] | None = None
        if fmt is not None and fmt.type == "json_schema":
            json_schema = dict(fmt.json_schema.schema_ or {"type": "object"})
        stop = (req.stop,) if isinstance(req.stop, str) else tuple(req.stop or ())
        params = GenerationParams(
            model=model,
            max_tokens=min(limits) if limits else None,
            temperature=req.temperature,
            top_p=req.top_p,
            stop=stop,
            seed=req.seed,
            top_k=req.top_k,
            min_p=req.min_p,
            repetition_penalty=req.repetition_penalty,
            # 0 is OpenAI's default and changes nothing: no reason to refuse it anywhere
            presence_penalty=req.presence_penalty or None,
            frequency_penalty=req.frequency_penalty or None,
            json_schema=json_schema,
            json_object=fmt is not None and fmt.type == "json_object",
            timeout=self.options.request_timeout,
            extra=extra,
        )
        return params, names

    async def _messages(self, req: ChatCompletionRequest, backend_name: str, backend: VLMBackend) -> list[ChatMessage]:
        media_parts = sum(
            1 for m in req.messages if isinstance(m.content, list)
            for p in m.content if isinstance(p, (ImageContent, StreamContent))
        )
        videos = sum(1 for m in req.messages if isinstance(m.content, list)
                     for p in m.content if isinstance(p, VideoContent))
        if media_parts > self.options.max_images:
            raise ApiError(400, f"{media_parts} images in one request; at most {self.options.max_images} "
                           "(-c http-max-images)", param="messages", code="too_many_images")
        if videos > 1:
            raise ApiError(400, "at most 1 video may be given in one request", param="messages",
                           code="too_many_videos")
        if (media_parts or videos) and "images" not in backend.supports and "video" not in backend.supports:
            raise _unsupported("messages", f"the {backend_name!r} backend does not take images")
        out = []
        for i, message in enumerate(req.messages):
            out.append(await self._message(i, message, req, backend))
        return out

    async def _message(self, i: int, m: ChatMessageIn, req: ChatCompletionRequest, backend: VLMBackend) -> ChatMessage:
        where = f"messages.{i}"
        if m.tool_calls:
            raise _unsupported(f"{where}.tool_calls", "tool calling is not supported")
        for name in ("function_call", "audio"):
            if getattr(m, name) is not None:
                raise _unsupported(f"{where}.{name}", "not supported")
        role = "system" if m.role == "developer" else m.role
        if m.content is None:
            if m.role == "assistant":
                return ChatMessage("assistant", "")
            raise ApiError(400, f"{where}.content is required", param=f"{where}.content")
        if isinstance(m.content, str):
            return ChatMessage(role, m.content)
        parts: list[ContentPart] = []
        for j, part in enumerate(m.content):
            param = f"{where}.content.{j}"
            if isinstance(part, TextContent):
                parts.append(TextPart(part.text))
                continue
            if role != "user":
                raise ApiError(400, f"{param}: images and videos are only allowed in user messages", param=param)
            if isinstance(part, ImageContent):
                ref = part.image_url
                url, detail = (ref, None) if isinstance(ref, str) else (ref.url, ref.detail)
                parts.append(await self.media.image(url, f"{param}.image_url.url", detail))
            elif isinstance(part, StreamContent):
                stream = self.live.get(part.stream.stream_id, f"{param}.stream.stream_id")
                frame = await self.live.newest(stream, f"{param}.stream.stream_id")
                parts.append(ImagePart(image=frame.image))
            else:
                ref_v = part.video_url
                url = ref_v if isinstance(ref_v, str) else ref_v.url
                sampling = req.media_io_kwargs.video if req.media_io_kwargs else None
                takes_video = "video" in backend.supports
                video = await self.video.video(url, sampling, f"{param}.video_url.url", encoded_ok=takes_video)
                parts.extend(_as_images(video) if not takes_video else [video])
        return ChatMessage(role, tuple(parts))


def _as_images(video: VideoPart) -> Sequence[ContentPart]:
    """Sampled frames as separate images, for backends that take no video."""
    return [ImagePart(image=frame) for frame in video.frames]

