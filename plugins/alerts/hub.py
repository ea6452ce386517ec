"""Where the HTTP routes find the alerts processors of a run.

Routes are registered once, when the ``http`` service builds its app; the
processors come and go with the run. Each running alerts processor attaches
its engine and SSE broadcaster to the run's :class:`AlertsHub`, kept in the
context's state (``context.state("alerts", AlertsHub)``), so two runs in one
process never see each other's alerts.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

from framelens import Context

from .engine import AlertEngine
from .sse import SseBroadcaster

__all__ = ["AlertsHandle", "AlertsHub", "attach", "detach", "handles", "hub_of", "reserve", "reserved"]


@dataclass(frozen=True)
class AlertsHandle:
    """What the HTTP API needs of one running alerts processor."""

    engine: AlertEngine
    sse: SseBroadcaster


@dataclass
class AlertsHub:
    """The alerts processors of one run: ids claimed at build time, handles once started."""

    ids: set[str] = field(default_factory=set)
    handles: dict[str, AlertsHandle] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


def hub_of(context: Context) -> AlertsHub:
    """The run's hub, made on first use."""
    return context.state("alerts", AlertsHub)


def reserve(context: Context, processor_id: str) -> None:
    """Claim ``processor_id`` for a processor being built in ``context``."""
    hub = hub_of(context)
    with hub.lock:
        hub.ids.add(processor_id)


def reserved(context: Context) -> set[str]:
    hub = hub_of(context)
    with hub.lock:
        return set(hub.ids)


def attach(context: Context, handle: AlertsHandle) -> None:
    hub = hub_of(context)
    with hub.lock:
        hub.handles[handle.engine.id] = handle


def detach(context: Context, processor_id: str) -> None:
    hub = hub_of(context)
    with hub.lock:
        hub.handles.pop(processor_id, None)


def handles(context: Context) -> dict[str, AlertsHandle]:
    """The running alerts processors of ``context``, by processor id, in start order."""
    hub = hub_of(context)
    with hub.lock:
        return dict(hub.handles)
