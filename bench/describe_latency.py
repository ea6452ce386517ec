"""Describer latency overhead and staleness: framelens vs a plain blocking loop, one run.

A fake Ollama (tests/fakes, in its own process) answers every /api/chat after a
fixed delay D. Both sides describe the same testpattern frames (640x480,
shrunk to 1024 max side = unchanged, JPEG q85) against that server:

- framelens: ``framelens run -s testpattern --fps F -p ollama`` in-process,
  reading the ``description`` events: overhead = (answer time - capture time) - D,
  staleness = how many frames newer than the described one existed when the
  request was sent (target 0), and the loop's output fps.
- baseline: the plain loop a user would write (wasmVision's design without its
  extra flaws): render a frame, encode it, POST it with httpx, wait, repeat.
  Its overhead is the same quantity; its video stalls for every call.

The first framelens answer (which also asks /api/show) is left out of the
latency figures as warm-up. Prints a JSON report with both sides and the ratios. Bounded: about
``seconds`` of framelens run plus ``calls`` baseline round trips.

    .venv/bin/python bench/describe_latency.py [--delay 0.2] [--seconds 10] [--calls 30]
"""

from __future__ import annotations

import argparse
import base64
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import start_fake_ollama

ROOT = Path(__file__).resolve().parent.parent


def summary(values: list[float]) -> dict[str, float]:
    values = sorted(values)
    if not values:
        return {}
    return {"n": len(values), "median_ms": round(1000 * statistics.median(values), 2),
            "p95_ms": round(1000 * values[min(len(values) - 1, int(0.95 * len(values)))], 2),
            "max_ms": round(1000 * values[-1], 2)}


def run_framelens(url: str, delay: float, seconds: float, fps: float) -> dict[str, Any]:
    from framelens.testing import run_pipeline

    frames = int(seconds * fps)
    with tempfile.TemporaryDirectory() as tmp:
        events = Path(tmp) / "events.jsonl"
        report, _, _ = run_pipeline(["-s", "testpattern", "--fps", str(fps), "--max-frames", str(frames),
                                     "-p", "ollama", "-c", f"ollama-url={url}", "-c", "ollama-stream=false",
                                     "-o", "none", "--events", str(events)])
        payloads = [e["payload"] for e in map(json.loads, events.read_text().splitlines())
                    if e["type"] == "description"]
    staleness = [p["staleness"] for p in payloads]
    payloads = payloads[1:]  # the first call also asks /api/show (vision check): warm-up
    overhead = [p["latency_s"] - delay for p in payloads]
    queue_wait = [p["requested_at"] - p["captured_at"] for p in payloads]
    in_call = [p["answered_at"] - p["requested_at"] - delay for p in payloads]
    return {"loop_fps": report["fps"], "frames": report["frames"], "descriptions": len(payloads) + 1,
            "overhead": summary(overhead), "capture_to_request": summary(queue_wait),
            "request_to_answer_minus_delay": summary(in_call),
            "staleness": {"max": max(staleness, default=None),
                          "mean": round(statistics.fmean(staleness), 3) if staleness else None}}


def run_baseline(url: str, delay: float, calls: int) -> dict[str, Any]:
    from framelens import encode_jpeg, fit_max_side
    from framelens.plugins.sources.testpattern import TestPattern, TestPatternOptions
    from framelens.plugins.vlm.ollama import DEFAULT_PROMPT

    source = TestPattern("testpattern", TestPatternOptions())
    source.open()
    overhead = []
    started = time.monotonic()
    with httpx.Client(timeout=60) as client:
        for _ in range(calls):
            image = source.read()
            captured = time.time()
            data = encode_jpeg(fit_max_side(image, 1024), 85)
            body = {"model": "llava", "stream": False, "options": {"num_predict": 128},
                    "messages": [{"role": "user", "content": DEFAULT_PROMPT,
                                  "images": [base64.b64encode(data).decode()]}]}
            r = client.post(url + "/api/chat", json=body)
            r.raise_for_status()
            r.json()["message"]["content"]
            overhead.append(time.time() - captured - delay)
    elapsed = time.monotonic() - started
    return {"loop_fps": round(calls / elapsed, 2), "frames": calls, "descriptions": calls,
            "overhead": summary(overhead), "staleness": {"max": 0, "mean": 0.0}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--delay", type=float, default=0.2, help="the fake backend's answer time (s)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of the framelens run")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--calls", type=int, default=30, help="baseline round trips")
    args = parser.parse_args()
    proc, url = start_fake_ollama(args.delay)
    try:
        baseline = run_baseline(url, args.delay, args.calls)
        framelens = run_framelens(url, args.delay, args.seconds, args.fps)
    finally:
        proc.terminate()
        proc.wait(5)
    fl, bl = framelens["overhead"], baseline["overhead"]
    report = {
        "backend_delay_s": args.delay,
        "framelens": framelens,
        "baseline_blocking_loop": baseline,
        "ratio_overhead_median": round(fl["median_ms"] / bl["median_ms"], 2) if bl.get("median_ms") else None,
        "ratio_loop_fps": round(framelens["loop_fps"] / baseline["loop_fps"], 2) if baseline["loop_fps"] else None,
    }
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
