"""Many cameras: one framelens process against the same cameras as separate processes.

1. Full rate: N 640x480 test-pattern cameras at 15 fps, each with a describer (tests/fakes'
   Ollama, one call every 2 s, so there is a caption) and ``captions`` drawing it, as ONE
   process (``-s c1=testpattern -s c2=testpattern ...``) and as N processes of one camera,
   side by side, for growing N. A camera is at full rate when it gets >= 95 % of 15 fps.
2. Descriptions: 8 cameras describing as fast as the backend answers, against one fake
   Ollama that answers after 200 ms, as one process and as 8 separate runs: the aggregate
   description rate and its spread over the cameras (min / max per camera).

The fake Ollama runs in its own process. Every framelens run is a real ``framelens run``
subprocess that prints its ``--benchmark`` report.

Run: .venv/bin/python bench/cameras.py [--seconds 8] [--counts 1,2,4,6,8] [--markdown]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import start_fake_ollama

FPS = 15.0
FULL = 0.95 * FPS


def _argv(cameras: list[str], url: str, *, describe_interval: float, captions: bool) -> list[str]:
    argv = [sys.executable, "-m", "framelens", "run"]
    if len(cameras) == 1:
        argv += ["-s", "testpattern"]
    else:
        for camera in cameras:
            argv += ["-s", f"{camera}=testpattern"]
    argv += ["-p", "ollama", "-c", f"ollama-url={url}", "-c", "ollama-stream=false",
             "-c", f"ollama-interval={describe_interval}", "-c", "ollama-max-side=640"]
    if captions:
        argv += ["-p", "captions"]
    argv += ["-c", f"testpattern-fps={FPS}", "-c", "testpattern-width=640", "-c", "testpattern-height=480",
             "-o", "none", "--benchmark", "--log-level", "error"]
    return argv


def _run_all(argvs: list[list[str]], seconds: float) -> list[dict[str, Any]]:
    """Start every run at once, let them run ``seconds`` after the last one started, stop them
    together with SIGINT, and return their reports."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        events = [Path(tmp) / f"events-{i}.jsonl" for i in range(len(argvs))]
        procs = [subprocess.Popen([*a, "--events", str(e)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                  env=env) for a, e in zip(argvs, events, strict=True)]
        # The window starts once every run has its cameras connected (starting Python takes a
        # second or more of CPU per process, more with many at once on two cores).
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not all(
                e.exists() and '"connected"' in e.read_text() for e in events):
            if any(p.poll() is not None for p in procs):
                break
            time.sleep(0.2)
        time.sleep(seconds)
    for p in procs:
        p.send_signal(signal.SIGINT)
    reports = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        lines = [line for line in out.splitlines() if line.startswith("{")]
        if p.returncode != 0 or not lines:
            raise SystemExit(f"framelens failed ({p.returncode}): {err[-2000:]}")
        reports.append(json.loads(lines[-1]))
    return reports


def _per_camera(reports: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    cameras: dict[str, dict[str, Any]] = {}
    for i, report in enumerate(reports):
        if "cameras" in report:
            cameras.update(report["cameras"])
        else:
            cameras[f"p{i + 1}"] = report
    return cameras


def full_rate(counts: list[int], seconds: float, url: str) -> list[dict[str, Any]]:
    rows = []
    for n in counts:
        cams = [f"c{i + 1}" for i in range(n)]
        one = _per_camera(_run_all([_argv(cams, url, describe_interval=2.0, captions=True)], seconds))
        many = _per_camera(_run_all([_argv([c], url, describe_interval=2.0, captions=True) for c in cams], seconds))
        rows.append({
            "cameras": n,
            "one_min_fps": min(c["fps"] for c in one.values()),
            "one_mean_fps": round(sum(c["fps"] for c in one.values()) / n, 2),
            "one_full": sum(c["fps"] >= FULL for c in one.values()),
            "sep_min_fps": min(c["fps"] for c in many.values()),
            "sep_mean_fps": round(sum(c["fps"] for c in many.values()) / n, 2),
            "sep_full": sum(c["fps"] >= FULL for c in many.values()),
        })
        print(json.dumps(rows[-1]), file=sys.stderr)
    return rows


def descriptions(seconds: float, url: str, n: int = 8, rounds: int = 3) -> dict[str, Any]:
    """Both sides ``rounds`` times, alternating (the machine is shared); the median round of each."""
    cams = [f"c{i + 1}" for i in range(n)]
    runs: dict[str, list[dict[str, float]]] = {"one process": [], "separate": []}
    for _ in range(rounds):
        for label, argvs in (("one process", [_argv(cams, url, describe_interval=0, captions=False)]),
                             ("separate", [_argv([c], url, describe_interval=0, captions=False) for c in cams])):
            cameras = _per_camera(_run_all(argvs, seconds))
            counts = []
            for report in cameras.values():
                stage = next(v for k, v in report["processors"].items() if k.endswith("ollama"))
                counts.append(stage["described"] / report["seconds"])
            runs[label].append({"total_per_s": round(sum(counts), 2), "min_per_s": round(min(counts), 2),
                                "max_per_s": round(max(counts), 2)})
            print(label, json.dumps(runs[label][-1]), file=sys.stderr)
    out: dict[str, Any] = {}
    for label, rows in runs.items():
        ordered = sorted(rows, key=lambda r: r["total_per_s"])
        out[label] = {**ordered[len(ordered) // 2], "rounds": [r["total_per_s"] for r in rows]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=8.0, help="seconds each side runs")
    parser.add_argument("--counts", default="1,2,4,6,8", help="camera counts for the full-rate table")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of the description comparison")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables")
    args = parser.parse_args()
    counts = [int(c) for c in args.counts.split(",") if c]
    quick, url = start_fake_ollama(0.0)
    slow, slow_url = start_fake_ollama(0.2)
    try:
        rows = full_rate(counts, args.seconds, url) if counts else []
        desc = descriptions(args.seconds, slow_url, rounds=args.rounds)
    finally:
        for proc in (quick, slow):
            proc.kill()
            proc.wait()
    if not args.markdown:
        print(json.dumps({"full_rate": rows, "descriptions": desc}))
        return
    print("| cameras | one process: min / mean fps | at full rate | separate processes: min / mean fps "
          "| at full rate |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cameras']} | {r['one_min_fps']} / {r['one_mean_fps']} | {r['one_full']} of {r['cameras']} "
              f"| {r['sep_min_fps']} / {r['sep_mean_fps']} | {r['sep_full']} of {r['cameras']} |")
    print()
    print("| 8 cameras, 200 ms backend | descriptions/s (all cameras, median round) | per camera min / max "
          "| every round |")
    print("|---|---|---|---|")
    for label, d in desc.items():
        print(f"| {label} | {d['total_per_s']} | {d['min_per_s']} / {d['max_per_s']} "
              f"| {', '.join(str(r) for r in d['rounds'])} |")


if __name__ == "__main__":
    main()
