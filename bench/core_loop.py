"""Core loop overhead and the effect of slow background work.

1. Same 720p H.264 file, as fast as possible: a plain ``cv2.VideoCapture.read()`` loop
   versus ``framelens run -s FILE -p noop x5 -o none`` (runs alternate; medians).
2. Output fps with and without a processor making 1-second background calls:
   a) on the same file, as fast as possible; b) on a live 30 fps test pattern.

Run: .venv/bin/python bench/core_loop.py [--runs 7]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import sys
import time
from pathlib import Path
from typing import Any

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import h264_file

from framelens import BackgroundWorker, Context, Frame, Processor, RegisterFn, hookimpl
from framelens.cli import main as framelens_main
from framelens.testing import plugin_registered


class Noop(Processor):
    def process(self, frame: Frame) -> Frame:
        return frame


class SlowCall(Processor):
    """Hands every frame to a worker whose call takes one second (like a VLM round trip)."""

    def __init__(self, context: Context) -> None:
        async def call(frame: Frame) -> None:
            await asyncio.sleep(1.0)

        self.worker = BackgroundWorker("slow", call, runner=context.runner, timeout=5)

    def start(self) -> None:
        self.worker.start()

    def process(self, frame: Frame) -> Frame:
        self.worker.submit(frame)
        return frame

    def close(self) -> None:
        self.worker.close()

    def stats(self) -> dict[str, Any]:
        return {"background_calls": self.worker.timings.calls}


class BenchPlugin:
    @hookimpl
    def register_processors(self, register: RegisterFn) -> None:
        register("noop", lambda o, c: Noop(), help="does nothing (benchmark)")
        register("slowcall", lambda o, c: SlowCall(c), help="1 s background call per free moment (benchmark)")


def plain_read(path: Path) -> float:
    cap = cv2.VideoCapture(str(path))
    n = 0
    t0 = time.perf_counter()
    while True:
        ok, _ = cap.read()
        if not ok:
            break
        n += 1
    dt = time.perf_counter() - t0
    cap.release()
    return n / dt


def framelens_fps(args: list[str]) -> dict[str, Any]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = framelens_main(["run", *args, "--benchmark", "--log-level", "warning"])
    assert status == 0
    report: dict[str, Any] = json.loads(out.getvalue().strip().splitlines()[-1])
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=7)
    parser.add_argument("--live-seconds", type=float, default=10.0)
    opts = parser.parse_args()
    path = h264_file()
    noops = ["-p", "noop", "-p", "noop:n2", "-p", "noop:n3", "-p", "noop:n4", "-p", "noop:n5"]
    results: dict[str, list[float]] = {"plain": [], "framelens": [], "file_slow": [], "file_base": []}
    with plugin_registered(BenchPlugin(), "bench"):
        plain_read(path)  # warm-up: page cache, codec initialisation
        framelens_fps(["-s", str(path), *noops, "-o", "none"])
        for _ in range(opts.runs):
            results["plain"].append(plain_read(path))
            results["framelens"].append(framelens_fps(["-s", str(path), *noops, "-o", "none"])["fps"])
            results["file_base"].append(framelens_fps(["-s", str(path), *noops, "-o", "none"])["fps"])
            slow = framelens_fps(["-s", str(path), *noops, "-p", "slowcall", "-o", "none"])
            results["file_slow"].append(slow["fps"])
        frames = int(30 * opts.live_seconds)
        live_base = framelens_fps(["-s", "testpattern", "--fps", "30", "--width", "1280", "--height", "720",
                                   *noops, "-o", "none", "--max-frames", str(frames)])
        live_slow = framelens_fps(["-s", "testpattern", "--fps", "30", "--width", "1280", "--height", "720",
                                   *noops, "-p", "slowcall", "-o", "none", "--max-frames", str(frames)])

    def med(xs: list[float]) -> float:
        return sorted(xs)[len(xs) // 2]

    plain, fl = med(results["plain"]), med(results["framelens"])
    base, slow = med(results["file_base"]), med(results["file_slow"])
    summary = {
        "input": f"{path.name} ({int(cv2.VideoCapture(str(path)).get(cv2.CAP_PROP_FRAME_COUNT))} frames)",
        "plain_read_fps": round(plain, 1),
        "framelens_5_noop_fps": round(fl, 1),
        "ratio_framelens_vs_plain": round(fl / plain, 3),
        "file_fps_without_slow_call": round(base, 1),
        "file_fps_with_1s_background_calls": round(slow, 1),
        "ratio_file_slow_vs_base": round(slow / base, 3),
        "live30_fps_without_slow_call": live_base["fps"],
        "live30_fps_with_1s_background_calls": live_slow["fps"],
        "live30_dropped": [live_base["dropped"], live_slow["dropped"]],
        "ratio_live_slow_vs_base": round(live_slow["fps"] / live_base["fps"], 3),
        "background_calls_during_live_run": live_slow["processors"]["slowcall"]["background_calls"],
        "runs": {k: [round(v, 1) for v in vs] for k, vs in results.items()},
    }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
