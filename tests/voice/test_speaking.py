"""The speaking stage: reply text deltas -> splitter -> any HA TTS engine -> PCM sink.

The TTS engines are real HA TTS entities (set up through a mock integration's
config entry, as HA core's tts tests do) behind HA's real tts component, its
ResultStream, cache and ffmpeg conversion.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Iterable
from dataclasses import dataclass
import struct
from typing import Any
from unittest.mock import patch

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components import tts
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.device.messages import device_message
from custom_components.xiaozhi.protocol.codec import (
    CodecError,
    WavStreamDecoder,
    pcm_to_wav,
    wav_header,
)
from custom_components.xiaozhi.sentences.marks import attach_marks, marks_for
from custom_components.xiaozhi.sentences.splitter import Segment
from custom_components.xiaozhi.voice.speaking import (
    AUDIO_CHUNK_BYTES,
    BYTES_PER_SECOND,
    SentenceClock,
    SpeakResult,
    estimated_speech_seconds,
    speak_reply,
)
from custom_components.xiaozhi.voice.tts_audio import (
    TtsError,
    open_tts_stream,
    start_message,
    start_message_stream,
    wav_request_options,
)
from fake_provider import FakeProvider
from tests.helpers.tts_engines import (
    RATE,
    PlainTTS,
    StreamingTTS,
    setup_tts_entities,
    speech_pcm,
)

TIMEOUT = 20.0
PLAIN = "tts.plain"
STREAMING = "tts.streaming"
NARROW = "tts.narrow"
NARROW_STREAMING = "tts.narrow_streaming"
MP3 = "tts.mp3"
XIAOZHI_TTS = "tts.xiaozhi_tts"

REPLY = ["Hello there. How", " are you today? I am", " fine, thanks."]
SEGMENTS = ["Hello there.", "How are you today?", "I am fine, thanks."]


# --------------------------------------------------------------------------
# Test TTS engines
# --------------------------------------------------------------------------


@dataclass
class Engines:
    plain: PlainTTS
    streaming: StreamingTTS
    narrow: PlainTTS
    narrow_streaming: StreamingTTS
    mp3: PlainTTS
    entry: MockConfigEntry


@pytest.fixture(autouse=True)
def tts_cache_dir(tmp_path: Any) -> Iterable[None]:
    """Keep HA's TTS file cache in the test's temporary directory."""
    with patch("homeassistant.components.tts.DEFAULT_CACHE_DIR", str(tmp_path / "tts")):
        yield


@pytest.fixture
async def engines(hass: HomeAssistant) -> Engines:
    """HA's tts component with the test engines."""
    assert await async_setup_component(hass, "tts", {})
    plain = PlainTTS("Plain")
    streaming = StreamingTTS("Streaming")
    narrow = PlainTTS("Narrow", rate=16000)
    narrow_streaming = StreamingTTS("Narrow streaming", rate=16000)
    mp3 = PlainTTS("Mp3", extension="mp3")
    entry = await setup_tts_entities(
        hass, [plain, streaming, narrow, narrow_streaming, mp3]
    )
    return Engines(plain, streaming, narrow, narrow_streaming, mp3, entry)


# --------------------------------------------------------------------------
# Sink and text streams
# --------------------------------------------------------------------------


class RecordingSink:
    """Records every call; its audio can be held to freeze playback."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.pcm = bytearray()
        self.audio_received = asyncio.Event()
        self.hold_audio: asyncio.Event | None = None

    async def start_speaking(self) -> None:
        self.calls.append(("start", None))

    async def sentence_started(self, text: str) -> None:
        self.calls.append(("sentence", text))

    async def emotion(self, emotion: str, emoji: str) -> None:
        self.calls.append(("emotion", (emotion, emoji)))

    async def audio(self, pcm_24k_mono: bytes) -> None:
        self.calls.append(("audio", len(pcm_24k_mono)))
        self.pcm += pcm_24k_mono
        self.audio_received.set()
        if self.hold_audio is not None:
            await self.hold_audio.wait()

    async def stop_speaking(self) -> None:
        self.calls.append(("stop", None))

    async def alert(self, message: str) -> None:
        self.calls.append(("alert", message))

    def script(self) -> list[tuple[str, Any]]:
        """The calls with runs of audio merged into one ("audio", total bytes)."""
        merged: list[tuple[str, Any]] = []
        for kind, value in self.calls:
            if kind == "audio" and merged and merged[-1][0] == "audio":
                merged[-1] = ("audio", merged[-1][1] + value)
            else:
                merged.append((kind, value))
        return merged

    def sentences(self) -> list[str]:
        return [value for kind, value in self.calls if kind == "sentence"]

    def audio_before(self, sentence: str) -> int:
        """Bytes of audio handed over before ``sentence`` was announced."""
        total = 0
        for kind, value in self.calls:
            if kind == "sentence" and value == sentence:
                return total
            if kind == "audio":
                total += value
        raise AssertionError(f"{sentence!r} was never announced")


class Deltas:
    """A reply's text stream; parts after a gate wait for it, then continue."""

    def __init__(self, *items: str | asyncio.Event | Exception | None) -> None:
        self.items = items
        self.finished = False

    async def __aiter__(self) -> AsyncIterator[str | None]:
        for item in self.items:
            if isinstance(item, asyncio.Event):
                await item.wait()
            elif isinstance(item, Exception):
                raise item
            else:
                yield item
        self.finished = True


async def speak(
    hass: HomeAssistant,
    deltas: Deltas | Iterable[str | None],
    engine: str,
    sink: RecordingSink,
    **kwargs: Any,
) -> SpeakResult:
    if not isinstance(deltas, Deltas):
        deltas = Deltas(*deltas)
    kwargs.setdefault("language", "en")
    kwargs.setdefault("options", None)
    kwargs.setdefault("device_language", "en")
    async with asyncio.timeout(TIMEOUT):
        return await speak_reply(hass, deltas, engine=engine, sink=sink, **kwargs)


NEUTRAL_FACE = ("emotion", ("neutral", "😶"))


def expected_script(segments: list[str]) -> list[tuple[str, Any]]:
    """A reply without emojis: the neutral face comes with its first words."""
    script: list[tuple[str, Any]] = [("start", None), NEUTRAL_FACE]
    for text in segments:
        script += [("sentence", text), ("audio", len(speech_pcm(text)))]
    return [*script, ("stop", None)]


# --------------------------------------------------------------------------
# Speaking
# --------------------------------------------------------------------------


async def test_plain_engine_speaks_each_segment_in_order(
    hass: HomeAssistant, engines: Engines
) -> None:
    """One request per segment; sentence_start right before its audio; exact PCM."""
    sink = RecordingSink()

    result = await speak(hass, REPLY, PLAIN, sink, options={"voice": "x"})

    assert sink.script() == expected_script(SEGMENTS)
    assert bytes(sink.pcm) == b"".join(speech_pcm(text) for text in SEGMENTS)
    assert engines.plain.requests == SEGMENTS
    # Only WAV is asked for: a sample rate would make HA run ffmpeg every time.
    assert engines.plain.options == [{"voice": "x"}] * 3
    assert all(n <= AUDIO_CHUNK_BYTES for kind, n in sink.calls if kind == "audio")
    assert result.segments == result.spoken == SEGMENTS
    assert result.streaming_input is False
    assert result.error is None
    assert result.audio_bytes == len(sink.pcm)
    assert result.audio_seconds == len(sink.pcm) / BYTES_PER_SECOND
    assert result.first_segment_at is not None
    assert result.first_audio_at is not None
    assert result.started_at <= result.first_segment_at <= result.first_audio_at


async def test_streaming_engine_gets_one_stream_fed_segment_by_segment(
    hass: HomeAssistant, engines: Engines
) -> None:
    """One ResultStream; each segment is announced where its audio starts."""
    sink = RecordingSink()

    result = await speak(hass, REPLY, STREAMING, sink)

    assert engines.streaming.streams == 1
    assert engines.streaming.received == [s + "\n" for s in SEGMENTS]
    assert engines.streaming.requests == SEGMENTS
    assert bytes(sink.pcm) == b"".join(speech_pcm(text) for text in SEGMENTS)
    assert sink.calls[:3] == [
        ("start", None),
        NEUTRAL_FACE,
        ("sentence", SEGMENTS[0]),
    ]
    assert sink.calls[-1] == ("stop", None)
    assert sink.sentences() == SEGMENTS
    # The engine speaks exactly as fast as estimated here, so each sentence is
    # announced right before the 60 ms piece its audio starts in.
    start = 0
    for text in SEGMENTS:
        before = sink.audio_before(text)
        assert before <= start < before + AUDIO_CHUNK_BYTES
        start += len(speech_pcm(text))
    assert result.streaming_input is True
    assert result.spoken == SEGMENTS


async def test_sentences_the_engine_spoke_faster_are_announced_at_the_end(
    hass: HomeAssistant, engines: Engines
) -> None:
    """A fast voice ends before the estimated start of the last sentence."""
    engines.streaming.speed = 2.0
    sink = RecordingSink()

    await speak(hass, REPLY, STREAMING, sink)

    assert sink.sentences() == SEGMENTS
    assert sink.calls[-2:] == [("sentence", SEGMENTS[-1]), ("stop", None)]
    assert len(sink.pcm) == sum(len(speech_pcm(t, speed=2.0)) for t in SEGMENTS)


@pytest.mark.parametrize("engine", [PLAIN, STREAMING])
async def test_first_audio_goes_out_before_the_reply_is_written(
    hass: HomeAssistant, engines: Engines, engine: str
) -> None:
    """The rest of the text only comes once the sink received audio."""
    sink = RecordingSink()
    deltas = Deltas("Sure, I", " will do it.", sink.audio_received, " Done now.")

    result = await speak(hass, deltas, engine, sink)

    assert sink.sentences() == ["Sure,", "I will do it.", "Done now."]
    assert deltas.finished
    assert result.first_audio_at is not None


async def test_a_pause_for_a_tool_call_speaks_the_text_so_far(
    hass: HomeAssistant, engines: Engines
) -> None:
    """``None`` (the agent calls a tool) flushes a sentence without its end."""
    sink = RecordingSink()
    deltas = Deltas(
        "Let me check the weather", None, sink.audio_received, "It is sunny."
    )

    await speak(hass, deltas, PLAIN, sink)

    assert sink.script() == expected_script(
        ["Let me check the weather", "It is sunny."]
    )


async def test_next_segment_is_synthesized_while_the_current_one_plays(
    hass: HomeAssistant, engines: Engines
) -> None:
    """Look-ahead 1: segment 2 is requested during segment 1, segment 3 is not."""
    plain = engines.plain
    first_gate = plain.gate(SEGMENTS[0])
    sink = RecordingSink()
    task = asyncio.create_task(speak(hass, REPLY, PLAIN, sink))

    async with asyncio.timeout(TIMEOUT):
        await plain.requested(SEGMENTS[1]).wait()
    for _ in range(50):
        await asyncio.sleep(0)
    assert plain.requests == SEGMENTS[:2]
    assert sink.calls == [("start", None)]

    first_gate.set()
    await task
    assert sink.script() == expected_script(SEGMENTS)


async def test_audio_keeps_segment_order_when_a_later_one_is_ready_first(
    hass: HomeAssistant, engines: Engines
) -> None:
    """With look-ahead 2, segments 2 and 3 finish first and still play after 1."""
    plain = engines.plain
    first_gate = plain.gate(SEGMENTS[0])
    sink = RecordingSink()
    task = asyncio.create_task(speak(hass, REPLY, PLAIN, sink, lookahead=2))

    async with asyncio.timeout(TIMEOUT):
        await plain.requested(SEGMENTS[2]).wait()
    first_gate.set()
    await task

    assert sink.script() == expected_script(SEGMENTS)


async def test_without_lookahead_one_segment_at_a_time(
    hass: HomeAssistant, engines: Engines
) -> None:
    sink = RecordingSink()
    first_gate = engines.plain.gate(SEGMENTS[0])
    task = asyncio.create_task(speak(hass, REPLY, PLAIN, sink, lookahead=0))

    async with asyncio.timeout(TIMEOUT):
        await engines.plain.requested(SEGMENTS[0]).wait()
    for _ in range(50):
        await asyncio.sleep(0)
    assert engines.plain.requests == SEGMENTS[:1]
    first_gate.set()
    await task
    assert sink.script() == expected_script(SEGMENTS)


async def test_negative_lookahead_is_refused(hass: HomeAssistant) -> None:
    with pytest.raises(ValueError, match="lookahead"):
        await speak(hass, REPLY, PLAIN, RecordingSink(), lookahead=-1)


@pytest.mark.parametrize("engine", [NARROW, NARROW_STREAMING])
async def test_16khz_engine_audio_is_resampled_to_24khz(
    hass: HomeAssistant, engines: Engines, engine: str
) -> None:
    sink = RecordingSink()

    await speak(hass, REPLY, engine, sink)

    assert sink.sentences() == SEGMENTS
    expected = sum(len(speech_pcm(text, 16000)) for text in SEGMENTS) * 3 // 2
    assert abs(len(sink.pcm) - expected) <= 3 * 2 * 16  # a few samples per segment
    assert len(sink.pcm) % 2 == 0


async def test_mp3_engine_audio_is_converted_by_ha(
    hass: HomeAssistant, engines: Engines
) -> None:
    """HA's ffmpeg turns mp3 into WAV; it arrives as 24 kHz PCM of the same length."""
    sink = RecordingSink()

    await speak(hass, ["Hello there. This is a longer sentence in mp3."], MP3, sink)

    assert sink.sentences() == ["Hello there.", "This is a longer sentence in mp3."]
    expected = sum(len(speech_pcm(text)) for text in sink.sentences())
    # Encoder delay and frame padding, which a piped mp3 has no header to trim:
    # at most two 1152-sample frames per segment.
    assert expected <= len(sink.pcm) <= expected + 2 * (2 * 2 * 1152)


async def test_nothing_to_say_sends_nothing(
    hass: HomeAssistant, engines: Engines
) -> None:
    sink = RecordingSink()

    result = await speak(hass, ["", "**", None, "😊"], PLAIN, sink)

    assert sink.calls == []
    assert result.segments == []
    assert result.streaming_input is None
    assert engines.plain.requests == []


# --------------------------------------------------------------------------
# Emotion
# --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", [PLAIN, STREAMING])
async def test_reply_emotion_is_sent_once_and_emojis_are_never_spoken(
    hass: HomeAssistant, engines: Engines, engine: str
) -> None:
    sink = RecordingSink()

    await speak(hass, ["好的😊，我来", "开灯。😂 灯已经打开了！"], engine, sink)

    assert sink.calls[:3] == [
        ("start", None),
        ("emotion", ("happy", "😊")),
        ("sentence", "好的，"),
    ]
    assert [call for call in sink.calls if call[0] == "emotion"] == [
        ("emotion", ("happy", "😊"))
    ]
    assert sink.sentences() == ["好的，", "我来开灯。", "灯已经打开了！"]
    spoken = engines.plain.requests + engines.streaming.requests
    assert spoken == sink.sentences()


async def test_emoji_after_the_last_sentence_still_shows(
    hass: HomeAssistant, engines: Engines
) -> None:
    sink = RecordingSink()

    await speak(
        hass, Deltas("The light is on!", sink.audio_received, "👍"), PLAIN, sink
    )

    assert sink.script() == [
        *expected_script(["The light is on!"])[:-1],
        ("emotion", ("happy", "👍")),
        ("stop", None),
    ]


async def test_emoji_without_an_emotion_is_ignored(
    hass: HomeAssistant, engines: Engines
) -> None:
    sink = RecordingSink()

    await speak(hass, ["Here is a 🚗 car."], PLAIN, sink)

    assert sink.script() == expected_script(["Here is a car."])


# --------------------------------------------------------------------------
# Barge-in
# --------------------------------------------------------------------------


def speaker_tasks() -> list[asyncio.Task[Any]]:
    return [
        t for t in asyncio.all_tasks() if t.get_name().startswith("xiaozhi.speaker")
    ]


async def cancel_when_audio_plays(
    hass: HomeAssistant, engine: str, sink: RecordingSink, deltas: Deltas
) -> list[tuple[str, Any]]:
    """Start speaking, cancel once the sink holds audio; return the calls then."""
    sink.hold_audio = asyncio.Event()  # playback never finishes by itself
    task = asyncio.create_task(speak(hass, deltas, engine, sink))
    async with asyncio.timeout(TIMEOUT):
        await sink.audio_received.wait()
    assert speaker_tasks()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not speaker_tasks()
    return list(sink.calls)


async def test_cancel_stops_a_streaming_reply_at_once(
    hass: HomeAssistant, engines: Engines
) -> None:
    tasks_before = asyncio.all_tasks()
    sink = RecordingSink()
    more_text = asyncio.Event()
    deltas = Deltas("First sentence!", more_text, " Second sentence.")

    calls_at_cancel = await cancel_when_audio_plays(hass, STREAMING, sink, deltas)

    # The engine's text input was ended, so its stream closes by itself.
    async with asyncio.timeout(TIMEOUT):
        await engines.streaming.input_ended.wait()
        await engines.streaming.closed.wait()
    more_text.set()
    sink.hold_audio = None
    await hass.async_block_till_done(wait_background_tasks=True)
    assert sink.calls == calls_at_cancel
    assert engines.streaming.received == ["First sentence!\n"]
    assert not deltas.finished
    assert asyncio.all_tasks() <= tasks_before | {asyncio.current_task()}


async def test_cancel_stops_a_reply_with_requests_in_flight(
    hass: HomeAssistant, engines: Engines
) -> None:
    tasks_before = asyncio.all_tasks()
    sink = RecordingSink()
    engines.plain.gate(SEGMENTS[1])  # still synthesizing at the cancel

    calls_at_cancel = await cancel_when_audio_plays(hass, PLAIN, sink, Deltas(*REPLY))

    assert engines.plain.requests == SEGMENTS[:2]
    engines.plain.gates[SEGMENTS[1]].set()
    sink.hold_audio = None
    await hass.async_block_till_done(wait_background_tasks=True)
    assert sink.calls == calls_at_cancel
    assert engines.plain.requests == SEGMENTS[:2]
    assert asyncio.all_tasks() <= tasks_before | {asyncio.current_task()}


# --------------------------------------------------------------------------
# Errors
# --------------------------------------------------------------------------


@pytest.mark.parametrize("engine", [PLAIN, STREAMING])
async def test_a_failing_sink_fails_the_call_without_leaks(
    hass: HomeAssistant, engines: Engines, engine: str
) -> None:
    """The connection is gone: the sink's own error comes out, tasks are gone."""

    class ClosedSink(RecordingSink):
        async def audio(self, pcm_24k_mono: bytes) -> None:
            raise ConnectionResetError("device gone")

    with pytest.raises(ConnectionResetError, match="device gone"):
        await speak(hass, REPLY, engine, ClosedSink())
    assert not speaker_tasks()


@pytest.mark.parametrize("engine", [PLAIN, STREAMING])
async def test_tts_failure_becomes_an_alert_and_the_next_reply_works(
    hass: HomeAssistant, engines: Engines, engine: str
) -> None:
    for entity in (engines.plain, engines.streaming):
        entity.failures[SEGMENTS[1]] = HomeAssistantError("engine down")
    sink = RecordingSink()
    deltas = Deltas(*REPLY)

    result = await speak(hass, deltas, engine, sink, device_language="zh-CN")

    assert sink.script() == [
        *expected_script(SEGMENTS[:1])[:-1],
        ("alert", device_message("error_tts", "zh")),
        ("stop", None),
    ]
    assert result.error == "error_tts"
    assert result.segments == SEGMENTS
    assert result.spoken == SEGMENTS[:1]
    assert deltas.finished  # the rest of the reply was still read

    sink = RecordingSink()
    result = await speak(hass, ["All good again."], engine, sink)
    assert sink.script() == expected_script(["All good again."])
    assert result.error is None


@pytest.mark.parametrize(
    ("engine", "language"),
    [("tts.missing", "en"), (PLAIN, "fr")],
    ids=["unknown engine", "unsupported language"],
)
async def test_unusable_engine_becomes_an_alert(
    hass: HomeAssistant, engines: Engines, engine: str, language: str
) -> None:
    sink = RecordingSink()
    deltas = Deltas(*REPLY)

    result = await speak(hass, deltas, engine, sink, language=language)

    assert sink.calls == [
        ("start", None),
        ("alert", device_message("error_tts", "en")),
        ("stop", None),
    ]
    assert result.error == "error_tts"
    assert deltas.finished


async def test_engine_lost_mid_reply_becomes_an_alert(
    hass: HomeAssistant, engines: Engines
) -> None:
    """Creating the streams of segments 2 and 3 fails: one alert, nothing more."""
    sink = RecordingSink()
    real_create = tts.async_create_stream
    created: list[str] = []

    def create_once(*args: Any, **kwargs: Any) -> tts.ResultStream:
        if created:
            raise HomeAssistantError("Provider tts.plain not found")
        created.append("stream")
        return real_create(*args, **kwargs)

    with patch.object(tts, "async_create_stream", create_once):
        result = await speak(hass, REPLY, PLAIN, sink, lookahead=2)

    assert sink.script() == [
        *expected_script(SEGMENTS[:1])[:-1],
        ("alert", device_message("error_tts", "en")),
        ("stop", None),
    ]
    assert result.error == "error_tts"


async def test_audio_that_is_not_wav_becomes_an_alert(
    hass: HomeAssistant, engines: Engines
) -> None:
    """An engine claiming WAV but sending something else."""

    async def not_wav(*_: Any) -> tts.TtsAudioType:
        return "wav", b"ID3 this is no wav at all"

    sink = RecordingSink()
    with patch.object(engines.plain, "async_get_tts_audio", not_wav):
        result = await speak(hass, ["Hi there."], PLAIN, sink)

    assert sink.calls == [
        ("start", None),
        ("alert", device_message("error_tts", "en")),
        ("stop", None),
    ]
    assert result.error == "error_tts"


@pytest.mark.parametrize("engine", [PLAIN, STREAMING])
async def test_agent_failure_is_followed_by_a_spoken_apology(
    hass: HomeAssistant, engines: Engines, engine: str
) -> None:
    sink = RecordingSink()
    deltas = Deltas("Let me see. The", RuntimeError("agent crashed"))

    result = await speak(hass, deltas, engine, sink, device_language="zh")

    apology = device_message("error_agent", "zh")
    assert sink.sentences() == ["Let me see.", "The", apology]
    assert result.error == "error_agent"
    assert result.segments == ["Let me see.", "The", apology]
    assert sink.calls[-1] == ("stop", None)


# --------------------------------------------------------------------------
# Our own TTS entity on the fake OpenAI-compatible service
# --------------------------------------------------------------------------


@pytest.mark.usefixtures("provider_entry")
async def test_xiaozhi_tts_entity_speaks_a_reply(
    hass: HomeAssistant, fake_provider: FakeProvider
) -> None:
    sink = RecordingSink()

    result = await speak(hass, REPLY, XIAOZHI_TTS, sink, language=None)

    assert result.streaming_input is True
    assert result.error is None
    assert sink.sentences() == SEGMENTS
    assert sink.calls[0] == ("start", None)
    assert sink.calls[-1] == ("stop", None)
    inputs = [request.input for request in fake_provider.speech_requests]
    # Requested concurrently (the entity synthesizes ahead), so in any order.
    assert sorted(inputs) == sorted(SEGMENTS)
    expected = sum(fake_provider.speech.pcm_bytes(text) for text in inputs)
    assert len(sink.pcm) == expected


# --------------------------------------------------------------------------
# Pure parts
# --------------------------------------------------------------------------


async def test_a_message_for_an_engine_that_went_away_is_a_tts_error(
    hass: HomeAssistant, engines: Engines
) -> None:
    """The stream outlives its engine (entry unloaded): setting a message fails."""
    plain = open_tts_stream(hass, PLAIN, "en", None)
    streaming = open_tts_stream(hass, STREAMING, "en", None)
    assert await hass.config_entries.async_unload(engines.entry.entry_id)

    with pytest.raises(TtsError, match="cannot start TTS"):
        start_message(plain, "Hello.")

    async def texts() -> AsyncGenerator[str]:
        yield "Hello."

    message_stream = texts()
    with pytest.raises(TtsError, match="cannot start TTS"):
        start_message_stream(streaming, message_stream)
    await message_stream.aclose()


def test_speech_estimate_counts_wide_characters_longer() -> None:
    assert estimated_speech_seconds("") == 0
    assert estimated_speech_seconds("你好") == pytest.approx(0.44)
    assert estimated_speech_seconds("Hi you") == pytest.approx(6 * 0.065)


def test_sentence_clock_places_segments_one_after_another() -> None:
    clock = SentenceClock()
    first, second, late = Segment("你好。"), Segment("Hi."), Segment("Late.")
    clock.add(first, 0)
    clock.add(second, 0)  # starts where the first one's estimate ends: 0.66 s
    second_start = len(speech_pcm(first.text))
    assert second_start == 2 * round(0.66 * RATE)

    assert clock.due(1) == [(first, 0)]
    assert clock.due(second_start) == []
    assert clock.due(second_start + 1) == [(second, second_start)]
    clock.add(late, 5 * BYTES_PER_SECOND)  # its text came after 5 s of audio
    assert clock.due(5 * BYTES_PER_SECOND) == []
    assert clock.rest() == [late]
    assert clock.rest() == []


def test_sentence_clock_follows_the_engines_marks() -> None:
    """Marked starts win over estimates; a segment the engine merged starts late."""

    async def texts() -> AsyncGenerator[str]:
        yield "unused"

    clock = SentenceClock()
    stream = texts()
    marks = clock.marks = attach_marks(stream)
    assert marks_for(stream) is marks
    first, second, third = Segment("你好。"), Segment("Hi there."), Segment("Bye.")
    for segment in (first, second, third):
        clock.add(segment, 0)
    marks.sentence_starts("你好。", 0.0)
    assert clock.due(1) == [(first, 0)]
    # The voice is faster than estimated (0.66 s): the engine says 0.25 s.
    marks.sentence_starts("Hi", 0.25)  # the engine cut "Hi there." in two
    marks.sentence_starts("there.", 0.4)
    quarter = BYTES_PER_SECOND // 4
    assert clock.due(quarter) == []
    assert clock.due(quarter + 2) == [(second, quarter)]
    assert clock.due(100 * BYTES_PER_SECOND) == []  # "Bye." is not marked yet
    assert clock.rest() == [third]


def test_wav_request_options_ask_for_wav_only() -> None:
    options = {
        "voice": "alloy",
        "preferred_format": "mp3",
        "preferred_sample_rate": 16000,
        "preferred_sample_channels": 1,
        "preferred_sample_bytes": 2,
        "preferred_bitrate": 64,
    }
    assert wav_request_options(options) == {"voice": "alloy", "preferred_format": "wav"}
    assert wav_request_options(None) == {"preferred_format": "wav"}


def feed_bytewise(decoder: WavStreamDecoder, data: bytes) -> bytes:
    return b"".join(decoder.feed(data[i : i + 1]) for i in range(len(data)))


@pytest.mark.parametrize(
    "header",
    [wav_header(RATE), pcm_to_wav(b"", RATE)],
    ids=["size 0xFFFFFFFF", "size 0 (as HA's Wyoming TTS streams)"],
)
def test_wav_decoder_streams_one_file_of_unknown_length(header: bytes) -> None:
    pcm = speech_pcm("A streamed sentence.")
    decoder = WavStreamDecoder()

    out = feed_bytewise(decoder, header + pcm) + decoder.flush()

    assert out == pcm


def test_wav_decoder_reads_files_back_to_back() -> None:
    one, two = speech_pcm("One."), b"\x01\x02" * 99
    data = pcm_to_wav(one, RATE) + pcm_to_wav(two, RATE) + b"LIST\x04\x00\x00\x00abcd"
    decoder = WavStreamDecoder()

    assert decoder.feed(data) + decoder.flush() == one + two
    assert feed_bytewise(decoder, data) + decoder.flush() == one + two


def test_wav_decoder_skips_the_pad_byte_of_an_odd_chunk() -> None:
    odd = bytes(range(1, 12))  # 11 samples of 8-bit audio
    data = pcm_to_wav(odd, RATE, width=1) + pcm_to_wav(b"\x00\x10", RATE)
    decoder = WavStreamDecoder()

    out = decoder.feed(data) + decoder.flush()

    assert len(out) == 2 * (11 + 1)
    assert out.endswith(b"\x00\x10")


def test_wav_decoder_downmixes_and_resamples() -> None:
    stereo = struct.pack("<hh", 1000, 3000) * 16000  # one second at 16 kHz
    decoder = WavStreamDecoder()

    out = decoder.feed(pcm_to_wav(stereo, 16000, channels=2)) + decoder.flush()

    assert abs(len(out) - 2 * RATE) <= 2 * 16
    assert struct.unpack_from("<h", out, len(out) // 2)[0] == pytest.approx(2000, abs=2)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"ID3\x04" + bytes(40), "not a WAV"),
        (pcm_to_wav(bytes(6), RATE, width=3), "unsupported WAV audio"),
    ],
)
def test_wav_decoder_refuses_what_is_not_pcm_wav(data: bytes, message: str) -> None:
    with pytest.raises(CodecError, match=message):
        WavStreamDecoder().feed(data)


def test_wav_decoder_refuses_a_stream_cut_in_its_header() -> None:
    decoder = WavStreamDecoder()
    assert decoder.feed(wav_header(RATE)[:20]) == b""
    with pytest.raises(CodecError, match="inside its WAV header"):
        decoder.flush()
    assert decoder.flush() == b""  # reset: an empty stream is no audio


def test_wav_decoder_ignores_a_cut_trailer() -> None:
    decoder = WavStreamDecoder()
    assert decoder.feed(pcm_to_wav(b"\x01\x00", RATE) + b"RI") == b"\x01\x00"
    assert decoder.flush() == b""
