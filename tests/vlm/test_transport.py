"""The backends' httpx transport: httpx's API, keep-alive, limits, TLS, and failures as the right httpx exceptions."""

from __future__ import annotations

import asyncio
import gzip
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fakes import FakeOpenAI, unused_url

from framelens.plugins.vlm.transport import HttpTransport, iter_lines, read_body

OK = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 11\r\n\r\n{\"ok\":true}"


def _read_request(conn: socket.socket, pending: bytearray) -> bytes | None:
    """One request (head and Content-Length body) off a keep-alive connection; None when the client hung up."""
    while b"\r\n\r\n" not in pending:
        data = conn.recv(65536)
        if not data:
            return None
        pending += data
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                   if line.lower().startswith(b"content-length:")), 0)
    while len(rest) < length:
        rest += conn.recv(65536)
    pending[:] = rest[length:]
    return head + b"\r\n\r\n" + rest[:length]


class RawServer:
    """Accepts connections on 127.0.0.1 (or TLS with ``tls``) and answers their requests.

    ``answer(n)`` gives the bytes for the server's n-th request (from 0), or a list of
    pieces sent 20 ms apart, and what to do next: ``"keep"`` (read the next request),
    ``"close"``, ``"hang"`` or ``"reset"``.
    """

    def __init__(self, answer: Callable[[int], tuple[bytes | list[bytes], str]],
                 tls: ssl.SSLContext | None = None) -> None:
        self.answer, self.tls = answer, tls
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = self.sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.connections = 0
        self.requests: list[bytes] = []
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

    def _handle(self, raw: socket.socket) -> None:
        conn = raw
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(raw, server_side=True)
        except (ssl.SSLError, OSError):
            raw.close()
            return
        with conn:
            pending = bytearray()
            while (request := _read_request(conn, pending)) is not None:
                self.requests.append(request)
                script, then = self.answer(len(self.requests) - 1)
                for piece in script if isinstance(script, list) else [script]:
                    conn.sendall(piece)
                    if isinstance(script, list):
                        self._stop.wait(0.02)  # pieces arrive apart
                if then == "hang":
                    self._stop.wait(5)
                elif then == "reset":
                    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                if then != "keep":
                    return

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close()


@pytest.fixture
def raw() -> Iterator[Callable[..., RawServer]]:
    servers: list[RawServer] = []

    def make(answer: Callable[[int], tuple[bytes | list[bytes], str]] | bytes | list[bytes], then: str = "close",
             tls: ssl.SSLContext | None = None) -> RawServer:
        script = answer
        server = RawServer(script if callable(script) else (lambda n: (script, then)), tls)
        servers.append(server)
        return server

    yield make
    for s in servers:
        s.close()


async def get(url: str, *, read: float = 5.0, method: str = "GET") -> httpx.Response:
    async with httpx.AsyncClient(transport=HttpTransport(), timeout=httpx.Timeout(read, connect=2)) as client:
        response = await client.request(method, url)
        await response.aread()
        return response


def test_answers_headers_streaming_and_reuse_keep_httpx_semantics() -> None:
    with FakeOpenAI(models=["m"], token_delay=0.01) as server:
        async def go() -> tuple[httpx.Response, list[str]]:
            async with httpx.AsyncClient(transport=HttpTransport()) as client:
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
        assert models.reason_phrase == "OK"
        assert models.request.url == server.base_url + "/models"
        assert "data: [DONE]" in lines
        assert sum(1 for line in lines if line.startswith("data: {")) >= 2
        chat = server.requests_to("/v1/chat/completions")[-1]
        assert chat.json()["messages"][0]["content"] == "Hi there"


def test_one_connection_serves_requests_one_after_another(raw: Callable[..., RawServer]) -> None:
    server = raw(lambda n: (OK, "keep"))

    async def go() -> list[object]:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            return [(await client.post(server.url + "/x", json={"n": i})).json() for i in range(5)]

    assert asyncio.run(go()) == [{"ok": True}] * 5
    assert server.connections == 1 and len(server.requests) == 5
    assert server.requests[3].endswith(b'{"n":3}') and b"content-length: 7" in server.requests[3].lower()


def test_idle_connections_are_closed_after_the_keepalive_expiry(raw: Callable[..., RawServer]) -> None:
    server = raw(lambda n: (OK, "keep"))

    async def go() -> tuple[int, int]:
        transport = HttpTransport(keepalive_expiry=0.2)
        async with httpx.AsyncClient(transport=transport) as client:
            await client.get(server.url)
            await client.get(server.url)  # within the expiry: the same connection
            await asyncio.sleep(0.5)  # the sweep closes it
            idle_after_sweep = sum(len(idle) for idle in transport._idle.values())
            await client.get(server.url)
            return idle_after_sweep, server.connections

    assert asyncio.run(go()) == (0, 2)


def test_a_kept_alive_connection_the_server_closed_is_replaced_without_an_error(raw: Callable[..., RawServer]) -> None:
    server = raw(lambda n: (OK, "close"))  # answers one request per connection, then hangs up

    async def go() -> list[int]:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            codes = []
            for _ in range(3):
                codes.append((await client.get(server.url)).status_code)
                await asyncio.sleep(0.05)  # the close reaches the idle connection first
            return codes

    assert asyncio.run(go()) == [200, 200, 200]
    assert server.connections == 3


def test_a_close_that_races_the_request_is_retried_once_on_a_fresh_connection(raw: Callable[..., RawServer]) -> None:
    # keep-alive announced, yet the connection is dropped after the answer, with no pause before the next request
    server = raw(lambda n: (OK, "close"))

    async def go() -> list[int]:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            return [(await client.get(server.url)).status_code for _ in range(4)]

    assert asyncio.run(go()) == [200] * 4
    assert len(server.requests) == 4


def test_chunked_and_until_close_bodies_and_an_interim_answer(raw: Callable[..., RawServer]) -> None:
    chunked = raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
    until_close = raw(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
    interim = raw(b"HTTP/1.1 100 Continue\r\n\r\n" + OK)
    assert asyncio.run(get(chunked.url)).text == "hello world"
    assert asyncio.run(get(until_close.url)).text == "all of it"
    answer = asyncio.run(get(interim.url))
    assert answer.status_code == 200 and answer.json() == {"ok": True}


@pytest.mark.parametrize("pieces", [
    [b"data: one\n\ndata: two\n\n", b"data: [DONE]\n\n"],
    [b"data: a\r", b"\ndata: b\r\n\r\n", b"da", b"ta: c\rdata: d\n", b"tail without end"],
    ["data: caf\u00e9 \u2603\n".encode()[:13], "data: caf\u00e9 \u2603\n".encode()[13:], b"\r"],
    [b"\n\n\r\r\n", b"x"],
])
def test_iter_lines_splits_as_httpx_does(raw: Callable[..., RawServer], pieces: list[bytes]) -> None:
    server = raw([b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n",
                  *(b"%x\r\n%s\r\n" % (len(p), p) for p in pieces), b"0\r\n\r\n"])

    async def go() -> list[str]:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            async with client.stream("GET", server.url) as response:
                return [line async for line in iter_lines(response)]

    assert asyncio.run(go()) == list(httpx.Response(200, content=b"".join(pieces)).iter_lines())


def test_head_answers_end_at_their_headers(raw: Callable[..., RawServer]) -> None:
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 500\r\n\r\n", then="hang")
    answer = asyncio.run(get(server.url, method="HEAD", read=3))
    assert answer.status_code == 200 and answer.content == b""


def test_a_large_body_streams_whole_through_flow_control(raw: Callable[..., RawServer]) -> None:
    body = bytes(range(256)) * 8192  # 2 MiB, more than the transport buffers before it pauses reading
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(body) + body)

    async def go() -> tuple[bytes, int]:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            async with client.stream("GET", server.url) as response:
                parts = []
                async for part in response.aiter_raw():
                    parts.append(part)
                    await asyncio.sleep(0.001)  # a slow reader
                return b"".join(parts), len(parts)

    got, parts = asyncio.run(go())
    assert got == body and parts > 1


def test_a_body_left_unread_closes_its_connection(raw: Callable[..., RawServer]) -> None:
    server = raw(lambda n: (b"HTTP/1.1 200 OK\r\nContent-Length: 100000\r\n\r\n" + b"x" * 1000, "hang")
                 if n == 0 else (OK, "keep"))

    async def go() -> int:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            async with client.stream("GET", server.url) as response:
                assert response.status_code == 200
            return (await client.get(server.url)).status_code

    assert asyncio.run(go()) == 200
    assert server.connections == 2


def test_the_connection_limit_queues_requests_and_pool_timeout_ends_the_wait(raw: Callable[..., RawServer]) -> None:
    slow = raw(lambda n: (OK, "keep"))

    async def go() -> tuple[list[int], type[BaseException]]:
        transport = HttpTransport(max_connections=1)
        async with httpx.AsyncClient(transport=transport) as client:
            codes = [r.status_code for r in await asyncio.gather(*(client.get(slow.url) for _ in range(4)))]
            async with client.stream("GET", slow.url):  # holds the one connection
                try:
                    await client.get(slow.url, timeout=httpx.Timeout(5, pool=0.2))
                except httpx.HTTPError as exc:
                    return codes, type(exc)
        return codes, type(None)  # type: ignore[return-value]

    codes, error = asyncio.run(go())
    assert codes == [200] * 4 and slow.connections == 1
    assert error is httpx.PoolTimeout


def test_gzip_bodies_are_decoded_by_httpx(raw: Callable[..., RawServer]) -> None:
    body = gzip.compress(b'{"ok": true}')
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
                 b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    assert asyncio.run(get(server.url)).json() == {"ok": True}

    async def raw_bytes() -> bytes:
        async with httpx.AsyncClient(transport=HttpTransport()) as client:
            async with client.stream("GET", server.url) as response:
                return await read_body(response)

    assert asyncio.run(raw_bytes()) == b'{"ok": true}'  # read_body leaves encoded bodies to httpx, which decodes


def test_connection_refused_is_a_connect_error() -> None:
    with pytest.raises(httpx.ConnectError):
        asyncio.run(get(unused_url()))


def test_a_connection_closed_before_the_answer_is_a_protocol_error_not_a_timeout(
        raw: Callable[..., RawServer]) -> None:
    server = raw(b"")
    with pytest.raises(httpx.TransportError) as err:
        asyncio.run(get(server.url))
    assert isinstance(err.value, (httpx.RemoteProtocolError, httpx.ReadError))
    assert not isinstance(err.value, httpx.TimeoutException)
    assert len(server.requests) == 1  # a fresh connection is not retried


def test_a_reset_connection_is_a_read_error(raw: Callable[..., RawServer]) -> None:
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npart", then="reset")
    with pytest.raises(httpx.TransportError) as err:
        asyncio.run(get(server.url))
    assert isinstance(err.value, (httpx.RemoteProtocolError, httpx.ReadError))


def test_a_body_cut_short_is_a_protocol_error(raw: Callable[..., RawServer]) -> None:
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part")
    with pytest.raises(httpx.TransportError) as err:
        asyncio.run(get(server.url))
    assert isinstance(err.value, (httpx.RemoteProtocolError, httpx.ReadError))
    assert not isinstance(err.value, httpx.TimeoutException)
    assert "mid-answer" in str(err.value)


def test_a_silent_server_is_a_read_timeout(raw: Callable[..., RawServer]) -> None:
    server = raw(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", then="hang")
    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(get(server.url, read=0.3))
    silent_head = raw(b"", then="hang")
    with pytest.raises(httpx.ReadTimeout):
        asyncio.run(get(silent_head.url, read=0.3))


def test_garbage_is_a_protocol_error(raw: Callable[..., RawServer]) -> None:
    server = raw(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    with pytest.raises(httpx.RemoteProtocolError, match="malformed"):
        asyncio.run(get(server.url))


def test_an_unsupported_scheme_is_refused() -> None:
    with pytest.raises(httpx.UnsupportedProtocol):
        asyncio.run(get("ftp://127.0.0.1/"))


@pytest.fixture
def certificate(tmp_path: Path) -> tuple[Path, Path]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate (.ci/setup installs it)")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True)
    return cert, key


def test_https_is_verified_with_the_servers_name(raw: Callable[..., RawServer], certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)
    server = raw(lambda n: (OK, "keep"), tls=tls)
    url = f"https://localhost:{server.port}/secure"

    async def trusted() -> list[int]:
        async with httpx.AsyncClient(transport=HttpTransport(ssl_context=ssl.create_default_context(cafile=cert))) as c:
            return [(await c.get(url)).status_code for _ in range(3)]

    assert asyncio.run(trusted()) == [200, 200, 200]
    assert server.connections == 1
    with pytest.raises(httpx.ConnectError, match="certificate"):
        asyncio.run(get(url))  # httpx's default roots do not trust a self-signed certificate
