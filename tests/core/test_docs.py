"""The plugin guide documents every hook with its exact signature (as datasette does)."""

from __future__ import annotations

import inspect

from helpers import ROOT

from framelens import hookspecs


def test_every_hook_is_documented() -> None:
    guide = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [(name, fn) for name, fn in vars(hookspecs).items() if name.startswith("register_") and callable(fn)]
    assert len(hooks) >= 6
    for name, fn in hooks:
        args = ", ".join(inspect.signature(fn).parameters)
        assert f"### {name}({args})" in guide, f"docs/plugins.md lacks a section for {name}({args})"
        assert fn.__doc__ and ":param register:" in fn.__doc__
