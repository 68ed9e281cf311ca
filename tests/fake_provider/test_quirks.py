"""Tests of the fake's switches for roughly compatible servers (fake_provider.quirks)."""

from __future__ import annotations

from collections.abc import AsyncIterator
import io
import json
import struct
from typing import Any, Literal
import wave

import aiohttp
import openai
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
import pytest

from custom_components.xiaozhi.protocol import codec
from fake_provider.audio import SAMPLE_RATE, WAV_HEADER_CUT
from fake_provider.chat import ChatReply
from fake_provider.quirks import TranscriptAnswer
from fake_provider.server import FakeProvider

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MODEL = "gpt-4o-mini"
TRANSCRIPT = "打开客厅灯"


@pytest.fixture
async def client(fake_provider: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with fake_provider.client() as sdk_client:
        yield sdk_client


def make_wav(seconds: float = 1.0) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(16000)
        writer.writeframes(bytes(2 * round(16000 * seconds)))
    return buffer.getvalue()


async def post_raw(
    provider: FakeProvider, path: str, **kwargs: Any
) -> tuple[str, bytes]:
    """POST past the SDK; return the Content-Type and the whole body."""
    headers = {"Authorization": f"Bearer {provider.api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(provider.base_url + path, headers=headers, **kwargs) as response,
    ):
        assert response.status == 200
        return response.content_type, await response.read()


def transcription_form(**fields: str) -> aiohttp.FormData:
    form = aiohttp.FormData()
    for name, value in ({"model": "gpt-4o-mini-transcribe"} | fields).items():
        form.add_field(name, value)
    form.add_field("file", make_wav(), filename="a.wav", content_type="audio/wav")
    return form


def sse_payloads(body: bytes) -> list[Any]:
    """Return the data of each SSE event; ``[DONE]`` as the string."""
    events = [e for e in body.decode().split("\n\n") if e]
    assert all(event.startswith("data: ") for event in events)
    data = [event.removeprefix("data: ") for event in events]
    return [item if item == "[DONE]" else json.loads(item) for item in data]


# -- transcription -------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "fields", "content_type", "body"),
    [
        (TranscriptAnswer.JSON, {"stream": "true"}, "application/json", None),
        (TranscriptAnswer.JSON, {"response_format": "text"}, "application/json", None),
        (TranscriptAnswer.TEXT, {"stream": "true"}, "text/plain", TRANSCRIPT),
        (TranscriptAnswer.TEXT, {}, "text/plain", TRANSCRIPT),
    ],
    ids=["json-for-stream", "json-for-text", "text-for-stream", "text-for-json"],
)
async def test_transcription_ignores_what_was_asked(
    fake_provider: FakeProvider,
    answer: TranscriptAnswer,
    fields: dict[str, str],
    content_type: str,
    body: str | None,
) -> None:
    fake_provider.transcript_answer = answer
    fake_provider.add_transcript(TRANSCRIPT)

    got_type, got = await post_raw(
        fake_provider, "/audio/transcriptions", data=transcription_form(**fields)
    )

    assert got_type == content_type
    if body is None:
        assert json.loads(got) == {"text": TRANSCRIPT}
    else:
        assert got.decode() == body


async def test_transcription_as_verbose_json(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.transcript_answer = TranscriptAnswer.VERBOSE_JSON
    fake_provider.add_transcript(TRANSCRIPT)

    _, body = await post_raw(
        fake_provider,
        "/audio/transcriptions",
        data=transcription_form(language="zh", stream="true"),
    )
    plain = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", make_wav(0.5), "audio/wav")
    )

    verbose = json.loads(body)
    assert (verbose["task"], verbose["language"]) == ("transcribe", "chinese")
    assert verbose["duration"] == 1.0
    assert verbose["text"] == TRANSCRIPT
    assert [segment["text"] for segment in verbose["segments"]] == [TRANSCRIPT]
    assert plain.text == fake_provider.default_transcript  # the SDK reads "text"


async def stream_transcript(client: openai.AsyncOpenAI) -> list[Any]:
    stream = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe",
        file=("a.wav", make_wav(), "audio/wav"),
        stream=True,
    )
    return [event async for event in stream]


async def test_streamed_transcript_with_only_the_done_event(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.transcript_answer = TranscriptAnswer.SSE_DONE_ONLY
    fake_provider.add_transcript(TRANSCRIPT)

    events = await stream_transcript(client)

    assert len(events) == 1
    assert isinstance(events[0], TranscriptionTextDoneEvent)
    assert events[0].text == TRANSCRIPT


async def test_streamed_transcript_without_a_done_event(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.transcript_answer = TranscriptAnswer.SSE_DELTAS_ONLY
    fake_provider.add_transcript(TRANSCRIPT)

    events = await stream_transcript(client)

    assert all(isinstance(e, TranscriptionTextDeltaEvent) for e in events)
    assert "".join(e.delta for e in events) == TRANSCRIPT


async def test_streamed_transcript_whose_done_event_is_empty(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.transcript_answer = TranscriptAnswer.SSE_EMPTY_DONE
    fake_provider.add_transcript(TRANSCRIPT)

    *deltas, done = await stream_transcript(client)

    assert "".join(e.delta for e in deltas) == TRANSCRIPT
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert done.text == ""


async def test_sse_answers_only_apply_to_streamed_requests(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.transcript_answer = TranscriptAnswer.SSE_DONE_ONLY

    result = await client.audio.transcriptions.create(
        model="whisper-1", file=("a.wav", make_wav(), "audio/wav")
    )

    assert result.text == fake_provider.default_transcript


# -- chat ------------------------------------------------------------------------


async def raw_chat(provider: FakeProvider, **options: Any) -> tuple[str, bytes]:
    request = {"model": MODEL, "messages": MESSAGES, "stream": True} | options
    return await post_raw(provider, "/chat/completions", json=request)


async def stream_chunks(
    client: openai.AsyncOpenAI, **kwargs: Any
) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, **kwargs
    )
    return [chunk async for chunk in stream]


def contents(chunks: list[ChatCompletionChunk]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


async def test_chat_ignoring_stream_answers_one_completion(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.chat_quirks.ignore_stream = True
    fake_provider.add_reply(ChatReply.text("Hello there."))

    content_type, body = await raw_chat(fake_provider)

    completion = json.loads(body)
    assert content_type == "application/json"
    assert completion["object"] == "chat.completion"
    assert completion["choices"][0]["message"]["content"] == "Hello there."


async def test_chat_stream_without_usage_though_asked(
    fake_provider: FakeProvider,
) -> None:
    fake_provider.chat_quirks.omit_usage = True
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))

    _, body = await raw_chat(fake_provider, stream_options={"include_usage": True})

    *payloads, done = sse_payloads(body)
    assert done == "[DONE]"
    assert all("usage" not in payload for payload in payloads)
    assert all(payload["choices"] for payload in payloads)


async def test_chat_stream_without_finish_reason(fake_provider: FakeProvider) -> None:
    fake_provider.chat_quirks.omit_finish_reason = True
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))

    _, body = await raw_chat(fake_provider)

    *payloads, done = sse_payloads(body)
    choices = [payload["choices"][0] for payload in payloads]
    assert done == "[DONE]"
    assert all("finish_reason" not in choice for choice in choices)
    assert [choice["delta"].get("content") for choice in choices] == ["", "ab", "cd"]


async def test_chat_stream_with_empty_choices_chunks(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.chat_quirks.empty_choices_chunks = True
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))

    chunks = await stream_chunks(client)

    assert [bool(c.choices) for c in chunks] == [False, True, True, True, False, True]
    assert contents(chunks) == "abcd"
    assert chunks[-1].choices[0].finish_reason == "stop"


async def test_chat_stream_with_empty_content_deltas(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.chat_quirks.empty_content_deltas = True
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))

    chunks = await stream_chunks(client)

    deltas = [c.choices[0].delta.content for c in chunks]
    assert deltas == ["", "ab", None, "cd", "", None]
    assert contents(chunks) == "abcd"


async def test_chat_stream_without_done(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.chat_quirks.omit_done = True
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))

    _, body = await raw_chat(fake_provider)
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))
    chunks = await stream_chunks(client)

    assert "[DONE]" not in sse_payloads(body)
    assert sse_payloads(body)[-1]["choices"][0]["finish_reason"] == "stop"
    assert contents(chunks) == "abcd"  # the SDK ends with the body
    assert fake_provider.streams[-1].completed


async def test_chat_stream_with_the_role_in_every_chunk(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.chat_quirks.role_in_every_chunk = True
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2))

    chunks = await stream_chunks(client)

    assert [c.choices[0].delta.role for c in chunks] == ["assistant"] * 4
    assert contents(chunks) == "abcd"


async def test_chat_stream_with_whole_tool_calls(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.chat_quirks.whole_tool_calls = True
    fake_provider.add_reply(
        ChatReply.tool_call("HassTurnOn", {"name": "客厅灯"}, chunk=3, text="好的")
    )

    chunks = await stream_chunks(client)

    calls = [
        call
        for c in chunks
        if c.choices
        for call in c.choices[0].delta.tool_calls or []
    ]
    assert len(calls) == 1
    assert calls[0].function is not None
    assert (calls[0].id, calls[0].function.name) == ("call_0", "HassTurnOn")
    assert json.loads(calls[0].function.arguments or "") == {"name": "客厅灯"}
    assert contents(chunks) == "好的"
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


# -- speech ------------------------------------------------------------------------


async def read_speech(
    client: openai.AsyncOpenAI,
    response_format: Literal["pcm", "wav"] = "pcm",
    text: str = "你好世界",
) -> tuple[list[bytes], dict[str, str]]:
    """Return the body pieces as the client received them, and the headers."""
    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input=text, response_format=response_format
    ) as response:
        pieces = [piece async for piece in response.iter_bytes()]
        return pieces, dict(response.headers)


@pytest.mark.parametrize("response_format", ["pcm", "wav"])
async def test_speech_under_another_content_type(
    fake_provider: FakeProvider,
    client: openai.AsyncOpenAI,
    response_format: Literal["pcm", "wav"],
) -> None:
    fake_provider.speech.content_type = "application/octet-stream"

    pieces, headers = await read_speech(client, response_format)

    assert headers["content-type"] == "application/octet-stream"
    assert len(b"".join(pieces)) >= fake_provider.speech.pcm_bytes("你好世界")


async def test_speech_as_one_body_with_content_length(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.speech.content_length = True

    pieces, headers = await read_speech(client, "wav")

    body = b"".join(pieces)
    assert "transfer-encoding" not in headers
    assert int(headers["content-length"]) == len(body)
    assert len(codec.parse_wav(body).pcm) == fake_provider.speech.pcm_bytes("你好世界")
    assert fake_provider.streams[-1].events_sent == 1


async def test_speech_in_tiny_chunks(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.speech.chunk_sizes = range(1, 8)
    expected = fake_provider.speech.pcm_bytes("你好")

    pieces, headers = await read_speech(client, "pcm", "你好")

    assert headers["transfer-encoding"] == "chunked"
    assert sum(len(piece) for piece in pieces) == expected
    assert max(len(piece) for piece in pieces) <= 7
    sent = fake_provider.streams[-1].events_sent
    assert sent == len(fake_provider.speech.pieces(b"", bytes(expected)))
    assert sent > expected // 7


@pytest.mark.parametrize(
    ("sizes", "riff_size", "data_size"),
    [("streaming", 0xFFFFFFFF, 0xFFFFFFFF), ("zero", 0, 0), ("exact", None, None)],
)
async def test_speech_wav_header_sizes(
    fake_provider: FakeProvider,
    client: openai.AsyncOpenAI,
    sizes: Any,
    riff_size: int | None,
    data_size: int | None,
) -> None:
    fake_provider.speech.wav_sizes = sizes
    pcm_bytes = fake_provider.speech.pcm_bytes("你好世界")

    pieces, _ = await read_speech(client, "wav")

    body = b"".join(pieces)
    assert len(body) == 44 + pcm_bytes
    (got_riff,) = struct.unpack_from("<I", body, 4)
    (got_data,) = struct.unpack_from("<I", body, 40)
    exact = riff_size is None
    assert got_riff == (36 + pcm_bytes if exact else riff_size)
    assert got_data == (pcm_bytes if exact else data_size)
    assert codec.parse_wav(body).rate == SAMPLE_RATE


async def test_speech_wav_header_split_across_chunks(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.speech.split_wav_header = True
    fake_provider.speech.hold_after_chunks = 1
    received = b""

    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="你好", response_format="wav"
    ) as response:
        parts = response.iter_bytes()
        while len(received) < WAV_HEADER_CUT:
            received += await anext(parts)
        held = await fake_provider.wait_held()
        assert received == codec.wav_header(SAMPLE_RATE)[:WAV_HEADER_CUT]
        fake_provider.release()
        received += b"".join([part async for part in parts])

    assert len(codec.parse_wav(received).pcm) == fake_provider.speech.pcm_bytes("你好")
    assert held.completed
