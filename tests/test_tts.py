"""Tests of the TTS entity against the fake service, through Home Assistant's tts."""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator
import io
import json
from pathlib import Path
import shutil
from typing import Any
import wave

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components import tts
from homeassistant.components.tts.const import DATA_TTS_MANAGER
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.components.tts.helper import get_engine_instance
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError

import custom_components.xiaozhi
from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import (
    CONF_INSTRUCTIONS,
    CONF_MODEL,
    CONF_SPEED,
    CONF_VOICE,
    SUBENTRY_TTS,
)
from custom_components.xiaozhi.protocol.codec import parse_wav
from custom_components.xiaozhi.provider.presets import OPENAI_VOICES, PRESET_CUSTOM
from custom_components.xiaozhi.provider.speech import PROVIDER_SAMPLE_RATE
from custom_components.xiaozhi.tts import XiaozhiTextToSpeechEntity
from fake_provider import SPEECH_PATH, FakeProvider
from fake_provider.audio import tone_pcm
from tests.helpers.streams import SENTENCES, collect_into, samples

TTS_ENTITY = "tts.xiaozhi_tts"
TIMEOUT = 10.0


@pytest.fixture
def loaded_tts(provider_entry: MockConfigEntry, ha_core: HomeAssistant) -> None:
    """Load the provider entry, with HA's TTS file cache off.

    The file cache lives in the test package's shared config folder, so results
    would leak between tests and runs.
    """
    ha_core.data[DATA_TTS_MANAGER].use_file_cache = False


def tts_entity(hass: HomeAssistant) -> XiaozhiTextToSpeechEntity:
    """Return our loaded TTS entity."""
    entity = get_engine_instance(hass, TTS_ENTITY)
    assert isinstance(entity, XiaozhiTextToSpeechEntity)
    return entity


def speech_samples(provider: FakeProvider, text: str, rate: int) -> int:
    """Return how many samples at ``rate`` the fake speaks for ``text``."""
    return provider.speech.pcm_bytes(text) // 2 * rate // PROVIDER_SAMPLE_RATE


async def deltas_of(text: str, size: int = 7) -> AsyncGenerator[str]:
    """Stream ``text`` in LLM-like pieces."""
    for start in range(0, len(text), size):
        yield text[start : start + size]


def request(message_gen: AsyncGenerator[str], **options: Any) -> TTSAudioRequest:
    """Return a streaming TTS request in English."""
    return TTSAudioRequest(language="en", options=options, message_gen=message_gen)


async def read_all(audio: AsyncIterator[bytes]) -> bytes:
    """Join a whole audio stream."""
    async with asyncio.timeout(TIMEOUT):
        return b"".join([chunk async for chunk in audio])


@pytest.mark.usefixtures("loaded_tts")
async def test_entity_describes_itself(ha_core: HomeAssistant) -> None:
    """Options, voices, languages and streaming support are advertised."""
    entity = tts_entity(ha_core)

    assert entity.async_supports_streaming_input()
    assert entity.default_options == {"voice": "alloy", "preferred_format": "wav"}
    assert set(entity.supported_options or []) == {
        "voice",
        "preferred_format",
        "preferred_sample_rate",
        "preferred_sample_channels",
        "preferred_sample_bytes",
    }
    voices = entity.async_get_supported_voices("en")
    assert voices[0].voice_id == "alloy"
    assert {voice.voice_id for voice in voices} == set(OPENAI_VOICES)
    assert {"en", "zh", "zh-Hans", "de"} <= set(entity.supported_languages)
    assert entity.default_language in entity.supported_languages


@pytest.mark.usefixtures("loaded_tts")
async def test_single_message_through_home_assistant(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """tts streams a message as a 24 kHz WAV, without conversion."""
    stream = tts.async_create_stream(ha_core, TTS_ENTITY, "en")
    stream.async_set_message("Hello from the kitchen.")

    data = await read_all(stream.async_stream_result())

    assert stream.extension == "wav"
    wav = parse_wav(data)
    assert (wav.rate, wav.channels, wav.width) == (PROVIDER_SAMPLE_RATE, 1, 2)
    expected = fake_provider.speech.pcm_bytes("Hello from the kitchen.")
    assert len(wav.pcm) == expected
    [speech] = fake_provider.speech_requests
    # WAV, whose header says the rate: services do not agree on pcm's.
    assert (speech.model, speech.voice, speech.response_format) == (
        "tts-1",
        "alloy",
        "wav",
    )
    assert speech.speed == 1.0
    assert speech.instructions is None


@pytest.mark.usefixtures("loaded_tts")
async def test_streamed_text_is_spoken_before_it_is_complete(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """The first audio comes out before the last text chunk goes in."""
    first_audio = asyncio.Event()
    sent: list[str] = []
    reply = " ".join(SENTENCES)

    async def llm_reply() -> AsyncGenerator[str]:
        pieces = [piece async for piece in deltas_of(reply)]
        for index, piece in enumerate(pieces):
            if index == len(pieces) - 1:
                await first_audio.wait()  # deadlocks unless audio came first
            sent.append(piece)
            yield piece

    stream = tts.async_create_stream(ha_core, TTS_ENTITY, "en")
    stream.async_set_message_stream(llm_reply())
    chunks: list[bytes] = []
    async with asyncio.timeout(TIMEOUT):
        async for chunk in stream.async_stream_result():
            if not chunks:
                assert len(parse_wav(chunk).pcm) > 0
                text_sent_at_first_audio = "".join(sent)
                first_audio.set()
            chunks.append(chunk)

    assert len(text_sent_at_first_audio) < len(reply)
    # Requested concurrently (the look-ahead), so they may arrive in any order.
    assert sorted(r.input for r in fake_provider.speech_requests) == sorted(SENTENCES)
    wav = parse_wav(b"".join(chunks))
    assert len(wav.pcm) == sum(
        fake_provider.speech.pcm_bytes(sentence) for sentence in SENTENCES
    )


@pytest.mark.usefixtures("loaded_tts")
async def test_preferred_layout_is_produced(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """A preferred rate, channel count and width come out exactly."""
    entity = tts_entity(ha_core)
    text = "The door is locked."

    response = await entity.internal_async_stream_tts_audio(
        request(
            deltas_of(text),
            preferred_format="wav",
            preferred_sample_rate=16000,
            preferred_sample_channels=2,
            preferred_sample_bytes=2,
        )
    )
    data = await read_all(response.data_gen)

    assert response.extension == "wav"
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getframerate() == 16000
        assert reader.getnchannels() == 2
        assert reader.getsampwidth() == 2
    wav = parse_wav(data)
    frames = len(wav.pcm) // 4
    assert abs(frames - speech_samples(fake_provider, text, 16000)) <= 2
    left, right = samples(wav.pcm)[0::2], samples(wav.pcm)[1::2]
    assert left == right
    assert max(left) > 8000  # the tone survived resampling
    assert fake_provider.speech_requests[0].response_format == "wav"


@pytest.mark.usefixtures("loaded_tts")
async def test_raw_pcm_output(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """Raw PCM has no header and the requested rate."""
    entity = tts_entity(ha_core)
    text = "Good night."

    response = await entity.internal_async_stream_tts_audio(
        request(deltas_of(text), preferred_format="pcm", preferred_sample_rate=8000)
    )
    data = await read_all(response.data_gen)

    assert response.extension == "pcm"
    assert not data.startswith(b"RIFF")
    assert abs(len(data) // 2 - speech_samples(fake_provider, text, 8000)) <= 2


@pytest.mark.usefixtures("loaded_tts")
async def test_whole_message_is_a_complete_wav(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """async_get_tts_audio returns a WAV file with its exact size."""
    entity = tts_entity(ha_core)
    message = "First sentence. Second sentence."

    extension, data = await entity.async_get_tts_audio(
        message, "en", {"preferred_format": "wav", "preferred_sample_rate": 16000}
    )

    assert extension == "wav"
    assert data is not None
    with wave.open(io.BytesIO(data)) as reader:
        assert reader.getframerate() == 16000
        frames = reader.getnframes()
        assert len(reader.readframes(frames)) == frames * 2
    expected = sum(
        speech_samples(fake_provider, text, 16000)
        for text in ("First sentence.", "Second sentence.")
    )
    assert abs(frames - expected) <= 2
    assert len(fake_provider.speech_requests) == 2


@pytest.mark.usefixtures("loaded_tts")
async def test_whole_message_raw(ha_core: HomeAssistant) -> None:
    """async_get_tts_audio in a raw format is the bare samples."""
    extension, data = await tts_entity(ha_core).async_get_tts_audio(
        "Hi there.", "en", {"preferred_format": "raw"}
    )

    assert extension == "raw"
    assert data
    assert not data.startswith(b"RIFF")


@pytest.mark.usefixtures("loaded_tts")
async def test_passthrough_formats_are_asked_of_the_service(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """mp3 is requested as mp3; the fake refuses it, which is a translated error."""
    response = await tts_entity(ha_core).internal_async_stream_tts_audio(
        request(deltas_of("Play some music."), preferred_format="mp3")
    )

    with pytest.raises(HomeAssistantError) as err:
        await read_all(response.data_gen)

    assert response.extension == "mp3"
    assert fake_provider.requests[-1].json["response_format"] == "mp3"
    assert err.value.translation_key == "tts_failed"
    assert err.value.translation_placeholders is not None
    assert "not supported" in err.value.translation_placeholders["error"]


@pytest.mark.usefixtures("loaded_tts")
async def test_failure_after_first_sentence_keeps_its_audio(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """A later sentence failing ends the stream after the earlier audio."""
    armed = asyncio.Event()

    async def reply() -> AsyncGenerator[str]:
        yield "This part works!"
        await armed.wait()
        yield "This part fails."

    response = await tts_entity(ha_core).internal_async_stream_tts_audio(
        request(reply(), preferred_format="pcm")
    )
    received: list[bytes] = []

    async def arm_on_first_audio() -> AsyncGenerator[bytes]:
        async for chunk in response.data_gen:
            if not received:
                fake_provider.fail_next(SPEECH_PATH, 400, "Voice unavailable")
                armed.set()
            yield chunk

    with pytest.raises(HomeAssistantError) as err:
        await collect_into(arm_on_first_audio(), received)

    assert err.value.translation_key == "tts_failed"
    assert "Voice unavailable" in str(err.value.translation_placeholders)
    assert len(b"".join(received)) == fake_provider.speech.pcm_bytes("This part works.")


@pytest.mark.usefixtures("loaded_tts")
async def test_connection_lost_mid_sentence(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """A response cut mid-audio delivers what arrived, then the error."""
    fake_provider.speech.chunk_size = 960
    fake_provider.speech.hold_after_chunks = 2
    response = await tts_entity(ha_core).internal_async_stream_tts_audio(
        request(deltas_of("A long sentence that will be cut."), preferred_format="pcm")
    )
    received: list[bytes] = []

    async def stop_when_held() -> None:
        await fake_provider.wait_held()
        await fake_provider.stop()

    stopper = asyncio.create_task(stop_when_held())
    with pytest.raises(HomeAssistantError) as err:
        await collect_into(response.data_gen, received)
    await stopper

    assert err.value.translation_key == "tts_failed"
    assert len(b"".join(received)) == 2 * 960


@pytest.mark.usefixtures("loaded_tts")
async def test_closing_the_stream_closes_provider_requests(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """Stopping playback closes the current and the look-ahead request."""
    fake_provider.speech.hold_after_chunks = 1
    response = await tts_entity(ha_core).internal_async_stream_tts_audio(
        request(deltas_of(" ".join(SENTENCES)), preferred_format="pcm")
    )

    async with asyncio.timeout(TIMEOUT):
        assert await anext(response.data_gen)
        await fake_provider.wait_held()
        await fake_provider.wait_held()  # the look-ahead sentence is in flight
        await response.data_gen.aclose()
        closed = [await fake_provider.wait_stream_closed() for _ in range(2)]

    inputs = {stream.request.json["input"] for stream in closed}
    assert inputs == set(SENTENCES[:2])
    assert all(stream.client_closed for stream in closed)
    assert len(fake_provider.speech_requests) == 2


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


@pytest.mark.parametrize("quirk", SPEECH_QUIRKS.values(), ids=SPEECH_QUIRKS.keys())
@pytest.mark.usefixtures("loaded_tts")
async def test_roughly_compatible_speech_is_heard_in_full(
    ha_core: HomeAssistant, fake_provider: FakeProvider, quirk: dict[str, Any]
) -> None:
    """Whatever the label, chunking or WAV sizes: every sample, nothing else."""
    for name, value in quirk.items():
        setattr(fake_provider.speech, name, value)
    stream = tts.async_create_stream(ha_core, TTS_ENTITY, "en")
    stream.async_set_message("Hi. Bye.")

    data = await read_all(stream.async_stream_result())

    wav = parse_wav(data)
    assert (wav.rate, wav.channels, wav.width) == (PROVIDER_SAMPLE_RATE, 1, 2)
    spoken = [request.input for request in fake_provider.speech_requests]
    assert sorted(spoken) == ["Bye.", "Hi."]
    assert wav.pcm == b"".join(tone_of(fake_provider, text) for text in ("Hi.", "Bye."))


def tone_of(provider: FakeProvider, text: str) -> bytes:
    """Return the exact samples the fake speaks for ``text``."""
    return tone_pcm(provider.speech.pcm_bytes(text) // 2)


@pytest.mark.usefixtures("loaded_tts")
async def test_mp3_is_passed_on_whatever_its_label(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """Asked for mp3, the service's bytes are the answer, labelled as they may be."""
    ffmpeg = shutil.which("ffmpeg")
    assert ffmpeg is not None
    fake_provider.ffmpeg = ffmpeg
    fake_provider.speech.content_type = "application/octet-stream"
    response = await tts_entity(ha_core).internal_async_stream_tts_audio(
        request(deltas_of("Play some music."), preferred_format="mp3")
    )

    data = await read_all(response.data_gen)

    assert response.extension == "mp3"
    assert data.startswith((b"ID3", b"\xff"))
    assert fake_provider.speech_requests[0].response_format == "mp3"


class TestConfiguredVoice:
    """A subentry with a custom voice, speed and instructions."""

    @pytest.fixture
    def provider_subentries(
        self, fake_provider: FakeProvider
    ) -> list[ConfigSubentryData]:
        """Configure a non-OpenAI voice with speed and instructions."""
        subentries = default_subentries(PRESET_CUSTOM, True, fake_provider.models)
        for subentry in subentries:
            if subentry["subentry_type"] == SUBENTRY_TTS:
                subentry["data"] = {
                    CONF_MODEL: "gpt-4o-mini-tts",
                    CONF_VOICE: "FunAudioLLM/CosyVoice2-0.5B:alex",
                    CONF_SPEED: 1.5,
                    CONF_INSTRUCTIONS: "Speak cheerfully.",
                }
        return subentries

    @pytest.mark.usefixtures("loaded_tts")
    async def test_settings_are_sent(
        self, ha_core: HomeAssistant, fake_provider: FakeProvider
    ) -> None:
        """Model, voice, speed and instructions reach the service."""
        entity = tts_entity(ha_core)

        assert [v.voice_id for v in entity.async_get_supported_voices("en")] == [
            "FunAudioLLM/CosyVoice2-0.5B:alex"
        ]
        await entity.async_get_tts_audio("Hello.", "en", {})
        await entity.async_get_tts_audio("Hello.", "en", {"voice": "nova"})

        first, second = fake_provider.speech_requests
        assert first.model == "gpt-4o-mini-tts"
        assert first.voice == "FunAudioLLM/CosyVoice2-0.5B:alex"
        assert first.speed == 1.5
        assert first.instructions == "Speak cheerfully."
        assert second.voice == "nova"


@pytest.mark.parametrize(
    "path", ["strings.json", "translations/en.json", "translations/zh-Hans.json"]
)
def test_error_messages_are_translated(path: str) -> None:
    """Both TTS errors have a message with their placeholder in every language."""
    component = Path(custom_components.xiaozhi.__file__).parent
    exceptions = json.loads((component / path).read_text(encoding="utf-8"))[
        "exceptions"
    ]

    assert "{error}" in exceptions["tts_failed"]["message"]
    assert "{format}" in exceptions["unsupported_audio_format"]["message"]
