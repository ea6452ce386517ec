"""The result an alerts processor publishes for overlays and later stages.

``frame.results["alerts"]`` (the processor's id) holds an :class:`AlertStatus`
on every frame: the state of each rule and the rules that are on now. It is a
:class:`framelens.HasCaption`, so ``captions`` draws active alerts as a red
banner with the rules' text, and draws nothing while every rule is off.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from framelens import Caption

__all__ = ["ActiveAlert", "AlertStatus"]

_SEVERITY_ORDER = {"critical": 0, "warning": 1, "info": 2}


@dataclass(frozen=True)
class ActiveAlert:
    """A rule that is on: its id, question, severity and since when (epoch seconds)."""

    id: str
    prompt: str
    severity: str
    since: float | None


@dataclass(frozen=True)
class AlertStatus:
    """Every rule's state (``states``) and the active ones, most severe first (``active``)."""

    processor: str
    states: Mapping[str, str] = field(default_factory=dict)
    active: tuple[ActiveAlert, ...] = ()

    @classmethod
    def build(cls, processor: str, states: Mapping[str, str], active: list[ActiveAlert]) -> AlertStatus:
        ordered = sorted(active, key=lambda a: (_SEVERITY_ORDER.get(a.severity, 3), a.since or 0.0))
        return cls(processor, dict(states), tuple(ordered))

    def caption(self) -> Caption | None:
        """``ALERT: <prompt> | <prompt>`` at level ``alert`` while any rule is on, else ``None``."""
        if not self.active:
            return None
        return Caption("ALERT: " + " | ".join(a.prompt for a in self.active), level="alert")
