"""Images and clips in the form VLM servers take: encoded bytes, base64, MP4.

Shared by the HTTP backends (Ollama wants raw base64, OpenAI-compatible
servers want ``data:`` URIs) so both encode the same way.
"""

from __future__ import annotations

import base64
import os
import tempfile
from collections.abc import Sequence

import cv2
import numpy as np

from framelens import ImagePart, encode_jpeg, sniff_image_type

__all__ = ["DEFAULT_JPEG_QUALITY", "data_uri", "encode_mp4", "image_payload"]

DEFAULT_JPEG_QUALITY = 85
"""Quality used when a backend has to encode a decoded frame itself."""


def image_payload(part: ImagePart) -> tuple[bytes, str]:
    """``(bytes, mime)`` of an image part: its encoded data as given, or a decoded frame as JPEG."""
    if part.data is not None:
        return part.data, sniff_image_type(part.data) or part.mime
    assert part.image is not None
    return encode_jpeg(part.image, DEFAULT_JPEG_QUALITY), "image/jpeg"


def data_uri(data: bytes, mime: str) -> str:
    """``data:MIME;base64,...``."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def encode_mp4(frames: Sequence[np.ndarray], fps: float) -> bytes:
    """An MP4 (MPEG-4 Part 2, which every FFmpeg-based server decodes) of ``frames``, oldest first.

    All frames are scaled to the first one's size, cropped to even dimensions
    (the codec needs them). Raises :class:`ValueError` if nothing can be written.
    """
    if not frames:
        raise ValueError("a clip needs at least one frame")
    h, w = frames[0].shape[:2]
    w, h = max(2, w - w % 2), max(2, h - h % 2)
    fd, path = tempfile.mkstemp(suffix=".mp4")
    os.close(fd)
    try:
        writer = cv2.VideoWriter(path, cv2.VideoWriter.fourcc(*"mp4v"), max(0.1, float(fps)), (w, h))
        if not writer.isOpened():
            raise ValueError("OpenCV cannot write MP4 here (no mp4v encoder)")
        try:
            for frame in frames:
                if frame.shape[:2] != (h, w):
                    frame = cv2.resize(frame, (w, h), interpolation=cv2.INTER_AREA)
                writer.write(np.ascontiguousarray(frame))
        finally:
            writer.release()
        with open(path, "rb") as f:
            data = f.read()
    finally:
        os.unlink(path)
    if not data:
        raise ValueError("OpenCV wrote an empty MP4")
    return data
