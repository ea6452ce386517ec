"""Does watching the dashboard slow the pipeline? Pipeline fps and service CPU, 0 vs N viewers.

One run, one service, side by side: ``framelens run -s testpattern`` (1280x720 at
30 fps, a describer on tests/fakes' Ollama so that description events flow) with
the ``http`` service and its dashboard, in its own process. The script alternates
phases of ``--seconds`` each: no viewer, then ``--viewers`` dashboard viewers, then
none again, and so on (``--rounds`` times), so drift of the machine hits both sides.

A viewer is what the page opens: one ``GET /v1/events`` SSE stream, one MJPEG live
view (``/dashboard/api/streams/main/mjpeg``) and a status poll every 2 s; all are
real HTTP clients on 127.0.0.1 reading every byte.

Per phase it reads the loop's frame counter (``framelens_frames`` on /metrics) and
the service process's CPU time (/proc), and reports the pipeline fps, the ratio
fps(viewers)/fps(none), the service CPU (% of one core) and the CPU per viewer,
with the MJPEG frames and events each viewer received.

    .venv/bin/python bench/dashboard_viewers.py [--viewers 4] [--seconds 10] [--rounds 2] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port, start_fake_ollama

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS  # utime + stime


def frames(base: str) -> float:
    text = httpx.get(base + "/metrics", timeout=5).text
    return sum(float(m.group(1)) for m in re.finditer(r'^framelens_frames_total\{[^}]*\} (\S+)$', text, re.M))


async def viewer(base: str, stop: asyncio.Event, counts: dict[str, int]) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=httpx.Timeout(10, read=30)) as client:
        async def events() -> None:
            async with client.stream("GET", "/v1/events") as response:
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        counts["events"] += 1
                    if stop.is_set():
                        return

        async def video() -> None:
            async with client.stream("GET", "/dashboard/api/streams/main/mjpeg") as response:
                async for chunk in response.aiter_bytes():
                    counts["mjpeg"] += chunk.count(b"--frame\r\n")
                    counts["bytes"] += len(chunk)
                    if stop.is_set():
                        return

        async def status() -> None:
            while not stop.is_set():
                (await client.get("/dashboard/api/status")).raise_for_status()
                counts["status"] += 1
                with_timeout = asyncio.ensure_future(stop.wait())
                await asyncio.wait([with_timeout], timeout=2)
                with_timeout.cancel()

        await asyncio.gather(events(), video(), status())


def measure(base: str, pid: int, seconds: float, n_viewers: int) -> dict[str, Any]:
    async def phase() -> dict[str, Any]:
        stop = asyncio.Event()
        counts = [{"events": 0, "mjpeg": 0, "bytes": 0, "status": 0} for _ in range(n_viewers)]
        tasks = [asyncio.ensure_future(viewer(base, stop, c)) for c in counts]
        await asyncio.sleep(2.0 if n_viewers else 0.5)  # viewers connected and streaming
        f0, c0, t0 = await asyncio.to_thread(frames, base), cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(seconds)
        f1, c1, t1 = await asyncio.to_thread(frames, base), cpu_seconds(pid), time.monotonic()
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        dt = t1 - t0
        return {"viewers": n_viewers, "fps": (f1 - f0) / dt, "cpu_pct": 100 * (c1 - c0) / dt,
                "mjpeg_fps_per_viewer": [round(c["mjpeg"] / (dt + 2), 1) for c in counts],
                "events_per_viewer": [c["events"] for c in counts]}

    return asyncio.run(phase())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--viewers", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args()

    ollama, url = start_fake_ollama(0.3)
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    service = subprocess.Popen(
        [sys.executable, "-m", "framelens", "run", "-s", "testpattern", "-c", "testpattern-width=1280",
         "-c", "testpattern-height=720", "-c", "testpattern-fps=30", "-p", "http", "-c", f"http-port={port}",
         "-p", "ollama", "-c", f"ollama-url={url}", "-c", "ollama-model=llava", "-o", "none",
         "--log-level", "warning"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        for _ in range(200):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.1)
        else:
            raise SystemExit("the service did not start")
        time.sleep(2)  # warm-up: first description, JIT-free but caches and sockets settle
        phases = []
        for _ in range(args.rounds):
            for n in (0, args.viewers):
                phases.append(measure(base, service.pid, args.seconds, n))
                print(phases[-1], file=sys.stderr)
    finally:
        service.terminate()
        service.wait(10)
        ollama.terminate()
        ollama.wait(10)
    none = [p for p in phases if p["viewers"] == 0]
    some = [p for p in phases if p["viewers"] > 0]
    fps0 = statistics.mean(p["fps"] for p in none)
    fps1 = statistics.mean(p["fps"] for p in some)
    cpu0 = statistics.mean(p["cpu_pct"] for p in none)
    cpu1 = statistics.mean(p["cpu_pct"] for p in some)
    result = {
        "fps_no_viewers": round(fps0, 2), f"fps_{args.viewers}_viewers": round(fps1, 2),
        "ratio": round(fps1 / fps0, 4), "within_2_percent": abs(fps1 / fps0 - 1) <= 0.02,
        "cpu_pct_no_viewers": round(cpu0, 1), f"cpu_pct_{args.viewers}_viewers": round(cpu1, 1),
        "cpu_pct_per_viewer": round((cpu1 - cpu0) / args.viewers, 1),
        "mjpeg_fps_per_viewer": some[-1]["mjpeg_fps_per_viewer"], "events_per_viewer": some[-1]["events_per_viewer"],
    }
    if args.markdown:
        print(f"| viewers | pipeline fps | service CPU (% of a core) |\n|---|---|---|\n"
              f"| 0 | {fps0:.2f} | {cpu0:.1f} % |\n| {args.viewers} | {fps1:.2f} | {cpu1:.1f} % |\n\n"
              f"ratio {fps1 / fps0:.4f}; CPU per viewer {(cpu1 - cpu0) / args.viewers:.1f} % of a core; "
              f"each viewer got {result['mjpeg_fps_per_viewer']} MJPEG frames/s")
    else:
        print(result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
