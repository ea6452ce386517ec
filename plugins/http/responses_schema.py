"""Pydantic models of the OpenAI Responses API request (``POST /v1/responses``).

Strict like the chat-completions models: an unknown field is a 400 naming it.
Input items that framelens cannot act on (tool calls, files) validate here and
are refused by the handler with a message that names the item.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Discriminator, Field, Tag

from .schema import StrictModel

__all__ = [
    "InputImage",
    "InputMessage",
    "InputText",
    "OtherItem",
    "OutputText",
    "ReasoningItemIn",
    "ResponseObject",
    "ResponsesRequest",
    "TextFormatJSONSchema",
]


# -- content parts ---------------------------------------------------------------------------------


class InputText(StrictModel):
    type: Literal["input_text"]
    text: str


class InputImage(StrictModel):
    type: Literal["input_image"]
    image_url: str | None = Field(
        None, min_length=1,
        description="data:image/...;base64,..., http(s)://..., file://... (allowed directories), or a live "
                    "source: v4l2:///dev/videoN, csi://N, rtsp://..., stream://ID")
    file_id: str | None = None
    detail: Literal["auto", "low", "high"] | None = None


class InputFile(StrictModel):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None
    file_url: str | None = None
    filename: str | None = None


class OutputText(StrictModel):
    """Assistant turns that clients send back as history."""

    type: Literal["output_text"]
    text: str
    annotations: list[dict[str, Any]] = Field(default_factory=list)
    logprobs: list[dict[str, Any]] | None = None


class Refusal(StrictModel):
    type: Literal["refusal"]
    refusal: str


InputPart = Annotated[InputText | InputImage | InputFile | OutputText | Refusal, Field(discriminator="type")]


# -- input items -----------------------------------------------------------------------------------


class InputMessage(StrictModel):
    """A message item (``type`` may be left out, as the SDK's "easy" input messages do)."""

    type: Literal["message"] | None = None
    role: Literal["user", "system", "developer", "assistant"]
    content: str | list[InputPart]
    id: str | None = None
    status: Literal["in_progress", "completed", "incomplete"] | None = None


class ReasoningItemIn(StrictModel):
    """A reasoning item of an earlier answer, sent back as history; the model does not see it."""

    type: Literal["reasoning"]
    id: str | None = None
    summary: list[dict[str, Any]] = Field(default_factory=list)
    content: list[dict[str, Any]] | None = None
    encrypted_content: str | None = None
    status: str | None = None


class OtherItem(BaseModel):
    """Tool calls, their outputs, item references...: validated by ``type`` only, refused by the handler."""

    model_config = ConfigDict(extra="allow")
    type: str


def _item_kind(value: Any) -> str:
    kind = value.get("type") if isinstance(value, dict) else getattr(value, "type", None)
    if kind in (None, "message"):
        return "message"
    return "reasoning" if kind == "reasoning" else "other"


InputItem = Annotated[
    Annotated[InputMessage, Tag("message")] | Annotated[ReasoningItemIn, Tag("reasoning")]
    | Annotated[OtherItem, Tag("other")],
    Discriminator(_item_kind),
]


# -- options ---------------------------------------------------------------------------------------


class TextFormatText(StrictModel):
    type: Literal["text"]


class TextFormatJSONObject(StrictModel):
    type: Literal["json_object"]


class TextFormatJSONSchema(StrictModel):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None


TextFormat = Annotated[TextFormatText | TextFormatJSONObject | TextFormatJSONSchema, Field(discriminator="type")]


class TextOptions(StrictModel):
    format: TextFormat | None = None
    verbosity: Literal["low", "medium", "high"] | None = None


class ReasoningOptions(StrictModel):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: Literal["auto", "concise", "detailed"] | None = None
    generate_summary: Literal["auto", "concise", "detailed"] | None = None


class ResponseStreamOptions(StrictModel):
    include_obfuscation: bool | None = None


class ResponsesRequest(StrictModel):
    model: str | None = Field(None, description="Model id; omitted = the backend's default model")
    input: str | list[InputItem] = Field(description="A prompt, or messages with input_text/input_image parts")
    instructions: str | None = None
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, ge=0, le=1)
    text: TextOptions | None = None
    reasoning: ReasoningOptions | None = None
    metadata: dict[str, str] | None = None
    store: bool | None = None
    stream: bool | None = False
    stream_options: ResponseStreamOptions | None = None
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None
    background: bool | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    max_tool_calls: int | None = None
    include: list[str] | None = None
    truncation: Literal["auto", "disabled"] | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    prompt: dict[str, Any] | None = None
    service_tier: str | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None


class ResponseObject(BaseModel):
    """The response object (for the OpenAPI document; the handler builds plain dicts)."""

    model_config = ConfigDict(extra="allow")
    id: str
    object: Literal["response"]
    created_at: int
    status: str
    model: str
    output: list[dict[str, Any]]
    output_text: str
    usage: dict[str, Any]
