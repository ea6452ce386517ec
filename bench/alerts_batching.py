"""Alert rules evaluated per second: one batched structured-output request vs one request per rule.

A fake Ollama (tests/fakes, in its own process) answers every ``/api/chat``
after a fixed delay D, like a VLM whose cost is dominated by the per-request
work (image prefill). The real ``ollama`` backend and the alerts evaluator ask
about the same 640x480 testpattern JPEG with 1, 10 and 50 rules:

- framelens (``alerts-mode=batch``): all due rules in one request whose answer
  must match a JSON schema with one boolean per rule;
- baseline (``alerts-mode=per-rule``): one short yes/no request per rule, one
  after another, as NVIDIA's Jetson VLM service asks its alert prompts.

Rules evaluated per second = rule answers received / wall time; every answer
is checked to be a real yes/no (an unknown would not count). Each side runs at
least ``--seconds`` and at least one full evaluation. Prints one JSON line per
rule count and a Markdown table with the ratio batch / per-rule.

    .venv/bin/python bench/alerts_batching.py [--delay 0.1] [--seconds 3]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import start_fake_ollama

from framelens import Context, ImagePart, encode_jpeg
from framelens.plugin_manager import get_plugin_manager
from framelens.plugins.alerts.evaluator import Evaluator, Mode
from framelens.plugins.alerts.rules import RuleLimits, build_rules
from framelens.plugins.sources.testpattern import TestPattern, TestPatternOptions

ROOT = Path(__file__).resolve().parent.parent

def measure(context: Context, evaluator: Evaluator, image: ImagePart, n_rules: int, seconds: float) -> dict[str, Any]:
    rules = build_rules([f"Is there object number {i} in the picture?" for i in range(n_rules)],
                        RuleLimits(max_rules=n_rules))
    context.runner.run(evaluator.evaluate(image, rules[:1]), timeout=60)  # warm the connection pool
    answered = evaluations = requests = 0
    started = time.perf_counter()
    while True:
        evaluation = context.runner.run(evaluator.evaluate(image, rules), timeout=600)
        evaluations += 1
        requests += evaluation.requests
        results = [a.result for a in evaluation.answers.values()]
        if any(r is None for r in results):
            raise SystemExit(f"{evaluator.mode}: unexpected unknown answers: {evaluation.answers}")
        answered += len(results)
        elapsed = time.perf_counter() - started
        if elapsed >= seconds:
            break
    return {"rules_per_s": answered / elapsed, "evaluations": evaluations, "requests": requests,
            "seconds": round(elapsed, 3), "mode": evaluation.mode}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=0.1, help="seconds the fake backend takes per request")
    parser.add_argument("--seconds", type=float, default=3.0, help="minimum measuring time per side")
    parser.add_argument("--rules", type=int, nargs="+", default=[1, 10, 50])
    args = parser.parse_args()

    proc, url = start_fake_ollama(args.delay, "--reply", "yes")
    context = Context(get_plugin_manager().registry, namespaces={"ollama": {"url": url, "model": "llava"}})
    context.runner.start()
    try:
        backend = context.backend("ollama")
        frame = TestPattern("testpattern", TestPatternOptions()).read()
        image = ImagePart(data=encode_jpeg(frame, 85), mime="image/jpeg")
        modes: dict[str, Mode] = {"framelens": "batch", "baseline": "per-rule"}
        rows = []
        for n in args.rules:
            result = {side: measure(context, Evaluator(backend, mode=mode), image, n, args.seconds)
                      for side, mode in modes.items()}
            ratio = result["framelens"]["rules_per_s"] / result["baseline"]["rules_per_s"]
            line = {"rules": n, "delay_s": args.delay, **result, "ratio": round(ratio, 2)}
            print(json.dumps(line), flush=True)
            rows.append(line)
        print("\n| rules | batched (rules/s) | per-rule (rules/s) | ratio |")
        print("|---:|---:|---:|---:|")
        for r in rows:
            print(f"| {r['rules']} | {r['framelens']['rules_per_s']:.1f} | {r['baseline']['rules_per_s']:.1f}"
                  f" | {r['ratio']:.2f}x |")
    finally:
        context.close()
        proc.terminate()
        proc.wait(5)


if __name__ == "__main__":
    main()
