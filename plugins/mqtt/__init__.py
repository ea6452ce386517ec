"""``mqtt``: the run's events on an MQTT broker, Home Assistant discovery, questions over MQTT.

    framelens run -s rtsp://cam/stream1 -p ollama -c ollama-model=llava \\
        -p mqtt -c mqtt-url=mqtt://broker:1883/framelens -c mqtt-homeassistant=true

Topics, payloads, QoS and retain: :mod:`.service` and docs/mqtt.md. The broker
connection (URL parsing, last will, reconnecting, the bounded buffer) is the
core's :mod:`framelens.mqtt`, shared with the alerts notifier.
"""

from __future__ import annotations

from framelens import Context, RegisterService, hookimpl

from .ask import AskHandler, parse_question
from .options import MqttOptions
from .service import MqttService

__all__ = ["AskHandler", "MqttOptions", "MqttService", "parse_question", "register_services"]


@hookimpl
def register_services(register: RegisterService) -> None:
    def make(options: MqttOptions, context: Context, id: str) -> MqttService:
        return MqttService(options, context, id)

    register("mqtt", make, options=MqttOptions,
             help="publish every event on MQTT (PREFIX/CAMERA/TYPE), Home Assistant discovery, ask over MQTT")
