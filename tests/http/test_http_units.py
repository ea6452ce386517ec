"""Pure helpers of the ``http`` service: image headers, data URIs, video sampling, OpenAPI dialect, SSRF."""

from __future__ import annotations

import asyncio
import ipaddress

import cv2
import numpy as np
import pytest

from framelens.plugins.http.errors import ApiError
from framelens.plugins.http.fetch import is_public_address
from framelens.plugins.http.limiter import Limiter
from framelens.plugins.http.media import image_dimensions, parse_data_uri
from framelens.plugins.http.openapi import to_openapi30
from framelens.plugins.http.video import _Plan, sample_indices


@pytest.mark.parametrize("ext", [".png", ".jpg", ".webp"])
@pytest.mark.parametrize("size", [(1, 1), (37, 21), (640, 480)])
def test_image_dimensions_match_what_opencv_decodes(ext: str, size: tuple[int, int]) -> None:
    ok, buf = cv2.imencode(ext, np.zeros((size[1], size[0], 3), np.uint8))
    assert ok and image_dimensions(buf.tobytes()) == size


def test_image_dimensions_of_lossless_webp_and_garbage() -> None:
    ok, buf = cv2.imencode(".webp", np.zeros((30, 50, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 101])
    assert ok and image_dimensions(buf.tobytes()) == (50, 30)
    assert image_dimensions(b"\xff\xd8\xff\xe0\x00") is None
    assert image_dimensions(b"hello") is None


def test_data_uris() -> None:
    assert parse_data_uri("data:image/jpg;base64,aGk=", max_bytes=10, param="p") == ("image/jpeg", b"hi")
    assert parse_data_uri("data:;base64,aGk", max_bytes=10, param="p") == ("", b"hi")  # padding optional
    with pytest.raises(ApiError) as caught:
        parse_data_uri("data:image/png,raw", max_bytes=10, param="p")
    assert caught.value.status == 400 and caught.value.param == "p"
    with pytest.raises(ApiError) as caught:
        parse_data_uri("data:image/png;base64," + "A" * 100, max_bytes=10, param="p")
    assert caught.value.status == 413


def test_video_sampling_follows_nim_rules() -> None:
    assert sample_indices(30, 10.0, _Plan(2.0, None), default_fps=2.0, max_frames=32) == [0, 5, 10, 15, 20, 25]
    assert sample_indices(30, 10.0, _Plan(None, 4), default_fps=2.0, max_frames=32) == [0, 10, 19, 29]
    assert len(sample_indices(3000, 30.0, _Plan(None, None), default_fps=2.0, max_frames=8)) == 8
    for plan in (_Plan(None, 31), _Plan(11.0, None), _Plan(9.0, None)):
        with pytest.raises(ApiError):
            sample_indices(30, 10.0, plan, default_fps=2.0, max_frames=8)


def test_openapi30_dialect() -> None:
    schema = {"anyOf": [{"type": "integer", "exclusiveMinimum": 0}, {"type": "null"}], "const": None}
    assert to_openapi30({"properties": {"a": schema, "b": {"anyOf": [{"$ref": "#/x"}, {"type": "null"}]}}}) == {
        "properties": {"a": {"type": "integer", "minimum": 0, "exclusiveMinimum": True, "nullable": True,
                             "enum": [None]},
                       "b": {"allOf": [{"$ref": "#/x"}], "nullable": True}}}


@pytest.mark.parametrize(("address", "public"), [
    ("8.8.8.8", True), ("2606:4700:4700::1111", True), ("127.0.0.1", False), ("10.1.2.3", False),
    ("192.168.0.1", False), ("169.254.169.254", False), ("::1", False), ("fe80::1", False), ("0.0.0.0", False),
    ("::ffff:127.0.0.1", False), ("100.64.0.1", False), ("224.0.0.1", False),
])
def test_only_public_addresses_are_fetched_by_default(address: str, public: bool) -> None:
    assert is_public_address(ipaddress.ip_address(address)) is public


def test_limiter_caps_running_and_waiting() -> None:
    async def scenario() -> list[object]:
        limiter = Limiter(1, 1, 0.2)
        gate = asyncio.Event()

        async def job() -> str:
            async with limiter.slot():
                await gate.wait()
                return "ok"

        tasks = [asyncio.create_task(job()) for _ in range(3)]
        await asyncio.sleep(0.05)
        assert (limiter.running, limiter.waiting) == (1, 1)
        await asyncio.sleep(0.3)  # the waiter gives up after 0.2 s
        gate.set()
        return list(await asyncio.gather(*tasks, return_exceptions=True))

    results = asyncio.run(scenario())
    assert results[0] == "ok"
    assert [r.status for r in results[1:] if isinstance(r, ApiError)] == [429, 429]


def test_limiter_serves_waiters_in_order_and_passes_on_the_slot_of_one_that_gives_up() -> None:
    async def scenario() -> list[str]:
        limiter = Limiter(1, 10, 5)
        order: list[str] = []
        gate = asyncio.Event()

        async def job(name: str) -> None:
            async with limiter.slot():
                order.append(name)
                await gate.wait()

        first = asyncio.create_task(job("first"))
        await asyncio.sleep(0.01)
        waiters = [asyncio.create_task(job(n)) for n in ("a", "b", "c")]
        await asyncio.sleep(0.01)
        assert (limiter.running, limiter.waiting) == (1, 3)
        waiters[1].cancel()  # "b" leaves the queue
        await asyncio.sleep(0.01)
        assert (limiter.running, limiter.waiting) == (1, 2)
        gate.set()
        await asyncio.gather(first, waiters[0], waiters[2])
        assert (limiter.running, limiter.waiting) == (0, 0)
        async with limiter.slot():  # the slot came back
            assert limiter.running == 1
        return order

    assert asyncio.run(scenario()) == ["first", "a", "c"]


@pytest.mark.parametrize("include_usage", [False, True])
def test_chat_chunks_encoded_from_a_prefix_are_the_bytes_of_the_whole_event(include_usage: bool) -> None:
    from framelens.plugins.http.chat import _chunk_encoder, _sse

    cid, created, model = 'chatcmpl-"x"', 1700000000, "mödel/\u2028name"
    chunk = _chunk_encoder(cid, created, model, include_usage)
    for delta, finish in [({"role": "assistant", "content": ""}, None), ({"content": 'héllo "q"\n\x00 🙂'}, None),
                          ({"reasoning_content": "…"}, None), ({}, "stop"), ({}, "length")]:
        whole = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model,
                 "system_fingerprint": None,
                 "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
                 **({"usage": None} if include_usage else {})}
        assert chunk(delta, finish) == _sse(whole)
