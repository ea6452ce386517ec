"""What the status panel shows: backend, model, health, requests in flight, streams, recent errors."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from framelens import Context

from .errors_log import RecentErrors
from .events import EventHub
from .video import VideoFeeds

__all__ = ["StatusReport"]

_HEALTH_TIMEOUT_S = 3.0
_IN_FLIGHT = ("framelens_http_backend_requests_running", "framelens_http_backend_requests_waiting")


class StatusReport:
    """Builds the ``/dashboard/api/status`` document from public parts of the run.

    Requests in flight come from the run's Prometheus registry (the gauges the
    ``http`` service exports), so nothing reaches into another plugin. Measured
    frame rates are the change of each stream's capture counter between two calls.
    """

    def __init__(self, context: Context, hub: EventHub, feeds: VideoFeeds, errors: RecentErrors) -> None:
        self.context = context
        self.hub = hub
        self.feeds = feeds
        self.errors = errors
        self._samples: dict[str, tuple[float, int, float]] = {}  # stream -> (time, captured, fps)

    def backend_name(self) -> str:
        return str(self.context.namespace_options("http").get("backend") or self.context.default_backend)

    def _gauges(self) -> dict[str, float]:
        totals = dict.fromkeys(_IN_FLIGHT, 0.0)
        requests = 0.0
        for family in self.context.metrics.collect():
            for sample in family.samples:
                if sample.name in totals:
                    totals[sample.name] += sample.value
                elif sample.name == "framelens_http_requests_total":
                    requests += sample.value
        return {"running": totals[_IN_FLIGHT[0]], "waiting": totals[_IN_FLIGHT[1]], "requests": requests}

    def _fps(self, stream_id: str, captured: int) -> float | None:
        now = time.monotonic()
        before = self._samples.get(stream_id)
        fps = before[2] if before else None
        if before is None or now - before[0] >= 0.5:
            if before is not None:
                fps = (captured - before[1]) / (now - before[0])
            self._samples[stream_id] = (now, captured, fps if fps is not None else -1.0)
        return None if fps is None or fps < 0 else round(fps, 2)

    async def _health(self, backend: Any) -> dict[str, Any]:
        try:
            h = await asyncio.wait_for(backend.health(), _HEALTH_TIMEOUT_S)
        except (TimeoutError, asyncio.TimeoutError):
            return {"ready": False, "detail": f"no answer within {_HEALTH_TIMEOUT_S:g} s"}
        except Exception as exc:
            return {"ready": False, "detail": str(exc)}
        return {"ready": bool(h.ready), "detail": h.detail}

    async def build(self) -> dict[str, Any]:
        name = self.backend_name()
        backends = self.context.backends()
        backend = backends.get(name)
        health = await self._health(backend) if backend is not None else {
            "ready": False, "detail": f"backend {name!r} is not in use in this run"}
        viewers = self.feeds.viewers()
        streams = []
        for stream in self.context.streams.list():
            info = stream.to_dict()
            info["measured_fps"] = self._fps(stream.id, stream.capture.captured)
            info["viewers"] = viewers.get(stream.id, 0)
            info["frame_age_s"] = round(stream.capture.frame_age(), 3)
            streams.append(info)
        describers = sorted(k for k, v in self.context.sticky_results().items()
                            if hasattr(v, "payload") and hasattr(v, "describer"))
        return {
            "backend": name,
            "backends": sorted(backends),
            "model": getattr(backend, "default_model", None) if backend is not None else None,
            "health": health,
            "in_flight": self._gauges(),
            "streams": streams,
            "describers": describers,
            "errors": self.errors.items(),
            "events": {"clients": self.hub.clients, "published": self.hub.published},
            "time": time.time(),
        }
