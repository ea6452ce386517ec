"""Choosing the next token on the device, and turning tokens into text as they come.

:func:`sample` handles a whole batch in one go: rows with temperature 0 take
the argmax; the others are scaled, cut to top-k and top-p and sampled with the
exponential-race trick (``argmax(p / Exp(1))``), using each request's own
seeded generator, so no probabilities leave the device.

:class:`TextStream` turns the growing list of token ids into text that is safe
to show: it holds back a trailing incomplete UTF-8 character and any tail that
could still become a stop string, and finds stop strings that span tokens.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

__all__ = ["SamplingParams", "TextStream", "sample"]


class SamplingParams:
    """One request's sampling settings (temperature 0 = greedy) and its random generator."""

    def __init__(self, device: torch.device, temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0,
                 seed: int | None = None) -> None:
        self.temperature, self.top_p, self.top_k = temperature, top_p, top_k
        self.generator: torch.Generator | None = None
        if temperature > 0:
            self.generator = torch.Generator(device=device)
            if seed is not None:
                self.generator.manual_seed(seed)
            else:
                self.generator.seed()

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0


def sample(logits: torch.Tensor, params: Sequence[SamplingParams]) -> torch.Tensor:
    """The next token of each row of ``logits [B, V]`` (a device tensor ``[B]``)."""
    greedy = logits.argmax(-1)
    if all(p.greedy for p in params):
        return greedy
    out = greedy.clone()
    for i, p in enumerate(params):
        if p.greedy:
            continue
        row = logits[i] / p.temperature
        if 0 < p.top_k < row.shape[-1]:
            kth = torch.topk(row, p.top_k).values[-1]
            row = row.masked_fill(row < kth, float("-inf"))
        if p.top_p < 1.0:
            sorted_logits, order = torch.sort(row, descending=True)
            cum = sorted_logits.softmax(-1).cumsum(-1)
            drop = cum - sorted_logits.softmax(-1) >= p.top_p  # keep the smallest set reaching top_p
            drop[0] = False  # and always the most likely token (top_p = 0 means greedy)
            row = row.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
        probs = row.softmax(-1)
        noise = torch.empty_like(probs).exponential_(1.0, generator=p.generator)
        out[i] = (probs / noise).argmax()
    return out


class TextStream:
    """Incremental detokenizer with stop strings (see the module docstring)."""

    def __init__(self, tokenizer: Any, stops: Sequence[str] = ()) -> None:
        self.tokenizer = tokenizer
        self.stops = tuple(s for s in stops if s)
        self.ids: list[int] = []
        self.emitted = 0  # characters of the decoded text already handed out
        self.text = ""
        self.stopped = False

    def push(self, token: int) -> str:
        """Add one token; return the new text that is safe to show (may be empty)."""
        self.ids.append(token)
        full = self.tokenizer.decode(self.ids, skip_special_tokens=True)
        for stop in self.stops:
            at = full.find(stop, max(0, self.emitted - len(stop)))
            if at >= 0:
                self.stopped = True
                self.text = full[:at]
                new = self.text[self.emitted:]
                self.emitted = len(self.text)
                return new
        end = len(full)
        while end > self.emitted and full[end - 1] == "\ufffd":
            end -= 1  # an incomplete multi-byte character: wait for its other bytes
        hold = 0
        for stop in self.stops:  # a tail that may grow into a stop string stays back
            for n in range(min(len(stop) - 1, end - self.emitted), 0, -1):
                if full[end - n:end] == stop[:n]:
                    hold = max(hold, n)
                    break
        end -= hold
        self.text = full
        new = full[self.emitted:end] if end > self.emitted else ""
        self.emitted = max(self.emitted, end)
        return new

    def flush(self) -> str:
        """The text held back, once the answer ends without a stop string."""
        if self.stopped:
            return ""
        rest = self.text[self.emitted:].rstrip("\ufffd")
        self.emitted = len(self.text)
        return rest

    @property
    def answer(self) -> str:
        return self.text if self.stopped else self.text.rstrip("\ufffd")
