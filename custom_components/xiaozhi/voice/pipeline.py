"""The glue to Home Assistant's Assist pipeline that a voice turn needs.

The pipeline run reports its stages as events; these helpers read what a turn
takes from them: the pipeline's voice (its TTS engine, language and voice), the
message for a pipeline error, and the chat history of an interrupted answer.
"""

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Final

from homeassistant.components import conversation, stt, tts
from homeassistant.components.assist_pipeline import (
    Pipeline,
    PipelineEvent,
    PipelineNotFound,
)
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import chat_session

from .. import ha_internals
from .speaking import ERROR_AGENT, ERROR_TTS

ERROR_STT: Final = "error_stt"

type PipelineListener = Callable[[PipelineEvent], None]


@dataclass(frozen=True, slots=True)
class PipelineVoice:
    """The TTS engine, language and options of a pipeline.

    ``engine`` is empty when the pipeline has none (the speaker then alerts).
    """

    engine: str
    language: str | None
    options: dict[str, Any] | None


@callback
def pipeline_voice(hass: HomeAssistant, pipeline_id: str | None) -> PipelineVoice:
    """Return the voice of a pipeline, as its own TTS stage would use it.

    Raises:
        PipelineNotFound: There is no such pipeline.
    """
    pipeline = ha_internals.pipeline_by_id(hass, pipeline_id)
    engine = None
    if pipeline.tts_engine is not None:
        engine = tts.async_resolve_engine(hass, pipeline.tts_engine)
    options = None
    if pipeline.tts_voice is not None:
        options = {tts.ATTR_VOICE: pipeline.tts_voice}
    return PipelineVoice(engine or "", pipeline.tts_language, options)


class PipelineProblem(StrEnum):
    """Why a device's pipeline cannot hold a spoken conversation."""

    NOT_FOUND = "not_found"
    NO_STT = "no_stt"
    STT_MISSING = "stt_missing"
    NO_TTS = "no_tts"
    TTS_MISSING = "tts_missing"


@callback
def pipeline_problem(hass: HomeAssistant, pipeline: Pipeline) -> PipelineProblem | None:
    """Return why ``pipeline`` cannot hear and answer aloud; None: it can.

    It needs a speech-to-text and a text-to-speech engine, both loaded (an
    engine whose integration was removed or failed to load is only a name).
    """
    if pipeline.stt_engine is None:
        return PipelineProblem.NO_STT
    if stt.async_get_speech_to_text_engine(hass, pipeline.stt_engine) is None:
        return PipelineProblem.STT_MISSING
    if pipeline.tts_engine is None:
        return PipelineProblem.NO_TTS
    if tts.async_resolve_engine(hass, pipeline.tts_engine) is None:
        return PipelineProblem.TTS_MISSING
    return None


@callback
def pipeline_problem_by_id(
    hass: HomeAssistant, pipeline_id: str | None
) -> tuple[str, PipelineProblem | None]:
    """Return a pipeline's name and why it cannot talk (None: the preferred one)."""
    try:
        pipeline = ha_internals.pipeline_by_id(hass, pipeline_id)
    except PipelineNotFound:
        return pipeline_id or "?", PipelineProblem.NOT_FOUND
    return pipeline.name, pipeline_problem(hass, pipeline)


def error_message_key(code: str) -> str:
    """Return the `device.messages` key telling the user a pipeline error."""
    if code.startswith("stt-"):
        return ERROR_STT
    if code.startswith("tts-"):
        return ERROR_TTS
    return ERROR_AGENT


@callback
def keep_partial_answer(
    hass: HomeAssistant,
    conversation_id: str,
    agent_id: str,
    question: str,
    answer: str,
) -> None:
    """Add a question and its interrupted answer to a conversation's history.

    The pipeline keeps a turn's chat log only when the agent finished it.
    """
    with (
        chat_session.async_get_chat_session(hass, conversation_id) as session,
        conversation.async_get_chat_log(hass, session) as chat_log,
    ):
        chat_log.async_add_user_content(conversation.UserContent(question))
        chat_log.async_add_assistant_content_without_tools(
            conversation.AssistantContent(agent_id=agent_id, content=answer)
        )
