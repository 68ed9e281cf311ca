"""Auto mode: our endpointer decides when the user has finished, and may guess early.

In auto mode (the firmware's default) the server ends the utterance. The turn's
pipeline run still transcribes, recognises and answers in Home Assistant (its
debug view shows every run), but the end of its audio is ours
(`endpointing.Endpointer`, whose "finished speaking" settings come from the
device's select), not HA's VAD, which the run is given 15 s of silence instead.

A :class:`Listening` is one utterance across the runs it takes. At a possible
end (a short silence) a turn may *speculate*: end its run's audio so that the
transcript and the answer start while the user may still go on. If speech
resumes before the reply starts playing (``tts start``), the turn is *taken
back*: cancelled without a sound, no ``stt`` message sent, no partial answer
kept, and a new turn starts on the whole utterance so far (the frames since
listening began), so the answer is to the whole utterance.

A speculative run must not act on the home, because a take-back cannot undo an
action. :func:`run_may_act` says whether a run's intent stage could act before
the utterance is over: HA's own agent and local intents execute intents,
sentence triggers run automations, another integration's agent with the
"control" feature calls tools, and a follow-up goes to the agent that asked.
Such runs are not speculated on: their audio ends at the final end (see
docs/endpointing.md). This integration's agent acts only through tool calls,
and a speculative turn holds them (:func:`hold_actions`): the agent awaits
:func:`async_until_committed` before it hands a tool call to Home Assistant.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

from homeassistant.components import conversation
from homeassistant.components.assist_pipeline import PipelineNotFound
from homeassistant.const import ATTR_SUPPORTED_FEATURES
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.util.hass_dict import HassKey

from .. import ha_internals
from ..const import DOMAIN, LOGGER
from .endpointing import (
    Endpointer,
    EndpointSettings,
    FinishedSpeaking,
    SpeechModel,
    silero_model,
)
from .utterance import MAX_BUFFERED_BYTES


class TakenBackError(HomeAssistantError):
    """The utterance went on: a held action of its guessed end must not run."""


class HeldActions:
    """The actions of a speculative turn's agent, held until the utterance is over."""

    def __init__(self) -> None:
        """Hold until `release` or `take_back`."""
        self._decided = asyncio.Event()
        self._taken_back = False
        self.waiting = 0

    def release(self) -> None:
        """The utterance is over: the actions may run."""
        self._decided.set()

    def take_back(self) -> None:
        """The guess was wrong: the actions must never run."""
        self._taken_back = True
        self._decided.set()

    async def wait(self) -> None:
        """Return once the actions may run.

        Raises:
            TakenBackError: The guess was taken back.
        """
        self.waiting += 1
        try:
            await self._decided.wait()
        finally:
            self.waiting -= 1
        if self._taken_back:
            raise TakenBackError("the user went on speaking")


_HELD: HassKey[dict[str, HeldActions]] = HassKey(f"{DOMAIN}_held_actions")


@callback
def hold_actions(hass: HomeAssistant, device_id: str) -> HeldActions:
    """Hold the actions of the device's agent until the returned hold is decided."""
    held = HeldActions()
    hass.data.setdefault(_HELD, {})[device_id] = held
    return held


@callback
def forget_held_actions(hass: HomeAssistant, device_id: str, held: HeldActions) -> None:
    """Drop ``held`` from the registry (once decided)."""
    registry = hass.data.get(_HELD, {})
    if registry.get(device_id) is held:
        del registry[device_id]


@callback
def waiting_actions(hass: HomeAssistant) -> int:
    """Return how many agent actions wait for an utterance to be over."""
    return sum(held.waiting for held in hass.data.get(_HELD, {}).values())


async def async_until_committed(hass: HomeAssistant, device_id: str | None) -> None:
    """Wait until the device's speculative turn, if any, is over; before acting.

    Raises:
        TakenBackError: The user went on speaking: the action must not run.
    """
    held = hass.data.get(_HELD, {}).get(device_id or "")
    if held is not None:
        await held.wait()


@dataclass(slots=True)
class SpeculationCount:
    """How often a session's turns guessed the end, and how often they took it back.

    Each take-back cost the provider requests the cancelled run had made (a
    transcription, usually a chat request cut before its first token).
    """

    started: int = 0
    taken_back: int = 0


class Listening:
    """One utterance of auto mode, across the turns a take-back starts.

    Attributes:
        endpointer: The session's detector, reset for this utterance.
        count: The session's speculation count.
        speech_heard: Whether the endpointer heard the user start speaking.
    """

    def __init__(self, endpointer: Endpointer, count: SpeculationCount) -> None:
        """Listen from the start of an utterance."""
        self.endpointer = endpointer
        self.count = count
        self.speech_heard = False
        self._frames: list[bytes] = []
        self._bytes = 0

    @property
    def frames(self) -> tuple[bytes, ...]:
        """The utterance's audio so far, as it came (bounded like a turn's audio)."""
        return tuple(self._frames)

    def record(self, pcm: bytes) -> None:
        """Keep a frame for a turn that may have to start over."""
        if self._bytes + len(pcm) <= MAX_BUFFERED_BYTES:
            self._frames.append(pcm)
            self._bytes += len(pcm)


class SessionEndpointing:
    """A device session's endpointer: Silero's state is per stream, so one each."""

    def __init__(self, load: Callable[[], SpeechModel] = silero_model) -> None:
        """Start without the model; `async_load` loads it with ``load``."""
        self.count = SpeculationCount()
        self._load = load
        self._model: SpeechModel | None = None
        self._endpointer: Endpointer | None = None

    async def async_load(self, hass: HomeAssistant) -> bool:
        """Load the model (once, in an executor); return whether it is usable."""
        if self._model is None:
            try:
                self._model = await hass.async_add_executor_job(self._load)
            except (ImportError, OSError, RuntimeError) as err:
                LOGGER.warning(
                    "Cannot load the speech model, HA's VAD ends utterances: %s", err
                )
                return False
        return True

    def listening(self, settings: EndpointSettings) -> Listening | None:
        """Start an utterance; None until the model is loaded."""
        if self._model is None:
            return None
        endpointer = self._endpointer
        if endpointer is None or endpointer.settings != settings:
            endpointer = self._endpointer = Endpointer(settings, self._model)
        endpointer.reset()
        return Listening(endpointer, self.count)


@callback
def finished_speaking_settings(
    hass: HomeAssistant, entity_id: str | None
) -> EndpointSettings:
    """Return the endpointer's settings for the device's "finished speaking" select."""
    state = hass.states.get(entity_id) if entity_id else None
    try:
        value = FinishedSpeaking(state.state if state else FinishedSpeaking.DEFAULT)
    except ValueError:  # unavailable, unknown
        value = FinishedSpeaking.DEFAULT
    return EndpointSettings.for_finished_speaking(value)


@callback
def run_may_act(
    hass: HomeAssistant, pipeline_id: str | None, conversation_id: str | None
) -> bool:
    """Return whether a run's intent stage could act on the home (or is unknown)."""
    if conversation_id is not None and ha_internals.continue_conversation_agent(
        hass, conversation_id
    ):
        return True  # a follow-up: the agent that asked answers, whatever it is
    try:
        pipeline = ha_internals.pipeline_by_id(hass, pipeline_id)
    except PipelineNotFound:
        return True
    if pipeline.prefer_local_intents:
        return True
    engine = pipeline.conversation_engine or conversation.HOME_ASSISTANT_AGENT
    if engine == conversation.HOME_ASSISTANT_AGENT:
        return True
    state = hass.states.get(engine)
    if state is None:
        return True  # not an entity (a legacy agent): its features are unknown
    features = int(state.attributes.get(ATTR_SUPPORTED_FEATURES, 0))
    entry = er.async_get(hass).async_get(engine)
    holds_tool_calls = entry is not None and entry.platform == DOMAIN
    if features & conversation.ConversationEntityFeature.CONTROL and (
        not holds_tool_calls
    ):
        return True
    return ha_internals.has_sentence_triggers(hass)
