"""Asking the VLM the due rules about one frame: batched structured output, or one request per rule.

*Batched* (backends whose ``supports`` has ``json_schema``): one request whose
answer must match a JSON schema with one boolean property per rule id, so N
rules cost one image prefill and a few tokens each.

*Per rule*: one short request per rule with a strict yes/no instruction and
a tiny token budget. The image and the system prompt come first and are the
same in every request, so servers with prefix caching (llama.cpp, vLLM,
Ollama) reuse the image's prefill across the rules.

*Choices* (backends whose ``supports`` has ``choices``, such as ``local``): the
per-rule conversations go to :meth:`~framelens.VLMBackend.choose` in one call,
which scores ``yes`` against ``no`` without generating; the engine prefills the
image once, and the answer carries the probability.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from framelens import BackendError, ChatMessage, GenerationParams, ImagePart, TextPart, VLMBackend

from .parsing import parse_batch_answer, parse_yes_no
from .rules import AlertRule

__all__ = [
    "BATCH_SYSTEM_PROMPT",
    "YES_NO_SYSTEM_PROMPT",
    "Evaluation",
    "Evaluator",
    "Mode",
    "RuleAnswer",
    "batch_schema",
]

Mode = Literal["auto", "batch", "per-rule"]

YES_NO_SYSTEM_PROMPT = (
    "You watch a camera image and answer one yes/no question about it. Base the answer only on what "
    "the image shows. Reply with exactly one word: yes or no."
)
BATCH_SYSTEM_PROMPT = (
    "You watch a camera image and answer several yes/no questions about it. Base every answer only on "
    "what the image shows. Reply with one JSON object that has one key per question id and the value "
    "true for yes or false for no, and nothing else."
)

_ANSWER_CHARS = 200  # raw answers are kept for GET /v1/alerts and events; long ones are cut


@dataclass(frozen=True)
class RuleAnswer:
    """One rule's result: ``True``/``False``, or ``None`` when unknown (``error`` says why if it failed)."""

    result: bool | None
    answer: str = ""
    error: str | None = None


@dataclass(frozen=True)
class Evaluation:
    """The answers of one evaluation, keyed by rule id."""

    answers: dict[str, RuleAnswer]
    latency_s: float
    mode: str
    requests: int
    failed_requests: int = 0
    error: BaseException | None = None

    @property
    def backend_failed(self) -> bool:
        """True when no request of this evaluation got an answer."""
        return self.requests > 0 and self.failed_requests == self.requests

    @classmethod
    def failure(cls, rules: Sequence[AlertRule], exc: BaseException, latency_s: float, mode: str) -> Evaluation:
        message = _describe(exc)
        answers = {r.id: RuleAnswer(None, error=message) for r in rules}
        return cls(answers, latency_s, mode, requests=1, failed_requests=1, error=exc)


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return f"timed out: {exc}" if str(exc) else "timed out"
    return str(exc) or type(exc).__name__


def batch_schema(rules: Sequence[AlertRule]) -> dict[str, Any]:
    """The JSON schema of a batched answer: one required boolean per rule id, described by its prompt."""
    return {
        "type": "object",
        "properties": {r.id: {"type": "boolean", "description": r.prompt} for r in rules},
        "required": [r.id for r in rules],
        "additionalProperties": False,
    }


class Evaluator:
    """Evaluates rules on one image with a :class:`~framelens.VLMBackend`.

    Args:
        mode: ``batch``, ``per-rule``, or ``auto`` (batch when the backend
            supports ``json_schema`` and more than one rule is due).
        concurrency: per-rule requests in flight at once (1 suits one GPU).
        max_tokens: answer budget; ``None`` picks one from the rule count.
    """

    def __init__(
        self,
        backend: VLMBackend,
        *,
        mode: Mode = "auto",
        model: str | None = None,
        concurrency: int = 1,
        max_tokens: int | None = None,
        timeout: float | None = None,
        system_prompt: str | None = None,
    ) -> None:
        self.backend = backend
        self.mode = mode
        self.model = model
        self.concurrency = max(1, concurrency)
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.system_prompt = system_prompt
        self.can_batch = "json_schema" in backend.supports
        self.can_choose = "choices" in backend.supports

    def mode_for(self, n_rules: int) -> Literal["batch", "per-rule", "choices"]:
        if self.mode == "batch":
            return "batch"
        if self.mode == "auto" and self.can_choose:
            return "choices"
        if self.mode == "auto" and self.can_batch and n_rules > 1:
            return "batch"
        return "per-rule"

    def _params(self, max_tokens: int, schema: dict[str, Any] | None = None) -> GenerationParams:
        temperature = 0.0 if "temperature" in self.backend.supports else None
        return GenerationParams(model=self.model, max_tokens=self.max_tokens or max_tokens,
                                temperature=temperature, json_schema=schema, timeout=self.timeout,
                                priority="background")

    async def evaluate(self, image: ImagePart, rules: Sequence[AlertRule]) -> Evaluation:
        """Ask about every rule in ``rules``; request failures become unknown answers, never exceptions."""
        mode = self.mode_for(len(rules))
        started = time.monotonic()
        if mode == "batch":
            return await self._batch(image, rules, started)
        if mode == "choices":
            return await self._choices(image, rules, started)
        return await self._per_rule(image, rules, started)

    async def _choices(self, image: ImagePart, rules: Sequence[AlertRule], started: float) -> Evaluation:
        system = ChatMessage("system", self.system_prompt or YES_NO_SYSTEM_PROMPT)
        conversations = [[system, ChatMessage("user", (image, TextPart(f"{r.prompt}\nAnswer yes or no.")))]
                         for r in rules]
        try:
            scored = await self.backend.choose(conversations, ("yes", "no"), self._params(1))
        except (BackendError, OSError, TimeoutError) as exc:
            return Evaluation.failure(rules, exc, time.monotonic() - started, "choices")
        answers = {r.id: RuleAnswer(c.choice == "yes", f"{c.choice} (p={c.probability:.3f})")
                   for r, c in zip(rules, scored, strict=True)}
        return Evaluation(answers, time.monotonic() - started, "choices", requests=1)

    async def _batch(self, image: ImagePart, rules: Sequence[AlertRule], started: float) -> Evaluation:
        questions = "\n".join(f"- {r.id}: {r.prompt}" for r in rules)
        messages = [
            ChatMessage("system", self.system_prompt or BATCH_SYSTEM_PROMPT),
            ChatMessage("user", (image, TextPart(f"Questions:\n{questions}"))),
        ]
        # About a dozen tokens per '"id": false,' pair plus braces.
        params = self._params(24 + 12 * len(rules), batch_schema(rules))
        try:
            result = await self.backend.chat(messages, params)
        except (BackendError, OSError, TimeoutError) as exc:
            return Evaluation.failure(rules, exc, time.monotonic() - started, "batch")
        parsed = parse_batch_answer(result.text, [r.id for r in rules])
        answer = result.text.strip()[:_ANSWER_CHARS]
        answers = {r.id: RuleAnswer(parsed[r.id], answer) for r in rules}
        return Evaluation(answers, time.monotonic() - started, "batch", requests=1)

    async def _per_rule(self, image: ImagePart, rules: Sequence[AlertRule], started: float) -> Evaluation:
        gate = asyncio.Semaphore(self.concurrency)
        system = ChatMessage("system", self.system_prompt or YES_NO_SYSTEM_PROMPT)

        async def ask(rule: AlertRule) -> RuleAnswer:
            messages = [system, ChatMessage("user", (image, TextPart(f"{rule.prompt}\nAnswer yes or no.")))]
            async with gate:
                try:
                    result = await self.backend.chat(messages, self._params(8))
                except (BackendError, OSError, TimeoutError) as exc:
                    return RuleAnswer(None, error=_describe(exc))
            return RuleAnswer(parse_yes_no(result.text), result.text.strip()[:_ANSWER_CHARS])

        answers = await asyncio.gather(*(ask(r) for r in rules))
        failed = sum(1 for a in answers if a.error is not None)
        first_error = next((a.error for a in answers if a.error is not None), None)
        return Evaluation(
            {r.id: a for r, a in zip(rules, answers, strict=True)},
            time.monotonic() - started,
            "per-rule",
            requests=len(rules),
            failed_requests=failed,
            error=BackendError(first_error) if first_error else None,
        )
