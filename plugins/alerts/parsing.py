"""Reading a VLM's answer to yes/no questions.

Small VLMs rarely answer with exactly one word, so parsing is tolerant about
case, punctuation, Markdown and reasoning blocks, but strict about meaning:
only an answer that clearly says yes/true or no/false counts. Anything else
("The image shows a kitchen", "yes/no") is *unknown*, never a silent false.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from typing import Any

__all__ = ["parse_batch_answer", "parse_yes_no"]

_YES = frozenset({"yes", "true"})
_NO = frozenset({"no", "false"})
# Labels some models put before the answer: "Answer: yes".
_LABELS = frozenset({"answer", "response", "output", "result"})
_THINK = re.compile(r"<think>.*?(?:</think>|$)", re.IGNORECASE | re.DOTALL)
_WORDS = re.compile(r"[a-z]+")
_FENCE = re.compile(r"^```[a-zA-Z]*\s*|\s*```$")


def parse_yes_no(text: str) -> bool | None:
    """``True`` for yes/true, ``False`` for no/false, ``None`` when the answer says neither.

    The first word decides ("Yes, there is smoke." is yes). An answer whose
    first words contain both polarities ("Yes/No", "Yes. No smoke.") is
    ambiguous and ``None``.
    """
    words = _WORDS.findall(_THINK.sub(" ", text).lower())
    while words and words[0] in _LABELS:
        words = words[1:]
    if not words:
        return None
    first = words[0]
    if first in _YES:
        answer, opposite = True, _NO
    elif first in _NO:
        answer, opposite = False, _YES
    else:
        return None
    if any(w in opposite for w in words[1:3]):
        return None
    return answer


def _json_object(text: str) -> dict[str, Any] | None:
    body = _FENCE.sub("", _THINK.sub("", text).strip())
    candidates = [body]
    start, end = body.find("{"), body.rfind("}")
    if 0 <= start < end:
        candidates.append(body[start : end + 1])
    for candidate in candidates:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def parse_batch_answer(text: str, rule_ids: Iterable[str]) -> dict[str, bool | None]:
    """Per-rule results from a structured answer ``{"smoke": true, "person": false}``.

    Values may be JSON booleans or yes/no strings; a missing key, any other
    value, or text that holds no JSON object gives ``None`` for that rule.
    """
    obj = _json_object(text)
    results: dict[str, bool | None] = {}
    for rule_id in rule_ids:
        value = obj.get(rule_id) if obj is not None else None
        if isinstance(value, bool):
            results[rule_id] = value
        elif isinstance(value, str):
            results[rule_id] = parse_yes_no(value)
        else:
            results[rule_id] = None
    return results
