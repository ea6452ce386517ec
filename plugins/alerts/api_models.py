"""The shapes of the alerts HTTP API, for validation of responses and the OpenAPI document.

Responses are built through these models, so ``/openapi.json`` always tells
the truth about them. Requests are validated by :func:`~.rules.build_rules`
(its messages name the rule and field at fault); :class:`AlertsRequest`
documents them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from .rules import AlertRule

__all__ = ["AlertDeleted", "AlertList", "AlertView", "AlertsDeleted", "AlertsRequest", "AlertsSet"]

State = Literal["unknown", "off", "on"]


class AlertsRequest(BaseModel):
    """``POST /v1/alerts``: the rules to set or add."""

    model_config = ConfigDict(extra="forbid")

    alerts: list[str | AlertRule] = Field(
        description="Prompts (ids r0, r1... are given) or rule objects; [] with mode=replace clears all rules")
    mode: Literal["replace", "add"] = Field(
        "replace", description="replace: these become all the rules (NVIDIA JPS semantics); add: add or update")
    id: str = Field("", max_length=100,
                    description="NVIDIA JPS stream id, accepted for compatibility; rules apply to the frames of"
                    " the pipeline the alerts processor is in")


class AlertView(BaseModel):
    """One rule with its effective settings, state and last evaluation."""

    id: str
    object: Literal["alert"] = "alert"
    prompt: str
    severity: Literal["info", "warning", "critical"]
    interval: float = Field(description="Seconds between evaluations")
    cooldown: float = Field(description="Seconds after a notified 'on' during which another 'on' stays quiet")
    on_frames: int
    off_frames: int
    state: State
    since: float | None = Field(description="When the state last changed (Unix time)")
    last_evaluated: float | None = Field(description="When the rule was last answered (Unix time)")
    last_result: Literal["true", "false", "unknown"] | None
    last_answer: str = Field(description="The model's raw answer (cut at 200 characters)")
    last_error: str | None = Field(description="Why the last evaluation failed, if it did")
    last_latency_s: float | None
    last_frame_index: int | None
    evaluations: int


class AlertList(BaseModel):
    """``GET /v1/alerts``."""

    object: Literal["list"] = "list"
    data: list[AlertView]
    processor: str
    backend: str
    backend_state: Literal["ok", "down"]
    max_rules: int


class AlertsSet(BaseModel):
    """``POST /v1/alerts``: JPS's ``detail`` plus the rules now in force."""

    detail: str = "Alert rules set"
    object: Literal["list"] = "list"
    data: list[AlertView]


class AlertDeleted(BaseModel):
    """``DELETE /v1/alerts/{id}``."""

    id: str
    object: Literal["alert"] = "alert"
    deleted: bool = True


class AlertsDeleted(BaseModel):
    """``DELETE /v1/alerts``: the ids that were deleted."""

    object: Literal["list"] = "list"
    deleted: list[str]
    data: list[AlertView] = []
