"""Auto mode through our endpointer: real recordings, a real WebSocket device, HA's pipeline.

The device streams Opus of real speech (tests/fixtures/voice: 你好, 0.6 s, a
Mandarin speaker) in auto mode; the satellite runs a real Assist pipeline (our
STT and agent on the local OpenAI-compatible server). The endpointer decides on
the audio alone, so a device sending faster than real time gets the same
decisions; what must happen before what is held with the provider's hold points.
"""

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from homeassistant.components.assist_pipeline import (
    Pipeline,
    async_create_default_pipeline,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.default_pipeline import (
    async_get_pipeline_conversation_data,
)
from homeassistant.components.conversation import ConversationEntityFeature
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import (
    ATTR_SUPPORTED_FEATURES,
    CONF_LLM_HASS_API,
    STATE_OFF,
    STATE_ON,
)
from homeassistant.core import HomeAssistant
from homeassistant.helpers import chat_session

from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import SUBENTRY_CONVERSATION
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.protocol.codec import parse_wav
from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM
from custom_components.xiaozhi.voice.endpointing import (
    Endpointer,
    EndpointSettings,
    SpeechModel,
    silero_model,
)
from custom_components.xiaozhi.voice.listening import (
    Listening,
    SessionEndpointing,
    SpeculationCount,
    TakenBackError,
    async_until_committed,
    finished_speaking_settings,
    forget_held_actions,
    hold_actions,
    run_may_act,
    waiting_actions,
)
from custom_components.xiaozhi.voice.session import VoiceSession
from custom_components.xiaozhi.voice.turn import VoiceTurn
from fake_provider import ChatReply, FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import DeviceFactory
from tests.helpers.voice import (
    AGENT_ENTITY,
    RATE_IN,
    STT_ENTITY,
    TTS_ENTITY,
    answer_messages,
    chat_messages,
    kinds,
    silence,
    until,
)

FIXTURES = Path(__file__).parents[1] / "fixtures" / "voice"
# 60 ms of 16 kHz PCM: the device's frame; a part sent alone is a whole number of them.
FRAME_BYTES = RATE_IN * 2 * 60 // 1000
GREETING = "你好"
# Assist and the device tools are selected together: Home Assistant prefixes names.
TURN_ON = "assist__intent__HassTurnOn"
ANSWER = "你好！有什么可以帮你？"
TWICE = "你好，你好"


def nihao() -> bytes:
    wav = parse_wav((FIXTURES / "zh_nihao_gcin5.wav").read_bytes())
    assert (wav.rate, wav.channels, wav.width) == (RATE_IN, 1, 2)
    return wav.pcm


def whole_frames(pcm: bytes) -> bytes:
    return pcm + bytes(-len(pcm) % FRAME_BYTES)


def without_tools(subentries: list[ConfigSubentryData]) -> list[ConfigSubentryData]:
    """The agent without Home Assistant's or the device's tools: it cannot act."""
    changed: list[ConfigSubentryData] = []
    for subentry in subentries:
        if subentry["subentry_type"] == SUBENTRY_CONVERSATION:
            data = dict(subentry["data"])
            data.pop(CONF_LLM_HASS_API, None)
            changed.append(
                ConfigSubentryData(
                    subentry_type=SUBENTRY_CONVERSATION,
                    title=subentry["title"],
                    data=data,
                    unique_id=None,
                )
            )
        else:
            changed.append(subentry)
    return changed


@pytest.fixture(params=["chat"])
def provider_subentries(
    request: pytest.FixtureRequest, fake_provider: FakeProvider
) -> list[ConfigSubentryData]:
    """The agent chats only (it may be speculated on), or controls the home."""
    subentries = default_subentries(PRESET_CUSTOM, True, fake_provider.models)
    return subentries if request.param == "control" else without_tools(subentries)


@pytest.fixture
async def device(pipeline: Pipeline, devices: DeviceFactory) -> SimulatedDevice:
    sim = devices(features={})
    await sim.open()
    return sim


def voice_session(runtime: DeviceRuntime) -> VoiceSession:
    assert runtime.session is not None
    handler = runtime.session.handler
    assert isinstance(handler, VoiceSession)
    return handler


def last_turn(runtime: DeviceRuntime) -> VoiceTurn:
    turn = voice_session(runtime).last_turn
    assert turn is not None
    return turn


def utterance_over(runtime: DeviceRuntime) -> Callable[[], bool]:
    def over() -> bool:
        turn = voice_session(runtime).last_turn
        listening = None if turn is None else turn.listening
        return listening is not None and listening.endpointer.ended

    return over


def light_state(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None
    return state.state


def stt_texts(messages: list[dict[str, Any]]) -> list[str]:
    return [m["text"] for m in messages if m["type"] == "stt"]


def user_turns(provider: FakeProvider, index: int) -> list[str]:
    return [m["content"] for m in chat_messages(provider, index) if m["role"] == "user"]


# ---------------------------------------------------------------- a short greeting


@pytest.mark.parametrize("provider_subentries", ["chat", "control"], indirect=True)
async def test_a_short_greeting_ends_and_is_answered(
    fake_provider: FakeProvider, device: SimulatedDevice, runtime: DeviceRuntime
) -> None:
    """你好 (0.6 s) ends the utterance; HA's VAD rated it below its thresholds."""
    fake_provider.add_transcript(GREETING)
    fake_provider.add_reply(ChatReply.text(ANSWER))
    sent = silence(0.6) + nihao() + silence(1.5)

    await device.listen_start("auto")
    await device.send_pcm(sent)
    messages = await answer_messages(device)

    assert kinds(messages)[:2] == ["stt", "start"]
    assert stt_texts(messages) == [GREETING]
    assert user_turns(fake_provider, 0) == [GREETING]
    # Our end, not the device's audio running out: the tail was not uploaded.
    [upload] = fake_provider.transcriptions
    assert len(silence(0.6) + nihao()) <= len(upload.pcm) < len(sent)
    assert voice_session(runtime).endpointing.count.taken_back == 0


# ---------------------------------------------------------------- pauses


async def test_a_pause_inside_the_utterance_is_not_cut(
    fake_provider: FakeProvider, device: SimulatedDevice, runtime: DeviceRuntime
) -> None:
    """你好 … 你好 with 300 ms between: one reply, to both."""
    fake_provider.default_transcript = TWICE
    # Held until the endpointer's final end: no guess may reach the device first.
    for _ in range(3):
        fake_provider.add_reply(ChatReply.text(ANSWER, hold_after=0))
    first = whole_frames(silence(0.6) + nihao() + silence(0.3))
    speech = first + nihao()

    await device.listen_start("auto")
    await device.send_pcm(first)
    # The pause is a possible end: the turn guesses (as it would live, where the
    # rest of the utterance is still unspoken)...
    await until(lambda: voice_session(runtime).endpointing.count.started == 1)
    await device.send_pcm(nihao() + silence(1.5))
    await until(utterance_over(runtime))
    fake_provider.release(3)
    messages = await answer_messages(device)

    assert stt_texts(messages) == [TWICE]
    assert kinds(messages).count("start") == 1
    # The answer was to the whole utterance, and the only exchange in the chat.
    assert len(fake_provider.transcriptions[-1].pcm) >= len(speech)
    assert user_turns(fake_provider, -1) == [TWICE]
    # ... and takes the guess back.
    assert voice_session(runtime).endpointing.count.taken_back == 1


async def test_speech_resumed_takes_the_guess_back(
    fake_provider: FakeProvider, device: SimulatedDevice, runtime: DeviceRuntime
) -> None:
    """A guess at a 450 ms pause runs the agent; speech resumes; one reply to all."""
    fake_provider.default_transcript = GREETING
    fake_provider.add_reply(ChatReply.text("猜的回答。", hold_after=0))
    fake_provider.add_reply(ChatReply.text(ANSWER, hold_after=0))
    first = whole_frames(silence(0.6) + nihao() + silence(0.45))

    await device.listen_start("auto")
    await device.send_pcm(first)
    guess = await fake_provider.wait_held()
    # The speculation transcribed and asked the agent; the device saw nothing.
    assert [m["type"] for m in device.pending_messages()] == []
    [guessed] = fake_provider.transcriptions
    assert len(guessed.pcm) < len(first) + len(nihao()) // 2  # the first part only

    fake_provider.default_transcript = TWICE
    await device.send_pcm(nihao() + silence(1.5))
    closed = await fake_provider.wait_stream_closed()
    assert closed is guess
    await until(utterance_over(runtime))
    fake_provider.release(2)
    messages = await answer_messages(device)

    assert stt_texts(messages) == [TWICE]
    assert kinds(messages).count("start") == 1
    assert len(fake_provider.transcriptions[-1].pcm) >= len(first + nihao())
    # The guess left nothing in the conversation.
    assert user_turns(fake_provider, -1) == [TWICE]
    assert [m["role"] for m in chat_messages(fake_provider, -1)].count("assistant") == 0
    count = voice_session(runtime).endpointing.count
    assert count.taken_back == 1
    assert count.started == 1  # the retake started after the end: nothing to guess


async def test_a_guess_the_end_confirms_tells_the_transcript_then(
    fake_provider: FakeProvider, device: SimulatedDevice, runtime: DeviceRuntime
) -> None:
    """The guess's transcript reaches the device at the final end, not before."""
    fake_provider.add_transcript(GREETING)
    fake_provider.add_reply(ChatReply.text(ANSWER, hold_after=0))

    await device.listen_start("auto")
    await device.send_pcm(whole_frames(silence(0.6) + nihao() + silence(0.3)))
    await fake_provider.wait_held()
    assert device.pending_messages() == []

    await device.send_pcm(silence(1.5))
    stt = await device.next_message()  # while the agent is still held
    assert (stt["type"], stt["text"]) == ("stt", GREETING)
    fake_provider.release()
    messages = await answer_messages(device)

    assert kinds(messages)[0] == "start"
    assert "stt" not in kinds(messages)
    count = voice_session(runtime).endpointing.count
    assert (count.started, count.taken_back) == (1, 0)


@pytest.mark.usefixtures("lights")
@pytest.mark.parametrize("provider_subentries", ["control"], indirect=True)
async def test_a_guessed_tool_call_waits_for_the_end(
    ha_core: HomeAssistant, fake_provider: FakeProvider, device: SimulatedDevice
) -> None:
    """Our agent with tools is speculated on, but its tool call waits for End."""
    fake_provider.add_transcript(GREETING)
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}), ChatReply.text(ANSWER)
    )

    await device.listen_start("auto")
    await device.send_pcm(whole_frames(silence(0.6) + nihao() + silence(0.3)))
    await until(lambda: waiting_actions(ha_core) == 1)
    assert light_state(ha_core, "light.kitchen") == STATE_OFF

    await device.send_pcm(silence(1.5))
    messages = await answer_messages(device)

    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert stt_texts(messages) == [GREETING]
    assert waiting_actions(ha_core) == 0


@pytest.mark.usefixtures("lights")
@pytest.mark.parametrize("provider_subentries", ["control"], indirect=True)
async def test_a_guessed_tool_call_never_runs_when_taken_back(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    device: SimulatedDevice,
    runtime: DeviceRuntime,
) -> None:
    fake_provider.default_transcript = GREETING
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}), ChatReply.text(ANSWER)
    )

    await device.listen_start("auto")
    await device.send_pcm(whole_frames(silence(0.6) + nihao() + silence(0.45)))
    await until(lambda: waiting_actions(ha_core) == 1)
    fake_provider.default_transcript = TWICE
    await device.send_pcm(nihao() + silence(1.5))
    messages = await answer_messages(device)

    # The retake answered (the second reply) and the guess's tool never ran.
    assert stt_texts(messages) == [TWICE]
    assert light_state(ha_core, "light.kitchen") == STATE_OFF
    assert voice_session(runtime).endpointing.count.taken_back == 1
    assert waiting_actions(ha_core) == 0


# ---------------------------------------------------------------- manual mode


async def test_push_to_talk_ignores_pauses_and_ends_at_listen_stop(
    fake_provider: FakeProvider, device: SimulatedDevice, runtime: DeviceRuntime
) -> None:
    fake_provider.add_transcript(TWICE)
    fake_provider.add_reply(ChatReply.text(ANSWER))
    speech = silence(0.3) + nihao() + silence(1.0) + nihao() + silence(1.0)

    await device.listen_start("manual")
    await device.send_pcm(speech)
    await device.listen_stop()
    messages = await answer_messages(device)

    assert stt_texts(messages) == [TWICE]
    [upload] = fake_provider.transcriptions
    assert len(upload.pcm) >= len(speech) - FRAME_BYTES
    assert last_turn(runtime).listening is None
    assert voice_session(runtime).endpointing.count.started == 0


# ---------------------------------------------------------------- the parts


async def test_finished_speaking_keeps_its_meaning(ha_core: HomeAssistant) -> None:
    ha_core.states.async_set("select.finished", "relaxed")
    relaxed = finished_speaking_settings(ha_core, "select.finished")
    ha_core.states.async_set("select.finished", "aggressive")
    aggressive = finished_speaking_settings(ha_core, "select.finished")
    ha_core.states.async_set("select.finished", "unavailable")
    unavailable = finished_speaking_settings(ha_core, "select.finished")

    default = EndpointSettings.for_finished_speaking("default")
    assert aggressive.end_s < default.end_s < relaxed.end_s
    assert unavailable == default
    assert finished_speaking_settings(ha_core, None) == default


@pytest.mark.usefixtures("provider_entry")
async def test_only_runs_that_cannot_act_are_speculated_on(
    ha_core: HomeAssistant,
) -> None:
    chat = await async_create_default_pipeline(ha_core, STT_ENTITY, TTS_ENTITY, "C")
    assert chat is not None
    await async_update_pipeline(ha_core, chat, conversation_engine=AGENT_ENTITY)
    assert not run_may_act(ha_core, chat.id, None)

    # A follow-up goes to the agent that asked.
    with chat_session.async_get_chat_session(ha_core, None) as session:
        data = async_get_pipeline_conversation_data(ha_core, session)
        data.continue_conversation_agent = "conversation.home_assistant"
        assert run_may_act(ha_core, chat.id, session.conversation_id)
        data.continue_conversation_agent = None
        assert not run_may_act(ha_core, chat.id, session.conversation_id)

    # Sentence triggers run automations before the agent.
    async def answer(*_args: Any) -> str | None:
        return None

    unregister = get_agent_manager(ha_core).register_trigger(["灯"], answer)
    assert run_may_act(ha_core, chat.id, None)
    unregister()

    local = await async_create_default_pipeline(ha_core, STT_ENTITY, TTS_ENTITY, "L")
    assert local is not None
    await async_update_pipeline(
        ha_core, local, conversation_engine=AGENT_ENTITY, prefer_local_intents=True
    )
    assert run_may_act(ha_core, local.id, None)

    assistant = await async_create_default_pipeline(
        ha_core, STT_ENTITY, TTS_ENTITY, "A"
    )
    assert assistant is not None
    await async_update_pipeline(
        ha_core, assistant, conversation_engine="conversation.home_assistant"
    )
    assert run_may_act(ha_core, assistant.id, None)

    legacy = await async_create_default_pipeline(ha_core, STT_ENTITY, TTS_ENTITY, "X")
    assert legacy is not None
    await async_update_pipeline(ha_core, legacy, conversation_engine="some_entry_id")
    assert run_may_act(ha_core, legacy.id, None)
    assert run_may_act(ha_core, "no such pipeline", None)


@pytest.mark.parametrize("provider_subentries", ["control"], indirect=True)
@pytest.mark.usefixtures("provider_entry")
async def test_only_our_agent_with_control_holds_its_tool_calls(
    ha_core: HomeAssistant,
) -> None:
    ours = await async_create_default_pipeline(ha_core, STT_ENTITY, TTS_ENTITY, "O")
    assert ours is not None
    await async_update_pipeline(ha_core, ours, conversation_engine=AGENT_ENTITY)
    assert not run_may_act(ha_core, ours.id, None)

    ha_core.states.async_set(
        "conversation.elsewhere",
        "2026-12-02T00:00:00+00:00",
        {ATTR_SUPPORTED_FEATURES: ConversationEntityFeature.CONTROL},
    )
    other = await async_create_default_pipeline(ha_core, STT_ENTITY, TTS_ENTITY, "E")
    assert other is not None
    await async_update_pipeline(
        ha_core, other, conversation_engine="conversation.elsewhere"
    )
    assert run_may_act(ha_core, other.id, None)


async def test_held_actions_run_once_released_and_never_once_taken_back(
    ha_core: HomeAssistant,
) -> None:
    released = hold_actions(ha_core, "device-1")
    waiter = ha_core.async_create_task(async_until_committed(ha_core, "device-1"))
    await until(lambda: waiting_actions(ha_core) == 1)
    released.release()
    await waiter
    forget_held_actions(ha_core, "device-1", released)

    taken_back = hold_actions(ha_core, "device-1")
    waiter = ha_core.async_create_task(async_until_committed(ha_core, "device-1"))
    await until(lambda: waiting_actions(ha_core) == 1)
    taken_back.take_back()
    with pytest.raises(TakenBackError):
        await waiter
    forget_held_actions(ha_core, "device-1", released)  # not the held one: kept
    forget_held_actions(ha_core, "device-1", taken_back)
    await async_until_committed(ha_core, "device-1")  # nothing held: at once
    await async_until_committed(ha_core, None)


async def test_without_the_model_hass_vad_ends_utterances(
    ha_core: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    def broken() -> SpeechModel:
        raise OSError("model file missing")

    endpointing = SessionEndpointing(broken)
    assert (
        endpointing.listening(EndpointSettings.for_finished_speaking("default")) is None
    )
    assert not await endpointing.async_load(ha_core)
    assert "model file missing" in caplog.text
    assert (
        endpointing.listening(EndpointSettings.for_finished_speaking("default")) is None
    )


async def test_one_detector_per_session_follows_the_select(
    ha_core: HomeAssistant,
) -> None:
    endpointing = SessionEndpointing()
    assert await endpointing.async_load(ha_core)
    default = EndpointSettings.for_finished_speaking("default")
    first = endpointing.listening(default)
    again = endpointing.listening(default)
    relaxed = endpointing.listening(EndpointSettings.for_finished_speaking("relaxed"))
    assert first is not None
    assert again is not None
    assert relaxed is not None
    assert again.endpointer is first.endpointer
    assert relaxed.endpointer is not first.endpointer
    assert relaxed.endpointer.settings.end_s == 1.25
    assert await endpointing.async_load(ha_core)  # loaded once


def test_the_heard_audio_is_bounded() -> None:
    endpointer = Endpointer(
        EndpointSettings.for_finished_speaking("default"), silero_model()
    )
    listening = Listening(endpointer, SpeculationCount())
    one_second = silence(1.0)
    for _ in range(31):
        listening.record(one_second)
    assert len(listening.frames) == 30
