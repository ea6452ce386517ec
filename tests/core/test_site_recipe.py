"""Past one machine: three framelens processes (camera groups), one MQTT broker, a pool of two VLM servers.

The recipe of docs/deployment.md, run for real on 127.0.0.1: one VLM server and one
framelens process are killed; every surviving camera keeps publishing descriptions on
the broker, and the dead process shows as offline on its availability topic.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
from alerts_helpers import Broker, mosquitto, wait_for  # noqa: F401
from fakes import FakeOllama
from mqtt_helpers import Listener

GROUPS = {"g1": ("g1-door", "g1-yard"), "g2": ("g2-door", "g2-yard"), "g3": ("g3-door", "g3-yard")}


def _start_group(node: str, cameras: tuple[str, ...], port: int, urls: str) -> subprocess.Popen[str]:
    argv = [sys.executable, "-m", "framelens", "run"]
    for camera in cameras:
        argv += ["-s", f"{camera}=testpattern"]
    argv += ["-p", "ollama", "-c", f"ollama-url={urls}", "-c", "ollama-stream=false", "-c", "ollama-interval=0.3",
             "-c", "ollama-timeout=5", "-c", "ollama-max-side=160",
             "-p", "mqtt", "-c", f"mqtt-url=mqtt://127.0.0.1:{port}/site", "-c", f"mqtt-node={node}",
             "-c", "mqtt-keepalive=5",
             "-c", "testpattern-fps=5", "-c", "testpattern-width=160", "-c", "testpattern-height=120", "-o", "none"]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.fixture
def vlm_pool() -> Iterator[tuple[FakeOllama, FakeOllama]]:
    with FakeOllama(delay=0.05) as one, FakeOllama(delay=0.05) as two:
        yield one, two


def _descriptions(listener: Listener, camera: str, after: int = 0) -> list[dict[str, object]]:
    with listener._lock:
        messages = listener.messages[after:]
    return [json.loads(m[1]) for m in messages if m[0] == f"site/{camera}/description" and m[1]]


def test_three_camera_groups_survive_a_dead_vlm_server_and_a_dead_process(
        mosquitto: Broker, vlm_pool: tuple[FakeOllama, FakeOllama]) -> None:  # noqa: F811
    one, two = vlm_pool
    urls = f"{one.url},{two.url}"
    procs: dict[str, subprocess.Popen[str]] = {}
    with Listener(mosquitto.port, "site/#") as listener:
        try:
            for node, cameras in GROUPS.items():
                procs[node] = _start_group(node, cameras, mosquitto.port, urls)
            every = [c for cameras in GROUPS.values() for c in cameras]
            assert wait_for(lambda: all(_descriptions(listener, c) for c in every)
                            or any(p.poll() is not None for p in procs.values()), timeout=30)
            exited = {n: (p.returncode, p.stderr.read() if p.stderr else "")
                      for n, p in procs.items() if p.poll() is not None}
            assert not exited, exited
            assert all(_descriptions(listener, c) for c in every), {c: len(_descriptions(listener, c)) for c in every}
            for node in GROUPS:
                assert listener.on(f"site/_nodes/{node}/availability")[-1][1] == b"online"
            assert one.requests_to("/api/chat") and two.requests_to("/api/chat"), "the pool spreads the load"

            # One VLM server and one camera group die.
            one.stop()
            procs["g3"].send_signal(signal.SIGKILL)
            procs["g3"].wait(10)
            mark = len(listener.messages)
            served_before = len(two.requests_to("/api/chat"))
            killed_at = time.monotonic()

            survivors = [c for node in ("g1", "g2") for c in GROUPS[node]]
            assert wait_for(lambda: all(len(_descriptions(listener, c, mark)) >= 2 for c in survivors),
                            timeout=20), {c: len(_descriptions(listener, c, mark)) for c in survivors}
            assert wait_for(lambda: listener.on("site/_nodes/g3/availability")
                            and listener.on("site/_nodes/g3/availability")[-1][1] == b"offline", timeout=10)
            assert len(two.requests_to("/api/chat")) > served_before, "the surviving server took the load"
            # The dead group's cameras published nothing after its death (a grace for messages in flight).
            grace = len(listener.messages)
            time.sleep(1.0)
            assert not any(_descriptions(listener, c, grace) for c in GROUPS["g3"])
            assert time.monotonic() - killed_at < 35
            for node in ("g1", "g2"):
                assert procs[node].poll() is None, f"{node} is still running"
                assert listener.on(f"site/_nodes/{node}/availability")[-1][1] == b"online"
        finally:
            errors = {}
            for node, proc in procs.items():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)
                try:
                    _, err = proc.communicate(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    _, err = proc.communicate(timeout=5)
                errors[node] = err
        for node in ("g1", "g2"):
            assert procs[node].returncode == 0, errors[node]
            assert "Traceback" not in errors[node], errors[node]
