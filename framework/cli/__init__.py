"""The ``framelens`` command line: ``run``, ``list``, ``version`` and the commands plugins add.

Plugins add commands with the ``register_commands`` hook. A command that runs a
pipeline reuses the ``run`` flags through the public helpers here::

    from framelens import Pipeline
    from framelens.cli import add_pipeline_arguments, config_from_args

    def handle(args: argparse.Namespace) -> int:
        Pipeline.from_config(config_from_args(args)).run()
        return 0

    @hookimpl
    def register_commands(cli: CommandRegister) -> None:
        p = cli.add_parser("watch", help="run my pipeline")
        add_pipeline_arguments(p)              # -f, -p, -c, --backend, --events, --log-level
        p.set_defaults(handler=handle)
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import ConfigError, FramelensError
from . import listing, run
from .commands import CORE_COMMANDS, CommandTable, collect_commands
from .run import add_pipeline_arguments, config_from_args

__all__ = ["CORE_COMMANDS", "add_pipeline_arguments", "build_parser", "config_from_args", "main"]


def build_parser(*, plugin_commands: bool = True) -> argparse.ArgumentParser:
    """The parser with the core commands and, if ``plugin_commands``, those plugins add."""
    return _build(plugin_commands)[0]


def _build(plugin_commands: bool) -> tuple[argparse.ArgumentParser, CommandTable]:
    parser = argparse.ArgumentParser(
        prog="framelens",
        description="Frame-processor framework for live video and vision-language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    run.add_parser(sub)
    listing.add_parser(sub)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    table = CommandTable()
    if plugin_commands:
        from ..plugin_manager import get_plugin_manager

        table = collect_commands(get_plugin_manager(), sub)
    return parser, table


def _version(_args: argparse.Namespace) -> int:
    from .. import __version__

    print(f"framelens {__version__}")
    return 0


def setup_logging(level: str) -> None:
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "httpcore", "uvicorn.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``framelens`` command; returns the exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    # The core commands need no plugin commands, so `framelens version` loads no plugins;
    # `framelens list` reports refused plugin commands itself.
    first = next((a for a in args_list if not a.startswith("-")), None)
    parser, table = _build(plugin_commands=first not in CORE_COMMANDS)
    for problem in table.problems:
        print(f"framelens: warning: {problem}", file=sys.stderr)
    args = parser.parse_args(args_list)
    if not getattr(args, "handler", None):
        parser.print_help()
        return 2
    setup_logging(getattr(args, "log_level", None) or "info")
    try:
        status: int = args.handler(args)
        return status
    except ConfigError as exc:
        print(f"framelens: error: {exc}", file=sys.stderr)
        return 2
    except FramelensError as exc:
        print(f"framelens: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
