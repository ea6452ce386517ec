"""Typed, validated plugin options.

Every registered component declares its options as a subclass of :class:`Options`
(a pydantic model). Field ``max_side`` is set on the command line as
``-c NAME-max-side=512`` and in YAML as ``max-side: 512`` or ``max_side: 512``.
Values given as strings are converted to the declared type; unknown keys are errors.
"""

from __future__ import annotations

import difflib
import json
import types
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import pydantic
from pydantic import BeforeValidator, ConfigDict, Field

from .errors import ConfigError

__all__ = [
    "CommaList",
    "Field",
    "OptionInfo",
    "Options",
    "closest",
    "describe_options",
    "option_key",
    "parse_options",
]


def option_key(field_name: str) -> str:
    """The user-facing spelling of an option field: ``max_side`` -> ``max-side``."""
    return field_name.replace("_", "-")


def _split_commas(value: Any) -> Any:
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


CommaList = Annotated[list[str], BeforeValidator(_split_commas)]
"""A list of strings that may also be given as ``a,b,c`` on the command line."""


class Options(pydantic.BaseModel):
    """Base class for a component's options.

    Subclass it and declare each option as a typed field with a default and a
    ``description`` (shown by ``framelens list``)::

        class BlurOptions(Options):
            ksize: int = Field(25, ge=1, description="Kernel size in pixels")

    Options are immutable once validated. Unknown keys are rejected.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        populate_by_name=True,
        alias_generator=option_key,
        validate_default=True,
    )


@dataclass(frozen=True)
class OptionInfo:
    """One option as shown to users: its key, type, default and help."""

    key: str
    type: str
    default: Any
    required: bool
    help: str


def _type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Annotated:
        return _type_name(get_args(annotation)[0])
    if origin in (Union, types.UnionType):
        names = [_type_name(a) for a in get_args(annotation) if a is not type(None)]
        optional = len(names) < len(get_args(annotation))
        return " | ".join(names) + (" (optional)" if optional else "")
    if get_origin(annotation) is Literal:
        return "|".join(str(a) for a in get_args(annotation))
    if origin is not None:
        args = ", ".join(_type_name(a) for a in get_args(annotation))
        name = getattr(origin, "__name__", str(origin))
        return "optional" if not args else f"{name}[{args}]"
    return getattr(annotation, "__name__", str(annotation)).replace("NoneType", "none")


def describe_options(model: type[Options]) -> list[OptionInfo]:
    """List the options a model declares, in declaration order."""
    infos = []
    for name, field in model.model_fields.items():
        required = field.is_required()
        default = None if required else field.get_default(call_default_factory=True)
        infos.append(
            OptionInfo(
                key=option_key(name),
                type=_type_name(field.annotation),
                default=default,
                required=required,
                help=field.description or "",
            )
        )
    return infos


def closest(word: str, candidates: Iterable[str]) -> list[str]:
    """Up to three candidates that look like ``word``, best first."""
    return difflib.get_close_matches(word, list(candidates), n=3, cutoff=0.5)


def _suggest(word: str, candidates: Sequence[str]) -> str:
    near = closest(word, candidates)
    if near:
        return f" (did you mean {', '.join(near)}?)"
    if candidates:
        return f" (valid keys: {', '.join(sorted(candidates))})"
    return " (this component takes no options)"


def _render_value(value: Any) -> str:
    if isinstance(value, str):
        return value
    try:
        return json.dumps(value)
    except TypeError:
        return repr(value)


def parse_options(
    model: type[Options],
    raw: Mapping[str, Any],
    *,
    namespace: str,
    where: str = "-c",
    origins: Mapping[str, str] | None = None,
) -> Options:
    """Validate ``raw`` (keys without the namespace prefix) against ``model``.

    ``where`` says where the values came from (``-c`` or ``deploy.yaml: processors[0]``)
    and prefixes every message; ``origins`` names a different place for single keys
    (``{"model": "-c ollama-model"}``). Raises :class:`ConfigError` with one line per problem.
    """
    origins = origins or {}
    known = {option_key(n): n for n in model.model_fields}
    data: dict[str, Any] = {}
    problems = []
    for key, value in raw.items():
        field_name = known.get(key) or (key if key in model.model_fields else None)
        if field_name is None:
            full = f"{namespace}-{key}"
            problems.append(
                f"{origins.get(key, where)}: unknown option '{full}'"
                + _suggest(full, [f"{namespace}-{k}" for k in known])
            )
            continue
        data[field_name] = value
    if problems:
        raise ConfigError("\n".join(problems))
    try:
        return model.model_validate(data)
    except pydantic.ValidationError as exc:
        lines = []
        for err in exc.errors():
            loc = err.get("loc") or ("?",)
            key = option_key(str(loc[0]))
            if err["type"] == "missing":
                lines.append(f"{origins.get(key, where)}: missing required option '{namespace}-{key}'")
                continue
            shown = _render_value(raw.get(key, raw.get(str(loc[0]), err.get("input"))))
            msg = str(err["msg"]).removeprefix("Value error, ")
            lines.append(f"{origins.get(key, where)}: bad value for '{namespace}-{key}': {shown!r}: {msg}")
        raise ConfigError("\n".join(lines)) from None
