"""Engine behaviour: joining and leaving mid-batch, cancellation, replacement, prefix reuse, choices, text."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from local_vlm_helpers import done_of, image, make_engine, messages, run_jobs, text_of

from framelens import BackendError


def _wait(cond: Any, timeout: float = 20) -> None:
    end = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < end, "timed out waiting"
        time.sleep(0.002)


def test_join_and_leave_mid_batch(engines: dict[str, Any]) -> None:
    engine = engines["llava"]
    long_p = engine.model.prompt(messages("describe the picture", image(5)))
    short_p = engine.model.prompt(messages("a dog runs", image(6)))
    alone_long = run_jobs(engine, [long_p], 60)[0].tokens
    alone_short = run_jobs(engine, [short_p], 6)[0].tokens
    assert len(alone_long) == 60 and len(alone_short) == 6

    got: list[tuple[str, Any]] = []
    finished = threading.Event()

    def sink(kind: str, value: Any) -> None:
        got.append((kind, value))
        if kind in ("done", "error"):
            finished.set()

    long_job = engine.job(long_p, max_tokens=60, sampling=engine.sampling(temperature=0, top_p=1, top_k=0, seed=None),
                          sink=sink)
    engine.submit(long_job)
    _wait(lambda: long_job.generated >= 5)
    (short_job,) = run_jobs(engine, [short_p], 6)
    at_short_end = long_job.generated
    assert finished.wait(20)
    assert short_job.tokens == alone_short
    assert long_job.tokens == alone_long
    assert 5 <= at_short_end < 60, "the short request should join and leave while the long one runs"
    assert engine.free_slots == engine.slots


def test_cancelled_request_frees_its_slot(engines: dict[str, Any]) -> None:
    engine = engines["llava"]
    prompt = engine.model.prompt(messages("describe the picture", image(5)))  # runs 60+ tokens without EOS
    job = engine.job(prompt, max_tokens=200, sampling=engine.sampling(temperature=0, top_p=1, top_k=0, seed=None),
                     sink=lambda kind, value: None)
    before = engine.stats["cancelled"]
    engine.submit(job)
    _wait(lambda: job.generated >= 3)
    assert engine.free_slots == engine.slots - 1
    job.cancelled.set()
    _wait(lambda: engine.free_slots == engine.slots)
    assert engine.stats["cancelled"] == before + 1
    assert job.generated < 200


def test_newer_request_replaces_a_waiting_one(tiny_dirs: dict[str, Path]) -> None:
    engine = make_engine(tiny_dirs["llava"], slots=1, prefix_slots=0)
    try:
        p = engine.model.prompt(messages("describe the picture", image(8)))
        busy = engine.job(p, max_tokens=40, sampling=engine.sampling(temperature=0, top_p=1, top_k=0, seed=None),
                          sink=lambda k, v: None)
        engine.submit(busy)
        _wait(lambda: busy.generated >= 1)
        events: dict[str, list[tuple[str, Any]]] = {"old": [], "new": []}
        done = threading.Event()
        old = engine.job(p, max_tokens=4, sampling=engine.sampling(temperature=0, top_p=1, top_k=0, seed=None),
                         sink=lambda k, v: events["old"].append((k, v)), replace_key="cam1")

        def new_sink(k: str, v: Any) -> None:
            events["new"].append((k, v))
            if k in ("done", "error"):
                done.set()

        new = engine.job(p, max_tokens=4, sampling=engine.sampling(temperature=0, top_p=1, top_k=0, seed=None),
                         sink=new_sink, replace_key="cam1")
        engine.submit(old)
        engine.submit(new)
        assert done.wait(20)
        assert events["new"][-1][0] == "done"
        kind, err = events["old"][-1]
        assert kind == "error" and isinstance(err, BackendError) and err.kind == "cancelled"
        assert "replaced" in str(err)
        assert old.generated == 0
    finally:
        engine.close()


def test_an_interactive_request_starts_before_waiting_background_ones(tiny_dirs: dict[str, Path]) -> None:
    """One slot, busy: two background requests (describer, alert rules) and then an API client's wait; the
    client's goes first when the slot frees, then the background ones in their order."""
    engine = make_engine(tiny_dirs["llava"], slots=1, prefix_slots=0)
    try:
        p = engine.model.prompt(messages("describe the picture", image(8)))
        greedy = engine.sampling(temperature=0, top_p=1, top_k=0, seed=None)
        started: list[str] = []
        finished = threading.Semaphore(0)

        def sink_for(name: str) -> Any:
            def sink(kind: str, value: Any) -> None:
                if kind == "text" and name not in started:
                    started.append(name)
                if kind in ("done", "error"):
                    if name not in started:
                        started.append(name)
                    finished.release()
            return sink

        busy = engine.job(p, max_tokens=30, sampling=greedy, sink=sink_for("busy"))
        engine.submit(busy)
        _wait(lambda: busy.generated >= 1)
        for name in ("describe", "alerts"):
            engine.submit(engine.job(p, max_tokens=3, sampling=greedy, sink=sink_for(name), background=True))
        engine.submit(engine.job(p, max_tokens=3, sampling=greedy, sink=sink_for("client")))
        for _ in range(4):
            assert finished.acquire(timeout=30)
        assert started == ["busy", "client", "describe", "alerts"]
    finally:
        engine.close()


def test_the_describer_and_alert_rules_ask_at_background_priority() -> None:
    """Their requests carry priority="background" (so a queueing backend serves API clients first); a
    request made without saying stays interactive."""
    from framelens import GenerationParams
    from framelens.testing import FakeBackend, backend_registered, run_pipeline

    assert GenerationParams().priority == "interactive"
    backend = FakeBackend(lambda request: "no")
    with backend_registered("prio", backend):
        run_pipeline(["-s", "testpattern", "--fps", "30", "--max-frames", "45", "--backend", "prio",
                      "-p", "describe", "-c", "describe-interval=0.1", "-p", "alerts",
                      "-c", "alerts-rules=Is there smoke?", "-c", "alerts-interval=0.1", "-o", "none"])
    kinds = {("alerts" if "smoke" in r.text else "describe"): r.params.priority for r in backend.requests}
    assert kinds == {"describe": "background", "alerts": "background"}, kinds


def test_prefix_reuse_gives_the_same_answer_and_skips_the_image(tiny_dirs: dict[str, Path],
                                                                engines: dict[str, Any]) -> None:
    for family in ("llava", "gemma3", "qwen2_5_vl"):  # Qwen: the tail's mRoPE positions after a cached image
        plain = engines[family]
        cached = make_engine(tiny_dirs[family], prefix_slots=2)
        try:
            img = image(9)
            first = cached.model.prompt(messages("describe the picture", img, system="you watch a camera"))
            second = cached.model.prompt(messages("is there a dog? answer in a few words", img,
                                                  system="you watch a camera"))
            ref = [run_jobs(plain, [p], 16)[0].tokens for p in (first, second)]
            a = run_jobs(cached, [first], 16)[0]
            vision, tokens = cached.stats["vision_images"], cached.stats["prefill_tokens"]
            b = run_jobs(cached, [second], 16)[0]
            assert [a.tokens, b.tokens] == ref
            assert cached.prefix.hits == 1
            assert cached.stats["vision_images"] == vision == 1  # the image was encoded once
            reused = first.spans[0].end
            assert cached.stats["prefill_tokens"] - tokens == len(second.ids) - reused
        finally:
            cached.close()


def test_prefix_never_matches_partway_through_an_image(tiny_dirs: dict[str, Path]) -> None:
    engine = make_engine(tiny_dirs["llava"], prefix_slots=2)
    try:
        a = engine.model.prompt(messages("describe the picture", image(10)))
        b = engine.model.prompt(messages("describe the picture", image(11)))  # same ids, other pixels
        assert a.ids == b.ids
        run_jobs(engine, [a], 4)
        run_jobs(engine, [b], 4)
        assert engine.prefix.hits == 0
        assert a.clamp(a.spans[0].start + 3) == a.spans[0].start
    finally:
        engine.close()


@pytest.mark.parametrize("family", ["llava", "gemma3", "qwen2_5_vl"])
def test_choices_agree_with_full_forward_logits(family: str, engines: dict[str, Any],
                                                references: dict[str, Any]) -> None:
    engine, ref = engines[family], references[family]
    img = image(12)
    rules = ["is there smoke?", "is a person lying on the floor?", "is the door open and is it raining outside?"]
    convs = [messages(f"{r} answer yes or no", img, system="you watch a camera") for r in rules]
    choices = engine.choice_tokens(["yes", "no"])
    assert all(choices) and not set(choices[0]) & set(choices[1])
    prompts = [engine.model.prompt(c) for c in convs]
    result: list[Any] = []
    done = threading.Event()
    before = engine.stats["prefill_tokens"]
    engine.submit(engine.choice_job(prompts, choices, lambda k, v: (result.append((k, v)), done.set())))
    assert done.wait(20)
    kind, probs = result[0]
    assert kind == "done" and len(probs) == 3
    for conv, row in zip(convs, probs, strict=True):
        vocab = ref.last_logits(conv).softmax(-1)
        mass = torch.stack([vocab[ids].sum() for ids in choices])
        full = mass / mass.sum()
        assert torch.allclose(torch.tensor(row), full, atol=1e-4), (row, full)
    shared = min(len(p.ids) for p in prompts)
    spent = engine.stats["prefill_tokens"] - before
    assert spent < sum(len(p.ids) for p in prompts) - shared, "the shared prefix should be prefilled once"
    assert engine.free_slots == engine.slots


def test_stop_string_across_token_boundaries_and_usage(engines: dict[str, Any]) -> None:
    engine = engines["llava"]
    prompt = engine.model.prompt(messages("describe the picture", image(13)))
    (plain,) = run_jobs(engine, [prompt], 24)
    tok = engine.model.tokenizer
    pieces = [tok.decode(plain.tokens[: i + 1], skip_special_tokens=True) for i in range(len(plain.tokens))]
    # a stop string made of the end of one token's text and the start of the next one's
    k = next(i for i in range(3, len(pieces) - 1) if len(pieces[i]) > len(pieces[i - 1]) + 1
             and len(pieces[i + 1]) > len(pieces[i]))
    stop = pieces[k][-2:] + pieces[k + 1][len(pieces[k]):][:2]
    full = pieces[-1]
    (job,) = run_jobs(engine, [prompt], 24, stops=(stop,))
    assert text_of(job) == full[: full.find(stop)]
    finish, usage, timings = done_of(job)
    assert finish == "stop"
    assert usage.prompt_tokens == len(prompt.ids)
    assert usage.completion_tokens == len(job.tokens) < 24
    assert 0 < timings.first_token_s <= timings.total_s and timings.prompt_s > 0 and timings.generate_s >= 0
    finish, usage, _ = done_of(plain)
    assert finish == "length" and usage.completion_tokens == 24 and text_of(plain) == full


def test_streamed_text_is_utf8_safe(engines: dict[str, Any]) -> None:
    from framelens.plugins.vlm.local.sampling import TextStream

    tok = engines["llava"].model.tokenizer
    text = "caf\u00e9 na\u00efve \u65e5\u672c \u2603 \U0001f600 text"
    ids = tok.encode(text, add_special_tokens=False)
    assert len(ids) > len(text.split())  # some characters span several tokens
    stream = TextStream(tok, stops=("\u2603 \U0001f600 t",))
    out = [stream.push(t) for t in ids]
    assert all("\ufffd" not in piece for piece in out)
    assert "".join(out) + stream.flush() == "caf\u00e9 na\u00efve \u65e5\u672c "
    assert stream.stopped


def test_seeded_sampling_is_reproducible(engines: dict[str, Any]) -> None:
    engine = engines["llava"]
    prompt = engine.model.prompt(messages("describe the picture", image(14)))
    a = run_jobs(engine, [prompt], 16, temperature=1.5, seed=7)[0].tokens
    b = run_jobs(engine, [prompt], 16, temperature=1.5, seed=7)[0].tokens
    c = run_jobs(engine, [prompt], 16, temperature=1.5, seed=8)[0].tokens
    greedy = run_jobs(engine, [prompt], 16)[0].tokens
    assert a == b
    assert a != c or a != greedy


def test_top_k_one_is_greedy(engines: dict[str, Any]) -> None:
    engine = engines["gemma3"]
    prompt = engine.model.prompt(messages("describe the picture", image(15)))
    greedy = run_jobs(engine, [prompt], 12)[0].tokens
    jobs = []
    for seed in (1, 2):
        job = engine.job(prompt, max_tokens=12, sampling=engine.sampling(temperature=1.0, top_p=1.0, top_k=1,
                                                                         seed=seed), sink=lambda k, v: None)
        jobs.append(job)
        engine.submit(job)
    _wait(lambda: all(len(j.tokens) >= 12 or (j.tokens and j.tokens[-1] in engine.model.eos) for j in jobs))
    assert [j.tokens for j in jobs] == [greedy, greedy]


def test_out_of_memory_at_run_time_fails_that_step_only(tiny_dirs: dict[str, Path]) -> None:
    engine = make_engine(tiny_dirs["llava"], prefix_slots=0)
    try:
        real = engine.model.decoder
        calls = {"n": 0}

        class Flaky:
            def embed(self, ids: torch.Tensor) -> torch.Tensor:
                return real.embed(ids)

            def __call__(self, *args: Any) -> torch.Tensor:
                calls["n"] += 1
                if calls["n"] == 1:
                    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
                return real(*args)

        engine.model.decoder = Flaky()
        prompt = engine.model.prompt(messages("describe the picture", image(16)))
        (failed,) = run_jobs(engine, [prompt], 4)
        kind, err = failed.events[-1]
        assert kind == "error" and isinstance(err, BackendError) and err.status == 503
        assert "out of device memory" in str(err) and "local-max-batch" in str(err)
        assert engine.free_slots == engine.slots
        (ok,) = run_jobs(engine, [prompt], 4)
        assert done_of(ok)[0] == "length"
    finally:
        engine.close()


def test_kv_cache_that_does_not_fit_is_a_config_error(tiny_dirs: dict[str, Path],
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from framelens import ConfigError
    from framelens.plugins.vlm.local import runtime
    from framelens.plugins.vlm.local.options import LocalOptions

    monkeypatch.setattr(runtime, "available_memory", lambda device: 1 << 20)
    with pytest.raises(ConfigError, match="does not fit .* lower local-max-batch"):
        runtime.load_engine(LocalOptions(model=str(tiny_dirs["llava"]), device="cpu"))
    monkeypatch.setattr(runtime, "available_memory", lambda device: 40 << 20)  # room for ~900 tokens per slot
    engine = runtime.load_engine(LocalOptions(model=str(tiny_dirs["llava"]), device="cpu", max_context=1024))
    try:
        assert 256 <= engine.capacity < 1024
    finally:
        engine.close()


def test_fixed_shape_decode_gives_the_same_tokens(tiny_dirs: dict[str, Path], engines: dict[str, Any]) -> None:
    """The CUDA step layout (power-of-two batch buckets padded with the scratch slot, attention over the
    whole capacity), run on the CPU: the same tokens as the CPU layout."""
    fixed = make_engine(tiny_dirs["gemma3"], prefix_slots=0, fixed_shapes=True)
    try:
        prompts = [fixed.model.prompt(messages(t, image(17 + i))) for i, t in enumerate(
            ["describe the picture", "a dog runs", "is there smoke or fire in the kitchen?"])]
        got = [j.tokens for j in run_jobs(fixed, prompts, 10)]
        ref = engines["gemma3"]
        assert got == [j.tokens for j in run_jobs(ref, [ref.model.prompt(m) for m in (
            messages("describe the picture", image(17)), messages("a dog runs", image(18)),
            messages("is there smoke or fire in the kitchen?", image(19)))], 10)]
    finally:
        fixed.close()
