"""Run configuration: deployment files, ``-c`` settings and their validation.

A deployment file holds what the command line can say::

    source: rtsp://camera.local/stream1
    processors:
      - ollama                                  # a name alone
      - name: ollama                            # the same processor again, with its own id
        id: second
        options: {model: moondream, prompt: "Is the door open?"}
      - captions: {size: 0.8}                   # {name: options}
    outputs: [mjpeg, recording.mp4]
    options:                                    # namespaced like -c
      ollama-model: llava
    run: {max-frames: 1000, realtime: true, events: events.jsonl}

Many cameras (each a pipeline of its own, sharing the site's backends and services)::

    backends: {vlm: {backend: ollama, model: llava}}    # a backend instance 'vlm' of type ollama
    defaults: {processors: [{describe: {backend: vlm}}, captions], outputs: [none]}
    cameras:
      door: rtsp://cam1/stream1                          # a source alone: the defaults
      garage: {source: rtsp://cam2/stream1, processors: [alerts], options: {alerts-rules: "Is it open?"}}
    services: [http]

``${VAR}`` and ``${VAR:-default}`` are replaced from the environment. Command-line
flags override the file: ``-s``, ``-p`` and ``-o`` replace its lists (a named
``-s door=URL`` replaces that camera's source or adds a camera), ``-c`` values
replace single options.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .errors import ConfigError
from .options import Options, closest, option_key, parse_options
from .rate import RATE_KEYS, RateOptions
from .registry import ComponentSpec, Registry

__all__ = [
    "RUN_KEYS",
    "CameraConfig",
    "RunConfig",
    "StageConfig",
    "ValidatedStage",
    "load_cameras",
    "load_deployment",
    "merge_cli",
    "parse_source_flag",
    "split_setting",
]

RUN_KEYS = {
    "max-frames": int,
    "realtime": bool,
    "loop": bool,
    "events": str,
    "benchmark": bool,
    "max-failures": int,
    "max-reconnects": int,
    "width": int,
    "height": int,
    "fps": float,
    "log-level": str,
    "backend": str,
}


@dataclass
class StageConfig:
    """One configured processor, service or output before validation."""

    name: str
    id: str
    options: dict[str, Any] = field(default_factory=dict)
    where: str = "-p"
    target: str = ""


@dataclass
class ValidatedStage:
    """A stage whose component was found and whose options passed validation."""

    spec: ComponentSpec
    id: str
    options: Options
    target: str = ""
    rate: RateOptions | None = None  # processors only: the core's every / max-fps


@dataclass
class CameraConfig:
    """One camera of a site: its source and, when it has its own, its processors, outputs
    and options (``None`` lists mean the site's defaults). Option keys are namespaced by
    the camera's stages without the camera prefix (``describe-interval``)."""

    id: str
    source: str
    stages: list[StageConfig] | None = None
    outputs: list[StageConfig] | None = None
    raw_settings: list[tuple[str, Any, str]] = field(default_factory=list)
    where: str = "-s"


@dataclass
class RunConfig:
    """Everything a run needs, merged from the file and the command line.

    With ``cameras`` the run is a site: ``source`` is unused and ``stages``/``outputs``
    are the defaults of every camera that gives none of its own.
    """

    source: str | None = None
    stages: list[StageConfig] = field(default_factory=list)
    outputs: list[StageConfig] = field(default_factory=list)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)  # namespace -> key -> value
    setting_origin: dict[tuple[str, str], str] = field(default_factory=dict)
    raw_settings: list[tuple[str, Any, str]] = field(default_factory=list)  # full key, value, where
    run: dict[str, Any] = field(default_factory=dict)
    cameras: dict[str, CameraConfig] = field(default_factory=dict)
    backend_types: dict[str, str] = field(default_factory=dict)  # declared instance -> registered backend

    # -- validation ------------------------------------------------------------------------

    def resolve_settings(self, registry: Registry, source_spec: ComponentSpec | None) -> None:
        """Split every ``-c`` key into namespace and option, against the configured components."""
        spaces = self.namespaces(registry, source_spec)
        for full_key, value, where in self.raw_settings:
            ns, key = split_setting(full_key, spaces, where)
            self.settings.setdefault(ns, {})[key] = value
            self.setting_origin[(ns, key)] = where

    def namespaces(self, registry: Registry, source_spec: ComponentSpec | None) -> dict[str, list[type[Options]]]:
        """Each option namespace of this run and the option models that share it."""
        spaces: dict[str, list[type[Options]]] = {}
        services = False
        for stage in [*self.stages, *self.outputs]:
            spec = registry.find("processor", stage.name) or registry.find("service", stage.name)
            spec = spec or registry.find("output", stage.name)
            if spec is not None:
                spaces.setdefault(stage.id, []).append(spec.options)
                services = services or spec.kind == "service"
                if spec.kind == "processor":
                    spaces[stage.id].append(RateOptions)
        if source_spec is not None:
            spaces.setdefault(source_spec.name, []).append(source_spec.options)
        if services:
            # a service (http) opens sources on request (rtsp://..., v4l2://...): their -c options count too
            for spec in registry.all("source"):
                if spec.options not in spaces.get(spec.name, []):
                    spaces.setdefault(spec.name, []).append(spec.options)
        for spec in registry.all("backend"):
            spaces.setdefault(spec.name, []).append(spec.options)
        for name, kind in self.backend_types.items():
            spec = registry.find("backend", kind)
            if spec is not None:
                spaces.setdefault(name, []).append(spec.options)
        for extra in registry.plugin_options.values():
            spaces.setdefault(extra.namespace, []).append(extra.options)
        return spaces

    def validate_stage(self, spec: ComponentSpec, stage: StageConfig) -> ValidatedStage:
        declared = {option_key(f) for f in spec.options.model_fields}
        merged = {option_key(str(k)): v for k, v in stage.options.items()}
        origins = {}
        for key, value in self.settings.get(stage.id, {}).items():
            if key in declared or (spec.kind == "processor" and key in RATE_KEYS):
                merged[key] = value
                origins[key] = self.setting_origin.get((stage.id, key), "-c")
        rate: RateOptions | None = None
        if spec.kind == "processor":
            # A processor that declares an option of the same name keeps it for itself.
            own = {k: merged.pop(k) for k in RATE_KEYS - declared if k in merged}
            parsed = parse_options(RateOptions, own, namespace=stage.id, where=stage.where, origins=origins)
            assert isinstance(parsed, RateOptions)
            rate = parsed
        options = parse_options(spec.options, merged, namespace=stage.id, where=stage.where, origins=origins)
        return ValidatedStage(spec, stage.id, options, stage.target, rate)

    def check_backend_types(self, registry: Registry) -> None:
        """Every ``backends: {NAME: {backend: TYPE}}`` must name a registered backend."""
        for name, kind in self.backend_types.items():
            if registry.find("backend", kind) is None:
                try:
                    registry.get("backend", kind)
                except ConfigError as exc:
                    raise ConfigError(f"backends.{name}.backend: {exc}") from None

    def check_source_settings(self, registry: Registry, source_spec: ComponentSpec | None) -> None:
        """Validate the ``-c`` settings of sources other than the run's own (those a service opens on
        request), so a bad value is an error at start rather than on some later request."""
        for spec in registry.all("source"):
            if spec is source_spec or spec.name not in self.settings:
                continue
            declared = {option_key(f) for f in spec.options.model_fields}
            raw = {k: v for k, v in self.settings[spec.name].items() if k in declared}
            origins = {k: self.setting_origin.get((spec.name, k), "-c") for k in raw}
            parse_options(spec.options, raw, namespace=spec.name, origins=origins)

    def check_unused_settings(self, spaces: Mapping[str, list[type[Options]]]) -> None:
        """Every ``-c`` key must be an option of some component in its namespace."""
        problems = []
        for ns, values in self.settings.items():
            declared = {option_key(f) for model in spaces.get(ns, []) for f in model.model_fields}
            for key in values:
                if key not in declared:
                    full = f"{ns}-{key}"
                    near = closest(full, [f"{ns}-{d}" for d in declared])
                    hint = f" (did you mean {', '.join(near)}?)" if near else ""
                    where = self.setting_origin.get((ns, key), "-c")
                    problems.append(f"{where}: unknown option '{full}'{hint}")
        if problems:
            raise ConfigError("\n".join(problems))


def split_setting(full_key: str, spaces: Mapping[str, list[type[Options]]], where: str) -> tuple[str, str]:
    """``ollama-model`` -> (``ollama``, ``model``), taking the longest namespace that matches."""
    for ns in sorted(spaces, key=len, reverse=True):
        if full_key.startswith(ns + "-") and len(full_key) > len(ns) + 1:
            return ns, full_key[len(ns) + 1 :]
    valid = [f"{ns}-{option_key(f)}" for ns, models in spaces.items() for m in models for f in m.model_fields]
    near = closest(full_key, valid)
    hint = f" (did you mean {', '.join(near)}?)" if near else ""
    prefix = full_key.split("-", 1)[0]
    if not near:
        hint = f" (no configured component is called {prefix!r}; configured: {', '.join(sorted(spaces))})"
    raise ConfigError(f"{where}: unknown option '{full_key}'{hint}")


# -- deployment files ------------------------------------------------------------------------

_NAME_ID = re.compile(r"^[a-z][a-z0-9_-]*(:[A-Za-z0-9_-]+)?$")
_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


class _DuplicateKey(Exception):
    pass


class _UniqueKeys(yaml.SafeLoader):
    """PyYAML keeps the last of two equal keys; a deployment file with two cameras (or two
    options) of one name is a mistake, so it is an error here."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            line = key_node.start_mark.line + 1
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(f"line {line}: duplicate key '{key}' (first at line {seen[key]}); "
                                    "each camera, option and key can be given once")
            if isinstance(key, (str, int, float, bool)):
                seen[key] = line
        return super().construct_mapping(node, deep=deep)


def _expand(value: Any, path: str, file: str) -> Any:
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name, default = m.group(1), m.group(2)
            if name in os.environ:
                return os.environ[name]
            if default is not None:
                return default
            raise ConfigError(f"{file}: {path}: environment variable {name} is not set")

        return _ENV.sub(sub, value)
    if isinstance(value, list):
        return [_expand(v, f"{path}[{i}]", file) for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {k: _expand(v, f"{path}.{k}" if path else str(k), file) for k, v in value.items()}
    return value


def _stage(entry: Any, where: str, *, default_kind: str) -> StageConfig:
    if isinstance(entry, str):
        if "://" in entry or (default_kind == "output" and not _NAME_ID.match(entry)):
            return StageConfig("", "", {}, where, target=entry)
        name, _, ident = entry.partition(":")
        return StageConfig(name, ident or name, {}, where, target=name)
    if isinstance(entry, dict):
        if "name" in entry or "target" in entry:
            unknown = set(entry) - {"name", "id", "options", "target"}
            if unknown:
                raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} (expected name, id, options)")
            options = entry.get("options") or {}
            if not isinstance(options, dict):
                raise ConfigError(f"{where}.options: expected a mapping of option: value")
            # With only a target (out.mp4, rtsp://...), the output is found by the target's shape later.
            name = str(entry.get("name") or "")
            if not name and default_kind != "output":
                raise ConfigError(f"{where}: a processor entry needs a 'name'")
            target = str(entry.get("target") or name)
            return StageConfig(name, str(entry.get("id") or name), dict(options), where, target)
        if len(entry) == 1:
            (name, options), = entry.items()
            if options is not None and not isinstance(options, dict):
                raise ConfigError(f"{where}.{name}: expected a mapping of option: value")
            return StageConfig(str(name), str(name), dict(options or {}), where, target=str(name))
    raise ConfigError(f"{where}: expected a name or a mapping with 'name' and 'options'")


def _list(value: Any, where: str) -> list[Any]:
    if value is None:
        return []
    if isinstance(value, (str, dict)):
        return [value]
    if isinstance(value, list):
        return value
    raise ConfigError(f"{where}: expected a list")


def load_deployment(path: str | Path) -> RunConfig:
    """Read and check the shape of a deployment file (options are checked later, against plugins)."""
    file = str(path)
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read deployment file {file}: {exc.strerror or exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{file}: not UTF-8 text (byte 0x{exc.object[exc.start]:02x} at offset {exc.start});"
                          " save the deployment file as UTF-8") from None
    try:
        data = yaml.load(text, Loader=_UniqueKeys)  # a SafeLoader subclass: no arbitrary objects
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError(f"{file}:{at} invalid YAML: {getattr(exc, 'problem', exc)}") from None
    except RecursionError:
        raise ConfigError(f"{file}: invalid YAML: nested too deeply for a deployment file") from None
    except _DuplicateKey as exc:
        raise ConfigError(f"{file}: {exc}") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{file}: expected a mapping at the top level")
    known = {"source", "processors", "services", "outputs", "options", "backends", "run", "cameras", "defaults"}
    unknown = set(data) - known
    if unknown:
        near = closest(sorted(unknown)[0], known)
        hint = f" (did you mean {near[0]}?)" if near else f" (expected: {', '.join(sorted(known))})"
        raise ConfigError(f"{file}: unknown key '{sorted(unknown)[0]}'{hint}")
    data = _expand(data, "", file)
    cfg = RunConfig()
    if data.get("source") is not None:
        if not isinstance(data["source"], (str, int)):
            raise ConfigError(f"{file}: source: expected a locator such as testpattern or rtsp://...")
        cfg.source = str(data["source"])
    entries = [*_list(data.get("processors"), f"{file}: processors"), *_list(data.get("services"), f"{file}: services")]
    cfg.stages = [_stage(e, f"{file}: processors[{i}]", default_kind="processor") for i, e in enumerate(entries)]
    outputs = _list(data.get("outputs"), f"{file}: outputs")
    cfg.outputs = [_stage(e, f"{file}: outputs[{i}]", default_kind="output") for i, e in enumerate(outputs)]
    options = data.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{file}: options: expected a mapping of namespaced keys (ollama-model: llava)")
    cfg.raw_settings = [(str(k), v, f"{file}: options.{k}") for k, v in options.items()]
    if data.get("defaults") is not None or data.get("cameras") is not None:
        load_cameras(cfg, data, file)
    backends = data.get("backends") or {}
    if not isinstance(backends, dict):
        raise ConfigError(f"{file}: backends: expected a mapping of backend name to options")
    for bname, bopts in backends.items():
        if not isinstance(bopts, dict):
            raise ConfigError(f"{file}: backends.{bname}: expected a mapping of option: value")
        bopts = dict(bopts)
        kind = bopts.pop("backend", None)
        if kind is not None:
            if not isinstance(kind, str) or not kind:
                raise ConfigError(f"{file}: backends.{bname}.backend: expected the name of a backend, such as ollama")
            if kind != bname:
                cfg.backend_types[str(bname)] = kind
        cfg.raw_settings += [(f"{bname}-{k}", v, f"{file}: backends.{bname}.{k}") for k, v in bopts.items()]
    run = data.get("run") or {}
    if not isinstance(run, dict):
        raise ConfigError(f"{file}: run: expected a mapping")
    for key, value in run.items():
        norm = str(key).replace("_", "-")
        if norm not in RUN_KEYS:
            near = closest(norm, RUN_KEYS)
            hint = f" (did you mean {near[0]}?)" if near else f" (expected: {', '.join(RUN_KEYS)})"
            raise ConfigError(f"{file}: run.{key}: unknown setting{hint}")
        cfg.run[norm] = _coerce_run(norm, value, f"{file}: run.{key}")
    return cfg


_CAMERA_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_CAMERA_KEYS = ("source", "processors", "outputs", "options")


def check_camera_id(camera: str, where: str) -> None:
    """A camera id becomes a stream id, a topic level and a stage-id prefix."""
    if not _CAMERA_ID.match(camera) or camera.endswith("-"):
        raise ConfigError(f"{where}: camera id {camera!r}: use letters, digits, '_' and '-' (it becomes "
                          "stream://ID, a topic level and the prefix of its stage ids)")


def load_cameras(cfg: RunConfig, data: Mapping[str, Any], file: str) -> None:
    """Read ``defaults:`` and ``cameras:`` of a deployment (``data``) into ``cfg``; errors name ``file``."""
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, dict):
        raise ConfigError(f"{file}: defaults: expected a mapping with processors, outputs, options")
    unknown = sorted(set(defaults) - {"processors", "outputs", "options"})
    if unknown:
        raise ConfigError(f"{file}: defaults: unknown key '{unknown[0]}' (expected: processors, outputs, options)")
    for key, attr in (("processors", "stages"), ("outputs", "outputs")):
        if key in defaults:
            if data.get(key) is not None:
                raise ConfigError(f"{file}: {key} and defaults.{key} both given; keep one of them")
            kind = "processor" if key == "processors" else "output"
            items = _list(defaults[key], f"{file}: defaults.{key}")
            # What is already there are the file's services (its processors are not: checked above).
            setattr(cfg, attr, [*(_stage(e, f"{file}: defaults.{key}[{i}]", default_kind=kind)
                                  for i, e in enumerate(items)), *getattr(cfg, attr)])
    options = defaults.get("options") or {}
    if not isinstance(options, dict):
        raise ConfigError(f"{file}: defaults.options: expected a mapping of namespaced keys (describe-interval: 5)")
    cfg.raw_settings += [(str(k), v, f"{file}: defaults.options.{k}") for k, v in options.items()]
    cameras = data.get("cameras")
    if cameras is None:
        return
    if not isinstance(cameras, Mapping) or not cameras:
        raise ConfigError(f"{file}: cameras: expected a mapping of camera id to {{source, processors, outputs, "
                          "options}} (or to a source)")
    if cfg.source is not None:
        raise ConfigError(f"{file}: source and cameras both given; give each camera its own source under cameras")
    for camera, entry in cameras.items():
        where = f"{file}: cameras.{camera}"
        check_camera_id(str(camera), where)
        if isinstance(entry, (str, int)):
            entry = {"source": str(entry)}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a source or a mapping with source, processors, outputs, options")
        unknown = sorted(set(entry) - set(_CAMERA_KEYS))
        if unknown:
            near = closest(unknown[0], _CAMERA_KEYS)
            hint = f" (did you mean {near[0]}?)" if near else f" (expected: {', '.join(_CAMERA_KEYS)})"
            raise ConfigError(f"{where}: unknown key '{unknown[0]}'{hint}")
        if not isinstance(entry.get("source"), (str, int)) or entry.get("source") == "":
            raise ConfigError(f"{where}.source: every camera needs a source (testpattern, rtsp://..., 0, a file)")
        cam = CameraConfig(str(camera), str(entry["source"]), where=where)
        if entry.get("processors") is not None:
            items = _list(entry["processors"], f"{where}.processors")
            cam.stages = [_stage(e, f"{where}.processors[{i}]", default_kind="processor") for i, e in enumerate(items)]
        if entry.get("outputs") is not None:
            items = _list(entry["outputs"], f"{where}.outputs")
            cam.outputs = [_stage(e, f"{where}.outputs[{i}]", default_kind="output") for i, e in enumerate(items)]
        cam_options = entry.get("options") or {}
        if not isinstance(cam_options, dict):
            raise ConfigError(f"{where}.options: expected a mapping of keys namespaced by the camera's stages "
                              "(describe-interval: 5)")
        cam.raw_settings = [(str(k), v, f"{where}.options.{k}") for k, v in cam_options.items()]
        cfg.cameras[cam.id] = cam


_NAMED_SOURCE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9_-]*)=(.+)$")


def parse_source_flag(value: str) -> tuple[str | None, str]:
    """``-s door=rtsp://...`` -> (``door``, ``rtsp://...``); a plain ``-s URL`` -> (``None``, URL).

    Only a camera id (letters, digits, ``_``, ``-``) before the first ``=`` names a camera,
    so URLs with ``=`` in their query stay plain sources.
    """
    m = _NAMED_SOURCE.match(value)
    if m is None:
        return None, value
    return m.group(1), m.group(2)


def _coerce_run(key: str, value: Any, where: str) -> Any:
    kind = RUN_KEYS[key]
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None


def _merge_sources(cfg: RunConfig, sources: list[str]) -> None:
    named = [(parse_source_flag(s), s) for s in sources]
    plain = [s for (camera, _), s in named if camera is None]
    if plain and (len(sources) > 1 or cfg.cameras):
        raise ConfigError(f"-s {plain[0]}: with several cameras, name each one: -s door=URL -s garage=URL")
    if plain:
        cfg.source = plain[0]
        return
    for (camera, locator), _ in named:
        assert camera is not None
        check_camera_id(camera, f"-s {camera}={locator}")
        existing = cfg.cameras.get(camera)
        if existing is not None and existing.where.startswith("-s"):
            raise ConfigError(f"-s {camera}=...: camera {camera!r} given twice; each camera needs its own id")
        if existing is not None:
            existing.source, existing.where = locator, f"-s {camera}"
        else:
            cfg.cameras[camera] = CameraConfig(camera, locator, where=f"-s {camera}")
    if cfg.source is not None:
        raise ConfigError(f"-s {sources[0]}: the deployment file gives one unnamed source; name it under cameras:"
                          " or give -s without a name")


def merge_cli(cfg: RunConfig, *, source: str | list[str] | None, stages: Iterable[str], outputs: Iterable[str],
              settings: Iterable[str], run: Mapping[str, Any]) -> RunConfig:
    """Lay command-line flags over a (possibly empty) deployment.

    ``source`` is one ``-s`` value or the list of repeated ``-s`` values; named ones
    (``door=URL``) make cameras. With cameras, ``-p`` and ``-o`` apply to every camera.
    """
    sources = [source] if isinstance(source, str) else list(source or [])
    if sources:
        _merge_sources(cfg, sources)
    stages = list(stages)
    if stages:
        cfg.stages = [_stage(s, f"-p {s}", default_kind="processor") for s in stages]
        for cam in cfg.cameras.values():
            cam.stages = None
    outputs = list(outputs)
    if outputs:
        cfg.outputs = [_stage(o, f"-o {o}", default_kind="output") for o in outputs]
        for cam in cfg.cameras.values():
            cam.outputs = None
    for item in settings:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"-c {item}: expected key=value, e.g. -c ollama-model=llava")
        cfg.raw_settings.append((key.strip(), value, f"-c {key.strip()}"))
    for key, value in run.items():
        if value is not None:
            cfg.run[key] = value
    return cfg
