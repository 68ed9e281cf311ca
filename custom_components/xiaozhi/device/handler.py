"""The interface between a device's voice session and the voice layer.

The voice layer (``voice/session.py``) implements :class:`SessionHandler`; until
it registers a factory on the device's runtime, a :class:`LoggingHandler` serves
the sessions.
"""

from typing import TYPE_CHECKING, Protocol

from ..const import LOGGER
from ..protocol.messages import ListenMode
from ..protocol.sanitize import printable

if TYPE_CHECKING:
    from .session import DeviceSession


class SessionHandler(Protocol):
    """What the voice layer implements to receive a device's events.

    One handler serves one voice session; :attr:`DeviceRuntime.handler_factory`
    creates it when the device's hello arrives. The receive loop awaits the
    coroutines in order, so they must return promptly: start long work (a
    pipeline run) with :meth:`DeviceSession.create_task`. Exceptions are logged
    and do not end the session.
    """

    def on_connected(self) -> None:
        """The session is ready (hello exchanged) and this handler serves it."""

    def on_disconnected(self) -> None:
        """The session ended, or another handler replaces this one."""

    async def on_listen_start(self, mode: ListenMode) -> None:
        """The device started capturing audio (``auto``, ``manual``, ``realtime``)."""

    async def on_listen_stop(self) -> None:
        """The device stopped capturing (manual mode: end of the utterance)."""

    async def on_wake_word(self, text: str) -> None:
        """The device detected its wake word (the text of the word)."""

    async def on_abort(self, reason: str | None) -> None:
        """The device asked to stop speaking (reason ``wake_word_detected`` or None).

        The session has already stopped the downlink and sent ``tts stop``.
        """

    def on_audio(self, pcm: bytes) -> None:
        """Audio from the device: 16 kHz mono s16le PCM, one Opus frame's worth.

        Called for every frame after the hello, including wake word audio sent
        before ``listen detect``; it must not block.
        """


class LoggingHandler:
    """The handler used until the voice layer registers one: logs events, drops audio."""

    def __init__(self, session: DeviceSession) -> None:
        """Serve ``session``."""
        self._session = session
        self.dropped_audio_bytes = 0

    def on_connected(self) -> None:
        """Log that nothing will answer the device."""
        LOGGER.debug(
            "No voice handler for %s yet: its requests are logged, not answered",
            self._session.name,
        )

    def on_disconnected(self) -> None:
        """Log how much audio went nowhere."""
        LOGGER.debug(
            "Dropped %d bytes of audio from %s",
            self.dropped_audio_bytes,
            self._session.name,
        )

    async def on_listen_start(self, mode: ListenMode) -> None:
        """Log the event."""
        LOGGER.debug("%s starts listening (%s)", self._session.name, mode)

    async def on_listen_stop(self) -> None:
        """Log the event."""
        LOGGER.debug("%s stops listening", self._session.name)

    async def on_wake_word(self, text: str) -> None:
        """Log the event."""
        LOGGER.debug(
            "%s heard its wake word %s",
            self._session.name,
            printable(repr(text), 64),
        )

    async def on_abort(self, reason: str | None) -> None:
        """Log the event."""
        LOGGER.debug("%s aborts speaking (%s)", self._session.name, reason)

    def on_audio(self, pcm: bytes) -> None:
        """Drop the audio."""
        self.dropped_audio_bytes += len(pcm)
