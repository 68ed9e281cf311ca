"""Tests of the STT entity against the local OpenAI-compatible server."""

from collections.abc import AsyncGenerator, AsyncIterator
import math
import random
import struct
from typing import Any

from openai.types.audio import (
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionTextSegmentEvent,
)
import pytest

from homeassistant.components import stt
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_PROMPT
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import (
    CONF_LANGUAGE,
    CONF_MODEL,
    PRESET_CUSTOM,
    SUBENTRY_STT,
)
from custom_components.xiaozhi.stt import (
    MAX_AUDIO_SECONDS,
    SPEECH_LANGUAGES,
    Utterance,
    api_language,
    rms_dbfs,
    silence_rms,
    streams_transcript,
    transcript_of,
)
from fake_provider import TRANSCRIPTIONS_PATH, FakeProvider

STT_ENTITY = "stt.xiaozhi_stt"
RATE = 16000
CHUNK_BYTES = 320  # 10 ms, what HA's pipeline hands over


def speech_like_pcm(seconds: float, *, peak: float = 0.5, seed: int = 1) -> bytes:
    """Return 16 kHz mono s16le audio shaped like speech.

    A 140 Hz voice with harmonics, opened and closed four times a second like
    syllables, over a little noise.
    """
    noise = random.Random(seed)
    samples = []
    for n in range(round(seconds * RATE)):
        t = n / RATE
        voice = sum(math.sin(2 * math.pi * 140 * k * t) / k for k in range(1, 6)) / 2.3
        envelope = 0.5 - 0.5 * math.cos(2 * math.pi * 4 * t)
        value = peak * envelope * voice + noise.uniform(-0.005, 0.005)
        samples.append(round(max(-1.0, min(1.0, value)) * 32767))
    return struct.pack(f"<{len(samples)}h", *samples)


def noise_pcm(seconds: float, dbfs: float) -> bytes:
    """Return white noise whose RMS is about ``dbfs``."""
    noise = random.Random(7)
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(3)
    count = round(seconds * RATE)
    return struct.pack(
        f"<{count}h",
        *(round(noise.uniform(-amplitude, amplitude)) for _ in range(count)),
    )


async def chunks_of(pcm: bytes, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Stream ``pcm`` in chunks, like a microphone."""
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


def metadata(language: str = "en") -> stt.SpeechMetadata:
    """Return the metadata HA's pipeline passes for device audio."""
    return stt.SpeechMetadata(
        language=language,
        format=stt.AudioFormats.WAV,
        codec=stt.AudioCodecs.PCM,
        bit_rate=stt.AudioBitRates.BITRATE_16,
        sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
        channel=stt.AudioChannels.CHANNEL_MONO,
    )


def stt_entity(hass: HomeAssistant) -> stt.SpeechToTextEntity:
    """Return our loaded STT entity."""
    entity = stt.async_get_speech_to_text_entity(hass, STT_ENTITY)
    assert entity is not None
    return entity


def with_stt_data(provider: FakeProvider, **data: Any) -> list[ConfigSubentryData]:
    """Return the default subentries with the STT subentry's data replaced."""
    subentries = default_subentries(PRESET_CUSTOM, True, provider.models)
    for subentry in subentries:
        if subentry["subentry_type"] == SUBENTRY_STT:
            subentry["data"] = data
    return subentries


@pytest.mark.usefixtures("provider_entry")
async def test_transcribes_wav_upload(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """Speech is uploaded as a complete 16 kHz WAV and the transcript returned."""
    pcm = speech_like_pcm(1.5)
    fake_provider.add_transcript("  Turn on the kitchen light.  ")
    entity = stt_entity(ha_core)

    result = await entity.internal_async_process_audio_stream(
        metadata("en-US"), chunks_of(pcm)
    )

    assert result == stt.SpeechResult(
        "Turn on the kitchen light.", stt.SpeechResultState.SUCCESS
    )
    [request] = fake_provider.transcriptions
    assert request.model == "whisper-1"
    assert request.language == "en"
    assert request.prompt is None
    assert not request.stream
    assert request.response_format == "json"
    assert (request.wav.sample_rate, request.wav.channels) == (RATE, 1)
    assert request.wav.sample_width == 2
    assert request.pcm == pcm
    upload = fake_provider.requests[-1].files["file"]
    assert upload.filename == "speech.wav"
    assert upload.content_type == "audio/wav"


@pytest.mark.usefixtures("provider_entry")
async def test_supports_pipeline_audio_only(ha_core: HomeAssistant) -> None:
    """16 kHz mono 16-bit PCM in WAV is accepted, in every Whisper language."""
    entity = stt_entity(ha_core)

    assert entity.check_metadata(metadata("en"))
    assert entity.check_metadata(metadata("zh-Hans"))
    assert entity.supported_languages == SPEECH_LANGUAGES
    stereo = metadata("en")
    stereo.channel = stt.AudioChannels.CHANNEL_STEREO
    assert not entity.check_metadata(stereo)
    fast = metadata("en")
    fast.sample_rate = stt.AudioSampleRates.SAMPLERATE_44100
    assert not entity.check_metadata(fast)
    ogg = metadata("en")
    ogg.format, ogg.codec = stt.AudioFormats.OGG, stt.AudioCodecs.OPUS
    assert not entity.check_metadata(ogg)
    assert not entity.check_metadata(metadata("tlh"))


class TestStreamingModel:
    """A subentry with a streaming model, a fixed language and a prompt."""

    @pytest.fixture
    def provider_subentries(
        self, fake_provider: FakeProvider
    ) -> list[ConfigSubentryData]:
        """Configure gpt-4o-mini-transcribe, Chinese, with a prompt."""
        return with_stt_data(
            fake_provider,
            **{
                CONF_MODEL: "gpt-4o-mini-transcribe",
                CONF_LANGUAGE: "zh-Hans",
                CONF_PROMPT: "智能家居",
            },
        )

    @pytest.mark.usefixtures("provider_entry")
    async def test_streams_transcript_events(
        self, ha_core: HomeAssistant, fake_provider: FakeProvider
    ) -> None:
        """The transcript is streamed as events; language and prompt are sent."""
        fake_provider.add_transcript("打开厨房的灯")
        fake_provider.transcript_chunk = 2
        entity = stt_entity(ha_core)

        result = await entity.internal_async_process_audio_stream(
            metadata("zh-Hans"), chunks_of(speech_like_pcm(1.0))
        )

        assert result == stt.SpeechResult("打开厨房的灯", stt.SpeechResultState.SUCCESS)
        [request] = fake_provider.transcriptions
        assert request.stream
        assert request.model == "gpt-4o-mini-transcribe"
        assert request.language == "zh"
        assert request.prompt == "智能家居"

    @pytest.mark.usefixtures("provider_entry")
    async def test_languages_come_from_subentry(self, ha_core: HomeAssistant) -> None:
        """Only the subentry's language is offered."""
        entity = stt_entity(ha_core)

        assert entity.supported_languages == ["zh-Hans"]
        assert not entity.check_metadata(metadata("en"))


@pytest.mark.parametrize(
    ("pcm", "reason"),
    [
        (b"", "no audio"),
        (speech_like_pcm(0.2), "audio too short"),
        (bytes(RATE * 2), "silence"),
        (noise_pcm(1.0, -60.0), "silence"),
    ],
    ids=["empty", "too-short", "digital-silence", "noise-floor"],
)
@pytest.mark.usefixtures("provider_entry")
async def test_audio_without_speech_is_not_sent(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    pcm: bytes,
    reason: str,
) -> None:
    """Empty, too short or silent audio is an error without a request."""
    result = await stt_entity(ha_core).internal_async_process_audio_stream(
        metadata(), chunks_of(pcm)
    )

    assert result == stt.SpeechResult(None, stt.SpeechResultState.ERROR)
    assert fake_provider.transcriptions == []
    assert reason in caplog.text


@pytest.mark.usefixtures("provider_entry")
async def test_quiet_speech_is_sent(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    """Speech well above the silence threshold but far from full scale counts."""
    result = await stt_entity(ha_core).internal_async_process_audio_stream(
        metadata(), chunks_of(speech_like_pcm(1.0, peak=0.02))
    )

    assert result.result is stt.SpeechResultState.SUCCESS
    assert len(fake_provider.transcriptions) == 1


@pytest.mark.parametrize(
    ("status", "message"),
    [(400, "Audio file might be corrupted"), (401, "Incorrect API key provided")],
)
@pytest.mark.usefixtures("provider_entry")
async def test_provider_error_is_an_error_result(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    status: int,
    message: str,
) -> None:
    """A failed request is logged and reported as an error, not raised."""
    fake_provider.fail_next(TRANSCRIPTIONS_PATH, status, message)

    result = await stt_entity(ha_core).internal_async_process_audio_stream(
        metadata(), chunks_of(speech_like_pcm(1.0))
    )

    assert result == stt.SpeechResult(None, stt.SpeechResultState.ERROR)
    assert "Speech-to-text request failed" in caplog.text
    assert message in caplog.text


@pytest.mark.usefixtures("provider_entry")
async def test_unreachable_provider_is_an_error_result(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A service that went away is an error result too."""
    entity = stt_entity(ha_core)
    await fake_provider.stop()

    result = await entity.internal_async_process_audio_stream(
        metadata(), chunks_of(speech_like_pcm(1.0))
    )

    assert result == stt.SpeechResult(None, stt.SpeechResultState.ERROR)
    assert "Speech-to-text request failed: Connection error" in caplog.text


@pytest.mark.usefixtures("provider_entry")
async def test_empty_transcript_is_an_error(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A transcript with nothing in it is no result."""
    fake_provider.add_transcript(" ")

    result = await stt_entity(ha_core).internal_async_process_audio_stream(
        metadata(), chunks_of(speech_like_pcm(1.0))
    )

    assert result == stt.SpeechResult(None, stt.SpeechResultState.ERROR)
    assert "recognised no speech" in caplog.text


@pytest.mark.usefixtures("provider_entry")
async def test_long_speech_is_cut_at_the_limit(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Reading stops at the limit; the start is transcribed."""
    second = speech_like_pcm(1.0)
    sent: list[int] = []

    async def endless_speech() -> AsyncGenerator[bytes]:
        for index in range(3600):
            sent.append(index)
            yield second

    result = await stt_entity(ha_core).internal_async_process_audio_stream(
        metadata(), endless_speech()
    )

    assert result.result is stt.SpeechResultState.SUCCESS
    [request] = fake_provider.transcriptions
    assert request.wav.frames == MAX_AUDIO_SECONDS * RATE
    assert len(sent) == MAX_AUDIO_SECONDS
    assert "transcribing only the start" in caplog.text


def test_utterance_measures_windows_and_tail() -> None:
    """Loudness is the loudest 20 ms window, the partial tail included."""
    utterance = Utterance()
    quiet = noise_pcm(0.4, -70.0)
    loud_tail = struct.pack("<4h", 20000, -20000, 20000, -20000)

    assert utterance.add(quiet[:1001])
    assert utterance.add(quiet[1001:])
    assert rms_dbfs(utterance.loudest_rms) < -60
    assert utterance.add(loud_tail)
    assert utterance.problem() is None
    assert utterance.loudest_rms == 20000
    assert utterance.seconds == pytest.approx(0.40025)


def test_utterance_limit_exactly_reached() -> None:
    """Audio that ends exactly at the limit is not reported as truncated."""
    utterance = Utterance(max_seconds=0.5)

    assert not utterance.add(speech_like_pcm(0.5))
    exact = (utterance.truncated, utterance.seconds)
    assert not utterance.add(b"\x01\x00")
    assert exact == (False, 0.5)
    assert (utterance.truncated, utterance.seconds) == (True, 0.5)


def test_loudness_helpers() -> None:
    """The silence threshold is -50 dBFS; zero RMS is minus infinity."""
    assert rms_dbfs(round(silence_rms())) == pytest.approx(-50, abs=0.1)
    assert rms_dbfs(0) == -math.inf
    assert rms_dbfs(32768) == 0


@pytest.mark.parametrize(
    ("language", "code"),
    [("en-US", "en"), ("zh-Hans", "zh"), ("de", "de"), ("", None), ("-x", None)],
)
def test_api_language(language: str, code: str | None) -> None:
    """HA language tags become ISO 639-1 codes."""
    assert api_language(language) == code


@pytest.mark.parametrize(
    ("model", "streams"),
    [
        ("gpt-4o-transcribe", True),
        ("gpt-4o-mini-transcribe-2025-03-20", True),
        ("whisper-1", False),
        ("FunAudioLLM/SenseVoiceSmall", False),
    ],
)
def test_streams_transcript(model: str, streams: bool) -> None:
    """Only the gpt-4o transcribe models stream."""
    assert streams_transcript(model) is streams


async def test_transcript_of_stream_without_done_event() -> None:
    """A stream that ends without its done event yields the deltas."""

    async def events() -> AsyncIterator[Any]:
        yield TranscriptionTextDeltaEvent(type="transcript.text.delta", delta="ni")
        yield TranscriptionTextSegmentEvent.model_construct(
            type="transcript.text.segment", text="ni"
        )
        yield TranscriptionTextDeltaEvent(type="transcript.text.delta", delta="hao")

    assert await transcript_of(events()) == "nihao"


async def test_transcript_of_prefers_done_text() -> None:
    """The done event's text is the transcript."""

    async def events() -> AsyncIterator[Any]:
        yield TranscriptionTextDeltaEvent(type="transcript.text.delta", delta="ni")
        yield TranscriptionTextDoneEvent(type="transcript.text.done", text="你好")

    assert await transcript_of(events()) == "你好"
