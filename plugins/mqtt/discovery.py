"""Home Assistant MQTT discovery: a binary sensor per alert rule, a text sensor per describer.

Each camera becomes a Home Assistant device (``framelens CAMERA``), as Frigate's
cameras do. The config messages are retained under the discovery prefix and
point at the retained per-rule / per-describer state topics, with the node's
availability topic, so a camera's sensors go *unavailable* when its process dies.
Sensors are announced when their first event is seen and again after every
reconnection and every ``homeassistant/status`` ``online`` (Home Assistant's
birth message), so a restarted Home Assistant finds them again.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from typing import Any

from .topics import rule_topic_key

__all__ = ["Discovery", "Entity"]

# HA keeps a sensor's state as at most 255 characters; the full text stays in the attributes.
_TEXT_STATE = "{{ value_json.payload.text[:255] }}"
_ALERT_STATE = ("{% if value_json.payload.state == 'on' %}ON{% elif value_json.payload.state == 'off' %}OFF"
                "{% else %}None{% endif %}")


@dataclass(frozen=True)
class Entity:
    """One sensor: ``kind`` ``alert`` (binary sensor) or ``describer`` (text sensor)."""

    kind: str
    camera: str
    key: str
    state_topic: str
    label: str


class Discovery:
    """Builds and remembers discovery configs; the service publishes what :meth:`see` returns."""

    def __init__(self, *, discovery_prefix: str, topic_prefix: str, availability: str) -> None:
        self.discovery_prefix = discovery_prefix
        self.topic_prefix = topic_prefix
        self.availability = availability
        self._entities: dict[tuple[str, str, str], Entity] = {}
        self._lock = threading.Lock()

    def see(self, entity: Entity) -> tuple[str, str] | None:
        """The (topic, config) to publish for a sensor seen for the first time, else ``None``."""
        with self._lock:
            ident = (entity.kind, entity.camera, entity.key)
            if ident in self._entities:
                return None
            self._entities[ident] = entity
        return self.topic(entity), json.dumps(self.config(entity))

    def forget(self, kind: str, camera: str, key: str) -> str | None:
        """The config topic to clear (empty retained message) for a deleted sensor."""
        with self._lock:
            entity = self._entities.pop((kind, camera, key), None)
        return None if entity is None else self.topic(entity)

    def all(self) -> list[tuple[str, str]]:
        """Every known sensor's (topic, config), to announce again."""
        with self._lock:
            entities = list(self._entities.values())
        return [(self.topic(e), json.dumps(self.config(e))) for e in entities]

    def topic(self, entity: Entity) -> str:
        component = "binary_sensor" if entity.kind == "alert" else "sensor"
        node = rule_topic_key("framelens", self.topic_prefix)
        return f"{self.discovery_prefix}/{component}/{node}/{rule_topic_key(entity.camera, entity.key)}/config"

    def config(self, entity: Entity) -> dict[str, Any]:
        device_id = rule_topic_key(f"framelens_{self.topic_prefix}", entity.camera)
        config: dict[str, Any] = {
            "name": entity.label,
            "unique_id": rule_topic_key(f"{device_id}_{entity.kind}", entity.key),
            "state_topic": entity.state_topic,
            "json_attributes_topic": entity.state_topic,
            "json_attributes_template": "{{ value_json.payload | tojson }}",
            "availability_topic": self.availability,
            "payload_available": "online",
            "payload_not_available": "offline",
            "device": {"identifiers": [device_id], "name": f"framelens {entity.camera}", "manufacturer": "framelens",
                       "model": "camera"},
        }
        if entity.kind == "alert":
            config.update(value_template=_ALERT_STATE, payload_on="ON", payload_off="OFF")
        else:
            config.update(value_template=_TEXT_STATE, icon="mdi:cctv")
        return config
