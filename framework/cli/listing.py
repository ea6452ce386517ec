"""``framelens list``: every registered component, where it came from, and its options."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..errors import ConfigError
from ..options import closest, describe_options
from ..plugin_manager import get_plugin_manager
from ..registry import ComponentSpec

__all__ = ["add_parser", "spec_to_dict"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list plugins, their components and options",
                       description="List sources, processors, outputs, backends and services with their options.")
    p.add_argument("name", nargs="?", help="show only the component(s) with this name")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=handle)


def spec_to_dict(spec: ComponentSpec) -> dict[str, Any]:
    return {
        "kind": spec.kind,
        "name": spec.name,
        "help": spec.help,
        "plugin": spec.plugin,
        "distribution": spec.distribution,
        "schemes": list(spec.schemes),
        "options": [
            {"key": f"{spec.name}-{o.key}", "type": o.type, "default": o.default, "required": o.required,
             "help": o.help}
            for o in describe_options(spec.options)
        ],
    }


def _text(spec: ComponentSpec) -> str:
    origin = spec.plugin + (f" ({spec.distribution})" if spec.distribution else "")
    lines = [f"{spec.kind} {spec.name}: {spec.help}".rstrip(": "), f"  from: {origin}"]
    if spec.schemes:
        lines.append("  schemes: " + ", ".join(f"{s}://" for s in spec.schemes))
    for o in describe_options(spec.options):
        default = "(required)" if o.required else f"default {json.dumps(o.default, default=str)}"
        lines.append(f"  -c {spec.name}-{o.key}=<{o.type}>  {default}")
        if o.help:
            lines.append(f"      {o.help}")
    return "\n".join(lines)


def handle(args: argparse.Namespace) -> int:
    registry = get_plugin_manager().registry
    specs = [s for s in registry.all() if args.name in (None, s.name)]
    if args.name and not specs:
        names = sorted({s.name for s in registry.all()})
        near = closest(args.name, names)
        hint = f"did you mean {', '.join(near)}?" if near else "run `framelens list` to see them all"
        raise ConfigError(f"nothing is registered as {args.name!r} ({hint})")
    if args.json:
        print(json.dumps({"components": [spec_to_dict(s) for s in specs], "problems": registry.problems},
                         indent=2, default=str))
        return 0
    print("\n\n".join(_text(s) for s in specs))
    for problem in registry.problems:
        print(f"\nwarning: {problem}")
    return 0
