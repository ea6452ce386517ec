"""The engine's greedy tokens and logits against transformers' generate(), for every supported family."""

from __future__ import annotations

from typing import Any

import pytest
import torch
from local_vlm_helpers import FAMILIES, image, messages, run_jobs

PROMPTS = [
    messages("describe the picture", image(1)),
    messages("is there smoke or fire in the kitchen? answer yes or no, then say why in a few words", image(2),
             system="you watch a camera"),
    messages("a dog runs", image(3)),
]


@pytest.mark.parametrize("family", FAMILIES)
def test_greedy_batch1_matches_hf_generate(family: str, engines: dict[str, Any], references: dict[str, Any]) -> None:
    engine, ref = engines[family], references[family]
    prompt = engine.model.prompt(PROMPTS[0])
    assert prompt.ids == ref.inputs([PROMPTS[0]])["input_ids"][0].tolist()
    (job,) = run_jobs(engine, [prompt], 24, keep_logits=True)
    (expected,), logits = ref.generate([PROMPTS[0]], 24)
    assert len(set(expected)) > 4, "the reference output is degenerate; the fixture tests nothing"
    assert job.tokens == expected
    got = torch.stack(job.logits)
    assert torch.allclose(got, logits[: len(got), 0], atol=1e-4, rtol=1e-4), (got - logits[: len(got), 0]).abs().max()


@pytest.mark.parametrize("family", FAMILIES)
def test_batched_different_lengths_match_hf_and_sequential(family: str, engines: dict[str, Any],
                                                           references: dict[str, Any]) -> None:
    engine, ref = engines[family], references[family]
    prompts = [engine.model.prompt(m) for m in PROMPTS]
    assert len({len(p.ids) for p in prompts}) == 3
    before = engine.stats["max_batch"]
    batched = run_jobs(engine, prompts, 16)
    expected, _ = ref.generate(PROMPTS, 16)  # left-padded batch in transformers
    assert [j.tokens for j in batched] == expected
    sequential = [run_jobs(engine, [p], 16)[0].tokens for p in prompts]
    assert sequential == [j.tokens for j in batched]
    assert max(before, engine.stats["max_batch"]) >= 2  # they really shared decode steps


@pytest.mark.parametrize("family", FAMILIES)
def test_text_only_prompt_matches_hf(family: str, engines: dict[str, Any], references: dict[str, Any]) -> None:
    engine, ref = engines[family], references[family]
    msgs = messages("the door is open and a delivery van waits outside")
    (job,) = run_jobs(engine, [engine.model.prompt(msgs)], 12)
    (expected,), _ = ref.generate([msgs], 12)
    assert job.tokens == expected
