"""One voice session of a device: from its hello to the end of the conversation.

The device's link (``link.py``) opens a :class:`DeviceSession` when the device
says hello and routes the session's messages to it. The session answers the
hello, hands ``listen`` and ``abort`` to its :class:`handler.SessionHandler`
(the voice layer), decodes the uplink Opus audio for it, and plays replies
through its :class:`playback.Playback`. It ends when the voice layer ends the
conversation, the device goes quiet for too long, or its link ends; every task
and timer it started ends with it.

Nothing here knows the transport: the link sends what the session writes, and
the transport says what the server hello tells about it.
"""

from collections.abc import Awaitable, Callable, Coroutine, Mapping
import secrets
from typing import TYPE_CHECKING, Any, Final

from ..const import LOGGER
from ..protocol.codec import CodecError, OpusDecoder
from ..protocol.firmware import (
    DOWNLINK_FRAME_DURATION_MS,
    DOWNLINK_SAMPLE_RATE,
    UPLINK_SAMPLE_RATE,
)
from ..protocol.messages import (
    Abort,
    Listen,
    ListenMode,
    ListenState,
    hello_message,
    llm_message,
    stt_message,
    tts_sentence_start_message,
)
from ..transport.base import EndReason
from .handler import LoggingHandler, SessionHandler
from .playback import Playback
from .supervisor import SessionClosedError, Supervisor

if TYPE_CHECKING:
    import asyncio

    from ..protocol.messages import Hello
    from .link import DeviceLink
    from .runtime import DeviceRuntime

# The device drops a channel after 120 s without incoming frames; we end the
# session when three checks 45 s apart saw nothing from it (135 to 180 s of
# silence), never while a reply plays (the device sends nothing while it speaks,
# unless in realtime mode).
IDLE_CHECK_INTERVAL_S: Final = 45.0
IDLE_CHECKS_BEFORE_CLOSE: Final = 3


class DeviceSession:
    """One voice session: the device's hello, its listening, our replies.

    Attributes:
        link: The device's link, which carries the session.
        hello: The device's hello that opened the session.
        session_id: Assigned by us, echoed by the device in every message.
        listening: The device is capturing audio (between listen start and stop).
        listen_mode: The mode of the last listen start.
        playback: The speaking state and the paced downlink of replies.
        end_reason: Why the session ended, once it has.
    """

    def __init__(self, link: DeviceLink, hello: Hello) -> None:
        """Create the session ``hello`` opens on ``link``; call :meth:`async_start`."""
        self.link = link
        self.hello = hello
        self.session_id = secrets.token_hex(8)
        self.listening = False
        self.listen_mode: ListenMode | None = None
        self.end_reason: EndReason | None = None
        self._handler: SessionHandler | None = None
        self._decoder = OpusDecoder(UPLINK_SAMPLE_RATE)
        self._supervisor = Supervisor(link.hass, mac=link.mac, owner=link.name)
        self._incoming_since_check = False
        self._idle_checks = 0
        self._ending = False
        self.playback = Playback(
            self.session_id,
            send_json=self.send_json,
            send_audio=self._async_send_audio,
            start_task=lambda coro: self.create_task(coro, "downlink"),
            on_change=self.runtime.async_update_listeners,
        )

    @property
    def name(self) -> str:
        """Return how log lines name the device."""
        return self.link.name

    @property
    def mac(self) -> str:
        """Return the device's MAC."""
        return self.link.mac

    @property
    def runtime(self) -> DeviceRuntime:
        """Return the device's runtime."""
        return self.link.runtime

    @property
    def ready(self) -> bool:
        """Return whether the session is open and its handler serves it."""
        return self._handler is not None and not self._ending

    @property
    def closed(self) -> bool:
        """Return whether the session has ended."""
        return self._ending

    @property
    def speaking(self) -> bool:
        """Return whether a reply is playing."""
        return self.playback.speaking

    @property
    def handler(self) -> SessionHandler | None:
        """Return the handler serving the session (None until it started)."""
        return self._handler

    # ------------------------------------------------------------ lifecycle

    async def async_start(self) -> None:
        """Answer the hello, then serve the session with a handler.

        Raises:
            SessionClosedError: The hello could not be sent (the link ended).
        """
        await self.async_send_hello()
        self._handler = self._new_handler()
        self._call_handler_sync("on_connected", self._handler.on_connected)
        self._schedule_idle_check()
        self.runtime.async_update_listeners()

    async def async_send_hello(self) -> None:
        """Send the server hello: its session id, audio format and transport."""
        await self.send_json(
            hello_message(
                self.session_id,
                sample_rate=DOWNLINK_SAMPLE_RATE,
                frame_duration=DOWNLINK_FRAME_DURATION_MS,
                **self.link.transport.server_hello_fields(),
            )
        )

    def create_task[T](
        self, coro: Coroutine[Any, Any, T], name: str
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task that ends with the session.

        Its exceptions are logged (a closed session's are expected and not).

        Raises:
            SessionClosedError: The session has ended.
        """
        return self._supervisor.create_task(coro, name)

    def end(self, reason: EndReason, detail: str) -> None:
        """End the session now; its link decides what that means for the device.

        Stops playback, cancels the session's tasks and timers and detaches the
        handler. Calling it again does nothing.
        """
        if self._ending:
            return
        self._ending = True
        self.end_reason = reason
        self.playback.close()
        self._supervisor.close()
        self.listening = False
        if self._handler is not None:
            self._call_handler_sync("on_disconnected", self._handler.on_disconnected)
        self.link.session_ended(self, reason, detail)

    def _schedule_idle_check(self) -> None:
        self._supervisor.call_later("idle", IDLE_CHECK_INTERVAL_S, self._check_idle)

    def _check_idle(self) -> None:
        if self._incoming_since_check or self.speaking or self.playback.downlink.active:
            self._idle_checks = 0
        else:
            self._idle_checks += 1
        self._incoming_since_check = False
        if self._idle_checks >= IDLE_CHECKS_BEFORE_CLOSE:
            self.end(EndReason.IDLE_TIMEOUT, "nothing received for over 2 minutes")
            return
        self._schedule_idle_check()

    # ------------------------------------------------------------ handler

    def _new_handler(self) -> SessionHandler:
        factory = self.runtime.handler_factory
        if factory is None:
            return LoggingHandler(self)
        try:
            return factory(self)
        except Exception:
            LOGGER.exception("Cannot create the voice handler of %s", self.name)
            return LoggingHandler(self)

    def refresh_handler(self) -> None:
        """Serve the session with a handler from the runtime's current factory.

        Before the session started there is nothing to replace: starting creates
        the handler from the factory current at that time.
        """
        old = self._handler
        if old is None or self._ending:
            return
        self._handler = self._new_handler()
        self._call_handler_sync("on_disconnected", old.on_disconnected)
        self._call_handler_sync("on_connected", self._handler.on_connected)

    def _call_handler_sync(
        self, name: str, method: Callable[..., object], *args: Any
    ) -> None:
        try:
            method(*args)
        except Exception as err:  # noqa: BLE001 - a handler bug must not end the session
            self._handler_failed(name, err)

    async def _async_call_handler(
        self, name: str, method: Callable[..., Awaitable[object]], *args: Any
    ) -> None:
        try:
            await method(*args)
        except Exception as err:  # noqa: BLE001 - a handler bug must not end the session
            self._handler_failed(name, err)

    def _handler_failed(self, name: str, err: Exception) -> None:
        kind = f"handler {name} error"
        bad_input = self.link.bad_input
        count = bad_input[kind] = bad_input.get(kind, 0) + 1
        if count == 1:
            LOGGER.error(
                "Voice handler of %s failed in %s", self.name, name, exc_info=err
            )
        else:
            LOGGER.debug("Voice handler of %s failed in %s: %r", self.name, name, err)

    # ------------------------------------------------------------ incoming

    def note_incoming(self) -> None:
        """Record that something arrived from the device: it is alive."""
        self._incoming_since_check = True

    async def async_handle_message(self, message: Listen | Abort) -> None:
        """Act on a ``listen`` or ``abort`` message of the session."""
        if self._ending or self._handler is None:
            return
        match message:
            case Listen():
                await self._async_handle_listen(message, self._handler)
            case Abort():
                await self.playback.stop_speaking()
                await self._async_call_handler(
                    "on_abort", self._handler.on_abort, message.reason
                )

    def handle_audio(self, packet: bytes) -> None:
        """Decode one uplink Opus packet and hand the PCM to the handler."""
        if self._ending or self._handler is None:
            return
        try:
            pcm = self._decoder.decode(packet)
        except CodecError as err:
            self.link.report_bad_input("invalid Opus audio", err)
            return
        if pcm:
            self._call_handler_sync("on_audio", self._handler.on_audio, pcm)

    async def _async_handle_listen(
        self, message: Listen, handler: SessionHandler
    ) -> None:
        match message.state:
            case ListenState.START:
                mode = message.mode or ListenMode.AUTO
                self.listening = True
                self.listen_mode = mode
                self.runtime.async_update_listeners()
                await self._async_call_handler(
                    "on_listen_start", handler.on_listen_start, mode
                )
            case ListenState.STOP:
                self.listening = False
                self.runtime.async_update_listeners()
                await self._async_call_handler("on_listen_stop", handler.on_listen_stop)
            case ListenState.DETECT:
                await self._async_call_handler(
                    "on_wake_word", handler.on_wake_word, message.text or ""
                )

    # ------------------------------------------------------------ outgoing

    async def send_json(self, message: Mapping[str, Any]) -> None:
        """Send one JSON message of the session.

        Raises:
            SessionClosedError: The session has ended (or ends because of the send).
            MessageError: The message cannot be encoded as JSON.
        """
        if self._ending:
            raise SessionClosedError(f"session of {self.name} has ended")
        await self.link.send_json(message)

    async def _async_send_audio(self, packet: bytes) -> None:
        if self._ending:
            raise SessionClosedError(f"session of {self.name} has ended")
        await self.link.send_audio(packet)

    async def send_stt(self, text: str) -> None:
        """Show what the user said."""
        await self.send_json(stt_message(text, session_id=self.session_id))

    async def send_emotion(self, emotion: str, emoji: str = "") -> None:
        """Show an emotion (see ``protocol.messages.EMOTIONS``); the emoji is informational."""
        await self.send_json(llm_message(emotion, emoji, session_id=self.session_id))

    async def send_sentence(self, text: str) -> None:
        """Show the subtitle of the sentence about to play."""
        await self.send_json(
            tts_sentence_start_message(text, session_id=self.session_id)
        )
