"""Conversation agent against the local OpenAI-compatible server, through HA's real paths."""

import asyncio
from collections.abc import AsyncIterator
import dataclasses
from dataclasses import dataclass, field
import gc
import json
import logging
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components import conversation
from homeassistant.components.conversation.agent_manager import async_get_agent
from homeassistant.config_entries import ConfigEntryState, ConfigSubentryData
from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT, STATE_OFF, STATE_ON
from homeassistant.core import Context, HomeAssistant
from homeassistant.helpers import device_registry as dr, entity_registry as er, intent
from homeassistant.helpers.chat_session import async_get_chat_session

from custom_components.xiaozhi import conversation as xiaozhi_conversation
from custom_components.xiaozhi.const import (
    CONF_MAX_TOKENS,
    CONF_MODEL,
    CONF_TEMPERATURE,
    DOMAIN,
    MAX_TOOL_ROUNDS,
    SUBENTRY_CONVERSATION,
)
from custom_components.xiaozhi.conversation import (
    TRANSLATED_LANGUAGES,
    translation_language,
)
from fake_provider import (
    CHAT_PATH,
    ChatQuirks,
    ChatReply,
    ErrorEvent,
    FakeProvider,
    ReasoningDelta,
    TextDelta,
    ToolCall,
)
from tests.helpers.providers import provider_entry_data
from tests.helpers.translations import TRANSLATIONS_DIR, message

AGENT_ID = "conversation.xiaozhi_conversation"
# Assist tools are named after the integration that provides them.
# Assist and the device tools are selected together: Home Assistant prefixes names.
TURN_ON = "assist__intent__HassTurnOn"
# Keys of the messages the agent speaks when something goes wrong.
MESSAGE_KEYS = (
    "invalid_auth",
    "rate_limited",
    "provider_timeout",
    "provider_unreachable",
    "connection_lost",
    "provider_error",
    "empty_response",
    "tool_round_limit",
)


@dataclass
class Turn:
    """One conversation turn run the way the assist pipeline runs it."""

    result: conversation.ConversationResult
    chat_log: conversation.ChatLog
    deltas: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speech(self) -> str:
        speech: str = self.result.response.speech["plain"]["speech"]
        return speech

    @property
    def streamed_text(self) -> str:
        """Return the assistant text a streaming TTS would have spoken."""
        role = None
        parts = []
        for delta in self.deltas:
            role = delta.get("role", role)
            if role == "assistant" and delta.get("content"):
                parts.append(delta["content"])
        return "|".join(parts)


async def converse(
    hass: HomeAssistant,
    text: str,
    conversation_id: str | None = None,
    language: str | None = None,
) -> conversation.ConversationResult:
    return await conversation.async_converse(
        hass, text, conversation_id, Context(), language=language, agent_id=AGENT_ID
    )


async def pipeline_turn(
    hass: HomeAssistant, text: str, language: str | None = None
) -> Turn:
    """Converse inside a chat log opened by the caller, like assist_pipeline.

    The caller's chat log outlives a failed turn, and its delta listener sees
    what a streaming TTS would speak.
    """
    deltas: list[dict[str, Any]] = []
    with (
        async_get_chat_session(hass) as session,
        conversation.async_get_chat_log(
            hass,
            session,
            chat_log_delta_listener=lambda _log, delta: deltas.append(delta),
        ) as chat_log,
    ):
        result = await converse(hass, text, session.conversation_id, language)
    return Turn(result, chat_log, deltas)


def assert_error(result: conversation.ConversationResult, text: str) -> None:
    assert result.response.response_type is intent.IntentResponseType.ERROR
    assert result.response.error_code is intent.IntentResponseErrorCode.UNKNOWN
    assert result.response.speech["plain"]["speech"] == text


def error_logs(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


def assistant_contents(
    chat_log: conversation.ChatLog,
) -> list[conversation.AssistantContent]:
    return [c for c in chat_log.content if isinstance(c, conversation.AssistantContent)]


@pytest.fixture(autouse=True)
async def finish_closing_sdk_generators() -> AsyncIterator[None]:
    """Let asyncio finish closing what the openai SDK leaves open after a stream.

    The SDK stops reading at ``[DONE]`` (or at an error event) without closing
    its SSE reader; asyncio then closes the eight nested generators under it one
    task at a time, after a garbage collection when an exception holds them.
    Still running at the end of a test, such a task is reported as lingering.
    """
    yield
    gc.collect()
    for _ in range(100):
        await asyncio.sleep(0)


def light_state(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None
    return state.state


# -- the entity ----------------------------------------------------------------


async def test_agent_entity_describes_its_subentry(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    subentry = next(
        s
        for s in provider_entry.subentries.values()
        if s.subentry_type == SUBENTRY_CONVERSATION
    )
    entity = er.async_get(ha_core).async_get(AGENT_ID)
    assert entity is not None
    assert entity.unique_id == subentry.subentry_id
    assert entity.config_subentry_id == subentry.subentry_id
    device = dr.async_get(ha_core).async_get(entity.device_id or "")
    assert isinstance(device, dr.DeviceEntry)
    assert device.name == subentry.title
    assert device.model == subentry.data[CONF_MODEL]
    state = ha_core.states.get(AGENT_ID)
    assert state is not None
    assert (
        state.attributes["supported_features"]
        == conversation.ConversationEntityFeature.CONTROL
    )
    info = conversation.async_get_agent_info(ha_core, AGENT_ID)
    assert info is not None
    assert info.supports_streaming
    agent = async_get_agent(ha_core, AGENT_ID)
    assert isinstance(agent, xiaozhi_conversation.XiaozhiConversationEntity)
    assert agent.supported_languages == "*"
    # Also reachable by entry id, the legacy way.
    assert async_get_agent(ha_core, provider_entry.entry_id) is agent


async def test_unloading_unregisters_the_agent(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    assert await ha_core.config_entries.async_unload(provider_entry.entry_id)
    await ha_core.async_block_till_done()

    assert provider_entry.state is ConfigEntryState.NOT_LOADED
    assert async_get_agent(ha_core, provider_entry.entry_id) is None
    assert async_get_agent(ha_core, AGENT_ID) is None


# -- answers ---------------------------------------------------------------------


async def test_plain_answer_is_streamed(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.add_reply(ChatReply.text("Hello there, friend.", chunk=5))

    turn = await pipeline_turn(ha_core, "Hi!")

    assert turn.speech == "Hello there, friend."
    assert turn.result.response.response_type is intent.IntentResponseType.ACTION_DONE
    # The listener saw the answer in the pieces the service sent.
    assert turn.streamed_text == "Hello| ther|e, fr|iend."
    request = fake_provider.chat_requests[-1]
    subentry_data = next(
        s.data
        for s in provider_entry.subentries.values()
        if s.subentry_type == SUBENTRY_CONVERSATION
    )
    assert request["model"] == subentry_data[CONF_MODEL]
    assert request["stream"] is True
    assert "stream_options" not in request
    assert request["temperature"] == subentry_data[CONF_TEMPERATURE]
    assert request["max_tokens"] == subentry_data[CONF_MAX_TOKENS]
    assert "max_completion_tokens" not in request
    assert [m["role"] for m in request["messages"]] == ["system", "user"]
    assert request["messages"][1]["content"] == "Hi!"
    tool_names = {tool["function"]["name"] for tool in request["tools"]}
    assert TURN_ON in tool_names
    assert all(tool["type"] == "function" for tool in request["tools"])
    assert not error_logs(caplog)


async def test_prompt_and_extra_system_prompt_reach_the_model(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    subentry = next(
        s
        for s in provider_entry.subentries.values()
        if s.subentry_type == SUBENTRY_CONVERSATION
    )
    ha_core.config_entries.async_update_subentry(
        provider_entry,
        subentry,
        data={**subentry.data, CONF_PROMPT: "You are {{ ha_name }}'s helper."},
    )
    await ha_core.async_block_till_done()

    await conversation.async_converse(
        ha_core,
        "Hi",
        None,
        Context(),
        agent_id=AGENT_ID,
        extra_system_prompt="The user is in the kitchen.",
    )

    system = fake_provider.chat_requests[-1]["messages"][0]
    assert system["role"] == "system"
    assert system["content"].startswith(
        f"You are {ha_core.config.location_name}'s helper."
    )
    assert system["content"].endswith("The user is in the kitchen.")


async def test_thinking_is_kept_apart_and_not_spoken(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    fake_provider.add_reply(
        ChatReply.text("答案是四。", reasoning="二加二等于四", chunk=2)
    )

    turn = await pipeline_turn(ha_core, "二加二是多少？")

    assert turn.speech == "答案是四。"
    assert turn.streamed_text == "答案|是四|。"
    answer = assistant_contents(turn.chat_log)[-1]
    assert answer.content == "答案是四。"
    assert answer.thinking_content == "二加二等于四"
    thinking = "".join(d.get("thinking_content", "") for d in turn.deltas)
    assert thinking == "二加二等于四"


async def test_follow_up_sees_earlier_turns(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    fake_provider.add_reply(
        ChatReply.text("Paris.", reasoning="Capital of France."),
        ChatReply.text("About two million."),
    )

    first = await converse(ha_core, "What is the capital of France?")
    second = await converse(
        ha_core, "How many people live there?", first.conversation_id
    )

    assert second.conversation_id == first.conversation_id
    assert second.response.speech["plain"]["speech"] == "About two million."
    messages = fake_provider.chat_requests[-1]["messages"]
    assert [(m["role"], m.get("content")) for m in messages[1:]] == [
        ("user", "What is the capital of France?"),
        ("assistant", "Paris."),
        ("user", "How many people live there?"),
    ]
    # Thinking of a plain answer is not sent back.
    assert "reasoning_content" not in messages[2]


async def test_new_conversation_does_not_see_other_turns(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    await converse(ha_core, "Remember 42.")
    await converse(ha_core, "What number?")

    messages = fake_provider.chat_requests[-1]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]


# -- tools -------------------------------------------------------------------------


async def test_tool_call_turns_on_a_light_then_answers(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}, text="OK,", chunk=4),
        ChatReply.text("The kitchen light is on."),
    )

    turn = await pipeline_turn(ha_core, "Turn on the kitchen light")

    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert light_state(ha_core, "light.hall") == STATE_OFF
    assert turn.speech == "The kitchen light is on."
    assert turn.result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert [s.entity_id for s in turn.result.response.matched_states] == [
        "light.kitchen"
    ]
    # Text before the call and the answer after it are separate messages.
    assert turn.streamed_text == "OK,|The |kitc|hen |ligh|t is| on."
    second = fake_provider.chat_requests[1]["messages"]
    assert second[-2] == {
        "role": "assistant",
        "content": "OK,",
        "tool_calls": [
            {
                "id": "call_0",
                "type": "function",
                "function": {"name": TURN_ON, "arguments": '{"name":"Kitchen"}'},
            }
        ],
    }
    assert second[-1]["role"] == "tool"
    assert second[-1]["tool_call_id"] == "call_0"
    result = json.loads(second[-1]["content"])
    assert result["error"] is False
    assert result["data"]["response_type"] == "action_done"
    assert result["data"]["data"]["success"] == [
        {"name": "Kitchen", "type": "entity", "id": "light.kitchen"}
    ]
    assert len(fake_provider.chat_requests) == 2


@pytest.mark.parametrize("chunk", [3, None], ids=["fragments", "one-piece"])
async def test_parallel_tool_calls_all_run(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
    chunk: int | None,
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_calls(
            ToolCall(TURN_ON, {"name": "Kitchen"}),
            ToolCall(TURN_ON, {"name": "Hall"}),
            chunk=chunk,
        ),
        ChatReply.text("Both are on."),
    )

    result = await converse(ha_core, "Turn on the kitchen and the hall")

    assert result.response.speech["plain"]["speech"] == "Both are on."
    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert light_state(ha_core, "light.hall") == STATE_ON
    messages = fake_provider.chat_requests[1]["messages"]
    calls = messages[-3]["tool_calls"]
    assert [(c["id"], json.loads(c["function"]["arguments"])) for c in calls] == [
        ("call_0", {"name": "Kitchen"}),
        ("call_1", {"name": "Hall"}),
    ]
    assert [(m["role"], m["tool_call_id"]) for m in messages[-2:]] == [
        ("tool", "call_0"),
        ("tool", "call_1"),
    ]


async def test_thinking_behind_a_tool_call_is_sent_back(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
) -> None:
    call = ToolCall(TURN_ON, {"name": "Hall"})
    fake_provider.add_reply(
        ChatReply(
            [ReasoningDelta("Use the "), ReasoningDelta("tool."), *call.deltas(0)]
        ),
        ChatReply.text("Done."),
    )

    await converse(ha_core, "Hall light on")

    assistant = fake_provider.chat_requests[1]["messages"][-2]
    assert assistant["reasoning_content"] == "Use the tool."
    assert "content" not in assistant
    assert light_state(ha_core, "light.hall") == STATE_ON


async def test_invalid_tool_arguments_are_answered_with_an_error(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, '{"name": "Kitch'),
        ChatReply.text("Sorry, let me retry."),
    )

    result = await converse(ha_core, "Kitchen on")

    assert result.response.speech["plain"]["speech"] == "Sorry, let me retry."
    assert light_state(ha_core, "light.kitchen") == STATE_OFF
    tool_message = fake_provider.chat_requests[1]["messages"][-1]
    assert tool_message["tool_call_id"] == "call_0"
    assert json.loads(tool_message["content"]) == {
        "data": {
            "error": "InvalidToolCall",
            "error_text": 'The arguments are not a JSON object: {"name": "Kitch',
        },
        "error": True,
    }


async def test_tool_rounds_are_limited_and_the_answer_says_so(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
) -> None:
    fake_provider.add_reply(
        *[
            ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}, call_id=f"c{n}")
            for n in range(MAX_TOOL_ROUNDS)
        ],
        ChatReply.text("never asked for"),
    )

    turn = await pipeline_turn(ha_core, "Keep going")

    expected = message("tool_round_limit", rounds=str(MAX_TOOL_ROUNDS))
    assert turn.speech == expected
    assert turn.result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert turn.streamed_text.endswith(expected)
    assert len(fake_provider.chat_requests) == MAX_TOOL_ROUNDS
    assert fake_provider.pending_replies == 1


async def test_agent_without_llm_api_sends_no_tools(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Fake service",
        unique_id=fake_provider.base_url,
        data=provider_entry_data(fake_provider, audio=False),
        subentries_data=[
            ConfigSubentryData(
                subentry_type=SUBENTRY_CONVERSATION,
                title="Chatty",
                data={CONF_MODEL: "gpt-4o-mini", CONF_LLM_HASS_API: []},
                unique_id=None,
            )
        ],
    )
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()

    result = await conversation.async_converse(
        ha_core, "Hi", None, Context(), agent_id="conversation.chatty"
    )

    assert result.response.speech["plain"]["speech"] == "OK."
    state = ha_core.states.get("conversation.chatty")
    assert state is not None
    assert state.attributes["supported_features"] == 0
    request = fake_provider.chat_requests[-1]
    assert "tools" not in request
    assert request["temperature"] == 0.7
    assert request["max_tokens"] == 1024
    assert await ha_core.config_entries.async_unload(entry.entry_id)


async def test_unknown_llm_api_is_reported_without_calling_the_model(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Fake service",
        data=provider_entry_data(fake_provider, audio=False),
        subentries_data=[
            ConfigSubentryData(
                subentry_type=SUBENTRY_CONVERSATION,
                title="Lost",
                data={CONF_MODEL: "gpt-4o-mini", CONF_LLM_HASS_API: ["gone"]},
                unique_id=None,
            )
        ],
    )
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()

    result = await conversation.async_converse(
        ha_core, "Hi", None, Context(), agent_id="conversation.lost"
    )

    assert_error(result, "Error preparing LLM API")
    assert fake_provider.chat_requests == []
    assert await ha_core.config_entries.async_unload(entry.entry_id)


async def test_openai_preset_uses_max_completion_tokens(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    provider_subentries: list[ConfigSubentryData],
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="OpenAI",
        data={**provider_entry_data(fake_provider), "preset": "openai"},
        subentries_data=provider_subentries,
    )
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()

    await converse(ha_core, "Hi")

    request = fake_provider.chat_requests[-1]
    assert request["max_completion_tokens"] == 1024
    assert "max_tokens" not in request
    assert await ha_core.config_entries.async_unload(entry.entry_id)


# -- roughly compatible services ---------------------------------------------------

QUIRKS = [quirk.name for quirk in dataclasses.fields(ChatQuirks)]


def quirks_on(provider: FakeProvider, names: list[str]) -> None:
    for name in names:
        setattr(provider.chat_quirks, name, True)


@pytest.mark.parametrize(
    "quirks", [[name] for name in QUIRKS] + [QUIRKS], ids=[*QUIRKS, "all"]
)
async def test_a_roughly_compatible_service_answers_in_full_and_runs_tools(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
    caplog: pytest.LogCaptureFixture,
    quirks: list[str],
) -> None:
    """Each way a service departs from OpenAI's stream, through the real agent."""
    quirks_on(fake_provider, quirks)
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}, text="OK,", chunk=4),
        ChatReply.text("The kitchen light is on.", reasoning="Done.", chunk=3),
    )

    turn = await pipeline_turn(ha_core, "Turn on the kitchen light")

    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert light_state(ha_core, "light.hall") == STATE_OFF
    assert turn.speech == "The kitchen light is on."
    assert turn.result.response.response_type is intent.IntentResponseType.ACTION_DONE
    assert turn.streamed_text.replace("|", "") == "OK,The kitchen light is on."
    answers = assistant_contents(turn.chat_log)
    assert [a.content for a in answers] == ["OK,", "The kitchen light is on."]
    assert answers[-1].thinking_content == "Done."
    second = fake_provider.chat_requests[1]["messages"]
    assert [call["id"] for call in second[-2]["tool_calls"]] == ["call_0"]
    assert json.loads(second[-1]["content"])["error"] is False
    assert all(request["stream"] is True for request in fake_provider.chat_requests)
    assert not error_logs(caplog)
    assert "Chat request of" not in caplog.text


async def test_a_service_that_cannot_stream_runs_parallel_tools_and_keeps_thinking(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
) -> None:
    """One JSON completion per request: its calls, thinking and text all count."""
    fake_provider.chat_quirks.ignore_stream = True
    call_kitchen, call_hall = (
        ToolCall(TURN_ON, {"name": "Kitchen"}),
        ToolCall(TURN_ON, {"name": "Hall"}),
    )
    fake_provider.add_reply(
        ChatReply(
            [ReasoningDelta("Both."), *call_kitchen.deltas(0), *call_hall.deltas(1)]
        ),
        ChatReply.text("Both are on."),
    )

    turn = await pipeline_turn(ha_core, "Turn on the kitchen and the hall")

    assert turn.speech == "Both are on."
    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert light_state(ha_core, "light.hall") == STATE_ON
    assistant = fake_provider.chat_requests[1]["messages"][-3]
    assert assistant["reasoning_content"] == "Both."
    assert [c["id"] for c in assistant["tool_calls"]] == ["call_0", "call_1"]
    assert fake_provider.streams[0].completed


async def test_a_completion_without_an_answer_is_the_empty_answer_message(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A JSON completion of only thinking is handled like a streamed one."""
    fake_provider.chat_quirks.ignore_stream = True
    fake_provider.add_reply(
        ChatReply([ReasoningDelta("Hmm...")], finish_reason="length")
    )

    turn = await pipeline_turn(ha_core, "Hi")

    assert_error(turn.result, message("empty_response"))
    assert "no answer from the model (finish reason: length)" in caplog.text


# -- failures ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "key"),
    [(429, "rate_limited"), (500, "provider_error"), (400, "provider_error")],
)
async def test_request_failure_is_said_and_raised(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    status: int,
    key: str,
) -> None:
    # One retry for what is worth retrying: script the failure twice.
    fake_provider.add_reply(ChatReply.error(status), ChatReply.error(status))

    turn = await pipeline_turn(ha_core, "Hi")

    assert_error(turn.result, message(key))
    assert turn.streamed_text == message(key)
    assert not error_logs(caplog)
    assert "Chat request of conversation.xiaozhi_conversation failed" in caplog.text
    assert len(fake_provider.chat_requests) == (1 if status == 400 else 2)


async def test_one_server_error_is_retried_quietly(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    fake_provider.add_reply(ChatReply.error(503), ChatReply.text("Fine."))

    result = await converse(ha_core, "Hi")

    assert result.response.speech["plain"]["speech"] == "Fine."
    assert len(fake_provider.chat_requests) == 2


async def test_rejected_key_starts_reauth(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.fail_next(CHAT_PATH, 401, code="invalid_api_key")

    result = await converse(ha_core, "Hi")
    await ha_core.async_block_till_done()

    assert_error(result, message("invalid_auth"))
    flows = ha_core.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [(f["context"]["source"], f["context"]["entry_id"]) for f in flows] == [
        ("reauth", provider_entry.entry_id)
    ]
    assert not error_logs(caplog)


async def test_unreachable_service(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    await fake_provider.stop()

    result = await converse(ha_core, "Hi")

    assert_error(result, message("provider_unreachable"))


async def test_connection_drop_mid_stream_keeps_the_partial_answer(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.add_reply(
        ChatReply.text("The weather is sunny today.", chunk=4, disconnect_after=3)
    )

    turn = await pipeline_turn(ha_core, "Weather?")

    assert_error(turn.result, message("connection_lost"))
    answers = assistant_contents(turn.chat_log)
    assert [a.content for a in answers] == [
        "The weather ",
        message("connection_lost"),
    ]
    assert turn.streamed_text == f"The |weat|her |{message('connection_lost')}"
    assert fake_provider.streams[-1].server_aborted
    assert not error_logs(caplog)


async def test_error_event_mid_stream(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    fake_provider.add_reply(
        ChatReply([TextDelta("Let me "), ErrorEvent("Overloaded"), TextDelta("x")])
    )

    turn = await pipeline_turn(ha_core, "Hi")

    assert_error(turn.result, message("provider_error"))
    assert [a.content for a in assistant_contents(turn.chat_log)] == [
        "Let me ",
        message("provider_error"),
    ]


async def test_stalled_stream_times_out(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Long enough for the request itself on a busy machine; the hold is endless.
    monkeypatch.setattr(xiaozhi_conversation, "REQUEST_TIMEOUT", 2.0)
    fake_provider.add_reply(ChatReply.text("Slow answer", hold_after=1))

    turn = await pipeline_turn(ha_core, "Hi")

    assert_error(turn.result, message("provider_timeout"))
    assert [a.content for a in assistant_contents(turn.chat_log)] == [
        "Slow",
        message("provider_timeout"),
    ]
    closed = await fake_provider.wait_stream_closed()
    assert closed.client_closed
    assert not closed.completed


async def test_failure_after_a_tool_ran_keeps_the_tool_result(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    lights: list[str],
) -> None:
    fake_provider.add_reply(
        ChatReply.tool_call(TURN_ON, {"name": "Kitchen"}),
        ChatReply.error(502),
        ChatReply.error(502),
    )

    turn = await pipeline_turn(ha_core, "Kitchen on")

    assert light_state(ha_core, "light.kitchen") == STATE_ON
    assert_error(turn.result, message("provider_error"))
    roles = [c.role for c in turn.chat_log.content]
    assert roles == ["system", "user", "assistant", "tool_result", "assistant"]


async def test_answer_of_only_thinking_is_an_error(
    ha_core: HomeAssistant,
    provider_entry: MockConfigEntry,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake_provider.add_reply(
        ChatReply([ReasoningDelta("Hmm...")], finish_reason="length")
    )

    turn = await pipeline_turn(ha_core, "Hi")

    assert_error(turn.result, message("empty_response"))
    assert "no answer from the model (finish reason: length)" in caplog.text
    assert not error_logs(caplog)


async def test_errors_are_said_in_the_conversation_language(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    fake_provider.add_reply(ChatReply.error(429), ChatReply.error(429))

    result = await converse(ha_core, "你好", language="zh-cn")

    assert_error(result, message("rate_limited", "zh-Hans"))


# -- cancellation ------------------------------------------------------------------


async def test_cancelling_the_turn_closes_the_stream(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry, fake_provider: FakeProvider
) -> None:
    fake_provider.add_reply(ChatReply.text("A long answer that is cut", hold_after=2))

    task = asyncio.create_task(converse(ha_core, "Tell me a story"))
    held = await fake_provider.wait_held()
    task.cancel()
    closed = await fake_provider.wait_stream_closed()

    assert closed is held
    assert closed.client_closed
    assert not closed.completed
    assert closed.events_sent == 2
    with pytest.raises(asyncio.CancelledError):
        await task


# -- translations ------------------------------------------------------------------


def test_messages_exist_in_every_shipped_language() -> None:
    shipped = sorted(path.stem for path in TRANSLATIONS_DIR.glob("*.json"))
    assert sorted(TRANSLATED_LANGUAGES) == shipped
    english = json.loads((TRANSLATIONS_DIR / "en.json").read_text())["exceptions"]
    for language in TRANSLATED_LANGUAGES:
        for key in MESSAGE_KEYS:
            text = message(key, language, rounds="3")
            assert text
            assert ("{" in english[key]["message"]) == ("3" in text), (language, key)


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("zh-cn", "zh-Hans"),
        ("zh-Hans", "zh-Hans"),
        ("zh", "zh-Hans"),
        ("en-US", "en"),
        ("de", "en"),
        ("", "en"),
        (None, "en"),
    ],
)
def test_translation_language(language: str | None, expected: str) -> None:
    assert translation_language(language) == expected
