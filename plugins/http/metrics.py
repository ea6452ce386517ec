"""Prometheus metrics of the HTTP API, registered once per run in ``context.metrics``."""

from __future__ import annotations

import weakref
from collections.abc import Iterator

from prometheus_client import Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from framelens import Context

from .limiter import Limiter

__all__ = ["HttpMetrics", "metrics_for"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)


class HttpMetrics(Collector):
    """Counters and histograms updated per request, plus gauges read at scrape time.

    Scrape-time values: requests running and waiting per backend, and frames
    captured and dropped per live source (``stream://ID``).
    """

    def __init__(self, context: Context) -> None:
        registry = context.metrics
        self._context = context
        self.limiters: dict[str, Limiter] = {}
        self.requests = Counter("framelens_http_requests", "HTTP requests by route, method and status",
                                ["route", "method", "status"], registry=registry)
        self.latency = Histogram("framelens_http_request_duration_seconds", "HTTP request latency by route",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=registry)
        self.first_token = Histogram("framelens_http_time_to_first_token_seconds",
                                     "Time from request to first generated token", ["backend"],
                                     buckets=_LATENCY_BUCKETS, registry=registry)
        self.completion_tokens = Counter("framelens_http_generated_tokens", "Completion tokens generated",
                                         ["backend"], registry=registry)
        self.prompt_tokens = Counter("framelens_http_prompt_tokens", "Prompt tokens processed", ["backend"],
                                     registry=registry)
        self.backend_errors = Counter("framelens_http_backend_errors", "Backend failures by kind",
                                      ["backend", "kind"], registry=registry)
        self._tokens: dict[str, tuple[Counter, Counter]] = {}
        self._first: dict[str, Histogram] = {}
        registry.register(self)

    # labels() validates and locks on every call: the children are looked up once per backend.

    def count_tokens(self, backend: str, prompt_tokens: int, completion_tokens: int) -> None:
        """Add one answer's tokens to ``backend``'s counters."""
        children = self._tokens.get(backend)
        if children is None:
            children = self._tokens[backend] = (self.prompt_tokens.labels(backend),
                                                self.completion_tokens.labels(backend))
        children[0].inc(prompt_tokens)
        children[1].inc(completion_tokens)

    def observe_first_token(self, backend: str, seconds: float) -> None:
        """Record the time from a request to ``backend``'s first token."""
        child = self._first.get(backend)
        if child is None:
            child = self._first[backend] = self.first_token.labels(backend)
        child.observe(seconds)

    def collect(self) -> Iterator[Metric]:
        running = GaugeMetricFamily("framelens_http_backend_requests_running", "Backend requests running",
                                    labels=["backend"])
        waiting = GaugeMetricFamily("framelens_http_backend_requests_waiting", "Requests waiting for a slot",
                                    labels=["backend"])
        for name, limiter in self.limiters.items():
            running.add_metric([name], limiter.running)
            waiting.add_metric([name], limiter.waiting)
        yield running
        yield waiting
        captured = CounterMetricFamily("framelens_stream_frames_captured", "Frames captured per live source",
                                       labels=["stream"])
        dropped = CounterMetricFamily("framelens_stream_frames_dropped",
                                      "Frames replaced by a newer one before anyone took them", labels=["stream"])
        for stream in self._context.streams.list():
            captured.add_metric([stream.id], stream.capture.captured)
            dropped.add_metric([stream.id], stream.capture.dropped)
        yield captured
        yield dropped

    def describe(self) -> Iterator[Metric]:
        return iter(())


_by_context: weakref.WeakKeyDictionary[Context, HttpMetrics] = weakref.WeakKeyDictionary()


def metrics_for(context: Context) -> HttpMetrics:
    """The run's :class:`HttpMetrics` (one set even when two ``http`` services run)."""
    metrics = _by_context.get(context)
    if metrics is None:
        metrics = _by_context[context] = HttpMetrics(context)
    return metrics
