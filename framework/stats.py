"""Call-time statistics for stages and workers."""

from __future__ import annotations

import threading
from collections import deque
from typing import Any

__all__ = ["Timings"]


class Timings:
    """Counts calls and keeps the latest durations for a mean and a 95th percentile."""

    def __init__(self, window: int = 2048) -> None:
        self.calls = 0
        self.total_s = 0.0
        self._recent: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def add(self, seconds: float) -> None:
        with self._lock:
            self.calls += 1
            self.total_s += seconds
            self._recent.append(seconds)

    def summary(self) -> dict[str, Any]:
        with self._lock:
            recent = sorted(self._recent)
            calls, total = self.calls, self.total_s
        p95 = recent[min(len(recent) - 1, int(0.95 * len(recent)))] if recent else 0.0
        return {
            "calls": calls,
            "mean_ms": round(1000 * total / calls, 3) if calls else 0.0,
            "p95_ms": round(1000 * p95, 3),
        }
