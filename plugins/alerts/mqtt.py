"""The MQTT notifier: alert transitions to a broker through paho-mqtt, reconnecting on loss.

Topics under the URL's prefix (``mqtt://host:1883/framelens`` -> ``framelens``):

``<prefix>/alerts/<rule id>``  retained: the rule's newest transition event; an empty
                               retained message when the rule is deleted
``<prefix>/events``            every transition event (not retained)
``<prefix>/status``            retained ``online`` while connected, ``offline`` as the last will

The event-bus subscriber only queues; :class:`framelens.mqtt.MqttConnection`
keeps messages (bounded) while the broker is away and sends them in order
after it reconnects, QoS 0 included. After every (re)connection the current
state of every rule is published again, so a broker that restarted without
persistence gets its retained states back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from framelens import Event
from framelens.mqtt import MqttConnection, MqttTarget, parse_mqtt_url

__all__ = ["MqttNotifier", "MqttTarget", "parse_mqtt_url"]

log = logging.getLogger("framelens.alerts")


class MqttNotifier:
    """Publishes one alerts processor's events; ``current`` gives every rule's last event for republishing.

    The connection, its bounded buffer and the ``status`` last will are
    :class:`framelens.mqtt.MqttConnection`'s, shared with the ``mqtt`` service.
    """

    def __init__(
        self,
        target: MqttTarget,
        *,
        processor_id: str,
        current: Callable[[], list[dict[str, Any]]],
        qos: int = 1,
        keepalive: int = 30,
        max_queued: int = 10000,
    ) -> None:
        self.target = target
        self.processor_id = processor_id
        self.qos = qos
        self._current = current
        self._conn = MqttConnection(target, client_id=f"framelens-{processor_id}",
                                    availability="/".join((target.prefix, "status")), max_buffered=max_queued,
                                    keepalive=keepalive, on_connect=self._republish, name="alerts mqtt",
                                    logger=log)

    @property
    def published(self) -> int:
        return self._conn.published

    def topic(self, *levels: str) -> str:
        return self._conn.topic(*levels)

    def start(self) -> None:
        """Connect in the background (a broker that is down now is retried, not fatal)."""
        self._conn.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._conn.wait_connected(timeout)

    def _republish(self, conn: MqttConnection) -> None:
        # A broker that restarted without persistence gets every rule's retained state back.
        for payload in self._current():
            conn.publish_now(self.topic("alerts", payload["payload"]["rule"]), json.dumps(payload, default=str),
                             qos=self.qos, retain=True)

    def __call__(self, event: Event) -> None:
        """Event-bus subscriber: queue the event and return at once."""
        if event.type != "alert" or event.payload.get("processor") != self.processor_id:
            return
        payload = event.payload
        text = event.to_json()
        # A deleted rule's retained state is cleared with an empty retained message.
        state_message = "" if payload["state"] == "deleted" else text
        self._conn.publish(self.topic("alerts", str(payload["rule"])), state_message, qos=self.qos, retain=True)
        self._conn.publish(self.topic("events"), text, qos=self.qos, retain=False)

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, mark the status offline and disconnect."""
        self._conn.close(timeout)
