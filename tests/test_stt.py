"""Tests of the STT entity against the local OpenAI-compatible server."""

from collections.abc import AsyncGenerator
from typing import Any

import pytest

from homeassistant.components import stt
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_PROMPT
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import CONF_LANGUAGE, CONF_MODEL, SUBENTRY_STT
from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM, SPEECH_LANGUAGES
from custom_components.xiaozhi.provider.transcription import MAX_AUDIO_SECONDS
from fake_provider import TRANSCRIPTIONS_PATH, FakeProvider, TranscriptAnswer
from tests.helpers.speech import RATE, chunks_of, metadata, noise_pcm, speech_like_pcm

STT_ENTITY = "stt.xiaozhi_stt"


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


class TestAnswerShapes:
    """Roughly compatible services answer in their own shape, whatever was asked."""

    @pytest.fixture
    def provider_subentries(
        self, fake_provider: FakeProvider, model: str
    ) -> list[ConfigSubentryData]:
        """Configure the model under test."""
        return with_stt_data(fake_provider, **{CONF_MODEL: model})

    @pytest.mark.parametrize(
        ("model", "answer"),
        [
            *(("gpt-4o-mini-transcribe", answer) for answer in TranscriptAnswer),
            *(
                ("whisper-1", answer)
                for answer in TranscriptAnswer
                if not answer.streamed
            ),
        ],
    )
    @pytest.mark.usefixtures("provider_entry")
    async def test_every_shape_gives_the_transcript(
        self,
        ha_core: HomeAssistant,
        fake_provider: FakeProvider,
        caplog: pytest.LogCaptureFixture,
        model: str,
        answer: TranscriptAnswer,
    ) -> None:
        """SSE (with or without done, empty done), JSON, verbose JSON or text."""
        fake_provider.transcript_answer = answer
        fake_provider.transcript_chunk = 2
        fake_provider.add_transcript("打开厨房的灯")

        result = await stt_entity(ha_core).internal_async_process_audio_stream(
            metadata("zh-Hans"), chunks_of(speech_like_pcm(1.0))
        )

        assert result == stt.SpeechResult("打开厨房的灯", stt.SpeechResultState.SUCCESS)
        [request] = fake_provider.transcriptions
        assert request.stream is (model == "gpt-4o-mini-transcribe")
        assert request.response_format == "json"
        assert "failed" not in caplog.text


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
