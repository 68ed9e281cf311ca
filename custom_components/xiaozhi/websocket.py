"""The device WebSocket endpoint: authentication, handshake and the receive loop.

A paired device connects to ``/xiaozhi/v1/`` (the URL its OTA answer gave it) with
``Authorization: Bearer <token>``, ``Device-Id: <mac>``, ``Client-Id`` and
``Protocol-Version`` headers; clients that cannot set headers (browsers) may pass
``authorization``, ``device-id``, ``client-id`` and ``protocol-version`` as query
parameters instead. The ``Bearer`` prefix is optional (the firmware omits it when
the token contains a space). Nothing from a socket is read before it is
authenticated. The token is never logged.

Close codes (the reason text says more):

====  ===============  ===================================================
Code  Name             Meaning
====  ===============  ===================================================
1000  NORMAL           The device went away (or the connection broke).
1001  SERVER_SHUTDOWN  Home Assistant is stopping.
1009  (aiohttp)        A message larger than ``MAX_MESSAGE_BYTES``.
4000  PROTOCOL_ERROR   Unusable hello (uplink audio is not Opus).
4001  UNAUTHORIZED     Unknown device, missing or wrong token, or the
                       device's entry is not loaded (disabled, unloading).
4002  BAD_HANDSHAKE    Missing or invalid Device-Id or Protocol-Version.
4003  HELLO_TIMEOUT    No hello within 10 s of connecting.
4004  REPLACED         A newer connection of the same device took over.
4005  SERVER_CLOSED    The device's entry was unloaded, reloaded or removed.
4006  IDLE_TIMEOUT     Nothing received from the device for over 2 minutes.
4007  SEND_TIMEOUT     The device stopped reading what we send.
====  ===============  ===================================================
"""

import asyncio
from dataclasses import dataclass
import hmac
from http import HTTPStatus
from typing import Final

from aiohttp import WSMsgType, web

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_TOKEN, EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView

from .const import LOGGER, WEBSOCKET_PATH
from .models import DeviceRuntime
from .ota import normalize_mac, request_value
from .protocol import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    V2_HEADER_SIZE,
    FrameError,
    FrameType,
    MessageError,
    ProtocolVersionError,
    decode_frame,
    parse_message,
    parse_protocol_version,
)
from .server import XiaozhiServer, async_get_server
from .session import (
    CloseCode,
    DeviceSession,
    SendTimeoutError,
    SessionClosedError,
    TransportError,
)

# The largest message read from a device; larger ones close the socket (1009).
MAX_MESSAGE_BYTES: Final = DEFAULT_MAX_FRAME_PAYLOAD + V2_HEADER_SIZE
# A send that blocks this long means the device no longer reads.
SEND_TIMEOUT_S: Final = 5.0
# How long closing waits for the device's close frame.
CLOSE_TIMEOUT_S: Final = 2.0
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


def bearer_token(value: str) -> str:
    """Return the token of an Authorization value; the ``Bearer`` prefix is optional."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    return value.strip()


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


def close_message(reason: str) -> bytes:
    """Encode a close reason, cut to what a close frame can carry."""
    data = reason.encode()[:_MAX_CLOSE_REASON_BYTES]
    return data.decode(errors="ignore").encode()


class WebSocketTransport:
    """A session's writes to an aiohttp WebSocket, bounded in time."""

    def __init__(
        self,
        ws: web.WebSocketResponse,
        *,
        send_timeout: float = SEND_TIMEOUT_S,
        close_timeout: float = CLOSE_TIMEOUT_S,
    ) -> None:
        """Wrap a prepared WebSocket."""
        self._ws = ws
        self._send_timeout = send_timeout
        self._close_timeout = close_timeout

    async def send_text(self, text: str) -> None:
        """Send a text message (see :class:`session.Transport`)."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._ws.send_str(text)
        except TimeoutError as err:
            raise SendTimeoutError(self._timeout_text()) from err
        except ConnectionError as err:
            raise TransportError(str(err) or type(err).__name__) from err

    async def send_binary(self, data: bytes) -> None:
        """Send a binary message (see :class:`session.Transport`)."""
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._ws.send_bytes(data)
        except TimeoutError as err:
            raise SendTimeoutError(self._timeout_text()) from err
        except ConnectionError as err:
            raise TransportError(str(err) or type(err).__name__) from err

    def _timeout_text(self) -> str:
        return f"a send blocked for {self._send_timeout:g} s"

    async def close(self, code: int, reason: str) -> None:
        """Close with a code and reason; gives up on a silent peer after a while."""
        try:
            async with asyncio.timeout(self._close_timeout):
                await self._ws.close(code=code, message=close_message(reason))
        except TimeoutError, ConnectionError:
            LOGGER.debug("The device did not complete the close handshake")


class DeviceWebSocketView(HomeAssistantView):
    """``/xiaozhi/v1/``: where paired devices open their audio channel."""

    url = WEBSOCKET_PATH
    extra_urls = [WEBSOCKET_PATH.rstrip("/")]  # noqa: RUF012 (HA declares it a list)
    name = "api:xiaozhi:websocket"
    requires_auth = False  # devices authenticate with their own token

    async def get(self, request: web.Request) -> web.StreamResponse:
        """Upgrade, authenticate, then serve the device until it goes away."""
        hass = request.app[KEY_HASS]
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE_BYTES, compress=False, timeout=CLOSE_TIMEOUT_S
        )
        if not ws.can_prepare(request).ok:
            return self.json_message(
                "expected a WebSocket upgrade", HTTPStatus.BAD_REQUEST
            )
        await ws.prepare(request)
        server = async_get_server(hass)
        handshake = read_handshake(request)
        try:
            device = authenticate(server, handshake)
        except HandshakeError as err:
            LOGGER.warning(
                "Refused device connection from %s (Device-Id %r): %s",
                request.remote,
                handshake.device_id[:64],
                err.reason,
            )
            await WebSocketTransport(ws).close(err.code, err.reason)
            return ws
        await _async_serve(hass, server, ws, device)
        return ws


async def _async_serve(
    hass: HomeAssistant,
    server: XiaozhiServer,
    ws: web.WebSocketResponse,
    device: AuthenticatedDevice,
) -> None:
    session = DeviceSession(
        hass,
        device.runtime,
        WebSocketTransport(ws),
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
        await _async_receive(ws, session)
    finally:
        session.end(
            CloseCode.NORMAL,
            f"the device closed the connection (code {ws.close_code})",
        )
        if server.connections.get(device.mac) is session:
            del server.connections[device.mac]
        await session.async_wait_closed()


async def _async_receive(ws: web.WebSocketResponse, session: DeviceSession) -> None:
    async for message in ws:
        session.note_incoming()
        try:
            if message.type is WSMsgType.TEXT:
                await _async_handle_json(session, message.data)
            elif message.type is WSMsgType.BINARY:
                await _async_handle_binary(session, message.data)
            else:  # ERROR: aiohttp has closed the socket already
                session.end(CloseCode.PROTOCOL_ERROR, f"bad frame: {message.data}")
        except SessionClosedError:
            return
        if session.closed:
            return


async def _async_handle_json(session: DeviceSession, data: str | bytes) -> None:
    try:
        message = parse_message(data)
    except MessageError as err:
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
