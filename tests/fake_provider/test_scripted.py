"""Tests of the fake OpenAI-compatible provider, driven by the real openai SDK."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import io
import json
import math
import struct
from typing import Any
import wave

import aiohttp
import httpx2
from multidict import CIMultiDict
import openai
from openai.types.audio import TranscriptionTextDeltaEvent, TranscriptionTextDoneEvent
from openai.types.chat import ChatCompletionChunk, ChatCompletionMessageParam
import pytest

from fake_provider.audio import (
    SAMPLE_RATE as SPEECH_SAMPLE_RATE,
    STREAMING_WAV_SIZE,
    InvalidWavError,
    read_complete_wav,
)
from fake_provider.chat import ChatReply, ErrorEvent, TextDelta, ToolCall, Usage
from fake_provider.inputs import RecordedRequest, StreamRecord
from fake_provider.server import (
    CHAT_PATH,
    DEFAULT_REPLY_TEXT,
    SPEECH_PATH,
    TRANSCRIPTIONS_PATH,
    FakeProvider,
    full_path,
)
from fake_provider.text import split_text

MESSAGES: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hi"}]
MODEL = "gpt-4o-mini"


@pytest.fixture
async def client(fake_provider: FakeProvider) -> AsyncIterator[openai.AsyncOpenAI]:
    async with fake_provider.client() as sdk_client:
        yield sdk_client


def make_wav(seconds: float = 0.5, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x01\x00" * channels * round(rate * seconds))
    return buffer.getvalue()


async def stream_chunks(
    client: openai.AsyncOpenAI, **kwargs: Any
) -> list[ChatCompletionChunk]:
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True, **kwargs
    )
    return [chunk async for chunk in stream]


def deltas_of(chunks: list[ChatCompletionChunk]) -> list[str | None]:
    return [chunk.choices[0].delta.content for chunk in chunks if chunk.choices]


async def collect_contents(
    stream: openai.AsyncStream[ChatCompletionChunk], received: list[str | None]
) -> None:
    """Append each delta's content to ``received`` until the stream ends or fails."""
    async for chunk in stream:
        received.append(chunk.choices[0].delta.content)  # noqa: PERF401


# -- models and auth ---------------------------------------------------------


async def test_models_list_and_retrieve(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.models = ["m-chat", "m-tts"]

    page = await client.models.list()
    model = await client.models.retrieve("m-tts")

    assert [m.id for m in page.data] == ["m-chat", "m-tts"]
    assert model.id == "m-tts"
    assert model.owned_by == "fake"
    with pytest.raises(openai.NotFoundError) as err:
        await client.models.retrieve("nope")
    assert err.value.code == "model_not_found"


async def test_bad_key_is_rejected_with_openai_error(
    fake_provider: FakeProvider,
) -> None:
    async with fake_provider.client(api_key="sk-wrong") as bad_client:
        with pytest.raises(openai.AuthenticationError) as err:
            await bad_client.models.list()

    assert err.value.status_code == 401
    assert err.value.code == "invalid_api_key"
    assert err.value.type == "invalid_request_error"
    assert fake_provider.requests[-1].headers["authorization"] == "Bearer sk-wrong"


async def test_base_url_requires_start_and_stop_is_idempotent(
    socket_enabled: None,
) -> None:
    provider = FakeProvider(api_key="sk-other")
    with pytest.raises(RuntimeError, match="not started"):
        _ = provider.base_url
    await provider.stop()

    async with provider:
        assert provider.base_url.startswith("http://127.0.0.1:")
        assert provider.base_url.endswith("/v1")
        async with provider.client() as sdk_client:
            assert (await sdk_client.models.list()).data
    await provider.stop()


# -- streamed chat -------------------------------------------------------------


async def test_streamed_text_deltas(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("Hello there.", chunk=3))

    chunks = await stream_chunks(client)

    assert deltas_of(chunks) == ["", "Hel", "lo ", "the", "re.", None]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks] == [None] * 5 + ["stop"]
    assert {c.id for c in chunks} == {chunks[0].id}
    assert all(c.object == "chat.completion.chunk" and c.model == MODEL for c in chunks)
    assert all(c.usage is None for c in chunks)
    assert fake_provider.chat_requests[-1]["stream"] is True
    assert fake_provider.streams[-1].completed
    assert fake_provider.streams[-1].events_sent == 4


async def test_sse_wire_format_matches_openai(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text(["Hi", "!"]))

    async with client.chat.completions.with_streaming_response.create(
        model=MODEL, messages=MESSAGES, stream=True
    ) as response:
        raw = b"".join([part async for part in response.iter_bytes()]).decode()

    events = raw.split("\n\n")
    assert events[-2:] == ["data: [DONE]", ""]
    assert response.headers["content-type"].startswith("text/event-stream")
    payloads = [json.loads(event.removeprefix("data: ")) for event in events[:-2]]
    assert all(event.startswith("data: {") for event in events[:-2])
    assert "usage" not in payloads[0]  # only present with include_usage
    assert payloads[1] == {
        "id": payloads[0]["id"],
        "object": "chat.completion.chunk",
        "created": payloads[0]["created"],
        "model": MODEL,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
        "choices": [
            {
                "index": 0,
                "delta": {"content": "Hi"},
                "logprobs": None,
                "finish_reason": None,
            }
        ],
    }
    assert payloads[-1]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }


async def test_usage_chunk_when_include_usage(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2, usage=Usage(10, 2)))

    chunks = await stream_chunks(client, stream_options={"include_usage": True})

    assert all(c.usage is None for c in chunks[:-1])
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (10, 2)
    assert last.usage.total_tokens == 12


async def test_default_usage_counts_events_and_reasoning(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("ab", chunk=1, reasoning="xyz"))

    chunks = await stream_chunks(client, stream_options={"include_usage": True})

    usage = chunks[-1].usage
    assert usage is not None
    assert usage.completion_tokens == 5
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.reasoning_tokens == 3


async def test_reasoning_content_streamed_before_text(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("答案", chunk=1, reasoning=["想", "一想"]))

    chunks = await stream_chunks(client)

    reasoning = [
        (c.choices[0].delta.model_extra or {}).get("reasoning_content") for c in chunks
    ]
    assert reasoning == [None, "想", "一想", None, None, None]
    assert deltas_of(chunks) == ["", None, None, "答", "案", None]


async def test_tool_call_streamed_in_fragments(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_call("HassTurnOn", {"name": "kitchen"}, chunk=5)
    )

    chunks = await stream_chunks(client)

    first = chunks[0].choices[0].delta
    assert first.role == "assistant"
    assert first.content is None
    assert first.tool_calls is not None
    head = first.tool_calls[0]
    assert (head.index, head.id, head.type) == (0, "call_0", "function")
    assert head.function is not None
    assert (head.function.name, head.function.arguments) == ("HassTurnOn", "")
    pieces = []
    for chunk in chunks[1:-1]:
        calls = chunk.choices[0].delta.tool_calls
        assert calls is not None
        assert calls[0].id is None
        assert calls[0].function is not None
        assert calls[0].function.name is None
        pieces.append(calls[0].function.arguments)
    assert all(piece is not None and len(piece) <= 5 for piece in pieces)
    assert json.loads("".join(p or "" for p in pieces)) == {"name": "kitchen"}
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


async def test_parallel_tool_calls_in_one_piece_each(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_calls(
            ToolCall("HassTurnOn", {"name": "kitchen"}, call_id="call_a"),
            ToolCall("HassTurnOff", '{"name": "hall"}'),
            chunk=None,
        )
    )

    chunks = await stream_chunks(client)

    calls = [c.choices[0].delta.tool_calls for c in chunks[:-1]]
    assert [len(c or []) for c in calls] == [1, 1]
    seen = [
        (call.index, call.id, call.function.name, call.function.arguments)
        for group in calls
        for call in group or []
        if call.function is not None
    ]
    assert seen == [
        (0, "call_a", "HassTurnOn", '{"name": "kitchen"}'),
        (1, "call_1", "HassTurnOff", '{"name": "hall"}'),
    ]


async def test_text_before_tool_call_and_scripted_finish_reason(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_call("Lookup", None, text="Let me see.", finish_reason="length")
    )

    chunks = await stream_chunks(client)

    assert "".join(c or "" for c in deltas_of(chunks)) == "Let me see."
    tool_chunks = [c for c in chunks if c.choices[0].delta.tool_calls]
    assert len(tool_chunks) == 2
    assert chunks[-1].choices[0].finish_reason == "length"


async def test_empty_reply_still_sends_role_and_finish(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply(model="other-model"))

    chunks = await stream_chunks(client)

    assert deltas_of(chunks) == ["", None]
    assert {c.model for c in chunks} == {"other-model"}


async def test_default_reply_when_fifo_empty(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("first"))
    assert fake_provider.pending_replies == 1

    first = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    second = await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert first.choices[0].message.content == "first"
    assert second.choices[0].message.content == DEFAULT_REPLY_TEXT
    assert fake_provider.pending_replies == 0


async def test_non_stream_reply_is_assembled(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    reply = ChatReply.tool_calls(
        ToolCall("A", {"x": 1}),
        ToolCall("B", {"y": "é"}),
        text="On it.",
        chunk=3,
    )
    fake_provider.add_reply(reply)

    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    choice = completion.choices[0]
    assert completion.object == "chat.completion"
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content == "On it."
    assert choice.message.tool_calls is not None
    assembled = [
        (call.id, call.function.name, json.loads(call.function.arguments))
        for call in choice.message.tool_calls
        if call.type == "function"
    ]
    assert assembled == [("call_0", "A", {"x": 1}), ("call_1", "B", {"y": "é"})]
    assert completion.usage is not None
    assert completion.usage.completion_tokens == len(reply.events)


async def test_non_stream_reasoning_and_no_content(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply([], finish_reason="length"))
    fake_provider.add_reply(ChatReply.text("yes", reasoning="hmm"))

    empty = await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    reasoned = await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert empty.choices[0].message.content is None
    assert empty.choices[0].finish_reason == "length"
    extra = reasoned.choices[0].message.model_extra or {}
    assert extra["reasoning_content"] == "hmm"
    assert reasoned.choices[0].message.content == "yes"


# -- errors --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_scripted_error_status_maps_to_sdk_exception(
    fake_provider: FakeProvider,
    client: openai.AsyncOpenAI,
    status: int,
    error_class: type[openai.APIStatusError],
) -> None:
    fake_provider.add_reply(ChatReply.error(status, "boom", code="some_code"))

    with pytest.raises(error_class) as err:
        await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        )

    assert err.value.status_code == status
    assert err.value.code == "some_code"
    assert "boom" in err.value.message


async def test_fail_next_is_fifo_per_path_and_keeps_replies(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("kept"))
    fake_provider.fail_next(
        "/chat/completions", 429, "slow down", code="rate_limit_exceeded"
    )
    fake_provider.fail_next(CHAT_PATH, 500)

    with pytest.raises(openai.RateLimitError) as rate_limited:
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    with pytest.raises(openai.InternalServerError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)
    models = await client.models.list()
    completion = await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert [r.json["model"] for r in fake_provider.requests if r.json] == [MODEL] * 3
    assert rate_limited.value.code == "rate_limit_exceeded"
    assert rate_limited.value.type == "requests"
    assert models.data
    assert completion.choices[0].message.content == "kept"


async def test_mid_stream_disconnect_raises_while_iterating(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcdefgh", chunk=2, disconnect_after=2))
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    received: list[str | None] = []

    # openai 3.10 does not wrap transport errors raised while iterating.
    with pytest.raises(httpx2.RemoteProtocolError, match="incomplete chunked read"):
        await collect_contents(stream, received)

    assert received == ["", "ab", "cd"]
    record = fake_provider.streams[-1]
    assert record.server_aborted
    assert not record.client_closed
    assert not record.completed


async def test_disconnect_after_all_events_skips_finish_and_done(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2, disconnect_after=2))
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    received: list[str | None] = []

    with pytest.raises(httpx2.RemoteProtocolError):
        await collect_contents(stream, received)

    assert received == ["", "ab", "cd"]
    assert fake_provider.streams[-1].events_sent == 2


async def test_disconnect_before_any_event(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abc", disconnect_after=0))
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )

    with pytest.raises(httpx2.RemoteProtocolError):
        await anext(aiter(stream))


async def test_non_stream_disconnect_is_connection_error(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abc", disconnect_after=0))

    with pytest.raises(openai.APIConnectionError):
        await client.chat.completions.create(model=MODEL, messages=MESSAGES)

    assert fake_provider.streams[-1].server_aborted


async def test_in_stream_error_event_raises_api_error(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(
        ChatReply([TextDelta("partial"), ErrorEvent("overloaded", code="busy")])
    )
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    received: list[str | None] = []

    with pytest.raises(openai.APIError, match="overloaded") as err:
        await collect_contents(stream, received)

    assert received == ["", "partial"]
    assert err.value.code == "busy"


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b'{"model": "m"}', "application/json"),
    ],
)
async def test_malformed_chat_request_is_400(
    fake_provider: FakeProvider, body: bytes, content_type: str
) -> None:
    headers = {"Authorization": "Bearer sk-test", "Content-Type": content_type}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake_provider.base_url + "/chat/completions", data=body, headers=headers
        ) as response,
    ):
        payload = await response.json()

    assert response.status == 400
    assert payload["error"]["type"] == "invalid_request_error"


async def test_unknown_path_is_openai_404(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.NotFoundError) as err:
        await client.embeddings.create(model="x", input="y")

    assert err.value.code == "unknown_url"
    assert fake_provider.requests[-1].path == "/v1/embeddings"


# -- hold / release / closed -------------------------------------------------


async def test_hold_after_first_delta_until_release(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcdef", chunk=2, hold_after=1))
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    iterator = aiter(stream)

    first = [(await anext(iterator)).choices[0].delta.content for _ in range(2)]
    held = await fake_provider.wait_held()

    assert first == ["", "ab"]
    assert held is fake_provider.streams[-1]
    assert (held.held, held.events_sent, held.completed) == (True, 1, False)
    fake_provider.release()
    rest = [chunk.choices[0].delta.content async for chunk in iterator]
    assert rest == ["cd", "ef", None]
    assert (held.held, held.events_sent, held.completed) == (False, 3, True)


async def test_release_before_hold_point_does_not_block(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcd", chunk=2, hold_after=2))
    fake_provider.release()

    chunks = await stream_chunks(client)

    assert deltas_of(chunks) == ["", "ab", "cd", None]
    assert (await fake_provider.wait_held()) is fake_provider.streams[-1]


async def test_non_stream_hold(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("late", hold_after=0))
    request = asyncio.create_task(
        client.chat.completions.create(model=MODEL, messages=MESSAGES)
    )

    held = await fake_provider.wait_held()
    assert not request.done()
    fake_provider.release()

    assert (await request).choices[0].message.content == "late"
    assert held.completed


async def test_closing_the_stream_is_detected(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcdef", chunk=2, hold_after=1))
    stream = await client.chat.completions.create(
        model=MODEL, messages=MESSAGES, stream=True
    )
    iterator = aiter(stream)
    await anext(iterator)
    await anext(iterator)
    await fake_provider.wait_held()

    await stream.close()
    closed = await fake_provider.wait_stream_closed()

    assert closed is fake_provider.streams[-1]
    assert closed.client_closed
    assert not closed.completed
    assert closed.events_sent == 1


async def test_cancelling_the_consumer_task_closes_the_stream(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_reply(ChatReply.text("abcdef", chunk=2, hold_after=1))
    first_delta = asyncio.Event()

    async def consume() -> None:
        stream = await client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        )
        async with stream:
            async for chunk in stream:
                if chunk.choices[0].delta.content:
                    first_delta.set()

    task = asyncio.create_task(consume())
    await first_delta.wait()
    await fake_provider.wait_held()
    task.cancel()
    closed = await fake_provider.wait_stream_closed()

    assert task.cancelled()
    assert closed.client_closed
    assert closed.events_sent == 1


async def test_stop_cancels_held_stream_without_marking_client_close(
    socket_enabled: None,
) -> None:
    provider = FakeProvider()
    await provider.start()
    provider.add_reply(ChatReply.text("abc", hold_after=0))
    async with provider.client() as sdk_client:
        stream = await sdk_client.chat.completions.create(
            model=MODEL, messages=MESSAGES, stream=True
        )
        held = await provider.wait_held()
        await provider.stop()

        with pytest.raises(httpx2.RemoteProtocolError):
            await anext(aiter(stream))

    assert not held.client_closed
    assert not held.completed
    with pytest.raises(TimeoutError):
        await provider.wait_stream_closed(timeout=0)


async def test_write_to_vanished_client_counts_as_closed(
    fake_provider: FakeProvider,
) -> None:
    # The write-side race (the peer is gone before aiohttp cancels the handler).
    record = StreamRecord(CHAT_PATH, RecordedRequest("POST", CHAT_PATH, CIMultiDict()))

    def write_to_vanished_peer() -> None:
        raise ConnectionResetError

    async with fake_provider._watch(record):
        write_to_vanished_peer()

    assert record.client_closed
    assert await fake_provider.wait_stream_closed() is record


# -- transcription -----------------------------------------------------------


async def test_transcription_json_records_wav_and_fields(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_transcript("打开厨房的灯")
    wav = make_wav(seconds=1.5, rate=16000)

    result = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe",
        file=("speech.wav", wav, "audio/wav"),
        language="zh",
        prompt="家居",
    )

    assert result.text == "打开厨房的灯"
    recorded = fake_provider.transcriptions[-1]
    assert recorded.model == "gpt-4o-mini-transcribe"
    assert (recorded.language, recorded.prompt) == ("zh", "家居")
    assert (recorded.response_format, recorded.stream) == ("json", False)
    assert (recorded.wav.sample_rate, recorded.wav.channels) == (16000, 1)
    assert recorded.wav.sample_width == 2
    assert recorded.wav.frames == 24000
    assert recorded.wav.duration == 1.5
    assert recorded.pcm == b"\x01\x00" * 24000
    upload = fake_provider.requests[-1].files["file"]
    assert (upload.filename, upload.content_type) == ("speech.wav", "audio/wav")
    assert upload.data == wav


async def test_transcription_text_format_and_default(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.default_transcript = "默认"

    text = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("a.wav", make_wav(), "audio/wav"),
        response_format="text",
    )

    assert text == "默认"


async def test_streamed_transcription_events(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.add_transcript("你好世界")
    fake_provider.transcript_chunk = 2

    stream = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe",
        file=("a.wav", make_wav(channels=2), "audio/wav"),
        stream=True,
    )
    events = [event async for event in stream]

    deltas = [e.delta for e in events if isinstance(e, TranscriptionTextDeltaEvent)]
    assert deltas == ["你好", "世界"]
    done = events[-1]
    assert isinstance(done, TranscriptionTextDoneEvent)
    assert done.text == "你好世界"
    assert fake_provider.transcriptions[-1].stream
    assert fake_provider.transcriptions[-1].wav.channels == 2


@pytest.mark.parametrize(
    "data",
    [
        b"OggS" + b"\x00" * 60,
        b"RIFF\x24\x00\x00\x00WAVEjunk",
        make_wav()[:-100],
    ],
    ids=["not-riff", "no-fmt", "truncated"],
)
async def test_transcription_rejects_non_wav(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI, data: bytes
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", data, "audio/wav")
        )

    assert err.value.param == "file"
    assert fake_provider.transcriptions == []


async def test_transcription_unsupported_format(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        await client.audio.transcriptions.create(
            model="whisper-1",
            file=("a.wav", make_wav(), "audio/wav"),
            response_format="srt",
        )
    assert err.value.param == "response_format"


def raw_multipart(*dispositions: str) -> tuple[bytes, dict[str, str]]:
    """Return a hand-made multipart body with one text part per disposition."""
    boundary = "fakeboundary"
    parts = [
        f"--{boundary}\r\nContent-Disposition: {d}\r\n\r\nvalue\r\n"
        for d in dispositions
    ]
    body = "".join(parts) + f"--{boundary}--\r\n"
    headers = {
        "Authorization": "Bearer sk-test",
        "Content-Type": f"multipart/form-data; boundary={boundary}",
    }
    return body.encode(), headers


@pytest.mark.parametrize(
    ("body", "headers", "message"),
    [
        (*raw_multipart('form-data; name="model"'), "'file' and 'model' are required"),
        (*raw_multipart("form-data"), "Invalid multipart body"),
        (b'{"model": "whisper-1"}', {"Authorization": "Bearer sk-test"}, "multipart"),
    ],
    ids=["missing-file", "unnamed-part", "not-multipart"],
)
async def test_transcription_malformed_form_is_400(
    fake_provider: FakeProvider, body: bytes, headers: dict[str, str], message: str
) -> None:
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake_provider.base_url + "/audio/transcriptions", data=body, headers=headers
        ) as response,
    ):
        payload = await response.json()

    assert response.status == 400
    assert message in payload["error"]["message"]
    assert fake_provider.transcriptions == []


async def test_transcription_failure_injection(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.fail_next(TRANSCRIPTIONS_PATH, 503, "try later")

    with pytest.raises(openai.InternalServerError):
        await client.audio.transcriptions.create(
            model="whisper-1", file=("a.wav", make_wav(), "audio/wav")
        )


# -- speech --------------------------------------------------------------------


async def read_speech(
    client: openai.AsyncOpenAI, **kwargs: Any
) -> tuple[bytes, httpx2.Headers]:
    options: dict[str, Any] = {"model": "gpt-4o-mini-tts", "voice": "alloy"}
    async with client.audio.speech.with_streaming_response.create(
        **(options | kwargs)
    ) as response:
        body = b"".join([part async for part in response.iter_bytes()])
        return body, response.headers


async def test_speech_pcm_is_a_real_tone_of_text_length(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.speech.chunk_size = 1000
    text = "今天天气很好。"

    pcm, headers = await read_speech(
        client, input=text, response_format="pcm", instructions="Cheerful", speed=1.0
    )

    expected = fake_provider.speech.pcm_bytes(text)
    assert expected == round(len(text) * 0.1 * SPEECH_SAMPLE_RATE) * 2
    assert len(pcm) == expected
    assert headers["content-type"] == "audio/pcm"
    assert headers["transfer-encoding"] == "chunked"
    samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
    assert max(samples) > 9000
    assert min(samples) < -9000
    assert fake_provider.streams[-1].events_sent == math.ceil(expected / 1000)
    recorded = fake_provider.speech_requests[-1]
    assert (recorded.model, recorded.voice, recorded.input) == (
        "gpt-4o-mini-tts",
        "alloy",
        text,
    )
    assert (recorded.speed, recorded.instructions) == (1.0, "Cheerful")


async def test_speech_length_grows_with_text_and_shrinks_with_speed(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    short, _ = await read_speech(client, input="hi", response_format="pcm")
    long, _ = await read_speech(client, input="hello " * 10, response_format="pcm")
    fast, _ = await read_speech(
        client, input="hello " * 10, response_format="pcm", speed=2.0
    )

    assert len(short) == round(0.2 * SPEECH_SAMPLE_RATE) * 2  # min_seconds
    assert len(long) == 6 * SPEECH_SAMPLE_RATE * 2
    assert len(fast) == len(long) // 2


async def test_speech_wav_has_streaming_header(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    body, headers = await read_speech(
        client, input="你好", response_format="wav", voice={"id": "voice_1"}
    )

    assert headers["content-type"] == "audio/wav"
    riff, riff_size, wave_id = struct.unpack("<4sI4s", body[:12])
    assert (riff, riff_size, wave_id) == (b"RIFF", STREAMING_WAV_SIZE, b"WAVE")
    fmt = struct.unpack("<4sIHHIIHH", body[12:36])
    assert fmt == (b"fmt ", 16, 1, 1, 24000, 48000, 2, 16)
    assert struct.unpack("<4sI", body[36:44]) == (b"data", STREAMING_WAV_SIZE)
    assert len(body) - 44 == fake_provider.speech.pcm_bytes("你好")
    assert fake_provider.speech_requests[-1].voice == {"id": "voice_1"}


async def test_speech_is_streamed_in_chunks_before_the_end(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.speech.chunk_size = 960
    fake_provider.speech.hold_after_chunks = 1
    fake_provider.speech.bytes_per_second = 10_000_000
    received = 0

    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="一二三四五", response_format="pcm"
    ) as response:
        parts = response.iter_bytes()
        while received < 960:
            received += len(await anext(parts))
        held = await fake_provider.wait_held()
        assert received == 960
        assert not held.completed
        fake_provider.release()
        received += sum([len(part) async for part in parts])

    assert received == fake_provider.speech.pcm_bytes("一二三四五")
    assert held.completed


async def test_closing_speech_stream_is_detected(
    fake_provider: FakeProvider, client: openai.AsyncOpenAI
) -> None:
    fake_provider.speech.hold_after_chunks = 1

    async with client.audio.speech.with_streaming_response.create(
        model="tts-1", voice="alloy", input="很长的一句话" * 5, response_format="pcm"
    ) as response:
        await anext(response.iter_bytes())
        await fake_provider.wait_held()

    closed = await fake_provider.wait_stream_closed()
    assert closed.path == SPEECH_PATH
    assert closed.client_closed
    assert closed.events_sent == 1


@pytest.mark.parametrize(
    ("overrides", "param"),
    [
        ({"response_format": "mp3"}, "response_format"),
        ({"response_format": "opus"}, "response_format"),
        ({"speed": 5.0}, "speed"),
        ({"input": ""}, "input"),
        ({"voice": ""}, "voice"),
        ({"stream_format": "sse"}, "stream_format"),
    ],
)
async def test_speech_invalid_requests_are_400(
    fake_provider: FakeProvider,
    client: openai.AsyncOpenAI,
    overrides: dict[str, Any],
    param: str,
) -> None:
    request = {"input": "hi", "response_format": "pcm"} | overrides

    with pytest.raises(openai.BadRequestError) as err:
        await read_speech(client, **request)

    assert err.value.param == param
    assert fake_provider.speech_requests == []


async def test_speech_without_model_or_json_is_400(
    fake_provider: FakeProvider,
) -> None:
    headers = {"Authorization": "Bearer sk-test"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake_provider.base_url + "/audio/speech",
            json={"input": "hi", "voice": "alloy"},
            headers=headers,
        ) as no_model,
        session.post(
            fake_provider.base_url + "/audio/speech", data=b"nope", headers=headers
        ) as not_json,
    ):
        assert no_model.status == 400
        assert (await no_model.json())["error"]["param"] == "model"
        assert not_json.status == 400


# -- pure helpers ------------------------------------------------------------


def test_split_text_rejects_empty_chunk() -> None:
    assert split_text("abcde", 2) == ["ab", "cd", "e"]
    with pytest.raises(ValueError, match="chunk"):
        split_text("abc", 0)


@pytest.mark.parametrize(
    ("path", "expected"),
    [
        ("/chat/completions", "/v1/chat/completions"),
        ("chat/completions", "/v1/chat/completions"),
        ("/v1/audio/speech", "/v1/audio/speech"),
    ],
)
def test_full_path(path: str, expected: str) -> None:
    assert full_path(path) == expected


def test_parse_wav_reports_format() -> None:
    info, frames = read_complete_wav(make_wav(seconds=0.25, rate=8000))

    assert (info.sample_rate, info.frames, info.duration) == (8000, 2000, 0.25)
    assert len(frames) == 4000
    with pytest.raises(InvalidWavError):
        read_complete_wav(b"")
