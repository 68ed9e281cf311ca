"""The transcription logic of the STT entity: the utterance, its loudness, the answer."""

import json
import math
import struct

import pytest

from custom_components.xiaozhi.provider.answers import AnswerError
from custom_components.xiaozhi.provider.transcription import (
    Utterance,
    api_language,
    rms_dbfs,
    silence_rms,
    streams_transcript,
    transcript_of_answer,
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


SSE = "text/event-stream; charset=utf-8"
JSON = "application/json"
DELTA_NI = 'data: {"type":"transcript.text.delta","delta":"你"}\n\n'
DELTA_HAO = 'data: {"type":"transcript.text.delta","delta":"好"}\n\n'
VERBOSE_JSON = json.dumps(
    {
        "task": "transcribe",
        "language": "chinese",
        "duration": 1.0,
        "text": "你好",
        "segments": [{"id": 0, "text": "你好"}],
    }
)


def done(text: str) -> str:
    return f'data: {{"type":"transcript.text.done","text":"{text}"}}\n\n'


def vllm_chunk(content: str) -> str:
    choice = {"delta": {"content": content}, "finish_reason": None}
    event = {"object": "transcription.chunk", "choices": [choice]}
    return f"data: {json.dumps(event, ensure_ascii=False)}\n\n"


@pytest.mark.parametrize(
    ("content_type", "body", "transcript"),
    [
        (SSE, DELTA_NI + DELTA_HAO + done("你好。"), "你好。"),
        (SSE, done("你好"), "你好"),
        (SSE, DELTA_NI + DELTA_HAO, "你好"),
        (SSE, DELTA_NI + DELTA_HAO + done(""), "你好"),
        (SSE, DELTA_NI + "data: [DONE]\n\n" + DELTA_HAO, "你"),
        (
            SSE,
            DELTA_NI + 'data: {"type":"transcript.text.segment","text":"x"}\n\n',
            "你",
        ),
        (SSE, ": keep-alive\r\n\r\nevent: delta\r\n" + DELTA_NI, "你"),
        (SSE, DELTA_NI + DELTA_HAO.removesuffix("\n\n"), "你好"),
        (
            SSE,
            'data: {"choices":[{"delta":{"role":"assistant"}}]}\n\n'
            + vllm_chunk("你")
            + vllm_chunk("好")
            + "data: [DONE]\n\n",
            "你好",
        ),
        ("application/json", DELTA_NI + done("你好"), "你好"),
        (None, DELTA_NI + DELTA_HAO, "你好"),
        (JSON, '{"text": "你好"}', "你好"),
        ("application/json; charset=utf-8", '{"text":"","usage":{}}', ""),
        (JSON, VERBOSE_JSON, "你好"),
        ("text/plain", '{"text": "你好"}', "你好"),
        ("text/plain; charset=utf-8", "你好\n", "你好\n"),
        ("text/plain; format=flowed; charset=gbk", "你好".encode("gbk"), "你好"),
        ("text/plain; charset=klingon", "你好", "你好"),
        (JSON, "你好", "你好"),
        (None, "", ""),
    ],
    ids=[
        "sse-openai",
        "sse-done-only",
        "sse-deltas-only",
        "sse-empty-done",
        "sse-ends-at-done-marker",
        "sse-other-events-add-nothing",
        "sse-comments-fields-crlf",
        "sse-last-event-unterminated",
        "sse-vllm-chunks",
        "sse-labelled-json",
        "sse-unlabelled",
        "json",
        "json-empty-text",
        "verbose-json",
        "json-labelled-text",
        "text",
        "text-in-its-charset",
        "text-unknown-charset",
        "text-labelled-json",
        "empty",
    ],
)
def test_transcript_of_answer(
    content_type: str | None, body: str | bytes, transcript: str
) -> None:
    """Every shape of answer gives its transcript, by what the body is."""
    data = body.encode() if isinstance(body, str) else body
    assert transcript_of_answer(content_type, data) == transcript


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        (JSON, '{"error": {"message": "quota exceeded"}}', "quota exceeded"),
        (JSON, '{"error": "model not loaded"}', "model not loaded"),
        (SSE, DELTA_NI + 'data: {"error": {"code": 500}}\n\n', '{"code": 500}'),
        (SSE, "data: not json\n\n", "not JSON: 'not json'"),
        (JSON, '{"transcript": "你好"}', 'has no text: {"transcript": "你好"}'),
        (JSON, '{"text": 42}', "has no text"),
    ],
    ids=[
        "json-error",
        "json-error-string",
        "sse-error-event",
        "sse-garbage",
        "json-without-text",
        "json-text-not-a-string",
    ],
)
def test_answer_without_a_transcript_is_an_error(
    content_type: str, body: str, message: str
) -> None:
    """An error or a JSON answer without text raises, saying what came."""
    with pytest.raises(AnswerError) as err:
        transcript_of_answer(content_type, body.encode())

    assert message in str(err.value)
