"""The service contract: long-running things beside the frame loop."""

from __future__ import annotations

from abc import ABC, abstractmethod

__all__ = ["Service"]


class Service(ABC):
    """Something that runs for the whole run but takes no frames (an HTTP API).

    ``start()`` must return once the service is ready (its port bound) and raise
    a :class:`~framelens.FramelensError` if it cannot be; ``stop()`` shuts it down
    and frees its resources. Services usually run on ``context.runner``'s loop.
    """

    @abstractmethod
    def start(self) -> None:
        """Start and return when ready."""

    @abstractmethod
    def stop(self) -> None:
        """Stop and release everything."""
