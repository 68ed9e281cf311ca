"""Every use of Home Assistant beyond its public API, each in one place.

Home Assistant's public API of an integration is what the integration's package
exports (its ``__all__``). Where this integration needs more, the access lives
here: one small function per private attribute, and the names it takes from
deeper module paths. tests/test_ha_internals.py checks each against the
installed Home Assistant and fails, naming the symbol, when an upgrade moves or
changes it; ARCHITECTURE.md lists them.

Nothing else of the integration touches a private attribute of Home Assistant
or imports past a package's public root.
"""

from abc import abstractmethod
from collections.abc import AsyncIterable
from typing import override

from homeassistant.components.ai_task.const import DATA_PREFERENCES
from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.components.assist_pipeline.default_pipeline import (
    KEY_PIPELINE_CONVERSATION_DATA,
)
from homeassistant.components.assist_pipeline.models import PipelineStage
from homeassistant.components.assist_pipeline.pipeline import (
    PipelineInput,
    PipelineRun,
    async_get_pipeline,
)
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_satellite import (
    AssistSatelliteAnnouncement,
    AssistSatelliteEntity,
)
from homeassistant.components.assist_satellite.connection_test import (
    CONNECTION_TEST_URL_BASE,
)
from homeassistant.components.assist_satellite.entity import AssistSatelliteState
from homeassistant.components.binary_sensor.const import BinarySensorDeviceClass
from homeassistant.components.button.const import ButtonDeviceClass
from homeassistant.components.conversation.agent_manager import get_agent_manager
from homeassistant.components.conversation.models import AbstractConversationAgent
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.core import Context, HomeAssistant, callback
from homeassistant.helpers import chat_session

# Names Home Assistant keeps in submodules without exporting them from the
# integration's package.
__all__ = [
    "AbstractConversationAgent",
    "BinarySensorDeviceClass",
    "ButtonDeviceClass",
    "SatelliteWithRunSilence",
    "TTSAudioRequest",
    "continue_conversation_agent",
    "has_sentence_triggers",
    "is_connection_test",
    "pipeline_by_id",
    "preferred_ai_task_entity",
    "run_pipeline_to_intent",
    "run_text_to_intent",
    "satellite_conversation_id",
    "set_preferred_pipeline",
    "set_satellite_conversation_id",
    "show_satellite_responding",
]


@callback
def set_preferred_pipeline(hass: HomeAssistant, pipeline_id: str) -> None:
    """Make a stored pipeline the preferred one (what Settings > Voice assistants does).

    Home Assistant offers this only to its frontend (the websocket command
    ``assist_pipeline/pipeline/set_preferred``), through the pipeline store.

    Raises:
        ItemNotFound: There is no stored pipeline of that id.
    """
    store = hass.data[KEY_ASSIST_PIPELINE].pipeline_store
    store.async_set_preferred_item(pipeline_id)


def is_connection_test(announcement: AssistSatelliteAnnouncement) -> bool:
    """Return whether the announcement is the satellite wizard's connection test.

    The wizard announces a sound at this URL and waits for the device to fetch
    it; the announcement runs in a background task nobody awaits.
    """
    return announcement.original_media_id.startswith(CONNECTION_TEST_URL_BASE)


@callback
def pipeline_by_id(hass: HomeAssistant, pipeline_id: str | None) -> Pipeline:
    """Return a pipeline by id (None: the preferred one).

    ``assist_pipeline.async_get_pipelines`` is public but lists only stored
    pipelines; this also finds those Home Assistant builds for a conversation
    entity.

    Raises:
        PipelineNotFound: There is no such pipeline.
    """
    return async_get_pipeline(hass, pipeline_id)


@callback
def preferred_ai_task_entity(hass: HomeAssistant) -> str | None:
    """Return the AI task entity the user prefers for data (Settings > General).

    ``ai_task.async_generate_data`` uses it when given no entity, but raises
    when there is none, like for any other failure; whether one is set is only
    in the AI task integration's preferences.
    """
    preferences = hass.data.get(DATA_PREFERENCES)
    return None if preferences is None else preferences.gen_data_entity_id


@callback
def continue_conversation_agent(
    hass: HomeAssistant, conversation_id: str
) -> str | None:
    """Return the agent a conversation's next run goes to, if one asked a question.

    The pipeline keeps it per conversation and forgets it when a run's intent
    stage starts, so a run cancelled after that loses it.
    """
    data = hass.data.get(KEY_PIPELINE_CONVERSATION_DATA, {}).get(conversation_id)
    return None if data is None else data.continue_conversation_agent


@callback
def has_sentence_triggers(hass: HomeAssistant) -> bool:
    """Return whether any automation's sentence trigger is registered.

    The pipeline runs them (they act) before any agent that is not HA's own; the
    agent manager lists them, but only in its websocket API.
    """
    return bool(get_agent_manager(hass).trigger_sentences)


async def run_pipeline_to_intent(
    satellite: AssistSatelliteEntity,
    audio: AsyncIterable[bytes],
    *,
    wake_word_phrase: str | None,
) -> None:
    """Run the satellite's pipeline on ``audio`` up to its intent stage.

    ``end_stage`` is public, but the enum it takes is not exported.
    """
    await satellite.async_accept_pipeline_from_satellite(
        audio, end_stage=PipelineStage.INTENT, wake_word_phrase=wake_word_phrase
    )


async def run_text_to_intent(satellite: AssistSatelliteEntity, text: str) -> None:
    """Run the satellite's pipeline on a typed request: its intent stage only.

    The satellite has no public way to start a run at the intent stage: its
    ``async_accept_pipeline_from_satellite`` builds the run without
    ``intent_input``, which that stage requires. So this does what that method
    does (HA 2026.10), with the text as the intent's input: cancel the running
    pipeline, take the start-conversation prompt, continue the satellite's
    conversation, report the events to the satellite (its state, then its
    ``on_pipeline_event``) and keep the run as its pipeline task, which a new
    run or an announcement cancels.
    """
    await satellite._cancel_running_pipeline()
    extra_system_prompt = satellite._extra_system_prompt
    satellite._extra_system_prompt = None
    hass = satellite.hass
    entry = satellite.platform.config_entry
    assert entry is not None
    device_id = satellite.registry_entry.device_id if satellite.registry_entry else None
    context = Context()
    satellite.async_set_context(context)
    satellite._run_has_tts = False
    with chat_session.async_get_chat_session(
        hass, satellite._conversation_id
    ) as session:
        satellite._conversation_id = session.conversation_id
        run = PipelineInput(
            run=PipelineRun(
                hass,
                context=context,
                pipeline=async_get_pipeline(hass, satellite._resolve_pipeline()),
                start_stage=PipelineStage.INTENT,
                end_stage=PipelineStage.INTENT,
                event_callback=satellite._internal_on_pipeline_event,
                tts_audio_output=satellite.tts_options,
            ),
            session=session,
            intent_input=text,
            conversation_extra_system_prompt=extra_system_prompt,
            device_id=device_id,
            satellite_id=satellite.entity_id,
        )
        satellite._pipeline_task = entry.async_create_background_task(
            hass, run.execute(validate=True), f"{satellite.entity_id}_pipeline"
        )
        try:
            await satellite._pipeline_task
        finally:
            satellite._pipeline_task = None


def satellite_conversation_id(satellite: AssistSatelliteEntity) -> str | None:
    """Return the conversation the satellite's next run continues."""
    return satellite._conversation_id


def set_satellite_conversation_id(
    satellite: AssistSatelliteEntity, conversation_id: str | None
) -> None:
    """Make the satellite's next run continue ``conversation_id``."""
    satellite._conversation_id = conversation_id


@callback
def show_satellite_responding(satellite: AssistSatelliteEntity) -> None:
    """Show the satellite responding until ``tts_response_finished``.

    What the base class does when a run's TTS stage starts; a run that ends at
    the intent stage has none, so its end would otherwise show idle.
    """
    satellite._run_has_tts = True
    satellite._set_state(AssistSatelliteState.RESPONDING)


class SatelliteWithRunSilence(AssistSatelliteEntity):
    """A satellite that chooses, per run, how much silence ends a request.

    The base class reads the silence from the VAD sensitivity select, for every
    run alike, in a private method; this overrides it with
    :meth:`run_silence_seconds`.
    """

    @abstractmethod
    def run_silence_seconds(self) -> float | None:
        """Return the silence that ends this run's request; None: the select's."""

    @callback
    @override
    def _resolve_vad_sensitivity(self) -> float:
        seconds = self.run_silence_seconds()
        if seconds is None:
            return super()._resolve_vad_sensitivity()
        return seconds
