"""The aiohttp-based httpx transport: httpx's API, and aiohttp's errors as the right httpx exceptions."""

from __future__ import annotations

import asyncio
import gzip
import socket
import threading
from collections.abc import Iterator

import aiohttp
import httpx
import pytest
from fakes import FakeOpenAI, unused_url

from framelens.plugins.vlm.transport import AiohttpTransport, map_error


class RawServer:
    """Accepts connections on 127.0.0.1 and answers each with ``script`` bytes, then acts per ``then``."""

    def __init__(self, script: bytes, then: str = "close", pause: float = 0.0) -> None:
        self.script, self.then, self.pause = script, then, pause
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        self.sock.settimeout(0.1)
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            conn.recv(65536)
            conn.sendall(self.script)
            if self.then == "hang":
                self._stop.wait(5)
            elif self.then == "reset":
                conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for s in servers:
        s.close()


async def get(url: str, *, read: float = 5.0) -> httpx.Response:
    async with httpx.AsyncClient(transport=AiohttpTransport(), timeout=httpx.Timeout(read, connect=2)) as client:
        response = await client.get(url)
        await response.aread()
        return response


def test_answers_headers_streaming_and_gzip_keep_httpx_semantics() -> None:
    with FakeOpenAI(models=["m"], token_delay=0.01) as server:
        async def go() -> tuple[httpx.Response, list[str]]:
            async with httpx.AsyncClient(transport=AiohttpTransport()) as client:
                models = await client.get(server.base_url + "/models")
                await models.aread()
                lines = []
                async with client.stream("POST", server.base_url + "/chat/completions", json={
                        "model": "m", "stream": True, "messages": [{"role": "user", "content": "Hi there"}]}) as r:
                    async for line in r.aiter_lines():
                        lines.append(line)
                for _ in range(5):
                    (await client.get(server.base_url + "/models")).raise_for_status()
                return models, lines

        models, lines = asyncio.run(go())
        assert models.status_code == 200 and models.json()["data"][0]["id"] == "m"
        assert models.headers["content-type"].startswith("application/json")
        assert models.request.url == server.base_url + "/models"
        assert "data: [DONE]" in lines
        assert sum(1 for line in lines if line.startswith("data: {")) >= 2


def test_gzip_bodies_are_decoded_by_httpx(raw: list[RawServer]) -> None:
    body = gzip.compress(b'{"ok": true}')
    raw.append(RawServer(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                         b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body))
    assert asyncio.run(get(raw[0].url)).json() == {"ok": True}


def test_connection_refused_is_a_connect_error() -> None:
    with pytest.raises(httpx.ConnectError):
        asyncio.run(get(unused_url()))


def test_a_connection_closed_before_the_answer_is_a_protocol_error_not_a_timeout(raw: list[RawServer]) -> None:
    raw.append(RawServer(b""))
    with pytest.raises(httpx.TransportError) as err:
        asyncio.run(get(raw[0].url))
    assert isinstance(err.value, (httpx.RemoteProtocolError, httpx.ReadError))
    assert not isinstance(err.value, httpx.TimeoutException)


def test_a_body_cut_short_is_a_protocol_error(raw: list[RawServer]) -> None:
    raw.append(RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part"))
    with pytest.raises(httpx.TransportError) as err:
        asyncio.run(get(raw[0].url))
    assert isinstance(err.value, (httpx.RemoteProtocolError, httpx.ReadError))
    assert not isinstance(err.value, httpx.TimeoutException)


def test_a_silent_server_is_a_read_timeout(raw: list[RawServer]) -> None:
    raw.append(RawServer(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", then="hang"))
    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(get(raw[0].url, read=0.3))


def test_garbage_is_a_protocol_error(raw: list[RawServer]) -> None:
    raw.append(RawServer(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"))
    with pytest.raises(httpx.RemoteProtocolError):
        asyncio.run(get(raw[0].url))


def test_error_mapping_table() -> None:
    request = httpx.Request("GET", "http://x/")
    assert isinstance(map_error(aiohttp.ConnectionTimeoutError(), request, sent=False), httpx.ConnectTimeout)
    assert isinstance(map_error(aiohttp.SocketTimeoutError(), request, sent=True), httpx.ReadTimeout)
    assert isinstance(map_error(aiohttp.ServerDisconnectedError(), request, sent=True), httpx.RemoteProtocolError)
    assert isinstance(map_error(aiohttp.ClientPayloadError("cut"), request, sent=True), httpx.RemoteProtocolError)
    assert isinstance(map_error(ConnectionResetError(104, "reset"), request, sent=True), httpx.ReadError)
    assert isinstance(map_error(BrokenPipeError(32, "pipe"), request, sent=False), httpx.WriteError)
