"""The decode step's bucketing and bookkeeping (plugins/vlm/local/graphs.py), on the CPU.

CUDA graphs themselves need a GPU (bench/local_engine_check.py and test_local_cuda_check.py cover them there);
what runs here is everything around them: the buckets, the static buffers, padding rows kept in the scratch
slot, the key window, and the eager fallback when a capture fails.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
import torch
from local_vlm_helpers import image, make_engine, messages, run_jobs

from framelens.plugins.vlm.local.graphs import MIN_WINDOW, DecodeGraphs, batch_bucket, window_bucket


def test_batch_buckets_are_powers_of_two_up_to_the_slots() -> None:
    assert [batch_bucket(n, 8) for n in range(1, 9)] == [1, 2, 4, 4, 8, 8, 8, 8]
    assert batch_bucket(5, 6) == 6  # the last bucket is the slot count when it is no power of two
    for bad in (0, 9):
        with pytest.raises(ValueError, match=f"batch of {bad} rows does not fit 8 slots"):
            batch_bucket(bad, 8)


def test_window_buckets_cover_the_furthest_position() -> None:
    assert window_bucket(0, 2048) == MIN_WINDOW
    assert window_bucket(MIN_WINDOW - 1, 2048) == MIN_WINDOW
    assert window_bucket(MIN_WINDOW, 2048) == 2 * MIN_WINDOW  # position p needs p + 1 keys
    assert window_bucket(1500, 2048) == 2048
    assert window_bucket(1500, 1600) == 1600
    assert window_bucket(10, 100) == 100
    with pytest.raises(ValueError, match="position 2048 is outside the KV capacity 2048"):
        window_bucket(2048, 2048)


def _graphs(engine: Any, **kw: Any) -> DecodeGraphs:
    return DecodeGraphs(engine.model, engine.pool, engine._masks, slots=engine.slots,
                        capacity=engine.capacity, mrope=engine.model.mrope, device=engine.model.device, **kw)


def _prefilled(engine: Any, n: int) -> tuple[list[int], list[int], list[int]]:
    """``n`` prompts prefilled into slots 0..n-1 on the engine's pool: (next tokens, positions, slots)."""
    prompts = [engine.model.prompt(messages(t, image(30 + i))) for i, t in enumerate(
        ["describe the picture", "a dog runs", "is there smoke or fire in the kitchen?"][:n])]
    logits = engine.prefill([(p, i, 0, len(p.ids)) for i, p in enumerate(prompts)])
    return logits.argmax(-1).tolist(), [len(p.ids) for p in prompts], list(range(n))


def test_padding_rows_write_only_into_the_scratch_slot(tiny_dirs: dict[str, Path]) -> None:
    engine = make_engine(tiny_dirs["llava"], slots=4, prefix_slots=0)
    try:
        tokens, positions, slots = _prefilled(engine, 3)
        engine.pool.k[engine.pool.scratch].fill_(7.0)  # a sentinel: padding rows may write zero keys
        before = engine.pool.k.clone()
        graphs = _graphs(engine, fixed=True)
        logits = graphs.step(tokens, positions, slots)
        assert logits.shape == (3, engine.model.spec.vocab)  # padding row cut off
        changed = (engine.pool.k != before).flatten(2).any(-1)  # [slot, layer]
        for slot in range(engine.pool.slots + 1):
            expected = slot in slots or slot == engine.pool.scratch  # batch of 3 runs as a bucket of 4
            assert bool(changed[slot].all()) == expected, slot
        for row, (slot, pos) in enumerate(zip(slots, positions, strict=True)):
            moved = (engine.pool.k[slot] != before[slot]).any(-1).any(1)  # [layer, position]
            assert moved[:, pos].all() and moved.sum() == moved.shape[0], f"row {row} wrote elsewhere"
        assert graphs.stats == {"captured": 0, "replays": 0, "eager_steps": 1}
        assert sorted(graphs._buffers) == [4]
    finally:
        engine.close()


def test_bucketed_window_gives_the_logits_of_the_whole_capacity(tiny_dirs: dict[str, Path]) -> None:
    engine = make_engine(tiny_dirs["gemma3"], slots=2, prefix_slots=0, capacity=1024)
    try:
        tokens, positions, slots = _prefilled(engine, 2)
        graphs = _graphs(engine, fixed=True)
        saved = engine.pool.k.clone(), engine.pool.v.clone()
        got = graphs.step(tokens, positions, slots).clone()
        assert max(positions) < MIN_WINDOW  # so the step read a window of 256 keys, not 1024
        engine.pool.k.copy_(saved[0])
        engine.pool.v.copy_(saved[1])
        buf = graphs.buffers(2)
        whole = graphs._run(buf, engine.capacity)
        torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-5)
        exact = _graphs(engine, fixed=False)
        engine.pool.k.copy_(saved[0])
        engine.pool.v.copy_(saved[1])
        torch.testing.assert_close(exact.step(tokens, positions, slots), got, rtol=1e-5, atol=1e-5)
        assert sorted(exact._buffers) == [2]
    finally:
        engine.close()


def test_failed_capture_falls_back_to_eager_once(tiny_dirs: dict[str, Path], caplog: pytest.LogCaptureFixture,
                                                 engines: dict[str, Any]) -> None:
    """With graphs forced on where none can be captured (no CUDA here), the step logs once and decodes eagerly:
    the answers stay those of the eager engine."""
    engine = make_engine(tiny_dirs["llava"], prefix_slots=0, fixed_shapes=True)
    try:
        assert not engine.decode_graphs.graphs_on  # off on a CPU whatever was asked
        engine.decode_graphs.graphs_on = True
        prompts = [engine.model.prompt(messages(t, image(40 + i))) for i, t in enumerate(
            ["describe the picture", "a dog runs"])]
        with caplog.at_level(logging.WARNING, logger="framelens.local"):
            got = [j.tokens for j in run_jobs(engine, prompts, 8)]
        warnings = [r for r in caplog.records if "CUDA graph capture of the decode step failed" in r.getMessage()]
        assert len(warnings) == 1 and "running it eagerly from now on" in warnings[0].getMessage()
        assert not engine.decode_graphs.graphs_on
        assert engine.decode_graphs.stats["captured"] == 0
        assert engine.decode_graphs.stats["eager_steps"] >= 7
        ref = engines["llava"]
        assert got == [j.tokens for j in run_jobs(ref, [ref.model.prompt(messages(t, image(40 + i))) for i, t in
                                                        enumerate(["describe the picture", "a dog runs"])], 8)]
        # the failed capture left the rows' own buffers as the step had filled them
        assert engine.free_slots == engine.slots
    finally:
        engine.close()


def test_option_turns_graphs_off(tiny_dirs: dict[str, Path]) -> None:
    from framelens.plugins.vlm.local.options import LocalOptions

    assert LocalOptions().cuda_graphs is True
    assert LocalOptions(cuda_graphs=False).cuda_graphs is False
    engine = make_engine(tiny_dirs["llava"], prefix_slots=0, fixed_shapes=True, cuda_graphs=False)
    try:
        assert not engine.decode_graphs.graphs_on and engine.decode_graphs.fixed
    finally:
        engine.close()


def test_token_buckets_round_up_to_64() -> None:
    from framelens.plugins.vlm.local.prefill_graphs import TOKEN_STEP, token_bucket

    assert TOKEN_STEP == 64
    assert [token_bucket(n, 1024) for n in (1, 64, 65, 315)] == [64, 64, 128, 320]
    assert token_bucket(1000, 1010) == 1010


@pytest.mark.parametrize("family", ["gemma3", "qwen2_5_vl"])
def test_padded_prefill_gives_the_logits_of_the_exact_one(family: str, tiny_dirs: dict[str, Path]) -> None:
    """Prefill padded to the graph buckets (rows to a power of two, tokens to 64, window bucketed; what CUDA
    replays) against the exact shapes: the same logits, and the padding wrote only into the scratch slot."""
    padded = make_engine(tiny_dirs[family], slots=4, prefix_slots=0, fixed_shapes=True)
    exact = make_engine(tiny_dirs[family], slots=4, prefix_slots=0)
    try:
        assert padded.pad_prefill and not exact.pad_prefill
        assert not padded.prefill_graphs.on  # nothing is captured on a CPU
        texts = ["describe the picture", "a dog runs", "is there smoke or fire in the kitchen?"]
        rows = [(padded.model.prompt(messages(t, image(50 + i))), i, 0, 0) for i, t in enumerate(texts)]
        rows = [(p, slot, 0, len(p.ids)) for p, slot, _, _ in rows]
        padded.pool.k.fill_(7.0)
        got = padded.prefill(rows)
        want = exact.prefill(rows)
        assert got.shape == want.shape == (3, padded.model.spec.vocab)
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        touched = (padded.pool.k != 7.0).flatten(1).any(-1).tolist()
        assert touched == [True, True, True, False, True], touched  # slots 0-2, not 3; scratch (4) took padding
        assert padded.prefill_graphs.stats == {"captured": 0, "replays": 0, "eager_calls": 1}
    finally:
        padded.close()
        exact.close()


def test_failed_prefill_capture_falls_back_to_eager(tiny_dirs: dict[str, Path],
                                                    caplog: pytest.LogCaptureFixture) -> None:
    engine = make_engine(tiny_dirs["gemma3"], slots=2, prefix_slots=0, fixed_shapes=True)
    exact = make_engine(tiny_dirs["gemma3"], slots=2, prefix_slots=0)
    try:
        engine.prefill_graphs.cache.enabled = True  # as on CUDA; the capture then fails here
        prompt = engine.model.prompt(messages("describe the picture", image(60)))
        with caplog.at_level(logging.WARNING, logger="framelens.local"):
            got = engine.prefill([(prompt, 0, 0, len(prompt.ids))])
        assert [r.getMessage() for r in caplog.records if "capture of the prefill failed" in r.getMessage()]
        assert not engine.prefill_graphs.on and engine.prefill_graphs.stats["eager_calls"] == 1
        torch.testing.assert_close(got, exact.prefill([(prompt, 0, 0, len(prompt.ids))]), rtol=1e-5, atol=1e-5)
        # the parked slots were given back: the row's own slot holds its keys, as in the exact engine
        n = len(prompt.ids)
        torch.testing.assert_close(engine.pool.k[0, :, :, :n], exact.pool.k[0, :, :, :n], rtol=1e-5, atol=1e-5)
    finally:
        engine.close()
        exact.close()
