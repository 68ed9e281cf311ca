"""A device's link: its control connection, whatever the transport.

A transport creates one :class:`DeviceLink` per authenticated connection and
feeds it everything the device sends. The link owns what belongs to the device
rather than to one conversation: sending JSON, the MCP client and its tool
discovery (tool calls, volume, brightness), alerts and reboots, bad-input
accounting, and whether the device counts as connected. A device's hello opens
a voice session (``session.py``) on the link; the session's messages and audio
go to it.

On WebSocket one socket is one link and carries at most one voice session: the
link ends with its session (the transport's ``session_ends_connection``), and a
socket that says no hello within 10 s is closed. A transport whose connection
outlives conversations (MQTT) keeps the link and ends a session with a
``goodbye``; the next hello opens the next session.

Every task and timer of the link ends with it, and its end tells the runtime's
listeners at once; the connection itself is closed in the background.
"""

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import TYPE_CHECKING, Any, Final

from homeassistant.const import __version__ as ha_version
from homeassistant.core import HomeAssistant

from ..const import LOGGER
from ..protocol.firmware import AUDIO_FORMAT, SERVER_HELLO_TIMEOUT_S
from ..protocol.mcp import McpClient, McpClientInfo, McpClosedError, McpError
from ..protocol.messages import (
    Abort,
    Goodbye,
    Hello,
    IncomingMessage,
    Listen,
    Mcp,
    Unknown,
    alert_message,
    encode_message,
    goodbye_message,
    mcp_message,
    system_reboot_message,
)
from ..protocol.sanitize import printable
from ..transport.base import EndReason, SendTimeoutError, Transport, TransportError
from .camera import mcp_capabilities
from .session import DeviceSession
from .supervisor import SessionClosedError, Supervisor

if TYPE_CHECKING:
    from .runtime import DeviceRuntime

# We give the device as long to say hello as it gives us.
HELLO_TIMEOUT_S: Final = SERVER_HELLO_TIMEOUT_S
# Who calls the device's tools, as MCP's initialize tells it.
MCP_CLIENT: Final = McpClientInfo("Home Assistant", ha_version)
# Bad input is quoted in log lines up to this many characters.
MAX_LOGGED_DETAIL: Final = 200

# Ends that mean the device (or its network) misbehaved: logged as warnings.
_WARNING_REASONS: Final = frozenset(
    {
        EndReason.BAD_FRAME,
        EndReason.INVALID_TEXT,
        EndReason.MESSAGE_TOO_BIG,
        EndReason.INTERNAL_ERROR,
        EndReason.PROTOCOL_ERROR,
        EndReason.HELLO_TIMEOUT,
        EndReason.SEND_TIMEOUT,
        EndReason.RATE_LIMITED,
    }
)
_INFO_REASONS: Final = frozenset({EndReason.REPLACED, EndReason.IDLE_TIMEOUT})


def log_excerpt(detail: object) -> str:
    """Return ``detail`` as one log line: bounded, control characters escaped."""
    return printable(detail, MAX_LOGGED_DETAIL)


async def async_transmit[P: (str, bytes)](
    send: Callable[[P], Awaitable[None]],
    payload: P,
    end: Callable[[EndReason, str], None],
) -> None:
    """Send ``payload``; a failed send ends the connection with its reason.

    Raises:
        SessionClosedError: The send failed (the connection is ending).
    """
    try:
        await send(payload)
    except SendTimeoutError as err:
        end(EndReason.SEND_TIMEOUT, "the device stopped reading")
        raise SessionClosedError(str(err)) from err
    except TransportError as err:
        end(EndReason.NORMAL, f"connection lost: {err}")
        raise SessionClosedError(str(err)) from err


class DeviceLink:
    """The control connection of one paired device.

    Attributes:
        mac: The device's MAC (its Device-Id).
        name: How log lines name the device.
        runtime: The device's runtime (its entry's runtime data).
        transport: The connection.
        hello: The device's last hello, once one arrived.
        session: The live voice session, if any.
        end_reason: Why the link ended, once it has.
        end_detail: The text that came with the end (sent to the device where the
            transport can).
        bad_input: How often each kind of bad input arrived.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        runtime: DeviceRuntime,
        transport: Transport,
        *,
        mac: str,
        name: str | None = None,
        hello_timeout: float | None = HELLO_TIMEOUT_S,
    ) -> None:
        """Create the link of a just-authenticated connection; call :meth:`start`.

        ``hello_timeout``: the link ends unless the device says hello this soon
        (None: it may stay without a voice session).
        """
        self.hass = hass
        self.runtime = runtime
        self.transport = transport
        self.mac = mac
        self.name = name or mac
        self.hello: Hello | None = None
        self.session: DeviceSession | None = None
        self.end_reason: EndReason | None = None
        self.end_detail = ""
        self.bad_input: dict[str, int] = {}
        self._hello_timeout = hello_timeout
        self._supervisor = Supervisor(hass, mac=mac, owner=self.name)
        self._discovering = False
        self._ending = False
        self._closed = asyncio.Event()
        self._mcp = McpClient(self._async_send_mcp, client=MCP_CLIENT, name=self.name)

    # ------------------------------------------------------------ state

    @property
    def lasting(self) -> bool:
        """Return whether the connection outlives voice sessions (MQTT)."""
        return not self.transport.session_ends_connection

    @property
    def ready(self) -> bool:
        """Return whether the link is open and the device can be talked to.

        On WebSocket once the device said hello; a lasting connection (MQTT)
        carries JSON from its start, voice session or not.
        """
        return not self._ending and (self.hello is not None or self.lasting)

    @property
    def closed(self) -> bool:
        """Return whether the link has ended (its connection may still be closing)."""
        return self._ending

    @property
    def mcp_supported(self) -> bool:
        """Return whether the device serves MCP tools.

        As its hello announced; on a lasting link before any hello, taken for
        granted (every firmware with the MQTT transport's idle JSON serves MCP;
        one that does not lets ``initialize`` time out, logged once).
        """
        if self.hello is not None:
            return self.hello.mcp
        return self.lasting

    @property
    def session_id(self) -> str:
        """Return the id of the live voice session, or "" without one."""
        return "" if self.session is None else self.session.session_id

    # ------------------------------------------------------------ lifecycle

    def start(self) -> None:
        """Start waiting for the device's hello (a lasting link: list its tools)."""
        if self._hello_timeout is not None:
            self._supervisor.call_later(
                "hello", self._hello_timeout, self._on_hello_timeout
            )
        if self.lasting:
            # Once per connection: the device keeps its MCP state for as long.
            self._start_discovery()

    def create_task[T](
        self, coro: Coroutine[Any, Any, T], name: str
    ) -> asyncio.Task[T]:
        """Run ``coro`` as a task that ends with the link.

        Raises:
            SessionClosedError: The link has ended.
        """
        return self._supervisor.create_task(coro, name)

    def end(self, reason: EndReason, detail: str) -> None:
        """End the link now; the connection is closed in the background.

        Ends the voice session, fails pending MCP calls, cancels the link's tasks
        and timers and tells the runtime's listeners. Calling it again does
        nothing.
        """
        if self._ending:
            return
        self._ending = True
        self.end_reason = reason
        self.end_detail = detail
        self._log_end(reason, detail)
        if self.session is not None:
            self.session.end(reason, detail)
        self._mcp.close()
        self._supervisor.close()
        self.runtime.async_detach(self)
        self.hass.async_create_background_task(
            self._async_close_transport(reason, detail),
            f"xiaozhi {self.mac} close",
            eager_start=False,
        )

    def _log_end(self, reason: EndReason, detail: str) -> None:
        if reason in _WARNING_REASONS:
            LOGGER.warning(
                "Closing the session of %s: %s", self.name, log_excerpt(detail)
            )
        elif reason in _INFO_REASONS:
            LOGGER.info("Closing the session of %s: %s", self.name, log_excerpt(detail))
        else:
            LOGGER.debug("Session of %s ended: %s", self.name, log_excerpt(detail))

    async def _async_close_transport(self, reason: EndReason, detail: str) -> None:
        try:
            await self.transport.close(reason, detail)
        finally:
            self._closed.set()

    async def async_close(
        self, detail: str, reason: EndReason = EndReason.SERVER_CLOSED
    ) -> None:
        """End the link and wait until its connection is closed."""
        self.end(reason, detail)
        await self.async_wait_closed()

    async def async_wait_closed(self) -> None:
        """Wait until the link has ended and its connection is closed."""
        await self._closed.wait()

    def _on_hello_timeout(self) -> None:
        self.end(EndReason.HELLO_TIMEOUT, f"no hello within {self._hello_timeout:g} s")

    def session_ended(
        self, session: DeviceSession, reason: EndReason, detail: str
    ) -> None:
        """Take note that ``session`` ended (called by the session itself).

        Where the transport cannot end a session alone, the link ends with it;
        otherwise the device is told ``goodbye`` and may say hello again.
        """
        if self._ending or session is not self.session:
            return
        if self.transport.session_ends_connection:
            self.end(reason, detail)
            return
        self.session = None
        self.transport.session_ended()
        LOGGER.debug("Voice session of %s ended: %s", self.name, log_excerpt(detail))
        self.runtime.async_update_listeners()
        self.create_task(
            self.send_json(goodbye_message(session_id=session.session_id)), "goodbye"
        )

    # ------------------------------------------------------------ incoming

    def note_incoming(self) -> None:
        """Record that something arrived (any kind): the device is alive."""
        if self.session is not None:
            self.session.note_incoming()

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
        match message:
            case Hello():
                await self._async_handle_hello(message)
            case Mcp() if self.ready:
                self._mcp.handle_message(message.payload)
            case Goodbye() if self.lasting:
                self._end_session_quietly(message.session_id)
            case Goodbye() if self.ready:
                # WebSocket: the firmware closes the socket instead; nothing to do.
                LOGGER.debug("Ignoring a goodbye from %s", self.name)
            case Unknown() if self.ready:
                LOGGER.debug(
                    "Ignoring %s message from %s",
                    log_excerpt(repr(message.type)),
                    self.name,
                )
            case Listen() | Abort() if self.session is not None:
                await self.session.async_handle_message(message)
            case _:
                self.report_bad_input("message before hello", type(message).__name__)

    def handle_audio(self, packet: bytes) -> None:
        """Hand one uplink Opus packet to the voice session."""
        if self._ending:
            return
        if self.session is None:
            self.report_bad_input("audio before hello", f"{len(packet)} bytes")
            return
        self.session.handle_audio(packet)

    def _end_session_quietly(self, session_id: str) -> None:
        """End the voice session the device left (no goodbye back: it has closed)."""
        session = self.session
        if session is None or (session_id and session_id != session.session_id):
            LOGGER.debug("Ignoring a goodbye from %s for no live session", self.name)
            return
        self.session = None
        session.end(EndReason.NORMAL, "the device said goodbye")
        self.transport.session_ended()
        LOGGER.debug("%s left its voice session", self.name)
        self.runtime.async_update_listeners()

    async def _async_handle_hello(self, hello: Hello) -> None:
        if self.session is not None and self.lasting:
            # The device opens a new channel (its own 120 s timeout came first,
            # or it lost our goodbye): it has forgotten the old session.
            self._end_session_quietly("")
        if self.session is not None:
            self.report_bad_input("second hello", "answered with the same hello")
            await self.session.async_send_hello()
            return
        if hello.audio_params.format != AUDIO_FORMAT:
            self._refuse_session(
                f"unsupported audio format {hello.audio_params.format!r}"
            )
            return
        self._supervisor.cancel_timer("hello")
        self.hello = hello
        self.session = DeviceSession(self, hello)
        await self.session.async_start()
        if hello.mcp:
            self._start_discovery()

    def _start_discovery(self) -> None:
        if not self._discovering:
            self._discovering = True
            self.create_task(self._async_discover_tools(), "mcp discovery")

    def _refuse_session(self, detail: str) -> None:
        if self.transport.session_ends_connection:
            self.end(EndReason.PROTOCOL_ERROR, detail)
        else:
            self.report_bad_input("unusable hello", detail)

    async def _async_discover_tools(self) -> None:
        try:
            info = await self._mcp.initialize(
                capabilities=mcp_capabilities(self.hass, self.mac)
            )
            tools = await self._mcp.list_tools()
        except McpClosedError:
            return
        except McpError as err:
            LOGGER.warning(
                "Could not list the tools of %s: %s", self.name, log_excerpt(err)
            )
            return
        LOGGER.debug(
            "%s (%s %s) offers %d tools",
            self.name,
            printable(info.name, 64),
            printable(info.version, 32),
            len(tools),
        )
        self.runtime.async_set_tools(tools)

    # ------------------------------------------------------------ outgoing

    async def _async_transmit[P: (str, bytes)](
        self, send: Callable[[P], Awaitable[None]], payload: P
    ) -> None:
        if self._ending:
            raise SessionClosedError(f"session of {self.name} has ended")
        await async_transmit(send, payload, self.end)

    async def send_json(self, message: Mapping[str, Any]) -> None:
        """Send one JSON message to the device.

        Raises:
            SessionClosedError: The link has ended (or ends because of the send).
            MessageError: The message cannot be encoded as JSON.
        """
        await self._async_transmit(self.transport.send_text, encode_message(message))

    async def send_audio(self, packet: bytes) -> None:
        """Send one downlink Opus packet (the voice session's playback does).

        Raises:
            SessionClosedError: The link has ended (or ends because of the send).
        """
        await self._async_transmit(self.transport.send_audio, packet)

    async def _async_send_mcp(self, payload: dict[str, Any]) -> None:
        await self.send_json(mcp_message(payload, session_id=self.session_id))

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

    def tool_client(self) -> McpClient:
        """Return the client of the device's MCP tools (see :attr:`DeviceRuntime.tools`).

        Raises:
            McpClosedError: The link has ended.
            McpError: The device does not serve MCP tools.
        """
        if self._ending:
            raise McpClosedError(f"session of {self.name} has ended")
        if not self.mcp_supported:
            raise McpError(f"{self.name} does not serve MCP tools")
        return self._mcp
