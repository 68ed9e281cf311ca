"""The device WebSocket endpoint: authentication, handshake and the receive loop.

A paired device connects to ``/xiaozhi/v1/`` (the URL its OTA answer gave it) with
``Authorization: Bearer <token>``, ``Device-Id: <mac>``, ``Client-Id`` and
``Protocol-Version`` headers; clients that cannot set headers (browsers) may pass
``authorization``, ``device-id``, ``client-id`` and ``protocol-version`` as query
parameters instead. The ``Bearer`` prefix is optional (the firmware omits it when
the token contains a space). Nothing from a socket is read before it is
authenticated. The token is never logged.

Close codes (the reason text says more; every close is logged, as a warning when
the device misbehaved):

====  ===============  ===================================================
Code  Name             Meaning
====  ===============  ===================================================
1000  NORMAL           The device went away (or the connection broke).
1001  SERVER_SHUTDOWN  Home Assistant is stopping (a connection that got in
                       as it began to stop is refused with it too).
1002  BAD_FRAME        A frame breaking the WebSocket protocol, such as a
                       continuation without a start (aiohttp).
1007  INVALID_TEXT     A text message that is not UTF-8 (aiohttp).
1009  MESSAGE_TOO_BIG  A message larger than ``MAX_MESSAGE_BYTES`` (aiohttp).
1011  INTERNAL_ERROR   A bug of ours while handling a message (logged with
                       its traceback).
4000  PROTOCOL_ERROR   Unusable hello (uplink audio is not Opus).
4001  UNAUTHORIZED     Unknown device, missing or wrong token, or the
                       device's entry is not loaded (disabled, unloading).
4002  BAD_HANDSHAKE    Missing or invalid Device-Id or Protocol-Version.
4003  HELLO_TIMEOUT    No hello within 10 s of connecting.
4004  REPLACED         A newer connection of the same device took over.
4005  SERVER_CLOSED    The device's entry was unloaded, reloaded or removed.
4006  IDLE_TIMEOUT     Nothing received from the device for over 2 minutes.
4007  SEND_TIMEOUT     The device stopped reading what we send (logged only:
                       the connection is dropped, as a close frame would
                       wait behind the data the device does not read).
4008  RATE_LIMITED     The device sent messages faster than allowed.
4009  SERVER_BUSY      Too many devices are connected already.
====  ===============  ===================================================

Limits (defaults; :class:`server.ConnectionLimits` holds the per-connection ones):

* ``MAX_MESSAGE_BYTES`` (65,552): the largest WebSocket message; larger closes 1009.
* ``protocol.DEFAULT_MAX_JSON_SIZE`` (65,536 bytes): the largest JSON message and
  ``protocol.DEFAULT_MAX_FRAME_PAYLOAD`` (65,536): the largest v2/v3 payload;
  ``codec.MAX_OPUS_PACKET_BYTES`` (7,680): the largest Opus packet. Larger ones
  are dropped and logged; the session stays open.
* ``MESSAGES_PER_SECOND`` (100) sustained, ``MESSAGE_BURST`` (200) at once, per
  socket; over that closes 4008.
* ``MAX_SESSIONS`` (32) devices connected at once; one more is refused with 4009
  (a device replacing its own connection is not counted twice).
* ``session.HELLO_TIMEOUT_S`` (10 s) to say hello (4003); 135 to 180 s of silence
  from the device, outside replies, closes 4006.
* ``SEND_TIMEOUT_S`` (5 s) for one send to the device (4007); ``CLOSE_TIMEOUT_S``
  (2 s) for the device to answer a close frame. Past either, the connection is
  dropped with whatever the device never read.

aiohttp answers pings itself: they do not reach the session, so they count neither
against the message rate nor as signs of life for the idle timeout.

Bad input that leaves the session usable (malformed or non-object JSON, fields of
the wrong type, bad v2/v3 headers, invalid Opus, audio or messages before the
hello, a second hello, MCP replies nobody waits for) is dropped; the first of each
kind is logged as a warning, repeats at debug level. Nothing grows without bound for
a device that stops reading: aiohttp stops reading at 64 KiB of unread input and
makes a send wait once 64 KiB are unsent; the downlink queues at most 50 frames.
"""

import asyncio
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
import hmac
from http import HTTPStatus
from typing import Any, Final

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_TOKEN, EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from ..const import LOGGER, WEBSOCKET_PATH
from ..device.runtime import DeviceRuntime
from ..device.session import (
    CloseCode,
    DeviceSession,
    SendTimeoutError,
    SessionClosedError,
    TransportError,
)
from ..protocol.framing import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    V2_HEADER_SIZE,
    FrameError,
    FrameType,
    ProtocolVersionError,
    decode_frame,
    parse_protocol_version,
)
from ..protocol.identity import bearer_token, normalize_mac
from ..protocol.messages import parse_message
from ..server.ota import request_value
from ..server.ratelimit import RateLimiter
from ..server.registry import (
    CLOSE_TIMEOUT_S,
    SEND_TIMEOUT_S,
    ConnectionLimits,
    XiaozhiServer,
    async_get_server,
)

# The largest message read from a device (a v2 frame with the largest payload);
# larger ones close the socket (1009).
MAX_MESSAGE_BYTES: Final = DEFAULT_MAX_FRAME_PAYLOAD + V2_HEADER_SIZE
# RFC 6455: a close reason is at most 123 bytes of UTF-8.
_MAX_CLOSE_REASON_BYTES: Final = 123


class HandshakeError(Exception):
    """A connection is refused; ``code`` and ``reason`` go to the device."""

    def __init__(self, code: CloseCode, reason: str) -> None:
        """Keep the close code and reason."""
        super().__init__(reason)
        self.code = code
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a connecting device claims, from headers or query parameters."""

    device_id: str
    token: str
    protocol_version: str
    client_id: str = ""


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    """A connection that proved to be a paired, loaded device."""

    mac: str
    protocol_version: int
    runtime: DeviceRuntime
    name: str


def read_handshake(request: web.Request) -> Handshake:
    """Collect the device's claims from its request headers or query parameters."""
    return Handshake(
        device_id=request_value(request, "Device-Id"),
        token=bearer_token(request_value(request, "Authorization")),
        protocol_version=request_value(request, "Protocol-Version"),
        client_id=request_value(request, "Client-Id"),
    )


def authenticate(server: XiaozhiServer, handshake: Handshake) -> AuthenticatedDevice:
    """Check a handshake against the paired devices.

    Raises:
        HandshakeError: The connection must be refused (see the close codes).
    """
    try:
        mac = normalize_mac(handshake.device_id)
    except ValueError:
        raise HandshakeError(
            CloseCode.BAD_HANDSHAKE, "missing or invalid Device-Id"
        ) from None
    try:
        version = parse_protocol_version(handshake.protocol_version)
    except ProtocolVersionError:
        raise HandshakeError(
            CloseCode.BAD_HANDSHAKE, "unsupported Protocol-Version"
        ) from None
    entry = server.device_entry(mac)
    if entry is None:
        raise HandshakeError(
            CloseCode.UNAUTHORIZED, "device not paired: check in through OTA first"
        )
    if not handshake.token:
        raise HandshakeError(CloseCode.UNAUTHORIZED, "missing token")
    expected = str(entry.data.get(CONF_TOKEN, ""))
    if not expected or not hmac.compare_digest(
        handshake.token.encode(), expected.encode()
    ):
        raise HandshakeError(CloseCode.UNAUTHORIZED, "invalid token")
    runtime = getattr(entry, "runtime_data", None)
    if entry.state is not ConfigEntryState.LOADED or not isinstance(
        runtime, DeviceRuntime
    ):
        raise HandshakeError(
            CloseCode.UNAUTHORIZED, "device is not enabled in Home Assistant"
        )
    return AuthenticatedDevice(
        mac=mac, protocol_version=version, runtime=runtime, name=entry.title or mac
    )


def admit(hass: HomeAssistant, server: XiaozhiServer, mac: str) -> None:
    """Check that an authenticated device may open a session now.

    Raises:
        HandshakeError: Home Assistant is stopping, or ``max_sessions`` other
            devices are connected (the device's own old session does not count:
            the new one replaces it).
    """
    if hass.is_stopping:
        raise HandshakeError(CloseCode.SERVER_SHUTDOWN, "Home Assistant is stopping")
    limit = server.limits.max_sessions
    if mac not in server.connections and len(server.connections) >= limit:
        raise HandshakeError(
            CloseCode.SERVER_BUSY, f"too many devices connected (limit {limit})"
        )


def close_message(reason: str) -> bytes:
    """Encode a close reason, cut to what a close frame can carry."""
    data = reason.encode()[:_MAX_CLOSE_REASON_BYTES]
    return data.decode(errors="ignore").encode()


def _cancelled_from_outside() -> bool:
    """Return whether the current task is being cancelled (not just got a stray one).

    aiohttp's writers of one connection share a single future that waits for the
    socket to drain: when a send that timed out is cancelled, so is that future, and
    every other send or close waiting on it gets a CancelledError of its own.
    """
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


class WebSocketTransport:
    """A session's writes to an aiohttp WebSocket, bounded in time.

    Once a send timed out, the device is taken to be gone: later sends fail at once
    and closing drops the connection with ``abort`` instead of queueing a close
    frame behind data the device does not read (which would keep the socket and its
    unsent data forever). ``abort`` also drops a device that does not complete the
    close handshake.
    """

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        send_timeout: float = SEND_TIMEOUT_S,
        close_timeout: float = CLOSE_TIMEOUT_S,
        abort: Callable[[], None] | None = None,
    ) -> None:
        """Wrap a prepared WebSocket."""
        self._ws = ws
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout
        self._abort = abort
        self._stuck = False

    async def send_text(self, text: str) -> None:
        """Send a text message (see :class:`session.Transport`)."""
        await self._send(self._ws.send_str(text))

    async def send_binary(self, data: bytes) -> None:
        """Send a binary message (see :class:`session.Transport`)."""
        await self._send(self._ws.send_bytes(data))

    async def _send(self, sending: Coroutine[Any, Any, None]) -> None:
        if self._stuck:
            sending.close()
            raise SendTimeoutError(self._timeout_text())
        try:
            async with asyncio.timeout(self._send_timeout):
                await sending
        except TimeoutError as err:
            self._stuck = True
            raise SendTimeoutError(self._timeout_text()) from err
        except ConnectionError as err:
            raise TransportError(str(err) or type(err).__name__) from err
        except asyncio.CancelledError as err:
            if _cancelled_from_outside():
                raise
            self._stuck = True  # a concurrent send timed out
            raise SendTimeoutError(self._timeout_text()) from err

    def _timeout_text(self) -> str:
        return f"a send blocked for {self._send_timeout:g} s"

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason; drops a peer that does not answer."""
        if not self._stuck or self._abort is None:
            try:
                async with asyncio.timeout(self._close_timeout):
                    await self._ws.close(code=code, message=close_message(reason))
            except TimeoutError, ConnectionError:
                pass
            except asyncio.CancelledError:
                if _cancelled_from_outside():
                    raise
            else:
                if self._ws.close_code != WSCloseCode.ABNORMAL_CLOSURE:
                    return
        if self._abort is not None:
            LOGGER.debug("Dropping a connection that cannot close cleanly")
            self._abort()


def _dropper(request: web.Request) -> Callable[[], None] | None:
    """Return what drops the request's connection unless it is closing cleanly.

    A transport that is closing with nothing left to write goes away by itself (the
    device may still read the close frame); one with unsent data would wait for a
    device that does not read, so it is aborted.
    """
    transport = request.transport
    if transport is None:
        return None

    def drop() -> None:
        if not transport.is_closing() or transport.get_write_buffer_size():
            transport.abort()

    return drop


class DeviceWebSocketView(HomeAssistantView):
    """``/xiaozhi/v1/``: where paired devices open their audio channel."""

    url = WEBSOCKET_PATH
    extra_urls = [WEBSOCKET_PATH.rstrip("/")]  # noqa: RUF012 (HA declares it a list)
    name = "api:xiaozhi:websocket"
    requires_auth = False  # devices authenticate with their own token

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Upgrade, authenticate, then serve the device until it goes away."""
        hass = request.app[KEY_HASS]
        server = async_get_server(hass)
        limits = server.limits
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE_BYTES + 1,  # aiohttp refuses sizes >= this
            compress=False,
            timeout=limits.close_timeout,
        )
        if not ws.can_prepare(request).ok:
            return self.json_message(
                "expected a WebSocket upgrade", HTTPStatus.BAD_REQUEST
            )
        await ws.prepare(request)
        transport = WebSocketTransport(
            ws,
            send_timeout=limits.send_timeout,
            close_timeout=limits.close_timeout,
            abort=_dropper(request),
        )
        handshake = read_handshake(request)
        try:
            device = authenticate(server, handshake)
            admit(hass, server, device.mac)
        except HandshakeError as err:
            LOGGER.warning(
                "Refused device connection from %s (Device-Id %r): %s",
                request.remote,
                handshake.device_id[:64],
                err.reason,
            )
            await transport.close(err.code, err.reason)
            return ws
        await _async_serve(hass, server, ws, transport, device)
        return ws


async def _async_serve(
    hass: HomeAssistant,
    server: XiaozhiServer,
    ws: web.WebSocketResponse,
    transport: WebSocketTransport,
    device: AuthenticatedDevice,
) -> None:
    session = DeviceSession(
        hass,
        device.runtime,
        transport,
        mac=device.mac,
        protocol_version=device.protocol_version,
        name=device.name,
    )
    previous = device.runtime.session
    if previous is not None:
        previous.end(CloseCode.REPLACED, "replaced by a new connection of the device")
    device.runtime.async_attach(session)
    server.connections[device.mac] = session
    session.start()
    LOGGER.debug(
        "%s connected (protocol version %d)", device.name, device.protocol_version
    )
    try:
        await _async_receive(ws, session, server.limits)
    finally:
        session.end(
            CloseCode.NORMAL,
            f"the device closed the connection (code {ws.close_code})",
        )
        if server.connections.get(device.mac) is session:
            del server.connections[device.mac]
        await session.async_wait_closed()


async def _async_receive(
    ws: web.WebSocketResponse,
    session: DeviceSession,
    limits: ConnectionLimits | None = None,
) -> None:
    """Hand each message of the socket to the session until either ends."""
    limits = limits or ConnectionLimits()
    budget = RateLimiter(limits.messages_per_second, limits.message_burst, max_keys=1)
    async for message in ws:
        session.note_incoming()
        if not budget.allow(session.mac):
            session.end(
                CloseCode.RATE_LIMITED,
                f"more than {limits.messages_per_second:g} messages per second "
                f"(bursts of {limits.message_burst})",
            )
            return
        try:
            await _async_handle_message(session, message)
        except SessionClosedError:
            return
        except Exception:  # one bad message must not take down the server
            LOGGER.exception(
                "Unexpected error handling a message from %s", session.name
            )
            session.end(CloseCode.INTERNAL_ERROR, "internal error")
            return
        if session.closed:
            return


async def _async_handle_message(session: DeviceSession, message: WSMessage) -> None:
    if message.type is WSMsgType.TEXT:
        await _async_handle_json(session, message.data)
    elif message.type is WSMsgType.BINARY:
        await _async_handle_binary(session, message.data)
    else:  # ERROR: aiohttp has closed the socket already
        session.end(*_error_close(message.data))


def _error_close(error: object) -> tuple[CloseCode, str]:
    """Return the close code aiohttp sent for a receive error, and a reason."""
    if isinstance(error, WebSocketError):
        try:
            code = CloseCode(error.code)
        except ValueError:
            code = CloseCode.PROTOCOL_ERROR
        return code, f"bad frame: {error}"
    return CloseCode.NORMAL, f"connection lost: {error!r}"


async def _async_handle_json(session: DeviceSession, data: str | bytes) -> None:
    try:
        message = parse_message(data)
    except ValueError as err:  # MessageError, or a limit of json itself (huge ints)
        session.report_bad_input("malformed message", err)
        return
    await session.async_handle_message(message)


async def _async_handle_binary(session: DeviceSession, data: bytes) -> None:
    try:
        frame = decode_frame(data, session.protocol_version)
    except FrameError as err:
        session.report_bad_input("malformed frame", err)
        return
    if frame.type is FrameType.JSON:
        await _async_handle_json(session, frame.payload)
    else:
        session.handle_audio(frame.payload)


@callback
def async_setup_websocket(hass: HomeAssistant) -> None:
    """Register the device endpoint and close every session when HA stops."""
    hass.http.register_view(DeviceWebSocketView())

    async def _async_close_all(event: Event) -> None:
        sessions = [
            connection
            for connection in async_get_server(hass).connections.values()
            if isinstance(connection, DeviceSession)
        ]
        for session in sessions:
            session.end(CloseCode.SERVER_SHUTDOWN, "Home Assistant is stopping")
        await asyncio.gather(*(session.async_wait_closed() for session in sessions))

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_close_all)
