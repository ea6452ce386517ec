"""The ``framelens`` command line: ``run``, ``serve``, ``list`` and ``version``."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from ..errors import ConfigError, FramelensError
from . import listing, run, serve

__all__ = ["main"]

COMMANDS = (run, serve, listing)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framelens",
        description="Frame-processor framework for live video and vision-language models.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMANDS:
        module.add_parser(sub)
    version = sub.add_parser("version", help="print the version")
    version.set_defaults(handler=_version)
    return parser


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
    parser = build_parser()
    args = parser.parse_args(argv)
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
