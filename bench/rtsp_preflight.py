"""Cost of the RTSP source's pre-flight ``OPTIONS`` (issue 10) on the time to the first frame.

Against a framelens RTSP output on 127.0.0.1 (test pattern, 30 fps, its own process),
8 runs, alternating which goes first: ``RtspSource.open()`` (the ``OPTIONS``, then FFmpeg's open and
the first frame) and the same open without the pre-flight (the FFmpeg part alone),
plus the ``OPTIONS`` round trip by itself. Medians in milliseconds.

    .venv/bin/python bench/rtsp_preflight.py [--runs 8]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from helpers import free_port  # noqa: E402
from rtsp_helpers import PATTERN, Framelens  # noqa: E402

from framelens.opencv import FFmpegStreamSource  # noqa: E402
from framelens.plugins.rtsp.source import RtspSource, RtspSourceOptions, ask_server  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args()
    port = free_port()
    camera = Framelens([*PATTERN, "-o", f"rtsp://127.0.0.1:{port}/out", "-c", "rtsp-fps=30"])
    camera.wait_listening(port)
    url = f"rtsp://127.0.0.1:{port}/out"
    timings: dict[str, list[float]] = {"with_preflight_ms": [], "ffmpeg_only_ms": [], "options_only_ms": []}
    try:
        for run in range(args.runs):
            # Alternate which open goes first: the server keeps a just-used media for a moment,
            # so the second open of a pair finds it prepared.
            order = ("with_preflight_ms", "ffmpeg_only_ms") if run % 2 == 0 else ("ffmpeg_only_ms", "with_preflight_ms")
            for kind in order:
                source = RtspSource(url, RtspSourceOptions())
                t0 = time.perf_counter()
                if kind == "with_preflight_ms":
                    source.open()
                else:
                    FFmpegStreamSource.open(source)
                timings[kind].append(1000 * (time.perf_counter() - t0))
                source.close()
                time.sleep(0.3)
            t0 = time.perf_counter()
            ask_server(url, ("127.0.0.1", port), timeout=5, method="OPTIONS")
            timings["options_only_ms"].append(1000 * (time.perf_counter() - t0))
    finally:
        camera.stop()
    medians = {k: round(statistics.median(v), 2) for k, v in timings.items()}
    medians["ratio_with_vs_without"] = round(medians["with_preflight_ms"] / medians["ffmpeg_only_ms"], 3)
    print(json.dumps(medians, indent=1))


if __name__ == "__main__":
    main()
