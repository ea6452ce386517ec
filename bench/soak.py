"""Soak: 64 clients send a mix of good, bad and hostile requests to ``framelens serve`` for a while.

Setup, each in its own process: tests/fakes' Ollama (``--delay`` per answer) and
``framelens serve --backend ollama`` in front of it, with a ``testpattern`` live
stream opened over the API and private URLs allowed (so that the hostile
requests reach a real tar pit on 127.0.0.1 instead of the 403).

Each client loops over the mix: chat with text, chat with a data-URI image,
chat with ``stream://testpattern``, ``/health``, ``/v1/models``, the stream's
``frame.jpg``, a malformed body (400), a deeply nested body (400), and an
``rtsp://`` camera on the tar pit, a new URL each time (422 after the open
timeout, or 429 once the open bound is reached). The soak reports, side by side:

- requests per second, and per status code;
- ``/health`` latency under the soak against the same probe on the idle
  service before it (p50, p99, and the ratio);
- the service's resident memory (``VmRSS`` of the process) sampled every
  second: start (after the warm-up), peak, end and growth.

    .venv/bin/python bench/soak.py [--clients 64] [--seconds 60] [--delay 0.02] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, free_port, start_fake_ollama


def _png() -> str:
    ok, data = cv2.imencode(".png", np.full((64, 64, 3), 120, np.uint8))
    assert ok
    return "data:image/png;base64," + base64.b64encode(data.tobytes()).decode()


def _tar_pit() -> tuple[socket.socket, threading.Event]:
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()
    held: list[socket.socket] = []

    def serve() -> None:
        while not stop.is_set():
            try:
                held.append(listener.accept()[0])
            except OSError:
                continue
            if len(held) > 512:
                held.pop(0).close()

    threading.Thread(target=serve, daemon=True).start()
    return listener, stop


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _chat(content: Any) -> dict[str, Any]:
    return {"model": "llava", "max_tokens": 16, "messages": [{"role": "user", "content": content}]}


def requests_mix(tar_pit_port: int) -> list[tuple[str, str, str, Any]]:
    """``(kind, method, path, json or raw body)`` of one round of the mix."""
    image = _png()
    deep = "[" * 50_000 + "]" * 50_000
    return [
        ("chat-text", "POST", "/v1/chat/completions", _chat("Describe a cat.")),
        ("chat-image", "POST", "/v1/chat/completions", _chat([
            {"type": "text", "text": "What is this?"}, {"type": "image_url", "image_url": {"url": image}}])),
        ("chat-stream", "POST", "/v1/chat/completions", _chat([
            {"type": "text", "text": "What now?"}, {"type": "image_url", "image_url": {"url": "stream://testpattern"}}])),
        ("health", "GET", "/health", None),
        ("models", "GET", "/v1/models", None),
        ("frame", "GET", "/v1/streams/testpattern/frame.jpg", None),
        ("bad-json", "POST", "/v1/chat/completions", b'{"messages": [}'),
        ("deep-json", "POST", "/v1/chat/completions", deep.encode()),
        ("dead-camera", "POST", "/v1/chat/completions", f"rtsp://127.0.0.1:{tar_pit_port}/cam"),
    ]


async def _client(base: str, mix: list[tuple[str, str, str, Any]], until: float, stats: Counter[str],
                  health_ms: list[float], offset: int) -> None:
    async with httpx.AsyncClient(base_url=base, timeout=30) as client:
        i = offset
        while time.monotonic() < until:
            kind, method, path, body = mix[i % len(mix)]
            i += 1
            if kind == "dead-camera":  # a camera never asked for before: no open to share
                body = _chat([{"type": "text", "text": "x"},
                              {"type": "image_url", "image_url": {"url": f"{body}{offset}-{i}"}}])
            t0 = time.perf_counter()
            try:
                if isinstance(body, bytes):
                    r = await client.request(method, path, content=body, headers={"content-type": "application/json"})
                else:
                    r = await client.request(method, path, json=body)
                stats[f"{kind} {r.status_code}"] += 1
            except httpx.HTTPError as exc:
                stats[f"{kind} {type(exc).__name__}"] += 1
                continue
            if kind == "health":
                health_ms.append((time.perf_counter() - t0) * 1000)


def _probe_health(base: str, n: int = 200) -> list[float]:
    out = []
    with httpx.Client(base_url=base, timeout=5) as client:
        for _ in range(n):
            t0 = time.perf_counter()
            client.get("/health")
            out.append((time.perf_counter() - t0) * 1000)
    return out


def _pct(values: list[float], q: float) -> float:
    return round(statistics.quantiles(values, n=100)[int(q) - 1], 2) if len(values) > 2 else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--warmup", type=float, default=5.0)
    parser.add_argument("--delay", type=float, default=0.02, help="the fake Ollama's seconds per answer")
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args()

    ollama, ollama_url = start_fake_ollama(args.delay)
    pit, pit_stop = _tar_pit()
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    serve = subprocess.Popen(
        [sys.executable, "-m", "framelens", "serve", "--port", str(port), "--backend", "ollama",
         "-c", f"ollama-url={ollama_url}", "-c", "ollama-model=llava", "-c", "http-allow-private-urls=true",
         "-c", "http-max-concurrency=16", "-c", "http-max-queue=256", "-c", "http-open-timeout=2",
         "--log-level", "error"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                if httpx.get(base + "/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise SystemExit("framelens serve did not come up")
        opened = httpx.post(base + "/v1/streams", json={"url": "testpattern", "id": "testpattern"}, timeout=30)
        assert opened.status_code in (200, 201), opened.text
        idle = _probe_health(base)
        mix = requests_mix(pit.getsockname()[1])

        stats: Counter[str] = Counter()
        health_ms: list[float] = []
        rss: list[tuple[float, int]] = []
        stop_sampling = threading.Event()

        def sample() -> None:
            while not stop_sampling.wait(1.0):
                rss.append((time.monotonic(), _rss_kib(serve.pid)))

        async def soak(seconds: float) -> None:
            until = time.monotonic() + seconds
            await asyncio.gather(*(_client(base, mix, until, stats, health_ms, k) for k in range(args.clients)))

        asyncio.run(soak(args.warmup))
        stats.clear()
        health_ms.clear()
        sampler = threading.Thread(target=sample, daemon=True)
        start_rss = _rss_kib(serve.pid)
        t0 = time.monotonic()
        sampler.start()
        asyncio.run(soak(args.seconds))
        elapsed = time.monotonic() - t0
        stop_sampling.set()
        sampler.join(2)
        end_rss = _rss_kib(serve.pid)
        alive = serve.poll() is None and httpx.get(base + "/health", timeout=5).status_code == 200
    finally:
        serve.terminate()
        try:
            serve.wait(10)
        except subprocess.TimeoutExpired:
            serve.kill()
        ollama.terminate()
        pit_stop.set()
        pit.close()

    total = sum(stats.values())
    # A 503 on frame.jpg is the stale-stream answer (no frame for a second), not a failure.
    stale = stats.get("frame 503", 0)
    server_errors = sum(n for k, n in stats.items() if k.split()[-1].startswith("5")) - stale
    peak = max([start_rss, end_rss, *(r for _, r in rss)])
    report = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "cpus": os.cpu_count(), "clients": args.clients,
        "seconds": round(elapsed, 1), "requests": total, "rps": round(total / elapsed, 1),
        "by_kind_and_status": dict(sorted(stats.items())),
        "server_errors": server_errors, "stale_frame_503": stale,
        "health_idle_p50_ms": _pct(idle, 50), "health_idle_p99_ms": _pct(idle, 99),
        "health_soak_p50_ms": _pct(health_ms, 50), "health_soak_p99_ms": _pct(health_ms, 99),
        "health_p50_ratio_soak_vs_idle": round(_pct(health_ms, 50) / _pct(idle, 50), 2),
        "rss_start_mib": round(start_rss / 1024, 1), "rss_peak_mib": round(peak / 1024, 1),
        "rss_end_mib": round(end_rss / 1024, 1), "rss_growth_pct": round(100 * (end_rss - start_rss) / start_rss, 1),
        "service_alive_after": alive,
    }
    print(json.dumps(report, indent=1))
    if args.markdown:
        print("| clients | seconds | requests/s | /health p50 idle -> soak (ms) | /health p99 soak (ms) "
              "| RSS start -> end (MiB) | growth |")
        print("|---|---|---|---|---|---|---|")
        print(f"| {args.clients} | {report['seconds']} | {report['rps']} | {report['health_idle_p50_ms']} -> "
              f"{report['health_soak_p50_ms']} (x{report['health_p50_ratio_soak_vs_idle']}) | "
              f"{report['health_soak_p99_ms']} | {report['rss_start_mib']} -> {report['rss_end_mib']} "
              f"(peak {report['rss_peak_mib']}) | {report['rss_growth_pct']} % |")


if __name__ == "__main__":
    main()
