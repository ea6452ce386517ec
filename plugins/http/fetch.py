"""Downloading image and video URLs named in requests, without becoming an SSRF proxy.

The host name is resolved once, every address it resolves to is checked, and the
connection goes to the checked address (TLS still verifies the name), so a DNS
answer that changes between the check and the connect cannot reach a private
network. Redirects are followed by hand, each hop checked the same way. Size,
time and redirect count are capped; proxies from the environment are ignored.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpcore

from framelens import __version__

from .egress import host_of, is_public_address
from .errors import ApiError

__all__ = ["BlockedAddress", "Fetched", "Fetcher", "is_public_address"]

log = logging.getLogger("framelens.http")


class BlockedAddress(Exception):
    """A URL resolved to an address that the operator did not allow."""


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Connects only to addresses that pass :func:`is_public_address` (unless allowed)."""

    def __init__(self, allow_private: bool) -> None:
        self._allow_private = allow_private
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
        except UnicodeError:
            raise httpcore.ConnectError(f"{host!r} is not a valid host name") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not self._allow_private:
            blocked = [a for a in addresses if not is_public_address(a)]
            if blocked:
                raise BlockedAddress(f"{host} resolves to {blocked[0]}, a non-public address")
        last: Exception | None = None
        for address in dict.fromkeys(addresses):
            try:
                return await self._inner.connect_tcp(str(address), port, timeout=timeout,
                                                     socket_options=socket_options)
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last = exc
        raise last or httpcore.ConnectError(f"cannot connect to {host}")

    async def connect_unix_socket(self, path: str, timeout: float | None = None,
                                  socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress("unix sockets are not allowed")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


@dataclass(frozen=True)
class Fetched:
    """A downloaded body and what the server said it is."""

    data: bytes
    content_type: str
    url: str


_REDIRECTS = {301, 302, 303, 307, 308}


class Fetcher:
    """Downloads http(s) URLs with an address check, a size cap, a timeout and few redirects."""

    def __init__(self, *, allow_private: bool, timeout: float, max_redirects: int) -> None:
        self.allow_private = allow_private
        self.timeout = timeout
        self.max_redirects = max_redirects
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl.create_default_context(),
            max_connections=32,
            network_backend=_GuardedBackend(allow_private),
        )

    async def get(self, url: str, *, max_bytes: int, param: str, what: str = "image") -> Fetched:
        """Download ``url``; :class:`ApiError` (400/403/413) names ``param`` when it fails."""
        try:
            # wait_for, not asyncio.timeout: Jetson images still ship Python 3.10.
            return await asyncio.wait_for(self._get(url, max_bytes, param, what), self.timeout)
        except BlockedAddress as exc:
            raise ApiError(403, f"{what} URL refused: {exc} (allow with -c http-allow-private-urls=true)",
                           param=param, code="url_not_allowed") from None
        except (TimeoutError, asyncio.TimeoutError, httpcore.TimeoutException, httpcore.NetworkError,
                httpcore.ProtocolError, httpcore.UnsupportedProtocol, UnicodeError) as exc:
            # One answer for refused, unresolvable, silent and garbled servers, so that
            # the API cannot be used to map a network; the reason is in the server log.
            log.info("downloading %s %s failed: %s", what, url[:200], exc or type(exc).__name__)
            raise ApiError(400, f"could not download the {what} URL (no answer in {self.timeout:g} s, refused, "
                           "or not HTTP); the server log has the reason", param=param,
                           code=f"invalid_{what}_url") from None

    async def _get(self, url: str, max_bytes: int, param: str, what: str) -> Fetched:
        for _ in range(self.max_redirects + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise ApiError(400, f"{what} URL must be http(s)://host/...: {url[:200]}", param=param,
                               code=f"invalid_{what}_url")
            host_of(parts, param, what)
            headers = [(b"User-Agent", f"framelens/{__version__}".encode()), (b"Accept", b"*/*")]
            async with self._pool.stream("GET", url, headers=headers) as response:
                status = response.status
                header = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers}
                if status in _REDIRECTS and "location" in header:
                    url = urljoin(url, header["location"])
                    continue
                if status != 200:
                    raise ApiError(400, f"downloading the {what} URL {url} failed: HTTP {status}",
                                   param=param, code="invalid_image_url")
                declared = header.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_large(what, max_bytes, param)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_stream():
                    size += len(chunk)
                    if size > max_bytes:
                        raise _too_large(what, max_bytes, param)
                    chunks.append(chunk)
                content_type = header.get("content-type", "").split(";", 1)[0].strip().lower()
                return Fetched(b"".join(chunks), content_type, url)
        raise ApiError(400, f"downloading the {what} URL took more than {self.max_redirects} redirects",
                       param=param, code="invalid_image_url")

    async def aclose(self) -> None:
        await self._pool.aclose()


def _too_large(what: str, max_bytes: int, param: str) -> ApiError:
    return ApiError(413, f"the {what} is larger than {max_bytes} bytes", param=param, code=f"{what}_too_large")
