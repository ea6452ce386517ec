"""``framelens list``: every plugin with its components, commands, routes and hooks; one component's options."""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError
from ..options import OptionInfo, closest, describe_options
from ..plugin_manager import PluginManager, get_plugin_manager
from ..rate import RateOptions
from ..registry import KINDS, ComponentSpec, PluginOptionsSpec
from .commands import collect_commands

__all__ = ["add_parser", "plugin_routes", "plugins_to_dicts", "spec_to_dict"]


def add_parser(sub: Any) -> None:
    p = sub.add_parser("list", help="list plugins, their components and options",
                       description="List every plugin with its sources, processors, outputs, backends, services,"
                       " commands, HTTP routes and hooks; with NAME, that component's options.")
    p.add_argument("name", nargs="?", help="show only the component(s) with this name")
    p.add_argument("--json", action="store_true", help="print JSON instead of text")
    p.set_defaults(handler=handle)


def _options(spec: ComponentSpec) -> list[OptionInfo]:
    """The component's own options and, for a processor, the core's rate options it does not
    declare itself (``every``, ``max-fps``: the runtime applies them)."""
    own = describe_options(spec.options)
    if spec.kind != "processor":
        return own
    keys = {o.key for o in own}
    return [*own, *(o for o in describe_options(RateOptions) if o.key not in keys)]


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
            for o in _options(spec)
        ],
    }


def plugin_routes(manager: PluginManager) -> tuple[dict[str, list[str]], list[str]]:
    """``"METHOD /path"`` of the routes each plugin's ``register_routes`` adds, with no server.

    The hooks get a throwaway context and a register that only records; a hook that fails
    is reported, not fatal.
    """
    from ..context import Context

    routes: dict[str, list[str]] = {}
    problems: list[str] = []
    context = Context(manager.registry, plugins=manager)
    try:
        for impl in manager.pm.hook.register_routes.get_hookimpls():
            found = routes.setdefault(impl.plugin_name, [])

            def record(path: str, endpoint: Callable[..., Any], methods: Sequence[str] = ("GET",),
                       name: str | None = None, *, _found: list[str] = found, **_doc: Any) -> None:
                _found.extend(f"{m.upper()} {path}" for m in methods)

            kwargs: dict[str, Any] = {"register": record, "context": context}
            try:
                impl.function(**{a: kwargs[a] for a in impl.argnames})
            except Exception as exc:
                problems.append(f"plugin {impl.plugin_name!r}: register_routes failed: {exc}")
    finally:
        context.close()
    return routes, problems


def plugins_to_dicts(manager: PluginManager) -> tuple[list[dict[str, Any]], list[str]]:
    """Each loaded plugin (entry-point name, distribution, version) with what it provides."""
    from .. import __version__

    registry = manager.registry
    commands = collect_commands(manager)
    routes, problems = plugin_routes(manager)
    out = []
    for loaded in manager.loaded:
        plugin = manager.pm.get_plugin(loaded.name)
        hooks = sorted(hc.name for hc in manager.pm.get_hookcallers(plugin) or [])
        version = loaded.version or (__version__ if loaded.distribution == "framelens" else None)
        out.append({
            "name": loaded.name,
            "module": loaded.module,
            "distribution": loaded.distribution,
            "version": version,
            "components": {kind: [s.name for s in registry.all(kind) if s.plugin == loaded.name]
                           for kind in KINDS},
            "commands": commands.by_plugin.get(loaded.name, []),
            "routes": routes.get(loaded.name, []),
            "hooks": hooks,
        })
    return out, [*commands.problems, *problems]


def _text(spec: ComponentSpec, indent: str = "") -> str:
    origin = spec.plugin + (f" ({spec.distribution})" if spec.distribution else "")
    lines = [f"{spec.kind} {spec.name}: {spec.help}".rstrip(": "), f"  from: {origin}"]
    if spec.schemes:
        lines.append("  schemes: " + ", ".join(f"{s}://" for s in spec.schemes))
    for o in _options(spec):
        default = "(required)" if o.required else f"default {json.dumps(o.default, default=str)}"
        lines.append(f"  -c {spec.name}-{o.key}=<{o.type}>  {default}")
        if o.help:
            lines.append(f"      {o.help}")
    return "\n".join(indent + line for line in lines)


def _options_text(extra: PluginOptionsSpec, indent: str = "") -> str:
    """A route-only plugin's ``-c`` options (``register_plugin_options``), shown like a component's."""
    origin = extra.plugin + (f" ({extra.distribution})" if extra.distribution else "")
    lines = [f"options {extra.namespace}: {extra.help}".rstrip(": "), f"  from: {origin}"]
    for o in describe_options(extra.options):
        default = "(required)" if o.required else f"default {json.dumps(o.default, default=str)}"
        lines.append(f"  -c {extra.namespace}-{o.key}=<{o.type}>  {default}")
        if o.help:
            lines.append(f"      {o.help}")
    return "\n".join(indent + line for line in lines)


def _plugin_text(info: dict[str, Any], specs: list[ComponentSpec], extras: Sequence[PluginOptionsSpec] = ()) -> str:
    origin = " ".join(str(v) for v in (info["distribution"], info["version"]) if v) or "no distribution"
    lines = [f"plugin {info['name']}: {origin} ({info['module']})"]
    lines.append("  hooks: " + (", ".join(info["hooks"]) or "none"))
    for kind in KINDS:
        if info["components"][kind]:
            lines.append(f"  {kind}s: " + ", ".join(info["components"][kind]))
    if info["commands"]:
        lines.append("  commands: " + ", ".join(info["commands"]))
    if info["routes"]:
        lines.append("  routes: " + ", ".join(info["routes"]))
    parts = [*("\n" + _text(s, "  ") for s in specs), *("\n" + _options_text(o, "  ") for o in extras)]
    return "\n".join([*lines, *parts])


def handle(args: argparse.Namespace) -> int:
    manager = get_plugin_manager()
    registry = manager.registry
    specs = [s for s in registry.all() if args.name in (None, s.name)]
    extras = [o for o in registry.plugin_options.values() if args.name in (None, o.namespace)]
    if args.name and not specs and not extras:
        names = sorted({s.name for s in registry.all()} | set(registry.plugin_options))
        near = closest(args.name, names)
        hint = f"did you mean {', '.join(near)}?" if near else "run `framelens list` to see them all"
        raise ConfigError(f"nothing is registered as {args.name!r} ({hint})")
    if args.name:
        plugins: list[dict[str, Any]] = []
        problems = list(registry.problems)
    else:
        plugins, more = plugins_to_dicts(manager)
        problems = [*registry.problems, *more]
    if args.json:
        data = {"components": [spec_to_dict(s) for s in specs], "problems": problems}
        if extras:
            data["plugin_options"] = [
                {"namespace": o.namespace, "help": o.help, "plugin": o.plugin, "distribution": o.distribution,
                 "options": [{"key": f"{o.namespace}-{d.key}", "type": d.type, "default": d.default,
                              "required": d.required, "help": d.help} for d in describe_options(o.options)]}
                for o in extras]
        if plugins:
            data = {"plugins": plugins, **data}
        print(json.dumps(data, indent=2, default=str))
        return 0
    if args.name:
        print("\n\n".join([*(_text(s) for s in specs), *(_options_text(o) for o in extras)]))
    else:
        print("\n\n".join(_plugin_text(p, [s for s in specs if s.plugin == p["name"]],
                                        [o for o in extras if o.plugin == p["name"]]) for p in plugins))
    for problem in problems:
        print(f"\nwarning: {problem}")
    return 0
