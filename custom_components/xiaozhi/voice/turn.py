"""One voice turn of a device: an utterance, the Assist pipeline run, the answer.

The device's selected Assist pipeline runs through the satellite entity up to the
intent stage (HA's VAD, or in auto mode our endpointer, `listening`, which may
start the run early and take it back; the pipeline's STT engine, sentence triggers and local
intents, the conversation agent with its chat session; the run shows in HA's
pipeline debug view). The speaking stage is ours: the agent's text is taken from
the pipeline's ``intent-progress`` events as it is written and spoken from the
first clause with the pipeline's own TTS engine, language and voice
(`speaking.speak_reply`), instead of HA's TTS stage, which starts only after 60
characters, or the whole answer for engines without streaming input.

A typed request (``listen detect`` with a text that is not a wake word, see
`voice.wake_words`) is a turn without audio: the pipeline runs from its intent
stage on the text, and the device gets the same as for a spoken turn.

On the device: ``stt`` with the transcript, then ``tts start``,
``sentence_start`` per segment, the Opus audio, ``llm`` with the reply's
emotion, ``tts stop``. Errors become a short spoken message (or an alert when
the voice itself fails) in the device's language. A pipeline that cannot talk
(no STT or TTS engine) is not run: the device shows an alert and HA a repair
issue (`pipeline_check`).

Cancelling the task running `VoiceTurn.run` (barge-in, disconnect) cancels the
pipeline run, the agent's request and the speech at once; an answer cut short
this way is kept in the conversation's chat history as far as it was written.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Callable, Mapping
from dataclasses import dataclass
from enum import Enum, auto
import time
from typing import Any, Final, Protocol

from homeassistant.components.assist_pipeline import PipelineEvent, PipelineEventType
from homeassistant.core import HomeAssistant, callback

from ..const import LOGGER
from ..device.messages import device_message
from ..device.session import DeviceSession
from ..protocol.messages import ListenMode
from .device_sink import DeviceSpeech
from .endpointing import End, Event, PossibleEnd, SpeechResumed, SpeechStarted
from .listening import (
    HeldActions,
    Listening,
    forget_held_actions,
    hold_actions,
    run_may_act,
)
from .pipeline import (
    PipelineListener,
    PipelineVoice,
    error_message_key,
    keep_partial_answer,
    pipeline_voice,
)
from .pipeline_check import MESSAGE_PIPELINE
from .reply_text import ReplyText
from .speaking import ERROR_AGENT, SpeakResult, speak_reply
from .utterance import UtteranceAudio

# Another satellite answered the same wake word: this device stays quiet.
_SILENT_ERRORS: Final = frozenset({"duplicate_wake_up_detected"})
# Failures of one utterance, not of the pipeline: the conversation goes on.
_UTTERANCE_ERRORS: Final = frozenset({"stt-stream-failed", "stt-no-text-recognized"})


@dataclass(frozen=True, slots=True)
class PipelineRun:
    """What a turn asks the satellite to run its pipeline on.

    Attributes:
        audio: The utterance, as it arrives.
        wake_word_phrase: The wake word the device heard, if this turn follows one.
        manual: The turn ends the utterance, not HA's VAD: the device's
            ``listen stop`` (push to talk) or, in auto mode, our endpointer.
        listener: Receives the run's events, in order.
        text: A typed request: the run starts at the intent stage with it, and
            ``audio`` is not read.
    """

    audio: AsyncIterable[bytes]
    wake_word_phrase: str | None
    manual: bool
    listener: PipelineListener
    text: str | None = None


class SatelliteHost(Protocol):
    """What a turn needs of the device's assist satellite entity."""

    @property
    def hass(self) -> HomeAssistant:
        """Home Assistant."""

    @property
    def device_language(self) -> str | None:
        """The language the device speaks (its firmware's)."""

    def async_check_pipeline(self) -> bool:
        """Return whether the device's pipeline can talk (else say why in HA)."""

    @property
    def vad_sensitivity_entity_id(self) -> str | None:
        """The device's "finished speaking" select."""

    async def async_run_pipeline(self, run: PipelineRun) -> None:
        """Run the device's pipeline up to the intent stage."""

    def async_set_responding(self) -> None:
        """Show that the device answers (until `async_response_finished`)."""

    def async_response_finished(self) -> None:
        """Show that the device finished answering."""


class TurnEnd(Enum):
    """How a finished turn leaves the conversation."""

    LISTEN_AGAIN = auto()
    """The conversation goes on: the device listens for a follow-up."""

    END_CONVERSATION = auto()
    """Nothing was said, another satellite answered, or the pipeline cannot run."""

    INTERRUPTED = auto()
    """Home Assistant cancelled the run (an announcement takes over)."""


def _speech_of(event_data: Mapping[str, Any]) -> str:
    output = event_data.get("intent_output") or {}
    speech = output.get("response", {}).get("speech", {}).get("plain", {})
    text = speech.get("speech", "")
    return text if isinstance(text, str) else ""


async def _one_text(text: str) -> AsyncGenerator[str | None]:
    yield text


@dataclass(slots=True)
class _Intent:
    """The intent stage as ``intent-start`` described it."""

    agent_id: str
    conversation_id: str
    question: str
    ended: bool = False


class VoiceTurn:
    """One utterance and its answer; see the module docstring.

    Attributes:
        mode: How the device listens (decides who ends the utterance).
        audio: The utterance; the voice session feeds it device audio.
        reply: The answer's text, from the pipeline's intent events.
        speech: The answer's playback on the device.
        transcript: What the user said, once recognised.
        speech_ended_at: When the utterance's audio ended (HA's VAD, listen
            stop, or our endpointer, maybe speculatively).
        result: What the speaking stage did, once it finished.
        taken_back: Speech resumed after this turn speculated: it was cancelled
            without a trace on the device and another turn took over.
    """

    def __init__(
        self,
        host: SatelliteHost,
        session: DeviceSession,
        mode: ListenMode,
        wake_word_phrase: str | None = None,
        *,
        text: str | None = None,
        listening: Listening | None = None,
        on_take_back: Callable[[VoiceTurn], None] | None = None,
    ) -> None:
        """Prepare a turn (``text``: a typed request); nothing runs before `run`.

        With ``listening`` (auto mode) the endpointer ends the utterance, and
        the turn starts with the audio it heard so far; ``on_take_back`` is
        called when the turn's speculation must be taken back.
        """
        self.mode = mode
        self.audio = UtteranceAudio()
        self.reply = ReplyText()
        self.speech = DeviceSpeech(
            session,
            host.device_language,
            on_start=self._set_responding,
            on_first_audio=self._on_first_audio,
            before_start=self._async_before_speaking,
        )
        self.transcript: str | None = None
        self.speech_ended_at: float | None = None
        self.result: SpeakResult | None = None
        self._host = host
        self._session = session
        self._wake_word_phrase = wake_word_phrase
        self._voice: PipelineVoice | None = None
        self._intent: _Intent | None = None
        self._error: str | None = None
        self._vad_used = False
        self._speech_heard = False
        self._responding = False
        self._interrupted = False
        self._answer_task: asyncio.Task[None] | None = None
        self._listening = listening
        self._on_take_back = on_take_back
        # Until committed, nothing of the turn reaches the device or the user.
        self._committed = listening is None
        self._may_speculate = False
        self._speculating = False
        self._at_possible_end = False
        self._stt_message: asyncio.Task[None] | None = None
        self._held: tuple[str, HeldActions] | None = None
        self.taken_back = False
        if listening is not None:
            for frame in listening.frames:
                self.audio.put(frame)
        self._text = text
        if text is not None:
            self.end_of_speech()  # nothing to listen to

    @property
    def spoke(self) -> bool:
        """Return whether the device was told to speak (``tts start`` sent)."""
        return self.speech.started

    def end_of_speech(self) -> None:
        """End the utterance: the device stopped listening, or HA's VAD decided."""
        if not self.audio.ended:
            self.speech_ended_at = time.monotonic()
            self.audio.end()

    @property
    def listening(self) -> Listening | None:
        """The utterance as our endpointer hears it (auto mode), across take-backs."""
        return self._listening

    def stop_listening(self) -> None:
        """The device stopped listening (``listen stop``): the utterance is over."""
        self.end_of_speech()
        self._commit()

    def hear(self, pcm: bytes) -> None:
        """Take device audio: the utterance's, and in auto mode the endpointer's."""
        self.audio.put(pcm)
        listening = self._listening
        if listening is None or self._committed or self.taken_back:
            return
        listening.record(pcm)
        for event in listening.endpointer.feed(pcm):
            if not self._on_endpoint(listening, event):
                return

    def _on_endpoint(self, listening: Listening, event: Event) -> bool:
        """Follow the endpointer; return whether this turn goes on listening."""
        match event:
            case SpeechStarted():
                listening.speech_heard = True
            case PossibleEnd():
                self._at_possible_end = True
                self._maybe_speculate()
            case SpeechResumed():
                self._at_possible_end = False
                if self._speculating:
                    LOGGER.debug(
                        "%s speaks on: taking the guess back", self._session.name
                    )
                    listening.count.taken_back += 1
                    self.taken_back = True
                    if self._on_take_back is not None:
                        self._on_take_back(self)
                    return False
            case End():
                self.end_of_speech()
                self._commit()
        return True

    def _maybe_speculate(self) -> None:
        """At a possible end, end the run's audio early if nothing in it can act."""
        listening = self._listening
        if (
            listening is None
            or not self._may_speculate
            or not self._at_possible_end
            or self._committed
            or self.audio.ended
        ):
            return
        LOGGER.debug("%s may have finished: speculating", self._session.name)
        listening.count.started += 1
        self._speculating = True
        self.end_of_speech()

    def _commit(self) -> None:
        """The utterance is over: what the turn holds back may reach the device."""
        if self._committed:
            return
        self._committed = True
        if self._held is not None:
            self._held[1].release()
        if self.transcript is not None:
            self._send_stt()
        self._note_text()

    def _send_stt(self) -> asyncio.Task[None]:
        """Tell the device the transcript, once."""
        if self._stt_message is None:
            self._stt_message = self._session.create_task(
                self._session.send_stt(self.transcript or ""), "stt"
            )
        return self._stt_message

    async def _async_before_speaking(self) -> None:
        """The reply starts playing: the utterance can no longer be taken back."""
        self._commit()
        if self._stt_message is not None:
            await self._stt_message

    async def run(self) -> TurnEnd:
        """Run the pipeline, answer, and say how the conversation goes on."""
        try:
            return await self._async_run()
        except asyncio.CancelledError:
            self._interrupted = True
            raise
        finally:
            await self._async_cleanup()

    async def _async_run(self) -> TurnEnd:
        if not self._host.async_check_pipeline():
            # Without STT and TTS the run would fail validation or stay silent.
            await self.speech.alert(
                device_message(MESSAGE_PIPELINE, self._host.device_language)
            )
            return TurnEnd.END_CONVERSATION
        try:
            await self._host.async_run_pipeline(
                PipelineRun(
                    audio=self.audio.stream(),
                    wake_word_phrase=self._wake_word_phrase,
                    manual=self.mode is ListenMode.MANUAL
                    or self._listening is not None,
                    listener=self.on_pipeline_event,
                    text=self._text,
                )
            )
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            # Home Assistant cancelled the run itself (an announcement).
            self._interrupted = True
            return TurnEnd.INTERRUPTED
        except Exception:
            LOGGER.exception("Cannot run the Assist pipeline of %s", self._session.name)
            self.reply.fail("pipeline-failed")
            if self._answer_task is not None:
                await self._answer_task  # it apologises, unless it said something
            else:
                await self._async_say(
                    device_message(ERROR_AGENT, self._host.device_language)
                )
            return TurnEnd.END_CONVERSATION
        if self._voice is None:
            return TurnEnd.END_CONVERSATION  # the run never started (intercepted)
        if self._answer_task is not None:
            await self._answer_task
            return TurnEnd.LISTEN_AGAIN
        return await self._async_after_error()

    # Pipeline ------------------------------------------------------------------

    @callback
    def on_pipeline_event(self, event: PipelineEvent) -> None:
        """Follow the pipeline run (called by the satellite, in order)."""
        data = event.data or {}
        match event.type:
            case PipelineEventType.RUN_START:
                self._voice = pipeline_voice(self._host.hass, data.get("pipeline"))
                self._may_speculate = self._listening is not None and not run_may_act(
                    self._host.hass, data.get("pipeline"), data.get("conversation_id")
                )
                self._maybe_speculate()  # the possible end may have come first
            case PipelineEventType.STT_START:
                processing = data.get("audio_processing") or {}
                self._vad_used = bool(processing.get("requires_external_vad"))
            case PipelineEventType.STT_VAD_START:
                self._speech_heard = True
            case PipelineEventType.STT_VAD_END:
                self.end_of_speech()
            case PipelineEventType.STT_END:
                self._on_transcript(data.get("stt_output", {}).get("text", ""))
            case PipelineEventType.INTENT_START:
                if not self._committed and (device_id := data.get("device_id")):
                    self._held = (device_id, hold_actions(self._host.hass, device_id))
                self._intent = _Intent(
                    data.get("engine", ""),
                    data.get("conversation_id", ""),
                    data.get("intent_input", ""),
                )
                if self._text is not None and self._answer_task is None:
                    self._on_transcript(self._text)  # shown like a spoken one
            case PipelineEventType.INTENT_PROGRESS:
                if delta := data.get("chat_log_delta"):
                    self.reply.add_delta(delta)
                    self._note_text()
            case PipelineEventType.INTENT_END:
                self.reply.finish(_speech_of(data))
                self._note_text()
                if self._intent is not None:
                    self._intent.ended = True
            case PipelineEventType.ERROR:
                self._on_error(data.get("code", ""))
            case PipelineEventType.RUN_END:
                self.end_of_speech()
                self.reply.end()

    def _on_transcript(self, text: str) -> None:
        self.end_of_speech()
        self.transcript = text
        self._answer_task = self._session.create_task(
            self._async_answer(text), "answer"
        )

    def _on_error(self, code: str) -> None:
        LOGGER.debug("Pipeline of %s failed: %s", self._session.name, code)
        self.end_of_speech()
        if self._answer_task is None:
            self._error = code
        self.reply.fail(code)

    def _on_first_audio(self, at: float) -> None:
        """Tell the device's runtime how long the reply took (its diagnostic sensor)."""
        if self.speech_ended_at is not None:
            self._session.link.runtime.async_set_reply_delay(
                max(0.0, at - self.speech_ended_at)
            )

    def _note_text(self) -> None:
        if self._committed and self.reply.text.strip():
            self._set_responding()

    # Speaking --------------------------------------------------------------------

    async def _async_answer(self, transcript: str) -> None:
        if self._committed:
            await self._send_stt()
        await self._async_speak(self.reply.deltas())

    async def _async_speak(self, deltas: AsyncIterable[str | None]) -> None:
        voice = self._voice or PipelineVoice("", None, None)
        self.result = await speak_reply(
            self._host.hass,
            deltas,
            engine=voice.engine,
            language=voice.language,
            options=voice.options,
            sink=self.speech,
            device_language=self._host.device_language,
        )

    async def _async_say(self, text: str) -> None:
        if self._voice is None:
            await self.speech.alert(text)
            return
        await self._async_speak(_one_text(text))

    async def _async_after_error(self) -> TurnEnd:
        code = self._error or ""
        if code in _SILENT_ERRORS or self._nothing_was_said():
            return TurnEnd.END_CONVERSATION
        key = error_message_key(code)
        await self._async_say(device_message(key, self._host.device_language))
        if code in _UTTERANCE_ERRORS:
            return TurnEnd.LISTEN_AGAIN
        return TurnEnd.END_CONVERSATION

    def _nothing_was_said(self) -> bool:
        """Return whether no speech was heard (a follow-up nobody made)."""
        if self._listening is not None:
            return not self._listening.speech_heard
        return self.mode is not ListenMode.MANUAL and (
            self._vad_used and not self._speech_heard
        )

    # State -------------------------------------------------------------------------

    def _set_responding(self) -> None:
        if not self._responding:
            self._responding = True
            self._host.async_set_responding()

    async def _async_cleanup(self) -> None:
        # Everything that must happen is done before the one wait, which a
        # second cancellation may cut short.
        self.audio.end()
        self.reply.end()
        self.speech.close()
        if self._held is not None:
            device_id, held = self._held
            if not self._committed:
                held.take_back()
            forget_held_actions(self._host.hass, device_id, held)
        answer = self._answer_task
        if answer is not None:
            answer.cancel()
        self._keep_interrupted_answer()
        if self._responding:
            self._host.async_response_finished()
        if answer is not None:
            await asyncio.wait({answer})

    def _keep_interrupted_answer(self) -> None:
        intent = self._intent
        answer = self.reply.text.strip()
        if self.taken_back or not self._interrupted:
            return  # a guess nobody heard is no part of the conversation
        if intent is None or intent.ended or not answer:
            return
        keep_partial_answer(
            self._host.hass,
            intent.conversation_id,
            intent.agent_id,
            intent.question,
            answer,
        )
