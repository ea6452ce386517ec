"""Overhead of the ``http`` service: /v1/chat/completions through framelens vs the backend directly.

One run, same machine, same load generator, same request, side by side:

- backend: a minimal OpenAI-compatible server that answers every request after
  ``--delay`` seconds (default 50 ms, as issue 15 measures; 0 = at once), in
  one write per response with keep-alive, or as an SSE stream of
  ``--stream-chunks`` events (chunked), in its own process. (The fakes of
  tests/fakes write headers and body separately, which costs ~40 ms per
  keep-alive request through delayed ACKs, so they cannot stand for "instant".)
- direct: the load generator calls the backend's /v1/chat/completions;
- framelens: ``framelens serve --backend openai`` (its own process) in front of
  that backend, its backend limit raised to the client concurrency; the load
  generator calls framelens.

- floor (``--floor``, plain mode only): the least any Starlette service can cost
  here, a bare Starlette app on the same uvicorn (uvloop, httptools) that reads
  the request's JSON, waits ``--delay`` and sends the backend's answer, calling
  no backend.

The load generator is a lean asyncio HTTP/1.1 keep-alive client (one
connection per concurrent caller) so its own cost stays small and equal on
both sides. For each mode (plain, streaming) and concurrency (1 16 64 256)
each side runs ``--seconds`` after a warm-up; it reports requests per second
and latency percentiles, the added median latency (ms), the throughput
ratio framelens/direct, and the CPU that framelens's process spent per request
(user + system, from /proc: steadier than throughput on a machine whose cores
the load generator and the backend share). Bounded in time: about 2 x modes x
concurrencies x (seconds + warm-up).

    .venv/bin/python bench/http_overhead.py [--seconds 5] [--concurrency 1 16 64 256] [--delay 0.05]
        [--modes plain stream] [--floor] [--markdown]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port
from loadgen import json_answer, measure, read_request, start, stop

ROOT = Path(__file__).resolve().parent.parent
MODEL = "nvidia/nemotron-nano-12b-v2-vl"
BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}).encode()
STREAM_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16,
                          "stream": True}).encode()


_ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
}).encode()
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                  "owned_by": "bench"}]}).encode()


def _chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def _sse(chunks: int) -> bytes:
    """The streamed answer: ``chunks`` token events, a finish event with usage, ``[DONE]``, as chunked body."""
    words = ["Hello!", " How", " can", " I", " help", " you", " today", "?"]
    out = []
    for i in range(chunks):
        event = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
                 "choices": [{"index": 0, "delta": {"content": words[i % len(words)]}, "finish_reason": None}]}
        out.append(_chunk(b"data: " + json.dumps(event).encode() + b"\n\n"))
    final = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1700000000, "model": MODEL,
             "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
             "usage": {"prompt_tokens": 9, "completion_tokens": chunks, "total_tokens": 9 + chunks}}
    out.append(_chunk(b"data: " + json.dumps(final).encode() + b"\n\n"))
    out.append(_chunk(b"data: [DONE]\n\n"))
    return b"".join(out) + b"0\r\n\r\n"


def _serve_backend(delay: float, stream_chunks: int) -> Any:
    sse = _sse(stream_chunks)

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Parses each request (JSON body included), waits ``delay``, answers in one write."""
        try:
            while True:
                path, body = await read_request(reader)
                if path.endswith("/chat/completions"):
                    request = json.loads(body)
                    request["messages"]
                    if delay:
                        await asyncio.sleep(delay)
                    if request.get("stream"):
                        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n"
                                     b"Transfer-Encoding: chunked\r\n\r\n" + sse)
                        await writer.drain()
                        continue
                    payload = _ANSWER
                else:
                    payload = _MODELS
                writer.write(json_answer(payload))
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()

    return serve


def run_backend(port: int, delay: float, stream_chunks: int) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass

    async def serve() -> None:
        server = await asyncio.start_server(_serve_backend(delay, stream_chunks), "127.0.0.1", port, backlog=4096)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def run_floor(port: int, delay: float) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    async def chat(request: Request) -> Response:
        (await request.json())["messages"]
        await asyncio.sleep(delay)
        return Response(_ANSWER, media_type="application/json")

    app = Starlette(routes=[Route("/v1/chat/completions", chat, methods=["POST"]),
                            Route("/v1/models", lambda r: Response(_MODELS, media_type="application/json"))])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU seconds of process ``pid`` so far (None where /proc is missing)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure_with_cpu(pid: int, port: int, body: bytes, concurrency: int, seconds: float,
                     warmup: float) -> dict[str, Any]:
    """:func:`measure`, plus ``cpu_ms``: the CPU process ``pid`` spent per request while it ran."""
    measure(port, "/v1/chat/completions", body, concurrency, warmup, 0)
    before = cpu_seconds(pid)
    result = measure(port, "/v1/chat/completions", body, concurrency, seconds, 0)
    after = cpu_seconds(pid)
    if before is not None and after is not None and result["requests"]:
        result["cpu_ms"] = round((after - before) * 1000 / result["requests"], 3)
    return result


def markdown(report: dict[str, Any]) -> str:
    rows = ["| mode | clients | direct req/s | through framelens | ratio | direct p50 | added p50 | "
            "framelens CPU / request | errors |", "|---|---|---|---|---|---|---|---|---|"]
    for r in report["results"]:
        d, f = r["direct"], r["framelens"]
        cpu = f"{f['cpu_ms']:.2f} ms" if "cpu_ms" in f else "-"
        rows.append(f"| {r['mode']} | {r['concurrency']} | {d['rps']:,} | {f['rps']:,} | {r['throughput_ratio']} | "
                    f"{d['p50_ms']:.1f} ms | {r['added_p50_ms']:+.1f} ms | {cpu} | {d['errors']} / {f['errors']} |")
    floors = [r for r in report["results"] if "floor" in r]
    if floors:
        rows += ["", "| clients | bare Starlette req/s | ratio to direct | added p50 | its CPU / request |",
                 "|---|---|---|---|---|"]
        for r in floors:
            fl = r["floor"]
            rows.append(f"| {r['concurrency']} | {fl['rps']:,} | {round(fl['rps'] / r['direct']['rps'], 3)} | "
                        f"{fl['p50_ms'] - r['direct']['p50_ms']:+.1f} ms | {fl.get('cpu_ms', '-')} ms |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per side and concurrency")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64, 256])
    parser.add_argument("--delay", type=float, default=0.05, help="seconds the backend takes per answer")
    parser.add_argument("--stream-chunks", type=int, default=8, help="events in a streamed answer")
    parser.add_argument("--modes", nargs="+", choices=("plain", "stream"), default=["plain", "stream"])
    parser.add_argument("--backend-connections", type=int, default=None,
                        help="framelens's requests in flight to the backend (-c openai-max-in-flight; default: the "
                             "largest concurrency)")
    parser.add_argument("--floor", action="store_true",
                        help="also measure a bare Starlette app that calls no backend (plain mode)")
    parser.add_argument("--markdown", action="store_true", help="also print the table for docs/benchmarks.md")
    parser.add_argument("--backend-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    parser.add_argument("--floor-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.backend_server:
        run_backend(args.backend_server, args.delay, args.stream_chunks)
        return
    if args.floor_server:
        run_floor(args.floor_server, args.delay)
        return
    connections = args.backend_connections or max(args.concurrency)
    backend_port, framelens_port = free_port(), free_port()
    backend = start([str(Path(__file__).resolve()), "--backend-server", str(backend_port), "--delay", str(args.delay),
                     "--stream-chunks", str(args.stream_chunks)], f"http://127.0.0.1:{backend_port}/v1/models")
    framelens = floor = None
    try:
        if args.floor:
            floor_port = free_port()
            floor = start([str(Path(__file__).resolve()), "--floor-server", str(floor_port), "--delay",
                           str(args.delay)], f"http://127.0.0.1:{floor_port}/v1/models")
        framelens = start(["-m", "framelens", "serve", "--port", str(framelens_port), "--backend", "openai",
                           "-c", f"openai-url=http://127.0.0.1:{backend_port}/v1", "-c", f"openai-model={MODEL}",
                           "-c", f"openai-max-in-flight={connections}",
                           "-c", f"http-max-concurrency={max(256, connections)}", "-c", "http-max-queue=1024",
                           "--log-level", "warning"],
                          f"http://127.0.0.1:{framelens_port}/v1/health/ready")
        report: dict[str, Any] = {"cpus": os.cpu_count(), "seconds": args.seconds, "delay_s": args.delay,
                                  "results": []}
        for mode in args.modes:
            body = STREAM_BODY if mode == "stream" else BODY
            for c in args.concurrency:
                direct = measure(backend_port, "/v1/chat/completions", body, c, args.seconds, args.warmup)
                via = measure_with_cpu(framelens.pid, framelens_port, body, c, args.seconds, args.warmup)
                report["results"].append({
                    "mode": mode, "concurrency": c, "direct": direct, "framelens": via,
                    "added_p50_ms": round(via["p50_ms"] - direct["p50_ms"], 3),
                    "throughput_ratio": round(via["rps"] / direct["rps"], 3) if direct["rps"] else None,
                })
                if floor is not None and mode == "plain":
                    report["results"][-1]["floor"] = measure_with_cpu(floor.pid, floor_port, body, c, args.seconds,
                                                                      args.warmup)
                print(json.dumps(report["results"][-1]), file=sys.stderr, flush=True)
        print(json.dumps(report, indent=1))
        if args.markdown:
            print(markdown(report))
    finally:
        stop(framelens, backend, floor)


if __name__ == "__main__":
    main()
