"""A real conversation over MQTT+UDP: the same voice layer as over WebSocket.

paho-mqtt is the device's control connection, a real UDP socket its audio;
HA's Assist pipeline runs our STT, agent and TTS on the fake provider.
"""

from collections.abc import Callable
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.protocol.codec import OpusDecoder, OpusEncoder
from fake_provider import ChatReply, FakeProvider
from tests.helpers.devices import dominant_hz, runtime_of, wait_until
from tests.helpers.mqtt import MqttDevice, check_in
from tests.helpers.voice import RATE_OUT, TIMEOUT, utterance

TRANSCRIPT = "打开客厅灯"
ANSWER = "好的，客厅灯已经打开了。"


async def test_a_spoken_request_is_answered_over_mqtt_and_udp(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER, chunk=3))
    runtime = runtime_of(mqtt_entry)
    device = MqttDevice((await check_in(await hass_client_no_auth()))["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Success"
    await wait_until(runtime, lambda: runtime.connected)
    await device.hello()
    await wait_until(runtime, lambda: runtime.session is not None)
    device.publish(
        {
            "session_id": device.session_id,
            "type": "listen",
            "state": "start",
            "mode": "auto",
        }
    )
    await wait_until(
        runtime, lambda: runtime.session is not None and runtime.session.listening
    )
    encoder = OpusEncoder(16000, 60)
    for packet in encoder.encode(utterance()) + encoder.flush():
        device.send_audio(packet)

    messages: list[dict[str, Any]] = []
    while not (
        messages and messages[-1]["type"] == "tts" and messages[-1]["state"] == "stop"
    ):
        messages.append(await device.next_message(timeout=TIMEOUT))
    texts = {m["type"]: m.get("text") for m in messages if m["type"] == "stt"}
    assert texts == {"stt": TRANSCRIPT}
    spoken = "".join(m["text"] for m in messages if m.get("state") == "sentence_start")
    assert spoken == ANSWER
    assert all(m["session_id"] == device.session_id for m in messages)

    # The reply's audio came over UDP: decodable 24 kHz Opus of the synthesized speech.
    decoder = OpusDecoder(RATE_OUT)
    pcm = bytearray()
    expected = sum(
        fake_provider.speech.pcm_bytes(r.input) for r in fake_provider.speech_requests
    )
    while len(pcm) < expected:
        pcm += decoder.decode(await device.next_audio())
    assert dominant_hz(bytes(pcm), RATE_OUT) == pytest_approx(400)
    [upload] = fake_provider.transcriptions
    assert upload.wav.sample_rate == 16000

    # The device leaves the conversation; its link stays.
    device.goodbye()
    await wait_until(runtime, lambda: runtime.session is None)
    assert runtime.connected


def pytest_approx(value: float) -> Any:
    import pytest

    return pytest.approx(value, abs=5)
