"""The requests an engine runs: :class:`Job` (generate) and :class:`ChoiceJob` (score choices).

Both carry a ``sink(kind, value)`` callback that the engine thread calls with the
results, and a ``cancelled`` event the caller sets when it goes away.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from framelens import BackendError

from .model import Prompt
from .sampling import SamplingParams, TextStream

__all__ = ["ChoiceJob", "Job", "RequestReplaced", "Sink"]

Sink = Callable[[str, Any], None]


class RequestReplaced(BackendError):
    """A queued request was replaced by a newer one with the same ``replace_key`` before it started."""

    def __init__(self, key: str) -> None:
        super().__init__(f"request replaced by a newer frame of {key!r} before it started", kind="cancelled",
                         status=409)


@dataclass(eq=False)
class Job:
    """One generation request. ``sink(kind, value)`` gets ``("text", str)``, then ``("done", (finish, Usage,
    VLMTimings))`` or ``("error", BackendError)``; it is called on the engine thread."""

    prompt: Prompt
    max_tokens: int
    sampling: SamplingParams
    sink: Sink
    stops: tuple[str, ...] = ()
    replace_key: str | None = None
    background: bool = False  # started after every waiting interactive request
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
    slot: int = -1
    pos: int = 0
    next_token: int = -1
    generated: int = 0
    stream: TextStream | None = None
    prompt_s: float = 0.0
    first_at: float | None = None
    tokens: list[int] = field(default_factory=list)  # generated ids (EOS included)
    keep_logits: bool = False  # tests: keep each step's logits in `logits`
    logits: list[torch.Tensor] = field(default_factory=list)


@dataclass(eq=False)
class ChoiceJob:
    """Score choices after each prompt: ``choice_ids[c]`` are the tokens that start choice ``c``. The sink gets
    ``("done", [probs...])``: per prompt, the probabilities of the choices (in order, summing to 1)."""

    prompts: list[Prompt]
    choice_ids: list[list[int]]
    sink: Sink
    background: bool = False
    cancelled: threading.Event = field(default_factory=threading.Event)
    submitted: float = field(default_factory=time.monotonic)
