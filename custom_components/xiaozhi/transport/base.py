"""The transport seam: what a way of reaching devices implements for ``device/``.

A transport (``websocket.py``; MQTT+UDP next) accepts a device's connection,
checks it with ``server/auth.py``, creates the device's ``device.link.DeviceLink``
with itself as the :class:`Transport`, registers the link with the server
(``server/registry.py``) and hands the link everything the device sends: parsed
JSON messages and Opus packets. The link and its voice sessions write back
through :class:`Transport`: JSON text, one Opus packet at a time (framing and any
encryption are the transport's business), and the end of the connection with an
:class:`EndReason`, which each transport tells the device its own way (WebSocket:
close codes).

This module imports nothing but the standard library: ``device/`` imports it, and
nothing else of ``transport/``.
"""

from collections.abc import Mapping
from enum import Enum, auto
from typing import Any, Protocol


class EndReason(Enum):
    """Why a device's connection or voice session ended, or was refused.

    Transport-neutral; ``transport.websocket.CLOSE_CODES`` maps each to the
    WebSocket close code the device gets.
    """

    NORMAL = auto()
    """The device went away (or its connection broke), or the conversation is over."""
    SERVER_SHUTDOWN = auto()
    """Home Assistant is stopping."""
    BAD_FRAME = auto()
    """A frame broke the transport's own protocol."""
    INVALID_TEXT = auto()
    """A text message was not UTF-8."""
    MESSAGE_TOO_BIG = auto()
    """A message was larger than the transport takes."""
    INTERNAL_ERROR = auto()
    """A bug of ours while handling a message."""
    PROTOCOL_ERROR = auto()
    """The device's hello cannot be served (its uplink audio is not Opus)."""
    UNAUTHORIZED = auto()
    """Unknown device, wrong token, or its entry is not loaded."""
    BAD_HANDSHAKE = auto()
    """The device's identity or protocol version is missing or invalid."""
    HELLO_TIMEOUT = auto()
    """No hello came in time."""
    REPLACED = auto()
    """A newer connection of the same device took over."""
    SERVER_CLOSED = auto()
    """The device's entry was unloaded, reloaded or removed."""
    IDLE_TIMEOUT = auto()
    """Nothing came from the device for too long."""
    SEND_TIMEOUT = auto()
    """The device stopped reading what we send."""
    RATE_LIMITED = auto()
    """The device sent messages faster than allowed."""
    SERVER_BUSY = auto()
    """Too many devices are connected already."""


class TransportError(ConnectionError):
    """The transport could not deliver a message (the connection is gone)."""


class SendTimeoutError(TransportError):
    """A send blocked too long: the device stopped reading."""


class Transport(Protocol):
    """What the device layer needs of one device's connection."""

    @property
    def session_ends_connection(self) -> bool:
        """Return whether a voice session can end only with the connection.

        True for WebSocket: the firmware opens its socket for a conversation and
        has no other way back to idle than the socket closing, so the device's
        link ends with its voice session. A transport whose connection outlives
        conversations (MQTT) ends a session with a ``goodbye`` instead.
        """

    def server_hello_fields(self) -> Mapping[str, Any]:
        """Return what the server hello says about this transport.

        ``transport`` (the firmware ignores a hello naming another transport),
        ``version``, and whatever else the transport's firmware code reads
        (MQTT's ``udp`` keys). Called once per voice session, as its hello goes
        out: a transport whose audio path is per session sets it up here.
        """

    def session_ended(self) -> None:
        """Release what :meth:`server_hello_fields` set up: the session is over.

        Called when a voice session ends and the connection stays (MQTT's UDP
        channel closes); never for a transport whose sessions end the connection.
        """

    def diagnostics(self) -> dict[str, Any]:
        """Return what the transport knows of the connection, for diagnostics."""

    async def send_text(self, text: str) -> None:
        """Send one JSON message.

        Raises:
            TransportError: The message could not be delivered
                (:class:`SendTimeoutError` when the device stopped reading).
        """

    async def send_audio(self, packet: bytes) -> None:
        """Send one downlink Opus packet, framed the transport's way.

        A packet the transport cannot frame is dropped with a log line.

        Raises:
            TransportError: The packet could not be delivered.
        """

    async def close(self, reason: EndReason, detail: str) -> None:
        """Close the connection, telling the device why where it can; never raises."""
