"""The ``alerts`` processor: yes/no prompts evaluated continuously on the live video.

The frame loop only checks whether a rule is due and hands the frame to a
:class:`~framelens.BackgroundWorker` (never blocking); the worker encodes the
newest frame once, asks the backend about every due rule, and feeds the
answers to the :class:`~.engine.AlertEngine`, which publishes transitions as
``alert`` events. Webhook, MQTT and SSE notifiers listen on the event bus.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any, Literal

from pydantic import ValidationInfo, field_validator

from framelens import (
    BackgroundWorker,
    ConfigError,
    Context,
    Field,
    Frame,
    ImagePart,
    Options,
    Processor,
    encode_jpeg,
    fit_max_side,
)

from . import hub
from .engine import AlertEngine, RuleDefaults
from .evaluator import Evaluation, Evaluator, Mode
from .metrics import metrics_for
from .mqtt import MqttNotifier, parse_mqtt_url
from .rules import AlertRule, RuleError, RuleLimits, build_rules, split_rules_text
from .snapshots import SnapshotMode, Snapshotter, default_snapshot_dir
from .sse import SseBroadcaster
from .store import RuleStore, StoreError
from .webhook import WebhookNotifier, parse_header

__all__ = ["AlertsOptions", "AlertsProcessor"]

log = logging.getLogger("framelens.alerts")


class AlertsOptions(Options):
    """Options of the ``alerts`` processor (``-c alerts-KEY=VALUE``)."""

    backend: str | None = Field(None, description="VLM backend that evaluates the rules (ollama, nim, ...;"
                                " default: the run's --backend, else ollama)")
    model: str | None = Field(None, description="Model to ask; default: the backend's model")
    max_rules: int = Field(50, ge=1, le=1000, description="Most rules this processor takes")
    max_prompt_chars: int = Field(500, ge=1, le=20000, description="Longest prompt accepted, in characters")
    rules: list[AlertRule] = Field(
        default_factory=list,
        description="Rules: 'prompt;prompt' on the command line (\\; for a literal ;), or a YAML/JSON list"
        " of prompts and {id, prompt, interval, cooldown, on_frames, off_frames, severity} objects",
    )
    store: str | None = Field(None, description="JSON file that keeps rules across restarts (API changes included)")
    interval: float = Field(1.0, ge=0, le=86400, description="Default seconds between evaluations of a rule")
    cooldown: float = Field(60.0, ge=0, le=604800, description="Default seconds before another 'on' notifies")
    on_frames: int = Field(1, ge=1, le=1000, description="Default consecutive yes answers to turn a rule on")
    off_frames: int = Field(1, ge=1, le=1000, description="Default consecutive no answers to turn a rule off")
    unknown_after: int = Field(2, ge=1, le=1000,
                               description="Evaluations in a row without a yes/no answer before a rule is unknown")
    mode: Mode = Field("auto", description="auto, batch (one JSON-schema request for all due rules) or per-rule")
    concurrency: int = Field(1, ge=1, le=64, description="Per-rule requests in flight at once")
    timeout: float = Field(30.0, gt=0, le=3600, description="Seconds one evaluation (all due rules) may take")
    max_side: int = Field(768, ge=0, le=8192, description="Shrink frames to this longest side first (0: full size)")
    jpeg_quality: int = Field(85, ge=1, le=100, description="JPEG quality of the image sent and snapshotted")
    max_tokens: int | None = Field(None, ge=1, le=8192, description="Answer token budget (default: from rule count)")
    system_prompt: str | None = Field(None, description="Replace the built-in yes/no (or JSON) instruction")
    snapshot: SnapshotMode = Field("path", description="Snapshot in events: path (a JPEG file), inline (base64), none")
    snapshot_dir: str = Field(default_snapshot_dir(), description="Directory for snapshot files")
    snapshot_keep: int = Field(500, ge=1, le=1_000_000, description="Newest snapshot files kept in snapshot-dir")
    webhook: str | None = Field(None, description="URL that receives each notification as a JSON POST")
    webhook_events: Literal["notify", "all"] = Field(
        "notify", description="notify: only notifications (cooldown applied); all: every transition")
    webhook_timeout: float = Field(5.0, gt=0, le=300, description="Seconds per webhook attempt")
    webhook_attempts: int = Field(5, ge=1, le=100, description="Webhook attempts before giving up on an event")
    webhook_header: list[str] = Field(default_factory=list,
                                      description="Extra request header 'Name: value' (a YAML list for several)")
    mqtt: str | None = Field(None, description="mqtt://[user:pass@]host[:port]/prefix to publish transitions to")
    mqtt_qos: int = Field(1, ge=0, le=2, description="MQTT QoS of published messages")
    result_key: str | None = Field(
        None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
        description="Id of this processor: its frame.results key and the 'processor' of its events,"
        " metrics and API (default: the processor's id, e.g. door for -p alerts:door)")

    @field_validator("rules", mode="before")
    @classmethod
    def _parse_rules(cls, value: Any, info: ValidationInfo) -> Any:
        limits = RuleLimits(info.data.get("max_rules", 50), info.data.get("max_prompt_chars", 500))
        try:
            items = split_rules_text(value) if isinstance(value, str) else value
            return build_rules(items or [], limits, where="rules")
        except RuleError as exc:
            raise ValueError(str(exc)) from None

    @field_validator("webhook")
    @classmethod
    def _check_webhook(cls, value: str | None) -> str | None:
        if value is not None and not value.startswith(("http://", "https://")):
            raise ValueError("expected an http:// or https:// URL")
        return value

    @field_validator("webhook_header", mode="before")
    @classmethod
    def _check_headers(cls, value: Any) -> Any:
        items = [value] if isinstance(value, str) else value
        for item in items or []:
            parse_header(str(item))
        return items

    @field_validator("mqtt")
    @classmethod
    def _check_mqtt(cls, value: str | None) -> str | None:
        if value is not None:
            parse_mqtt_url(value)
        return value


class AlertsProcessor(Processor):
    """Evaluates alert rules on the newest frame in the background; see the module docstring."""

    def __init__(self, stage_id: str, options: AlertsOptions, context: Context) -> None:
        self.id = stage_id
        self.options = options
        self.context = context
        o = options
        backend_name = o.backend or context.default_backend
        backend = context.backend(backend_name)
        if "images" not in backend.supports:
            raise ConfigError(f"alerts-backend: backend {backend_name!r} does not accept images")
        if o.mode == "batch" and "json_schema" not in backend.supports:
            raise ConfigError(f"alerts-mode=batch: backend {backend_name!r} has no structured output (json_schema);"
                              " use alerts-mode=auto or per-rule")
        self.limits = RuleLimits(o.max_rules, o.max_prompt_chars)
        self.evaluator = Evaluator(backend, mode=o.mode, model=o.model, concurrency=o.concurrency,
                                   max_tokens=o.max_tokens, timeout=o.timeout, system_prompt=o.system_prompt)
        self.store = RuleStore(o.store, self.limits) if o.store else None
        self.snapshotter = Snapshotter(o.snapshot, o.snapshot_dir, o.snapshot_keep)
        self.engine = AlertEngine(
            stage_id,
            defaults=RuleDefaults(o.interval, o.cooldown, o.on_frames, o.off_frames, o.unknown_after),
            limits=self.limits,
            events=context.events,
            metrics=metrics_for(context),
            snapshotter=self.snapshotter,
            store=self.store,
            publish_status=lambda status: context.publish_result(stage_id, status),
            backend_name=backend_name,
        )
        self.sse = SseBroadcaster(stage_id)
        self.webhook = (
            WebhookNotifier(o.webhook, runner=context.runner, processor_id=stage_id, timeout=o.webhook_timeout,
                            attempts=o.webhook_attempts, select=o.webhook_events,
                            headers=dict(parse_header(h) for h in o.webhook_header))
            if o.webhook else None
        )
        self.mqtt = (
            MqttNotifier(parse_mqtt_url(o.mqtt), processor_id=stage_id, current=self.engine.last_events,
                         qos=o.mqtt_qos)
            if o.mqtt else None
        )
        self.worker: BackgroundWorker[None] = BackgroundWorker(
            f"alerts-{stage_id}", self._evaluate, interval=0.0, on_error=self._worker_failed)
        self._unsubscribe: list[Callable[[], None]] = []

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        try:
            self.snapshotter.start()
        except OSError as exc:
            raise ConfigError(f"alerts-snapshot-dir: cannot use {self.snapshotter.directory}: {exc}") from None
        self.engine.set_rules(self._initial_rules(), persist=False, where="rules")
        for subscriber in (self.sse, self.webhook, self.mqtt):
            if subscriber is not None:
                self._unsubscribe.append(self.context.events.subscribe(subscriber))
        if self.webhook is not None:
            self.webhook.start()
        if self.mqtt is not None:
            self.mqtt.start()
        hub.attach(self.context, hub.AlertsHandle(self.engine, self.sse))
        self.context.publish_result(self.id, self.engine.status())
        self.worker.start()
        log.info("%s: %d rules on backend %s (%s)", self.id, len(self.engine.rule_ids()),
                 self.options.backend or self.context.default_backend, self.options.mode)

    def _initial_rules(self) -> list[AlertRule]:
        configured = list(self.options.rules)
        if self.store is None:
            return configured
        problem = self.store.check_writable()
        if problem:
            raise ConfigError(f"alerts-store={self.store.path}: {problem}")
        loaded = self.store.load()
        if loaded is None:
            try:
                self.store.save(configured)
            except StoreError as exc:
                raise ConfigError(f"alerts-store: {exc}") from None
            return configured
        if configured and [r.public() for r in configured] != [r.public() for r in loaded.rules]:
            log.warning("%s: using the %d rules stored in %s; the %d configured rules apply only when"
                        " the store is missing (delete it to start over from the configuration)",
                        self.id, len(loaded.rules), loaded.path, len(configured))
        return loaded.rules

    def process(self, frame: Frame) -> Frame:
        now = time.monotonic()
        if now >= self.engine.next_due_at and now >= self.engine.retry_at:
            self.worker.submit(frame)
        return frame

    def close(self) -> None:
        self.worker.close(timeout=min(self.options.timeout, 10.0))
        hub.detach(self.context, self.id)
        self.sse.close()
        for unsubscribe in self._unsubscribe:
            unsubscribe()
        if self.webhook is not None:
            self.webhook.close()
        if self.mqtt is not None:
            self.mqtt.close()

    # -- the background work -----------------------------------------------------------------

    def _evaluate(self, frame: Frame) -> None:
        if time.monotonic() < self.engine.retry_at:
            return  # a frame that was waiting when the backend failed: keep the backoff
        due = self.engine.take_due()
        if not due:
            return
        rules = [d.rule for d in due]
        jpeg = encode_jpeg(fit_max_side(frame.image, self.options.max_side or None), self.options.jpeg_quality)
        started = time.monotonic()
        try:
            evaluation = self.context.runner.run(
                self.evaluator.evaluate(ImagePart(data=jpeg, mime="image/jpeg"), rules), self.options.timeout)
        except Exception as exc:  # timeouts and backend bugs alike become unknown answers
            evaluation = Evaluation.failure(rules, exc, time.monotonic() - started,
                                            self.evaluator.mode_for(len(rules)))
        self.engine.apply(frame, jpeg, due, evaluation)

    def _worker_failed(self, frame: Frame, exc: BaseException, seconds: float) -> None:
        log.error("%s: evaluating frame %d failed: %s: %s", self.id, frame.index, type(exc).__name__, exc)

    def stats(self) -> dict[str, Any]:
        return {**self.worker.stats(), "evaluations": self.engine.evaluations,
                "transitions": self.engine.transitions, "rules": len(self.engine.rule_ids())}
