"""Pydantic models of the OpenAI Chat Completions request (validation and the OpenAPI document).

Unknown request fields are rejected with a 400 naming them, as OpenAI does,
rather than silently ignored. Fields that OpenAI clients echo back on
assistant turns (``refusal``, ``tool_calls: []``...) are accepted when empty.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, model_validator

__all__ = [
    "ChatCompletion",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "ContentPartIn",
    "ErrorResponse",
    "ImageContent",
    "MAX_TOKENS",
    "MediaIOKwargs",
    "ModelList",
    "ResponseFormat",
    "StreamContent",
    "StrictModel",
    "TextContent",
    "VideoContent",
    "VideoSampling",
]

MAX_TOKENS = 32768
"""The most tokens any route lets one request ask for (``/infer``, chat, Ollama's ``num_predict``)."""


class StrictModel(BaseModel):
    """Base of every request model: unknown fields are errors."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


# -- content parts ---------------------------------------------------------------------------


class TextContent(StrictModel):
    type: Literal["text"]
    text: str


class ImageURL(StrictModel):
    url: str = Field(
        min_length=1,
        description="data:image/{jpeg,png,webp};base64,..., http(s)://..., file://... (allowed directories), "
        "or a live source: v4l2:///dev/videoN, csi://N, rtsp://..., stream://ID",
    )
    detail: Literal["auto", "low", "high"] | None = None


class ImageContent(StrictModel):
    type: Literal["image_url"]
    image_url: ImageURL | str


class VideoURL(StrictModel):
    url: str = Field(min_length=1, description="A video file URL, a data:video/...;base64 URI, or a live source")


class VideoContent(StrictModel):
    type: Literal["video_url"]
    video_url: VideoURL | str


class StreamRef(StrictModel):
    stream_id: str = Field(min_length=1)


class StreamContent(StrictModel):
    """Jetson Platform Services' extension: the newest frame of an open stream."""

    type: Literal["stream"]
    stream: StreamRef


ContentPartIn = Annotated[
    TextContent | ImageContent | VideoContent | StreamContent, Field(discriminator="type")
]


class ChatMessageIn(StrictModel):
    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[ContentPartIn] | None = None
    name: str | None = None
    # Echoed back by clients that append the previous response message as is.
    refusal: str | None = None
    tool_calls: list[dict[str, Any]] | None = None
    function_call: dict[str, Any] | None = None
    audio: dict[str, Any] | None = None
    annotations: list[dict[str, Any]] | None = None
    reasoning_content: str | None = None


# -- request options ---------------------------------------------------------------------------


class StreamOptions(StrictModel):
    include_usage: bool = False
    include_obfuscation: bool | None = None
    continuous_usage_stats: bool | None = None


class JSONSchemaSpec(StrictModel):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class ResponseFormatText(StrictModel):
    type: Literal["text"]


class ResponseFormatJSONObject(StrictModel):
    type: Literal["json_object"]


class ResponseFormatJSONSchema(StrictModel):
    type: Literal["json_schema"]
    json_schema: JSONSchemaSpec


ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJSONObject | ResponseFormatJSONSchema, Field(discriminator="type")
]


class VideoSampling(StrictModel):
    fps: float | None = Field(None, gt=0, le=240)
    num_frames: int | None = Field(None, ge=1, le=1024)

    @model_validator(mode="after")
    def _one_of(self) -> VideoSampling:
        if self.fps is not None and self.num_frames is not None:
            raise ValueError("give either fps or num_frames, not both")
        return self


class MediaIOKwargs(StrictModel):
    """NIM/vLLM's ``media_io_kwargs``: how to sample ``video_url`` parts."""

    video: VideoSampling | None = None


class ChatCompletionRequest(StrictModel):
    """A chat completion request. Numbers and booleans are strict: ``"12"`` or ``true`` for
    ``max_tokens`` is a 400, not a coercion, and token counts share ``/infer``'s bound."""

    model: str | None = Field(None, description="Model id; omitted = the backend's default model")
    messages: list[ChatMessageIn] = Field(min_length=1)
    stream: StrictBool | None = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS)
    max_completion_tokens: StrictInt | None = Field(None, ge=1, le=MAX_TOKENS)
    temperature: StrictFloat | None = Field(None, ge=0, le=2)
    top_p: StrictFloat | None = Field(None, ge=0, le=1)
    stop: str | list[str] | None = None
    seed: StrictInt | None = None
    n: StrictInt | None = Field(None, ge=1, le=128)
    response_format: ResponseFormat | None = None
    frequency_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    presence_penalty: StrictFloat | None = Field(None, ge=-2, le=2)
    # vLLM/NIM sampling extras that Open WebUI and LangChain send
    top_k: StrictInt | None = Field(None, ge=-1)
    min_p: StrictFloat | None = Field(None, ge=0, le=1)
    repetition_penalty: StrictFloat | None = Field(None, gt=0)
    logit_bias: dict[str, float] | None = None
    logprobs: StrictBool | None = None
    top_logprobs: StrictInt | None = Field(None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: StrictBool | None = None
    functions: list[dict[str, Any]] | None = None
    function_call: str | dict[str, Any] | None = None
    reasoning_effort: str | None = None
    modalities: list[str] | None = None
    audio: dict[str, Any] | None = None
    prediction: dict[str, Any] | None = None
    web_search_options: dict[str, Any] | None = None
    store: StrictBool | None = None
    metadata: dict[str, str] | None = None
    service_tier: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    media_io_kwargs: MediaIOKwargs | None = None
    mm_processor_kwargs: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _stops(self) -> ChatCompletionRequest:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop: at most 4 sequences")
        return self


# -- responses (for the OpenAPI document; handlers build plain dicts) ------------------------------


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow")


class ErrorInfo(_Open):
    message: str
    type: str
    param: str | None = None
    code: str | None = None


class ErrorResponse(_Open):
    error: ErrorInfo


class AssistantMessage(_Open):
    role: Literal["assistant"]
    content: str | None


class Choice(_Open):
    index: int
    message: AssistantMessage
    finish_reason: str | None
    logprobs: None = None


class UsageOut(_Open):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Open):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    choices: list[Choice]
    usage: UsageOut


class ModelOut(_Open):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str


class ModelList(_Open):
    object: Literal["list"]
    data: list[ModelOut]
