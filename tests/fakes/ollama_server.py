"""A protocol-faithful fake of Ollama's native API (``/api/chat``, ``/api/generate``,
``/api/tags``, ``/api/show``, ``/api/version``).

It checks requests the way Ollama does and answers with Ollama's shapes:

- bodies are parsed strictly (Go ``encoding/json``): an empty body is
  ``{"error":"missing request body"}``; bad JSON or a wrong type is a 400;
- ``images`` must be raw standard base64 (a ``data:`` prefix fails with
  ``illegal base64 data at input byte 4``) of a decodable picture;
- an unknown model is a 404 ``{"error":"model 'NAME' not found"}``; images sent
  to a model without the ``vision`` capability fail like Ollama does;
- ``stream`` defaults to true: NDJSON lines (``application/x-ndjson``), the last
  one with ``done: true``, ``done_reason``, token counts and ns durations;
  ``stream: false`` gives one JSON object;
- ``format`` (``"json"`` or a JSON schema), ``options`` (type-checked),
  ``keep_alive`` (a Go duration or seconds) are validated and recorded;
- ``think`` (``true``/``false`` or ``"low"``/``"medium"``/``"high"``) needs a
  model with the ``thinking`` capability (otherwise a 400 like Ollama's); the
  model then "thinks" into ``message.thinking`` (``thinking`` on generate)
  before it answers.

Behaviour knobs (plain attributes, change them at any time): ``models``,
``reply`` (text or ``fn(body, images, videos)``), ``token_delay``,
``stream_error_after``/``stream_error``, ``drop_after``, ``delay`` and the
scripted faults of :class:`~fakes.http.FakeHTTPServer`.

Run it on its own: ``PYTHONPATH=tests python -m fakes.ollama_server --port 11434``.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator, Mapping
from datetime import datetime, timezone
from typing import Any

import numpy as np

from ._vlm import ReplyFn, decode_image_bytes, default_reply, go_base64, instance_for_schema, tokens
from .http import DROP, FakeHTTPServer, RecordedRequest, Reply, StrictJSONError, _Drop, serve_forever, strict_json

__all__ = ["FakeOllama", "OLLAMA_OPTION_TYPES"]

OLLAMA_OPTION_TYPES: dict[str, type | tuple[type, ...]] = {
    "num_ctx": int, "num_predict": int, "num_keep": int, "num_batch": int, "num_gpu": int,
    "num_thread": int, "seed": int, "top_k": int, "repeat_last_n": int,
    "temperature": (int, float), "top_p": (int, float), "min_p": (int, float), "typical_p": (int, float),
    "repeat_penalty": (int, float), "presence_penalty": (int, float), "frequency_penalty": (int, float),
    "stop": list, "use_mmap": bool, "numa": bool,
}
"""Modelfile parameters Ollama knows and the JSON types it accepts for them."""

_DURATION = re.compile(r"^-?(?:\d+(?:\.\d*)?(?:ns|us|µs|ms|s|m|h))+$|^0$")
_TYPE_NAMES = {int: "integer", list: "array", bool: "boolean"}

IMAGE_TOKENS = 576
"""Prompt tokens the fake counts per image (what a LLaVA-1.5 projector emits)."""


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _BadRequest(Exception):
    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class FakeOllama(FakeHTTPServer):
    """A fake Ollama server. ``models`` maps installed model names to their capabilities."""

    def __init__(
        self,
        *,
        models: Mapping[str, list[str]] | None = None,
        reply: str | ReplyFn = default_reply,
        token_delay: float = 0.0,
        port: int = 0,
        delay: float = 0.0,
    ) -> None:
        super().__init__(port=port, delay=delay)
        self.models: dict[str, list[str]] = dict(
            models if models is not None else {"llava:latest": ["completion", "vision"]}
        )
        self.reply = reply
        self.token_delay = token_delay
        self.stream_error_after: int | None = None
        self.stream_error = "an error was encountered while running the model: unexpected EOF"
        self.drop_after: int | None = None
        self.load_duration_ns = 5_000_000
        self.prompt_eval_duration_ns = 120_000_000
        self.eval_duration_per_token_ns = 25_000_000
        self.images: list[np.ndarray] = []  # every image received, decoded

    # -- helpers ----------------------------------------------------------------------------

    def find_model(self, name: Any) -> str | None:
        """The installed name that ``name`` refers to (``llava`` means ``llava:latest``)."""
        if not isinstance(name, str) or not name:
            return None
        full = name if ":" in name else f"{name}:latest"
        return full if full in self.models else (name if name in self.models else None)

    @staticmethod
    def error(message: str, status: int) -> Reply:
        return Reply.json({"error": message}, status)

    # -- routing ----------------------------------------------------------------------------

    async def handle(self, request: RecordedRequest) -> Reply | _Drop:
        routes = {
            ("GET", "/"): self._root, ("HEAD", "/"): self._root,
            ("GET", "/api/version"): self._version,
            ("GET", "/api/tags"): self._tags, ("HEAD", "/api/tags"): self._tags,
            ("POST", "/api/show"): self._show,
            ("POST", "/api/chat"): self._chat,
            ("POST", "/api/generate"): self._generate,
        }
        handler = routes.get((request.method, request.path))
        if handler is None:
            if any(path == request.path for _, path in routes):
                return Reply.text("405 method not allowed", 405)
            return Reply.text("404 page not found", 404)
        try:
            return await handler(request)
        except _BadRequest as exc:
            return self.error(str(exc), exc.status)

    async def _root(self, request: RecordedRequest) -> Reply:
        return Reply.text("Ollama is running")

    async def _version(self, request: RecordedRequest) -> Reply:
        return Reply.json({"version": "0.12.6"})

    async def _tags(self, request: RecordedRequest) -> Reply:
        models = []
        for name, caps in self.models.items():
            models.append({
                "name": name, "model": name, "modified_at": "2025-05-01T12:00:00.000000Z",
                "size": 4_700_000_000, "digest": f"{abs(hash(name)):064x}"[:64],
                "details": {"parent_model": "", "format": "gguf", "family": "llama",
                            "families": ["llama", "clip"] if "vision" in caps else ["llama"],
                            "parameter_size": "7B", "quantization_level": "Q4_0"},
            })
        return Reply.json({"models": models})

    def _body(self, request: RecordedRequest) -> dict[str, Any]:
        try:
            body = strict_json(request.body)
        except StrictJSONError as exc:
            raise _BadRequest("missing request body" if str(exc) == "EOF" else str(exc)) from None
        if not isinstance(body, dict):
            raise _BadRequest(f"json: cannot unmarshal {type(body).__name__} into Go value of type api.Request")
        return body

    async def _show(self, request: RecordedRequest) -> Reply:
        body = self._body(request)
        name = body.get("model") or body.get("name")
        if not name:
            raise _BadRequest("model is required")
        found = self.find_model(name)
        if found is None:
            raise _BadRequest(f"model '{name}' not found", 404)
        caps = self.models[found]
        return Reply.json({
            "license": "", "modelfile": f"FROM {found}\n", "parameters": "stop \"USER:\"",
            "template": "{{ .System }}\nUSER: {{ .Prompt }}\nASSISTANT: ",
            "details": {"parent_model": "", "format": "gguf", "family": "llama",
                        "families": ["llama", "clip"] if "vision" in caps else ["llama"],
                        "parameter_size": "7B", "quantization_level": "Q4_0"},
            "model_info": {"general.architecture": "llama", "llama.context_length": 4096},
            "capabilities": caps, "modified_at": "2025-05-01T12:00:00.000000Z",
        })

    # -- validation -------------------------------------------------------------------------

    def _check_common(self, body: dict[str, Any]) -> str:
        model = body.get("model")
        if not isinstance(model, str) or not model:
            raise _BadRequest("model is required")
        if "stream" in body and not isinstance(body["stream"], bool):
            raise _BadRequest("json: cannot unmarshal into Go struct field ChatRequest.stream of type bool")
        if "keep_alive" in body:
            ka = body["keep_alive"]
            if isinstance(ka, bool) or not (isinstance(ka, (int, float)) or
                                            (isinstance(ka, str) and _DURATION.match(ka))):
                raise _BadRequest(f"time: invalid duration {json.dumps(ka)}")
        if "format" in body:
            fmt = body["format"]
            if not (fmt in ("", "json") or isinstance(fmt, dict)):
                raise _BadRequest(f"invalid format: {json.dumps(fmt)}; expected \"json\" or a valid JSON Schema")
        options = body.get("options")
        if options is not None:
            if not isinstance(options, dict):
                raise _BadRequest("json: cannot unmarshal into Go struct field ChatRequest.options")
            for key, value in options.items():
                want = OLLAMA_OPTION_TYPES.get(key)
                if want is None:
                    continue  # Ollama logs "invalid option provided" and ignores it
                ok = isinstance(value, want) and not (isinstance(value, bool) and want is not bool)
                if want is int and isinstance(value, float) and value.is_integer():
                    ok = True
                if not ok:
                    raise _BadRequest(f"option \"{key}\" must be of type "
                                      f"{_TYPE_NAMES.get(want if isinstance(want, type) else float, 'number')}")
        found = self.find_model(model)
        if found is None:
            raise _BadRequest(f"model '{model}' not found", 404)
        think = body.get("think")
        if think is not None and not (isinstance(think, bool) or think in ("low", "medium", "high")):
            raise _BadRequest(f"invalid think value: {json.dumps(think)} (must be \"high\", \"medium\", "
                              "\"low\", true, or false)")
        if think and "thinking" not in self.models[found]:
            raise _BadRequest(f"\"{model}\" does not support thinking")
        return found

    def _images(self, raw: Any, found: str) -> list[np.ndarray]:
        if raw is None:
            return []
        if not isinstance(raw, list) or not all(isinstance(i, str) for i in raw):
            raise _BadRequest("json: cannot unmarshal into Go struct field Message.images of type api.ImageData")
        images = []
        for item in raw:
            try:
                data = go_base64(item)
            except ValueError as exc:
                raise _BadRequest(str(exc)) from None
            image = decode_image_bytes(data)
            if image is None:
                raise _BadRequest("failed to process inputs: image: unknown format", 500)
            images.append(image)
        if images and "vision" not in self.models[found]:
            raise _BadRequest("this model is missing data required for image input", 500)
        return images

    # -- inference --------------------------------------------------------------------------

    async def _chat(self, request: RecordedRequest) -> Reply | _Drop:
        body = self._body(request)
        found = self._check_common(body)
        messages = body.get("messages", [])
        if not isinstance(messages, list):
            raise _BadRequest("json: cannot unmarshal into Go struct field ChatRequest.messages")
        images: list[np.ndarray] = []
        words = 0
        for m in messages:
            if not isinstance(m, dict) or not isinstance(m.get("role", ""), str):
                raise _BadRequest("json: cannot unmarshal into Go struct field ChatRequest.messages"
                                  " of type api.Message")
            if not isinstance(m.get("content", ""), str):
                raise _BadRequest("json: cannot unmarshal array into Go struct field"
                                  " Message.messages.content of type string")
            words += len(str(m.get("content", "")).split())
            images += self._images(m.get("images"), found)
        if not messages:
            return Reply.json({"model": body["model"], "created_at": _now(),
                               "message": {"role": "assistant", "content": ""}, "done": True, "done_reason": "load"})
        return self._answer_with(body, images, words, chat=True)

    async def _generate(self, request: RecordedRequest) -> Reply | _Drop:
        body = self._body(request)
        found = self._check_common(body)
        prompt = body.get("prompt", "")
        if not isinstance(prompt, str):
            raise _BadRequest("json: cannot unmarshal into Go struct field GenerateRequest.prompt of type string")
        images = self._images(body.get("images"), found)
        return self._answer_with(body, images, len(prompt.split()), chat=False)

    def _answer_with(self, body: dict[str, Any], images: list[np.ndarray], words: int, *, chat: bool) -> Reply:
        self.images += images
        text = self.reply if isinstance(self.reply, str) else self.reply(body, images, [])
        fmt = body.get("format")
        if fmt and not _is_json(text):
            text = json.dumps(instance_for_schema(fmt, text) if isinstance(fmt, dict) else {"response": text})
        pieces = tokens(text)
        thoughts = tokens("Let me look at the picture carefully.") if body.get("think") else []
        done_reason = "stop"
        limit = (body.get("options") or {}).get("num_predict")
        if isinstance(limit, int) and 0 < limit < len(pieces):
            pieces, done_reason = pieces[:limit], "length"
        prompt_tokens = words + 2 + IMAGE_TOKENS * len(images)
        started = time.monotonic_ns()

        def chunk(content: str, thinking: str = "") -> dict[str, Any]:
            base: dict[str, Any] = {"model": body["model"], "created_at": _now()}
            if chat:
                base["message"] = {"role": "assistant", "content": content}
                if thinking:
                    base["message"]["thinking"] = thinking
            else:
                base["response"] = content
                if thinking:
                    base["thinking"] = thinking
            base["done"] = False
            return base

        def final() -> dict[str, Any]:
            last = chunk("")
            eval_ns = self.eval_duration_per_token_ns * len(pieces)
            last.update(done=True, done_reason=done_reason,
                        total_duration=max(time.monotonic_ns() - started, 1) + self.load_duration_ns,
                        load_duration=self.load_duration_ns, prompt_eval_count=prompt_tokens,
                        prompt_eval_duration=self.prompt_eval_duration_ns, eval_count=len(pieces),
                        eval_duration=eval_ns)
            if not chat:
                last["context"] = [1, 2, 3]
            return last

        if body.get("stream", True) is False:
            if self.stream_error_after is not None:
                return self.error(self.stream_error, 500)
            whole = final()
            if chat:
                whole["message"]["content"] = "".join(pieces)
                if thoughts:
                    whole["message"]["thinking"] = "".join(thoughts)
            else:
                whole["response"] = "".join(pieces)
                if thoughts:
                    whole["thinking"] = "".join(thoughts)
            return Reply.json(whole)

        async def lines() -> AsyncIterator[bytes | _Drop]:
            for thought in thoughts:
                yield _compact(chunk("", thought)) + b"\n"
            for i, piece in enumerate(pieces):
                if i and self.token_delay:
                    await asyncio.sleep(self.token_delay)
                if self.drop_after is not None and i >= self.drop_after:
                    yield DROP
                    return
                if self.stream_error_after is not None and i >= self.stream_error_after:
                    yield _compact({"error": self.stream_error}) + b"\n"
                    return
                yield _compact(chunk(piece)) + b"\n"
            yield _compact(final()) + b"\n"

        return Reply(200, {"Content-Type": "application/x-ndjson"}, stream=lines())


def _compact(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="A fake Ollama server for tests and benchmarks")
    parser.add_argument("--port", type=int, default=11434)
    parser.add_argument("--delay", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--token-delay", type=float, default=0.0)
    parser.add_argument("--model", action="append", default=[], help="installed vision model (repeatable)")
    parser.add_argument("--reply", help="answer every chat with this text")
    args = parser.parse_args()
    models = {(m if ":" in m else f"{m}:latest"): ["completion", "vision"] for m in args.model} or None
    extra = {"reply": args.reply} if args.reply is not None else {}
    server = FakeOllama(models=models, token_delay=args.token_delay, port=args.port, delay=args.delay, **extra)
    serve_forever(server, "fake Ollama")


if __name__ == "__main__":
    main()
