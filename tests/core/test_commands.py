"""Commands from plugins (``register_commands``) and ``framelens list`` per plugin."""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys

import pytest
from helpers import ROOT, run_cli

from framelens import CommandRegister, ConfigError, FramelensError, hookimpl
from framelens.cli import add_pipeline_arguments, config_from_args, main
from framelens.cli.commands import collect_commands
from framelens.plugin_manager import PluginManager
from framelens.testing import plugin_registered


def greet(args: argparse.Namespace) -> int:
    if args.fail == "config":
        raise ConfigError(f"--name {args.name!r}: names start with a letter")
    if args.fail == "runtime":
        raise FramelensError("the greeter is down")
    cfg = config_from_args(args, default_output=None)
    print(f"hello {args.name}; processors: {[s.name for s in cfg.stages]}; backend: {cfg.run.get('backend')}")
    return 0


class Greeter:
    @hookimpl
    def register_commands(self, cli: CommandRegister) -> None:
        p = cli.add_parser("greet", help="say hello")
        p.add_argument("--name", default="world")
        p.add_argument("--fail", choices=["config", "runtime"])
        add_pipeline_arguments(p)
        p.set_defaults(handler=greet)


class Shadow:
    """Tries to take a core command and the greeter's command."""

    def __init__(self) -> None:
        self.parsers: list[argparse.ArgumentParser] = []

    @hookimpl
    def register_commands(self, cli: CommandRegister) -> None:
        for name in ("run", "greet", "shadow"):
            p = cli.add_parser(name, help="mine")
            p.add_argument("--mine")  # a refused name still gets a parser to configure
            p.set_defaults(handler=lambda args: 42)
            self.parsers.append(p)


class Broken:
    @hookimpl
    def register_commands(self, cli: CommandRegister) -> None:
        raise RuntimeError("cannot import my engine")


def test_a_plugin_command_runs_with_the_pipeline_flags(capsys: pytest.CaptureFixture[str]) -> None:
    with plugin_registered(Greeter(), "test-greeter"):
        assert main(["greet", "--name", "ada", "-p", "fps", "-p", "captions", "--backend", "nim"]) == 0
        assert capsys.readouterr().out == "hello ada; processors: ['fps', 'captions']; backend: nim\n"
        assert main(["greet", "--fail", "config"]) == 2
        assert capsys.readouterr().err == "framelens: error: --name 'world': names start with a letter\n"
        assert main(["greet", "--fail", "runtime"]) == 1
        assert capsys.readouterr().err == "framelens: error: the greeter is down\n"


def test_taken_command_names_are_refused_and_reported() -> None:
    pm = PluginManager()
    shadow = Shadow()
    pm.register(Greeter(), "greeter", "dist-g")
    pm.register(shadow, "shadow", "dist-s")
    pm.register(Broken(), "broken", "dist-b")
    parser = argparse.ArgumentParser(prog="framelens")
    table = collect_commands(pm, parser.add_subparsers(dest="command"))
    assert table.by_plugin == {"greeter": ["greet"], "shadow": ["shadow"]}
    assert table.owners["run"] == "framelens" and table.owners["greet"] == "greeter"
    assert table.problems == [
        "plugin 'shadow' adds the command 'run', which is a core command; it is ignored."
        " Uninstall one, or block it with FRAMELENS_DISABLE_PLUGINS=shadow",
        "plugin 'shadow' adds the command 'greet', which is already added by plugin 'greeter'; it is ignored."
        " Uninstall one, or block it with FRAMELENS_DISABLE_PLUGINS=shadow",
        "plugin 'broken' failed to add its commands: cannot import my engine",
    ]
    assert len(shadow.parsers) == 3
    args = parser.parse_args(["greet", "--name", "x"])
    assert args.handler is greet, "the first plugin keeps the name"
    assert parser.parse_args(["shadow"]).handler(None) == 42


def test_refused_commands_are_warned_about_on_stderr(capsys: pytest.CaptureFixture[str]) -> None:
    with plugin_registered(Greeter(), "test-greeter"), plugin_registered(Shadow(), "test-shadow"):
        assert main(["shadow"]) == 42
    err = capsys.readouterr().err
    assert "framelens: warning: plugin 'test-shadow' adds the command 'run', which is a core command" in err
    assert "framelens: warning: plugin 'test-shadow' adds the command 'greet', which is already added" in err


def test_the_core_command_line_knows_no_plugin() -> None:
    text = "\n".join(p.read_text() for p in sorted((ROOT / "framework" / "cli").glob("*.py")))
    assert re.findall(r"\bhttp\b(?!s?://)|\bserve\b|\balerts-|\bdescribe-", text) == []


def test_serve_comes_from_the_http_plugin() -> None:
    top = run_cli(["--help"])
    assert re.search(r"^\s+serve\s+serve the OpenAI-compatible API without a pipeline$", top.stdout, re.M)
    helped = run_cli(["serve", "--help"])
    assert helped.returncode == 0
    for flag in ("--host HOST", "--port PORT", "-o TARGET", "-f FILE", "-p NAME[:ID]",
                 "-c KEY=VALUE", "--backend NAME", "--events PATH", "--log-level"):
        assert flag in helped.stdout, flag
    assert re.search(r"-s \S*SOURCE, --source", helped.stdout)
    assert "framelens serve --port 9000 --backend nim -c nim-url=http://localhost:8000/v1" in helped.stdout


def test_list_shows_each_plugin_with_components_commands_routes_and_hooks() -> None:
    proc = run_cli(["list", "--json"])
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    plugins = {p["name"]: p for p in data["plugins"]}
    http, alerts, sources = plugins["http"], plugins["alerts"], plugins["sources"]
    assert (http["distribution"], http["module"]) == ("framelens", "framelens.plugins.http")
    assert http["version"] and http["commands"] == ["serve"] and http["components"]["service"] == ["http"]
    assert {"register_commands", "register_services"} <= set(http["hooks"])
    assert {"GET /v1/alerts", "POST /v1/alerts", "DELETE /v1/alerts/{rule_id}"} <= set(alerts["routes"])
    assert "register_routes" in alerts["hooks"] and alerts["components"]["processor"] == ["alerts"]
    assert "testpattern" in sources["components"]["source"] and sources["routes"] == []
    assert {c["name"] for c in data["components"]} >= {"testpattern", "http", "alerts"}
    text = run_cli(["list"])
    assert text.returncode == 0, text.stderr
    block = text.stdout.split("plugin http:", 1)[1].split("\nplugin ", 1)[0]
    assert "  commands: serve" in block and "  services: http" in block and "register_commands" in block
    assert "-c http-port=<int>  default 9000" in block
    assert "  routes: GET /v1/alerts, POST /v1/alerts" in text.stdout


def test_core_commands_load_no_plugin_for_their_parser() -> None:
    # `framelens version` stays as fast as before plugins could add commands.
    code = ("import sys; from framelens.cli import main; status = main(['version']);"
            " loaded = sorted(m for m in sys.modules if m.startswith('framelens.plugins.'));"
            " print(status, loaded)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "0 []"
