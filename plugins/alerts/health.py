"""Whether the alerts backend answers: backoff while it does not, one log line per outage.

A backend that is down must not flood the log (one line when it goes, one
when it is back, never one per rule or retry) nor be hammered: after each
evaluation in which no request got an answer, the next try waits 1, 2, 4...
up to 30 seconds.
"""

from __future__ import annotations

import logging
import math

from .evaluator import Evaluation

__all__ = ["MAX_BACKOFF_S", "BackendHealth"]

log = logging.getLogger("framelens.alerts")

MAX_BACKOFF_S = 30.0


class BackendHealth:
    """Tracks evaluations of one processor's backend. ``retry_at`` (monotonic) is read without a lock."""

    def __init__(self, processor_id: str, backend_name: str) -> None:
        self.processor_id = processor_id
        self.backend_name = backend_name
        self.retry_at = 0.0
        self.failures = 0
        self.down_since: float | None = None
        self._last_partial_log = -math.inf

    @property
    def down(self) -> bool:
        return self.down_since is not None

    def record(self, evaluation: Evaluation, now: float) -> None:
        """Note how an evaluation went; schedules the next try after a total failure."""
        if evaluation.backend_failed:
            self.failures += 1
            self.retry_at = now + min(MAX_BACKOFF_S, 2.0 ** (self.failures - 1))
            if self.down_since is None:
                self.down_since = now
                log.warning("%s: backend %s failed: %s; rules turn unknown until it answers"
                            " (retrying with backoff up to %g s)", self.processor_id, self.backend_name,
                            evaluation.error, MAX_BACKOFF_S)
            return
        if self.down_since is not None:
            log.info("%s: backend %s answers again after %.1f s; evaluation resumed",
                     self.processor_id, self.backend_name, now - self.down_since)
        self.down_since = None
        self.failures = 0
        self.retry_at = 0.0
        if evaluation.failed_requests and now - self._last_partial_log >= 60:
            # Some per-rule requests failed while others were answered: worth a line, once a minute.
            self._last_partial_log = now
            log.warning("%s: %d of %d requests to %s failed: %s", self.processor_id,
                        evaluation.failed_requests, evaluation.requests, self.backend_name, evaluation.error)
