"""The MQTT notifier: alert transitions to a broker through paho-mqtt, reconnecting on loss.

Topics under the URL's prefix (``mqtt://host:1883/framelens`` -> ``framelens``):

``<prefix>/alerts/<rule id>``  retained: the rule's newest transition event; an empty
                               retained message when the rule is deleted
``<prefix>/events``            every transition event (not retained)
``<prefix>/status``            retained ``online`` while connected, ``offline`` as the last will

The event-bus subscriber only queues; a sender thread hands messages to
paho, which keeps QoS 1/2 messages while the broker is away and resends
them after it reconnects (QoS 0 messages published while disconnected are
lost, as MQTT defines). After every (re)connection the current state of
every rule is published again, so a broker that restarted without
persistence gets its retained states back.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from framelens import Event

__all__ = ["MqttNotifier", "MqttTarget", "parse_mqtt_url"]

log = logging.getLogger("framelens.alerts")

_STOP = object()


@dataclass(frozen=True)
class MqttTarget:
    """Where to publish: broker address, credentials, TLS and the topic prefix."""

    host: str
    port: int
    prefix: str
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def describe(self) -> str:
        scheme = "mqtts" if self.tls else "mqtt"
        return f"{scheme}://{self.host}:{self.port}/{self.prefix}"


def parse_mqtt_url(url: str) -> MqttTarget:
    """``mqtt[s]://[user[:password]@]host[:port][/prefix]``; :class:`ValueError` names the problem."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts"):
        raise ValueError(f"expected mqtt://host[:port]/prefix or mqtts://..., got {url!r}")
    if not parts.hostname:
        raise ValueError(f"no broker host in {url!r}")
    try:
        port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
    except ValueError:
        raise ValueError(f"invalid port in {url!r}") from None
    prefix = parts.path.strip("/") or "framelens"
    if any(c in prefix for c in "+#") or "//" in prefix:
        raise ValueError(f"the topic prefix {prefix!r} must not contain '+', '#' or empty levels")
    return MqttTarget(
        host=parts.hostname,
        port=port,
        prefix=prefix,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
        tls=parts.scheme == "mqtts",
    )


class MqttNotifier:
    """Publishes one alerts processor's events; ``current`` gives every rule's last event for republishing."""

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
        self.keepalive = keepalive
        self._current = current
        self._queue: queue.Queue[Any] = queue.Queue()
        self._connected = threading.Event()
        self._ever_connected = False
        self._lost_logged = False
        self._thread: threading.Thread | None = None
        self.published = 0
        client_id = f"framelens-{processor_id}-{os.getpid()}"
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id)
        self._client.max_queued_messages_set(max_queued)
        if target.username:
            self._client.username_pw_set(target.username, target.password)
        if target.tls:
            self._client.tls_set()
        self._client.will_set(self.topic("status"), "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail

    def topic(self, *levels: str) -> str:
        return "/".join((self.target.prefix, *levels))

    def start(self) -> None:
        """Connect in the background (a broker that is down now is retried, not fatal)."""
        self._client.connect_async(self.target.host, self.target.port, keepalive=self.keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._send_loop, name=f"alerts-mqtt-{self.processor_id}",
                                        daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    # -- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                    _properties: Any) -> None:
        if reason_code.is_failure:
            log.error("alerts mqtt %s: the broker refused the connection: %s", self.target.describe(), reason_code)
            return
        log.info("alerts mqtt: %s to %s", "reconnected" if self._ever_connected else "connected",
                 self.target.describe())
        self._ever_connected = True
        self._lost_logged = False
        client.publish(self.topic("status"), "online", qos=1, retain=True)
        for payload in self._current():
            client.publish(self.topic("alerts", payload["payload"]["rule"]), json.dumps(payload, default=str),
                           qos=self.qos, retain=True)
        self._connected.set()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                       _properties: Any) -> None:
        self._connected.clear()
        if not self._lost_logged and not getattr(reason_code, "value", 0) == 0:
            self._lost_logged = True
            log.warning("alerts mqtt: lost the connection to %s (%s); reconnecting, messages are kept meanwhile",
                        self.target.describe(), reason_code)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._lost_logged:
            self._lost_logged = True
            log.warning("alerts mqtt: cannot connect to %s; retrying every few seconds", self.target.describe())

    # -- publishing --------------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Event-bus subscriber: queue the event and return at once."""
        if event.type != "alert" or event.payload.get("processor") != self.processor_id:
            return
        self._queue.put(event.to_dict())

    def _send_loop(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            try:
                self._publish(item)
            except Exception:
                log.exception("alerts mqtt: publishing failed")

    def _publish(self, event: dict[str, Any]) -> None:
        payload = event["payload"]
        text = json.dumps(event, default=str, ensure_ascii=False)
        state_topic = self.topic("alerts", payload["rule"])
        # A deleted rule's retained state is cleared with an empty retained message.
        state_message = "" if payload["state"] == "deleted" else text
        for topic, message, retain in ((state_topic, state_message, True), (self.topic("events"), text, False)):
            info = self._client.publish(topic, message, qos=self.qos, retain=retain)
            if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                log.error("alerts mqtt: paho's queue is full; %s event of rule %s dropped for %s",
                          payload["state"], payload["rule"], topic)
            else:
                self.published += 1

    def close(self, timeout: float = 5.0) -> None:
        """Send what is queued, mark the status offline and disconnect."""
        self._queue.put(_STOP)
        if self._thread is not None:
            self._thread.join(timeout)
        if self._connected.is_set():
            # QoS 1 in order: once the broker acknowledges this, it has the events before it too.
            info = self._client.publish(self.topic("status"), "offline", qos=1, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        elif self.published:
            log.warning("alerts mqtt: not connected to %s at shutdown; messages still queued for it are lost",
                        self.target.describe())
        self._client.disconnect()
        self._client.loop_stop()
