"""Scoring fixed answers (``yes``/``no``) without generating: the engine side of ``choose()``.

The conversations' common token prefix (cut back so it never ends inside an
image) is prefilled once, or copied from the prefix cache; it is forked into
one KV slot per conversation; the different tails are prefilled in one padded
batch; and each answer is read from the last logits: the probability mass of
the tokens that start each choice, normalised over the choices.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch

from framelens import BackendError

from .model import Prompt

if TYPE_CHECKING:
    from .engine import Engine

__all__ = ["choice_tokens", "score_choices"]


def choice_tokens(tokenizer: Any, choices: Sequence[str]) -> list[list[int]]:
    """The first tokens that start each choice (``yes``, ``Yes``, `` yes``...); no two choices may share one."""
    out: list[list[int]] = []
    for c in choices:
        ids: list[int] = []
        for variant in dict.fromkeys((c, c.capitalize(), c.lower(), " " + c, " " + c.capitalize())):
            tokens = tokenizer.encode(variant, add_special_tokens=False)
            if tokens and int(tokens[0]) not in ids and tokenizer.decode(tokens[:1]).strip():
                ids.append(int(tokens[0]))
        if not ids:
            raise BackendError(f"choice {c!r} has no tokens", kind="bad_request", status=400)
        out.append(ids)
    seen: set[int] = set()
    for c, ids in zip(choices, out, strict=True):
        if seen & set(ids):
            raise BackendError(f"choices {list(choices)} start with the same token ({c!r}); use answers that "
                               "differ in their first word", kind="bad_request", status=400)
        seen.update(ids)
    return out


def score_choices(engine: Engine, prompts: Sequence[Prompt], choice_ids: Sequence[Sequence[int]]) -> list[list[float]]:
    """Probabilities of each choice after each prompt, from one shared prefill (see the module docstring)."""
    first = prompts[0]
    shared = min(len(p.ids) for p in prompts) - 1
    for p in prompts[1:]:
        n = 0
        while n < shared and p.ids[n] == first.ids[n]:
            n += 1
        shared = n
    for p in prompts:
        shared = p.clamp(shared)
        for a, b in zip(p.spans, first.spans, strict=False):
            if a.end <= shared and (a.start, a.digest) != (b.start, b.digest):
                shared = min(shared, a.start)
    base = engine.free.pop()
    taken = [base]
    try:
        start = engine._reuse_prefix(first, base) if shared > 0 else 0
        if shared > start:
            engine.prefill([(first, base, start, shared)])
        if shared > 0:
            engine._store_prefix(first, base, shared + 1)
        out: list[list[float]] = []
        width = max(1, len(engine.free) + 1)
        for at in range(0, len(prompts), width):
            group = list(prompts[at:at + width])
            slots = [base] + [engine.free.pop() for _ in group[1:]]
            taken[1:] = slots[1:]
            for s in slots[1:]:
                engine.pool.copy(base, s, shared)
            logits = engine.prefill([(p, s, shared, len(p.ids)) for p, s in zip(group, slots, strict=True)])
            vocab = logits.softmax(-1)
            mass = torch.stack([vocab[:, list(ids)].sum(-1) for ids in choice_ids], dim=-1)
            out.extend((mass / mass.sum(-1, keepdim=True)).tolist())
            for s in slots[1:]:
                engine.free.append(s)
            taken[1:] = []  # base was written past `shared` only: the next group forks the same prefix
        return out
    finally:
        engine.free.extend(taken)
