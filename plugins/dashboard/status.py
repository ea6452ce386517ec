"""What the status panel shows: backend, model, health, requests in flight, streams, recent errors."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any

from framelens import Context

from .errors_log import RecentErrors
from .events import EventHub
from .video import VideoFeeds

__all__ = ["StatusReport"]

_HEALTH_TIMEOUT_S = 3.0
_IN_FLIGHT = ("framelens_http_backend_requests_running", "framelens_http_backend_requests_waiting")
# The runtime's per-camera series (labelled by source, which is the stream id).
_FRAMES = "framelens_frames_total"
_LATENCY_SUM, _LATENCY_COUNT = "framelens_frame_latency_seconds_sum", "framelens_frame_latency_seconds_count"
_WINDOW_S = 0.5  # rates are taken over at least this long; calls closer together repeat the last


@dataclass(frozen=True)
class _PipelineSample:
    at: float
    frames: float
    latency_sum: float
    latency_count: float
    fps: float | None
    latency_ms: float | None


class StatusReport:
    """Builds the ``/dashboard/api/status`` document from public parts of the run.

    Requests in flight and each stream's pipeline numbers come from the run's
    Prometheus registry (the series ``/metrics`` exports), so nothing reaches into
    another plugin and nothing is measured twice. Measured frame rates are the change
    of each stream's capture counter between two calls; the pipeline's rate and frame
    latency are the change of ``framelens_frames_total`` and of the
    ``framelens_frame_latency_seconds`` sum and count for the stream's id.
    """

    def __init__(self, context: Context, hub: EventHub, feeds: VideoFeeds, errors: RecentErrors) -> None:
        self.context = context
        self.hub = hub
        self.feeds = feeds
        self.errors = errors
        self._samples: dict[str, tuple[float, int, float]] = {}  # stream -> (time, captured, fps)
        self._pipeline_samples: dict[str, _PipelineSample] = {}

    def backend_name(self) -> str:
        return str(self.context.namespace_options("http").get("backend") or self.context.default_backend)

    def _scrape(self) -> tuple[dict[str, float], dict[str, dict[str, float]]]:
        """One pass over the registry: the in-flight gauges, and per source its frames and latency sum/count."""
        totals = dict.fromkeys(_IN_FLIGHT, 0.0)
        requests = 0.0
        sources: dict[str, dict[str, float]] = {}
        for family in self.context.metrics.collect():
            for sample in family.samples:
                if sample.name in totals:
                    totals[sample.name] += sample.value
                elif sample.name == "framelens_http_requests_total":
                    requests += sample.value
                elif sample.name in (_FRAMES, _LATENCY_SUM, _LATENCY_COUNT) and "source" in sample.labels:
                    sources.setdefault(sample.labels["source"], {})[sample.name] = sample.value
        gauges = {"running": totals[_IN_FLIGHT[0]], "waiting": totals[_IN_FLIGHT[1]], "requests": requests}
        return gauges, sources

    def _pipeline(self, stream_id: str, series: dict[str, float] | None) -> dict[str, Any] | None:
        """Frames processed, their rate and their mean latency (capture to outputs) since the
        previous window; ``None`` for a stream no pipeline processes."""
        if not series or _FRAMES not in series:
            return None
        frames = series[_FRAMES]
        lat_sum, lat_count = series.get(_LATENCY_SUM, 0.0), series.get(_LATENCY_COUNT, 0.0)
        now = time.monotonic()
        before = self._pipeline_samples.get(stream_id)
        if before is not None and now - before.at < _WINDOW_S:
            fps, latency = before.fps, before.latency_ms
        else:
            if before is None:
                # The first call has no rate yet; the run's mean latency so far stands in.
                fps, latency = None, 1000 * lat_sum / lat_count if lat_count else None
            else:
                fps = (frames - before.frames) / (now - before.at)
                n = lat_count - before.latency_count
                latency = 1000 * (lat_sum - before.latency_sum) / n if n > 0 else before.latency_ms
            self._pipeline_samples[stream_id] = _PipelineSample(now, frames, lat_sum, lat_count, fps, latency)
        return {
            "frames": int(frames),
            "fps": None if fps is None else round(fps, 2),
            "latency_ms": None if latency is None else round(latency, 1),
        }

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
        gauges, sources = self._scrape()
        streams = []
        for stream in self.context.streams.list():
            info = stream.to_dict()
            info["measured_fps"] = self._fps(stream.id, stream.capture.captured)
            info["pipeline"] = self._pipeline(stream.id, sources.get(stream.id))
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
            "in_flight": gauges,
            "streams": streams,
            "describers": describers,
            "errors": self.errors.items(),
            "events": {"clients": self.hub.clients, "published": self.hub.published},
            "time": time.time(),
        }
