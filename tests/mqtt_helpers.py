"""Helpers for the mqtt service tests: a listener that keeps QoS and retain flags, a publisher."""

from __future__ import annotations

import json
import threading
import time
from typing import Any

from paho.mqtt.client import Client, MQTTMessage
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["Listener", "Received", "publish_one"]

Received = tuple[str, bytes, int, bool]
"""(topic, payload, qos, retain) of one message."""


class Listener:
    """A paho client subscribed (QoS 2, so the publisher's QoS shows) to ``topic`` on 127.0.0.1:``port``."""

    def __init__(self, port: int, topic: str = "#") -> None:
        self.messages: list[Received] = []
        self._lock = threading.Lock()
        self.client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-mqtt-{time.monotonic_ns()}")
        self.subscribed = threading.Event()
        self.client.on_connect = lambda c, u, f, rc, p: c.subscribe(topic, qos=2)
        self.client.on_subscribe = lambda c, u, mid, rcs, p: self.subscribed.set()
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port, keepalive=10)
        self.client.loop_start()
        if not self.subscribed.wait(10):
            raise RuntimeError("the MQTT listener could not subscribe")

    def _on_message(self, _c: Client, _u: Any, msg: MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, bytes(msg.payload), int(msg.qos), bool(msg.retain)))

    def on(self, topic: str) -> list[Received]:
        with self._lock:
            return [m for m in self.messages if m[0] == topic]

    def json_on(self, topic: str) -> list[dict[str, Any]]:
        return [json.loads(m[1]) for m in self.on(topic) if m[1]]

    def topics(self) -> set[str]:
        with self._lock:
            return {m[0] for m in self.messages}

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()

    def __enter__(self) -> Listener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def publish_one(port: int, topic: str, payload: str | bytes, *, retain: bool = False) -> None:
    """Publish one QoS 1 message and wait until the broker has it."""
    client = Client(CallbackAPIVersion.VERSION2, client_id=f"test-pub-{time.monotonic_ns()}")
    client.connect("127.0.0.1", port, keepalive=10)
    client.loop_start()
    try:
        client.publish(topic, payload, qos=1, retain=retain).wait_for_publish(10)
    finally:
        client.disconnect()
        client.loop_stop()
