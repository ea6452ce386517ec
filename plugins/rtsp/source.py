"""The ``rtsp`` source: IP cameras and RTSP servers through OpenCV's FFmpeg backend, low-latency."""

from __future__ import annotations

import socket
import ssl
import urllib.parse
from typing import Literal

from framelens import ConfigError, Context, Field, Options, SourceInfo
from framelens.opencv import FFmpegOptionString, FFmpegStreamSource

__all__ = ["RtspSource", "RtspSourceOptions", "ask_server", "describe_failure", "make_source"]


class RtspSourceOptions(Options):
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTP transport: tcp (interleaved in the RTSP "
                                             "connection; works through NAT, no loss) or udp (less overhead)")
    open_timeout: float = Field(5.0, gt=0, le=120, description="Seconds to wait for the camera to answer before "
                                "the attempt fails (it is then retried with backoff)")
    read_timeout: float = Field(5.0, gt=0, le=120, description="Seconds without a frame before the stream counts "
                                "as lost and is reconnected")
    low_latency: bool = Field(True, description="Open without probing the stream for a second (FFmpeg "
                              "probesize 32, fpsprobesize 0, flags low_delay): the first frame in well under a second")
    ffmpeg_options: FFmpegOptionString = Field(
        "", description="Extra FFmpeg options as key;value|key;value (they override the ones above), e.g. "
        "probesize;500000 for a camera whose stream description lacks the video parameters")



class RtspSource(FFmpegStreamSource):
    """Reads an RTSP stream. A dropped connection or a silent camera makes ``read`` raise
    :class:`~framelens.SourceError`, so the live capture reports ``lost`` and reconnects
    with backoff (``connected`` when the camera is back)."""

    live = True
    reconnect = True
    kind = "rtsp"

    def __init__(self, locator: str, options: RtspSourceOptions) -> None:
        super().__init__(locator)
        self.options = options
        parts = urllib.parse.urlsplit(locator)
        try:
            port = parts.port
        except ValueError:
            raise ConfigError(f"-s {self.describe()}: invalid port (expected 1-65535)") from None
        if not parts.hostname:
            raise ConfigError(f"-s {self.describe()}: no host in the RTSP URL")
        self.tls = parts.scheme.lower() == "rtsps"
        self.address = (parts.hostname, port or (322 if self.tls else 554))

    def base_ffmpeg_options(self) -> dict[str, str]:
        opts: dict[str, str] = {"rtsp_transport": self.options.transport}
        if self.options.low_latency:
            # FFmpeg normally reads about a second of packets (20 frames to guess the frame
            # rate) before the first frame comes out, then hands over that backlog. The SDP
            # already carries the stream parameters, so a 32-byte probe is enough.
            # Not fflags=nobuffer: it throws the probed packets away, and with them the key
            # frame, so the first picture would wait for the next key frame (seconds on
            # cameras with long GOPs).
            opts.update(probesize="32", fpsprobesize="0", flags="low_delay")
        return opts

    def open(self) -> SourceInfo:
        # OpenCV holds one process-wide lock for every FFmpeg open, so a host that accepts
        # the connection and never answers would stall the opens of every other camera for
        # its whole timeout. Asking the server ourselves first (one OPTIONS, in parallel
        # with any other open) keeps silent and non-RTSP hosts away from that lock.
        ready, reason = ask_server(self.locator, self.address, timeout=self.options.open_timeout, tls=self.tls,
                                   method="OPTIONS")
        if not ready:
            raise self.error(reason)
        return super().open()

    def _why_not_opened(self) -> str:
        return describe_failure(self.locator, self.address, timeout=min(self.options.open_timeout, 5.0),
                                tls=self.tls)


def describe_failure(url: str, address: tuple[str, int], *, timeout: float, tls: bool = False) -> str:
    """Why an RTSP URL would not open, asked of the server itself (OpenCV does not say):
    the connection error, or the status of a ``DESCRIBE`` (404, 401, ...)."""
    return ask_server(url, address, timeout=timeout, tls=tls)[1]


def ask_server(url: str, address: tuple[str, int], *, timeout: float, tls: bool = False,
               method: str = "DESCRIBE") -> tuple[bool, str]:
    """``(worth opening, reason)`` from one request (``DESCRIBE`` or ``OPTIONS``) sent to the server.

    Worth opening: the server answers in RTSP and either describes the stream
    (``OPTIONS``: answers at all) or wants credentials that the URL carries
    (FFmpeg answers the challenge). Otherwise the reason names what went wrong:
    the connection error, silence, not RTSP, or the status. ``OPTIONS`` is the
    cheap pre-flight: a ``DESCRIBE`` makes servers prepare the media, and closing
    right after it races with the real client's setup on some of them.
    """
    host, port = address
    parts = urllib.parse.urlsplit(url)
    # Credentials are not sent: a 401 is reported as such below.
    bare = urllib.parse.urlunsplit((parts.scheme, f"{host}:{port}", parts.path, parts.query, ""))
    accept = "Accept: application/sdp\r\n" if method == "DESCRIBE" else ""
    request = f"{method} {bare} RTSP/1.0\r\nCSeq: 1\r\n{accept}User-Agent: framelens\r\n\r\n".encode()
    try:
        with socket.create_connection(address, timeout=timeout) as raw:
            conn = raw
            if tls:
                # Only to read the status line: cameras use self-signed certificates, and
                # FFmpeg does not verify them either by default.
                ctx = ssl.create_default_context()
                ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
                conn = ctx.wrap_socket(raw, server_hostname=host)
            conn.sendall(request)
            status = conn.recv(1024).split(b"\r\n", 1)[0].decode("latin-1").strip()
    except TimeoutError:
        return False, f"{host}:{port} did not answer within {timeout:g} s"
    except ssl.SSLError as exc:
        return False, f"TLS with {host}:{port} failed ({exc.reason or exc})"
    except OSError as exc:
        return False, f"cannot connect to {host}:{port} ({(exc.strerror or type(exc).__name__).lower()})"
    if not status.startswith("RTSP/"):
        return False, f"{host}:{port} does not speak RTSP (it answered {status[:60]!r})"
    code = status.split(" ", 2)[1:]
    if code and code[0] == "401" and "@" in parts.netloc:
        return True, "the server refused the credentials (401 Unauthorized: check the user name and password)"
    if code and code[0] == "401":
        return False, ("the server wants a user name and password: rtsp://USER:PASSWORD@HOST/PATH"
                       " (401 Unauthorized)")
    if method == "OPTIONS":
        return True, f"the server answered {status.split(' ', 1)[-1]!r}"
    if code and code[0] == "404":
        return False, f"the server has no stream at {parts.path or '/'} (404 Not Found)"
    if code and code[0] == "200":
        return True, "the server describes the stream, but FFmpeg could not open it (no supported video track?)"
    return False, f"the server answered {status.split(' ', 1)[-1]!r}"


def make_source(locator: str, options: RtspSourceOptions, context: Context) -> RtspSource:
    """Factory registered as the ``rtsp`` source."""
    return RtspSource(locator, options)
