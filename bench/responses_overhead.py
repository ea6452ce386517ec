"""Cost of the Responses API: ``/v1/responses`` vs ``/v1/chat/completions`` through framelens, and direct.

One run, same machine, same load generator, same instant backend (a bare
asyncio OpenAI-compatible server in its own process that answers in one write),
side by side:

- direct: the load generator calls the backend's /v1/chat/completions;
- chat: ``framelens serve --backend openai`` in front of it, /v1/chat/completions;
- responses: the same framelens, /v1/responses with the equivalent request
  (validated as a Responses request, turned into the chat request, answered
  as a response object).

Reports requests per second, latency percentiles, the median latency the
Responses API adds over chat completions (ms), and the throughput ratios
responses/chat and responses/direct.

    .venv/bin/python bench/responses_overhead.py [--seconds 5] [--concurrency 1 16]
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
CHAT_BODY = json.dumps({"model": MODEL, "messages": [{"role": "user", "content": "Hello!"}],
                        "max_tokens": 16}).encode()
RESPONSES_BODY = json.dumps({"model": MODEL, "input": "Hello!", "max_output_tokens": 16}).encode()
_ANSWER = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1700000000, "model": MODEL,
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello! How can I help you today?"},
                 "finish_reason": "stop", "logprobs": None}],
    "usage": {"prompt_tokens": 9, "completion_tokens": 8, "total_tokens": 17},
}).encode()
_MODELS = json.dumps({"object": "list", "data": [{"id": MODEL, "object": "model", "created": 0,
                                                  "owned_by": "bench"}]}).encode()


async def _serve_instant(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """The instant backend: parses each request (JSON body included) and answers in one write."""
    try:
        while True:
            path, body = await read_request(reader)
            writer.write(json_answer(_ANSWER if path.endswith("/chat/completions") and json.loads(body) else _MODELS))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        writer.close()


def run_instant_backend(port: int) -> None:
    async def serve() -> None:
        server = await asyncio.start_server(_serve_instant, "127.0.0.1", port, backlog=1024)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per side and concurrency")
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--instant-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.instant_backend:
        run_instant_backend(args.instant_backend)
        return
    backend_port, framelens_port = free_port(), free_port()
    backend = start([str(Path(__file__).resolve()), "--instant-backend", str(backend_port)],
                    f"http://127.0.0.1:{backend_port}/v1/models")
    framelens = None
    try:
        framelens = start(["-m", "framelens", "serve", "--port", str(framelens_port), "--backend", "openai",
                           "-c", f"openai-url=http://127.0.0.1:{backend_port}/v1", "-c", f"openai-model={MODEL}",
                           "-c", "openai-max-in-flight=8", "-c", "http-max-concurrency=256",
                           "--log-level", "warning"],
                          f"http://127.0.0.1:{framelens_port}/v1/health/ready")
        report: dict[str, Any] = {"cpus": os.cpu_count(), "seconds": args.seconds, "results": []}
        for c in args.concurrency:
            direct = measure(backend_port, "/v1/chat/completions", CHAT_BODY, c, args.seconds, args.warmup)
            chat = measure(framelens_port, "/v1/chat/completions", CHAT_BODY, c, args.seconds, args.warmup)
            responses = measure(framelens_port, "/v1/responses", RESPONSES_BODY, c, args.seconds, args.warmup)
            report["results"].append({
                "concurrency": c, "direct": direct, "chat": chat, "responses": responses,
                "responses_added_p50_ms": round(responses["p50_ms"] - chat["p50_ms"], 3),
                "responses_vs_chat": round(responses["rps"] / chat["rps"], 3) if chat["rps"] else None,
                "responses_vs_direct": round(responses["rps"] / direct["rps"], 3) if direct["rps"] else None,
            })
        print(json.dumps(report, indent=1))
    finally:
        stop(framelens, backend)


if __name__ == "__main__":
    main()
