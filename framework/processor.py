"""The processor contract."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

from .frame import Frame

__all__ = ["Processor"]


class Processor(ABC):
    """A pipeline stage. The runtime calls, in order:

    ``start()`` once before the first frame (open models, start workers; raise
    :class:`~framelens.ConfigError` or another :class:`~framelens.FramelensError`
    to refuse to start), then ``process(frame)`` for every frame in the loop's
    thread, then ``close()`` once at shutdown, even after an error.

    ``process`` must return quickly: a stage that needs more than a few
    milliseconds hands the frame to a :class:`~framelens.BackgroundWorker` and
    returns at once. It returns the frame to pass on (``frame`` itself, or
    ``frame.replace(image=...)``). An exception is logged with the stage's name
    and frame index, the frame goes on unchanged, and after ``--max-failures``
    consecutive failures the stage is disabled.
    """

    def start(self) -> None:
        """Prepare for the first frame. Default: nothing."""

    @abstractmethod
    def process(self, frame: Frame) -> Frame:
        """Handle one frame and return the frame for the next stage."""

    def close(self) -> None:
        """Release everything ``start`` took. Default: nothing."""

    def stats(self) -> dict[str, Any]:
        """Extra numbers for ``--benchmark`` (e.g. a worker's call times). Default: none."""
        return {}
