"""What the Ollama and OpenAI-compatible fakes share: answers, tokens, images, schemas."""

from __future__ import annotations

import base64
import binascii
import os
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

__all__ = [
    "DecodedVideo",
    "ReplyFn",
    "decode_image_bytes",
    "decode_video_bytes",
    "go_base64",
    "instance_for_schema",
    "tokens",
]


@dataclass(frozen=True)
class DecodedVideo:
    """A clip a fake received: its frames (BGR) and the container's fps."""

    frames: tuple[np.ndarray, ...]
    fps: float


ReplyFn = Callable[[Mapping[str, Any], list[np.ndarray], list[DecodedVideo]], str]
"""``reply(body, images, videos) -> text``: what the fake model answers to a request."""


def default_reply(body: Mapping[str, Any], images: list[np.ndarray], videos: list[DecodedVideo]) -> str:
    """A deterministic answer that names what the model was shown."""
    parts = [f"an image of {im.shape[1]}x{im.shape[0]}" for im in images]
    parts += [f"a video of {len(v.frames)} frames" for v in videos]
    return ("I see " + " and ".join(parts) + ".") if parts else "Hello! How can I help you today?"


def tokens(text: str) -> list[str]:
    """Split ``text`` into the pieces a streaming server would send (words with their spaces)."""
    out: list[str] = []
    for i, word in enumerate(text.split(" ")):
        out.append(word if i == 0 else " " + word)
    return [t for t in out if t] or [""]


def go_base64(value: str) -> bytes:
    """Decode standard base64 the way Go's ``encoding/json`` decodes a ``[]byte`` field.

    Raises :class:`ValueError` with Go's message, e.g. ``illegal base64 data at input byte 4``
    for a ``data:image/jpeg;base64,...`` string.
    """
    alphabet = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/="
    raw = value.encode("ascii", "replace")
    stripped = raw.replace(b"\r", b"").replace(b"\n", b"")  # Go skips newlines
    for i, ch in enumerate(stripped):
        if ch not in alphabet or (ch == ord("=") and i < len(stripped) - 2):
            raise ValueError(f"illegal base64 data at input byte {i}")
    try:
        return base64.b64decode(stripped, validate=True)
    except binascii.Error:
        raise ValueError(f"illegal base64 data at input byte {len(stripped)}") from None


def decode_image_bytes(data: bytes) -> np.ndarray | None:
    """The decoded BGR image, or ``None`` when the bytes are not an image."""
    array = np.frombuffer(data, np.uint8)
    return cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None


def decode_video_bytes(data: bytes) -> DecodedVideo | None:
    """Decode an MP4 (or any container OpenCV reads); ``None`` if it is not a video."""
    if len(data) < 12 or data[4:8] != b"ftyp":
        return None
    fd, path = tempfile.mkstemp(suffix=".mp4")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        cap = cv2.VideoCapture(path)
        fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        frames = []
        while len(frames) < 1000:
            ok, frame = cap.read()
            if not ok:
                break
            frames.append(frame)
        cap.release()
    finally:
        os.unlink(path)
    return DecodedVideo(tuple(frames), fps) if frames else None


def instance_for_schema(schema: Any, text: str) -> Any:
    """A value that satisfies a (simple) JSON schema; strings get ``text``.

    Handles object/array/string/number/integer/boolean/enum/const, which is what
    structured-output prompts use; a real model would be constrained the same way.
    """
    if not isinstance(schema, Mapping):
        return text
    if "const" in schema:
        return schema["const"]
    if "enum" in schema and schema["enum"]:
        return schema["enum"][0]
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "string")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties") or {}
        return {name: instance_for_schema(sub, text) for name, sub in props.items()}
    if kind == "array":
        return [instance_for_schema(schema.get("items") or {}, text)]
    if kind == "boolean":
        return True
    if kind == "integer":
        return int(schema.get("minimum", 0))
    if kind == "number":
        return float(schema.get("minimum", 0))
    return text
