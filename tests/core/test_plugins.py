"""Plugin loading, registry rules, the public API and a real third-party plugin."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from helpers import ROOT, run_cli

import framelens
from framelens import ConfigError, PluginError, Processor, RegisterFn, hookimpl
from framelens.plugin_manager import PluginManager, get_plugin_manager
from framelens.registry import Registry

PUBLIC_API = [
    "ApiError",
    "AsyncRunner",
    "BackendError",
    "BackgroundWorker",
    "Caption",
    "ChatChunk",
    "ChatMessage",
    "ChatResult",
    "ChoiceResult",
    "CommaList",
    "CommandRegister",
    "ComponentSpec",
    "ConfigError",
    "ContentPart",
    "Context",
    "Detection",
    "Detections",
    "Event",
    "EventBus",
    "FairShare",
    "Field",
    "Frame",
    "FramelensError",
    "GenerationParams",
    "HasCaption",
    "Health",
    "ImagePart",
    "LiveCapture",
    "ModelInfo",
    "Options",
    "Output",
    "OutputError",
    "Pipeline",
    "PluginError",
    "Processor",
    "RegisterBackend",
    "RegisterFn",
    "RegisterOutput",
    "RegisterPluginOptions",
    "RegisterProcessor",
    "RegisterService",
    "RegisterSource",
    "Results",
    "RouteRegister",
    "Service",
    "Site",
    "Source",
    "SourceError",
    "SourceInfo",
    "Stream",
    "StreamRegistry",
    "TextPart",
    "Usage",
    "VLMBackend",
    "VLMTimings",
    "VideoPart",
    "__version__",
    "boxes_of",
    "call_register_routes",
    "captions_of",
    "decode_image",
    "encode_jpeg",
    "fit_max_side",
    "hookimpl",
    "json_response",
    "read_json",
    "redact",
    "sniff_image_type",
]
"""``framelens.__all__``, exactly: adding or removing a public name is a decision made here."""


def test_public_api_is_pinned_sorted_and_complete() -> None:
    assert framelens.__all__ == PUBLIC_API
    assert PUBLIC_API == sorted(PUBLIC_API)
    public = {n for n in vars(framelens) if not n.startswith("_") and n != "annotations"
              and not isinstance(getattr(framelens, n), type(framelens))}
    assert public | {"__version__"} == set(PUBLIC_API), public ^ set(PUBLIC_API)
    assert all(hasattr(framelens, n) for n in PUBLIC_API)


def test_builtin_plugins_use_only_the_public_api() -> None:
    offenders = []
    for path in sorted((ROOT / "plugins").rglob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                mod = node.module
                # The public helper modules; a plugin reaches its own folder by relative imports
                # and never another plugin's modules.
                public = {"framelens", "framelens.web", "framelens.drawing", "framelens.opencv", "framelens.testing",
                          "framelens.cli", "framelens.mqtt"}
                internal = mod.startswith("framelens") and mod not in public
                if internal or mod.startswith("pluggy"):
                    offenders.append(f"{path.relative_to(ROOT)}: from {mod} import ...")
            if isinstance(node, ast.Import):
                offenders += [f"{path.relative_to(ROOT)}: import {a.name}" for a in node.names
                              if a.name.startswith("pluggy")]
    assert offenders == []


def test_builtins_are_registered_through_entry_points() -> None:
    import importlib.metadata

    dist = importlib.metadata.distribution("framelens")
    names = {ep.name for ep in dist.entry_points if ep.group == "framelens"}
    from framelens.plugin_manager import BUILTIN_PLUGINS

    assert {n for n, _ in BUILTIN_PLUGINS} == names
    loaded = {p.name: p.distribution for p in get_plugin_manager().loaded}
    assert all(loaded.get(n) == "framelens" for n in names)


def test_duplicate_component_names_are_reported_not_shadowed() -> None:
    class A:
        @hookimpl
        def register_processors(self, register: RegisterFn) -> None:
            register("dup", lambda o, c: None, help="from A")

    class B:
        @hookimpl
        def register_processors(self, register: RegisterFn) -> None:
            register("dup", lambda o, c: None, help="from B")

    pm = PluginManager()
    pm.register(A(), "plugin-a", "dist-a")
    pm.register(B(), "plugin-b", "dist-b")
    reg = pm.registry
    assert reg.get("processor", "dup").help == "from A"
    assert len(reg.problems) == 1
    problem = reg.problems[0]
    assert "processor 'dup' is registered twice" in problem
    assert "plugin-a (dist-a)" in problem and "plugin-b (dist-b)" in problem


def test_bad_registrations_are_rejected() -> None:
    class Bad:
        @hookimpl
        def register_processors(self, register: RegisterFn) -> None:
            register("Bad Name", lambda o, c: None)

    pm = PluginManager()
    pm.register(Bad(), "bad")
    with pytest.raises(PluginError, match="invalid processor name 'Bad Name'"):
        pm.registry  # noqa: B018


def test_resolve_by_name_scheme_and_claims() -> None:
    reg = Registry()
    r = reg.register_fn("source", "t", None)
    r("cam", lambda *a: None, claims=lambda s: s.isdigit())
    r("net", lambda *a: None, schemes=("rtsp",))
    assert reg.resolve("source", "net").name == "net"
    assert reg.resolve("source", "RTSP://x/y").name == "net"
    assert reg.resolve("source", "0").name == "cam"
    with pytest.raises(ConfigError, match=r"no source understands 'ftp://x' \(names: cam, net; URL schemes: rtsp://\)"):
        reg.resolve("source", "ftp://x")


def test_unknown_processor_suggests_names() -> None:
    reg = Registry()
    reg.register_fn("processor", "t", None)("captions", lambda o, c: None)
    with pytest.raises(ConfigError, match=r"unknown processor 'caption' \(did you mean captions\?\)"):
        reg.get("processor", "caption")


def test_list_shows_origin_and_options() -> None:
    proc = run_cli(["list", "testpattern", "--json"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    (spec,) = data["components"]
    assert spec["kind"] == "source" and spec["distribution"] == "framelens"
    keys = {o["key"]: o for o in spec["options"]}
    assert keys["testpattern-fps"]["type"] == "float" and keys["testpattern-fps"]["default"] == 30.0
    missing = run_cli(["list", "testpatern"])
    assert missing.returncode == 2
    assert "nothing is registered as 'testpatern' (did you mean testpattern" in missing.stderr


class Noop(Processor):
    def process(self, frame):  # type: ignore[no-untyped-def]
        return frame


def test_third_party_plugin_is_discovered_and_runs(example_plugin: Path) -> None:
    env = {"PYTHONPATH": str(example_plugin)}
    listed = run_cli(["list", "grayscale", "--json"], env=env)
    assert listed.returncode == 0, listed.stderr
    (spec,) = json.loads(listed.stdout)["components"]
    assert spec["distribution"] == "framelens-grayscale"
    assert spec["options"][0]["key"] == "grayscale-tint"
    ran = run_cli(["run", "-s", "testpattern", "--fps", "100", "-p", "grayscale", "-c", "grayscale-tint=0.1",
                   "-o", "none", "--max-frames", "10", "--benchmark"], env=env)
    assert ran.returncode == 0, ran.stderr
    report = json.loads(ran.stdout.strip().splitlines()[-1])
    assert report["processors"]["grayscale"]["calls"] == 10
    bad = run_cli(["run", "-s", "testpattern", "-p", "grayscale", "-c", "grayscale-tint=3", "-o", "none"], env=env)
    assert bad.returncode == 2
    assert "bad value for 'grayscale-tint': '3': Input should be less than or equal to 1" in bad.stderr


def test_load_plugins_env_limits_third_party(example_plugin: Path) -> None:
    env = {"PYTHONPATH": str(example_plugin), "FRAMELENS_LOAD_PLUGINS": ""}
    proc = run_cli(["list", "grayscale"], env=env)
    assert proc.returncode == 2
    blocked = run_cli(["list", "testpattern"], env={"FRAMELENS_DISABLE_PLUGINS": "sources"})
    assert blocked.returncode == 2
