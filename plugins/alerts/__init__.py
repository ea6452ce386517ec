"""``alerts``: continuous yes/no prompts on live video, with state, cooldown and notifications.

::

    framelens run -s rtsp://cam/stream -p alerts -c alerts-backend=ollama \\
        -c alerts-rules="Is there smoke?;Is a person lying on the floor?" \\
        -c alerts-mqtt=mqtt://localhost:1883/framelens -p captions -o mjpeg

Modules: :mod:`.rules` (rule model and validation), :mod:`.store` (atomic
JSON persistence), :mod:`.machine` (per-rule state machine), :mod:`.parsing`
and :mod:`.evaluator` (asking the VLM), :mod:`.health` (backoff while the
backend is down), :mod:`.engine` (rules, states and events), :mod:`.status`
(the result ``captions`` draws), :mod:`.snapshots`, the notifiers
:mod:`.transition_log`, :mod:`.webhook`, :mod:`.mqtt` and :mod:`.sse`, the
HTTP API (:mod:`.routes`, :mod:`.api_models`, :mod:`.hub`), :mod:`.metrics`
(Prometheus) and :mod:`.processor` (the pipeline stage). docs/alerts.md is the
user's guide.
"""

from __future__ import annotations

from typing import Any

from framelens import ConfigError, Context, RegisterFn, hookimpl

from . import hub
from .processor import AlertsOptions, AlertsProcessor
from .routes import register_alert_routes
from .rules import AlertRule, RuleError
from .status import ActiveAlert, AlertStatus

__all__ = [
    "ActiveAlert",
    "AlertRule",
    "AlertStatus",
    "AlertsOptions",
    "AlertsProcessor",
    "RuleError",
    "register_processors",
    "register_routes",
]


def _make(options: AlertsOptions, context: Context, id: str) -> AlertsProcessor:
    processor_id = options.result_key or id
    if processor_id in hub.reserved(context):
        raise ConfigError(f"two alerts processors both use the result key {processor_id!r}: change the"
                          f" result-key option of one of them")
    hub.reserve(context, processor_id)
    return AlertsProcessor(processor_id, options, context)


@hookimpl
def register_processors(register: RegisterFn) -> None:
    register("alerts", _make, options=AlertsOptions,
             help="continuous yes/no VLM prompts on the video, with state, cooldown and notifications")


@hookimpl
def register_routes(register: Any, context: Context) -> None:
    register_alert_routes(register, context)
