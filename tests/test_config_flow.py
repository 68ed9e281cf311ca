"""Config flow, reauth, reconfigure, setup and subentry flows against a real local service."""

import logging
import socket
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.config_entries import (
    SOURCE_USER,
    ConfigEntryState,
    ConfigFlowResult,
    SubentryFlowResult,
)
from homeassistant.const import CONF_API_KEY, CONF_LLM_HASS_API, CONF_NAME, CONF_PROMPT
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.helpers import llm

from custom_components.xiaozhi.config_flow import XiaozhiConfigFlow
from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_INSTRUCTIONS,
    CONF_LANGUAGE,
    CONF_MAX_TOKENS,
    CONF_MODEL,
    CONF_PRESET,
    CONF_SPEED,
    CONF_SUPPORTS_AUDIO,
    CONF_TEMPERATURE,
    CONF_VISION_MODEL,
    CONF_VOICE,
    DEVICE_TOOLS_API_ID,
    DOMAIN,
    SUBENTRY_CONVERSATION,
    SUBENTRY_STT,
    SUBENTRY_TTS,
)
from fake_provider import FakeProvider
from tests.helpers.providers import provider_entry_data


def closed_port_url() -> str:
    """Return a URL on 127.0.0.1 where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/v1"


async def start_flow(hass: HomeAssistant, preset: str) -> ConfigFlowResult:
    result = await hass.config_entries.flow.async_init(
        DOMAIN, context={"source": SOURCE_USER}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "user"
    result = await hass.config_entries.flow.async_configure(
        result["flow_id"], {CONF_PRESET: preset}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "connect"
    return result


def schema_of(result: ConfigFlowResult) -> dict[str, Any]:
    """The fields of a form, by name."""
    schema = result["data_schema"]
    assert schema is not None
    return {str(key): key for key in schema.schema}


def state_of(entry: MockConfigEntry) -> ConfigEntryState:
    """The entry's state now (read through a call: it changes while a test awaits)."""
    state: ConfigEntryState = entry.state
    return state


def subentry_types(entry: Any) -> list[str]:
    return sorted(s.subentry_type for s in entry.subentries.values())


async def test_known_preset_creates_entry_with_audio_subentries(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    result = await start_flow(ha_core, "openai")
    schema_keys = schema_of(result)
    assert schema_keys[CONF_BASE_URL].default() == "https://api.openai.com/v1"
    assert CONF_SUPPORTS_AUDIO not in schema_keys

    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_BASE_URL: fake_provider.base_url + "/",
            CONF_API_KEY: fake_provider.api_key,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "OpenAI"
    entry = result["result"]
    assert entry.unique_id == fake_provider.base_url
    assert entry.data[CONF_BASE_URL] == fake_provider.base_url
    assert entry.data[CONF_SUPPORTS_AUDIO] is True
    assert subentry_types(entry) == [SUBENTRY_CONVERSATION, SUBENTRY_STT, SUBENTRY_TTS]
    conversation = next(
        s for s in entry.subentries.values() if s.subentry_type == SUBENTRY_CONVERSATION
    )
    # Assist, and the abilities of the device the agent speaks through.
    assert conversation.data[CONF_LLM_HASS_API] == [
        llm.LLM_API_ASSIST,
        DEVICE_TOOLS_API_ID,
    ]
    assert conversation.data[CONF_VISION_MODEL] == "gpt-4o-mini"
    await ha_core.async_block_till_done()
    assert entry.state is ConfigEntryState.LOADED
    assert entry.runtime_data.models == sorted(fake_provider.models)


async def test_preset_without_audio_gets_only_conversation(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    result = await start_flow(ha_core, "deepseek")
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_BASE_URL: fake_provider.base_url, CONF_API_KEY: fake_provider.api_key},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert subentry_types(result["result"]) == [SUBENTRY_CONVERSATION]
    # DeepSeek has no model that sees: photos go to the chat model or AI tasks.
    [conversation] = result["result"].subentries.values()
    assert CONF_VISION_MODEL not in conversation.data


@pytest.mark.parametrize(("audio", "expected"), [(False, 1), (True, 3)])
async def test_custom_server_asks_about_audio(
    ha_core: HomeAssistant, fake_provider: FakeProvider, audio: bool, expected: int
) -> None:
    fake_provider.models = ["local-llm", "whisper-1"]
    result = await start_flow(ha_core, "custom")
    assert CONF_SUPPORTS_AUDIO in schema_of(result)
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_BASE_URL: fake_provider.base_url,
            CONF_API_KEY: fake_provider.api_key,
            CONF_SUPPORTS_AUDIO: audio,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == fake_provider.base_url.split("/")[2]
    entry = result["result"]
    assert len(entry.subentries) == expected
    conversation = next(
        s for s in entry.subentries.values() if s.subentry_type == SUBENTRY_CONVERSATION
    )
    # The default chat model is not offered by this server: take one it offers.
    assert conversation.data[CONF_MODEL] == "local-llm"


@pytest.mark.parametrize(
    ("breakage", "error"),
    [("key", "invalid_auth"), ("url", "cannot_connect"), ("500", "unknown")],
)
async def test_connect_errors_then_recover(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    caplog: pytest.LogCaptureFixture,
    breakage: str,
    error: str,
) -> None:
    result = await start_flow(ha_core, "openai")
    good = {CONF_BASE_URL: fake_provider.base_url, CONF_API_KEY: fake_provider.api_key}
    bad = dict(good)
    if breakage == "key":
        bad[CONF_API_KEY] = "sk-wrong"
    elif breakage == "url":
        bad[CONF_BASE_URL] = closed_port_url()
    else:
        fake_provider.fail_next("/v1/models", 500)
    with caplog.at_level(logging.ERROR):
        result = await ha_core.config_entries.flow.async_configure(
            result["flow_id"], bad
        )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": error}
    assert ("Unexpected error validating" in caplog.text) is (error == "unknown")

    result = await ha_core.config_entries.flow.async_configure(result["flow_id"], good)
    assert result["type"] is FlowResultType.CREATE_ENTRY


async def test_service_without_models_endpoint_is_accepted(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    fake_provider.fail_next("/v1/models", 404)
    result = await start_flow(ha_core, "zhipu")
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {CONF_BASE_URL: fake_provider.base_url, CONF_API_KEY: fake_provider.api_key},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    conversation = next(
        s
        for s in result["result"].subentries.values()
        if s.subentry_type == SUBENTRY_CONVERSATION
    )
    assert conversation.data[CONF_MODEL] == "glm-4-flash"


async def test_same_service_twice_aborts(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    MockConfigEntry(
        domain=DOMAIN,
        unique_id=fake_provider.base_url,
        data=provider_entry_data(fake_provider),
    ).add_to_hass(ha_core)
    result = await start_flow(ha_core, "custom")
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_BASE_URL: fake_provider.base_url + "/",
            CONF_API_KEY: fake_provider.api_key,
            CONF_SUPPORTS_AUDIO: False,
        },
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"


async def test_setup_auth_failure_starts_reauth_and_reauth_fixes_it(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    data = provider_entry_data(fake_provider) | {CONF_API_KEY: "sk-rotated-away"}
    entry = MockConfigEntry(domain=DOMAIN, unique_id=fake_provider.base_url, data=data)
    entry.add_to_hass(ha_core)
    assert not await ha_core.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_ERROR
    flows = ha_core.config_entries.flow.async_progress_by_handler(DOMAIN)
    assert [flow["context"]["source"] for flow in flows] == ["reauth"]

    flow_id = flows[0]["flow_id"]
    result = await ha_core.config_entries.flow.async_configure(
        flow_id, {CONF_API_KEY: "sk-still-wrong"}
    )
    assert result["type"] is FlowResultType.FORM
    assert result["errors"] == {"base": "invalid_auth"}
    result = await ha_core.config_entries.flow.async_configure(
        flow_id, {CONF_API_KEY: fake_provider.api_key}
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reauth_successful"
    await ha_core.async_block_till_done()
    assert entry.data[CONF_API_KEY] == fake_provider.api_key
    assert state_of(entry) is ConfigEntryState.LOADED


async def test_setup_unreachable_retries(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    data = provider_entry_data(fake_provider) | {CONF_BASE_URL: closed_port_url()}
    entry = MockConfigEntry(domain=DOMAIN, data=data)
    entry.add_to_hass(ha_core)
    assert not await ha_core.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.SETUP_RETRY


async def test_reconfigure(
    ha_core: HomeAssistant, fake_provider: FakeProvider, provider_entry: MockConfigEntry
) -> None:
    other = MockConfigEntry(
        domain=DOMAIN,
        unique_id="http://other.example/v1",
        data=provider_entry_data(fake_provider)
        | {CONF_BASE_URL: "http://other.example/v1"},
    )
    other.add_to_hass(ha_core)

    result = await provider_entry.start_reconfigure_flow(ha_core)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "reconfigure"

    # Pointing at a service another entry already has is refused.
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_BASE_URL: "http://other.example/v1",
            CONF_API_KEY: fake_provider.api_key,
            CONF_SUPPORTS_AUDIO: True,
        },
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "already_configured"

    result = await provider_entry.start_reconfigure_flow(ha_core)
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_BASE_URL: fake_provider.base_url,
            CONF_API_KEY: "sk-wrong",
            CONF_SUPPORTS_AUDIO: True,
        },
    )
    assert result["errors"] == {"base": "invalid_auth"}
    result = await ha_core.config_entries.flow.async_configure(
        result["flow_id"],
        {
            CONF_BASE_URL: fake_provider.base_url + "/",
            CONF_API_KEY: fake_provider.api_key,
            CONF_SUPPORTS_AUDIO: False,
        },
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    await ha_core.async_block_till_done()
    assert provider_entry.data[CONF_SUPPORTS_AUDIO] is False
    assert provider_entry.state is ConfigEntryState.LOADED


async def test_unload(ha_core: HomeAssistant, provider_entry: MockConfigEntry) -> None:
    assert await ha_core.config_entries.async_unload(provider_entry.entry_id)
    assert provider_entry.state is ConfigEntryState.NOT_LOADED


async def start_subentry_flow(
    hass: HomeAssistant, entry: MockConfigEntry, subentry_type: str
) -> SubentryFlowResult:
    return await hass.config_entries.subentries.async_init(
        (entry.entry_id, subentry_type), context={"source": SOURCE_USER}
    )


async def test_conversation_subentry_new_and_reconfigure(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    result = await start_subentry_flow(ha_core, provider_entry, SUBENTRY_CONVERSATION)
    assert result["type"] is FlowResultType.FORM
    assert result["step_id"] == "init"
    result = await ha_core.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Kitchen helper",
            CONF_MODEL: "typed-model",
            CONF_PROMPT: "Be brief.",
            CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
            CONF_TEMPERATURE: 0.3,
            CONF_MAX_TOKENS: 200.0,
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["title"] == "Kitchen helper"
    await ha_core.async_block_till_done()
    created = next(
        s for s in provider_entry.subentries.values() if s.title == "Kitchen helper"
    )
    assert created.data == {
        CONF_MODEL: "typed-model",
        CONF_PROMPT: "Be brief.",
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_TEMPERATURE: 0.3,
        CONF_MAX_TOKENS: 200,
    }

    result = await provider_entry.start_subentry_reconfigure_flow(
        ha_core, created.subentry_id
    )
    assert result["step_id"] == "init"
    # The name belongs to the subentry title and is only asked when adding.
    assert CONF_NAME not in {str(key) for key in result["data_schema"].schema}
    result = await ha_core.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_MODEL: "other-model", CONF_LLM_HASS_API: [], CONF_PROMPT: ""},
    )
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "reconfigure_successful"
    updated = provider_entry.subentries[created.subentry_id]
    assert updated.data[CONF_MODEL] == "other-model"
    assert CONF_LLM_HASS_API not in updated.data
    assert CONF_PROMPT not in updated.data


async def test_stt_and_tts_subentries(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    result = await start_subentry_flow(ha_core, provider_entry, SUBENTRY_STT)
    result = await ha_core.config_entries.subentries.async_configure(
        result["flow_id"],
        {CONF_NAME: "Chinese STT", CONF_MODEL: "whisper-1", CONF_LANGUAGE: "zh"},
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"] == {CONF_MODEL: "whisper-1", CONF_LANGUAGE: "zh"}
    # A new subentry reloads the entry so its entity appears.
    await ha_core.async_block_till_done()
    assert provider_entry.state is ConfigEntryState.LOADED

    result = await start_subentry_flow(ha_core, provider_entry, SUBENTRY_TTS)
    result = await ha_core.config_entries.subentries.async_configure(
        result["flow_id"],
        {
            CONF_NAME: "Calm voice",
            CONF_MODEL: "tts-1",
            CONF_VOICE: "my-cloned-voice",
            CONF_SPEED: 1.2,
            CONF_INSTRUCTIONS: "Speak calmly.",
        },
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    assert result["data"][CONF_VOICE] == "my-cloned-voice"
    assert result["data"][CONF_SPEED] == 1.2


async def test_subentry_flow_needs_loaded_entry(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    await ha_core.config_entries.async_unload(provider_entry.entry_id)
    result = await start_subentry_flow(ha_core, provider_entry, SUBENTRY_TTS)
    assert result["type"] is FlowResultType.ABORT
    assert result["reason"] == "entry_not_loaded"


async def test_audio_subentries_only_where_service_has_audio(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN, data=provider_entry_data(fake_provider, audio=False)
    )
    entry.add_to_hass(ha_core)
    assert set(XiaozhiConfigFlow.async_get_supported_subentry_types(entry)) == {
        SUBENTRY_CONVERSATION
    }
