"""The local backend end to end: the real CLI, the real server with the official openai SDK, alerts."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from helpers import ROOT, free_port, run_cli, wait_ready
from local_vlm_helpers import image

from framelens import encode_jpeg

pytestmark = pytest.mark.slow


def test_framelens_list_does_not_import_torch() -> None:
    code = ("import sys, runpy; sys.argv = ['framelens', 'list']; "
            "import contextlib, io\n"
            "with contextlib.redirect_stdout(io.StringIO()) as out:\n"
            "    try: runpy.run_module('framelens', run_name='__main__')\n"
            "    except SystemExit: pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'onnxruntime'))\n"
            "print(heavy, 'processor local' in out.getvalue())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[] True"


def test_describer_on_the_local_backend_from_the_cli(tiny_dirs: dict[str, Path]) -> None:
    done = run_cli(["run", "-s", "testpattern", "--fps", "30", "--max-frames", "60", "-p", "local",
                    "-c", f"local-model={tiny_dirs['llava']}", "-c", "local-max-tokens=8",
                    "-c", "local-max-context=256", "-p", "captions", "-o", "none", "--events", "-", "--benchmark"],
                   timeout=90)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    described = [e for e in lines if e.get("type") == "description" and not e["payload"].get("partial")]
    assert described, done.stderr
    assert all(d["payload"]["model"] == str(tiny_dirs["llava"]) and d["payload"]["text"] for d in described)
    assert described[0]["payload"]["usage"]["prompt_tokens"] > 16
    report = next(e for e in lines if "fps" in e and "type" not in e)  # the --benchmark line
    # the video is not held up by the engine (a frame or two may go on a busy 2-core box)
    assert report["frames"] == 60 and report["dropped"] <= 6


def test_bad_model_is_one_line_exit_2(tmp_path: Path) -> None:
    done = run_cli(["run", "-s", "testpattern", "--max-frames", "5", "-p", "local",
                    "-c", f"local-model={tmp_path}", "-o", "none"], timeout=60)
    assert done.returncode == 2
    assert "no config.json" in done.stderr and "Traceback" not in done.stderr


def test_alerts_on_the_local_backend(tiny_dirs: dict[str, Path]) -> None:
    done = run_cli(["run", "-s", "testpattern", "--fps", "20", "--max-frames", "40", "-p", "alerts",
                    "-c", "alerts-backend=local", "-c", f"local-model={tiny_dirs['gemma3']}",
                    "-c", "local-max-context=256", "-c", "alerts-rules=Is there smoke?;Is a person on the floor?",
                    "-c", "alerts-interval=0", "-c", "alerts-snapshot=none", "-o", "none", "--events", "-"],
                   timeout=90)
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")]
    alerts = [e["payload"] for e in lines if e.get("type") == "alert"]
    assert {a["rule"] for a in alerts} == {"r0", "r1"}
    assert all(a["mode"] == "choices" for a in alerts)
    assert all(a["state"] in ("on", "off") for a in alerts)


@pytest.fixture(scope="module")
def local_server(tiny_dirs: dict[str, Path]) -> object:
    port = free_port()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "framelens", "serve", "--port", str(port), "--backend", "local",
                             "-c", f"local-model={tiny_dirs['llava']}", "-c", "local-max-context=256",
                             "-c", "local-max-tokens=12"], cwd=ROOT, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, timeout=60)
        yield url
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0


def test_serve_local_through_the_openai_sdk(local_server: str, tiny_dirs: dict[str, Path]) -> None:
    client = openai.OpenAI(base_url=f"{local_server}/v1", api_key="unused", max_retries=0, timeout=60)
    model = str(tiny_dirs["llava"])
    assert [m.id for m in client.models.list().data] == [model]
    plain = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hello"}],
                                           max_tokens=6)
    assert plain.choices[0].message.content and plain.usage is not None and plain.usage.completion_tokens >= 1
    pieces = [c.choices[0].delta.content or "" for c in client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=6, stream=True) if c.choices]
    assert "".join(pieces) == plain.choices[0].message.content
    url = "data:image/jpeg;base64," + base64.b64encode(encode_jpeg(image(30), 90)).decode()
    with_image = client.chat.completions.create(model=model, max_tokens=6, messages=[{"role": "user", "content": [
        {"type": "text", "text": "describe the picture"}, {"type": "image_url", "image_url": {"url": url}}]}])
    assert with_image.usage is not None and with_image.usage.prompt_tokens > plain.usage.prompt_tokens + 10
    opened = httpx.post(f"{local_server}/v1/streams", json={"url": "testpattern"}, timeout=30)
    assert opened.status_code == 201, opened.text
    live = client.chat.completions.create(model=model, max_tokens=6, messages=[{"role": "user", "content": [
        {"type": "text", "text": "describe the picture"},
        {"type": "image_url", "image_url": {"url": "stream://testpattern"}}]}])
    assert live.usage is not None and live.usage.prompt_tokens == with_image.usage.prompt_tokens
    native = httpx.post(f"{local_server}/api/chat", timeout=60, json={
        "model": model, "stream": False, "options": {"num_predict": 5},
        "messages": [{"role": "user", "content": "describe the picture",
                      "images": [base64.b64encode(encode_jpeg(image(31), 90)).decode()]}]})
    assert native.status_code == 200, native.text
    assert native.json()["message"]["content"] and native.json()["eval_count"] >= 1
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="someone/else", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=model, messages=[{"role": "user", "content": "car " * 400}])
    assert "context" in str(info.value)
