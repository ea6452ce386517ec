"""The log as a notification channel: one line per transition, at a level that fits it.

A notified change to ``on`` is logged at its rule's severity (``info``,
``warning``, ``critical`` -> ERROR); an ``on`` held back by the cooldown, and
changes to ``off`` or deletions, at INFO; changes to ``unknown`` at DEBUG,
because their cause (backend down, unparseable answers) is logged once
where it happens.
"""

from __future__ import annotations

import logging

from .machine import Transition
from .rules import AlertRule

__all__ = ["log_transition"]

log = logging.getLogger("framelens.alerts")

_SEVERITY_LEVEL = {"info": logging.INFO, "warning": logging.WARNING, "critical": logging.ERROR}


def log_transition(processor_id: str, rule: AlertRule, t: Transition, frame_index: int | None,
                   cooldown: float) -> None:
    where = f" (frame {frame_index})" if frame_index is not None else ""
    text = f"{processor_id}: rule {rule.id} {t.previous} -> {t.state}{where}: {rule.prompt}"
    if t.state == "on" and t.notify:
        log.log(_SEVERITY_LEVEL.get(rule.severity, logging.WARNING), "ALERT %s", text)
    elif t.state == "on":
        log.info("%s (notification held back by the %g s cooldown)", text, cooldown)
    elif t.state == "unknown":
        log.debug("%s", text)
    else:
        log.info("%s", text)
