"""Image helpers shared by plugins: resizing, JPEG encoding, decoding uploads."""

from __future__ import annotations

import cv2
import numpy as np

__all__ = ["decode_image", "encode_jpeg", "fit_max_side", "sniff_image_type"]


def fit_max_side(image: np.ndarray, max_side: int | None) -> np.ndarray:
    """Shrink ``image`` so its longer side is at most ``max_side``, keeping the aspect ratio.

    Images already small enough are returned as they are (never enlarged).
    """
    if not max_side:
        return image
    h, w = image.shape[:2]
    longest = max(h, w)
    if longest <= max_side:
        return image
    scale = max_side / longest
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    """JPEG bytes of a BGR image."""
    ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return buf.tobytes()


_SIGNATURES = (
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
)


def sniff_image_type(data: bytes) -> str | None:
    """The MIME type that ``data`` starts like, or ``None``."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for magic, mime in _SIGNATURES:
        if data.startswith(magic):
            return mime
    return None


def decode_image(data: bytes) -> np.ndarray:
    """Decode JPEG/PNG/WebP/... bytes to a BGR array; :class:`ValueError` if it is not an image."""
    array = np.frombuffer(data, dtype=np.uint8)
    image = cv2.imdecode(array, cv2.IMREAD_COLOR) if array.size else None
    if image is None:
        raise ValueError("the data is not a decodable image")
    return image
