"""Tests of what the merged fake shares between its scripted and demo modes."""

from __future__ import annotations

from collections.abc import AsyncIterator
import io
import math
from pathlib import Path
import struct
import subprocess
import sys
import wave

import aiohttp
import openai
import pytest

from fake_provider.audio import (
    SAMPLE_RATE,
    InvalidWavError,
    MelodySynthesizer,
    read_complete_wav,
    streaming_wav_header,
)
from fake_provider.chat import ChatReply
from fake_provider.demo import CHAT_MODEL, DEMO_NOTICE, DemoMode, Timing
from fake_provider.server import FakeProvider

ROOT = Path(__file__).parents[2]


def make_wav(seconds: float = 0.2, rate: int = 16000, channels: int = 1) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(channels)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x10\x00" * channels * round(rate * seconds))
    return buffer.getvalue()


@pytest.fixture
async def demo(socket_enabled: None) -> AsyncIterator[FakeProvider]:
    demo_mode = DemoMode(timing=Timing.instant(), synthesizer=MelodySynthesizer())
    async with FakeProvider.for_demo(demo_mode) as provider:
        yield provider


async def test_scripted_answers_come_before_the_demo(demo: FakeProvider) -> None:
    demo.add_reply(ChatReply.text("scripted"))
    demo.add_transcript("queued")
    wav = ("a.wav", make_wav(), "audio/wav")
    messages: list[openai.types.chat.ChatCompletionMessageParam] = [
        {"role": "user", "content": "hello"}
    ]

    async with demo.client() as client:
        first = await client.chat.completions.create(model="m", messages=messages)
        second = await client.chat.completions.create(model="m", messages=messages)
        heard = await client.audio.transcriptions.create(model="whisper-1", file=wav)
        unqueued = await client.audio.transcriptions.create(model="whisper-1", file=wav)

    assert first.choices[0].message.content == "scripted"
    assert (second.choices[0].message.content or "").startswith(DEMO_NOTICE["en"])
    assert heard.text == "queued"
    assert unqueued.text == ""  # a silent upload: nothing the demo knows was said


async def test_demo_keeps_no_history_and_takes_any_key(demo: FakeProvider) -> None:
    async with demo.client(api_key="whatever") as client:
        assert (await client.models.retrieve("gpt-x")).id == "gpt-x"
        await client.chat.completions.create(
            model=CHAT_MODEL, messages=[{"role": "user", "content": "hi"}]
        )
        await client.audio.speech.create(
            model="tts-1", voice="alloy", input="Hi.", response_format="wav"
        )

    assert (demo.requests, demo.streams, demo.speech_requests) == ([], [], [])


def test_demo_speech_is_paced_by_its_timing() -> None:
    settings = DemoMode(timing=Timing(speech_first_byte=0.5, speech_speedup=2.0))
    paced = settings.speech_settings()
    instant = DemoMode(timing=Timing.instant()).speech_settings()

    assert (paced.first_byte_delay, paced.chunk_size) == (0.5, 4800)
    assert paced.bytes_per_second == 2 * SAMPLE_RATE * 2
    assert instant.bytes_per_second is None


async def test_scripted_index_needs_the_key(fake_provider: FakeProvider) -> None:
    root = fake_provider.base_url.removesuffix("/v1")
    key = {"Authorization": f"Bearer {fake_provider.api_key}"}
    async with aiohttp.ClientSession() as session:
        async with session.get(root + "/") as anonymous:
            assert anonymous.status == 401
        async with session.get(root + "/", headers=key) as index:
            assert "scripted mode" in await index.text()


async def test_transcription_needs_a_model(fake_provider: FakeProvider) -> None:
    form = aiohttp.FormData()
    form.add_field("file", make_wav(), filename="a.wav", content_type="audio/wav")
    headers = {"Authorization": f"Bearer {fake_provider.api_key}"}
    async with (
        aiohttp.ClientSession() as session,
        session.post(
            fake_provider.base_url + "/audio/transcriptions", data=form, headers=headers
        ) as response,
    ):
        payload = await response.json()

    assert response.status == 400
    assert payload["error"]["param"] == "model"


def test_complete_wav_wants_known_sizes_and_whole_frames() -> None:
    stereo = make_wav(0.1, 8000, channels=2)
    info, pcm = read_complete_wav(stereo)
    assert (info.channels, info.frames, len(pcm)) == (2, 800, 3200)

    streamed = streaming_wav_header(16000) + bytes(320)
    with pytest.raises(InvalidWavError, match="unknown"):
        read_complete_wav(streamed)
    half_frame = bytearray(make_wav(0.1, 8000, channels=2)[:-1])
    struct.pack_into("<I", half_frame, 4, len(half_frame) - 8)
    struct.pack_into("<I", half_frame, 40, len(half_frame) - 44)
    with pytest.raises(InvalidWavError, match="truncated"):
        read_complete_wav(bytes(half_frame))


def test_scripted_mode_from_the_command_line() -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "fake_provider", "--port=0"],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stderr is not None
        line = process.stderr.readline()
        assert "(scripted mode) on http://127.0.0.1:" in line
        assert "API key sk-test" in line
        process.terminate()
        assert process.wait(timeout=10) == 0
    finally:
        process.kill()
        process.wait()


def test_timing_instant_has_no_delays() -> None:
    instant = Timing.instant()
    assert (instant.ttft, instant.token_interval) == (0.0, 0.0)
    assert math.isinf(instant.speech_speedup)
