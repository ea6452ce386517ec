"""The benchmarks' load generator: keep-alive HTTP/1.1 clients on raw sockets, and process start-up.

Raw asyncio streams instead of an HTTP client library, so the generator itself costs
as little CPU as possible and both sides of a comparison are driven identically.
"""

from __future__ import annotations

import asyncio
import os
import statistics
import subprocess
import sys
import time
from typing import Any

import httpx
from _common import ROOT

__all__ = ["json_answer", "measure", "read_request", "start", "stop"]


def stop(*procs: subprocess.Popen[bytes] | None) -> None:
    """Terminate the processes :func:`start` made (killed if they do not exit within 10 s)."""
    for proc in procs:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes]:
    """One HTTP/1.1 request of a keep-alive connection, for the benchmarks' minimal backends: its path and
    body (:class:`asyncio.IncompleteReadError` when the client hangs up)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    length = next((int(v) for k, _, v in (line.partition(":") for line in lines[1:])
                   if k.strip().lower() == "content-length"), 0)
    return lines[0].split(" ")[1], await reader.readexactly(length) if length else b""


def json_answer(payload: bytes) -> bytes:
    """A whole keep-alive JSON response, to send in one write."""
    return (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " + str(len(payload)).encode()
            + b"\r\n\r\n" + payload)


def start(args: list[str], ready_url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "tests"),
                                                                     os.environ.get("PYTHONPATH")]))}
    proc = subprocess.Popen([sys.executable, *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{args} exited: {proc.stderr.read().decode() if proc.stderr else ''}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    proc.kill()
    raise SystemExit(f"{args} did not come up")


async def _read_response(reader: asyncio.StreamReader) -> int:
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
    if "content-length" in headers:
        await reader.readexactly(int(headers["content-length"]))
    elif headers.get("transfer-encoding") == "chunked":
        while True:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)
            await reader.readexactly(size + 2)
            if size == 0:
                break
    return status


async def _caller(port: int, path: str, body: bytes, until: float, latencies: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    request = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    try:
        while time.perf_counter() < until:
            t0 = time.perf_counter()
            writer.write(request)
            status = await _read_response(reader)
            latencies.append(time.perf_counter() - t0)
            if status != 200:
                errors.append(status)
    finally:
        writer.close()


async def _load(port: int, path: str, body: bytes, concurrency: int, seconds: float) -> dict[str, Any]:
    latencies: list[float] = []
    errors: list[int] = []
    started = time.perf_counter()
    until = started + seconds
    await asyncio.gather(*(_caller(port, path, body, until, latencies, errors) for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float:
        return round(ordered[min(len(ordered) - 1, int(p / 100 * len(ordered)))] * 1000, 3)

    return {"requests": len(latencies), "errors": len(errors), "rps": round(len(latencies) / elapsed, 1),
            "p50_ms": pct(50), "p90_ms": pct(90), "p99_ms": pct(99),
            "mean_ms": round(statistics.fmean(latencies) * 1000, 3)}


def measure(port: int, path: str, body: bytes, concurrency: int, seconds: float, warmup: float) -> dict[str, Any]:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if warmup > 0:
        asyncio.run(_load(port, path, body, concurrency, warmup))
    return asyncio.run(_load(port, path, body, concurrency, seconds))
