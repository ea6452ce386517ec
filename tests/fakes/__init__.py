"""Protocol-faithful fake VLM servers for tests and benchmarks.

Ollama and NIM cannot run in the test environment, so these fakes stand in for
them on 127.0.0.1. They validate requests as strictly as the real servers
(raw base64 for Ollama, data URIs for OpenAI-compatible servers, strict JSON,
typed options) and answer with the real shapes, streaming included::

    from fakes import FakeOllama, FakeOpenAI

    with FakeOllama(token_delay=0.01) as ollama:       # http://127.0.0.1:PORT
        ... framelens run ... -c ollama-url=ollama.url
        body = ollama.requests_to("/api/chat")[-1].json()

    with FakeOpenAI(error_style="vllm", api_key="k") as nim:   # nim.base_url ends in /v1
        nim.fail_next(429, nim.error_body("busy", 429), path="/v1/chat/completions",
                      headers={"Retry-After": "1"})
        nim.drop_next(path="/v1/chat/completions")      # a dropped connection
        nim.delay_next(2.0)                             # one slow answer

Every fake records its requests (``server.requests``), can be stopped and
started again on the same port (``server.stop(); server.start()``), and runs
as a script: ``PYTHONPATH=tests python -m fakes.ollama_server --port 11434``.
pytest puts ``tests/`` on ``sys.path``; benchmark scripts add it themselves.
"""

from __future__ import annotations

import socket
from typing import Any

from ._vlm import DecodedVideo, ReplyFn, default_reply
from .http import DROP, FakeHTTPServer, Fault, RecordedRequest, Reply, paced, strict_json

__all__ = [
    "DROP",
    "DecodedVideo",
    "FakeHTTPServer",
    "FakeOllama",
    "FakeOpenAI",
    "Fault",
    "RecordedRequest",
    "Reply",
    "ReplyFn",
    "default_reply",
    "paced",
    "strict_json",
    "unused_url",
]


def unused_url(path: str = "") -> str:
    """``http://127.0.0.1:PORT{path}`` for a port nothing listens on (a server that is down)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}{path}"


def __getattr__(name: str) -> Any:
    # Imported lazily so `python -m fakes.ollama_server` does not import itself twice.
    if name == "FakeOllama":
        from .ollama_server import FakeOllama

        return FakeOllama
    if name == "FakeOpenAI":
        from .openai_server import FakeOpenAI

        return FakeOpenAI
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
