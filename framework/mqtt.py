"""MQTT for plugins: broker URLs and a connection that buffers while the broker is away.

Public helpers shared by every plugin that talks MQTT (the ``mqtt`` event-bus
service, the alerts notifier), so URL rules, credentials, TLS, the last will and
reconnecting are the same everywhere::

    from framelens.mqtt import MqttConnection, parse_mqtt_url

    conn = MqttConnection(parse_mqtt_url("mqtt://broker:1883/framelens"), client_id="cam-group-1",
                          availability="framelens/_nodes/cam-group-1/availability")
    conn.start()
    conn.publish("framelens/main/description", '{"text": "..."}', qos=1, retain=True)

paho-mqtt keeps QoS 1/2 messages it was handed while the connection drops, but
it refuses QoS 0 messages while disconnected and keeps an unbounded queue
otherwise. :class:`MqttConnection` therefore holds messages in its own bounded
buffer until a connection is up, hands them to paho in order from one sender
thread, and counts what it had to drop when the bound is hit (oldest first).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

__all__ = ["MqttConnection", "MqttMessage", "MqttTarget", "parse_mqtt_url"]

log = logging.getLogger("framelens.mqtt")


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
        """The URL without credentials, for messages."""
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


@dataclass(frozen=True)
class MqttMessage:
    """One message received on a subscribed topic."""

    topic: str
    payload: bytes
    retain: bool


_Outgoing = tuple[str, str | bytes, int, bool]


class MqttConnection:
    """One paho client: connects in the background, reconnects, buffers, publishes in order.

    Args:
        target: the broker (see :func:`parse_mqtt_url`).
        client_id: MQTT client id; must be unique per broker (a pid is appended).
        availability: a topic that holds a retained ``online`` while connected and
            ``offline`` otherwise (the last will, so the broker sets it when this
            process dies); ``None`` for none.
        max_buffered: messages kept while the broker is away; beyond it the oldest
            are dropped and counted in :attr:`dropped`.
        on_connect: called on paho's thread after every (re)connection, before the
            buffer is flushed: republish retained state there.
        subscriptions: topic filters subscribed to after every connection; their
            messages go to ``on_message`` (paho's thread: hand slow work off).
        name, logger: how log lines name this connection, and where they go.
    """

    def __init__(
        self,
        target: MqttTarget,
        *,
        client_id: str,
        availability: str | None = None,
        max_buffered: int = 10000,
        keepalive: int = 30,
        on_connect: Callable[[MqttConnection], None] | None = None,
        subscriptions: Sequence[tuple[str, int]] = (),
        on_message: Callable[[MqttMessage], None] | None = None,
        name: str = "mqtt",
        logger: logging.Logger | None = None,
    ) -> None:
        self.target = target
        self.availability = availability
        self.max_buffered = max_buffered
        self.keepalive = keepalive
        self.name = name
        self.log = logger or log
        self.published = 0
        self.dropped = 0
        self._on_connect_cb = on_connect
        self._subscriptions = list(subscriptions)
        self._on_message_cb = on_message
        self._buffer: deque[_Outgoing] = deque()
        self._cond = threading.Condition()
        self._connected = threading.Event()
        self._closing = False
        self._ever_connected = False
        self._outage_logged = False
        self._dropped_logged = 0
        self._thread: threading.Thread | None = None
        self._client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"{client_id}-{os.getpid()}")
        # paho's own queue only ever holds what the sender thread handed over while connected.
        self._client.max_queued_messages_set(max(100, max_buffered))
        if target.username:
            self._client.username_pw_set(target.username, target.password)
        if target.tls:
            self._client.tls_set()
        if availability:
            self._client.will_set(availability, "offline", qos=1, retain=True)
        self._client.reconnect_delay_set(min_delay=1, max_delay=30)
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_connect_fail = self._on_connect_fail
        self._client.on_message = self._on_message

    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    @property
    def buffered(self) -> int:
        """Messages waiting for a connection."""
        with self._cond:
            return len(self._buffer)

    def start(self) -> None:
        """Connect in the background (a broker that is down now is retried, not fatal)."""
        self._client.connect_async(self.target.host, self.target.port, keepalive=self.keepalive)
        self._client.loop_start()
        self._thread = threading.Thread(target=self._send_loop, name=f"{self.name}-sender", daemon=True)
        self._thread.start()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def topic(self, *levels: str) -> str:
        """``levels`` joined under the URL's prefix."""
        return "/".join((self.target.prefix, *levels))

    # -- publishing --------------------------------------------------------------------------

    def publish(self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Queue a message; returns at once. Delivered in order once a connection is up."""
        with self._cond:
            if len(self._buffer) >= self.max_buffered:
                self._buffer.popleft()
                self.dropped += 1
            self._buffer.append((topic, payload, qos, retain))
            self._cond.notify()

    def publish_now(self, topic: str, payload: str | bytes, *, qos: int = 0, retain: bool = False) -> None:
        """Hand a message to paho directly (from ``on_connect``: state that must precede the buffer)."""
        self._client.publish(topic, payload, qos=qos, retain=retain)

    def _send_loop(self) -> None:
        while True:
            with self._cond:
                while not self._closing and (not self._buffer or not self._connected.is_set()):
                    self._cond.wait(0.5)
                    self._report_drops()
                if not self._buffer or not self._connected.is_set():
                    return
                item = self._buffer.popleft()
            topic, payload, qos, retain = item
            try:
                info = self._client.publish(topic, payload, qos=qos, retain=retain)
            except Exception:
                self.log.exception("%s: publishing to %s failed", self.name, topic)
                continue
            if info.rc in (mqtt.MQTT_ERR_NO_CONN, mqtt.MQTT_ERR_QUEUE_SIZE):
                # Lost the connection (or paho is full) between the check and the hand-over: keep it.
                with self._cond:
                    self._buffer.appendleft(item)
                    if info.rc == mqtt.MQTT_ERR_QUEUE_SIZE:
                        self._cond.wait(0.1)
                continue
            self.published += 1

    def _report_drops(self) -> None:
        if self.dropped > self._dropped_logged:
            self.log.warning("%s: %d message(s) dropped so far: %s was away and the buffer of %d was full",
                        self.name, self.dropped, self.target.describe(), self.max_buffered)
            self._dropped_logged = self.dropped

    # -- paho callbacks (paho's network thread) ----------------------------------------------

    def _on_connect(self, client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                    _properties: Any) -> None:
        if reason_code.is_failure:
            self.log.error("%s: %s refused the connection: %s", self.name, self.target.describe(), reason_code)
            return
        self.log.info("%s: %s to %s", self.name, "reconnected" if self._ever_connected else "connected",
                 self.target.describe())
        self._ever_connected = True
        self._outage_logged = False
        if self.availability:
            client.publish(self.availability, "online", qos=1, retain=True)
        for topic, qos in self._subscriptions:
            client.subscribe(topic, qos=qos)
        if self._on_connect_cb is not None:
            try:
                self._on_connect_cb(self)
            except Exception:
                self.log.exception("%s: the on-connect step failed", self.name)
        with self._cond:
            self._connected.set()
            self._cond.notify_all()

    def _on_disconnect(self, _client: mqtt.Client, _userdata: Any, _flags: Any, reason_code: Any,
                       _properties: Any) -> None:
        self._connected.clear()
        if not self._outage_logged and not self._closing:
            self._outage_logged = True
            self.log.warning("%s: lost the connection to %s (%s); reconnecting, keeping up to %d messages meanwhile",
                        self.name, self.target.describe(), reason_code, self.max_buffered)

    def _on_connect_fail(self, _client: mqtt.Client, _userdata: Any) -> None:
        if not self._outage_logged:
            self._outage_logged = True
            self.log.warning("%s: cannot connect to %s; retrying every few seconds, keeping up to %d messages",
                        self.name, self.target.describe(), self.max_buffered)

    def _on_message(self, _client: mqtt.Client, _userdata: Any, message: mqtt.MQTTMessage) -> None:
        if self._on_message_cb is None:
            return
        try:
            self._on_message_cb(MqttMessage(message.topic, bytes(message.payload), bool(message.retain)))
        except Exception:
            self.log.exception("%s: handling a message on %s failed", self.name, message.topic)

    # -- shutdown ----------------------------------------------------------------------------

    def close(self, timeout: float = 5.0) -> None:
        """Send what is buffered (while connected), mark availability offline, disconnect."""
        with self._cond:
            self._closing = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)
        left = self.buffered
        if self._connected.is_set():
            if self.availability:
                # QoS 1 in order: once the broker acknowledges this, it has everything before it too.
                info = self._client.publish(self.availability, "offline", qos=1, retain=True)
                try:
                    info.wait_for_publish(timeout)
                except (RuntimeError, ValueError):
                    pass
        if left:
            self.log.warning("%s: not connected to %s at shutdown; %d buffered message(s) are lost",
                        self.name, self.target.describe(), left)
        self._report_drops()
        self._client.disconnect()
        self._client.loop_stop()
