"""Result types shared between plugins, so overlays can draw what others found."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

__all__ = ["Caption", "Detection", "Detections", "HasCaption", "boxes_of", "captions_of"]

Level = Literal["info", "warning", "alert", "error"]


@dataclass(frozen=True)
class Caption:
    """A text to show on the video.

    ``level`` decides how ``captions`` draws it: ``alert`` as a red banner on
    top, ``error`` and ``warning`` in their colours, ``info`` as plain text.
    """

    text: str
    level: Level = "info"


@runtime_checkable
class HasCaption(Protocol):
    """A result that knows how it should be shown on the video."""

    def caption(self) -> Caption | None: ...


def captions_of(results: dict[str, object] | object) -> list[tuple[str, Caption]]:
    """Every caption in a results mapping, as ``(key, caption)`` pairs in key order."""
    out: list[tuple[str, Caption]] = []
    items = getattr(results, "items", None)
    if items is None:
        return out
    for key, value in sorted(items(), key=lambda kv: kv[0]):
        if isinstance(value, Caption):
            out.append((key, value))
        elif isinstance(value, HasCaption):
            cap = value.caption()
            if cap is not None and cap.text:
                out.append((key, cap))
    return out


@dataclass(frozen=True)
class Detection:
    """One detected object: a box in frame pixels."""

    x: int
    y: int
    w: int
    h: int
    label: str = "face"

    @property
    def box(self) -> tuple[int, int, int, int]:
        return (self.x, self.y, self.w, self.h)


@dataclass(frozen=True)
class Detections(Sequence[Detection]):
    """What a detector found on frame ``frame_index`` (a sequence of :class:`Detection`).

    With ``show_count`` it is also a caption (``2 faces``, counting ``noun``) for ``captions``.
    ``blur -c blur-regions=KEY`` blurs the boxes of any such result.
    """

    items: tuple[Detection, ...]
    frame_index: int
    show_count: bool = False
    noun: str = "face"

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: Any) -> Any:
        return self.items[i]

    def __iter__(self) -> Iterator[Detection]:
        return iter(self.items)

    def caption(self) -> Caption | None:
        if not self.show_count:
            return None
        n = len(self.items)
        return Caption(f"{n} {self.noun}{'' if n == 1 else 's'}")


def boxes_of(value: Any) -> list[tuple[int, int, int, int]]:
    """Boxes from a result: :class:`Detection` items, objects with ``.box``, or ``(x, y, w, h)`` tuples."""
    if not isinstance(value, Iterable):
        raise TypeError(f"expected a sequence of boxes, got {type(value).__name__}")
    boxes = []
    for item in value:
        box = item.box if hasattr(item, "box") else item
        x, y, w, h = (int(v) for v in box)
        boxes.append((x, y, w, h))
    return boxes
