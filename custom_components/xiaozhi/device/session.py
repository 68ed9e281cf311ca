"""One live device session: state, message routing and the handler interface.

A :class:`DeviceSession` exists from the moment an authenticated device socket is
open until it closes. It answers the device's hello, routes the device's messages
to a :class:`SessionHandler` (the voice layer; a :class:`LoggingHandler` until one
is registered on the device's runtime), decodes its Opus audio, sends replies
through a paced downlink, and runs the MCP client for the device's tools.

It knows nothing of WebSockets: the socket side (websocket.py) hands it parsed
messages and audio packets and gives it a :class:`Transport` to write to. Every task
and timer it starts is cancelled when it ends.
"""

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Coroutine,
    Iterable,
    Mapping,
)
from contextlib import aclosing
from enum import IntEnum
import secrets
from typing import TYPE_CHECKING, Any, Final, Protocol

from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant

from ..const import LOGGER
from ..protocol.codec import CodecError, OpusDecoder, OpusEncoder
from ..protocol.firmware import (
    AUDIO_FORMAT,
    DOWNLINK_FRAME_DURATION_MS,
    DOWNLINK_SAMPLE_RATE,
    SERVER_HELLO_TIMEOUT_S,
    UPLINK_SAMPLE_RATE,
)
from ..protocol.framing import FrameError, encode_audio_frame
from ..protocol.mcp import (
    DEFAULT_TOOL_TIMEOUT_S,
    McpClient,
    McpClientInfo,
    McpClosedError,
    McpError,
    McpToolResult,
)
from ..protocol.messages import (
    Abort,
    Hello,
    IncomingMessage,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    Unknown,
    alert_message,
    encode_message,
    hello_message,
    llm_message,
    mcp_message,
    stt_message,
    system_reboot_message,
    tts_sentence_start_message,
    tts_start_message,
    tts_stop_message,
)
from ..protocol.pacing import PacedSender

if TYPE_CHECKING:
    from .runtime import DeviceRuntime

# We give the device as long to say hello as it gives us.
HELLO_TIMEOUT_S: Final = SERVER_HELLO_TIMEOUT_S
# The device drops a channel after 120 s without incoming frames; we close ours when
# three checks 45 s apart saw nothing from it (135 to 180 s of silence), never while
# a reply plays (the device sends nothing while it speaks, unless in realtime mode).
IDLE_CHECK_INTERVAL_S: Final = 45.0
IDLE_CHECKS_BEFORE_CLOSE: Final = 3
# Who calls the device's tools, as MCP's initialize tells it.
MCP_CLIENT: Final = McpClientInfo("Home Assistant", ha_version)
_DOWNLINK_FRAME_S: Final = DOWNLINK_FRAME_DURATION_MS / 1000


class CloseCode(IntEnum):
    """Why a session ended; sent as the WebSocket close code.

    The table of codes and their reasons is documented in websocket.py.
    """

    NORMAL = 1000
    SERVER_SHUTDOWN = 1001
    BAD_FRAME = 1002
    INVALID_TEXT = 1007
    MESSAGE_TOO_BIG = 1009
    INTERNAL_ERROR = 1011
    PROTOCOL_ERROR = 4000
    UNAUTHORIZED = 4001
    BAD_HANDSHAKE = 4002
    HELLO_TIMEOUT = 4003
    REPLACED = 4004
    SERVER_CLOSED = 4005
    IDLE_TIMEOUT = 4006
    SEND_TIMEOUT = 4007
    RATE_LIMITED = 4008
    SERVER_BUSY = 4009


# Codes that mean the device (or its network) misbehaved: logged as warnings.
_WARNING_CLOSE_CODES: Final = frozenset(
    {
        CloseCode.BAD_FRAME,
        CloseCode.INVALID_TEXT,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.INTERNAL_ERROR,
        CloseCode.PROTOCOL_ERROR,
        CloseCode.HELLO_TIMEOUT,
        CloseCode.SEND_TIMEOUT,
        CloseCode.RATE_LIMITED,
    }
)
# Bad input is quoted in log lines up to this many characters.
MAX_LOGGED_DETAIL: Final = 200


def log_excerpt(detail: object) -> str:
    """Return ``detail`` as text short enough for a log line."""
    text = str(detail)
    if len(text) <= MAX_LOGGED_DETAIL:
        return text
    return f"{text[:MAX_LOGGED_DETAIL]}... ({len(text)} characters)"


class SessionClosedError(ConnectionError):
    """The session has ended; nothing more can be sent to the device."""


class TransportError(ConnectionError):
    """The transport could not deliver a message (the connection is gone)."""


class SendTimeoutError(TransportError):
    """A send blocked too long: the device stopped reading."""


class Transport(Protocol):
    """What a session needs of its connection."""

    async def send_text(self, text: str) -> None:
        """Send a text message.

        Raises:
            TransportError: The message could not be delivered.
        """

    async def send_binary(self, data: bytes) -> None:
        """Send a binary message.

        Raises:
            TransportError: The message could not be delivered.
        """

    async def close(self, code: int, reason: str) -> None:
        """Close the connection, telling the peer why; never raises."""


class SessionHandler(Protocol):
    """What the voice layer implements to receive a device's events.

    One handler serves one session; :attr:`DeviceRuntime.handler_factory` creates
    it when the device's hello arrives. The receive loop awaits the coroutines in
    order, so they must return promptly: start long work (a pipeline run) with
    :meth:`DeviceSession.create_task`. Exceptions are logged and do not end the
    session.
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
        LOGGER.debug("%s heard its wake word %r", self._session.name, text)

    async def on_abort(self, reason: str | None) -> None:
        """Log the event."""
        LOGGER.debug("%s aborts speaking (%s)", self._session.name, reason)

    def on_audio(self, pcm: bytes) -> None:
        """Drop the audio."""
        self.dropped_audio_bytes += len(pcm)


async def _async_iterate[T](items: AsyncIterable[T] | Iterable[T]) -> AsyncGenerator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _async_encode(
    encoder: OpusEncoder, chunks: AsyncIterable[bytes] | Iterable[bytes]
) -> AsyncGenerator[bytes]:
    async with aclosing(_async_iterate(chunks)) as source:
        async for chunk in source:
            for packet in encoder.encode(chunk):
                yield packet
    for packet in encoder.flush():
        yield packet


class DeviceSession:
    """One authenticated device connection, from the socket opening to its close.

    Attributes:
        session_id: Assigned by us, echoed by the device in every message.
        mac: The device's MAC (its Device-Id).
        name: How log lines name the device.
        protocol_version: Binary framing of the connection (1, 2 or 3).
        hello: The device's hello, once received.
        listening: The device is capturing audio (between listen start and stop).
        listen_mode: The mode of the last listen start.
        speaking: A reply is playing (between tts start and tts stop).
        close_code: Why the session ended, once it has.
        close_reason: The reason text sent with the close code.
        bad_input: How often each kind of bad input arrived.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        runtime: DeviceRuntime,
        transport: Transport,
        *,
        mac: str,
        protocol_version: int,
        name: str | None = None,
    ) -> None:
        """Create the session of a just-authenticated connection; call :meth:`start`."""
        self.hass = hass
        self.runtime = runtime
        self.session_id = secrets.token_hex(8)
        self.mac = mac
        self.name = name or mac
        self.protocol_version = protocol_version
        self.hello: Hello | None = None
        self.listening = False
        self.listen_mode: ListenMode | None = None
        self.speaking = False
        self.close_code: CloseCode | None = None
        self.close_reason = ""
        self.bad_input: dict[str, int] = {}
        self._transport = transport
        self._handler: SessionHandler | None = None
        self._decoder: OpusDecoder | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: dict[str, asyncio.TimerHandle] = {}
        self._incoming_since_check = False
        self._idle_checks = 0
        self._ending = False
        self._closed = asyncio.Event()
        self._play_lock = asyncio.Lock()
        self._play_epoch = 0
        self.downlink = PacedSender(
            self._async_send_audio,
            lambda coro: self.create_task(coro, "downlink"),
            frame_duration=_DOWNLINK_FRAME_S,
        )
        self._mcp = McpClient(self._async_send_mcp, client=MCP_CLIENT, name=self.name)

    # ------------------------------------------------------------ state

    @property
    def ready(self) -> bool:
        """Return whether the hello was exchanged and the session is still open."""
        return self.hello is not None and not self._ending

    @property
    def closed(self) -> bool:
        """Return whether the session has ended (its socket may still be closing)."""
        return self._ending

    @property
    def mcp_supported(self) -> bool:
        """Return whether the device announced MCP tools in its hello."""
        return self.hello is not None and self.hello.mcp

    @property
    def handler(self) -> SessionHandler | None:
        """Return the handler serving the session (None before the hello)."""
        return self._handler

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start the hello and idle timers."""
        self._timers["hello"] = self.hass.loop.call_later(
            HELLO_TIMEOUT_S, self._on_hello_timeout
        )
        self._schedule_idle_check()

    def create_task[T](
        self, coro: Coroutine[Any, Any, T], name: str
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task that ends with the session.

        Its exceptions are logged (a closed session's are expected and not).

        Raises:
            SessionClosedError: The session has ended.
        """
        if self._ending:
            coro.close()
            raise SessionClosedError(f"session of {self.name} has ended")
        task = self.hass.async_create_background_task(
            coro, f"xiaozhi {self.mac} {name}", eager_start=False
        )
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        error = task.exception()
        if error is not None and not isinstance(
            error, SessionClosedError | McpClosedError
        ):
            LOGGER.error(
                "Task %s of %s failed", task.get_name(), self.name, exc_info=error
            )

    def end(self, code: CloseCode, reason: str) -> None:
        """End the session now; the socket is closed in the background.

        Stops playback, fails pending MCP calls, cancels the session's tasks and
        timers, detaches the handler and tells the runtime's listeners. Calling it
        again does nothing.
        """
        if self._ending:
            return
        self._ending = True
        self.close_code = code
        self.close_reason = reason
        self._log_end(code, reason)
        for timer in self._timers.values():
            timer.cancel()
        self._timers.clear()
        self.downlink.close()
        self._mcp.close()
        for task in list(self._tasks):
            if task is not asyncio.current_task():
                task.cancel()
        self.listening = self.speaking = False
        if self._handler is not None:
            self._call_handler_sync("on_disconnected", self._handler.on_disconnected)
        self.runtime.async_detach(self)
        self.hass.async_create_background_task(
            self._async_close_transport(code, reason),
            f"xiaozhi {self.mac} close",
            eager_start=False,
        )

    def _log_end(self, code: CloseCode, reason: str) -> None:
        if code in _WARNING_CLOSE_CODES:
            LOGGER.warning(
                "Closing the session of %s: %s", self.name, log_excerpt(reason)
            )
        elif code in (CloseCode.REPLACED, CloseCode.IDLE_TIMEOUT):
            LOGGER.info("Closing the session of %s: %s", self.name, log_excerpt(reason))
        else:
            LOGGER.debug("Session of %s ended: %s", self.name, log_excerpt(reason))

    async def _async_close_transport(self, code: CloseCode, reason: str) -> None:
        try:
            await self._transport.close(code, reason)
        finally:
            self._closed.set()

    async def async_close(
        self, reason: str, code: CloseCode = CloseCode.SERVER_CLOSED
    ) -> None:
        """End the session and wait until its socket is closed."""
        self.end(code, reason)
        await self.async_wait_closed()

    async def async_wait_closed(self) -> None:
        """Wait until the session has ended and its socket is closed."""
        await self._closed.wait()

    def _on_hello_timeout(self) -> None:
        self._timers.pop("hello", None)
        self.end(CloseCode.HELLO_TIMEOUT, f"no hello within {HELLO_TIMEOUT_S:g} s")

    def _schedule_idle_check(self) -> None:
        self._timers["idle"] = self.hass.loop.call_later(
            IDLE_CHECK_INTERVAL_S, self._check_idle
        )

    def _check_idle(self) -> None:
        if self._incoming_since_check or self.speaking or self.downlink.active:
            self._idle_checks = 0
        else:
            self._idle_checks += 1
        self._incoming_since_check = False
        if self._idle_checks >= IDLE_CHECKS_BEFORE_CLOSE:
            self._timers.pop("idle", None)
            self.end(CloseCode.IDLE_TIMEOUT, "nothing received for over 2 minutes")
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

        Before the hello completes there is nothing to replace: the hello creates
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
        count = self.bad_input[kind] = self.bad_input.get(kind, 0) + 1
        if count == 1:
            LOGGER.error(
                "Voice handler of %s failed in %s", self.name, name, exc_info=err
            )
        else:
            LOGGER.debug("Voice handler of %s failed in %s: %r", self.name, name, err)

    # ------------------------------------------------------------ incoming

    def note_incoming(self) -> None:
        """Record that a frame arrived (any kind): the device is alive."""
        self._incoming_since_check = True

    def report_bad_input(self, kind: str, detail: object) -> None:
        """Log bad input from the device: the first of a kind as a warning."""
        count = self.bad_input[kind] = self.bad_input.get(kind, 0) + 1
        if count == 1:
            LOGGER.warning(
                "Ignoring %s from %s: %s (more are logged at debug level)",
                kind,
                self.name,
                log_excerpt(detail),
            )
        else:
            LOGGER.debug(
                "Ignoring %s from %s: %s", kind, self.name, log_excerpt(detail)
            )

    async def async_handle_message(self, message: IncomingMessage) -> None:
        """Act on one parsed JSON message from the device."""
        if self._ending:
            return
        if isinstance(message, Hello):
            await self._async_handle_hello(message)
            return
        if self._handler is None:
            self.report_bad_input("message before hello", type(message).__name__)
            return
        match message:
            case Listen():
                await self._async_handle_listen(message, self._handler)
            case Abort():
                await self.stop_speaking()
                await self._async_call_handler(
                    "on_abort", self._handler.on_abort, message.reason
                )
            case Mcp():
                self._mcp.handle_message(message.payload)
            case Unknown():
                LOGGER.debug(
                    "Ignoring %s message from %s",
                    log_excerpt(repr(message.type)),
                    self.name,
                )

    def handle_audio(self, packet: bytes) -> None:
        """Decode one uplink Opus packet and hand the PCM to the handler."""
        if self._ending:
            return
        if self._decoder is None or self._handler is None:
            self.report_bad_input("audio before hello", f"{len(packet)} bytes")
            return
        try:
            pcm = self._decoder.decode(packet)
        except CodecError as err:
            self.report_bad_input("invalid Opus audio", err)
            return
        if pcm:
            self._call_handler_sync("on_audio", self._handler.on_audio, pcm)

    async def _async_handle_hello(self, hello: Hello) -> None:
        if self.hello is not None:
            self.report_bad_input("second hello", "answered with the same hello")
            await self._async_send_server_hello()
            return
        if hello.audio_params.format != AUDIO_FORMAT:
            self.end(
                CloseCode.PROTOCOL_ERROR,
                f"unsupported audio format {hello.audio_params.format!r}",
            )
            return
        if hello.version != self.protocol_version:
            LOGGER.debug(
                "%s says version %d in its hello, %d in its handshake: using %d",
                self.name,
                hello.version,
                self.protocol_version,
                self.protocol_version,
            )
        timer = self._timers.pop("hello", None)
        if timer is not None:
            timer.cancel()
        self.hello = hello
        self._decoder = OpusDecoder(UPLINK_SAMPLE_RATE)
        await self._async_send_server_hello()
        self._handler = self._new_handler()
        self._call_handler_sync("on_connected", self._handler.on_connected)
        self.runtime.async_update_listeners()
        if hello.mcp:
            self.create_task(self._async_discover_tools(), "mcp discovery")

    async def _async_send_server_hello(self) -> None:
        await self.send_json(
            hello_message(
                self.session_id,
                version=self.protocol_version,
                sample_rate=DOWNLINK_SAMPLE_RATE,
                frame_duration=DOWNLINK_FRAME_DURATION_MS,
            )
        )

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

    async def _async_discover_tools(self) -> None:
        try:
            info = await self._mcp.initialize()
            tools = await self._mcp.list_tools()
        except McpClosedError:
            return
        except McpError as err:
            LOGGER.warning("Could not list the tools of %s: %s", self.name, err)
            return
        LOGGER.debug(
            "%s (%s %s) offers %d tools",
            self.name,
            info.name,
            info.version,
            len(tools),
        )
        self.runtime.async_set_tools(tools)

    # ------------------------------------------------------------ outgoing

    async def _async_transmit[P: (str, bytes)](
        self, send: Callable[[P], Awaitable[None]], payload: P
    ) -> None:
        if self._ending:
            raise SessionClosedError(f"session of {self.name} has ended")
        try:
            await send(payload)
        except SendTimeoutError as err:
            self.end(CloseCode.SEND_TIMEOUT, "the device stopped reading")
            raise SessionClosedError(str(err)) from err
        except TransportError as err:
            self.end(CloseCode.NORMAL, f"connection lost: {err}")
            raise SessionClosedError(str(err)) from err

    async def send_json(self, message: Mapping[str, Any]) -> None:
        """Send one JSON message as a text frame.

        Raises:
            SessionClosedError: The session has ended (or ends because of the send).
            MessageError: The message cannot be encoded as JSON.
        """
        await self._async_transmit(self._transport.send_text, encode_message(message))

    async def _async_send_mcp(self, payload: dict[str, Any]) -> None:
        await self.send_json(mcp_message(payload, session_id=self.session_id))

    async def _async_send_audio(self, packet: bytes) -> None:
        try:
            frame = encode_audio_frame(packet, self.protocol_version)
        except FrameError as err:
            LOGGER.warning("Not sending an Opus packet to %s: %s", self.name, err)
            return
        await self._async_transmit(self._transport.send_binary, frame)

    async def send_stt(self, text: str) -> None:
        """Show what the user said."""
        await self.send_json(stt_message(text, session_id=self.session_id))

    async def send_emotion(self, emotion: str, emoji: str = "") -> None:
        """Show an emotion (see ``protocol.EMOTIONS``); the emoji is informational."""
        await self.send_json(llm_message(emotion, emoji, session_id=self.session_id))

    async def send_sentence(self, text: str) -> None:
        """Show the subtitle of the sentence about to play."""
        await self.send_json(
            tts_sentence_start_message(text, session_id=self.session_id)
        )

    async def send_alert(
        self, status: str, message: str, emotion: str = "neutral"
    ) -> None:
        """Show an alert; the device ignores it unless all three texts are set."""
        await self.send_json(
            alert_message(status, message, emotion, session_id=self.session_id)
        )

    async def reboot(self) -> None:
        """Tell the device to reboot."""
        await self.send_json(system_reboot_message(session_id=self.session_id))

    async def start_speaking(self) -> None:
        """Send ``tts start`` (the device plays audio only after it) unless speaking."""
        if self.speaking:
            return
        self.speaking = True
        self.downlink.reset()
        self.runtime.async_update_listeners()
        await self.send_json(tts_start_message(session_id=self.session_id))

    async def stop_speaking(self) -> None:
        """End or cut short the reply: drop unsent audio, send ``tts stop``.

        Call it after the last :meth:`play_opus` / :meth:`play_pcm` of a reply
        returned, or at any time to interrupt (a play in progress returns False).
        """
        self._play_epoch += 1
        self.downlink.stop()
        if not self.speaking:
            return
        self.speaking = False
        self.runtime.async_update_listeners()
        await self.send_json(tts_stop_message(session_id=self.session_id))

    async def play_opus(self, packets: AsyncIterable[bytes] | Iterable[bytes]) -> bool:
        """Play 24 kHz mono 60 ms Opus packets, paced at real time.

        Sends ``tts start`` first when not speaking. Plays are serialised; a reply
        may be several plays (one per sentence) before :meth:`stop_speaking`. A
        play stopped while it waits for its source returns when the source yields
        or ends: cancel the producer too (in ``on_abort``) to end it at once.

        Returns:
            True once every packet was sent; False when the reply was stopped
            (:meth:`stop_speaking`, an abort from the device) or the session ended.

        Raises:
            SessionClosedError: The session had ended before the play started.
        """
        epoch = self._play_epoch
        async with self._play_lock:
            if epoch != self._play_epoch:
                return False
            await self.start_speaking()
            async with aclosing(_async_iterate(packets)) as source:
                async for packet in source:
                    if epoch != self._play_epoch:
                        return False
                    if packet and not await self.downlink.put(packet):
                        return False
            return await self.downlink.drain() and epoch == self._play_epoch

    async def play_pcm(
        self, chunks: AsyncIterable[bytes] | Iterable[bytes], sample_rate: int
    ) -> bool:
        """Encode mono s16le PCM at ``sample_rate`` to downlink Opus and play it.

        Same contract as :meth:`play_opus`; the end of the audio is padded to a
        whole frame.
        """
        encoder = OpusEncoder(
            DOWNLINK_SAMPLE_RATE, DOWNLINK_FRAME_DURATION_MS, input_rate=sample_rate
        )
        return await self.play_opus(_async_encode(encoder, chunks))

    async def call_tool(
        self,
        name: str,
        arguments: Mapping[str, Any] | None = None,
        *,
        reply_timeout: float = DEFAULT_TOOL_TIMEOUT_S,
    ) -> McpToolResult:
        """Call one of the device's MCP tools (see :attr:`DeviceRuntime.tools`).

        Raises:
            McpError: The device has no MCP, rejected the call, did not answer in
                time (:class:`McpTimeoutError`) or went away
                (:class:`McpClosedError`).
        """
        if self._ending:
            raise McpClosedError(f"session of {self.name} has ended")
        if not self.mcp_supported:
            raise McpError(f"{self.name} does not serve MCP tools")
        return await self._mcp.call_tool(name, arguments, reply_timeout=reply_timeout)
