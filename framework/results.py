"""Result types shared between plugins, so overlays can draw what others found."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

__all__ = ["Caption", "HasCaption", "captions_of"]

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
