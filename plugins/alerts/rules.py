"""Alert rules: the model, the limits a rule set must respect, and turning user input into rules.

A rule is a yes/no question the VLM answers continuously about the live video::

    {"id": "smoke", "prompt": "Is there smoke?", "interval": 2, "cooldown": 300,
     "on_frames": 2, "off_frames": 3, "severity": "critical"}

Rules arrive from three places (``-c alerts-rules="a;b"``, a YAML list, the
HTTP API) and all of them go through :func:`build_rules`, so every path
rejects the same mistakes with the same messages.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pydantic
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "RULE_FIELDS",
    "AlertRule",
    "RuleError",
    "RuleLimits",
    "Severity",
    "build_rules",
    "check_rule_set",
    "split_rules_text",
]

Severity = Literal["info", "warning", "critical"]

# Rule ids become MQTT topic levels and URL path segments: no '/', '+', '#' or spaces.
_RULE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_UNESCAPED_SEMICOLON = re.compile(r"(?<!\\);")
# Path segments that GET /v1/alerts/<segment> already uses.
_RESERVED_IDS = frozenset({"events"})


class RuleError(ValueError):
    """A rule or rule set is invalid. ``param`` names the offending place (``alerts[2].prompt``)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


class AlertRule(BaseModel):
    """One alert rule. ``None`` fields follow the processor's defaults (``-c alerts-cooldown=...``).

    Keys may be written ``on_frames`` or ``on-frames``; unknown keys are errors.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(description="Unique id: letters, digits, '_', '.', '-'; at most 64 characters")
    prompt: str = Field(description="The yes/no question, e.g. 'Is there smoke?'")
    interval: float | None = Field(None, ge=0, le=86400, description="Seconds between evaluations")
    cooldown: float | None = Field(None, ge=0, le=604800, description="Seconds before another 'on' notifies")
    on_frames: int | None = Field(None, ge=1, le=1000, description="Consecutive 'yes' answers to turn on")
    off_frames: int | None = Field(None, ge=1, le=1000, description="Consecutive 'no' answers to turn off")
    severity: Severity = Field("warning", description="info, warning or critical")

    @model_validator(mode="before")
    @classmethod
    def _normalise_keys(cls, data: Any) -> Any:
        if isinstance(data, Mapping):
            return {str(k).replace("-", "_"): v for k, v in data.items()}
        return data

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _RULE_ID.match(value):
            raise ValueError(
                f"invalid rule id {value!r}: use 1-64 letters, digits, '_', '.' or '-', starting with a letter or digit"
            )
        if value in _RESERVED_IDS:
            raise ValueError(f"the rule id {value!r} is reserved (GET /v1/alerts/{value} is an endpoint)")
        return value

    @field_validator("prompt")
    @classmethod
    def _check_prompt(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("the prompt must not be empty")
        return value

    def public(self) -> dict[str, Any]:
        """The rule as given (``None`` fields left out), for storage and echoing back."""
        return self.model_dump(exclude_none=True)


RULE_FIELDS = tuple(AlertRule.model_fields)


@dataclass(frozen=True)
class RuleLimits:
    """How many rules a processor takes and how long a prompt may be."""

    max_rules: int = 50
    max_prompt_chars: int = 500


def split_rules_text(text: str) -> list[Any]:
    """Rules from one command-line string.

    ``"Is there smoke?;Is a person on the floor?"`` gives two prompts (write ``\\;``
    for a semicolon inside a prompt); a string starting with ``[`` is read as a
    JSON list of prompts and rule objects.
    """
    stripped = text.strip()
    if stripped.startswith("["):
        try:
            value = json.loads(stripped)
        except json.JSONDecodeError as exc:
            raise RuleError(f"the rules look like JSON but are not: {exc.msg} at column {exc.colno}") from None
        if not isinstance(value, list):
            raise RuleError("a JSON rule list must be a list")
        return value
    if not stripped:
        return []
    return [part.replace("\\;", ";") for part in _UNESCAPED_SEMICOLON.split(text)]


def _pydantic_message(exc: pydantic.ValidationError, where: str) -> RuleError:
    err = exc.errors()[0]
    loc = [str(part) for part in err.get("loc", ())]
    param = f"{where}.{loc[0]}" if loc else where
    msg = str(err["msg"]).removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        msg = f"unknown field {loc[0]!r} (allowed: {', '.join(RULE_FIELDS)})"
    elif err["type"] == "missing":
        msg = f"field {loc[0]!r} is required"
    return RuleError(f"{param}: {msg}", param)


def build_rules(
    items: Sequence[Any],
    limits: RuleLimits,
    *,
    where: str = "alerts",
    taken_ids: Iterable[str] = (),
) -> list[AlertRule]:
    """Validate ``items`` (prompt strings, rule mappings or :class:`AlertRule`) into rules.

    A plain string becomes a rule with the next free id ``r0``, ``r1``... (the
    ids NVIDIA's Jetson VLM service gives), skipping ids in ``taken_ids`` and
    ids given explicitly in ``items``. Raises :class:`RuleError` naming the
    first problem as ``where[index].field``.
    """
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence):
        raise RuleError(f"{where}: expected a list of prompts or rule objects", where)
    explicit = {
        str(item.get("id")) for item in items if isinstance(item, Mapping) and item.get("id") is not None
    } | {item.id for item in items if isinstance(item, AlertRule)}
    taken = set(taken_ids) | explicit
    counter = 0
    rules: list[AlertRule] = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, AlertRule):
            rules.append(item)
            continue
        if isinstance(item, str):
            if not item.strip():
                raise RuleError(f"{at}: the prompt must not be empty", f"{at}.prompt")
            while f"r{counter}" in taken:
                counter += 1
            item = {"id": f"r{counter}", "prompt": item}
            taken.add(f"r{counter}")
        if not isinstance(item, Mapping):
            raise RuleError(f"{at}: expected a prompt string or a rule object, got {type(item).__name__}", at)
        try:
            rules.append(AlertRule.model_validate(dict(item)))
        except pydantic.ValidationError as exc:
            raise _pydantic_message(exc, at) from None
    check_rule_set(rules, limits, where=where)
    return rules


def check_rule_set(rules: Sequence[AlertRule], limits: RuleLimits, *, where: str = "alerts") -> None:
    """Raise :class:`RuleError` for duplicate ids, too many rules or over-long prompts."""
    if len(rules) > limits.max_rules:
        raise RuleError(
            f"{where}: {len(rules)} rules is more than the limit of {limits.max_rules}"
            " (raise it with -c alerts-max-rules=N)",
            where,
        )
    seen: dict[str, int] = {}
    for i, rule in enumerate(rules):
        if rule.id in seen:
            raise RuleError(f"{where}[{i}].id: duplicate rule id {rule.id!r} (also at {where}[{seen[rule.id]}])",
                            f"{where}[{i}].id")
        seen[rule.id] = i
        if len(rule.prompt) > limits.max_prompt_chars:
            raise RuleError(
                f"{where}[{i}].prompt: {len(rule.prompt)} characters is longer than the limit of"
                f" {limits.max_prompt_chars} (raise it with -c alerts-max-prompt-chars=N)",
                f"{where}[{i}].prompt",
            )
