"""``framelens.Pipeline``: build and run a pipeline from Python, without argparse.

::

    from framelens import Pipeline

    pipeline = Pipeline(
        source="testpattern",
        processors=[("describe", {"backend": "ollama"}), "captions"],
        outputs=["none"],
        options={"ollama": {"url": "http://127.0.0.1:11434", "model": "llava"}},
    )
    report = pipeline.run(max_frames=100)          # the --benchmark report
    for frame in pipeline.frames(max_frames=10):   # or frame by frame, with results
        print(frame.index, dict(frame.results))

The command line (``framelens run``), deployment files and
:func:`framelens.testing.run_pipeline` are built on this class, so a pipeline
behaves the same whichever way it was described.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from .errors import ConfigError
from .frame import Frame
from .options import closest, option_key

if TYPE_CHECKING:
    from .config import RunConfig, StageConfig
    from .plugin_manager import PluginManager
    from .runtime import Runtime
    from .site import Site

# The config module (and PyYAML) is imported on first use, so `import framelens` stays as
# light as it was before Pipeline was exported from it.

__all__ = ["Pipeline", "StageSpec"]

StageSpec = str | tuple[str, Mapping[str, Any]] | Mapping[str, Any]
"""A processor or output: ``"name"``, ``"name:id"``, a target such as ``"out.mp4"``,
``(name, options)`` or a deployment-file entry (``{"name": ..., "id": ..., "options": ...}``)."""

_POSITIVE = ("max-frames", "max-failures", "max-reconnects", "width", "height", "fps")


def _entries(value: Sequence[StageSpec] | StageSpec | None, where: str, kind: str) -> list[StageConfig]:
    from .config import _stage

    if value is None:
        return []
    items: Sequence[Any] = [value] if isinstance(value, (str, tuple, Mapping)) else value
    stages = []
    for i, item in enumerate(items):
        at = f"{where}[{i}]"
        if isinstance(item, tuple):
            if len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], Mapping):
                raise ConfigError(f"{at}: expected (name, {{option: value}}), got {item!r}")
            name, _, ident = item[0].partition(":")
            item = {"name": name, "id": ident or name, "options": dict(item[1])}
        elif not isinstance(item, (str, Mapping)):
            raise ConfigError(f"{at}: expected a name, (name, options) or a mapping, got {type(item).__name__}")
        stages.append(_stage(dict(item) if isinstance(item, Mapping) else item, at, default_kind=kind))
    return stages


def _settings(options: Mapping[str, Any] | None) -> list[tuple[str, Any, str]]:
    raw: list[tuple[str, Any, str]] = []
    for ns, value in (options or {}).items():
        if isinstance(value, Mapping):
            # Namespaced like YAML's ``backends:``: {"ollama": {"model": "llava"}}.
            raw += [(f"{ns}-{option_key(str(k))}", v, f"options[{ns!r}][{k!r}]") for k, v in value.items()]
        else:
            raw.append((str(ns), value, f"options[{ns!r}]"))
    return raw


def _run_settings(run: Mapping[str, Any] | None) -> dict[str, Any]:
    from .config import RUN_KEYS, _coerce_run

    out: dict[str, Any] = {}
    for key, value in (run or {}).items():
        norm = str(key).replace("_", "-")
        if norm not in RUN_KEYS:
            near = closest(norm, RUN_KEYS)
            hint = f" (did you mean {near[0]}?)" if near else f" (expected: {', '.join(RUN_KEYS)})"
            raise ConfigError(f"run[{key!r}]: unknown setting{hint}")
        if value is not None:
            out[norm] = _coerce_run(norm, value, f"run[{key!r}]")
    return out


def check_run_numbers(cfg: RunConfig) -> None:
    """Counts and capture requests must be positive (named as the flag that sets them)."""
    for key in _POSITIVE:
        value = cfg.run.get(key)
        if value is not None and value <= 0:
            raise ConfigError(f"--{key}: must be a positive number, got {value}")


class Pipeline:
    """A source, processors in order, and outputs: one run, described in Python.

    Arguments mirror the command line and deployment files:

    - ``source``: what ``-s`` takes (``"testpattern"``, ``"0"``, ``"rtsp://..."``, a file);
      ``None`` means camera 0, as on the command line.
    - ``processors``: processors and services in processing order, each a :data:`StageSpec`
      (``"captions"``, ``"describe:cam2"``, ``("describe", {"backend": "ollama"})``).
    - ``outputs``: output names or targets (``"none"``, ``"mjpeg"``, ``"out.mp4"``); default none.
    - ``options``: ``-c`` settings, namespaced: ``{"ollama": {"model": "llava"}}`` or
      ``{"ollama-model": "llava"}``.
    - ``backend``: the run's default VLM backend (``--backend``).
    - ``run``: run settings (``{"max-frames": 100, "realtime": True}``; ``_`` or ``-``).
    - ``plugins``: the plugin manager whose components are used (default: the process's).
    - ``need_source``: ``False`` runs without a source (services only, as ``serve`` does).
    - ``cameras``: several cameras instead of ``source``, as a deployment file's ``cameras:``
      (``{"door": "rtsp://...", "garage": {"source": ..., "processors": [...], "options": {...}}}``);
      ``processors`` and ``outputs`` are then the defaults of every camera that gives none,
      and the run is a :class:`~framelens.Site` (its frames carry the camera as ``source_id``).

    The shape of the arguments is checked here; components, options and run settings are
    checked when :meth:`run`, :meth:`frames` or :meth:`build` is called, before anything
    starts. Every mistake is a :class:`~framelens.ConfigError` naming what was wrong.
    Each call builds a fresh run, so a pipeline can be run more than once.
    """

    def __init__(
        self,
        source: str | None = None,
        processors: Sequence[StageSpec] | StageSpec | None = None,
        outputs: Sequence[StageSpec] | StageSpec | None = None,
        *,
        options: Mapping[str, Any] | None = None,
        backend: str | None = None,
        run: Mapping[str, Any] | None = None,
        plugins: PluginManager | None = None,
        need_source: bool = True,
        stdout: IO[str] | None = None,
        cameras: Mapping[str, str | Mapping[str, Any]] | None = None,
    ) -> None:
        if source is not None and not isinstance(source, str):
            raise ConfigError(f"source: expected a locator such as 'testpattern', got {type(source).__name__}")
        from .config import RunConfig, load_cameras

        cfg = RunConfig(source=source)
        cfg.stages = _entries(processors, "processors", "processor")
        cfg.outputs = _entries(outputs, "outputs", "output")
        cfg.raw_settings = _settings(options)
        if cameras is not None:
            load_cameras(cfg, {"cameras": cameras}, "Pipeline")
        cfg.run = _run_settings(run)
        if backend is not None:
            cfg.run["backend"] = backend
        self._init(cfg, plugins=plugins, need_source=need_source, stdout=stdout)

    def _init(self, cfg: RunConfig, *, plugins: PluginManager | None, need_source: bool,
              stdout: IO[str] | None) -> None:
        self.config = cfg
        self.plugins = plugins
        self.need_source = need_source
        self.stdout = stdout
        self.runtime: Runtime | Site | None = None

    @classmethod
    def from_config(cls, cfg: RunConfig, *, plugins: PluginManager | None = None, need_source: bool = True,
                    stdout: IO[str] | None = None) -> Pipeline:
        """A pipeline for an already merged :class:`RunConfig` (what the CLI builds)."""
        pipeline = cls.__new__(cls)
        pipeline._init(cfg, plugins=plugins, need_source=need_source, stdout=stdout)
        return pipeline

    @classmethod
    def from_file(cls, path: str | Path, *, plugins: PluginManager | None = None,
                  stdout: IO[str] | None = None) -> Pipeline:
        """A pipeline for a deployment YAML file (see configs/); errors name the file and key."""
        from .config import load_deployment

        return cls.from_config(load_deployment(path), plugins=plugins, stdout=stdout)

    # -- running ---------------------------------------------------------------------------

    def build(self, *, max_frames: int | None = None) -> Runtime | Site:
        """Validate everything and construct the components, opening no device.

        Returns the built :class:`~framelens.runtime.Runtime` (also kept as ``self.runtime``),
        or a :class:`~framelens.Site` when the configuration declares cameras
        (``max_frames`` then counts per camera).
        """
        from .plugin_manager import get_plugin_manager
        from .runtime import Runtime
        from .site import Site

        # Building resolves names into the config; each run gets its own copy.
        cfg = copy.deepcopy(self.config)
        if max_frames is not None:
            if max_frames <= 0:
                raise ConfigError(f"max_frames: must be a positive number, got {max_frames}")
            cfg.run["max-frames"] = max_frames
        check_run_numbers(cfg)
        manager = self.plugins or get_plugin_manager()
        if cfg.cameras:
            site = Site(cfg, manager.registry, plugins=manager, stdout=self.stdout)
            site.build()
            self.runtime = site
            return site
        runtime = Runtime(cfg, manager.registry, plugins=manager, stdout=self.stdout)
        runtime.build(need_source=self.need_source)
        self.runtime = runtime
        return runtime

    def run(self, max_frames: int | None = None) -> dict[str, Any]:
        """Run until the source ends, ``max_frames`` frames, or :meth:`stop`; return the report.

        The report is what ``--benchmark`` prints: ``frames``, ``seconds``, ``fps``,
        ``dropped`` and per-processor ``processors`` timings. From the main thread,
        SIGINT and SIGTERM stop the run cleanly.
        """
        return self.build(max_frames=max_frames).run()

    def frames(self, max_frames: int | None = None) -> Iterator[Frame]:
        """Start the run and yield each processed frame (with ``frame.results``) after the
        outputs got it.

        Everything shuts down when the iterator is exhausted, closed (``break`` in a ``for``
        loop closes it once it is garbage collected; call ``close()`` or use
        ``contextlib.closing`` to be exact) or raises. Configuration errors are raised by
        this call, before anything starts.
        """
        return self.build(max_frames=max_frames).session()

    def stop(self) -> None:
        """Ask the current run to finish after the current frame (thread-safe)."""
        if self.runtime is not None:
            self.runtime.stop()

    def report(self) -> dict[str, Any]:
        """The report of the current or last run (``ConfigError`` if none was started)."""
        if self.runtime is None:
            raise ConfigError("this pipeline has not been run yet")
        return self.runtime.report()
