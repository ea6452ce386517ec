"""``framelens serve`` (added by the http plugin): which backend answers the API and the run."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest
from helpers import free_port

# A framelens command line in a fresh process, with two fake backends registered by name.
SCRIPT = """
import sys
from framelens.cli import main
from framelens.testing import FakeBackend, backend_registered
with backend_registered("fake2", FakeBackend("from fake2", models=["f2"])), \\
        backend_registered("fake3", FakeBackend("from fake3", models=["f3"])):
    sys.exit(main(sys.argv[1:]))
"""


def serve(*args: str) -> tuple[subprocess.Popen[str], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, "serve", "--port", str(port), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()[1]
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, "framelens serve did not answer within 30 s"
        time.sleep(0.1)


def stop(proc: subprocess.Popen[str]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


@pytest.mark.parametrize("args", [["--backend", "fake2"], ["-c", "http-backend=fake2"]],
                         ids=["--backend", "-c http-backend"])
def test_the_api_and_the_run_use_the_same_backend(args: list[str]) -> None:
    proc, url = serve(*args, "-p", "alerts")
    try:
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["f2"]
        reply = httpx.post(url + "/v1/chat/completions", json={"messages": [{"role": "user", "content": "hi"}]})
        assert reply.status_code == 200, reply.text
        assert reply.json()["choices"][0]["message"]["content"] == "from fake2"
        assert httpx.get(url + "/v1/alerts").json()["backend"] == "fake2", "-p alerts follows the API's backend"
    finally:
        stop(proc)


def test_an_explicit_http_backend_wins_over_backend() -> None:
    proc, url = serve("--backend", "fake2", "-c", "http-backend=fake3", "-p", "alerts")
    try:
        assert [m["id"] for m in httpx.get(url + "/v1/models").json()["data"]] == ["f3"]
        assert httpx.get(url + "/v1/alerts").json()["backend"] == "fake2", "--backend stays the run's backend"
    finally:
        stop(proc)
