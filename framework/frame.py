"""The frame that travels through the pipeline, and its results store."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["Frame", "Results"]


class Results(Mapping[str, Any]):
    """What processors found out about a frame, keyed by who found it.

    A frame's results start as a copy of the run's *sticky* results (the latest
    value each background processor published with ``context.publish_result``,
    e.g. the newest description), so a result stays visible on every later frame
    until it is replaced. Processors add frame-local results with
    ``frame.results[key] = value``; those die with the frame.
    """

    __slots__ = ("_data",)

    def __init__(self, initial: Mapping[str, Any] | None = None) -> None:
        self._data: dict[str, Any] = dict(initial) if initial else {}

    def __getitem__(self, key: str) -> Any:
        return self._data[key]

    def __setitem__(self, key: str, value: Any) -> None:
        self._data[key] = value

    def __iter__(self) -> Iterator[str]:
        return iter(self._data)

    def __len__(self) -> int:
        return len(self._data)

    def __repr__(self) -> str:
        return f"Results({self._data!r})"


@dataclass(frozen=True, slots=True)
class Frame:
    """One video frame and everything known about it.

    Attributes:
        image: BGR ``uint8`` array of shape ``(height, width, 3)``.
        index: position in its source, from 0; gaps mean frames were dropped.
        timestamp: capture time, seconds since the epoch (``time.time()``).
        source_id: the id of the source it came from (``stream://ID`` names it).
        results: the results store; see :class:`Results`.

    Frames are immutable: a processor that changes the picture returns
    ``frame.replace(image=new_image)``. Never modify ``image`` in place unless you
    made it yourself in this stage, because outputs and background workers may
    still hold the previous frame.
    """

    image: np.ndarray
    index: int
    timestamp: float
    source_id: str = "main"
    results: Results = field(default_factory=Results)

    @property
    def width(self) -> int:
        return int(self.image.shape[1])

    @property
    def height(self) -> int:
        return int(self.image.shape[0])

    def replace(self, **changes: Any) -> Frame:
        """A copy with some fields changed; the results store is shared."""
        return dataclasses.replace(self, **changes)
