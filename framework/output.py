"""The output contract."""

from __future__ import annotations

from abc import ABC, abstractmethod

from .frame import Frame

__all__ = ["Output"]


class Output(ABC):
    """Receives every processed frame.

    ``start()`` opens ports and files and raises :class:`~framelens.OutputError`
    naming what is wrong (port in use, missing encoder); ``write(frame)`` is called
    in the loop's thread for every frame and must not wait on slow consumers
    (keep the newest frame and let viewers catch up); ``close()`` flushes and
    releases everything, and is called once even after errors.
    """

    def start(self) -> None:
        """Open the output. Default: nothing."""

    @abstractmethod
    def write(self, frame: Frame) -> None:
        """Take one processed frame."""

    def close(self) -> None:
        """Flush and release. Default: nothing."""
