"""The engine: one thread that owns the device and decodes every request of one model together.

Requests (:class:`Job`, :class:`ChoiceJob`) arrive through a thread-safe queue
from the event loop; results go back through each job's ``sink`` callback,
which the backend points at the loop (``call_soon_threadsafe``), so neither
side ever blocks the other. Each turn of the loop:

1. drops jobs whose caller went away (their KV slot is free again at once);
2. admits waiting jobs into free slots: images that are not already in the
   feature cache are encoded in one vision call, prefixes found in the prefix
   cache are copied instead of recomputed, and the rest of every new prompt is
   prefilled in one padded batch (continuous batching: jobs join between steps);
3. runs one decode step for every running job at once, samples on the device
   and streams the new text; finished jobs leave and free their slot.

A :class:`ChoiceJob` (the ``choices`` capability) prefills the shared prefix of
its conversations once, forks it into one slot per conversation, prefills the
different tails in one batch and reads the probabilities of the choice tokens
from the last logits, without generating.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Sequence

import torch

from framelens import BackendError, Usage, VLMTimings

from .decoder import KVPool
from .graphs import DecodeGraphs, batch_bucket, window_bucket
from .jobs import ChoiceJob, Job, RequestReplaced, Sink
from .model import LoadedModel, Prompt
from .prefill_graphs import PrefillGraphs, token_bucket
from .prefix import PrefixCache, prefix_key
from .sampling import SamplingParams, TextStream, sample

__all__ = ["ChoiceJob", "Engine", "EngineAPI", "Job", "RequestReplaced"]

log = logging.getLogger("framelens.local")

def _rope_arg(rope: torch.Tensor | None) -> dict[str, torch.Tensor]:
    # only mRoPE models get the argument: the ONNX and TensorRT decoders (Llava) do not take it
    return {} if rope is None else {"rope_positions": rope}


class Engine:
    """Runs one :class:`LoadedModel` (see the module docstring)."""

    def __init__(self, model: LoadedModel, *, slots: int, capacity: int, prefix_slots: int = 4,
                 feature_cache: int = 16, fixed_shapes: bool | None = None, cuda_graphs: bool = True) -> None:
        self.model, self.spec = model, model.spec
        self.slots, self.capacity = slots, capacity
        self.pool = KVPool(self.spec, slots + prefix_slots, capacity, model.device, model.dtype)
        self.prefix = PrefixCache(range(slots, slots + prefix_slots))
        self.features: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.feature_cache = feature_cache
        # CUDA: decode at bucketed shapes, replayed as CUDA graphs (see .graphs). CPU: exact shapes, faster there.
        self.fixed_shapes = model.device.type == "cuda" if fixed_shapes is None else fixed_shapes
        self.decode_graphs = DecodeGraphs(model, self.pool, self._masks, slots=slots, capacity=capacity,
                                 mrope=model.mrope, device=model.device, fixed=self.fixed_shapes,
                                 graphs=cuda_graphs)
        # prefill pads to buckets wherever graphs are asked for, so the CPU runs (and tests) the padded shapes
        self.pad_prefill = cuda_graphs and self.fixed_shapes
        self.prefill_graphs = PrefillGraphs(model, self.pool, self._masks, device=model.device,
                                            enabled=self.pad_prefill)
        self.free = list(range(slots - 1, -1, -1))
        self.waiting: list[Job | ChoiceJob] = []
        self.running: list[Job] = []
        self.inbox: queue.Queue[Job | ChoiceJob | None] = queue.Queue()
        self.stats: dict[str, int] = {"vision_images": 0, "prefill_calls": 0, "prefill_tokens": 0,
                                      "decode_steps": 0, "max_batch": 0, "replaced": 0, "cancelled": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"framelens-engine-{model.name}", daemon=True)
        self._thread.start()

    # -- the event-loop side -----------------------------------------------------------------

    def submit(self, job: Job | ChoiceJob) -> None:
        """Queue ``job``; it never blocks."""
        if self._stop.is_set():
            raise BackendError("the local engine is shut down", kind="unreachable", status=503)
        self.inbox.put(job)

    def close(self) -> None:
        self._stop.set()
        self.inbox.put(None)
        self._thread.join(timeout=10)

    @property
    def free_slots(self) -> int:
        return len(self.free)

    # -- the engine thread -------------------------------------------------------------------

    def _run(self) -> None:
        torch.set_grad_enabled(False)
        while not self._stop.is_set():
            try:
                block = not self.running and not self.waiting
                item = self.inbox.get(timeout=0.5) if block else self.inbox.get_nowait()
            except queue.Empty:
                item = None
            while item is not None:
                self._accept(item)
                try:
                    item = self.inbox.get_nowait()
                except queue.Empty:
                    item = None
            if self._stop.is_set():
                break
            self._drop_cancelled()
            try:
                self._admit()
                if self.running:
                    self._decode()
            except Exception as exc:  # one bad step fails its jobs, never the engine
                self._fail_all(exc)
        for job in [*self.running, *self.waiting]:
            job.sink("error", BackendError("the local engine shut down", kind="unreachable", status=503))

    def _accept(self, job: Job | ChoiceJob) -> None:
        if isinstance(job, Job) and job.replace_key is not None:
            for old in self.waiting:
                if isinstance(old, Job) and old.replace_key == job.replace_key:
                    self.waiting.remove(old)
                    self.stats["replaced"] += 1
                    old.sink("error", RequestReplaced(job.replace_key))
                    break
        if not job.background:  # an API client goes before the describer and the alert rules
            at = next((i for i, w in enumerate(self.waiting) if w.background), len(self.waiting))
            self.waiting.insert(at, job)
            return
        self.waiting.append(job)

    def _release(self, job: Job) -> None:
        if job.slot >= 0:
            self.free.append(job.slot)
            job.slot = -1

    def _drop_cancelled(self) -> None:
        for job in [j for j in self.running if j.cancelled.is_set()]:
            self.running.remove(job)
            self._release(job)
            self.stats["cancelled"] += 1
        self.waiting = [j for j in self.waiting if not j.cancelled.is_set()]

    def _fail_all(self, exc: Exception) -> None:
        if isinstance(exc, torch.OutOfMemoryError):
            error = BackendError(f"the local engine ran out of device memory ({exc}); lower local-max-batch or "
                                 "local-max-context", kind="server", status=503)
        elif isinstance(exc, BackendError):
            error = exc
        else:
            log.exception("local engine step failed")
            error = BackendError(f"the local engine failed: {type(exc).__name__}: {exc}", kind="server", status=500)
        for job in self.running:
            self._release(job)
            job.sink("error", error)
        self.running = []

    # -- images and prefixes -----------------------------------------------------------------

    def _image_features(self, prompts: Sequence[tuple[Prompt, int]]) -> dict[str, torch.Tensor]:
        """Features of every image after each prompt's start, encoding those not cached in one call."""
        need: dict[str, torch.Tensor] = {}
        grid_of: dict[str, tuple[int, int, int] | None] = {}
        for prompt, start in prompts:
            for k, (span, px) in enumerate(zip(prompt.spans, prompt.pixels, strict=True)):
                if span.end > start and span.digest not in self.features:
                    need[span.digest] = px
                    grid_of[span.digest] = prompt.grids[k] if prompt.grids else None
        if need:
            # images of one shape (Qwen2.5-VL: one patch grid) are encoded together
            by_shape: dict[tuple[tuple[int, ...], tuple[int, int, int] | None], list[str]] = {}
            for d, px in need.items():
                by_shape.setdefault((tuple(px.shape), grid_of[d]), []).append(d)
            for (_, grid), digests in by_shape.items():
                stacked = torch.stack([need[d] for d in digests])
                feats = self.model.vision(stacked, grid) if grid is not None else self.model.vision(stacked)
                self.stats["vision_images"] += len(digests)
                for d, f in zip(digests, feats, strict=True):
                    self.features[d] = f
        out: dict[str, torch.Tensor] = {}
        for prompt, start in prompts:
            for span in prompt.spans:
                if span.end > start:
                    self.features.move_to_end(span.digest)
                    out[span.digest] = self.features[span.digest]
        while len(self.features) > max(self.feature_cache, len(out)):
            self.features.popitem(last=False)
        return out

    def _reuse_prefix(self, prompt: Prompt, slot: int) -> int:
        hit = self.prefix.lookup(self.model.key, prompt, len(prompt.ids))
        if hit is None:
            return 0
        src, length = hit
        self.pool.copy(src, slot, length)
        return length

    def _store_prefix(self, prompt: Prompt, slot: int, limit: int) -> None:
        ends = [b for b in prompt.boundaries() if b < limit]
        if not ends:
            return
        end = max(ends)
        key = prefix_key(self.model.key, prompt, end)
        dst = self.prefix.reserve(key, end)
        if dst is not None:
            self.pool.copy(slot, dst, end)

    # -- steps ----------------------------------------------------------------------------------

    def _masks(self, qpos: torch.Tensor, valid: torch.Tensor, window: int,
               qblock: torch.Tensor | None = None, kblock: torch.Tensor | None = None) -> list[torch.Tensor]:
        kpos = torch.arange(window, device=qpos.device)
        allowed = kpos[None, None, :] <= qpos[:, :, None]
        if qblock is not None and kblock is not None:
            allowed = allowed | ((qblock[:, :, None] == kblock[:, None, :]) & (qblock[:, :, None] >= 0))
        pad = ~valid[:, :, None] & (kpos == 0)[None, None, :]
        by_window: dict[int | None, torch.Tensor] = {}
        out = []
        for w in self.spec.sliding:
            if w not in by_window:
                m = allowed if w is None else allowed & (kpos[None, None, :] > qpos[:, :, None] - w)
                by_window[w] = ((m & valid[:, :, None]) | pad)[:, None]
            out.append(by_window[w])
        return out

    def prefill(self, rows: Sequence[tuple[Prompt, int, int, int]]) -> torch.Tensor:
        """Prefill ``(prompt, slot, start, end)`` rows (``ids[start:end]`` of each) in one batch; the logits
        after each row's last token."""
        dev, spec = self.model.device, self.spec
        feats = self._image_features([(p, s) for p, _, s, _ in rows])
        b = len(rows)
        s = max(e - st for _, _, st, e in rows)
        window = max(e for _, _, _, e in rows)
        if self.pad_prefill:  # pad to the bucket the CUDA graph is captured at (see .prefill_graphs)
            b = batch_bucket(b, max(b, self.slots))
            s, window = token_bucket(s, self.capacity), window_bucket(window - 1, self.capacity)
        ids = torch.zeros((b, s), dtype=torch.long)
        positions = torch.zeros((b, s), dtype=torch.long)
        slots = torch.full((b, s), self.pool.scratch, dtype=torch.long)
        valid = torch.zeros((b, s), dtype=torch.bool)
        qblock = torch.full((b, s), -1, dtype=torch.long)
        kblock = torch.full((b, window), -1, dtype=torch.long)
        last = torch.zeros(b, dtype=torch.long)
        rope = torch.zeros((3, b, s), dtype=torch.long) if self.model.mrope else None
        image_rows: list[tuple[int, int, int, torch.Tensor]] = []
        for i, (prompt, slot, start, end) in enumerate(rows):
            n = end - start
            chunk = torch.tensor(prompt.ids[start:end], dtype=torch.long)
            is_img = chunk == self.model.image_token
            ids[i, :n] = torch.where(is_img, 0, chunk)
            positions[i, :n] = torch.arange(start, end)
            if rope is not None:
                # mRoPE: the rotary position differs from the KV index once an image came before
                rope[:, i, :n] = (torch.tensor(prompt.rope, dtype=torch.long)[:, start:end] if prompt.rope
                                  else torch.arange(start, end))
            slots[i, :n] = slot
            valid[i, :n] = True
            last[i] = n - 1
            for k, span in enumerate(prompt.spans):
                if span.end > start:
                    a, z = max(span.start, start), min(span.end, end)
                    image_rows.append((i, a - start, z - start, feats[span.digest][a - span.start:z - span.start]))
                    qblock[i, a - start:z - start] = k
                    kblock[i, a:z] = k
        embeds = self.model.decoder.embed(ids.to(dev))
        for i, a, z, f in image_rows:
            embeds[i, a:z] = f.to(embeds.dtype)
        gemma = spec.style == "gemma3"
        read = torch.tensor([slot for _, slot, _, _ in rows] + [self.pool.scratch] * (b - len(rows)), device=dev)
        self.stats["prefill_calls"] += 1
        self.stats["prefill_tokens"] += int(sum(e - st for _, _, st, e in rows))
        logits = self.prefill_graphs.run({
            "embeds": embeds, "positions": positions.to(dev), "slots": slots.to(dev), "valid": valid.to(dev),
            "read": read, "last": last.to(dev), "qblock": qblock.to(dev) if gemma else None,
            "kblock": kblock.to(dev) if gemma else None, "rope": None if rope is None else rope.to(dev)}, window)
        return logits[:len(rows)]

    def _decode(self) -> None:
        jobs = list(self.running)
        deltas = [j.prompt.rope_delta for j in jobs] if self.model.mrope else None
        logits = self.decode_graphs.step([j.next_token for j in jobs], [j.pos for j in jobs], [j.slot for j in jobs],
                                deltas)
        self.stats["decode_steps"] += 1
        self.stats["max_batch"] = max(self.stats["max_batch"], len(jobs))
        for j in jobs:
            j.pos += 1
        self._emit(jobs, sample(logits, [j.sampling for j in jobs]).tolist(), logits)

    def _emit(self, jobs: Sequence[Job], tokens: Sequence[int], logits: torch.Tensor) -> None:
        now = time.monotonic()
        for row, (job, token) in enumerate(zip(jobs, tokens, strict=True)):
            assert job.stream is not None
            job.tokens.append(token)
            if job.keep_logits:
                job.logits.append(logits[row].cpu().clone())
            finish: str | None = None
            if token in self.model.eos:
                finish = "stop"
            else:
                job.generated += 1
                if job.first_at is None:
                    job.first_at = now
                text = job.stream.push(token)
                if text:
                    job.sink("text", text)
                if job.stream.stopped:
                    finish = "stop"
                elif job.generated >= job.max_tokens or job.pos + 1 >= self.capacity:
                    finish = "length"
            if finish is None:
                job.next_token = token
                continue
            rest = job.stream.flush()
            if rest:
                job.sink("text", rest)
            self.running.remove(job)
            self._release(job)
            first = job.first_at or now
            job.sink("done", (finish, Usage(len(job.prompt.ids), job.generated), VLMTimings(
                total_s=now - job.submitted, first_token_s=first - job.submitted, prompt_s=job.prompt_s,
                generate_s=now - first)))

    def _admit(self) -> None:
        new: list[Job] = []
        while self.waiting and self.free:
            job = self.waiting[0]
            if isinstance(job, ChoiceJob):
                if new:
                    break  # prefill what is admitted first
                self.waiting.pop(0)
                self._choose(job)
                continue
            self.waiting.pop(0)
            job.slot = self.free.pop()
            new.append(job)
        if not new:
            return
        started = time.monotonic()
        rows = []
        for job in new:
            start = self._reuse_prefix(job.prompt, job.slot)
            rows.append((job.prompt, job.slot, start, len(job.prompt.ids)))
        try:
            logits = self.prefill(rows)
        except Exception:
            self.running.extend(new)
            raise
        for job in new:
            self._store_prefix(job.prompt, job.slot, len(job.prompt.ids))
            job.pos = len(job.prompt.ids)
            job.stream = TextStream(self.model.tokenizer, job.stops)
        tokens = sample(logits, [j.sampling for j in new]).tolist()
        spent = time.monotonic() - started
        for job in new:
            job.prompt_s = spent
        self.running.extend(new)
        self._emit(new, tokens, logits)

    def _choose(self, job: ChoiceJob) -> None:
        try:
            job.sink("done", self.choose(job.prompts, job.choice_ids))
        except torch.OutOfMemoryError as exc:
            job.sink("error", BackendError(f"the local engine ran out of device memory ({exc})", status=503))
        except BackendError as exc:
            job.sink("error", exc)
        except Exception as exc:  # answer the caller; the engine goes on
            log.exception("local engine: scoring choices failed")
            job.sink("error", BackendError(f"the local engine failed: {type(exc).__name__}: {exc}", status=500))

    @property
    def alive(self) -> bool:
        """Whether the engine thread is running."""
        return self._thread.is_alive() and not self._stop.is_set()

    def choose(self, prompts: Sequence[Prompt], choice_ids: Sequence[Sequence[int]]) -> list[list[float]]:
        """Probabilities of each choice after each prompt (runs on the engine thread; see :mod:`.choices`)."""
        from .choices import score_choices

        return score_choices(self, prompts, choice_ids)


class EngineAPI(Engine):
    """:class:`Engine` plus the small factory methods the backend uses, so it needs no torch import."""

    runtime = "torch"

    def sampling(self, *, temperature: float, top_p: float, top_k: int, seed: int | None) -> SamplingParams:
        return SamplingParams(self.model.device, temperature, top_p, top_k, seed)

    def job(self, prompt: Prompt, *, max_tokens: int, sampling: SamplingParams, sink: Sink,
            stops: tuple[str, ...] = (), replace_key: str | None = None, background: bool = False) -> Job:
        return Job(prompt, max_tokens, sampling, sink, stops, replace_key, background)

    def choice_job(self, prompts: list[Prompt], choice_ids: list[list[int]], sink: Sink,
                   background: bool = False) -> ChoiceJob:
        return ChoiceJob(prompts, choice_ids, sink, background)

    def choice_tokens(self, choices: Sequence[str]) -> list[list[int]]:
        """The first tokens that start each choice (see :func:`.choices.choice_tokens`)."""
        from .choices import choice_tokens

        return choice_tokens(self.model.tokenizer, choices)

    def describe(self) -> str:
        m = self.model
        return (f"{m.files.family}, {m.parameters / 1e6:.1f} M parameters, {self.runtime} on {m.device.type} "
                f"{str(m.dtype).removeprefix('torch.')}, {self.slots} slots x {self.capacity} tokens, "
                f"KV {self.pool.nbytes / 2**20:.0f} MiB")
