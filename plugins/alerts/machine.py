"""The state machine of one alert rule: debouncing, unknown answers and cooldown.

States: ``unknown`` (not evaluated yet, or no usable answer lately), ``off`` and ``on``.

- ``on_frames`` consecutive yes answers turn a rule on; ``off_frames``
  consecutive no answers turn it off. A yes resets the run of no's and the
  other way round.
- An answer that is neither (unparseable text, backend down, timeout) is
  *unknown*: it neither counts towards nor breaks a run of yes/no answers.
  ``unknown_after`` of them in a row make the state ``unknown``, and the runs
  start again from zero, so a rule comes back only on fresh evidence.
- Every state change is a :class:`Transition`. Its ``notify`` flag says
  whether notifiers should tell people: a change to ``on`` notifies unless
  the rule's last notified ``on`` was less than ``cooldown`` seconds ago; a
  change away from ``on`` (to ``off``, ``unknown`` or deletion) notifies
  exactly when the episode it ends was notified, so someone who heard
  "on" always hears how it ended.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

__all__ = ["MachineSettings", "RuleMachine", "State", "Transition"]

State = Literal["unknown", "off", "on"]


@dataclass(frozen=True)
class MachineSettings:
    """The effective debouncing and cooldown of a rule."""

    on_frames: int = 1
    off_frames: int = 1
    cooldown: float = 60.0
    unknown_after: int = 2


@dataclass(frozen=True)
class Transition:
    """A state change: ``previous`` -> ``state`` at ``at`` (monotonic seconds)."""

    previous: str
    state: str
    notify: bool
    at: float
    suppressed: bool = False  # an 'on' that the cooldown kept quiet


class RuleMachine:
    """Feeds yes/no/unknown results into a rule's state. Not thread-safe: the engine locks."""

    def __init__(self, settings: MachineSettings) -> None:
        self.settings = settings
        self.state: State = "unknown"
        self.since: float | None = None
        self.trues = 0
        self.falses = 0
        self.unknowns = 0
        self._last_notified_on: float | None = None
        # True from a notified change to 'on' until the change to 'off' that ends it.
        self._open_notified = False

    def feed(self, result: bool | None, now: float) -> Transition | None:
        """Count one evaluation result; return the transition it caused, if any."""
        s = self.settings
        if result is None:
            self.unknowns += 1
            if self.state != "unknown" and self.unknowns >= s.unknown_after:
                self.trues = self.falses = 0
                return self._move("unknown", now)
            return None
        self.unknowns = 0
        if result:
            self.trues += 1
            self.falses = 0
            if self.state != "on" and self.trues >= s.on_frames:
                return self._move("on", now)
        else:
            self.falses += 1
            self.trues = 0
            if self.state != "off" and self.falses >= s.off_frames:
                return self._move("off", now)
        return None

    def delete(self, now: float) -> Transition:
        """The rule is removed: a final transition to ``deleted``."""
        notify = self._open_notified
        self._open_notified = False
        return Transition(self.state, "deleted", notify, now)

    def _move(self, new: State, now: float) -> Transition:
        previous = self.state
        suppressed = False
        if new == "on":
            last = self._last_notified_on
            notify = last is None or now - last >= self.settings.cooldown
            suppressed = not notify
            if notify:
                self._last_notified_on = now
                self._open_notified = True
        elif new == "off":
            notify = self._open_notified
            self._open_notified = False
        else:
            notify = previous == "on" and self._open_notified
        self.state = new
        self.since = now
        return Transition(previous, new, notify, now, suppressed)
