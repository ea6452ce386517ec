"""The ``mqtt`` service: every event of the run on a broker, and questions from it.

Topics (``PREFIX`` from the URL, ``CAMERA`` the event's source id)::

    PREFIX/CAMERA/TYPE                      every event of TYPE (description, alert, source, ...)
    PREFIX/CAMERA/alert/RULE                retained: the rule's newest transition (empty once deleted)
    PREFIX/CAMERA/description/DESCRIBER     retained: the describer's newest description
    PREFIX/_nodes/NODE/TYPE                 events without a camera (run, output, ...)
    PREFIX/_nodes/NODE/availability         retained online / offline (the last will)
    PREFIX/CAMERA/ask -> PREFIX/CAMERA/answer

Payloads are the ``--events`` JSON lines, byte for byte. Publishing never waits:
the event-bus subscriber hands messages to :class:`framelens.mqtt.MqttConnection`,
which buffers them (bounded, counting drops) while the broker is away.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from framelens import Context, Event, Service
from framelens.mqtt import MqttConnection, MqttMessage, parse_mqtt_url

from .ask import AskHandler
from .discovery import Discovery, Entity
from .options import MqttOptions
from .topics import NODES, level

__all__ = ["MqttService"]

log = logging.getLogger("framelens.mqtt")


class MqttService(Service):
    """Bridges the run's event bus to an MQTT broker; see the module docstring for the topics.

    ``start()`` returns at once: a broker that is down is retried in the
    background while events are buffered. ``stop()`` sends what is buffered
    (if connected), sets availability ``offline`` and disconnects.
    """

    def __init__(self, options: MqttOptions, context: Context, id: str = "mqtt") -> None:
        self.options = options
        self.context = context
        self.id = id
        self.target = parse_mqtt_url(options.url)
        self.prefix = self.target.prefix
        self.node = options.node
        self.availability = f"{self.prefix}/{NODES}/{self.node}/availability"
        self.qos = options.qos_for()
        self.retained = options.retained()
        self.types = frozenset(options.types)
        self.discovery = Discovery(discovery_prefix=options.discovery_prefix, topic_prefix=self.prefix,
                                   availability=self.availability) if options.homeassistant else None
        self.ask = AskHandler(context, backend=options.backend, timeout=options.ask_timeout,
                              max_tokens=options.ask_max_tokens, max_side=options.ask_max_side,
                              max_asks=options.max_asks, publish=self._publish_answer) if options.ask else None
        subscriptions: list[tuple[str, int]] = []
        if self.ask is not None:
            subscriptions.append((f"{self.prefix}/+/ask", 1))
        if self.discovery is not None:
            subscriptions.append((f"{options.discovery_prefix}/status", 1))
        self.conn = MqttConnection(self.target, client_id=f"framelens-{self.node}-{id}",
                                   availability=self.availability, max_buffered=options.max_buffered,
                                   keepalive=options.keepalive, on_connect=self._on_connect,
                                   subscriptions=subscriptions, on_message=self._on_message, name=f"{id} service")
        self._unsubscribe: Any = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        self.context.state("mqtt.metrics", lambda: _Metrics(self.context)).services.append(self)
        self._unsubscribe = self.context.events.subscribe(self)
        self.conn.start()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.conn.close()
        if self.conn.dropped:
            log.warning("%s: %d message(s) were dropped in this run because %s was away too long "
                        "(raise -c %s-max-buffered)", self.id, self.conn.dropped, self.target.describe(), self.id)

    def stats(self) -> dict[str, Any]:
        return {"published": self.conn.published, "dropped": self.conn.dropped, "buffered": self.conn.buffered,
                "connected": self.conn.connected}

    # -- events -> topics ---------------------------------------------------------------------

    def __call__(self, event: Event) -> None:
        """Event-bus subscriber: turn the event into messages and queue them."""
        if self.types and event.type not in self.types:
            return
        base = f"{self.prefix}/{level(event.source)}" if event.source else f"{self.prefix}/{NODES}/{self.node}"
        text = event.to_json()
        qos = self.qos.get(event.type, 0)
        self.conn.publish(f"{base}/{level(event.type)}", text, qos=qos, retain=event.type in self.retained)
        camera = level(event.source) if event.source else None
        payload = event.payload
        if event.type == "alert" and payload.get("rule") is not None:
            rule = level(payload["rule"])
            deleted = payload.get("state") == "deleted"
            self.conn.publish(f"{base}/alert/{rule}", "" if deleted else text, qos=qos, retain=True)
            if camera is not None:
                self._discover("alert", camera, rule, f"{base}/alert/{rule}", str(payload.get("prompt") or rule),
                               deleted=deleted)
        elif event.type == "description" and payload.get("describer") is not None:
            key = level(payload["describer"])
            self.conn.publish(f"{base}/description/{key}", text, qos=qos, retain=True)
            if camera is not None:
                self._discover("describer", camera, key, f"{base}/description/{key}", key)

    def _discover(self, kind: str, camera: str, key: str, state_topic: str, label: str, *,
                  deleted: bool = False) -> None:
        if self.discovery is None:
            return
        if deleted:
            topic = self.discovery.forget(kind, camera, key)
            if topic is not None:
                self.conn.publish(topic, "", qos=1, retain=True)
            return
        announced = self.discovery.see(Entity(kind, camera, key, state_topic, label))
        if announced is not None:
            self.conn.publish(announced[0], announced[1], qos=1, retain=True)

    # -- the broker -> us ---------------------------------------------------------------------

    def _on_connect(self, conn: MqttConnection) -> None:
        if self.discovery is not None:
            for topic, config in self.discovery.all():
                conn.publish_now(topic, config, qos=1, retain=True)

    def _on_message(self, message: MqttMessage) -> None:
        if self.discovery is not None and message.topic == f"{self.options.discovery_prefix}/status":
            if message.payload.strip() == b"online":
                for topic, config in self.discovery.all():
                    self.conn.publish(topic, config, qos=1, retain=True)
            return
        if self.ask is None or message.retain:
            # A retained question is an old one replayed by the broker: answering it again would repeat it.
            return
        levels = message.topic.split("/")
        camera = levels[-2] if len(levels) >= 2 and levels[-1] == "ask" else None
        if camera is None or camera == NODES:
            return
        self.ask.handle(camera, message.payload)

    def _publish_answer(self, camera: str, answer: dict[str, Any]) -> None:
        self.conn.publish(f"{self.prefix}/{camera}/answer", json.dumps(answer, default=str, ensure_ascii=False),
                          qos=1, retain=False)


class _Metrics(Collector):
    """``framelens_mqtt_*`` read from every mqtt service of the run at scrape time."""

    def __init__(self, context: Context) -> None:
        self.services: list[MqttService] = []
        context.metrics.register(self)

    def collect(self) -> Iterator[Metric]:
        published = CounterMetricFamily("framelens_mqtt_published", "Messages handed to the broker", labels=["service"])
        dropped = CounterMetricFamily("framelens_mqtt_dropped",
                                      "Messages dropped because the buffer was full while the broker was away",
                                      labels=["service"])
        buffered = GaugeMetricFamily("framelens_mqtt_buffered", "Messages waiting for the broker", labels=["service"])
        connected = GaugeMetricFamily("framelens_mqtt_connected", "1 while connected to the broker",
                                      labels=["service"])
        answered = CounterMetricFamily("framelens_mqtt_asks", "Questions answered over MQTT, by outcome",
                                       labels=["service", "outcome"])
        for s in list(self.services):
            published.add_metric([s.id], s.conn.published)
            dropped.add_metric([s.id], s.conn.dropped)
            buffered.add_metric([s.id], s.conn.buffered)
            connected.add_metric([s.id], 1.0 if s.conn.connected else 0.0)
            if s.ask is not None:
                answered.add_metric([s.id, "answered"], s.ask.answered)
                answered.add_metric([s.id, "error"], s.ask.failed)
        yield from (published, dropped, buffered, connected, answered)
