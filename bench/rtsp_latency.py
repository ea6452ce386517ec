"""RTSP output: glass-to-glass latency, server CPU per stream, simultaneous viewers at 720p.

Two servers publish the same frames, one after the other, on the same machine:

- framelens: ``framelens run -s stamp -o rtsp://...`` (the ``rtsp`` output: latest-frame
  slot, feeder thread, gst-rtsp-server);
- baseline: a bare gst-rtsp-server + PyGObject script (the recipe of GStreamer's own
  examples: a producer thread pushing into ``appsrc`` with ``do-timestamp``), using the
  very same encoder settings.

Every frame is the test pattern with its capture time (milliseconds, mod 2^16) written in
the 16-bit code strip. The viewer is OpenCV's FFmpeg backend with the low-latency options
of framelens's RTSP source; latency = decode time - capture time, on the same clock.
Server CPU is the server process's CPU time over the measurement (100 = one core),
frame generation included on both sides.

Viewers: N ``ffmpeg -c copy`` clients (receive without decoding, so the client side
costs little) join, 50 ms apart, a 1280x720@30 stream that one OpenCV viewer already
watches (it measures the latency meanwhile), doubling N; a step passes when every ffmpeg
client got at least 95 % of the frames in its stream time and kept up with the wall clock.
Starting 64 ffmpeg processes at the same instant starves a 2-core machine for about a
second; ``--stagger 0`` shows what each server does then.

    .venv/bin/python bench/rtsp_latency.py [--seconds 10] [--max-clients 32]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
CLIENT_OPTIONS = {"rtsp_transport": "tcp", "probesize": "32", "fpsprobesize": "0", "flags": "low_delay"}
SIZES = [(640, 480), (1280, 720)]
FPS = 30


# -- the frames (same generator on both sides) --------------------------------------------------


class Stamper:
    """Test-pattern frames carrying their capture time (ms mod 65536) in the code strip."""

    def __init__(self, width: int, height: int) -> None:
        from framelens.plugins.sources.testpattern import TestPattern

        self.bars = TestPattern._make_bars(width, height)
        self.n = 0

    def frame(self) -> np.ndarray:
        from framelens.plugins.sources.testpattern import render, write_code

        image = render(self.bars, self.n)
        self.n += 1
        write_code(image, int(time.time() * 1000) % 65536)
        return image


def _paced(fps: float) -> Any:
    next_t = time.monotonic()
    while True:
        delay = next_t - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        next_t = max(next_t + 1 / fps, time.monotonic() - 1)
        yield


# -- servers (run as subprocesses of this script) -----------------------------------------------


def serve_framelens(port: int, width: int, height: int) -> int:
    from framelens import Context, Options, RegisterFn, Source, SourceInfo, hookimpl
    from framelens.cli import main
    from framelens.testing import plugin_registered

    class StampSource(Source):
        live = True
        reconnect = False

        def open(self) -> SourceInfo:
            self.stamper = Stamper(width, height)
            self.pace = _paced(FPS)
            return SourceInfo(width, height, FPS, None)

        def read(self) -> np.ndarray:
            next(self.pace)
            return self.stamper.frame()

    class Plugin:
        @hookimpl
        def register_sources(self, register: RegisterFn) -> None:
            def make(locator: str, options: Options, context: Context) -> StampSource:
                return StampSource(locator)

            register("stamp", make, help="benchmark frames")

    with plugin_registered(Plugin(), "bench-stamp"):
        return main(["run", "-s", "stamp", "-o", f"rtsp://127.0.0.1:{port}/out", "-c", f"rtsp-fps={FPS}",
                     "--log-level", "warning"])


def serve_baseline(port: int, width: int, height: int) -> int:
    """gst-rtsp-server as its examples use it: nothing of framelens but the encoder settings."""
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    from framelens.plugins.rtsp.gst import EncoderSettings, media_launch

    Gst.init(None)
    launch = media_launch(EncoderSettings("x264enc", FPS, 4000, FPS)).replace(
        "do-timestamp=false", f"do-timestamp=true caps=video/x-raw,format=BGR,width={width},height={height},"
        f"framerate={FPS}/1")
    state: dict[str, Any] = {}
    factory = GstRtspServer.RTSPMediaFactory()
    factory.set_launch(launch)
    factory.set_shared(True)

    def configure(_factory: Any, media: Any) -> None:
        state["src"] = media.get_element().get_by_name("src")
        media.connect("unprepared", lambda _m: state.pop("src", None))

    factory.connect("media-configure", configure)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    server.get_mount_points().add_factory("/out", factory)
    if server.attach(None) == 0:
        raise SystemExit(f"port {port} is busy")

    def produce() -> None:
        stamper = Stamper(width, height)
        for _ in _paced(FPS):
            frame = stamper.frame()
            src = state.get("src")
            if src is not None:
                src.emit("push-buffer", Gst.Buffer.new_wrapped(frame.tobytes()))

    threading.Thread(target=produce, daemon=True).start()
    GLib.MainLoop().run()
    return 0


# -- measuring --------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Server:
    def __init__(self, kind: str, width: int, height: int) -> None:
        self.port = free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/out"
        self.proc = subprocess.Popen([sys.executable, __file__, "serve", kind, str(self.port), str(width),
                                      str(height)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"{kind} server failed: {self.proc.stderr.read() if self.proc.stderr else ''}")
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", self.port)) == 0:
                    return
            time.sleep(0.1)
        raise SystemExit(f"{kind} server did not start")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Probe(threading.Thread):
    """An OpenCV viewer that decodes every frame and notes its glass-to-glass latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.samples: list[tuple[float, float]] = []  # (monotonic time, latency in ms)
        self.first_frame_s: float | None = None
        self.halt = threading.Event()

    def run(self) -> None:
        from framelens.opencv import open_ffmpeg_capture
        from framelens.plugins.sources.testpattern import read_code

        t_open = time.monotonic()
        cap = open_ffmpeg_capture(self.url, options=CLIENT_OPTIONS, open_timeout=10, read_timeout=10)
        try:
            while cap.isOpened() and not self.halt.is_set():
                ok, image = cap.read()
                if not ok:
                    return
                now = time.monotonic()
                if self.first_frame_s is None:
                    self.first_frame_s = now - t_open
                self.samples.append((now, (time.time() * 1000 - read_code(image)) % 65536))
        finally:
            cap.release()

    def wait_frames(self, n: int, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while len(self.samples) < n:
            if time.monotonic() > deadline or not self.is_alive():
                raise SystemExit(f"no frames from {self.url}")
            time.sleep(0.05)

    def since(self, t0: float) -> list[float]:
        return [lat for t, lat in list(self.samples) if t >= t0]

    def stop(self) -> None:
        self.halt.set()
        self.join(15)


def measure_latency(server: Server, seconds: float) -> dict[str, Any]:
    probe = Probe(server.url)
    probe.start()
    try:
        probe.wait_frames(1)
        time.sleep(1.0)  # warm-up
        t0, cpu0 = time.monotonic(), cpu_seconds(server.proc.pid)
        time.sleep(seconds)
        wall, cpu = time.monotonic() - t0, cpu_seconds(server.proc.pid) - cpu0
    finally:
        probe.stop()
    latencies = probe.since(t0)
    if len(latencies) < 10:
        raise SystemExit(f"too few frames from {server.url}")
    q = statistics.quantiles(latencies, n=10)
    return {"latency_ms_median": round(statistics.median(latencies), 1), "latency_ms_p10": round(q[0], 1),
            "latency_ms_p90": round(q[-1], 1), "fps": round(len(latencies) / wall, 1),
            "server_cpu_pct": round(100 * cpu / wall, 1), "first_frame_s": round(probe.first_frame_s or 0, 3)}


def viewers_step(server: Server, clients: int, seconds: float, stagger: float) -> dict[str, Any]:
    """``clients`` ffmpeg viewers joining ``stagger`` seconds apart, each receiving ``seconds``
    of stream time, while one OpenCV viewer (connected before) measures the latency."""
    probe = Probe(server.url)
    probe.start()
    cmd = ["ffmpeg", "-hide_banner", "-nostats", "-loglevel", "error", "-rtsp_transport", "tcp", "-i", server.url,
           "-t", str(seconds), "-c", "copy", "-copyinkf", "-f", "framecrc", "-"]
    try:
        probe.wait_frames(15)
        t0 = time.monotonic()
        cpu0 = cpu_seconds(server.proc.pid)
        procs = []
        for _ in range(clients):
            procs.append(subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True))
            time.sleep(stagger)
        counts, walls = [], []
        for p in procs:
            out, _ = p.communicate(timeout=seconds * 4 + 30)
            walls.append(time.monotonic() - t0)
            # One line per packet; a key frame may come as two packets with one timestamp.
            stamps = {line.split(",")[2].strip() for line in out.splitlines() if line and not line.startswith("#")}
            counts.append(len(stamps))
        cpu = 100 * (cpu_seconds(server.proc.pid) - cpu0) / (time.monotonic() - t0)
    finally:
        probe.stop()
    latencies = probe.since(t0) or [float("nan")]
    expected = seconds * FPS
    # Start-up (connect, DESCRIBE, SETUP) is about a second per step: allow for it in the wall time.
    ok = min(counts) >= 0.95 * expected and max(walls) <= seconds + 3.0 + clients * stagger
    return {"clients": clients, "min_frames": min(counts), "expected": expected,
            "max_wall_s": round(max(walls), 2), "server_cpu_pct": round(cpu, 1),
            "probe_latency_ms_median": round(statistics.median(latencies), 1),
            "probe_latency_ms_max": round(max(latencies), 1), "ok": ok}


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "serve":
        kind, port, width, height = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
        return serve_framelens(port, width, height) if kind == "framelens" else serve_baseline(port, width, height)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="measurement per latency run")
    parser.add_argument("--viewer-seconds", type=float, default=6.0, help="stream time per viewers step")
    parser.add_argument("--max-clients", type=int, default=128, help="largest viewers step (0: skip)")
    parser.add_argument("--stagger", type=float, default=0.05,
                        help="seconds between viewers joining (0: all at once, a burst the machine's CPU feels)")
    args = parser.parse_args()
    results: list[dict[str, Any]] = []
    for width, height in SIZES:
        row: dict[str, Any] = {"size": f"{width}x{height}@{FPS}"}
        for kind in ("framelens", "baseline"):
            server = Server(kind, width, height)
            try:
                row[kind] = measure_latency(server, args.seconds)
            finally:
                server.stop()
        row["latency_ratio"] = round(row["framelens"]["latency_ms_median"] / row["baseline"]["latency_ms_median"], 2)
        row["cpu_ratio"] = round(row["framelens"]["server_cpu_pct"] / max(0.1, row["baseline"]["server_cpu_pct"]), 2)
        print(json.dumps(row), flush=True)
        results.append(row)
    viewers: dict[str, list[dict[str, Any]]] = {}
    if args.max_clients:
        for kind in ("framelens", "baseline"):
            server = Server(kind, 1280, 720)
            steps = []
            try:
                n = 1
                while n <= args.max_clients:
                    step = viewers_step(server, n, args.viewer_seconds, args.stagger)
                    print(json.dumps({"server": kind, **step}), flush=True)
                    steps.append(step)
                    if not step["ok"]:
                        break
                    n *= 2
            finally:
                server.stop()
            viewers[kind] = steps
    print()
    print("| stream | side | latency median (p10-p90) | first frame | fps | server CPU (1 core = 100) |")
    print("|---|---|---|---|---|---|")
    for row in results:
        for kind in ("framelens", "baseline"):
            r = row[kind]
            print(f"| {row['size']} | {kind} | {r['latency_ms_median']} ms ({r['latency_ms_p10']}-"
                  f"{r['latency_ms_p90']}) | {r['first_frame_s']} s | {r['fps']} | {r['server_cpu_pct']} % |")
        print(f"| {row['size']} | ratio framelens/baseline | {row['latency_ratio']} | | | {row['cpu_ratio']} |")
    if viewers:
        print("\n| 720p30 viewers | " + " | ".join(
            f"{k}: fewest frames / {FPS * args.viewer_seconds:g}, server CPU, latency median / max" for k in viewers)
            + " |")
        print("|---|" + "---|" * len(viewers))
        for i in range(max(len(v) for v in viewers.values())):
            cells = []
            for steps in viewers.values():
                st = steps[i] if i < len(steps) else None
                cells.append(f"{st['min_frames']}{'' if st['ok'] else ' (drops)'}, {st['server_cpu_pct']} %, "
                             f"{st['probe_latency_ms_median']} / {st['probe_latency_ms_max']} ms" if st else "-")
            n = next(v[i]["clients"] for v in viewers.values() if i < len(v))
            print(f"| {n} | " + " | ".join(cells) + " |")
    for kind, steps in viewers.items():
        good = [s["clients"] for s in steps if s["ok"]]
        print(f"\n{kind}: most simultaneous 720p30 viewers without drops: {max(good) if good else 0}"
              f" (tried up to {steps[-1]['clients'] if steps else 0})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
