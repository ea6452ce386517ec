"""Options of the ``mqtt`` service (``-c mqtt-KEY=VALUE``)."""

from __future__ import annotations

import re
import socket

from pydantic import field_validator

from framelens import CommaList, Field, Options
from framelens.mqtt import parse_mqtt_url

__all__ = ["DEFAULT_QOS", "DEFAULT_RETAIN", "MqttOptions", "default_node"]

# Descriptions, alert transitions and source state are what automations act on: at least once.
DEFAULT_QOS: dict[str, int] = {"description": 1, "alert": 1, "source": 1, "describer": 1}
# Retained: a subscriber that connects later gets each camera's newest description and source state.
DEFAULT_RETAIN: tuple[str, ...] = ("description", "source")

_LEVEL = re.compile(r"^[A-Za-z0-9_.-]+$")


def default_node() -> str:
    """This host's name reduced to what a topic level and an MQTT client id may hold."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", socket.gethostname())[:48] or "framelens"


class MqttOptions(Options):
    url: str = Field(description="Broker and topic prefix: mqtt[s]://[user:pass@]host[:port]/prefix")
    node: str = Field(default_factory=default_node,
                      description="This process's name in PREFIX/_nodes/NODE/availability (default: host name)")
    qos: CommaList = Field(default_factory=list,
                           description="QoS per event type, e.g. description:1,alert:2 (default: 1 for "
                                       "description, alert, source, describer; 0 otherwise)")
    retain: CommaList | None = Field(None, description="Event types whose PREFIX/CAMERA/TYPE message is "
                                                       "retained (default: description,source; 'none' for none)")
    types: CommaList = Field(default_factory=list, description="Only publish these event types (default: all)")
    max_buffered: int = Field(10000, ge=1, le=10_000_000,
                              description="Messages kept while the broker is away; beyond it the oldest are "
                                          "dropped and counted")
    keepalive: int = Field(30, ge=5, le=3600, description="MQTT keep-alive in seconds")
    homeassistant: bool = Field(False, description="Publish Home Assistant discovery: a binary sensor per alert "
                                                   "rule, a text sensor per describer")
    discovery_prefix: str = Field("homeassistant", description="Home Assistant's discovery prefix")
    ask: bool = Field(True, description="Answer questions sent to PREFIX/CAMERA/ask on PREFIX/CAMERA/answer")
    backend: str | None = Field(None, description="Backend that answers ask questions (default: the run's "
                                                  "--backend)")
    ask_timeout: float = Field(60.0, gt=0, description="Seconds an ask may take before it is answered with an "
                                                       "error")
    ask_max_tokens: int = Field(256, ge=1, le=32768, description="Most tokens in an answer")
    ask_max_side: int = Field(1024, ge=0, le=8192, description="Longest image side sent with a question "
                                                               "(0: unchanged)")
    max_asks: int = Field(8, ge=1, le=1024, description="Questions answered at once; more are refused with an "
                                                        "error answer")

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        parse_mqtt_url(value)
        return value

    @field_validator("node")
    @classmethod
    def _check_node(cls, value: str) -> str:
        if not _LEVEL.match(value):
            raise ValueError(f"{value!r}: use letters, digits, '_', '.', '-' (it becomes a topic level)")
        return value

    @field_validator("qos")
    @classmethod
    def _check_qos(cls, value: list[str]) -> list[str]:
        for item in value:
            kind, sep, level = item.partition(":")
            if not sep or not kind.strip() or level.strip() not in ("0", "1", "2"):
                raise ValueError(f"{item!r}: expected TYPE:QOS with QOS 0, 1 or 2 (e.g. alert:2)")
        return value

    @field_validator("discovery_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or any(c in value for c in "+#") or "//" in value:
            raise ValueError(f"{value!r} is not a topic prefix")
        return value

    def qos_for(self) -> dict[str, int]:
        """The QoS of each event type named here or by default."""
        levels = dict(DEFAULT_QOS)
        for item in self.qos:
            kind, _, level = item.partition(":")
            levels[kind.strip()] = int(level)
        return levels

    def retained(self) -> frozenset[str]:
        if self.retain is None:
            return frozenset(DEFAULT_RETAIN)
        return frozenset(t for t in self.retain if t.lower() != "none")
