"""Request checks of the OpenAI-compatible fake, as vLLM/NIM apply them."""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

from ._vlm import DecodedVideo

__all__ = ["KNOWN_FIELDS", "ApiError", "b64", "check_media_kwargs", "check_response_format"]

KNOWN_FIELDS = {
    "model", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "n", "stop",
    "stream", "stream_options", "seed", "response_format", "frequency_penalty", "presence_penalty",
    "logprobs", "top_logprobs", "user", "tools", "tool_choice", "parallel_tool_calls", "logit_bias",
    "media_io_kwargs", "mm_processor_kwargs", "nvext", "reasoning_effort",
    # vLLM's extra sampling parameters (NIM passes them on)
    "top_k", "min_p", "repetition_penalty",
}
"""Top-level request fields the fake understands (others are ignored unless ``strict_fields``)."""

_SCHEMA_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class ApiError(Exception):
    """A request the fake rejects: message, HTTP status, the parameter at fault."""

    def __init__(self, message: str, status: int = 400, param: str | None = None,
                 type_: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param
        self.type = type_ or {400: "BadRequestError", 401: "AuthenticationError",
                              404: "NotFoundError"}.get(status, "InternalServerError")


def check_response_format(rf: Any) -> None:
    if rf is None:
        return
    if not isinstance(rf, dict) or rf.get("type") not in ("text", "json_object", "json_schema"):
        raise ApiError("response_format.type must be one of text, json_object, json_schema",
                        param="response_format")
    if rf["type"] == "json_schema":
        js = rf.get("json_schema")
        if not isinstance(js, dict) or not isinstance(js.get("name"), str) \
                or not _SCHEMA_NAME.match(js["name"]):
            raise ApiError("response_format.json_schema.name is required (a-z, A-Z, 0-9, _ and -, "
                            "at most 64 characters)", param="response_format")
        if not isinstance(js.get("schema"), dict):
            raise ApiError("response_format.json_schema.schema must be a JSON schema object",
                            param="response_format")


def check_media_kwargs(kwargs: Any, videos: list[DecodedVideo]) -> None:
    if kwargs is None:
        return
    video = kwargs.get("video") if isinstance(kwargs, dict) else None
    if not isinstance(kwargs, dict) or (video is not None and not isinstance(video, dict)):
        raise ApiError("media_io_kwargs must map a modality to its options", param="media_io_kwargs")
    if not video:
        return
    if "fps" in video and "num_frames" in video:
        raise ApiError("media_io_kwargs.video: specify either fps or num_frames, not both",
                        param="media_io_kwargs")
    n = video.get("num_frames")
    if n is not None and (not isinstance(n, int) or n < 1):
        raise ApiError("media_io_kwargs.video.num_frames must be a positive integer", param="media_io_kwargs")
    fps = video.get("fps")
    if fps is not None and (not isinstance(fps, (int, float)) or fps <= 0):
        raise ApiError("media_io_kwargs.video.fps must be positive", param="media_io_kwargs")
    for v in videos:
        if n is not None and n > len(v.frames):
            raise ApiError(f"num_frames={n} is more than the video has ({len(v.frames)})",
                            param="media_io_kwargs")
        if fps is not None and v.fps and fps > v.fps:
            raise ApiError(f"fps={fps} is higher than the video's ({v.fps:g})", param="media_io_kwargs")


def b64(data: str, where: str) -> bytes:
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(f"{where}: invalid base64 data", param=where) from None
