"""``framelens.Site``: many cameras in one process, each its own loop, sharing backends and services.

::

    site = Site(load_deployment("configs/cameras.yaml"), registry, plugins=manager)
    report = site.run()      # {"cameras": {"door": {...}, "garage": {...}}, "frames": ..., "fps": ...}

A site is one *site runtime* that owns the services (``-p http``, ``-p mqtt``), the
``--events`` writer and the shared :class:`~framelens.Context` (event bus, asyncio
runner, streams, metrics, backends, ``state``), and one :class:`~framelens.runtime.Runtime`
per camera on its own thread with a child context. A camera's stage ids are
``CAMERA-NAME``; its live stream is ``stream://CAMERA`` and its frames and events carry
``CAMERA`` as their source. A camera that cannot be opened at start is reported and
retried in the background (the others go on), unless no camera opens at all; a camera
whose loop ends or fails never stops the others. A camera *ends* when its source ends
(``--max-frames``, a file without ``--loop``) and *fails for good* when it cannot start, its
file cannot be opened, or its live source gives up (``--max-reconnects``, or a source that
cannot reconnect); the site ends when every camera has, and :meth:`Site.run` then raises
:class:`~framelens.SourceError` naming the camera if one failed for good. A camera that is
reconnecting has not ended. ``Pipeline`` builds a site when the configuration declares
cameras (``cameras:`` or named ``-s ID=URL``).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Iterator, Mapping
from typing import IO, TYPE_CHECKING, Any

from .errors import ConfigError, FramelensError, SourceError
from .frame import Frame
from .options import Options, option_key
from .registry import Registry

if TYPE_CHECKING:
    from .config import RunConfig, StageConfig
    from .plugin_manager import PluginManager
    from .runtime import Runtime

# The config and runtime modules (and PyYAML) are imported when a site is built, so that
# `import framelens` stays light.

__all__ = ["Site"]

log = logging.getLogger("framelens.site")

_CAMERA_RUN_KEYS = ("max-frames", "realtime", "loop", "max-failures", "max-reconnects", "width", "height", "fps",
                    "backend")
_QUEUE = 64  # frames waiting for a Site.session() consumer before the cameras wait for it


def _fill(value: Any, camera: str) -> Any:
    """``{camera}`` in a string option becomes the camera's id, so one setting can give
    every camera its own file (``-c alerts-store=/var/lib/framelens/{camera}.json``)."""
    return value.replace("{camera}", camera) if isinstance(value, str) else value


def _longest(key: str, spaces: Mapping[str, Any]) -> str | None:
    for ns in sorted(spaces, key=len, reverse=True):
        if key.startswith(ns + "-") and len(key) > len(ns) + 1:
            return ns
    return None


class Site:
    """Runs every camera of a :class:`RunConfig` with ``cameras`` (see the module docstring).

    ``build()`` validates the whole site (every camera, every option) before anything
    starts; ``run()`` and ``session()`` start it. ``stop()`` is thread-safe.
    """

    def __init__(self, cfg: RunConfig, registry: Registry, *, plugins: PluginManager | None = None,
                 stdout: IO[str] | None = None) -> None:
        if not cfg.cameras:
            raise ConfigError("a site needs at least one camera (cameras: in the file, or -s ID=URL)")
        self.cfg = cfg
        self.registry = registry
        self.plugins = plugins
        self.stdout = stdout
        self.runtime: Runtime | None = None  # the site runtime: services, events, the shared context
        self.cameras: dict[str, Runtime] = {}
        self.failed: dict[str, str] = {}  # cameras not working now (retrying, or dead), and why
        self.dead: dict[str, str] = {}    # cameras whose loop ended because they failed for good, and why
        self._threads: list[threading.Thread] = []
        self._reported: dict[str, threading.Event] = {}
        self._queue: queue.Queue[Frame | None] = queue.Queue(maxsize=_QUEUE)
        self._collect = False
        self._stopping = threading.Event()
        self._error: BaseException | None = None
        self._lock = threading.Lock()
        self._running = 0

    # -- building --------------------------------------------------------------------------

    def build(self) -> None:
        from .config import RunConfig
        from .runtime import Runtime

        cfg, registry = self.cfg, self.registry
        cameras = cfg.cameras
        services, defaults = self._split_services(cfg.stages, "processors")
        self._check_shared_outputs(cameras)
        spaces = self._site_spaces(services)
        site_cfg = RunConfig(stages=services, raw_settings=self._site_settings(spaces, {s.id for s in services}),
                             backend_types=cfg.backend_types,
                             run={k: v for k, v in cfg.run.items() if k in ("events", "backend", "log-level")})
        site = Runtime(site_cfg, registry, plugins=self.plugins, stdout=self.stdout)
        site.build(need_source=False)
        assert site.context is not None
        self.runtime = site
        plans = {}
        for cam in cameras.values():
            stages = cam.stages if cam.stages is not None else defaults
            outputs = cam.outputs if cam.outputs is not None else cfg.outputs
            self._split_services(stages, f"cameras.{cam.id}.processors", camera=cam.id)
            source_spec = registry.resolve("source", cam.source)
            plans[cam.id] = (stages, [self._named_output(o, cam.id) for o in outputs], source_spec)
        names = {s.id for stages, outputs, _ in plans.values() for s in [*stages, *outputs]}
        taken = names | set(spaces)
        for camera in cameras:
            if camera in taken:
                raise ConfigError(f"{cameras[camera].where}: camera id {camera!r} is also the name of a component or "
                                  "option namespace, so -c keys would be ambiguous; call the camera something else")
        # Each camera's namespaces, with and without its prefix, to route every -c key.
        mine: dict[str, tuple[set[str], set[str]]] = {}
        everything: dict[str, None] = dict.fromkeys(spaces)
        for camera, (stages, outputs, source_spec) in plans.items():
            bases = {s.id for s in [*stages, *outputs]}
            own = {source_spec.name, *spaces_of_site_wide(registry, cfg)}
            mine[camera] = (bases, own)
            everything.update(dict.fromkeys(bases | own | {f"{camera}-{b}" for b in bases}))
        first = True
        for camera, (stages, outputs, _) in plans.items():
            cam = cameras[camera]
            cam_cfg = RunConfig(
                source=cam.source,
                stages=[self._prefixed(s, camera) for s in stages],
                outputs=[self._prefixed(o, camera) for o in outputs],
                raw_settings=self._camera_settings(camera, mine[camera], everything, keep_unknown=first),
                run={k: v for k, v in cfg.run.items() if k in _CAMERA_RUN_KEYS},
                backend_types=cfg.backend_types,
            )
            first = False
            runtime = Runtime(cam_cfg, registry, plugins=self.plugins, stdout=self.stdout, camera=camera,
                              parent=site.context)
            runtime.build()
            runtime.on_open_failure = self._open_failed
            runtime.on_opened = self._opened
            self.cameras[camera] = runtime

    def _split_services(self, stages: list[StageConfig], where: str, *,
                        camera: str | None = None) -> tuple[list[StageConfig], list[StageConfig]]:
        services: list[StageConfig] = []
        processors: list[StageConfig] = []
        for stage in stages:
            spec = self.registry.find("service", stage.name)
            if spec is None:
                processors.append(stage)
            elif camera is not None:
                raise ConfigError(f"{stage.where}: {stage.name} is a service, which serves the whole site; list it "
                                  "under services: (or -p) instead of under one camera")
            else:
                services.append(stage)
        return services, processors

    def _check_shared_outputs(self, cameras: Mapping[str, Any]) -> None:
        sharing = [c for c in cameras.values() if c.outputs is None]
        if len(sharing) < 2:
            return
        for out in self.cfg.outputs:
            target = out.target or out.name
            if target == "none" or "{camera}" in target:
                continue
            raise ConfigError(f"{out.where}: {len(sharing)} cameras cannot share one output; put {{camera}} in the "
                              f"target (e.g. -o out-{{camera}}.mp4, -o rtsp://127.0.0.1:8554/{{camera}}) or use none")

    def _named_output(self, stage: StageConfig, camera: str) -> StageConfig:
        """The output with ``{camera}`` filled in and, when only a target was given, its name
        found now, so its id (and -c namespace) gets the camera prefix like every stage."""
        from .config import StageConfig

        target = stage.target.replace("{camera}", camera)
        if stage.name:
            return StageConfig(stage.name, stage.id, dict(stage.options), stage.where, target)
        spec = self.registry.resolve("output", target)
        return StageConfig(spec.name, stage.id or spec.name, dict(stage.options), stage.where, target)

    @staticmethod
    def _prefixed(stage: StageConfig, camera: str) -> StageConfig:
        from .config import StageConfig

        options = {k: _fill(v, camera) for k, v in stage.options.items()}
        return StageConfig(stage.name, f"{camera}-{stage.id}", options, stage.where, stage.target)

    def _site_spaces(self, services: list[StageConfig]) -> dict[str, list[type[Options]]]:
        spaces: dict[str, list[type[Options]]] = {}
        for stage in services:
            spec = self.registry.find("service", stage.name)
            if spec is not None:
                spaces.setdefault(stage.id, []).append(spec.options)
        for spec in self.registry.all("backend"):
            spaces.setdefault(spec.name, []).append(spec.options)
        for name, kind in self.cfg.backend_types.items():
            bspec = self.registry.find("backend", kind)
            if bspec is not None:
                spaces.setdefault(name, []).append(bspec.options)
        for extra in self.registry.plugin_options.values():
            spaces.setdefault(extra.namespace, []).append(extra.options)
        return spaces

    def _site_settings(self, spaces: Mapping[str, list[type[Options]]],
                       services: set[str]) -> list[tuple[str, Any, str]]:
        """The settings the site runtime keeps: its services', the plugins' and the backends'
        (those a backend declares; a describer's own keys in an alias's namespace stay with
        the cameras, which check every key)."""
        out = []
        for key, value, where in self.cfg.raw_settings:
            ns = _longest(key, spaces)
            if ns is None:
                continue
            declared = {option_key(f) for m in spaces[ns] for f in m.model_fields}
            if key[len(ns) + 1:] in declared:
                out.append((key, value, where))
            elif ns in services:
                out.append((key, value, where))  # a service's unknown key: the site runtime says so
        return out

    def _camera_settings(self, camera: str, mine: tuple[set[str], set[str]], everything: Mapping[str, Any], *,
                         keep_unknown: bool) -> list[tuple[str, Any, str]]:
        """The ``-c`` keys this camera's runtime checks, unprefixed stage keys moved into
        its ``CAMERA-`` namespaces. Keys of other cameras, of stages this camera lacks
        and of the site's services are left to those; a key that nobody has goes to
        the first camera, which reports it."""
        bases, own = mine
        cam = self.cfg.cameras[camera]
        # Later entries win: the file's, then the camera entry's, then the command line's.
        file_part = [(s, False) for s in self.cfg.raw_settings if not s[2].startswith("-c ")]
        cli_part = [(s, False) for s in self.cfg.raw_settings if s[2].startswith("-c ")]
        cam_part = []
        for key, value, where in cam.raw_settings:
            ns = _longest(key, dict.fromkeys(own))
            cam_part.append(((key if ns is not None and ns not in bases else f"{camera}-{key}", value, where), True))
        out = []
        for (key, raw, where), camera_own in [*file_part, *cam_part, *cli_part]:
            value = _fill(raw, camera)
            if camera_own:
                out.append((key, value, where))
                continue
            ns = _longest(key, everything)
            if ns is None:
                if keep_unknown:
                    out.append((key, value, where))
            elif ns.startswith(f"{camera}-") and ns[len(camera) + 1:] in bases:
                out.append((key, value, where))
            elif ns in bases:
                out.append((f"{camera}-{key}", value, where))
            elif ns in own:
                out.append((key, value, where))
        return out

    # -- running ---------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask every camera and the site to finish (thread-safe)."""
        self._stopping.set()
        for runtime in self.cameras.values():
            runtime.stop()
        if self.runtime is not None:
            self.runtime.stop()

    def run(self) -> dict[str, Any]:
        """Run every camera until all end or :meth:`stop`; return (and with ``--benchmark``
        print) the site report. SIGINT and SIGTERM stop it when called from the main thread.

        Raises :class:`~framelens.SourceError` (after the report is printed) when a camera
        failed for good during the run, naming it and the reason."""
        import json
        import signal

        if self.runtime is None:
            self.build()
        assert self.runtime is not None
        previous = self.runtime._install_signals()
        try:
            for _ in self._session(collect=False):
                pass
        finally:
            for sig, handler in previous:
                signal.signal(sig, handler)
        report = self.report()
        if self.cfg.run.get("benchmark"):
            out = self.runtime.stdout
            out.write(json.dumps(report) + "\n")
            out.flush()
        self._raise_if_dead()
        return report

    def _raise_if_dead(self) -> None:
        with self._lock:
            dead = dict(self.dead)
        if not dead:
            return
        camera, reason = next(iter(dead.items()))
        more = f" (and camera{'s' if len(dead) > 2 else ''} {', '.join(list(dead)[1:])})" if len(dead) > 1 else ""
        raise SourceError(f"camera {camera} failed: {reason}{more}")

    def session(self) -> Iterator[Frame]:
        """Every processed frame of every camera (``frame.source_id`` names the camera), as
        they come; a consumer slower than the cameras makes them wait for it. When every
        camera ended and one failed for good, the iteration ends with its
        :class:`~framelens.SourceError` (see :meth:`run`)."""
        if self.runtime is None:
            self.build()
        return self._session(collect=True, check=True)

    def _session(self, *, collect: bool, check: bool = False) -> Iterator[Frame]:
        site = self.runtime
        assert site is not None
        self._collect = collect
        site.on_started = self._start_cameras
        site.before_shutdown = self._stop_cameras
        thread = threading.Thread(target=self._run_site, name="site", daemon=True)
        thread.start()
        try:
            while True:
                try:
                    item = self._queue.get(timeout=0.5)  # a timeout, so signals are handled promptly
                except queue.Empty:
                    continue
                if item is None:
                    break
                yield item
        finally:
            self.stop()
            while thread.is_alive():
                self._drain()
                thread.join(0.1)
        if self._error is not None:
            raise self._error
        if check:
            self._raise_if_dead()

    def _run_site(self) -> None:
        assert self.runtime is not None
        try:
            for _ in self.runtime.session():
                pass
        except BaseException as exc:
            self._error = exc
        finally:
            self._put(None, force=True)

    def _start_cameras(self) -> None:
        """Called by the site runtime once the services run: one thread per camera, then wait
        until each camera opened or failed; fail the site only if none opened."""
        for camera, runtime in self.cameras.items():
            self._reported[camera] = threading.Event()
            thread = threading.Thread(target=self._run_camera, args=(camera, runtime), name=f"camera-{camera}",
                                      daemon=True)
            self._threads.append(thread)
        self._running = len(self._threads)
        for thread in self._threads:
            thread.start()
        for event in self._reported.values():
            while not event.wait(0.1):
                if self._stopping.is_set():
                    return
        if self.failed and len(self.failed) == len(self.cameras):
            first = next(iter(self.failed.items()))
            raise SourceError(f"no camera could be started (camera {first[0]}: {first[1]})")

    def _run_camera(self, camera: str, runtime: Runtime) -> None:
        try:
            for frame in runtime.session():
                if self._collect:
                    self._put(frame)
        except Exception as exc:
            # framelens's own errors are written for people; anything else gets its type.
            reason = str(exc) if isinstance(exc, FramelensError) else f"{type(exc).__name__}: {exc}"
            if not self._reported[camera].is_set():
                # A component of this camera could not start (an output's port in use, ...).
                log.error("camera %s could not start: %s%s", camera, reason,
                          "" if len(self.cameras) == 1 else "; the other cameras go on")
            else:
                log.error("camera %s stopped: %s%s", camera, reason,
                          "" if len(self.cameras) == 1 else "; the other cameras go on")
            with self._lock:
                self.failed[camera] = reason
                self.dead[camera] = reason
        else:
            # The loop ended by itself: normally (max-frames, the end of a file), or because
            # its source could not be opened (a missing file; reported by _open_failed).
            with self._lock:
                if camera in self.failed and not runtime.stop_requested:
                    self.dead[camera] = self.failed[camera]
        finally:
            self._reported[camera].set()
            with self._lock:
                self._running -= 1
                last = self._running == 0
            if last and self.runtime is not None:
                self.runtime.stop()  # every camera ended: the site ends too

    def _open_failed(self, camera: str, exc: BaseException) -> None:
        with self._lock:
            self.failed[camera] = str(exc)
        log.error("camera %s: cannot open %s: %s%s", camera, self.cfg.cameras[camera].source, exc,
                  "" if len(self.cameras) == 1 else "; the other cameras go on")
        self._reported[camera].set()

    def _opened(self, camera: str) -> None:
        with self._lock:
            self.failed.pop(camera, None)
        self._reported[camera].set()

    def _stop_cameras(self) -> None:
        for runtime in self.cameras.values():
            runtime.stop()
        for thread in self._threads:
            while thread.is_alive():
                self._drain()
                thread.join(0.1)
        if self.runtime is not None:
            self.runtime.frames = sum(r.frames for r in self.cameras.values())  # for the "run stopped" event

    def _put(self, item: Frame | None, *, force: bool = False) -> None:
        while True:
            try:
                self._queue.put(item, timeout=0.1)
                return
            except queue.Full:
                if force:
                    self._drain()
                elif self._stopping.is_set():
                    return

    def _drain(self) -> None:
        try:
            while self._queue.get_nowait() is not None:
                pass
        except queue.Empty:
            pass

    # -- reporting -------------------------------------------------------------------------

    def report(self) -> dict[str, Any]:
        """Per-camera reports (what ``--benchmark`` prints for one pipeline) and totals."""
        cameras = {camera: runtime.report() for camera, runtime in self.cameras.items()}
        for camera, error in self.failed.items():
            cameras[camera]["error"] = error
        site = self.runtime
        seconds = 0.0
        if site is not None:
            seconds = site.seconds if site.seconds is not None else time.monotonic() - site._started
        frames = sum(r["frames"] for r in cameras.values())
        return {
            "cameras": cameras,
            "frames": frames,
            "seconds": round(seconds, 3),
            "fps": round(frames / seconds, 2) if seconds > 0 else 0.0,
            "dropped": sum(r["dropped"] for r in cameras.values()),
        }


def spaces_of_site_wide(registry: Registry, cfg: RunConfig) -> set[str]:
    """Namespaces every camera has: the backends (registered and declared) and the plugins' own."""
    names = {spec.name for spec in registry.all("backend")} | set(cfg.backend_types)
    return names | set(registry.plugin_options)
