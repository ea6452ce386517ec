"""The rule book of one alerts processor: rules, their state machines, and what a change emits.

The engine is shared by three threads: the frame loop asks whether anything
is due (a lock-free read), the background worker takes due rules and applies
evaluations, and HTTP handlers change rules. ``_lock`` guards the entries and
is held only briefly; ``_emit_lock`` is held from a state change until its
events are published, so subscribers see every rule's events in the order
the states changed (a ``deleted`` event is never followed by a late ``on``).
"""

from __future__ import annotations

import itertools
import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from framelens import Event, EventBus, Frame

from .evaluator import Evaluation, RuleAnswer
from .health import BackendHealth
from .machine import MachineSettings, RuleMachine, Transition
from .metrics import AlertMetrics
from .rules import AlertRule, RuleError, RuleLimits, build_rules, check_rule_set
from .snapshots import Snapshotter
from .status import ActiveAlert, AlertStatus
from .store import RuleStore
from .transition_log import log_transition

__all__ = ["AlertEngine", "DueRule", "RuleDefaults"]

log = logging.getLogger("framelens.alerts")



@dataclass(frozen=True)
class RuleDefaults:
    """Processor-wide values for rule fields left out (``None``)."""

    interval: float = 1.0
    cooldown: float = 60.0
    on_frames: int = 1
    off_frames: int = 1
    unknown_after: int = 2


@dataclass(frozen=True)
class DueRule:
    """A rule picked for an evaluation, with the generation its answer must still match."""

    rule: AlertRule
    generation: int


@dataclass
class _Entry:
    rule: AlertRule
    machine: RuleMachine
    generation: int
    next_due: float = 0.0
    since_wall: float | None = None
    last_evaluated: float | None = None
    last_result: bool | None = None
    last_answer: str = ""
    last_error: str | None = None
    last_latency_s: float | None = None
    last_frame_index: int | None = None
    evaluations: int = 0
    unparseable_streak: int = 0


def _result_name(result: bool | None) -> str:
    return "unknown" if result is None else ("true" if result else "false")


class AlertEngine:
    """Rules, states and notifications of the alerts processor ``processor_id``."""

    def __init__(
        self,
        processor_id: str,
        *,
        defaults: RuleDefaults,
        limits: RuleLimits,
        events: EventBus,
        metrics: AlertMetrics,
        snapshotter: Snapshotter,
        store: RuleStore | None = None,
        publish_status: Callable[[AlertStatus], None] | None = None,
        backend_name: str = "",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.id = processor_id
        self.defaults = defaults
        self.limits = limits
        self.events = events
        self.metrics = metrics
        self.snapshotter = snapshotter
        self.store = store
        self.backend_name = backend_name
        self._publish_status = publish_status
        self._clock = clock
        self._entries: dict[str, _Entry] = {}
        self._last_events: dict[str, dict[str, Any]] = {}
        self._generations = itertools.count(1)
        self._lock = threading.Lock()
        self._emit_lock = threading.RLock()
        self._change_lock = threading.Lock()
        # Read without a lock by the frame loop: a float assignment is atomic.
        self.next_due_at = math.inf
        self.health = BackendHealth(processor_id, backend_name)
        self.evaluations = 0
        self.transitions = 0

    # -- settings ----------------------------------------------------------------------------

    def machine_settings(self, rule: AlertRule) -> MachineSettings:
        d = self.defaults
        return MachineSettings(
            on_frames=rule.on_frames if rule.on_frames is not None else d.on_frames,
            off_frames=rule.off_frames if rule.off_frames is not None else d.off_frames,
            cooldown=rule.cooldown if rule.cooldown is not None else d.cooldown,
            unknown_after=d.unknown_after,
        )

    def interval(self, rule: AlertRule) -> float:
        return rule.interval if rule.interval is not None else self.defaults.interval

    # -- reading -----------------------------------------------------------------------------

    def rule_ids(self) -> list[str]:
        with self._lock:
            return list(self._entries)

    def rules(self) -> list[AlertRule]:
        with self._lock:
            return [e.rule for e in self._entries.values()]

    def _view(self, e: _Entry) -> dict[str, Any]:
        s = e.machine.settings
        return {
            "id": e.rule.id,
            "object": "alert",
            "prompt": e.rule.prompt,
            "severity": e.rule.severity,
            "interval": self.interval(e.rule),
            "cooldown": s.cooldown,
            "on_frames": s.on_frames,
            "off_frames": s.off_frames,
            "state": e.machine.state,
            "since": e.since_wall,
            "last_evaluated": e.last_evaluated,
            "last_result": None if e.last_evaluated is None else _result_name(e.last_result),
            "last_answer": e.last_answer,
            "last_error": e.last_error,
            "last_latency_s": e.last_latency_s,
            "last_frame_index": e.last_frame_index,
            "evaluations": e.evaluations,
        }

    def view(self, rule_id: str | None = None) -> list[dict[str, Any]]:
        """Rules with their current state, last evaluation time and result (all, or one id)."""
        with self._lock:
            entries = [e for e in self._entries.values() if rule_id in (None, e.rule.id)]
            return [self._view(e) for e in entries]

    def status(self) -> AlertStatus:
        with self._lock:
            return self._status_locked()

    def _status_locked(self) -> AlertStatus:
        states = {i: e.machine.state for i, e in self._entries.items()}
        active = [ActiveAlert(e.rule.id, e.rule.prompt, e.rule.severity, e.since_wall)
                  for e in self._entries.values() if e.machine.state == "on"]
        return AlertStatus.build(self.id, states, active)

    # -- changing rules ----------------------------------------------------------------------

    def set_rules(self, items: Sequence[Any], *, mode: Literal["replace", "add"] = "replace",
                  where: str = "alerts", persist: bool = True) -> list[dict[str, Any]]:
        """Replace all rules, or add/update some (``mode="add"``). Raises :class:`RuleError`.

        A rule that keeps its id and prompt keeps its state; a changed prompt
        starts from ``unknown``. Takes effect on the next evaluation.
        """
        with self._change_lock:
            current = self.rules()
            taken = [r.id for r in current] if mode == "add" else []
            new = build_rules(items, self.limits, where=where, taken_ids=taken)
            if mode == "add":
                by_id = {r.id: r for r in current}
                by_id.update({r.id: r for r in new})
                new = list(by_id.values())
                check_rule_set(new, self.limits, where=where)
            self._commit(new, persist)
        return self.view()

    def put_rule(self, rule_id: str, item: Any, *, persist: bool = True) -> dict[str, Any]:
        """Create or replace the rule ``rule_id`` (the body's id, if any, must match)."""
        if not isinstance(item, dict):
            raise RuleError("expected a rule object such as {\"prompt\": \"Is there smoke?\"}", "body")
        body = {**item}
        if body.get("id", rule_id) != rule_id:
            raise RuleError(f"id: the body says {body['id']!r} but the URL says {rule_id!r}", "id")
        body["id"] = rule_id
        try:
            (rule,) = build_rules([body], self.limits, where="alert")
        except RuleError as exc:
            # One rule in a body of its own: name its fields plainly ("prompt", not "alert[0].prompt").
            raise RuleError(str(exc).replace("alert[0].", "").replace("alert[0]: ", ""),
                            (exc.param or "").replace("alert[0].", "") or None) from None
        with self._change_lock:
            current = self.rules()
            by_id = {r.id: r for r in current}
            by_id[rule_id] = rule
            new = list(by_id.values())
            check_rule_set(new, self.limits)
            self._commit(new, persist)
        return self.view(rule_id)[0]

    def delete(self, rule_id: str | None = None, *, persist: bool = True) -> list[str]:
        """Delete one rule (or all when ``rule_id`` is ``None``); returns the deleted ids."""
        with self._change_lock:
            current = self.rules()
            keep = [r for r in current if rule_id is not None and r.id != rule_id]
            deleted = [r.id for r in current if r not in keep]
            if deleted:
                self._commit(keep, persist)
            return deleted

    def _commit(self, rules: list[AlertRule], persist: bool) -> None:
        if persist and self.store is not None:
            self.store.save(rules)  # first: a change that cannot be stored is refused
        now = self._clock()
        with self._emit_lock:
            removed: list[tuple[AlertRule, Transition]] = []
            with self._lock:
                old = self._entries
                entries: dict[str, _Entry] = {}
                for rule in rules:
                    prev = old.get(rule.id)
                    if prev is not None and prev.rule.prompt == rule.prompt:
                        prev.rule = rule
                        prev.machine.settings = self.machine_settings(rule)
                        prev.next_due = min(prev.next_due, now + self.interval(rule))
                        entries[rule.id] = prev
                    else:
                        if prev is not None:
                            removed.append((prev.rule, prev.machine.delete(now)))
                        entry = _Entry(rule, RuleMachine(self.machine_settings(rule)), next(self._generations))
                        entries[rule.id] = entry
                for rule_id, prev in old.items():
                    if rule_id not in entries:
                        removed.append((prev.rule, prev.machine.delete(now)))
                self._entries = entries
                self._update_next_due()
                status = self._status_locked()
            for rule, t in removed:
                self._emit(rule, t, {"reason": "deleted" if rule.id not in entries else "prompt changed"})
                self.metrics.forget(self.id, rule.id)
            for rule in rules:
                if rule.id in entries and entries[rule.id].machine.state == "unknown":
                    self.metrics.set_state(self.id, rule.id, "unknown")
            self._status(status)

    def _update_next_due(self) -> None:
        self.next_due_at = min((e.next_due for e in self._entries.values()), default=math.inf)

    # -- evaluating --------------------------------------------------------------------------

    def take_due(self) -> list[DueRule]:
        """The rules due now; their next evaluation is scheduled one interval from now."""
        now = self._clock()
        with self._lock:
            due = [e for e in self._entries.values() if e.next_due <= now]
            for e in due:
                e.next_due = now + self.interval(e.rule)
            self._update_next_due()
            return [DueRule(e.rule, e.generation) for e in due]

    def apply(self, frame: Frame, jpeg: bytes, due: Sequence[DueRule], evaluation: Evaluation) -> None:
        """Feed an evaluation's answers to the state machines and publish what changed."""
        now = self._clock()
        wall = time.time()
        self.health.record(evaluation, now)
        changed: list[tuple[AlertRule, Transition, RuleAnswer]] = []
        with self._emit_lock:
            with self._lock:
                for d in due:
                    e = self._entries.get(d.rule.id)
                    if e is None or e.generation != d.generation:
                        continue  # deleted or re-prompted while the VLM was thinking
                    answer = evaluation.answers.get(d.rule.id) or RuleAnswer(None, error="no answer")
                    self._record(e, answer, frame, wall, evaluation.latency_s)
                    t = e.machine.feed(answer.result, now)
                    if t is not None:
                        e.since_wall = wall
                        changed.append((e.rule, t, answer))
                status = self._status_locked() if changed else None
            self.evaluations += 1
            self._count(due, evaluation)
            if not changed:
                return
            snapshot = self.snapshotter.attach(jpeg, frame.index, frame.timestamp)
            for rule, t, answer in changed:
                self._emit(rule, t, {
                    "frame_index": frame.index,
                    "capture_time": frame.timestamp,
                    "evaluated_at": wall,
                    "latency_s": round(evaluation.latency_s, 4),
                    "mode": evaluation.mode,
                    "answer": answer.answer,
                    "error": answer.error,
                    **snapshot,
                }, source=frame.source_id)
            assert status is not None
            self._status(status)

    def _record(self, e: _Entry, answer: RuleAnswer, frame: Frame, wall: float, latency: float) -> None:
        e.evaluations += 1
        e.last_evaluated = wall
        e.last_result = answer.result
        e.last_answer = answer.answer
        e.last_error = answer.error
        e.last_latency_s = round(latency, 4)
        e.last_frame_index = frame.index
        if answer.result is None and answer.error is None:
            e.unparseable_streak += 1
            if e.unparseable_streak == 1:
                log.warning("%s: rule %s: the answer %r is neither yes nor no; counted as unknown",
                            self.id, e.rule.id, answer.answer[:80])
        elif answer.result is not None:
            e.unparseable_streak = 0

    def _count(self, due: Sequence[DueRule], evaluation: Evaluation) -> None:
        m = self.metrics
        for d in due:
            answer = evaluation.answers.get(d.rule.id)
            m.evaluations.labels(self.id, d.rule.id, _result_name(answer.result if answer else None)).inc()
        ok = evaluation.requests - evaluation.failed_requests
        if ok:
            m.requests.labels(self.id, evaluation.mode, "ok").inc(ok)
        if evaluation.failed_requests:
            m.requests.labels(self.id, evaluation.mode, "error").inc(evaluation.failed_requests)
        m.latency.labels(self.id).observe(evaluation.latency_s)

    @property
    def retry_at(self) -> float:
        """Monotonic time before which the backend should not be asked again (backoff)."""
        return self.health.retry_at

    @property
    def backend_down(self) -> bool:
        return self.health.down

    # -- publishing --------------------------------------------------------------------------

    def _emit(self, rule: AlertRule, t: Transition, fields: dict[str, Any], source: str | None = None) -> None:
        payload: dict[str, Any] = {
            "processor": self.id,
            "rule": rule.id,
            "prompt": rule.prompt,
            "severity": rule.severity,
            "state": t.state,
            "previous": t.previous,
            "notify": t.notify,
            "suppressed": t.suppressed,
            "backend": self.backend_name,
            **fields,
        }
        self.transitions += 1
        if t.state != "deleted":
            self.metrics.set_state(self.id, rule.id, t.state)
        self.metrics.transitions.labels(self.id, rule.id, t.state).inc()
        log_transition(self.id, rule, t, fields.get("frame_index"), self.machine_settings(rule).cooldown)
        event = Event("alert", payload, source, fields.get("frame_index"))
        with self._lock:
            if t.state == "deleted":
                self._last_events.pop(rule.id, None)
            else:
                self._last_events[rule.id] = event.to_dict()
        self.events.emit(event)

    def last_events(self) -> list[dict[str, Any]]:
        """The newest transition event of every rule that had one (for MQTT's retained states)."""
        with self._lock:
            return list(self._last_events.values())

    def _status(self, status: AlertStatus) -> None:
        if self._publish_status is not None:
            self._publish_status(status)
