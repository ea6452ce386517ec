"""The runtime loop: source -> processors in the configured order -> outputs."""

from __future__ import annotations

import json
import logging
import signal
import sys
import threading
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from types import FrameType
from typing import IO, Any

from prometheus_client import Counter, Histogram

from .capture import LiveCapture
from .config import RunConfig, StageConfig, ValidatedStage
from .context import Context
from .errors import ConfigError, SourceError
from .events import JsonLinesWriter
from .frame import Frame, Results
from .options import option_key
from .output import Output
from .plugin_manager import PluginManager
from .processor import Processor
from .rate import RateGate
from .registry import ComponentSpec, Registry
from .service import Service
from .source import Source
from .stats import Timings
from .streams import Stream

__all__ = ["Runtime", "Stage"]

log = logging.getLogger("framelens.runtime")

# Frame latency buckets (seconds): a millisecond for a cheap pipeline up to seconds for one far behind.
_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass
class Stage:
    """A processor in the pipeline, with its failure count, timings and rate gate
    (``None`` when it runs on every frame)."""

    id: str
    processor: Processor
    timings: Timings = field(default_factory=Timings)
    failures: int = 0
    enabled: bool = True
    rate: RateGate | None = None


class Runtime:
    """Builds a run from a :class:`RunConfig` and runs it until the source ends or a stop.

    ``build()`` validates everything and constructs components without touching
    devices, so a bad setting fails before anything starts. ``run()`` starts the
    components, loops, and always shuts everything down in reverse order.

    A camera of a site (:class:`~framelens.Site`) is a runtime built with the site's
    context as ``parent``: it gets a child context, its frames and events carry
    ``camera`` as their source, and it leaves the shared parts (runner, events
    file, streams of others, backends) to the site.
    """

    def __init__(self, cfg: RunConfig, registry: Registry, *, stdout: IO[str] | None = None,
                 plugins: PluginManager | None = None, camera: str = "main",
                 parent: Context | None = None) -> None:
        self.cfg = cfg
        self.registry = registry
        self.plugins = plugins
        self.camera = camera
        self.parent = parent
        self.stdout = stdout or sys.stdout
        self.context: Context | None = None
        self.source: Source | None = None
        self.source_spec: ComponentSpec | None = None
        self.stages: list[Stage] = []
        self.services: list[tuple[str, Service]] = []
        self.outputs: list[tuple[str, Output]] = []
        self.frames = 0
        self.dropped = 0
        self.latency = Timings()  # seconds from each frame's capture to the end of its outputs' write
        self._stop = threading.Event()
        self._capture: LiveCapture | None = None
        self._events_writer: JsonLinesWriter | None = None
        self._started = time.monotonic()
        self.seconds: float | None = None
        # Set by a Site: called with (camera, error) when the camera cannot be opened at start,
        # with (camera) once it opened; on_started after the components started, before_shutdown
        # before they are closed.
        self.on_open_failure: Any = None
        self.on_opened: Any = None
        self.on_started: Any = None
        self.before_shutdown: Any = None

    # -- building --------------------------------------------------------------------------

    def setting(self, key: str, default: Any = None) -> Any:
        return self.cfg.run.get(key, default)

    def build(self, *, need_source: bool = True) -> None:
        cfg, registry = self.cfg, self.registry
        for problem in registry.problems:
            log.warning("%s", problem)
        if need_source:
            self.source_spec = registry.resolve("source", cfg.source if cfg.source is not None else "0")
        for stage in cfg.outputs:
            if not stage.name:
                spec = registry.resolve("output", stage.target)
                stage.name, stage.id = spec.name, stage.id or spec.name
        validated_stages = [self._find_stage_spec(stage) for stage in cfg.stages]
        cfg.check_backend_types(registry)
        cfg.resolve_settings(registry, self.source_spec)
        if self.source_spec is not None:
            self._apply_source_requests(self.source_spec)
        cfg.check_unused_settings(cfg.namespaces(registry, self.source_spec))
        cfg.check_source_settings(registry, self.source_spec)
        ids = [s.id for s in cfg.stages]
        dup = next((i for i in ids if ids.count(i) > 1), None)
        if dup:
            raise ConfigError(
                f"-p {dup}: configured twice with the same id; give the second one its own id, e.g. -p {dup}:{dup}2"
            )
        checked = [cfg.validate_stage(spec, stage) for spec, stage in validated_stages]
        outputs = [cfg.validate_stage(registry.get("output", o.name), o) for o in cfg.outputs]
        if self.parent is not None:
            self.context = self.parent.child(self.camera, namespaces=cfg.settings)
        else:
            self.context = Context(registry, namespaces=cfg.settings, plugins=self.plugins,
                                   default_backend=self.setting("backend"), backend_types=cfg.backend_types)
        ctx = self.context
        for namespace in registry.plugin_options:
            ctx.plugin_options(namespace)  # a bad -c value stops the run here, before anything starts
        ctx.enabled_plugins.update(spec.plugin for spec, _ in validated_stages)
        ctx.enabled_plugins.update(v.spec.plugin for v in outputs)
        if self.source_spec is not None:
            ctx.enabled_plugins.add(self.source_spec.plugin)
        default_backend = registry.find("backend", ctx.backend_type(ctx.default_backend))
        if default_backend is not None:
            ctx.enabled_plugins.add(default_backend.plugin)
        if self.source_spec is not None:
            src_stage = StageConfig(self.source_spec.name, self.source_spec.name, {}, f"-s {cfg.source}")
            src = cfg.validate_stage(self.source_spec, src_stage)
            self.source = self._construct(src, Source, lambda v: v.spec.create(v.id, cfg.source or "0", v.options, ctx))
        for v in checked:
            if v.spec.kind == "service":
                make_service = lambda v: v.spec.create(v.id, v.options, ctx)  # noqa: E731
                self.services.append((v.id, self._construct(v, Service, make_service)))
            else:
                proc = self._construct(v, Processor, lambda v: v.spec.create(v.id, v.options, ctx))
                gate = RateGate(v.rate) if v.rate is not None else None
                self.stages.append(Stage(v.id, proc, rate=gate if gate is not None and gate.active else None))
        for v in outputs:
            make_output = lambda v: v.spec.create(v.id, v.target or v.spec.name, v.options, ctx)  # noqa: E731
            self.outputs.append((v.id, self._construct(v, Output, make_output)))

    def _find_stage_spec(self, stage: StageConfig) -> tuple[ComponentSpec, StageConfig]:
        spec = self.registry.find("processor", stage.name) or self.registry.find("service", stage.name)
        if spec is None:
            try:
                self.registry.get("processor", stage.name)
            except ConfigError as exc:
                raise ConfigError(f"{stage.where}: {exc}") from None
        assert spec is not None
        return spec, stage

    def _apply_source_requests(self, spec: ComponentSpec) -> None:
        declared = {option_key(f) for f in spec.options.model_fields}
        for key in ("width", "height", "fps"):
            value = self.cfg.run.get(key)
            if value is None:
                continue
            if key not in declared:
                raise ConfigError(f"--{key}: source {spec.name!r} does not take a requested {key}")
            self.cfg.settings.setdefault(spec.name, {}).setdefault(key, value)

    @staticmethod
    def _construct(v: ValidatedStage, kind: type[Any], make: Any) -> Any:
        obj = make(v)
        if not isinstance(obj, kind):
            got = type(obj).__name__
            raise ConfigError(f"{v.spec.kind} {v.spec.name!r} factory returned {got}, not {kind.__name__}")
        return obj

    # -- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the loop to finish after the current frame (thread-safe)."""
        self._stop.set()

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`stop` was called (a loop that ended without it ended by itself)."""
        return self._stop.is_set()

    def _install_signals(self) -> list[tuple[int, Any]]:
        if threading.current_thread() is not threading.main_thread():
            return []
        previous: list[tuple[int, Any]] = []

        def handler(signum: int, _frame: FrameType | None) -> None:
            log.info("received %s; stopping", signal.Signals(signum).name)
            self.stop()

        for sig in (signal.SIGINT, signal.SIGTERM):
            previous.append((sig, signal.signal(sig, handler)))
        return previous

    def run(self) -> dict[str, Any]:
        """Start everything, loop until the source ends or :meth:`stop`, shut down.

        Returns the benchmark report (also printed as a JSON line with ``benchmark``).
        SIGINT and SIGTERM stop the loop when called from the main thread.
        """
        previous = self._install_signals()
        try:
            for _ in self.session():
                pass
        finally:
            for sig, handler in previous:
                signal.signal(sig, handler)
        report = self.report()
        if self.setting("benchmark"):
            self.stdout.write(json.dumps(report) + "\n")
            self.stdout.flush()
        return report

    def session(self) -> Iterator[Frame]:
        """The run as a generator: starts the components, yields every processed frame
        (after the outputs got it), and shuts everything down in reverse order when it is
        exhausted, closed early or fails. Both :meth:`run` and ``Pipeline.frames()`` use it,
        so there is one loop."""
        if self.context is None:
            self.build()
        ctx = self.context
        assert ctx is not None
        started_components: list[Any] = []
        self._started = time.monotonic()
        frames: Iterator[Frame] | None = None
        camera = self.parent is not None
        try:
            if not camera:  # a site's camera shares the site's events file and runner
                self._open_events(ctx)
                ctx.runner.start()
            for _, service in self.services:
                service.start()
                started_components.append(service)
            for stage in self.stages:
                stage.processor.start()
                started_components.append(stage.processor)
            for _, output in self.outputs:
                output.start()
                started_components.append(output)
            if not camera:
                ctx.events.publish("run", {"state": "started"})
            if self.on_started is not None:
                self.on_started()
            self._started = time.monotonic()
            if self.source is not None:
                frames = self._frames(ctx, self.source)
            elif self.stages or self.outputs:
                frames = self._stream_frames(ctx)
            else:
                self._stop.wait()
            if frames is not None:
                yield from self._loop(ctx, frames)
        finally:
            self.seconds = time.monotonic() - self._started
            if isinstance(frames, Generator):
                frames.close()
            if self.before_shutdown is not None:
                try:
                    self.before_shutdown()
                except Exception:
                    log.exception("stopping the cameras failed")
            self._shutdown(ctx, started_components)

    def _open_events(self, ctx: Context) -> None:
        target = self.setting("events")
        if not target:
            return
        if target == "-":
            self._events_writer = JsonLinesWriter(self.stdout, close=False)
        else:
            try:
                stream = open(target, "a", encoding="utf-8")
            except OSError as exc:
                raise ConfigError(f"--events {target}: cannot open for writing: {exc.strerror}") from None
            self._events_writer = JsonLinesWriter(stream, close=True)
        ctx.events.subscribe(self._events_writer)

    def _frames(self, ctx: Context, source: Source) -> Iterator[Frame]:
        """Yield frames from the source: via a capture thread if live, else in turn."""
        cam = self.camera
        if source.live:
            self._capture = LiveCapture(source, cam, ctx.events, max_reconnects=self.setting("max-reconnects"))
            self._open_capture(self._capture)
            ctx.streams.add(Stream(cam, self.cfg.source or "", self._capture, origin="cli", opened_at=time.time()))
            while not self._stop.is_set():
                frame = self._capture.next(timeout=0.25)
                if frame is None:
                    if not self._capture.running:
                        if self._capture.failure is not None:
                            # Gone for good (no reconnect, or --max-reconnects used up): an error, not an end.
                            raise SourceError(self._capture.failure)
                        return
                    continue
                yield frame
            return
        realtime = bool(self.setting("realtime"))
        loop_file = bool(self.setting("loop"))
        try:
            info = source.open()
        except Exception as exc:
            if self.on_open_failure is None:
                raise
            self.on_open_failure(self.camera, exc)  # a file that cannot be opened will not appear later
            return
        if self.on_opened is not None:
            self.on_opened(self.camera)
        ctx.events.publish("source", {"state": "connected", "url": source.describe(), "width": info.width,
                                      "height": info.height, "fps": info.fps}, source=cam)
        index = 0
        fps = info.fps if realtime and info.fps else None
        t0 = time.monotonic()
        played = 0
        while not self._stop.is_set():
            image = source.read()
            if image is None:
                if loop_file and index > 0:
                    source.close()
                    source.open()
                    continue
                ctx.events.publish("source", {"state": "ended", "url": source.describe()}, source=cam)
                return
            if fps:
                delay = t0 + played / fps - time.monotonic()
                if delay > 0 and self._stop.wait(delay):
                    return
            played += 1
            yield Frame(image, index, time.time(), cam)
            index += 1

    def _open_capture(self, capture: LiveCapture) -> None:
        """Open a live source; a site overrides how a camera that cannot be opened is handled."""
        if self.on_open_failure is None:
            capture.start(wait_open=True)
            return
        try:
            capture.start(wait_open=True)
        except Exception as exc:
            self.on_open_failure(self.camera, exc)
            # Marked lost and retried with back-off in the background; the other cameras go on.
            capture.start(wait_open=False)
            return
        if self.on_opened is not None:
            self.on_opened(self.camera)

    def _stream_frames(self, ctx: Context) -> Iterator[Frame]:
        """Without ``-s``: follow the newest stream registered at run time (``serve`` mode)."""
        while not self._stop.is_set():
            streams = ctx.streams.list()
            if not streams:
                self._stop.wait(0.1)
                continue
            frame = streams[-1].capture.next(timeout=0.25)
            if frame is not None:
                yield frame

    def _loop(self, ctx: Context, frames: Iterator[Frame]) -> Iterator[Frame]:
        max_frames = self.setting("max-frames")
        max_failures = int(self.setting("max-failures", 10) or 10)
        # One counter and one histogram per metrics registry: the cameras of a site share them,
        # labelled by source. The dashboard reads its per-camera numbers from these too.
        counter = ctx.state("framelens.frames_counter",
                            lambda: Counter("framelens_frames", "Frames processed", ["source"], registry=ctx.metrics))
        latency = ctx.state("framelens.frame_latency", lambda: Histogram(
            "framelens_frame_latency_seconds", "Seconds from a frame's capture to the end of its outputs' write",
            ["source"], buckets=_LATENCY_BUCKETS, registry=ctx.metrics))
        per_source: dict[str, Any] = {}  # labelled children, looked up once per source, not per frame
        for frame in frames:
            frame = frame.replace(results=Results(ctx.sticky_results()))
            for stage in self.stages:
                if not stage.enabled:
                    continue
                gate = stage.rate
                if gate is None:
                    frame = self._run_stage(ctx, stage, frame, max_failures)
                elif gate.admit():
                    before = dict(frame.results)
                    frame = self._run_stage(ctx, stage, frame, max_failures)
                    gate.remember(before, frame)
                else:
                    frame = gate.replay(frame)
            for name, output in self.outputs:
                try:
                    output.write(frame)
                except Exception as exc:
                    log.error("output %s failed on frame %d: %s", name, frame.index, exc)
            # Capture stamps frames with the wall clock (files: when read), so this is the wait
            # in the newest-frame slot, the stages and the outputs together.
            seconds = max(0.0, time.time() - frame.timestamp)
            self.frames += 1
            children = per_source.get(frame.source_id)
            if children is None:
                children = per_source[frame.source_id] = (counter.labels(frame.source_id),
                                                          latency.labels(frame.source_id))
            children[0].inc()
            children[1].observe(seconds)
            self.latency.add(seconds)
            if self._capture is not None:
                self.dropped = self._capture.dropped
            yield frame
            if max_frames and self.frames >= max_frames:
                break
        # Counted here, not at shutdown: frames captured after the last one taken are not drops.
        if self._capture is not None:
            self.dropped = self._capture.dropped

    def _run_stage(self, ctx: Context, stage: Stage, frame: Frame, max_failures: int) -> Frame:
        t0 = time.perf_counter()
        try:
            out = stage.processor.process(frame)
            if not isinstance(out, Frame):
                raise TypeError(f"process() returned {type(out).__name__}, not a Frame")
        except Exception as exc:
            stage.timings.add(time.perf_counter() - t0)
            stage.failures += 1
            log.error("processor %s failed on frame %d: %s: %s", stage.id, frame.index, type(exc).__name__, exc)
            if stage.failures >= max_failures:
                stage.enabled = False
                log.error("processor %s disabled after %d consecutive failures", stage.id, stage.failures)
                ctx.events.publish(
                    "processor", {"id": stage.id, "state": "disabled", "failures": stage.failures,
                                  "error": f"{type(exc).__name__}: {exc}"}, frame_index=frame.index)
            return frame
        stage.timings.add(time.perf_counter() - t0)
        stage.failures = 0
        return out

    def _shutdown(self, ctx: Context, started: list[Any]) -> None:
        if self._capture is not None:
            self._capture.stop()
            if self.parent is not None:
                try:
                    ctx.streams.remove(self.camera)  # only its own stream; the site's others stay
                except KeyError:
                    pass
        elif self.source is not None:
            self.source.close()
        closers = {id(p.processor): p.processor.close for p in self.stages}
        closers.update({id(o): o.close for _, o in self.outputs})
        closers.update({id(s): s.stop for _, s in self.services})
        for component in reversed(started):
            try:
                closers[id(component)]()
            except Exception:
                log.exception("closing %s failed", type(component).__name__)
        if self.parent is None:
            ctx.events.publish("run", {"state": "stopped", "frames": self.frames})
        ctx.close()
        if self._events_writer is not None:
            self._events_writer.close()

    def report(self, seconds: float | None = None) -> dict[str, Any]:
        """Frames, seconds, fps, dropped frames, frame latency (capture to outputs: mean and
        95th percentile of the latest frames) and per-processor timings of the run so far."""
        if seconds is None:
            seconds = self.seconds if self.seconds is not None else time.monotonic() - self._started
        processors = {}
        for stage in self.stages:
            processors[stage.id] = {**stage.timings.summary(), **stage.processor.stats()}
            if stage.rate is not None:
                processors[stage.id]["skipped"] = stage.rate.skipped
        return {
            "frames": self.frames,
            "seconds": round(seconds, 3),
            "fps": round(self.frames / seconds, 2) if seconds > 0 else 0.0,
            "dropped": self.dropped,
            "latency": {k: v for k, v in self.latency.summary().items() if k != "calls"},
            "processors": processors,
        }

