"""Options: typed parsing, namespaced keys and the messages users see."""

from __future__ import annotations

import pytest

from framelens import CommaList, ConfigError, Field, Options
from framelens.options import describe_options, parse_options


class DemoOptions(Options):
    model: str = Field("llava", description="Model name")
    max_side: int = Field(1024, ge=16, description="Longest side")
    temperature: float | None = Field(None, description="Sampling temperature")
    stream: bool = Field(True, description="Stream tokens")
    urls: CommaList = Field(default_factory=lambda: ["http://a"], description="Base URLs")


class RequiredOptions(Options):
    rules: str = Field(description="Rules")


def test_strings_are_parsed_to_declared_types() -> None:
    opts = parse_options(DemoOptions, {"max-side": "512", "temperature": "0.2", "stream": "false",
                                       "urls": "http://a:1,http://b:2"}, namespace="ollama")
    assert isinstance(opts, DemoOptions)
    assert opts.max_side == 512
    assert opts.temperature == pytest.approx(0.2)
    assert opts.stream is False
    assert opts.urls == ["http://a:1", "http://b:2"]


def test_underscore_spelling_is_accepted_too() -> None:
    opts = parse_options(DemoOptions, {"max_side": 300}, namespace="ollama")
    assert isinstance(opts, DemoOptions) and opts.max_side == 300


def test_unknown_key_names_the_closest_valid_key() -> None:
    with pytest.raises(ConfigError) as err:
        parse_options(DemoOptions, {"modle": "x"}, namespace="ollama")
    msg = str(err.value)
    assert "unknown option 'ollama-modle'" in msg
    assert "did you mean ollama-model" in msg
    assert "\n" not in msg


def test_bad_value_names_key_value_and_reason() -> None:
    with pytest.raises(ConfigError) as err:
        parse_options(DemoOptions, {"max-side": "huge"}, namespace="ollama", where="-c ollama-max-side")
    msg = str(err.value)
    assert msg.startswith("-c ollama-max-side: bad value for 'ollama-max-side': 'huge'")
    assert "integer" in msg


def test_constraint_violation_is_reported() -> None:
    with pytest.raises(ConfigError, match="greater than or equal to 16"):
        parse_options(DemoOptions, {"max-side": "2"}, namespace="ollama")


def test_missing_required_option() -> None:
    with pytest.raises(ConfigError, match="missing required option 'alerts-rules'"):
        parse_options(RequiredOptions, {}, namespace="alerts")


def test_options_are_immutable() -> None:
    opts = parse_options(DemoOptions, {}, namespace="x")
    with pytest.raises(Exception):  # noqa: B017 - pydantic raises ValidationError for frozen models
        opts.model = "other"  # type: ignore[misc]


def test_describe_options_lists_key_type_default_help() -> None:
    infos = {i.key: i for i in describe_options(DemoOptions)}
    assert list(infos) == ["model", "max-side", "temperature", "stream", "urls"]
    assert infos["max-side"].type == "int"
    assert infos["max-side"].default == 1024
    assert infos["model"].help == "Model name"
    assert infos["urls"].default == ["http://a"]
    req = describe_options(RequiredOptions)[0]
    assert req.required and req.default is None
