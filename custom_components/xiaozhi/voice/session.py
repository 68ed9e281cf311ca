"""The voice layer of one device session: turns, barge-in, follow-ups, announcements.

`VoiceSession` is the `session.SessionHandler` the assist satellite registers for
its device. Each ``listen start`` begins a `turn.VoiceTurn` fed with the
device's audio. What follows a turn depends on how the device listens:

* ``auto``: after ``tts stop`` the firmware listens again and says so with a new
  ``listen start``; when nothing was spoken it is still listening, so the next
  turn starts here.
* ``realtime``: the device never stops listening, so the next turn always starts
  here.
* ``manual`` (push to talk): the device goes idle after the answer.

A ``listen detect`` is the device's wake word, or a typed request from a
client with a keyboard (`wake_words` tells which): a typed request is a turn
of its own, run from the pipeline's intent stage on its text; a wake word is
reported to HA with the next turn.

Follow-ups continue the same conversation (the satellite keeps its conversation
id, so HA's chat session, and its ``continue_conversation`` routing to the agent
that asked, carry over). When a follow-up turn hears nothing, the conversation
is over and the session is closed, which is how the firmware returns to idle.

Barge-in: ``abort``, a wake word or a new ``listen start`` cancel the running
turn (pipeline run, agent request, TTS) and stop its audio at once. A device in
``realtime`` mode is still listening after an interruption, and says nothing
more: the firmware's abort (its button while speaking) is followed by no
``listen start`` (application.cc: ``tts stop`` takes it from Speaking back to
Listening with its audio processor running, so ``StartListeningAudio`` is not
called), nor is py-xiaozhi's wake word while speaking. So after an abort or a
wake word in realtime mode the next turn starts here; a ``listen start`` that
does follow (the firmware's wake word while speaking) simply replaces it.

In auto mode our endpointer ends the utterance (`listening`); when a turn's
early guess is taken back, the session starts the next turn on the whole
utterance at once, so no audio is lost in between.
"""

import asyncio
from collections.abc import AsyncGenerator
import contextlib

from ..const import LOGGER
from ..device.session import DeviceSession
from ..protocol.messages import ListenMode
from ..transport.base import EndReason
from .listening import SessionEndpointing, finished_speaking_settings
from .tts_audio import SPEECH_SAMPLE_RATE
from .turn import SatelliteHost, TurnEnd, VoiceTurn
from .wake_words import is_wake_word


class DeviceDisconnectedError(ConnectionError):
    """The device went away before the announcement was played."""


class VoiceSession:
    """Serves one device session's voice requests (a `session.SessionHandler`).

    Attributes:
        last_turn: The most recent turn (its timings serve diagnostics and the
            latency bench).
    """

    def __init__(self, host: SatelliteHost, session: DeviceSession) -> None:
        """Serve ``session`` through the satellite ``host``."""
        self._host = host
        self._session = session
        self._turn: VoiceTurn | None = None
        self._turn_task: asyncio.Task[None] | None = None
        self._wake_word_phrase: str | None = None
        # Audio outside any listening, since the last listen message: a wake word's.
        self._unheard_audio_bytes = 0
        self.last_turn: VoiceTurn | None = None
        self.endpointing = SessionEndpointing()

    # SessionHandler --------------------------------------------------------------

    def on_connected(self) -> None:
        """Nothing to do until the device listens."""
        LOGGER.debug("Voice session of %s ready", self._session.name)

    def on_disconnected(self) -> None:
        """Stop the running turn (the session ended or another handler took over)."""
        if self._turn_task is None:
            return
        self._turn_task.cancel()
        if self._session.speaking and not self._session.closed:
            self._session.create_task(
                self._session.playback.stop_speaking(), "stop speaking"
            )

    async def on_listen_start(self, mode: ListenMode) -> None:
        """Begin a turn, interrupting the one running."""
        self._unheard_audio_bytes = 0
        await self._async_stop_turn()
        if mode is ListenMode.AUTO:
            await self.endpointing.async_load(self._host.hass)
        self._start_turn(mode)

    async def on_listen_stop(self) -> None:
        """End the utterance (push to talk released, or the device went idle)."""
        self._unheard_audio_bytes = 0
        if self._turn is not None:
            self._turn.stop_listening()

    async def on_wake_word(self, text: str) -> None:
        """Interrupt any answer; answer a typed request, or note the wake word.

        The next turn reports a wake word to HA.
        """
        wake_word = is_wake_word(text, audio_bytes=self._unheard_audio_bytes)
        self._unheard_audio_bytes = 0
        if not wake_word:
            LOGGER.debug("%s typed a request: %r", self._session.name, text)
            await self._async_stop_turn()
            self._start_turn(self._typed_turn_mode(), text=text)
            return
        self._wake_word_phrase = text or None
        await self._async_stop_turn()
        self._listen_on_in_realtime()

    def _typed_turn_mode(self) -> ListenMode:
        """Return how the device listens after a typed request's answer.

        As it listened before; a client that never listened stays as it is
        (the manual mode's end: no listening turn is started, the session stays).
        """
        mode = self._session.listen_mode
        if mode is None or not self._session.listening:
            return ListenMode.MANUAL
        return mode

    async def on_abort(self, reason: str | None) -> None:
        """Cancel the turn (the session already stopped the audio)."""
        await self._async_stop_turn()
        self._listen_on_in_realtime()

    def _listen_on_in_realtime(self) -> None:
        """Hear the next utterance of a realtime device, which never says it listens."""
        session = self._session
        if (
            session.listen_mode is ListenMode.REALTIME
            and session.listening
            and not session.closed
            and self._turn_task is None
        ):
            self._start_turn(ListenMode.REALTIME)

    def on_audio(self, pcm: bytes) -> None:
        """Feed the utterance being listened to; other audio is dropped."""
        if not self._session.listening:
            self._unheard_audio_bytes += len(pcm)
        if self._turn is not None:
            self._turn.hear(pcm)

    # Announcements ---------------------------------------------------------------

    async def async_announce(self, audio: AsyncGenerator[bytes], message: str) -> None:
        """Play 24 kHz mono PCM, with ``message`` as subtitle; waits for the end.

        The device then listens as after an answer.

        Raises:
            DeviceDisconnectedError: The session ended first.
        """
        await self._async_stop_turn()
        task = self._session.create_task(
            self._async_play_announcement(audio, message), "announcement"
        )
        await asyncio.wait({task})
        if task.cancelled():
            raise DeviceDisconnectedError(f"{self._session.name} disconnected")
        task.result()

    async def _async_play_announcement(
        self, audio: AsyncGenerator[bytes], message: str
    ) -> None:
        async with contextlib.aclosing(audio):
            await self._session.playback.start_speaking()
            if message:
                await self._session.send_sentence(message)
            try:
                played = await self._session.playback.play_pcm(
                    audio, SPEECH_SAMPLE_RATE
                )
            finally:
                await self._session.playback.stop_speaking()
        if played and self._session.listen_mode is ListenMode.REALTIME:
            self._start_turn(ListenMode.REALTIME)

    # Turns -----------------------------------------------------------------------

    def _start_turn(self, mode: ListenMode, *, text: str | None = None) -> None:
        listening = None
        if mode is ListenMode.AUTO and text is None:
            listening = self.endpointing.listening(
                finished_speaking_settings(
                    self._host.hass, self._host.vad_sensitivity_entity_id
                )
            )
        turn = VoiceTurn(
            self._host,
            self._session,
            mode,
            self._wake_word_phrase,
            text=text,
            listening=listening,
            on_take_back=self._take_back,
        )
        self._wake_word_phrase = None
        self._turn = self.last_turn = turn
        self._turn_task = self._session.create_task(self._async_run_turn(turn), "turn")

    def _take_back(self, turn: VoiceTurn) -> None:
        """Start over on the whole utterance: ``turn`` guessed its end too early."""
        previous = self._turn_task
        if self._turn is not turn or previous is None:
            return
        previous.cancel()
        # No wake word: it was reported, and again would be a duplicate wake-up.
        retake = VoiceTurn(
            self._host,
            self._session,
            turn.mode,
            listening=turn.listening,
            on_take_back=self._take_back,
        )
        self._turn = self.last_turn = retake
        self._turn_task = self._session.create_task(
            self._async_run_turn(retake, after=previous), "turn"
        )

    async def _async_run_turn(
        self, turn: VoiceTurn, after: asyncio.Task[None] | None = None
    ) -> None:
        if after is not None:
            await asyncio.wait({after})
        end = await turn.run()
        if self._turn is turn:
            self._turn = self._turn_task = None
        LOGGER.debug("Turn of %s ended: %s", self._session.name, end.name)
        match end:
            case TurnEnd.END_CONVERSATION if turn.mode is not ListenMode.MANUAL:
                self._session.end(EndReason.NORMAL, "the conversation is over")
            case TurnEnd.LISTEN_AGAIN if self._device_still_listens(turn):
                self._start_turn(turn.mode)

    @staticmethod
    def _device_still_listens(turn: VoiceTurn) -> bool:
        """Return whether the device listens on without a new ``listen start``."""
        if turn.mode is ListenMode.REALTIME:
            return True
        return turn.mode is ListenMode.AUTO and not turn.spoke

    async def _async_stop_turn(self) -> None:
        """Cancel the running turn, silence the device, wait for the turn's end."""
        while (task := self._turn_task) is not None:
            task.cancel()
            # The audio stops now, not after the turn has cleaned up.
            await self._session.playback.stop_speaking()
            await asyncio.wait({task})
            if self._turn_task is task:
                self._turn = self._turn_task = None
        await self._session.playback.stop_speaking()
