"""Tests of the demo provider (driven by the real openai SDK) and the demo's HA setup."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
import io
import json
import math
from pathlib import Path
import shutil
import struct
import subprocess
import sys
from typing import Any
import wave

import aiohttp
import openai
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
import pytest

from custom_components.xiaozhi.protocol import codec
from fake_provider.audio import (
    SAMPLE_RATE,
    EspeakSynthesizer,
    MelodySynthesizer,
    SynthesisError,
    Synthesizer,
    default_synthesizer,
    encode_with_ffmpeg,
    melody_pcm,
    to_mono,
    wav_to_mono,
)
from fake_provider.chat import ToolCallDelta
from fake_provider.demo import (
    CHAT_MODEL,
    DEMO_LIGHT,
    DEMO_NOTICE,
    JOKES,
    MODELS,
    DemoMode,
    HomeEntity,
    Reply,
    Timing,
    ToolCallPlan,
    Topic,
    chat_reply,
    choose_target,
    classify,
    exposed_entities,
    find_tool,
    parse_tool_result,
    plan_reply,
)
from fake_provider.server import FakeProvider
from fake_provider.text import tokenize
from simulator import audio as simulator_audio

ROOT = Path(__file__).parents[2]
SYSTEM_PROMPT = (
    "You are a voice assistant.\nStatic Context: An overview of the areas and the "
    "devices in this smart home:\n- names: Demo light, Lamp\n  domain: light\n"
    "  areas: Living Room\n- names: Kitchen fan\n  domain: fan\n"
)
TOOLS: list[ChatCompletionToolParam] = [
    {
        "type": "function",
        "function": {"name": f"intent__{name}", "parameters": {"type": "object"}},
    }
    for name in ("HassTurnOn", "HassTurnOff", "GetLiveContext")
]
NOW = datetime(2026, 5, 4, 9, 7).astimezone()


class RecordingSynthesizer:
    """Speaks a fixed tone, recording what it was asked (a stand-in for espeak)."""

    label = "recording"

    def __init__(self) -> None:
        self.calls: list[tuple[str, str, float]] = []

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        self.calls.append((text, voice, speed))
        return struct.pack("<4h", 1000, -1000, 1000, -1000) * 6000  # 1 s


def demo_provider(timing: Timing, synthesizer: Synthesizer) -> FakeProvider:
    """Return a stopped demo-mode provider that keeps what it was sent."""
    demo = DemoMode(timing=timing, synthesizer=synthesizer)
    return FakeProvider.for_demo(demo, history=True)


@pytest.fixture
async def demo(socket_enabled: None) -> AsyncIterator[tuple[FakeProvider, str]]:
    """Serve a demo provider without delays on a free port."""
    provider = demo_provider(Timing.instant(), RecordingSynthesizer())
    async with provider:
        yield provider, provider.base_url


@pytest.fixture
async def client(
    demo: tuple[FakeProvider, str],
) -> AsyncIterator[openai.AsyncOpenAI]:
    async with openai.AsyncOpenAI(
        base_url=demo[1], api_key="anything", max_retries=0
    ) as sdk:
        yield sdk


def make_wav(seconds: float = 0.2, rate: int = 16000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as writer:
        writer.setnchannels(1)
        writer.setsampwidth(2)
        writer.setframerate(rate)
        writer.writeframes(b"\x10\x00" * round(rate * seconds))
    return buffer.getvalue()


async def stream_reply(
    client: openai.AsyncOpenAI, messages: list[ChatCompletionMessageParam], **kw: Any
) -> tuple[list[str], list[Any], str | None, Any]:
    """Return the content pieces, tool call deltas, finish reason and usage."""
    stream = await client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, stream=True, **kw
    )
    pieces: list[str] = []
    calls: list[Any] = []
    finish: str | None = None
    usage = None
    async for chunk in stream:
        usage = chunk.usage or usage
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        if choice.delta.content:
            pieces.append(choice.delta.content)
        calls += choice.delta.tool_calls or []
        finish = choice.finish_reason or finish
    return pieces, calls, finish, usage


# -- chat through the SDK ----------------------------------------------------


async def test_streams_a_labelled_greeting_token_by_token(
    client: openai.AsyncOpenAI,
) -> None:
    pieces, calls, finish, usage = await stream_reply(
        client,
        [{"role": "user", "content": "Hello there"}],
        stream_options={"include_usage": True},
    )
    text = "".join(pieces)
    assert text.startswith(DEMO_NOTICE["en"])
    assert "demo light" in text
    assert len(pieces) == len(tokenize(text)) > 10
    assert calls == []
    assert finish == "stop"
    assert usage is not None
    assert usage.completion_tokens == len(pieces)


async def test_turn_on_calls_the_assist_tool_then_confirms(
    client: openai.AsyncOpenAI,
) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "Please turn on the light"},
    ]
    pieces, calls, finish, _ = await stream_reply(client, messages, tools=TOOLS)
    assert pieces == []
    assert finish == "tool_calls"
    head = calls[0]
    assert head.function.name == "intent__HassTurnOn"
    arguments = json.loads("".join(c.function.arguments or "" for c in calls))
    assert arguments == {"name": "Demo light", "domain": ["light"]}
    assert len(calls) > 2  # the arguments are streamed in fragments

    result = {
        "data": {
            "speech": {},
            "response_type": "action_done",
            "data": {
                "success": [
                    {"name": "Demo light", "type": "entity", "id": "light.demo"}
                ],
                "failed": [],
            },
        },
        "error": False,
    }
    messages += [
        {
            "role": "assistant",
            "tool_calls": [
                {
                    "id": head.id,
                    "type": "function",
                    "function": {
                        "name": head.function.name,
                        "arguments": json.dumps(arguments),
                    },
                }
            ],
        },
        {"role": "tool", "tool_call_id": head.id, "content": json.dumps(result)},
    ]
    pieces, calls, finish, _ = await stream_reply(client, messages, tools=TOOLS)
    assert "".join(pieces) == DEMO_NOTICE["en"] + "OK, the Demo light is on."
    assert calls == []
    assert finish == "stop"


async def test_chinese_turn_off_and_a_failed_tool(client: openai.AsyncOpenAI) -> None:
    messages: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": SYSTEM_PROMPT},
        {"role": "user", "content": "把灯关了"},
    ]
    response = await client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=TOOLS
    )
    call = response.choices[0].message.tool_calls
    assert call is not None
    assert isinstance(call[0], ChatCompletionMessageFunctionToolCall)
    assert call[0].function.name == "intent__HassTurnOff"
    assert response.choices[0].finish_reason == "tool_calls"
    failure = {"data": {"error": "HomeAssistantError", "error_text": "no light"}}
    messages += [
        response.choices[0].message.model_dump(exclude_none=True),  # type: ignore[list-item]
        {
            "role": "tool",
            "tool_call_id": call[0].id,
            "content": json.dumps(failure | {"error": True}),
        },
    ]
    response = await client.chat.completions.create(
        model=CHAT_MODEL, messages=messages, tools=TOOLS
    )
    assert response.choices[0].message.content == (
        DEMO_NOTICE["zh"] + "Home Assistant 没能做到：no light"
    )


async def test_without_tools_it_says_it_cannot_reach_the_home(
    client: openai.AsyncOpenAI,
) -> None:
    pieces, calls, _, _ = await stream_reply(
        client, [{"role": "user", "content": "turn the kitchen light off"}]
    )
    assert calls == []
    assert "no access to your home" in "".join(pieces)


async def test_jokes_vary_and_the_notice_comes_once(
    client: openai.AsyncOpenAI,
) -> None:
    history: list[ChatCompletionMessageParam] = [
        {"role": "user", "content": "hi"},
        {"role": "assistant", "content": "Hello!"},
        {"role": "user", "content": "tell me a joke"},
    ]
    replies = set()
    for _ in JOKES["en"]:
        response = await client.chat.completions.create(
            model=CHAT_MODEL, messages=history
        )
        replies.add(response.choices[0].message.content)
    assert replies == set(JOKES["en"])


async def test_models_and_bad_requests(
    client: openai.AsyncOpenAI, demo: tuple[FakeProvider, str]
) -> None:
    assert [model.id async for model in client.models.list()] == list(MODELS)
    assert (await client.models.retrieve("any-model")).id == "any-model"
    with pytest.raises(openai.BadRequestError):
        await client.chat.completions.create(model=CHAT_MODEL, messages=[])
    async with aiohttp.ClientSession() as session:
        root = demo[1].removesuffix("/v1")
        async with session.get(root + "/") as response:
            assert "DEMO" in await response.text()
        async with session.post(demo[1] + "/chat/completions", data=b"{") as bad:
            assert bad.status == 400
        async with session.post(demo[1] + "/chat/completions", json=[1]) as bad:
            assert bad.status == 400
        for path, body in (
            ("/audio/speech", b"{"),
            ("/audio/transcriptions", b"{}"),
        ):
            async with session.post(demo[1] + path, data=body) as bad:
                assert bad.status == 400
        form = aiohttp.FormData({"model": "whisper-1"}, default_to_multipart=True)
        async with session.post(demo[1] + "/audio/transcriptions", data=form) as bad:
            assert "'file' is required" in await bad.text()


# -- speech and transcripts through the SDK ------------------------------------


async def test_speech_streams_pcm_and_wav(
    client: openai.AsyncOpenAI, demo: tuple[FakeProvider, str]
) -> None:
    speech = client.audio.speech.with_streaming_response
    async with speech.create(
        model="tts-1", voice="nova", input="Hello!", response_format="pcm", speed=1.5
    ) as response:
        assert response.headers["content-type"] == "audio/pcm"
        chunks = [chunk async for chunk in response.iter_bytes(4800)]
    assert len(chunks) == 10  # 1 s of 24 kHz audio, streamed in 0.1 s pieces
    assert b"".join(chunks) == struct.pack("<4h", 1000, -1000, 1000, -1000) * 6000
    synthesizer = demo[0].synthesizer
    assert isinstance(synthesizer, RecordingSynthesizer)
    assert synthesizer.calls == [("Hello!", "nova", 1.5)]

    async with speech.create(
        model="tts-1", voice="alloy", input="Hi", response_format="wav"
    ) as response:
        wav = await response.read()
    rate, channels, _, pcm = codec.parse_wav(wav)
    assert (rate, channels, len(pcm)) == (SAMPLE_RATE, 1, 48000)


async def test_a_client_may_stop_listening(socket_enabled: None) -> None:
    provider = demo_provider(
        Timing(0, math.inf, 0, speech_speedup=1), RecordingSynthesizer()
    )
    async with provider, provider.client() as client:
        async with client.audio.speech.with_streaming_response.create(
            model="tts-1", voice="alloy", input="Hi", response_format="pcm"
        ) as response:
            async for _ in response.iter_bytes():
                break  # barge-in: the device stops the reply
        closed = await provider.wait_stream_closed()
        assert closed.client_closed
        models = await client.models.list()
        assert models.data


async def test_speech_rejects_what_openai_rejects(client: openai.AsyncOpenAI) -> None:
    cases: list[dict[str, Any]] = [
        {"input": "", "voice": "alloy"},
        {"input": "hi", "voice": ""},
        {"input": "hi", "voice": "alloy", "speed": 9},
        {"input": "hi", "voice": "alloy", "response_format": "ulaw"},
    ]
    for case in cases:
        with pytest.raises(openai.BadRequestError):
            await client.audio.speech.create(
                model="tts-1", **{"response_format": "pcm"} | case
            )


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs ffmpeg")
async def test_speech_as_mp3_through_ffmpeg(socket_enabled: None) -> None:
    provider = demo_provider(Timing.instant(), MelodySynthesizer())
    async with provider, provider.client() as client:
        audio = await client.audio.speech.create(
            model="tts-1",
            voice={"id": "custom"},
            input="Hi there.",
            response_format="mp3",
        )
    data = audio.content
    assert data[:3] == b"ID3" or data[0] == 0xFF


NEEDS_ESPEAK = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="needs espeak-ng"
)


async def spoken_wav(text: str, language: str) -> tuple[str, bytes, str]:
    """Return ``text`` as the simulator says it, as an upload."""
    pcm = await simulator_audio.say(text, language)
    return ("speech.wav", codec.pcm_to_wav(pcm, 16000), "audio/wav")


@NEEDS_ESPEAK
async def test_transcripts_are_what_was_said(client: openai.AsyncOpenAI) -> None:
    transcribe = client.audio.transcriptions.create
    silent = ("speech.wav", make_wav(), "audio/wav")
    turn_on = await spoken_wav("打开灯", "zh-CN")
    weather = await spoken_wav("What's the weather like today?", "en")

    assert (await transcribe(model="whisper-1", file=turn_on)).text == "打开灯"
    text = await transcribe(
        model="whisper-1", file=weather, language="en", response_format="text"
    )
    assert text == "What's the weather like today?"
    unheard = await transcribe(model="whisper-1", file=silent, language="zh")
    assert unheard.text == ""
    with pytest.raises(openai.BadRequestError):
        await transcribe(model="whisper-1", file=("a.mp3", b"ID3....", "audio/mpeg"))
    with pytest.raises(openai.BadRequestError):
        await transcribe(model="whisper-1", file=silent, response_format="srt")


@NEEDS_ESPEAK
async def test_streamed_transcript(client: openai.AsyncOpenAI) -> None:
    events = await client.audio.transcriptions.create(
        model="gpt-4o-mini-transcribe",
        file=await spoken_wav("Turn on the demo light", "en"),
        stream=True,
    )
    seen = [event async for event in events]
    assert seen[-1].type == "transcript.text.done"
    assert seen[-1].text == "Turn on the demo light"
    assert "".join(e.delta for e in seen[:-1] if e.type == "transcript.text.delta") == (
        seen[-1].text
    )


# -- the rules, without HTTP ----------------------------------------------------


@pytest.mark.parametrize(
    ("text", "topic"),
    [
        ("Turn on the light", Topic.TURN_ON),
        ("switch the lamp on please", Topic.TURN_ON),
        ("lights on", Topic.TURN_ON),
        ("打开灯", Topic.TURN_ON),
        ("把客厅的灯开一下", Topic.TURN_ON),
        ("turn the light off", Topic.TURN_OFF),
        ("关灯", Topic.TURN_OFF),
        ("what's the weather?", Topic.WEATHER),
        ("今天天气怎么样", Topic.WEATHER),
        ("what time is it", Topic.TIME),
        ("现在几点", Topic.TIME),
        ("tell me a joke", Topic.JOKE),
        ("讲个笑话", Topic.JOKE),
        ("thanks!", Topic.THANKS),
        ("谢谢", Topic.THANKS),
        ("Hello", Topic.GREETING),
        ("你好", Topic.GREETING),
        ("Who wrote Hamlet?", Topic.OTHER),
    ],
)
def test_classify(text: str, topic: Topic) -> None:
    assert classify(text) is topic


def test_canned_answers_in_both_languages() -> None:
    def reply(text: str, **kw: Any) -> str:
        return plan_reply([{"role": "user", "content": text}], [], now=NOW, **kw).text

    assert reply("what time is it").endswith("It's 09:07.")
    assert reply("现在几点").endswith("现在是09:07。")
    assert reply("讲个笑话", variant=1).endswith(JOKES["zh"][1])
    assert "made that up" in reply("weather")
    assert reply("What is love?").startswith(DEMO_NOTICE["en"] + "I'm only a demo")
    parts = [{"type": "text", "text": "谢谢"}, {"type": "image_url"}]
    assert plan_reply([{"role": "user", "content": parts}], [], now=NOW).text == (
        DEMO_NOTICE["zh"] + "不客气！"
    )


async def test_fallbacks() -> None:
    system_only = [{"role": "system", "content": "x"}]
    assert "only a demo" in plan_reply(system_only, [], now=NOW).text
    espeak = shutil.which("espeak-ng")
    expected = EspeakSynthesizer if espeak else MelodySynthesizer
    assert isinstance(default_synthesizer(), expected)
    with pytest.raises(SynthesisError):
        await encode_with_ffmpeg(b"", "mp3", "/bin/false")


def test_tool_results_that_say_little() -> None:
    call = {
        "id": "c1",
        "type": "function",
        "function": {"name": "HassTurnOff", "arguments": "not json"},
    }
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "lights off"},
        {"role": "assistant", "content": "Sure.", "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "{}"},
    ]
    assert plan_reply(messages, [], now=NOW).text == "OK, the Demo light is off."
    messages[-1]["tool_call_id"] = "unknown"
    assert plan_reply(messages, [], now=NOW).text == "Done."
    call["function"] = {"name": "intent__HassCancelAllTimers", "arguments": "[]"}
    messages[-1]["tool_call_id"] = "c1"
    assert plan_reply(messages, [], now=NOW).text == "Done."


@pytest.mark.parametrize(
    ("content", "names", "failure"),
    [
        ("not json", (), None),
        ("[1]", (), None),
        ('{"data": 3}', (), None),
        ('{"data": {"data": {"success": [{"name": "A"}, {}]}}}', ("A",), None),
        (
            '{"data": {"response_type": "error", "data": {"code": "no_match"}}}',
            (),
            "no_match",
        ),
        (
            '{"data": {"response_type": "error", "speech": {"plain": {"speech": "No."}}}}',
            (),
            "No.",
        ),
        ('{"data": {}, "error": true}', (), "unknown error"),
    ],
)
def test_parse_tool_result(
    content: str, names: tuple[str, ...], failure: str | None
) -> None:
    outcome = parse_tool_result(content)
    assert (outcome.names, outcome.failure) == (names, failure)


def test_targets_come_from_the_system_prompt() -> None:
    entities = exposed_entities(SYSTEM_PROMPT)
    assert entities == [
        HomeEntity(("Demo light", "Lamp"), "light"),
        HomeEntity(("Kitchen fan",), "fan"),
    ]
    assert choose_target(entities, "turn on the kitchen fan").name == "Kitchen fan"
    assert choose_target(entities, "turn on the lamp").name == "Demo light"
    assert choose_target(entities[1:], "打开灯") is DEMO_LIGHT
    assert find_tool([{"function": {"name": "HassTurnOn"}}], "HassTurnOn") == (
        "HassTurnOn"
    )
    assert find_tool([{"type": "web_search"}], "HassTurnOn") is None


def test_tokens_rebuild_the_text() -> None:
    for text in ("Hello, it's 9 o'clock!", "好的，Demo light已经打开了。"):
        assert "".join(tokenize(text)) == text
    assert tokenize("打开 the light") == ["打", "开", " the", " light"]


def test_tool_call_deltas() -> None:
    reply = Reply(tool_call=ToolCallPlan("t", {"name": "演示灯"}))
    events = chat_reply(reply, "call-1", Timing.instant()).events
    assert isinstance(events[0], ToolCallDelta)
    assert events[0].call_id == "call-1"
    pieces = [e.arguments for e in events[1:] if isinstance(e, ToolCallDelta)]
    assert json.loads("".join(pieces)) == {"name": "演示灯"}


# -- audio helpers ---------------------------------------------------------------


def test_speech_pcm_reads_piped_wavs_and_rejects_others() -> None:
    # At 24 kHz mono the samples pass through unchanged; a trailing odd byte
    # (half a sample, as a pipe may end) is dropped.
    header = make_wav(0.01, SAMPLE_RATE)
    piped = header[:4] + b"\xff\xff\xff\x7f" + header[8:40] + b"\xff\xff\xff\x7f"
    assert wav_to_mono(piped + header[44:] + b"\x01") == header[44:]
    with_list = header[:12] + b"LIST\x03\x00\x00\x00abc\x00" + header[12:]
    assert wav_to_mono(with_list) == header[44:]
    for bad in (b"", b"RIFF\0\0\0\0WAVEdata\0\0\0\0", header[:36]):
        with pytest.raises(ValueError, match=r"WAV"):
            wav_to_mono(bad)
    float_wav = header[:20] + b"\x03\x00" + header[22:]
    with pytest.raises(ValueError, match="not PCM"):
        wav_to_mono(float_wav)


def test_to_mono() -> None:
    stereo = struct.pack("<4h", 100, 300, 100, 300) * 100 + b"\x00"
    mono = to_mono(stereo, SAMPLE_RATE, 2)
    assert struct.unpack("<2h", mono[:4]) == (200, 200)
    resampled = to_mono(bytes(2 * 16000), 16000, 1)
    assert abs(len(resampled) - 2 * SAMPLE_RATE) <= 4


def test_melody_follows_the_text() -> None:
    short, long = melody_pcm("Hi."), melody_pcm("Hello there, how are you today?")
    assert 0 < len(short) < len(long)
    assert max(struct.unpack(f"<{len(short) // 2}h", short)) > 1000
    assert len(melody_pcm("Hi there", speed=2.0)) < len(melody_pcm("Hi there"))
    assert len(melody_pcm("")) == 2 * round(0.2 * SAMPLE_RATE)


@pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")
async def test_espeak_speaks_english_and_chinese() -> None:
    espeak = EspeakSynthesizer(shutil.which("espeak-ng") or "")
    english = await espeak.synthesize("Hello there.", "nova", 1.0)
    chinese = await espeak.synthesize("你好", "alloy", 2.0)
    for pcm in (english, chinese):
        samples = struct.unpack(f"<{len(pcm) // 2}h", pcm)
        assert len(samples) > SAMPLE_RATE // 4
        assert max(samples) > 1000
    assert EspeakSynthesizer.voice_for("你好", "nova") == "cmn+f3"
    assert EspeakSynthesizer.voice_for("hi", "onyx") == "en-us"


async def test_a_failing_synthesizer_is_a_server_error(socket_enabled: None) -> None:
    provider = demo_provider(Timing.instant(), EspeakSynthesizer("/bin/false"))
    async with provider, provider.client() as client:
        with pytest.raises(openai.InternalServerError, match="synthesis failed"):
            await client.audio.speech.create(
                model="tts-1", voice="alloy", input="hi", response_format="pcm"
            )
    with pytest.raises(SynthesisError, match="no usable WAV"):
        await EspeakSynthesizer("/bin/true").synthesize("hi", "alloy", 1.0)


# -- the command line ------------------------------------------------------------


def test_provider_exits_with_its_parent() -> None:
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    provider = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "fake_provider",
            "--demo",
            "--port=0",
            f"--parent-pid={parent.pid}",
        ],
        cwd=ROOT,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert provider.stderr is not None
        line = provider.stderr.readline()
        assert "DEMO provider on http://127.0.0.1:" in line
        parent.kill()
        parent.wait()
        assert provider.wait(timeout=10) == 0
    finally:
        parent.kill()
        provider.kill()
        parent.wait()
        provider.wait()
