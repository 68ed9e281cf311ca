"""The WebSocket transport: the device endpoint, its framing and close codes.

A paired device connects to ``/xiaozhi/v1/`` (the URL its OTA answer gave it) with
``Authorization: Bearer <token>``, ``Device-Id: <mac>``, ``Client-Id`` and
``Protocol-Version`` headers; clients that cannot set headers (browsers) may pass
``authorization``, ``device-id``, ``client-id`` and ``protocol-version`` as query
parameters instead. The ``Bearer`` prefix is optional (the firmware omits it when
the token contains a space). Nothing from a socket is read before it is
authenticated; wrong claims are answered HTTP 401 without an upgrade. The token
is never logged. A device waiting to be paired may connect with the token its
OTA answer gave it with its code (``Client-Id`` must match its check-in): that
opens only its pairing session (``server/pairing_session.py``), where it is told
its code and nothing else runs.

The connection is the device's link (``device/link.py``) and carries one voice
session: the link ends with it (the firmware has no other way back to idle), and
every ``transport.base.EndReason`` becomes one close code (the reason text says
more; every close is logged, as a warning when the device misbehaved):

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
4001  UNAUTHORIZED     The device's entry is not loaded (disabled,
                       unloading). An unknown device or a missing or wrong
                       token gets HTTP 401 before the upgrade instead.
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

Limits. This transport's own: ``MAX_MESSAGE_BYTES`` (65,552, a v2 frame with the
largest payload) for one WebSocket message, larger closes 1009; and
:class:`WebSocketLimits`: ``SEND_TIMEOUT_S`` (5 s) for one send to the device
(4007) and ``CLOSE_TIMEOUT_S`` (2 s) for the device to answer a close frame; past
either, the connection is dropped with whatever the device never read. Those of
every transport (``server.limits``): the devices connected at once (one more is
refused with 4009; a device replacing its own connection is not counted twice)
and the messages per second a device may send (4008). The protocol's: the
largest JSON message, v2/v3 payload and Opus packet (larger ones are dropped and
logged, the session stays open); the hello timeout (4003) and the idle timeout
(4006, never while a reply plays) of ``device.link`` and ``device.session``.

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
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from enum import IntEnum
from http import HTTPStatus
from typing import Any, Final, Protocol
from urllib.parse import urlsplit

from aiohttp import WebSocketError, WSCloseCode, WSMessage, WSMsgType, web

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView
from homeassistant.util.hass_dict import HassKey

from ..const import DOMAIN, LOGGER, WEBSOCKET_PATH
from ..device.link import DeviceLink
from ..device.supervisor import SessionClosedError
from ..protocol.firmware import DEFAULT_PROTOCOL_VERSION, TRANSPORT_WEBSOCKET
from ..protocol.framing import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    V2_HEADER_SIZE,
    FrameError,
    FrameType,
    ProtocolVersionError,
    decode_frame,
    encode_audio_frame,
    parse_protocol_version,
)
from ..protocol.identity import bearer_token
from ..protocol.messages import Hello, IncomingMessage, parse_message
from ..server.auth import (
    AdmissionError,
    AuthenticatedDevice,
    admit,
    admit_pairing,
    authenticate,
    device_mac,
    request_value,
)
from ..server.limits import ConnectionLimits
from ..server.ota import public_base_url
from ..server.pairing import PendingPairing
from ..server.pairing_session import pairing_for_token
from ..server.ratelimit import RateLimiter
from ..server.registry import XiaozhiServer, async_get_server
from .base import EndReason, SendTimeoutError, TransportError

# The largest message read from a device (a v2 frame with the largest payload);
# larger ones close the socket (1009).
MAX_MESSAGE_BYTES: Final = DEFAULT_MAX_FRAME_PAYLOAD + V2_HEADER_SIZE
# A send that blocks this long means the device no longer reads (close code 4007).
SEND_TIMEOUT_S: Final = 5.0
# How long closing waits for the device's close frame before dropping the connection.
CLOSE_TIMEOUT_S: Final = 2.0
# The binary framing we hand out: v1 (raw Opus) is what every firmware and client
# speaks and the leanest; a device may still connect with 2 or 3.
OTA_PROTOCOL_VERSION: Final = DEFAULT_PROTOCOL_VERSION
# RFC 6455: a close reason is at most 123 bytes of UTF-8.
_MAX_CLOSE_REASON_BYTES: Final = 123


class CloseCode(IntEnum):
    """The WebSocket close codes this transport sends (see the module docstring)."""

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


# The code each end is told with.
CLOSE_CODES: Final[Mapping[EndReason, CloseCode]] = {
    EndReason.NORMAL: CloseCode.NORMAL,
    EndReason.SERVER_SHUTDOWN: CloseCode.SERVER_SHUTDOWN,
    EndReason.BAD_FRAME: CloseCode.BAD_FRAME,
    EndReason.INVALID_TEXT: CloseCode.INVALID_TEXT,
    EndReason.MESSAGE_TOO_BIG: CloseCode.MESSAGE_TOO_BIG,
    EndReason.INTERNAL_ERROR: CloseCode.INTERNAL_ERROR,
    EndReason.PROTOCOL_ERROR: CloseCode.PROTOCOL_ERROR,
    EndReason.UNAUTHORIZED: CloseCode.UNAUTHORIZED,
    EndReason.BAD_HANDSHAKE: CloseCode.BAD_HANDSHAKE,
    EndReason.HELLO_TIMEOUT: CloseCode.HELLO_TIMEOUT,
    EndReason.REPLACED: CloseCode.REPLACED,
    EndReason.SERVER_CLOSED: CloseCode.SERVER_CLOSED,
    EndReason.IDLE_TIMEOUT: CloseCode.IDLE_TIMEOUT,
    EndReason.SEND_TIMEOUT: CloseCode.SEND_TIMEOUT,
    EndReason.RATE_LIMITED: CloseCode.RATE_LIMITED,
    EndReason.SERVER_BUSY: CloseCode.SERVER_BUSY,
}
# What a close code aiohttp sent on a receive error means.
_END_REASONS: Final = {code: reason for reason, code in CLOSE_CODES.items()}


@dataclass(frozen=True, slots=True)
class WebSocketLimits:
    """Timeouts of device WebSockets.

    Attributes:
        send_timeout: Seconds a send may block before the device counts as gone.
        close_timeout: Seconds to wait for the device's close frame.
    """

    send_timeout: float = SEND_TIMEOUT_S
    close_timeout: float = CLOSE_TIMEOUT_S

    def __post_init__(self) -> None:
        """Refuse timeouts that would drop every device.

        Raises:
            ValueError: A timeout is not positive.
        """
        if self.send_timeout <= 0 or self.close_timeout <= 0:
            raise ValueError(f"WebSocket limits must be positive: {self}")


DATA_WEBSOCKET_LIMITS: HassKey[WebSocketLimits] = HassKey(f"{DOMAIN}_websocket")


@dataclass(frozen=True, slots=True)
class Handshake:
    """What a connecting device claims, from headers or query parameters."""

    device_id: str
    token: str
    protocol_version: str
    client_id: str = ""


def read_handshake(request: web.Request) -> Handshake:
    """Collect the device's claims from its request headers or query parameters."""
    return Handshake(
        device_id=request_value(request, "Device-Id"),
        token=bearer_token(request_value(request, "Authorization")),
        protocol_version=request_value(request, "Protocol-Version"),
        client_id=request_value(request, "Client-Id"),
    )


def authenticate_handshake(
    server: XiaozhiServer, handshake: Handshake
) -> tuple[AuthenticatedDevice, int]:
    """Check a handshake; returns the device and the framing version it speaks.

    Raises:
        AdmissionError: The connection must be refused (see the close codes).
    """
    mac = device_mac(handshake.device_id)
    try:
        version = parse_protocol_version(handshake.protocol_version)
    except ProtocolVersionError:
        raise AdmissionError(
            EndReason.BAD_HANDSHAKE, "unsupported Protocol-Version"
        ) from None
    return authenticate(server, mac, handshake.token), version


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


class WebSocketConnection:
    """Writes to an aiohttp WebSocket, bounded in time.

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
        """Send a text message.

        Raises:
            TransportError: It could not be delivered (:class:`SendTimeoutError`
                when the device stopped reading).
        """
        await self._send(self._ws.send_str(text))

    async def send_binary(self, data: bytes) -> None:
        """Send a binary message (raises as :meth:`send_text`)."""
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


class WebSocketTransport:
    """A device's WebSocket as its link's transport (see ``transport.base``).

    Audio goes out framed in the version of the device's handshake; ends go out as
    the close codes of :data:`CLOSE_CODES`.

    Attributes:
        protocol_version: The binary framing of the connection (1, 2 or 3).
    """

    session_ends_connection = True

    def __init__(
        self, connection: WebSocketConnection, *, protocol_version: int, name: str
    ) -> None:
        """Serve the device ``name`` over ``connection``."""
        self.protocol_version = protocol_version
        self._connection = connection
        self._name = name

    def server_hello_fields(self) -> Mapping[str, Any]:
        """Return the hello's transport and version."""
        return {"transport": TRANSPORT_WEBSOCKET, "version": self.protocol_version}

    def session_ended(self) -> None:
        """Do nothing: the connection ends with its session."""

    def diagnostics(self) -> dict[str, Any]:
        """Return the connection's framing version."""
        return {"protocol_version": self.protocol_version}

    async def send_text(self, text: str) -> None:
        """Send one JSON message as a text frame."""
        await self._connection.send_text(text)

    async def send_audio(self, packet: bytes) -> None:
        """Send one Opus packet as a binary frame of the connection's version."""
        try:
            frame = encode_audio_frame(packet, self.protocol_version)
        except FrameError as err:
            LOGGER.warning("Not sending an Opus packet to %s: %s", self._name, err)
            return
        await self._connection.send_binary(frame)

    async def close(self, reason: EndReason, detail: str) -> None:
        """Close with the reason's close code."""
        await self._connection.close(CLOSE_CODES[reason], detail)


def websocket_url(hass: HomeAssistant, request: web.Request) -> str:
    """Return the ws:// or wss:// URL the device should connect to."""
    base = urlsplit(public_base_url(hass, request))
    scheme = "wss" if base.scheme == "https" else "ws"
    return f"{scheme}://{base.netloc}{base.path.rstrip('/')}{WEBSOCKET_PATH}"


def ota_section(request: web.Request, entry: ConfigEntry) -> dict[str, Any]:
    """Return the OTA answer's ``websocket`` section for a paired device."""
    return {
        "url": websocket_url(request.app[KEY_HASS], request),
        "token": entry.data[CONF_TOKEN],
        "version": OTA_PROTOCOL_VERSION,
    }


def pairing_ota_section(
    request: web.Request, pending: PendingPairing
) -> dict[str, Any]:
    """Return the ``websocket`` section for a device waiting to be paired.

    Its token opens only a pairing session until the code is typed, then it is
    the device's token.
    """
    return {
        "url": websocket_url(request.app[KEY_HASS], request),
        "token": pending.token,
        "version": OTA_PROTOCOL_VERSION,
    }


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
        limits = hass.data[DATA_WEBSOCKET_LIMITS]
        ws = web.WebSocketResponse(
            max_msg_size=MAX_MESSAGE_BYTES + 1,  # aiohttp refuses sizes >= this
            compress=False,
            timeout=limits.close_timeout,
        )
        if not ws.can_prepare(request).ok:
            return self.json_message(
                "expected a WebSocket upgrade", HTTPStatus.BAD_REQUEST
            )
        handshake = read_handshake(request)
        pending: PendingPairing | None = None
        try:
            try:
                device, version = authenticate_handshake(server, handshake)
            except AdmissionError as err:
                if not err.credentials:
                    raise
                pending = pairing_for_token(
                    server.pairings,
                    device_mac(handshake.device_id),
                    handshake.client_id,
                    handshake.token,
                )
                if pending is None:
                    # Wrong claims are refused before the upgrade: clients
                    # (xiaozhi-sdk) give up on a 401 instead of waiting for a hello.
                    _log_refusal(request, handshake, err)
                    return self.json_message(err.detail, HTTPStatus.UNAUTHORIZED)
                version = parse_protocol_version(handshake.protocol_version)
                admit_pairing(hass)
            else:
                admit(hass, server, device.mac)
        except AdmissionError as err:
            _log_refusal(request, handshake, err)
            connection = await _async_accept(request, ws, limits)
            await connection.close(CLOSE_CODES[err.reason], err.detail)
            return ws
        connection = await _async_accept(request, ws, limits)
        if pending is not None:
            await _async_serve_pairing(
                hass, server, ws, connection, pending, protocol_version=version
            )
            return ws
        transport = WebSocketTransport(
            connection, protocol_version=version, name=device.name
        )
        await _async_serve(hass, server, ws, transport, device)
        return ws


def _log_refusal(
    request: web.Request, handshake: Handshake, err: AdmissionError
) -> None:
    LOGGER.warning(
        "Refused device connection from %s (Device-Id %r): %s",
        request.remote,
        handshake.device_id[:64],
        err.detail,
    )


async def _async_accept(
    request: web.Request, ws: web.WebSocketResponse, limits: WebSocketLimits
) -> WebSocketConnection:
    await ws.prepare(request)
    return WebSocketConnection(
        ws,
        send_timeout=limits.send_timeout,
        close_timeout=limits.close_timeout,
        abort=_dropper(request),
    )


async def _async_serve_pairing(
    hass: HomeAssistant,
    server: XiaozhiServer,
    ws: web.WebSocketResponse,
    connection: WebSocketConnection,
    pending: PendingPairing,
    *,
    protocol_version: int,
) -> None:
    name = f"unpaired device {pending.device.mac}"
    transport = WebSocketTransport(
        connection, protocol_version=protocol_version, name=name
    )
    session = server.pairing_sessions.async_open(
        hass, transport, pending, server.pairings.remaining_seconds(pending)
    )
    try:
        await _async_receive(
            ws, session, server.limits, protocol_version=protocol_version
        )
    finally:
        session.end(
            EndReason.NORMAL,
            f"the device closed the connection (code {ws.close_code})",
        )
        await session.async_wait_closed()


async def _async_serve(
    hass: HomeAssistant,
    server: XiaozhiServer,
    ws: web.WebSocketResponse,
    transport: WebSocketTransport,
    device: AuthenticatedDevice,
) -> None:
    link = DeviceLink(hass, device.runtime, transport, mac=device.mac, name=device.name)
    server.async_register_link(link)
    link.start()
    LOGGER.debug(
        "%s connected (protocol version %d)", device.name, transport.protocol_version
    )
    try:
        await _async_receive(
            ws, link, server.limits, protocol_version=transport.protocol_version
        )
    finally:
        link.end(
            EndReason.NORMAL,
            f"the device closed the connection (code {ws.close_code})",
        )
        server.async_unregister_link(link)
        await link.async_wait_closed()


class Receiver(Protocol):
    """What the receive loop hands a connection's messages to.

    A paired device's :class:`DeviceLink`, or an unpaired device's
    :class:`PairingSession`.
    """

    @property
    def mac(self) -> str:
        """Return the device's MAC."""

    @property
    def name(self) -> str:
        """Return how log lines name the device."""

    @property
    def closed(self) -> bool:
        """Return whether it has ended."""

    def note_incoming(self) -> None:
        """Take note that something arrived."""

    def end(self, reason: EndReason, detail: str) -> None:
        """End now."""

    def report_bad_input(self, kind: str, detail: object) -> None:
        """Log bad input."""

    async def async_handle_message(self, message: IncomingMessage) -> None:
        """Act on one parsed JSON message."""

    def handle_audio(self, packet: bytes) -> None:
        """Take one uplink Opus packet."""


async def _async_receive(
    ws: web.WebSocketResponse,
    link: Receiver,
    limits: ConnectionLimits | None = None,
    *,
    protocol_version: int = DEFAULT_PROTOCOL_VERSION,
) -> None:
    """Hand each message of the socket to the link until either ends."""
    limits = limits or ConnectionLimits()
    budget = RateLimiter(limits.messages_per_second, limits.message_burst, max_keys=1)
    async for message in ws:
        link.note_incoming()
        if not budget.allow(link.mac):
            link.end(
                EndReason.RATE_LIMITED,
                f"more than {limits.messages_per_second:g} messages per second "
                f"(bursts of {limits.message_burst})",
            )
            return
        try:
            await _async_handle_message(link, message, protocol_version)
        except SessionClosedError:
            return
        except Exception:  # one bad message must not take down the server
            LOGGER.exception("Unexpected error handling a message from %s", link.name)
            link.end(EndReason.INTERNAL_ERROR, "internal error")
            return
        if link.closed:
            return


async def _async_handle_message(
    link: Receiver, message: WSMessage, protocol_version: int
) -> None:
    if message.type is WSMsgType.TEXT:
        await _async_handle_json(link, message.data, protocol_version)
    elif message.type is WSMsgType.BINARY:
        await _async_handle_binary(link, message.data, protocol_version)
    else:  # ERROR: aiohttp has closed the socket already
        link.end(*_error_end(message.data))


def _error_end(error: object) -> tuple[EndReason, str]:
    """Return why a receive error ended the link (the code aiohttp sent)."""
    if isinstance(error, WebSocketError):
        try:
            reason = _END_REASONS[CloseCode(error.code)]
        except ValueError:
            reason = EndReason.PROTOCOL_ERROR
        return reason, f"bad frame: {error}"
    return EndReason.NORMAL, f"connection lost: {error!r}"


async def _async_handle_json(
    link: Receiver, data: str | bytes, protocol_version: int
) -> None:
    try:
        message = parse_message(data)
    except ValueError as err:  # MessageError, or a limit of json itself (huge ints)
        link.report_bad_input("malformed message", err)
        return
    if (
        isinstance(message, Hello)
        and isinstance(link, DeviceLink)
        and link.session is None
        and message.version != protocol_version
    ):
        LOGGER.debug(
            "%s says version %d in its hello, %d in its handshake: using %d",
            link.name,
            message.version,
            protocol_version,
            protocol_version,
        )
    await link.async_handle_message(message)


async def _async_handle_binary(
    link: Receiver, data: bytes, protocol_version: int
) -> None:
    try:
        frame = decode_frame(data, protocol_version)
    except FrameError as err:
        link.report_bad_input("malformed frame", err)
        return
    if frame.type is FrameType.JSON:
        await _async_handle_json(link, frame.payload, protocol_version)
    else:
        link.handle_audio(frame.payload)


@callback
def async_setup_websocket(hass: HomeAssistant) -> None:
    """Serve devices over WebSocket: the endpoint and its part of the OTA answer."""
    hass.data[DATA_WEBSOCKET_LIMITS] = WebSocketLimits()
    hass.http.register_view(DeviceWebSocketView())
    server = async_get_server(hass)
    server.ota_sections["websocket"] = ota_section
    server.pairing_ota_sections["websocket"] = pairing_ota_section
