"""The transcription logic of the STT entity: the utterance, its loudness, the transcript."""

from collections.abc import AsyncIterator
import math
import struct
from typing import Any

from openai.types.audio import (
    TranscriptionTextDeltaEvent,
    TranscriptionTextDoneEvent,
    TranscriptionTextSegmentEvent,
)
import pytest

from custom_components.xiaozhi.provider.transcription import (
    Utterance,
    api_language,
    rms_dbfs,
    silence_rms,
    streams_transcript,
    transcript_of,
)
from tests.helpers.speech import noise_pcm, speech_like_pcm


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
