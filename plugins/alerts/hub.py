"""Where the HTTP routes find the alerts processors of a run.

Routes are registered once, when the ``http`` service builds its app; the
processors come and go with the run. Each running alerts processor attaches
its engine and SSE broadcaster to its :class:`~framelens.Context` here.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass

from framelens import Context

from .engine import AlertEngine
from .sse import SseBroadcaster

__all__ = ["AlertsHandle", "attach", "detach", "handles", "reserve", "reserved"]


@dataclass(frozen=True)
class AlertsHandle:
    """What the HTTP API needs of one running alerts processor."""

    engine: AlertEngine
    sse: SseBroadcaster


_handles: weakref.WeakKeyDictionary[Context, dict[str, AlertsHandle]] = weakref.WeakKeyDictionary()
_ids: weakref.WeakKeyDictionary[Context, set[str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


def reserve(context: Context, processor_id: str) -> None:
    """Claim ``processor_id`` for a processor being built in ``context``."""
    with _lock:
        _ids.setdefault(context, set()).add(processor_id)


def reserved(context: Context) -> set[str]:
    with _lock:
        return set(_ids.get(context, set()))


def attach(context: Context, handle: AlertsHandle) -> None:
    with _lock:
        _handles.setdefault(context, {})[handle.engine.id] = handle


def detach(context: Context, processor_id: str) -> None:
    with _lock:
        _handles.get(context, {}).pop(processor_id, None)


def handles(context: Context) -> dict[str, AlertsHandle]:
    """The running alerts processors of ``context``, by processor id, in start order."""
    with _lock:
        return dict(_handles.get(context, {}))
