"""Turning ``image_url`` values into images the backend can take.

Accepted: ``data:image/{jpeg,png,webp};base64,...`` (also Ollama's bare
``data:;base64,``), ``http(s)://`` (downloaded by :class:`Fetcher`),
``file://`` inside the allowed directories, and live sources (:mod:`.live`).
Inline and downloaded images are checked before any backend sees them:
type (415), size in bytes and pixels (413), and that they decode (422).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import os
import stat
import struct
from urllib.parse import unquote, urlsplit

from framelens import Context, ImagePart, decode_image, sniff_image_type

from .errors import ApiError
from .fetch import Fetcher
from .live import LiveSources, is_live_url
from .options import HttpOptions

__all__ = ["SUPPORTED_IMAGE_TYPES", "MediaResolver", "image_dimensions", "parse_data_uri"]

SUPPORTED_IMAGE_TYPES = ("image/jpeg", "image/png", "image/webp")
_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg"}


def parse_data_uri(url: str, *, max_bytes: int, param: str, what: str = "image") -> tuple[str, bytes]:
    """``(mime, bytes)`` of a base64 ``data:`` URI; :class:`ApiError` 400/413 if malformed or too big."""
    header, sep, payload = url[5:].partition(",")
    if not sep or not header.endswith(";base64"):
        raise ApiError(400, f"{what} data URI must look like data:<type>;base64,<data>", param=param,
                       code=f"invalid_{what}_url")
    mime = header[: -len(";base64")].split(";", 1)[0].strip().lower()
    payload = "".join(payload.split())  # clients wrap long base64 lines
    if len(payload) * 3 // 4 > max_bytes:
        raise ApiError(413, f"the {what} is larger than {max_bytes} bytes", param=param, code=f"{what}_too_large")
    try:
        data = base64.b64decode(payload + "=" * (-len(payload) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(400, f"{what} data URI is not valid base64", param=param, code=f"invalid_{what}_url") from None
    return _ALIASES.get(mime, mime), data


def decode_base64_image(value: str, *, max_bytes: int, param: str) -> tuple[str, bytes]:
    """Bytes of an image given as bare base64 or a data URI (Ollama ``images``, ``/infer``)."""
    if value.startswith("data:"):
        return parse_data_uri(value, max_bytes=max_bytes, param=param)
    return parse_data_uri("data:;base64," + value, max_bytes=max_bytes, param=param)


def image_dimensions(data: bytes) -> tuple[int, int] | None:
    """``(width, height)`` read from a JPEG, PNG or WebP header without decoding; ``None`` if unreadable."""
    try:
        if data.startswith(b"\x89PNG\r\n\x1a\n") and data[12:16] == b"IHDR":
            w, h = struct.unpack(">II", data[16:24])
            return int(w), int(h)
        if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
            kind = data[12:16]
            if kind == b"VP8X":
                return 1 + int.from_bytes(data[24:27], "little"), 1 + int.from_bytes(data[27:30], "little")
            if kind == b"VP8L":
                bits = int.from_bytes(data[21:25], "little")
                return 1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF)
            if kind == b"VP8 ":
                w, h = struct.unpack("<HH", data[26:30])
                return int(w) & 0x3FFF, int(h) & 0x3FFF
            return None
        if data.startswith(b"\xff\xd8"):
            i = 2
            while i + 9 < len(data):
                if data[i] != 0xFF:
                    return None
                marker = data[i + 1]
                if marker == 0xFF:  # fill byte
                    i += 1
                    continue
                if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
                    i += 2
                    continue
                length = int.from_bytes(data[i + 2 : i + 4], "big")
                if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
                    h, w = struct.unpack(">HH", data[i + 5 : i + 9])
                    return int(w), int(h)
                i += 2 + length
    except struct.error:
        return None
    return None


class MediaResolver:
    """Resolves request URLs to :class:`ImagePart` objects, checking everything a client controls."""

    def __init__(self, context: Context, options: HttpOptions, fetcher: Fetcher, live: LiveSources) -> None:
        self.context = context
        self.options = options
        self.fetcher = fetcher
        self.live = live

    async def image(self, url: str, param: str, detail: str | None = None) -> ImagePart:
        """The image that ``url`` names (the newest frame for a live source)."""
        url = url.strip()
        if is_live_url(url):
            stream = await self.live.resolve(url, param)
            frame = await self.live.newest(stream, param)
            return ImagePart(image=frame.image, detail=detail)
        mime, data = await self.load(url, param, what="image", max_bytes=self.options.max_image_bytes)
        return await self.checked_image(data, mime, param, detail)

    async def load(self, url: str, param: str, *, what: str, max_bytes: int) -> tuple[str, bytes]:
        """``(declared type, bytes)`` of a data URI, http(s) URL or allowed ``file://`` URL."""
        scheme = urlsplit(url).scheme.lower() if ":" in url else ""
        if scheme == "data":
            return parse_data_uri(url, max_bytes=max_bytes, param=param, what=what)
        if scheme in ("http", "https"):
            fetched = await self.fetcher.get(url, max_bytes=max_bytes, param=param, what=what)
            return fetched.content_type, fetched.data
        if scheme == "file":
            try:
                return "", await asyncio.wait_for(asyncio.to_thread(self._read_file, url, param, what, max_bytes),
                                                  self.options.fetch_timeout)
            except (TimeoutError, asyncio.TimeoutError):
                raise ApiError(400, f"reading the {what} file took more than {self.options.fetch_timeout:g} s "
                               "(-c http-fetch-timeout)", param=param, code=f"invalid_{what}_url") from None
        raise ApiError(400, f"unsupported {what} URL {url[:80]!r}: use data:, http(s)://, file://, "
                       "v4l2://, csi://, rtsp:// or stream://ID", param=param, code=f"invalid_{what}_url")

    def _read_file(self, url: str, param: str, what: str, max_bytes: int) -> bytes:
        dirs = [os.path.realpath(d) for d in self.options.allowed_file_dirs]
        if not dirs:
            raise ApiError(403, "file:// URLs are turned off; allow directories with "
                           "-c http-allowed-file-dirs=/path/one,/path/two", param=param, code="url_not_allowed")
        path = os.path.realpath(unquote(urlsplit(url).path))
        if not any(os.path.commonpath([path, d]) == d for d in dirs):
            raise ApiError(403, f"{path} is outside the allowed directories ({', '.join(dirs)})", param=param,
                           code="url_not_allowed")
        try:
            # O_NONBLOCK: opening a FIFO would otherwise wait for a writer for ever.
            fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
            with os.fdopen(fd, "rb") as f:
                info = os.fstat(f.fileno())
                if not stat.S_ISREG(info.st_mode):
                    raise ApiError(400, f"{path} is not a regular file", param=param, code=f"invalid_{what}_url")
                if info.st_size > max_bytes:
                    raise ApiError(413, f"the {what} is larger than {max_bytes} bytes", param=param,
                                   code=f"{what}_too_large")
                data = f.read(max_bytes + 1)
            if len(data) > max_bytes:  # it grew since fstat
                raise ApiError(413, f"the {what} is larger than {max_bytes} bytes", param=param,
                               code=f"{what}_too_large")
            return data
        except OSError as exc:
            raise ApiError(400, f"cannot read {path}: {exc.strerror}", param=param,
                           code=f"invalid_{what}_url") from None

    async def checked_image(self, data: bytes, declared: str, param: str, detail: str | None = None) -> ImagePart:
        """An :class:`ImagePart` for encoded ``data`` once its type, size and decodability are checked."""
        declared = _ALIASES.get(declared, declared)
        sniffed = sniff_image_type(data)
        if sniffed is None:
            if declared in SUPPORTED_IMAGE_TYPES or declared in ("", "application/octet-stream"):
                raise ApiError(422, "the image data is not a decodable JPEG, PNG or WebP image", param=param,
                               code="invalid_image")
            raise ApiError(415, f"unsupported image type {declared!r}: send JPEG, PNG or WebP", param=param,
                           code="unsupported_image_type")
        if sniffed not in SUPPORTED_IMAGE_TYPES:
            raise ApiError(415, f"unsupported image type {sniffed!r}: send JPEG, PNG or WebP", param=param,
                           code="unsupported_image_type")
        if declared and declared not in (*SUPPORTED_IMAGE_TYPES, "application/octet-stream", "binary/octet-stream"):
            raise ApiError(415, f"unsupported content type {declared!r} for an image", param=param,
                           code="unsupported_image_type")
        if len(data) > self.options.max_image_bytes:
            raise ApiError(413, f"the image is larger than {self.options.max_image_bytes} bytes", param=param,
                           code="image_too_large")
        size = image_dimensions(data)
        if size is None or min(size) < 1:
            raise ApiError(422, f"cannot read the dimensions of the {sniffed} image", param=param,
                           code="invalid_image")
        if size[0] * size[1] > self.options.max_image_pixels:
            raise ApiError(413, f"the image is {size[0]}x{size[1]} pixels; at most {self.options.max_image_pixels} "
                           "pixels are accepted", param=param, code="image_too_large")
        try:
            await asyncio.to_thread(decode_image, data)
        except ValueError:
            raise ApiError(422, f"the {sniffed} image could not be decoded", param=param,
                           code="invalid_image") from None
        return ImagePart(data=data, mime=sniffed, detail=detail)
