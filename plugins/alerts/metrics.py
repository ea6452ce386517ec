"""Prometheus metrics of the alerts processors, served by the HTTP service's ``/metrics``.

=========================================== ======= ==============================================
name                                        type    meaning
=========================================== ======= ==============================================
``framelens_alert_state{processor,rule}``   gauge   1 on, 0 off, -1 unknown; removed with the rule
``framelens_alert_evaluations_total``       counter results per ``processor, rule, result``
                                                    (``true``, ``false``, ``unknown``)
``framelens_alert_transitions_total``       counter state changes per ``processor, rule, state``
``framelens_alert_requests_total``          counter VLM requests per ``processor, mode, outcome``
                                                    (``ok``, ``error``)
``framelens_alert_evaluation_seconds``      histo   time of one evaluation (all due rules)
=========================================== ======= ==============================================
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from framelens import Context

__all__ = ["AlertMetrics", "STATE_VALUES", "metrics_for"]

STATE_VALUES = {"on": 1.0, "off": 0.0, "unknown": -1.0}


class AlertMetrics:
    """The alert metric families of one registry, shared by all alerts processors of a run."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.state = Gauge("framelens_alert_state", "Alert rule state: 1 on, 0 off, -1 unknown",
                           ["processor", "rule"], registry=registry)
        self.evaluations = Counter("framelens_alert_evaluations", "Alert rule evaluation results",
                                   ["processor", "rule", "result"], registry=registry)
        self.transitions = Counter("framelens_alert_transitions", "Alert rule state changes",
                                   ["processor", "rule", "state"], registry=registry)
        self.requests = Counter("framelens_alert_requests", "VLM requests made to evaluate alert rules",
                                ["processor", "mode", "outcome"], registry=registry)
        self.latency = Histogram("framelens_alert_evaluation_seconds", "Time to evaluate the due rules on a frame",
                                 ["processor"], registry=registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))

    def set_state(self, processor: str, rule: str, state: str) -> None:
        self.state.labels(processor, rule).set(STATE_VALUES.get(state, -1.0))

    def forget(self, processor: str, rule: str) -> None:
        """Drop a deleted rule's gauge so dashboards do not show a ghost."""
        try:
            self.state.remove(processor, rule)
        except KeyError:
            pass


def metrics_for(context: Context) -> AlertMetrics:
    """The run's :class:`AlertMetrics` on ``context.metrics``, created on first use (names register once)."""
    return context.state("alerts.metrics", lambda: AlertMetrics(context.metrics))
