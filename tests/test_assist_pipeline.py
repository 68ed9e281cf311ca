"""A real Assist pipeline run with our STT, conversation agent and TTS."""

import asyncio

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import ClientSessionGenerator

from homeassistant.components.assist_pipeline import (
    AudioSettings,
    PipelineEvent,
    PipelineEventType,
    async_create_default_pipeline,
    async_pipeline_from_audio_stream,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.tts.const import DATA_TTS_MANAGER
from homeassistant.core import Context, HomeAssistant

from custom_components.xiaozhi.protocol.codec import parse_wav
from fake_provider import ChatReply, FakeProvider
from tests.helpers.speech import chunks_of, metadata, speech_like_pcm

STT_ENTITY = "stt.xiaozhi_stt"
TTS_ENTITY = "tts.xiaozhi_tts"
AGENT_ENTITY = "conversation.xiaozhi_conversation"
TIMEOUT = 20.0

TRANSCRIPT = "Turn on the kitchen light."
# Longer than the 60 characters after which the pipeline streams text to TTS.
REPLY_SENTENCES = [
    "Sure, the kitchen light is on now.",
    "It is a little dark outside, so I also dimmed it to sixty percent.",
    "Anything else?",
]


@pytest.fixture
async def pipeline_id(provider_entry: MockConfigEntry, ha_core: HomeAssistant) -> str:
    """Create a pipeline of our STT, agent and TTS; return its id."""
    # HA's TTS file cache lives in a folder shared by all tests and runs.
    ha_core.data[DATA_TTS_MANAGER].use_file_cache = False
    pipeline = await async_create_default_pipeline(
        ha_core, STT_ENTITY, TTS_ENTITY, "Xiaozhi"
    )
    assert pipeline is not None
    await async_update_pipeline(ha_core, pipeline, conversation_engine=AGENT_ENTITY)
    return pipeline.id


def events_of(events: list[PipelineEvent], kind: PipelineEventType) -> list[dict]:  # type: ignore[type-arg]
    """Return the data of every event of one kind."""
    return [event.data or {} for event in events if event.type is kind]


async def test_voice_round_trip(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline_id: str,
    hass_client: ClientSessionGenerator,
) -> None:
    """Speech in, our transcript, our agent's streamed reply, our audio out."""
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(" ".join(REPLY_SENTENCES), chunk=5))
    speech = speech_like_pcm(1.5)
    events: list[PipelineEvent] = []

    async with asyncio.timeout(TIMEOUT):
        await async_pipeline_from_audio_stream(
            ha_core,
            context=Context(),
            event_callback=events.append,
            stt_metadata=metadata(""),
            stt_stream=chunks_of(speech),
            pipeline_id=pipeline_id,
            audio_settings=AudioSettings(is_vad_enabled=False),
        )

    assert events_of(events, PipelineEventType.ERROR) == []
    pipeline = async_get_pipeline(ha_core, pipeline_id)
    assert (pipeline.stt_engine, pipeline.tts_engine) == (STT_ENTITY, TTS_ENTITY)
    [run_start] = events_of(events, PipelineEventType.RUN_START)
    assert run_start["tts_output"]["stream_response"] is True

    [stt_end] = events_of(events, PipelineEventType.STT_END)
    assert stt_end["stt_output"]["text"] == TRANSCRIPT
    [upload] = fake_provider.transcriptions
    assert upload.pcm == speech
    assert upload.wav.sample_rate == 16000

    [intent_start] = events_of(events, PipelineEventType.INTENT_START)
    assert intent_start["engine"] == AGENT_ENTITY
    progress = events_of(events, PipelineEventType.INTENT_PROGRESS)
    assert {"tts_start_streaming": True} in progress
    [intent_end] = events_of(events, PipelineEventType.INTENT_END)
    speech_out = intent_end["intent_output"]["response"]["speech"]["plain"]["speech"]
    assert speech_out == " ".join(REPLY_SENTENCES)

    [tts_end] = events_of(events, PipelineEventType.TTS_END)
    assert tts_end["tts_output"]["url"] == run_start["tts_output"]["url"]
    assert tts_end["tts_output"]["mime_type"] == "audio/x-wav"
    client = await hass_client()
    response = await client.get(tts_end["tts_output"]["url"])
    assert response.status == 200
    data = await response.read()
    wav = parse_wav(data)
    assert (wav.rate, wav.channels, wav.width) == (24000, 1, 2)
    # The reply was spoken piece by piece (first clause, then sentences).
    spoken = [request.input for request in fake_provider.speech_requests]
    assert spoken == ["Sure,", "the kitchen light is on now.", *REPLY_SENTENCES[1:]]
    assert len(wav.pcm) == sum(fake_provider.speech.pcm_bytes(s) for s in spoken)
