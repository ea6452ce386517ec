"""Plugin commands: the ``register_commands`` hook and its guard against taken names."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..plugin_manager import PluginManager

__all__ = ["CORE_COMMANDS", "CommandTable", "GuardedCommands", "collect_commands"]

CORE_COMMANDS = ("run", "list", "version")


@dataclass
class CommandTable:
    """Which plugin added which command, and the registrations that were refused."""

    owners: dict[str, str] = field(default_factory=lambda: {name: "framelens" for name in CORE_COMMANDS})
    by_plugin: dict[str, list[str]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class GuardedCommands:
    """The ``cli`` a plugin's ``register_commands`` gets: argparse's sub-parsers, refusing taken names."""

    def __init__(self, sub: Any, plugin: str, table: CommandTable) -> None:
        self._sub = sub
        self._plugin = plugin
        self._table = table

    def add_parser(self, name: str, **kwargs: Any) -> argparse.ArgumentParser:
        names = [name, *kwargs.get("aliases", ())]
        for n in names:
            owner = self._table.owners.get(n)
            if owner is not None:
                whose = "a core command" if owner == "framelens" else f"already added by plugin {owner!r}"
                self._table.problems.append(
                    f"plugin {self._plugin!r} adds the command {n!r}, which is {whose}; it is ignored."
                    f" Uninstall one, or block it with FRAMELENS_DISABLE_PLUGINS={self._plugin}"
                )
                # Detached, so the plugin's remaining add_argument calls still work.
                return argparse.ArgumentParser(prog=f"framelens {name}", add_help=False)
        parser: argparse.ArgumentParser = self._sub.add_parser(name, **kwargs)
        for n in names:
            self._table.owners[n] = self._plugin
        self._table.by_plugin.setdefault(self._plugin, []).append(name)
        return parser

    def __getattr__(self, attr: str) -> Any:
        return getattr(self._sub, attr)


def collect_commands(manager: PluginManager, sub: Any | None = None) -> CommandTable:
    """Call every plugin's ``register_commands`` in load order, into ``sub`` (or a scratch parser).

    A plugin whose hook raises is reported, not fatal: one broken plugin must not take
    the whole command line down.
    """
    if sub is None:
        sub = argparse.ArgumentParser(prog="framelens").add_subparsers()
    table = CommandTable()
    # get_hookimpls() is in registration order: the first plugin loaded that adds a name keeps it.
    for impl in manager.pm.hook.register_commands.get_hookimpls():
        cli = GuardedCommands(sub, impl.plugin_name, table)
        try:
            impl.function(**{a: cli for a in impl.argnames})
        except Exception as exc:
            table.problems.append(f"plugin {impl.plugin_name!r} failed to add its commands: {exc}")
    return table
