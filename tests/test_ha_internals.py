"""Home Assistant still has every internal that ha_internals.py relies on.

Each check names the Home Assistant symbol: when an upgrade moves or changes one,
this fails with that name, and ha_internals.py is the one place to adapt. The
behaviour behind them is exercised through the satellite, TTS and conversation
tests.
"""

import dataclasses
import importlib
import inspect
from typing import Any

import pytest

from homeassistant.components.assist_pipeline.default_pipeline import (
    async_get_pipeline_conversation_data,
)
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_satellite import AssistSatelliteEntity
from homeassistant.components.conversation import ConversationInput
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant
from homeassistant.helpers import chat_session
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi import ha_internals


def fail(symbol: str, problem: str) -> str:
    return (
        f"Home Assistant {ha_version}: {symbol} {problem}; "
        "adapt custom_components/xiaozhi/ha_internals.py"
    )


# (module, name, members we use)
IMPORTED: list[tuple[str, str, tuple[str, ...]]] = [
    ("homeassistant.components.ai_task.const", "DATA_PREFERENCES", ()),
    ("homeassistant.components.ai_task", "AITaskPreferences", ("gen_data_entity_id",)),
    ("homeassistant.components.assist_pipeline.models", "PipelineStage", ("INTENT",)),
    ("homeassistant.components.assist_pipeline.pipeline", "async_get_pipeline", ()),
    (
        "homeassistant.components.assist_pipeline.pipeline",
        "PipelineStorageCollection",
        ("async_set_preferred_item", "async_get_preferred_item"),
    ),
    ("homeassistant.components.assist_pipeline.runtime", "KEY_ASSIST_PIPELINE", ()),
    (
        "homeassistant.components.assist_satellite.connection_test",
        "CONNECTION_TEST_URL_BASE",
        (),
    ),
    (
        "homeassistant.components.assist_pipeline.pipeline",
        "PipelineInput",
        (
            *("run", "session", "intent_input", "conversation_extra_system_prompt"),
            *("device_id", "satellite_id", "execute"),
        ),
    ),
    (
        "homeassistant.components.assist_pipeline.pipeline",
        "PipelineRun",
        ("context", "pipeline", "start_stage", "end_stage", "event_callback"),
    ),
    (
        "homeassistant.components.assist_pipeline.default_pipeline",
        "KEY_PIPELINE_CONVERSATION_DATA",
        (),
    ),
    (
        "homeassistant.components.assist_pipeline.default_pipeline",
        "PipelineConversationData",
        ("continue_conversation_agent",),
    ),
    (
        "homeassistant.components.conversation.agent_manager",
        "AgentManager",
        ("trigger_sentences", "register_trigger"),
    ),
    ("homeassistant.components.conversation.agent_manager", "get_agent_manager", ()),
    (
        "homeassistant.components.assist_satellite.entity",
        "AssistSatelliteState",
        ("RESPONDING", "IDLE"),
    ),
    (
        "homeassistant.components.binary_sensor.const",
        "BinarySensorDeviceClass",
        ("CONNECTIVITY",),
    ),
    ("homeassistant.components.button.const", "ButtonDeviceClass", ("RESTART",)),
    (
        "homeassistant.components.conversation.models",
        "AbstractConversationAgent",
        ("supported_languages", "async_process"),
    ),
    (
        "homeassistant.components.tts.entity",
        "TTSAudioRequest",
        ("language", "options", "message_gen"),
    ),
]


@pytest.mark.parametrize(
    ("module", "name", "members"), IMPORTED, ids=[f"{m}.{n}" for m, n, _ in IMPORTED]
)
def test_imported_names_are_where_we_take_them_from(
    module: str, name: str, members: tuple[str, ...]
) -> None:
    symbol = f"{module}.{name}"
    found = getattr(importlib.import_module(module), name, None)
    assert found is not None, fail(symbol, "is gone")
    fields = (
        {field.name for field in dataclasses.fields(found)}
        if dataclasses.is_dataclass(found)
        else set()
    )
    for member in members:
        assert hasattr(found, member) or member in fields, fail(
            f"{symbol}.{member}", "is gone"
        )


# Private attributes of AssistSatelliteEntity: (name, what it is).
SATELLITE_PRIVATES: list[tuple[str, str]] = [
    ("_conversation_id", "attribute"),
    ("_run_has_tts", "attribute"),
    ("_set_state", "method"),
    ("_resolve_vad_sensitivity", "method"),
    # run_text_to_intent does what async_accept_pipeline_from_satellite does:
    ("_extra_system_prompt", "attribute"),
    ("_pipeline_task", "attribute"),
    ("_cancel_running_pipeline", "method"),
    ("_internal_on_pipeline_event", "method"),
    ("_resolve_pipeline", "method"),
]


@pytest.mark.parametrize(("name", "kind"), SATELLITE_PRIVATES)
def test_satellite_privates_exist(name: str, kind: str) -> None:
    symbol = f"AssistSatelliteEntity.{name}"
    assert hasattr(AssistSatelliteEntity, name), fail(symbol, "is gone")
    if kind == "method":
        assert callable(getattr(AssistSatelliteEntity, name)), fail(
            symbol, "is no longer a method"
        )


def pipeline_run_source() -> str:
    return inspect.getsource(AssistSatelliteEntity.async_accept_pipeline_from_satellite)


@pytest.mark.parametrize(
    "used",
    [
        "self._resolve_vad_sensitivity()",  # our per-run silence
        "self._conversation_id",  # the conversation a run continues
        "self._run_has_tts = False",  # a run starts without speech
        # What run_text_to_intent repeats for a typed request:
        "await self._cancel_running_pipeline()",
        "self._extra_system_prompt = None",
        "self.async_set_context(context)",
        "event_callback=self._internal_on_pipeline_event",
        "pipeline_id=self._resolve_pipeline()",
        "tts_audio_output=self.tts_options",
        "self._pipeline_task = (",
    ],
)
def test_the_pipeline_run_still_uses_what_we_set(used: str) -> None:
    assert used in pipeline_run_source(), fail(
        "AssistSatelliteEntity.async_accept_pipeline_from_satellite",
        f"no longer uses {used}",
    )


def test_state_changes_go_through_set_state() -> None:
    source = inspect.getsource(AssistSatelliteEntity.tts_response_finished)
    assert "self._set_state(" in source, fail(
        "AssistSatelliteEntity.tts_response_finished", "no longer calls _set_state"
    )
    parameters = inspect.signature(AssistSatelliteEntity._set_state).parameters
    assert list(parameters) == ["self", "state"], fail(
        "AssistSatelliteEntity._set_state", "takes other arguments"
    )


def test_end_stage_takes_the_pipeline_stage() -> None:
    parameters = inspect.signature(
        AssistSatelliteEntity.async_accept_pipeline_from_satellite
    ).parameters
    for name in ("end_stage", "wake_word_phrase"):
        assert name in parameters, fail(
            f"AssistSatelliteEntity.async_accept_pipeline_from_satellite({name}=)",
            "is gone",
        )


def test_every_wrapper_is_listed() -> None:
    public: list[Any] = [getattr(ha_internals, name) for name in ha_internals.__all__]
    assert all(item is not None for item in public)
    assert sorted(ha_internals.__all__) == ha_internals.__all__


def test_the_wizards_connection_test_announces_its_url() -> None:
    from homeassistant.components.assist_satellite import websocket_api

    source = inspect.getsource(websocket_api.websocket_test_connection)
    assert 'media_id=f"{CONNECTION_TEST_URL_BASE}/' in source, fail(
        "assist_satellite.websocket_api.websocket_test_connection",
        "no longer announces CONNECTION_TEST_URL_BASE",
    )
    assert "async_create_background_task" in source, fail(
        "assist_satellite.websocket_api.websocket_test_connection",
        "no longer runs its announcement in a background task",
    )


async def test_set_preferred_pipeline_makes_it_preferred(
    ha_core: HomeAssistant,
) -> None:
    assert await async_setup_component(ha_core, "assist_pipeline", {})
    first = async_get_pipeline(ha_core)
    data = first.to_json()
    del data["id"]
    store = ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store
    second = await store.async_create_item({**data, "name": "Second"})
    assert async_get_pipeline(ha_core).id == first.id

    ha_internals.set_preferred_pipeline(ha_core, second.id)

    assert async_get_pipeline(ha_core).id == second.id


async def test_sentence_triggers_are_seen(ha_core: HomeAssistant) -> None:
    hass = ha_core
    assert await async_setup_component(hass, "conversation", {})
    assert not ha_internals.has_sentence_triggers(hass)
    unregister = get_agent_manager(hass).register_trigger(["lights on"], _no_answer)
    assert ha_internals.has_sentence_triggers(hass), fail(
        "AgentManager.trigger_sentences", "no longer lists registered triggers"
    )
    unregister()
    assert not ha_internals.has_sentence_triggers(hass)


async def _no_answer(user_input: ConversationInput, result: Any) -> str | None:
    return None


async def test_the_agent_that_asked_is_seen(hass: HomeAssistant) -> None:
    assert ha_internals.continue_conversation_agent(hass, "c1") is None
    with chat_session.async_get_chat_session(hass, "c1") as session:
        data = async_get_pipeline_conversation_data(hass, session)
        data.continue_conversation_agent = "conversation.asking"
        assert (
            ha_internals.continue_conversation_agent(hass, session.conversation_id)
            == "conversation.asking"
        ), fail("PipelineConversationData", "is no longer kept per conversation")
