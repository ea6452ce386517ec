"""Browser sessions for the ``http`` service: a cookie that stands in for the API key.

A browser's ``EventSource`` and ``<img src>`` cannot send an ``Authorization``
header, so a page that must work behind ``http-api-key`` trades the key for a
session once: a route that sits behind the key check (so only a caller who sent
the right key reaches it) calls :meth:`Sessions.issue` and sets the token as an
``HttpOnly``, ``SameSite=Strict`` cookie named :data:`SESSION_COOKIE`. The
service's key check accepts that cookie in place of the bearer header.

Tokens are random, kept in memory for one run (a restart logs every browser
out) and expire after ``ttl`` seconds; :meth:`Sessions.revoke` ends one at once
(logout). The key itself never reaches the browser's storage.
"""

from __future__ import annotations

import hmac
import secrets
import threading
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .context import Context

__all__ = ["SESSION_COOKIE", "SESSION_TTL_S", "Sessions", "cookie_value", "sessions_of"]

SESSION_COOKIE = "framelens_session"
SESSION_TTL_S = 12 * 3600.0
_MAX_SESSIONS = 1000


class Sessions:
    """The session tokens issued in one run. Thread-safe.

    ``issue()`` returns a new token, ``valid(token)`` says whether it is current
    (compared in constant time), ``revoke(token)`` ends it. At most 1000 live
    sessions are kept; issuing more ends the oldest.
    """

    def __init__(self, ttl: float = SESSION_TTL_S) -> None:
        self.ttl = ttl
        self._tokens: dict[str, float] = {}  # token -> expiry (monotonic)
        self._lock = threading.Lock()

    def issue(self) -> str:
        token = secrets.token_urlsafe(32)
        now = time.monotonic()
        with self._lock:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            while len(self._tokens) >= _MAX_SESSIONS:
                self._tokens.pop(next(iter(self._tokens)))
            self._tokens[token] = now + self.ttl
        return token

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        now = time.monotonic()
        with self._lock:
            tokens = list(self._tokens.items())
        found = False
        for known, expiry in tokens:
            # Every token is compared, so timing says nothing about which one nearly matched.
            if hmac.compare_digest(known.encode(), token.encode()) and expiry > now:
                found = True
        return found

    def revoke(self, token: str | None) -> None:
        if token:
            with self._lock:
                self._tokens.pop(token, None)


def sessions_of(context: Context) -> Sessions:
    """The run's :class:`Sessions` (one per run, shared by the service and route plugins)."""
    return context.state("framelens.sessions", Sessions)


def cookie_value(cookie_header: str, name: str = SESSION_COOKIE) -> str | None:
    """The value of cookie ``name`` in a ``Cookie`` request header, or ``None``."""
    for part in cookie_header.split(";"):
        key, sep, value = part.strip().partition("=")
        if sep and key == name:
            return value.strip().strip('"') or None
    return None
