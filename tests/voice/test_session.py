"""Voice turns end to end: a simulated device speaks, Home Assistant answers.

The device sends Opus of a real utterance (tests/fixtures/zh_turn_on_the_light.wav,
"打开客厅灯" made once with ``espeak-ng -v cmn``) over a real WebSocket; the
device's assist satellite runs a real Assist pipeline (HA's VAD, our STT and
streaming agent on the local OpenAI-compatible server) and speaks the answer with
the pipeline's TTS engine. Ordering is proven with the provider's hold points,
never with timing.
"""

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Literal

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components import conversation
from homeassistant.components.assist_pipeline import (
    Pipeline,
    async_create_default_pipeline,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.const import DATA_LAST_WAKE_UP
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_satellite.entity import AssistSatelliteState
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.components.select import (
    ATTR_OPTION,
    DOMAIN as SELECT_DOMAIN,
    SERVICE_SELECT_OPTION,
)
from homeassistant.const import ATTR_ENTITY_ID, MATCH_ALL, STATE_OFF, STATE_ON
from homeassistant.core import HomeAssistant
from homeassistant.helpers.chat_session import async_get_chat_session

from custom_components.xiaozhi.assist_satellite import MANUAL_SILENCE_SECONDS
from custom_components.xiaozhi.device.messages import device_message
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.protocol.messages import EMOTIONS
from custom_components.xiaozhi.voice.pipeline import error_message_key
from custom_components.xiaozhi.voice.session import VoiceSession
from fake_provider import CHAT_PATH, ChatReply, FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import DeviceFactory, Recorder, dominant_hz
from tests.helpers.translations import message as agent_message
from tests.helpers.tts_engines import PlainTTS, setup_tts_entities, speech_pcm
from tests.helpers.voice import (
    AGENT_ENTITY,
    ANSWER,
    FRAME_BYTES_OUT,
    RATE_IN,
    RATE_OUT,
    STT_ENTITY,
    TIMEOUT,
    TRANSCRIPT,
    answer_messages,
    chat_messages,
    kinds,
    next_tts,
    satellite,
    satellite_id,
    say,
    sentences,
    silence,
    track_states,
    until,
    utterance,
)

PLAIN_TTS = "tts.plain"
# Assist and the device tools are selected together: Home Assistant prefixes names.
TURN_ON = "assist__intent__HassTurnOn"

FIRST_CLAUSE = "好的，"


# ---------------------------------------------------------------- helpers


def voice_session(runtime: DeviceRuntime) -> VoiceSession:
    assert runtime.session is not None
    handler = runtime.session.handler
    assert isinstance(handler, VoiceSession)
    return handler


def light_state(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None
    return state.state


def turn_on_then_answer() -> tuple[ChatReply, ChatReply]:
    return (
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}, text=FIRST_CLAUSE),
        ChatReply.text(ANSWER + "😊", chunk=3),
    )


async def wake_word_while_speaking(device: SimulatedDevice) -> None:
    """The firmware's wake word while speaking: abort, then listen start."""
    await device.abort("wake_word_detected")
    await device.listen_start("realtime")


def new_tasks(before: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started since ``before`` that still run.

    The local servers' idle keep-alive connections (pooled by the clients) are
    not work left running.
    """
    return [
        task
        for task in asyncio.all_tasks()
        if task not in before
        and not task.done()
        and getattr(task.get_coro(), "__qualname__", "") != "RequestHandler.start"
    ]


# ---------------------------------------------------------------- fixtures


@pytest.fixture
async def device(pipeline: Pipeline, devices: DeviceFactory) -> SimulatedDevice:
    """A connected device (no MCP tools) with the pipeline ready."""
    sim = devices(features={})
    await sim.open()
    return sim


@pytest.fixture
async def plain_tts(ha_core: HomeAssistant, pipeline: Pipeline) -> PlainTTS:
    """An engine without streaming input, made the pipeline's voice."""
    engine = PlainTTS("Plain")
    await setup_tts_entities(ha_core, [engine])
    await async_update_pipeline(
        ha_core, pipeline, tts_engine=PLAIN_TTS, tts_language="zh", tts_voice=None
    )
    return engine


# ---------------------------------------------------------------- a whole turn


@pytest.mark.usefixtures("lights")
async def test_a_spoken_request_turns_on_a_light_and_is_answered(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device: SimulatedDevice,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(*turn_on_then_answer())
    states = track_states(ha_core, satellite_id(ha_core))

    await say(device)
    messages = await answer_messages(device)

    assert kinds(messages)[:2] == ["stt", "start"]
    assert messages[0]["text"] == TRANSCRIPT
    assert kinds(messages)[-1] == "stop"
    assert sentences(messages) == [FIRST_CLAUSE, ANSWER]
    # A face with the first words (neutral: "好的，" has no emoji), then the
    # emotion of the answer's emoji.
    faces = [m for m in messages if m["type"] == "llm"]
    assert [m["emotion"] for m in faces] == ["neutral", "happy"]
    assert kinds(messages).index("llm") < kinds(messages).index("sentence_start")
    assert {m["emotion"] for m in faces} <= set(EMOTIONS)
    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert light_state(ha_core, "light.hall") == STATE_OFF

    # Decodable 24 kHz Opus of exactly the synthesized speech (plus frame padding).
    pcm = device.received_pcm()
    spoken = sum(
        fake_provider.speech.pcm_bytes(r.input) for r in fake_provider.speech_requests
    )
    assert 0 <= len(pcm) - spoken <= 3 * FRAME_BYTES_OUT
    assert dominant_hz(pcm, RATE_OUT) == pytest.approx(400, abs=5)
    # One TTS stream fed from the first segment: the engine got the text in order.
    assert (
        "".join(r.input for r in fake_provider.speech_requests) == FIRST_CLAUSE + ANSWER
    )
    # The uploaded speech is the device's audio (HA's VAD cut the trailing silence).
    [upload] = fake_provider.transcriptions
    assert upload.wav.sample_rate == RATE_IN
    assert len(upload.pcm) < len(utterance())

    await until(lambda: states[-1] == AssistSatelliteState.IDLE)
    assert states == ["listening", "processing", "responding", "idle"]
    assert device.dropped_audio == 0

    # The run is in HA's pipeline debug view, as the satellite's.
    runs = ha_core.data[KEY_ASSIST_PIPELINE].pipeline_debug[pipeline.id]
    [run] = runs.values()
    types = [event.type for event in run.events]
    assert types[0] == "run-start"
    assert {"stt-end", "intent-progress", "intent-end", "run-end"} <= set(types)
    assert (run.events[0].data or {})["satellite_id"] == satellite_id(ha_core)


@pytest.mark.usefixtures("lights")
async def test_an_engine_without_streaming_input_speaks_each_segment(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    plain_tts: PlainTTS,
    device: SimulatedDevice,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(*turn_on_then_answer())

    await say(device)
    messages = await answer_messages(device)

    assert kinds(messages)[:2] == ["stt", "start"]
    assert sentences(messages) == [FIRST_CLAUSE, ANSWER]
    assert plain_tts.requests == [FIRST_CLAUSE, ANSWER]
    assert fake_provider.speech_requests == []
    assert light_state(ha_core, "light.kitchen") == STATE_ON
    pcm = device.received_pcm()
    assert len(pcm) >= plain_tts_bytes(FIRST_CLAUSE, ANSWER)
    assert len(pcm) - plain_tts_bytes(FIRST_CLAUSE, ANSWER) <= 3 * FRAME_BYTES_OUT


def plain_tts_bytes(*texts: str) -> int:
    from tests.helpers.tts_engines import speech_pcm

    return sum(len(speech_pcm(text)) for text in texts)


@pytest.mark.usefixtures("lights")
async def test_text_before_a_tool_call_is_spoken_while_the_agent_works(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    plain_tts: PlainTTS,
    device: SimulatedDevice,
) -> None:
    """The pause for the tool call makes the text so far a segment of its own.

    (An engine with streaming input gets one text stream and may hold text that
    does not end a sentence until more arrives: how segments are fed to it is
    voice/speaking.py's choice.)
    """
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        # No punctuation: only the pause for the tool call makes it speakable.
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}, text="我来开灯"),
        ChatReply.text(ANSWER, hold_after=0),
    )

    await say(device)
    await fake_provider.wait_held()  # the agent's second round, after the tool
    await until(lambda: bool(device.received_audio))

    assert sentences(device.pending_messages()) == ["我来开灯"]
    assert plain_tts.requests == ["我来开灯"]
    assert light_state(ha_core, "light.kitchen") == STATE_ON
    fake_provider.release()
    messages = await answer_messages(device)
    assert sentences(messages) == [ANSWER]


@pytest.mark.usefixtures("lights")
async def test_text_before_a_tool_call_is_spoken_by_a_streaming_engine_too(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    """Our streaming TTS gets each segment newline-terminated, so it speaks at once."""
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}, text="我来开灯"),
        ChatReply.text(ANSWER, hold_after=0),
    )

    await say(device)
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))

    assert sentences(device.pending_messages()) == ["我来开灯"]
    assert [request.input for request in fake_provider.speech_requests] == ["我来开灯"]
    fake_provider.release()
    await answer_messages(device)


async def test_the_first_audio_goes_out_before_the_agent_finished(
    fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    # The stream stops after "好的，客" until the test releases it.
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4)
    )

    await say(device)
    held = await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))

    assert held.held
    assert not held.completed
    assert device.speaking
    fake_provider.release()
    messages = await answer_messages(device)
    assert sentences(messages) == [FIRST_CLAUSE, ANSWER]
    assert held.completed


async def test_follow_ups_continue_the_conversation(
    fake_provider: FakeProvider, runtime: DeviceRuntime, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT, "再调暗一点")
    fake_provider.add_reply(ChatReply.text(ANSWER), ChatReply.text("已经调暗了。"))

    await say(device)
    await answer_messages(device)
    # After tts stop the firmware listens again (auto mode) and says so.
    await say(device)
    messages = await answer_messages(device)

    assert messages[0] == {**messages[0], "type": "stt", "text": "再调暗一点"}
    second = chat_messages(fake_provider, 1)
    assert [(m["role"], m["content"]) for m in second[1:]] == [
        ("user", TRANSCRIPT),
        ("assistant", ANSWER),
        ("user", "再调暗一点"),
    ]
    assert runtime.connected


# ---------------------------------------------------------------- barge-in and endings


async def test_abort_cancels_the_agent_and_keeps_the_partial_answer(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    runtime: DeviceRuntime,
    device: SimulatedDevice,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT, "算了")
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4),
        ChatReply.text("好的。"),
    )
    states = track_states(ha_core, satellite_id(ha_core))

    await say(device)
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))
    await device.abort("wake_word_detected")

    closed = await fake_provider.wait_stream_closed()
    assert closed.path == CHAT_PATH
    assert not closed.completed
    await next_tts(device, "stop")
    await until(lambda: states[-1] == AssistSatelliteState.IDLE)
    frames = len(device.received_audio)

    # The next request still works, and the interrupted answer is in its history.
    await say(device)
    await answer_messages(device)
    second = chat_messages(fake_provider, 1)
    assert [(m["role"], m["content"]) for m in second[1:]] == [
        ("user", TRANSCRIPT),
        ("assistant", "好的，客"),
        ("user", "算了"),
    ]
    assert len(device.received_audio) > frames
    assert device.dropped_audio == 0
    assert runtime.connected


async def test_a_new_listen_start_interrupts_the_answer(
    fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT, "算了")
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4),
        ChatReply.text("好的。"),
    )
    await say(device)
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))

    await say(device, "manual")
    await next_tts(device, "stop")
    await fake_provider.wait_stream_closed()
    await device.listen_stop()
    messages = await answer_messages(device)
    assert messages[0]["text"] == "算了"
    assert sentences(messages) == ["好的。"]


async def test_a_disconnect_mid_answer_leaves_nothing_running(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    runtime: DeviceRuntime,
    device: SimulatedDevice,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4)
    )
    session = runtime.session
    assert session is not None
    before = set(asyncio.all_tasks())

    await say(device)
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))
    await device.close()

    closed = await fake_provider.wait_stream_closed()
    assert closed.path == CHAT_PATH
    await session.link.async_wait_closed()
    await until(lambda: not new_tasks(before))
    assert satellite(ha_core).state == AssistSatelliteState.IDLE


async def test_a_wake_word_is_reported_and_interrupts_the_answer(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4)
    )

    await device.wake_word("你好小智")
    await say(device)
    await fake_provider.wait_held()
    assert "你好小智" in ha_core.data[DATA_LAST_WAKE_UP]
    await until(lambda: bool(device.received_audio))

    await device.wake_word("你好小智")
    await next_tts(device, "stop")
    await fake_provider.wait_stream_closed()


# ---------------------------------------------------------------- subtitles

SIX_SENTENCES = (
    "第一句话。",
    "第二句话比较长一些，有两个分句。",
    "第三句。",
    "第四句话在这里。",
    "第五句话说得更久一点点。",
    "最后一句。",
)
SAMPLES_PER_FRAME = RATE_OUT * 60 // 1000


class StreamLog:
    """What the device received, messages and audio frames in one order."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def json_received(self, message: dict[str, Any]) -> None:
        self.events.append(("json", message))

    def json_sent(self, message: dict[str, Any]) -> None:
        pass

    def audio_received(self, packet: bytes, *, played: bool) -> None:
        self.events.append(("frame", played))

    def frames_before_sentences(self) -> dict[str, int]:
        """Each subtitle's text -> the frames received before it."""
        frames = 0
        before: dict[str, int] = {}
        for kind, value in self.events:
            if kind == "frame":
                frames += 1
            elif value.get("state") == "sentence_start":
                before[value["text"]] = frames
        return before


@pytest.mark.parametrize("engine", ["ours", "per segment"])
async def test_each_subtitle_arrives_as_its_sentence_starts_playing(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    devices: DeviceFactory,
    engine: str,
) -> None:
    """The voice here is twice as fast as a CJK estimate would place it."""
    if engine == "per segment":
        await setup_tts_entities(ha_core, [PlainTTS("Plain")])
        await async_update_pipeline(
            ha_core, pipeline, tts_engine=PLAIN_TTS, tts_language="zh", tts_voice=None
        )
    log = StreamLog()
    device = devices(features={}, observer=log)
    await device.open()
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text("".join(SIX_SENTENCES), chunk=4))

    await say(device)
    messages = await answer_messages(device)

    assert sentences(messages) == list(SIX_SENTENCES)
    if engine == "ours":
        lengths = [
            fake_provider.speech.pcm_bytes(r.input)
            for r in fake_provider.speech_requests
        ]
        assert [r.input for r in fake_provider.speech_requests] == list(SIX_SENTENCES)
    else:
        lengths = [len(speech_pcm(text)) for text in SIX_SENTENCES]
    # Each subtitle comes after every frame wholly before its sentence and
    # before the frame holding its first sample: in step with the voice.
    before = log.frames_before_sentences()
    start = 0
    for text, length in zip(SIX_SENTENCES, lengths, strict=True):
        assert before[text] == start // 2 // SAMPLES_PER_FRAME, text
        start += length
    # The last frames follow the last subtitle, then tts stop.
    assert log.events[-1][1]["state"] == "stop"
    frames = len(device.received_audio)
    assert 0 <= frames - start // 2 // SAMPLES_PER_FRAME <= 3  # the last one padded


# ---------------------------------------------------------------- typed requests

TYPED = "今天天气怎么样"
WEATHER = "今天晴，二十五度。"


async def test_a_typed_request_is_answered_like_a_spoken_one(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device: SimulatedDevice,
) -> None:
    """xiaozhi-sdk's send_text: a detect whose text is no wake word, no audio."""
    fake_provider.add_reply(ChatReply.text(WEATHER))
    states = track_states(ha_core, satellite_id(ha_core))

    await device.wake_word(TYPED)
    messages = await answer_messages(device)

    assert kinds(messages)[:2] == ["stt", "start"]
    assert messages[0]["text"] == TYPED
    assert "".join(sentences(messages)) == WEATHER
    assert device.received_audio
    # Nothing was transcribed: the pipeline ran from its intent stage.
    assert fake_provider.transcriptions == []
    assert chat_messages(fake_provider, 0)[-1] == {"role": "user", "content": TYPED}
    runs = ha_core.data[KEY_ASSIST_PIPELINE].pipeline_debug[pipeline.id]
    [run] = runs.values()
    types = [event.type for event in run.events]
    assert types[0] == "run-start"
    assert "stt-start" not in types
    assert {"intent-start", "intent-end", "run-end"} <= set(types)
    assert (run.events[0].data or {})["satellite_id"] == satellite_id(ha_core)
    await until(lambda: states[-1] == AssistSatelliteState.IDLE)
    assert states == ["processing", "responding", "idle"]


async def test_a_typed_request_continues_the_conversation_and_the_device_listens_on(
    fake_provider: FakeProvider, runtime: DeviceRuntime, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript("谢谢")
    fake_provider.add_reply(ChatReply.text(WEATHER), ChatReply.text("不客气。"))

    await device.wake_word(TYPED)
    await answer_messages(device)
    # Then the device speaks, as after any answer.
    await say(device)
    messages = await answer_messages(device)

    assert messages[0]["text"] == "谢谢"
    second = chat_messages(fake_provider, 1)
    assert [(m["role"], m["content"]) for m in second[1:]] == [
        ("user", TYPED),
        ("assistant", WEATHER),
        ("user", "谢谢"),
    ]
    assert runtime.connected


async def test_a_typed_request_interrupts_the_answer(
    fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4),
        ChatReply.text(WEATHER),
    )
    await say(device)
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))

    await device.wake_word(TYPED)
    await next_tts(device, "stop")
    await fake_provider.wait_stream_closed()
    messages = await answer_messages(device)
    assert messages[0] == {**messages[0], "type": "stt", "text": TYPED}
    assert "".join(sentences(messages)) == WEATHER


@pytest.mark.parametrize("wake_word", ["你好小智", "Hi, ESP", "你好，小智！"])
async def test_a_known_wake_word_is_no_request(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    device: SimulatedDevice,
    wake_word: str,
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    await device.wake_word(wake_word)
    await say(device)
    messages = await answer_messages(device)

    assert messages[0]["text"] == TRANSCRIPT
    assert len(fake_provider.chat_requests) == 1
    assert wake_word in ha_core.data[DATA_LAST_WAKE_UP]


async def test_a_custom_wake_word_is_told_by_its_audio(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    """The firmware sends the wake word's audio right before its detect."""
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    await device.send_pcm(utterance()[: RATE_IN * 2])  # ~1 s of the wake word
    await device.wake_word("小乐小乐")
    await say(device)
    messages = await answer_messages(device)

    assert messages[0]["text"] == TRANSCRIPT
    assert len(fake_provider.chat_requests) == 1
    assert "小乐小乐" in ha_core.data[DATA_LAST_WAKE_UP]


async def test_silence_after_an_answer_ends_the_conversation(
    fake_provider: FakeProvider, pipeline: Pipeline, devices: DeviceFactory
) -> None:
    # 120 ms frames keep 16 s of audio within the server's message burst limit.
    device = devices(features={}, frame_duration_ms=120)
    await device.open()
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))
    await say(device)
    await answer_messages(device)

    await device.listen_start("auto")
    # HA's VAD gives up after 15 s without speech.
    await device.send_pcm(silence(16))

    code, reason = await device.wait_closed(timeout=TIMEOUT)
    assert (code, reason) == (1000, "the conversation is over")
    assert len(fake_provider.transcriptions) == 1


async def test_realtime_mode_listens_on_by_itself(
    fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT, "谢谢")
    fake_provider.add_reply(ChatReply.text(ANSWER), ChatReply.text("不客气。"))

    await say(device, "realtime")
    await answer_messages(device)
    # No new listen start: the device never stopped listening.
    await device.send_pcm(utterance())
    messages = await answer_messages(device)
    assert messages[0]["text"] == "谢谢"
    assert sentences(messages) == ["不客气。"]


@pytest.mark.parametrize(
    "interrupt",
    [
        pytest.param(lambda d: d.abort(), id="abort"),
        pytest.param(lambda d: d.abort("wake_word_detected"), id="wake-word-abort"),
        pytest.param(lambda d: d.wake_word("你好小智"), id="wake-word"),
        pytest.param(wake_word_while_speaking, id="firmware-wake-word"),
    ],
)
async def test_realtime_mode_is_still_heard_after_an_interruption(
    fake_provider: FakeProvider,
    device: SimulatedDevice,
    interrupt: Callable[[SimulatedDevice], Awaitable[None]],
) -> None:
    """The firmware's abort in realtime mode is followed by no listen start."""
    fake_provider.add_transcript(TRANSCRIPT, "谢谢")
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4),
        ChatReply.text("不客气。"),
    )
    await say(device, "realtime")
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))

    await interrupt(device)
    await next_tts(device, "stop")
    await fake_provider.wait_stream_closed()

    # No new listen start: the device kept listening, and is heard.
    await device.send_pcm(utterance())
    messages = await answer_messages(device)
    assert messages[0] == {**messages[0], "type": "stt", "text": "谢谢"}
    assert sentences(messages) == ["不客气。"]
    assert len(fake_provider.transcriptions) == 2


async def test_push_to_talk_ends_at_listen_stop_not_at_a_pause(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))
    speech = utterance()

    await device.listen_start("manual")
    await device.send_pcm(speech + speech)  # a long pause in the middle
    await device.listen_stop()
    messages = await answer_messages(device)
    assert satellite(ha_core)._resolve_vad_sensitivity() == MANUAL_SILENCE_SECONDS

    assert messages[0]["text"] == TRANSCRIPT
    [upload] = fake_provider.transcriptions
    assert len(upload.pcm) > len(speech)
    # Push to talk: the device goes idle after the answer, nothing listens on.
    await ha_core.async_block_till_done()
    assert satellite(ha_core).state == AssistSatelliteState.IDLE


# ---------------------------------------------------------------- errors


async def test_speech_that_is_not_understood_gets_a_spoken_apology(
    fake_provider: FakeProvider, runtime: DeviceRuntime, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript("", TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    await say(device)
    messages = await answer_messages(device)
    assert set(kinds(messages)) == {"start", "llm", "sentence_start", "stop"}
    assert "".join(sentences(messages)) == device_message("error_stt", "zh-CN")
    assert device.received_audio

    await say(device)
    messages = await answer_messages(device)
    assert messages[0]["text"] == TRANSCRIPT
    assert runtime.connected


async def test_the_agents_own_error_message_is_spoken_without_a_second_apology(
    fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.error(500, "boom"), ChatReply.error(500, "boom"))

    await say(device)
    messages = await answer_messages(device)
    assert sentences(messages) == [agent_message("provider_error")]


async def test_a_pipeline_that_cannot_run_says_so_and_ends_the_conversation(
    ha_core: HomeAssistant, pipeline: Pipeline, device: SimulatedDevice
) -> None:
    await async_update_pipeline(
        ha_core, pipeline, conversation_engine="conversation.gone"
    )

    await say(device)
    messages = await answer_messages(device)
    assert "".join(sentences(messages)) == device_message("error_agent", "zh-CN")
    code, reason = await device.wait_closed(timeout=TIMEOUT)
    assert (code, reason) == (1000, "the conversation is over")


# A pipeline that cannot talk (no STT/TTS, missing): tests/voice/test_pipeline_check.py.


# ---------------------------------------------------------------- HA's side


@pytest.mark.usefixtures("lights")
async def test_a_local_intent_answers_without_the_language_model(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device: SimulatedDevice,
) -> None:
    await async_update_pipeline(
        ha_core, pipeline, conversation_engine=conversation.HOME_ASSISTANT_AGENT
    )
    fake_provider.add_transcript("turn on the kitchen light")

    await say(device)
    messages = await answer_messages(device)

    assert sentences(messages) == ["Turned on the light"]
    assert fake_provider.chat_requests == []
    assert light_state(ha_core, "light.kitchen") == STATE_ON


async def test_the_device_pipeline_select_chooses_the_pipeline(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device: SimulatedDevice,
) -> None:
    engine = PlainTTS("Plain")
    await setup_tts_entities(ha_core, [engine])
    other = await async_create_default_pipeline(
        ha_core, STT_ENTITY, PLAIN_TTS, "Plain voice"
    )
    assert other is not None
    await async_update_pipeline(ha_core, other, conversation_engine=AGENT_ENTITY)
    entity = satellite(ha_core)
    assert entity.pipeline_entity_id is not None
    assert entity.vad_sensitivity_entity_id is not None
    await ha_core.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: entity.pipeline_entity_id, ATTR_OPTION: "Plain voice"},
        blocking=True,
    )
    await ha_core.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: entity.vad_sensitivity_entity_id, ATTR_OPTION: "aggressive"},
        blocking=True,
    )
    assert entity._resolve_vad_sensitivity() == 0.25
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    await say(device)
    await answer_messages(device)
    assert engine.requests == [ANSWER]


async def test_the_satellite_has_no_wake_word_settings(
    ha_core: HomeAssistant, device: SimulatedDevice
) -> None:
    config = satellite(ha_core).async_get_configuration()
    assert (config.available_wake_words, config.active_wake_words) == ([], [])
    assert config.max_active_wake_words == 0


async def test_a_conversation_cut_short_keeps_its_session(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    """A first turn cancelled before HA stored its chat session still has one."""
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER, hold_after=0))
    await say(device)
    await fake_provider.wait_held()
    await device.abort()
    await fake_provider.wait_stream_closed()

    conversation_id = satellite(ha_core)._conversation_id
    assert conversation_id is not None
    with async_get_chat_session(ha_core, conversation_id) as session:
        assert session.conversation_id == conversation_id


class FailingAgent(AbstractConversationAgent):
    """An agent with a bug: it raises instead of answering."""

    @property
    def supported_languages(self) -> Literal["*"]:
        return MATCH_ALL

    async def async_process(
        self, user_input: conversation.ConversationInput
    ) -> conversation.ConversationResult:
        raise RuntimeError("agent bug")


async def test_an_agent_failing_without_a_word_gets_an_apology(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    runtime: DeviceRuntime,
    device: SimulatedDevice,
) -> None:
    entry = MockConfigEntry(domain="failing_agent")
    entry.add_to_hass(ha_core)
    conversation.async_set_agent(ha_core, entry, FailingAgent())
    await async_update_pipeline(ha_core, pipeline, conversation_engine=entry.entry_id)
    fake_provider.add_transcript(TRANSCRIPT)

    await say(device)
    messages = await answer_messages(device)

    assert messages[0]["text"] == TRANSCRIPT
    assert "".join(sentences(messages)) == device_message("error_agent", "zh-CN")
    assert runtime.connected


async def test_an_intercepted_wake_word_ends_the_conversation(
    ha_core: HomeAssistant, device: SimulatedDevice
) -> None:
    """HA's "test the wake word" takes the wake word instead of a request."""
    intercept = ha_core.async_create_task(
        satellite(ha_core).async_intercept_wake_word()
    )
    await asyncio.sleep(0)

    await device.wake_word("你好小智")
    await say(device)

    async with asyncio.timeout(TIMEOUT):
        assert await intercept == "你好小智"
    code, reason = await device.wait_closed(timeout=TIMEOUT)
    assert (code, reason) == (1000, "the conversation is over")


def test_pipeline_errors_are_told_by_stage() -> None:
    assert error_message_key("stt-stream-failed") == "error_stt"
    assert error_message_key("tts-not-supported") == "error_tts"
    assert error_message_key("intent-failed") == "error_agent"
    assert error_message_key("pipeline_not_found") == "error_agent"


async def test_another_handler_taking_over_mid_answer_silences_the_device(
    fake_provider: FakeProvider, runtime: DeviceRuntime, device: SimulatedDevice
) -> None:
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(
        ChatReply.text(FIRST_CLAUSE + ANSWER, chunk=1, hold_after=4)
    )
    await say(device)
    await fake_provider.wait_held()
    await until(lambda: bool(device.received_audio))

    Recorder(runtime)  # e.g. the satellite's entity is reloaded

    await next_tts(device, "stop")
    closed = await fake_provider.wait_stream_closed()
    assert closed.path == CHAT_PATH
    assert runtime.connected
