"""Recent warnings and errors of the run, in the words the log uses, for the status panel."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import Any

__all__ = ["RecentErrors"]


class RecentErrors(logging.Handler):
    """Keeps the newest ``limit`` WARNING-and-above records of the ``framelens`` loggers.

    Attached to the ``framelens`` logger while the service runs; ``detach()`` removes it.
    Messages are the log's own (``record.getMessage()``), without tracebacks.
    """

    def __init__(self, limit: int = 50) -> None:
        super().__init__(logging.WARNING)
        self._items: collections.deque[dict[str, Any]] = collections.deque(maxlen=limit)
        self._lock_items = threading.Lock()
        self._logger = logging.getLogger("framelens")

    def attach(self) -> None:
        self._logger.addHandler(self)

    def detach(self) -> None:
        self._logger.removeHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not break logging for everybody
            message = str(record.msg)
        item = {"time": record.created or time.time(), "level": record.levelname.lower(),
                "logger": record.name, "message": message}
        with self._lock_items:
            self._items.append(item)

    def items(self) -> list[dict[str, Any]]:
        with self._lock_items:
            return list(self._items)
