"""The example third-party plugin (docs/example-plugin), installed as a real distribution.

It ships a processor, a VLM backend and an HTTP route, and framelens serves all three
without any change: ``-p grayscale``, ``-p describe -c describe-backend=brightness``,
``serve --backend brightness`` and ``GET /v1/grayscale``.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
from helpers import free_port, run_cli


@contextmanager
def serve(site: Path, *args: str) -> Iterator[str]:
    """``framelens serve ARGS`` with the plugin on the path; yields the base URL once it answers."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(site), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "framelens", "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.communicate()[1]
            try:
                if httpx.get(base + "/openapi.json", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "framelens serve did not answer within 30 s"
            time.sleep(0.1)
        yield base
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=20)
        assert proc.returncode == 0, err


def test_describe_works_on_a_third_party_backend(example_plugin: Path) -> None:
    done = run_cli(["run", "-s", "testpattern", "-c", "testpattern-fps=60", "--max-frames", "60",
                    "-p", "describe", "-c", "describe-backend=brightness", "-p", "captions", "-o", "none",
                    "--events", "-"], env={"PYTHONPATH": str(example_plugin)})
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    texts = [e["payload"]["text"] for e in events if e["type"] == "description"]
    assert texts and texts[0].startswith("The image is ") and "/255)." in texts[0]
    assert {e["payload"]["model"] for e in events if e["type"] == "description"} == {"brightness-1"}


def test_unknown_describe_backend_names_the_option(example_plugin: Path) -> None:
    done = run_cli(["run", "-s", "testpattern", "-p", "describe", "-c", "describe-backend=brightnes", "-o", "none"],
                   env={"PYTHONPATH": str(example_plugin)})
    assert done.returncode == 2
    assert "describe-backend=brightnes" in done.stderr and "did you mean brightness" in done.stderr


def test_serve_answers_with_a_third_party_backend_and_mounts_its_route(example_plugin: Path) -> None:
    with serve(example_plugin, "-s", "testpattern", "-p", "grayscale", "--backend", "brightness") as base:
        client = openai.OpenAI(base_url=base + "/v1", api_key="unused")
        answer = client.chat.completions.create(model="brightness-1", messages=[{"role": "user", "content": [
            {"type": "text", "text": "How bright is it?"},
            {"type": "image_url", "image_url": {"url": "stream://main"}}]}])
        assert (answer.choices[0].message.content or "").startswith("The image is ")
        chunks = client.chat.completions.create(model="brightness-1", stream=True, messages=[
            {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "stream://main"}}]}])
        streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert streamed.startswith("The image is ")
        deadline = time.monotonic() + 10
        while (stats := httpx.get(base + "/v1/grayscale")).status_code == 409 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert stats.status_code == 200 and stats.json()["frames"] > 0
        assert 0 <= stats.json()["last_mean"] <= 255
        assert "/v1/grayscale" in httpx.get(base + "/openapi.json").json()["paths"]


def test_a_plugins_route_is_not_served_when_the_plugin_is_not_in_the_run(example_plugin: Path) -> None:
    with serve(example_plugin, "-s", "testpattern", "--backend", "ollama") as base:
        r = httpx.get(base + "/v1/grayscale")
        assert r.status_code == 404
        error = r.json()["error"]
        assert error["code"] == "plugin_not_enabled" and "-p grayscale" in error["message"]
        assert "/v1/grayscale" not in httpx.get(base + "/openapi.json").json()["paths"]
