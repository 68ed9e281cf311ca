"""A device talking to services that are only roughly OpenAI-compatible.

The fake provider's switches (fake_provider/quirks.py) make it answer the way
such services do; a simulated device speaks over a real WebSocket, the device's
assist satellite runs a real Assist pipeline of this integration's STT, agent
and TTS, and the device must hear the whole answer each time.
"""

import dataclasses
from typing import Any

import pytest

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import STATE_ON
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import CONF_MODEL, SUBENTRY_STT
from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM
from fake_provider import ChatQuirks, ChatReply, FakeProvider, TranscriptAnswer
from simulator.device import SimulatedDevice
from tests.helpers.devices import DeviceFactory, dominant_hz
from tests.helpers.voice import (
    ANSWER,
    FRAME_BYTES_OUT,
    RATE_OUT,
    TRANSCRIPT,
    answer_messages,
    say,
    sentences,
)

STREAMING_STT_MODEL = "gpt-4o-mini-transcribe"
# Assist and the device tools are selected together: Home Assistant prefixes names.
TURN_ON = "assist__intent__HassTurnOn"
STREAM_QUIRKS = [
    field.name
    for field in dataclasses.fields(ChatQuirks)
    if field.name != "ignore_stream"
]
# How roughly compatible services send speech (fake_provider.audio.SpeechSettings).
SPEECH_QUIRKS: dict[str, dict[str, Any]] = {
    "octet-stream": {"content_type": "application/octet-stream"},
    "audio-pcm": {"content_type": "audio/pcm"},
    "audio-mpeg": {"content_type": "audio/mpeg"},
    "1-to-7-byte-chunks": {"chunk_sizes": range(1, 8)},
    "one-body": {"content_length": True},
    "wav-sizes-zero": {"wav_sizes": "zero"},
    "wav-sizes-exact": {"wav_sizes": "exact"},
    "wav-header-split": {"split_wav_header": True},
}


@pytest.fixture
def provider_subentries(fake_provider: FakeProvider) -> list[ConfigSubentryData]:
    """The default subentries, with a model that streams its transcript."""
    subentries = default_subentries(PRESET_CUSTOM, True, fake_provider.models)
    for subentry in subentries:
        if subentry["subentry_type"] == SUBENTRY_STT:
            subentry["data"] = {CONF_MODEL: STREAMING_STT_MODEL}
    return subentries


@pytest.fixture
async def device(pipeline: Pipeline, devices: DeviceFactory) -> SimulatedDevice:
    """A connected device (no MCP tools) with the pipeline ready."""
    sim = devices(features={})
    await sim.open()
    return sim


def assert_heard(device: SimulatedDevice, provider: FakeProvider) -> None:
    """The device played the synthesized speech: all of it, as the tone it is."""
    pcm = device.received_pcm()
    spoken = sum(provider.speech.pcm_bytes(r.input) for r in provider.speech_requests)
    assert 0 <= len(pcm) - spoken <= 3 * FRAME_BYTES_OUT
    assert dominant_hz(pcm, RATE_OUT) == pytest.approx(400, abs=5)
    assert device.dropped_audio == 0


@pytest.mark.parametrize(
    "answer", [TranscriptAnswer.JSON, TranscriptAnswer.TEXT], ids=["json", "text"]
)
async def test_a_transcript_that_does_not_stream_is_heard(
    fake_provider: FakeProvider, device: SimulatedDevice, answer: TranscriptAnswer
) -> None:
    """Asked to stream, the service answers JSON or text: the device is answered."""
    fake_provider.transcript_answer = answer
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    await say(device)
    messages = await answer_messages(device)

    assert (messages[0]["type"], messages[0]["text"]) == ("stt", TRANSCRIPT)
    assert sentences(messages) == [ANSWER]  # not "I did not catch that"
    [upload] = fake_provider.transcriptions
    assert upload.stream
    assert_heard(device, fake_provider)


@pytest.mark.parametrize(
    "quirks", [["ignore_stream"], STREAM_QUIRKS], ids=["no-stream", "stream-quirks"]
)
@pytest.mark.usefixtures("lights")
async def test_a_roughly_compatible_agent_turns_on_the_light_and_is_heard(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    device: SimulatedDevice,
    quirks: list[str],
) -> None:
    """One JSON completion, or a stream with every quirk: tools run, all is said."""
    for name in quirks:
        setattr(fake_provider.chat_quirks, name, True)
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}),
        ChatReply.text(ANSWER, chunk=3),
    )

    await say(device)
    messages = await answer_messages(device)

    assert "".join(sentences(messages)) == ANSWER
    state = ha_core.states.get("light.kitchen")
    assert state is not None
    assert state.state == STATE_ON
    assert_heard(device, fake_provider)


@pytest.mark.parametrize("quirk", SPEECH_QUIRKS.values(), ids=SPEECH_QUIRKS.keys())
async def test_roughly_compatible_speech_is_heard(
    fake_provider: FakeProvider, device: SimulatedDevice, quirk: dict[str, Any]
) -> None:
    """Whatever the label, chunking or WAV header: the device hears every sample."""
    for name, value in quirk.items():
        setattr(fake_provider.speech, name, value)
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    await say(device)
    messages = await answer_messages(device)

    assert sentences(messages) == [ANSWER]
    assert [r.response_format for r in fake_provider.speech_requests] == ["wav"]
    assert_heard(device, fake_provider)
