"""Which network addresses a request may make the server connect to, for every scheme.

Image downloads (:mod:`.fetch`) and live sources (``rtsp://``, ``rtsps://``,
``http(s)://`` streams) follow one policy: the host is resolved once, every
address it resolves to must be public (unless ``-c http-allow-private-urls=true``),
and the connection goes to the checked address, never to the name again, so a
DNS answer that changes between the check and the connect cannot reach a
private network. Address spellings that the C library accepts (``0x7f.1``,
``2130706433``, ``[::ffff:127.0.0.1]``) are resolved by the same
``getaddrinfo`` that FFmpeg would use, so no spelling slips past the check.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import SplitResult, urlsplit, urlunsplit

from .errors import ApiError

__all__ = ["DEFAULT_PORTS", "NETWORK_SCHEMES", "Pinned", "UrlPolicy", "host_of", "is_public_address"]

NETWORK_SCHEMES = ("rtsp", "rtsps", "http", "https")
DEFAULT_PORTS = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
_RESOLVE_TIMEOUT_S = 5.0

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_SIIT = ipaddress.ip_network("::ffff:0:0:0/96")


def is_public_address(ip: IPAddress) -> bool:
    """True for globally routable unicast addresses (not loopback, private, link-local, ...).

    IPv6 addresses that carry an IPv4 address (mapped, NAT64, 6to4, Teredo) are
    judged by the IPv4 address they lead to as well.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: list[ipaddress.IPv4Address] = []
        if ip.ipv4_mapped is not None:
            embedded.append(ip.ipv4_mapped)
        if ip in _NAT64 or ip in _SIIT:
            embedded.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
        if ip.sixtofour is not None:
            embedded.append(ip.sixtofour)
        if ip.teredo is not None:
            embedded.extend(ip.teredo)
        if any(not is_public_address(v4) for v4 in embedded):
            return False
        if ip.ipv4_mapped is not None:
            return True
    return ip.is_global and not ip.is_multicast


def host_of(parts: SplitResult, param: str | None, what: str) -> str:
    """The URL's host as ASCII; 400 when it is missing or not a valid host name (idna)."""
    try:
        host = parts.hostname
    except ValueError:
        host = None
    if not host:
        raise ApiError(400, f"the {what} URL has no host", param=param, code=f"invalid_{what}_url")
    try:
        return host.encode("idna").decode("ascii") if not host.isascii() else host
    except UnicodeError:
        raise ApiError(400, f"the {what} URL's host is not a valid host name", param=param,
                       code=f"invalid_{what}_url") from None


@dataclass(frozen=True)
class Pinned:
    """A URL checked against the policy, and the same URL with its host replaced by the checked address."""

    url: str
    connect_url: str
    address: str
    port: int


class UrlPolicy:
    """Resolves and checks the host of a URL a request names; raises the same 403 for every scheme."""

    def __init__(self, *, allow_private: bool) -> None:
        self.allow_private = allow_private

    def refused(self, host: str, address: IPAddress | str, param: str | None, what: str) -> ApiError:
        """The 403 for a host on a non-public address (image downloads use the same one)."""
        return ApiError(403, f"{what} URL refused: {host} resolves to {address}, a non-public address "
                        "(allow with -c http-allow-private-urls=true)", param=param, code="url_not_allowed")

    def check_addresses(self, host: str, addresses: list[IPAddress], param: str | None, what: str) -> None:
        """403 unless every address is public (or private ones are allowed)."""
        if self.allow_private:
            return
        blocked = [a for a in addresses if not is_public_address(a)]
        if blocked:
            raise self.refused(host, blocked[0], param, what)

    async def pin(self, url: str, param: str | None, *, what: str = "source",
                  unreachable: ApiError) -> Pinned:
        """Resolve ``url``'s host, check every address, and return the URL pinned to the first one.

        A name that does not resolve raises ``unreachable`` (the caller's uniform
        "could not open" error), so the answer says nothing about the network.
        """
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        host = host_of(parts, param, what)
        try:
            port = parts.port or DEFAULT_PORTS.get(scheme, 0)
        except ValueError:
            raise ApiError(400, f"the {what} URL has an invalid port (expected 1-65535)", param=param,
                           code=f"invalid_{what}_url") from None
        loop = asyncio.get_running_loop()
        try:
            infos = await asyncio.wait_for(loop.getaddrinfo(host, port, type=socket.SOCK_STREAM),
                                           _RESOLVE_TIMEOUT_S)
        except (OSError, UnicodeError, TimeoutError, asyncio.TimeoutError):
            raise unreachable from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%", 1)[0]) for info in infos]
        if not addresses:
            raise unreachable
        self.check_addresses(host, addresses, param, what)
        address = addresses[0]
        shown = f"[{address}]" if address.version == 6 else str(address)
        userinfo = parts.netloc.rpartition("@")[0]
        netloc = f"{userinfo}@{shown}:{port}" if userinfo else f"{shown}:{port}"
        connect = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        return Pinned(url, connect, str(address), port)
