"""MQTT 3.1.1, server side, for exactly what the Xiaozhi firmware speaks.

Pure code, no I/O and no Home Assistant: bytes in, packets out, bytes to send.

The device connects with esp-mqtt (ESP-IDF; protocol level 4 unless a build turns
``CONFIG_MQTT_PROTOCOL_311`` off, then level 3 ``MQIsdp``) or a cellular modem's AT
client, always with a clean session, publishes QoS 0 JSON on its ``publish_topic``
and, in firmware since January 2025, never subscribes: the server pushes to it
point-to-point and the device ignores the topic (main/protocols/mqtt_protocol.cc
``OnMessage``). Older firmware subscribed with QoS 2, so SUBSCRIBE is answered by
granting QoS 0.

The subset: CONNECT/CONNACK, PUBLISH QoS 0 in both directions, SUBSCRIBE/SUBACK,
UNSUBSCRIBE/UNSUBACK, PINGREQ/PINGRESP and DISCONNECT. A QoS 1 or 2 PUBLISH is
refused (:class:`UnsupportedPacketError`): MQTT has no way to refuse one but to
close the connection. Everything a client must not send, or sends malformed, is a
:class:`MalformedPacketError`; the stream cannot be trusted after it.

Our own codec, as no library fits the role: the maintained sans-IO codecs
(mqttproto's line) are MQTT 5 only, amqtt's codec reads from asyncio streams
without a size limit and comes with a whole broker, and paho-mqtt and gmqtt are
clients.

:class:`PacketDecoder` is the incremental stream decoder; :class:`ServerConnection`
adds the connection rules (CONNECT first and once, automatic PINGRESP, SUBACK and
UNSUBACK, nothing processed after DISCONNECT or before the CONNECT is accepted);
the ``encode_*`` functions build what a server sends.
"""

from collections.abc import Buffer, Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
import struct
from typing import Final

# The largest packet the firmware sends is an MCP reply: tools/list pages are cut
# at 8000 bytes (main/mcp_server.cc GetToolsList). The modem client refuses
# publishes over 64 KiB (esp-ml307 ml307_mqtt.cc Publish).
DEFAULT_MAX_PACKET_SIZE: Final = 65536
# MQTT 3.1.1 section 2.2.3: four bytes of seven bits.
MAX_REMAINING_LENGTH: Final = 268_435_455
MAX_STRING_BYTES: Final = 0xFFFF

PROTOCOL_NAME_3_1_1: Final = "MQTT"
PROTOCOL_LEVEL_3_1_1: Final = 4
PROTOCOL_NAME_3_1: Final = "MQIsdp"
PROTOCOL_LEVEL_3_1: Final = 3
_LEVEL_OF_NAME: Final = {
    PROTOCOL_NAME_3_1_1: PROTOCOL_LEVEL_3_1_1,
    PROTOCOL_NAME_3_1: PROTOCOL_LEVEL_3_1,
}

# A client that sends nothing for one and a half keep-alive periods is gone
# (MQTT 3.1.1 section 3.1.2.10).
KEEPALIVE_GRACE: Final = 1.5

_U16: Final = struct.Struct(">H")
_SUBSCRIBE_FLAGS: Final = 0b0010
_CONNECT_RESERVED: Final = 0x01
_CONNECT_CLEAN_SESSION: Final = 0x02
_CONNECT_WILL: Final = 0x04
_CONNECT_WILL_QOS: Final = 0x18
_CONNECT_WILL_RETAIN: Final = 0x20
_CONNECT_PASSWORD: Final = 0x40
_CONNECT_USERNAME: Final = 0x80
_PUBLISH_DUP: Final = 0x08
_PUBLISH_QOS: Final = 0x06
_PUBLISH_RETAIN: Final = 0x01
_SUBACK_FAILURE: Final = 0x80


class PacketType(IntEnum):
    """MQTT control packet types (the high nibble of the first byte)."""

    CONNECT = 1
    CONNACK = 2
    PUBLISH = 3
    PUBACK = 4
    PUBREC = 5
    PUBREL = 6
    PUBCOMP = 7
    SUBSCRIBE = 8
    SUBACK = 9
    UNSUBSCRIBE = 10
    UNSUBACK = 11
    PINGREQ = 12
    PINGRESP = 13
    DISCONNECT = 14


class ConnectReturnCode(IntEnum):
    """CONNACK return codes of MQTT 3.1.1 (section 3.2.2.3)."""

    ACCEPTED = 0
    UNACCEPTABLE_PROTOCOL_VERSION = 1
    IDENTIFIER_REJECTED = 2
    SERVER_UNAVAILABLE = 3
    BAD_USERNAME_OR_PASSWORD = 4
    NOT_AUTHORIZED = 5


class MqttError(ValueError):
    """The client broke the protocol or left the subset; close its connection."""


class MalformedPacketError(MqttError):
    """Bytes that are not MQTT 3.1.1 a client may send."""


class PacketTooLargeError(MqttError):
    """A packet declares more bytes than the server accepts."""


class UnsupportedPacketError(MqttError):
    """Valid MQTT outside the subset the endpoint serves (QoS 1 and 2)."""


class ConnectRefusedError(MqttError):
    """A CONNECT the server must answer with a refusing CONNACK before closing."""

    def __init__(self, message: str, return_code: ConnectReturnCode) -> None:
        """Keep the return code the CONNACK must carry."""
        super().__init__(message)
        self.return_code = return_code


@dataclass(frozen=True, slots=True)
class Will:
    """The will of a CONNECT: parsed to validate it, never published here."""

    topic: str
    message: bytes
    qos: int
    retain: bool


@dataclass(frozen=True, slots=True)
class Connect:
    """A CONNECT packet.

    Attributes:
        protocol_level: 4 (MQTT 3.1.1) or 3 (MQTT 3.1).
        client_id: May be empty (only with a clean session).
        clean_session: The firmware always sets it.
        keepalive: Seconds; 0 disables the keep-alive check.
        username: ``None`` when the username flag is clear.
        password: ``None`` when the password flag is clear.
        will: ``None`` when the will flag is clear.
    """

    protocol_level: int
    client_id: str
    clean_session: bool
    keepalive: int
    username: str | None = None
    password: bytes | None = None
    will: Will | None = None

    @property
    def keepalive_timeout(self) -> float | None:
        """Seconds of silence after which the client is considered gone."""
        return self.keepalive * KEEPALIVE_GRACE if self.keepalive else None


@dataclass(frozen=True, slots=True)
class Publish:
    """A QoS 0 PUBLISH (the only QoS in the subset)."""

    topic: str
    payload: bytes
    retain: bool = False


@dataclass(frozen=True, slots=True)
class Subscription:
    """One topic filter of a SUBSCRIBE with the QoS the client asked for."""

    topic_filter: str
    qos: int


@dataclass(frozen=True, slots=True)
class Subscribe:
    """A SUBSCRIBE packet (old firmware subscribes once after connecting)."""

    packet_id: int
    subscriptions: tuple[Subscription, ...]


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    """An UNSUBSCRIBE packet."""

    packet_id: int
    topic_filters: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PingReq:
    """A PINGREQ packet."""


@dataclass(frozen=True, slots=True)
class Disconnect:
    """A DISCONNECT packet: the client is leaving cleanly."""


type ClientPacket = Connect | Publish | Subscribe | Unsubscribe | PingReq | Disconnect

_SERVER_ONLY: Final = frozenset(
    {PacketType.CONNACK, PacketType.SUBACK, PacketType.UNSUBACK, PacketType.PINGRESP}
)
_QOS_FLOW: Final = frozenset(
    {PacketType.PUBACK, PacketType.PUBREC, PacketType.PUBREL, PacketType.PUBCOMP}
)


# ---------------------------------------------------------------- decoding


class _Reader:
    """Reads the fields of one packet body; running short is malformed."""

    __slots__ = ("_data", "_name", "_pos")

    def __init__(self, data: bytes, name: str) -> None:
        self._data = data
        self._name = name
        self._pos = 0

    def byte(self) -> int:
        return self.take(1)[0]

    def u16(self) -> int:
        value: int = _U16.unpack(self.take(2))[0]
        return value

    def take(self, size: int) -> bytes:
        end = self._pos + size
        if end > len(self._data):
            raise MalformedPacketError(f"{self._name} ends inside a field")
        chunk = self._data[self._pos : end]
        self._pos = end
        return chunk

    def binary(self) -> bytes:
        return self.take(self.u16())

    def text(self, field: str) -> str:
        raw = self.binary()
        try:
            value = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MalformedPacketError(
                f"{self._name} {field} is not valid UTF-8"
            ) from None
        if "\x00" in value:
            # MQTT 3.1.1 section 1.5.3: U+0000 is forbidden in every string.
            raise MalformedPacketError(f"{self._name} {field} contains U+0000")
        return value

    def rest(self) -> bytes:
        chunk = self._data[self._pos :]
        self._pos = len(self._data)
        return chunk

    @property
    def exhausted(self) -> bool:
        return self._pos == len(self._data)

    def expect_end(self) -> None:
        if not self.exhausted:
            extra = len(self._data) - self._pos
            raise MalformedPacketError(f"{extra} stray bytes after the {self._name}")


def _check_topic_name(topic: str, where: str) -> None:
    """Refuse a topic a message cannot be published to (section 4.7)."""
    if not topic:
        raise MalformedPacketError(f"{where} has an empty topic")
    if "+" in topic or "#" in topic:
        raise MalformedPacketError(f"{where} topic {topic!r} contains a wildcard")


def _check_topic_filter(topic_filter: str, where: str) -> None:
    """Refuse a filter whose wildcards break section 4.7.1's rules."""
    if not topic_filter:
        raise MalformedPacketError(f"{where} has an empty topic filter")
    levels = topic_filter.split("/")
    for index, level in enumerate(levels):
        if "#" in level and (level != "#" or index != len(levels) - 1):
            raise MalformedPacketError(
                f"{where} filter {topic_filter!r}: '#' must be the whole last level"
            )
        if "+" in level and level != "+":
            raise MalformedPacketError(
                f"{where} filter {topic_filter!r}: '+' must be a whole level"
            )


def _packet_id(reader: _Reader, where: str) -> int:
    packet_id = reader.u16()
    if packet_id == 0:
        raise MalformedPacketError(f"{where} has packet identifier 0")
    return packet_id


def _decode_connect(body: bytes) -> Connect:
    reader = _Reader(body, "CONNECT")
    name = reader.text("protocol name")
    if name not in _LEVEL_OF_NAME:
        raise MalformedPacketError(f"not an MQTT client: protocol name {name!r}")
    level = reader.byte()
    if level != _LEVEL_OF_NAME[name]:
        raise ConnectRefusedError(
            f"unsupported protocol {name!r} level {level}",
            ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        )
    flags = reader.byte()
    keepalive = reader.u16()
    has_will, will_qos, will_retain = _will_flags(flags)
    if flags & _CONNECT_PASSWORD and not flags & _CONNECT_USERNAME:
        raise MalformedPacketError("CONNECT has a password without a username")
    clean_session = bool(flags & _CONNECT_CLEAN_SESSION)
    client_id = reader.text("client identifier")
    will = None
    if has_will:
        will_topic = reader.text("will topic")
        _check_topic_name(will_topic, "CONNECT will")
        will = Will(will_topic, reader.binary(), will_qos, will_retain)
    username = reader.text("username") if flags & _CONNECT_USERNAME else None
    password = reader.binary() if flags & _CONNECT_PASSWORD else None
    reader.expect_end()
    if not client_id and level == PROTOCOL_LEVEL_3_1:
        raise ConnectRefusedError(
            "MQTT 3.1 needs a client identifier", ConnectReturnCode.IDENTIFIER_REJECTED
        )
    if not client_id and not clean_session:
        # Section 3.1.3-8: a session cannot be resumed under no name.
        raise ConnectRefusedError(
            "an empty client identifier without a clean session",
            ConnectReturnCode.IDENTIFIER_REJECTED,
        )
    return Connect(
        protocol_level=level,
        client_id=client_id,
        clean_session=clean_session,
        keepalive=keepalive,
        username=username,
        password=password,
        will=will,
    )


def _will_flags(flags: int) -> tuple[bool, int, bool]:
    """Validate the CONNECT flags about the will (section 3.1.2.3-3.1.2.7)."""
    if flags & _CONNECT_RESERVED:
        raise MalformedPacketError("CONNECT reserved flag is set")
    has_will = bool(flags & _CONNECT_WILL)
    qos = (flags & _CONNECT_WILL_QOS) >> 3
    retain = bool(flags & _CONNECT_WILL_RETAIN)
    if not has_will and (qos or retain):
        raise MalformedPacketError("CONNECT has will QoS or retain without a will")
    if qos == 3:
        raise MalformedPacketError("CONNECT will QoS is 3")
    return has_will, qos, retain


def _decode_publish(flags: int, body: bytes) -> Publish:
    qos = (flags & _PUBLISH_QOS) >> 1
    if qos == 3:
        raise MalformedPacketError("PUBLISH QoS is 3")
    if qos:
        raise UnsupportedPacketError(f"PUBLISH with QoS {qos}; only QoS 0 is served")
    if flags & _PUBLISH_DUP:
        raise MalformedPacketError("QoS 0 PUBLISH has the DUP flag set")
    reader = _Reader(body, "PUBLISH")
    topic = reader.text("topic")
    _check_topic_name(topic, "PUBLISH")
    return Publish(topic, reader.rest(), retain=bool(flags & _PUBLISH_RETAIN))


def _decode_subscribe(body: bytes) -> Subscribe:
    reader = _Reader(body, "SUBSCRIBE")
    packet_id = _packet_id(reader, "SUBSCRIBE")
    subscriptions: list[Subscription] = []
    while not reader.exhausted:
        topic_filter = reader.text("topic filter")
        _check_topic_filter(topic_filter, "SUBSCRIBE")
        requested = reader.byte()
        if requested > 2:
            raise MalformedPacketError(f"SUBSCRIBE requests QoS byte {requested:#04x}")
        subscriptions.append(Subscription(topic_filter, requested))
    if not subscriptions:
        raise MalformedPacketError("SUBSCRIBE without a topic filter")
    return Subscribe(packet_id, tuple(subscriptions))


def _decode_unsubscribe(body: bytes) -> Unsubscribe:
    reader = _Reader(body, "UNSUBSCRIBE")
    packet_id = _packet_id(reader, "UNSUBSCRIBE")
    filters: list[str] = []
    while not reader.exhausted:
        topic_filter = reader.text("topic filter")
        _check_topic_filter(topic_filter, "UNSUBSCRIBE")
        filters.append(topic_filter)
    if not filters:
        raise MalformedPacketError("UNSUBSCRIBE without a topic filter")
    return Unsubscribe(packet_id, tuple(filters))


def _decode_empty(packet_type: PacketType, body: bytes) -> PingReq | Disconnect:
    if body:
        raise MalformedPacketError(f"{packet_type.name} has a {len(body)}-byte body")
    return PingReq() if packet_type is PacketType.PINGREQ else Disconnect()


def _packet_type(first_byte: int) -> PacketType:
    """Return the type of a packet a client may send, checking its fixed flags."""
    raw_type, flags = first_byte >> 4, first_byte & 0x0F
    try:
        packet_type = PacketType(raw_type)
    except ValueError:
        raise MalformedPacketError(f"reserved packet type {raw_type}") from None
    if packet_type in _SERVER_ONLY:
        raise MalformedPacketError(f"a client never sends {packet_type.name}")
    if packet_type in _QOS_FLOW:
        raise UnsupportedPacketError(
            f"{packet_type.name} belongs to QoS 1/2, which is not served"
        )
    expected = (
        _SUBSCRIBE_FLAGS
        if packet_type in {PacketType.SUBSCRIBE, PacketType.UNSUBSCRIBE}
        else 0
    )
    if packet_type is not PacketType.PUBLISH and flags != expected:
        raise MalformedPacketError(
            f"{packet_type.name} has fixed-header flags {flags:#06b}"
        )
    return packet_type


def _decode_body(first_byte: int, body: bytes) -> ClientPacket:
    packet_type = _packet_type(first_byte)
    if packet_type is PacketType.CONNECT:
        return _decode_connect(body)
    if packet_type is PacketType.PUBLISH:
        return _decode_publish(first_byte & 0x0F, body)
    if packet_type is PacketType.SUBSCRIBE:
        return _decode_subscribe(body)
    if packet_type is PacketType.UNSUBSCRIBE:
        return _decode_unsubscribe(body)
    return _decode_empty(packet_type, body)


class PacketDecoder:
    """Turns a client's byte stream into packets, one complete packet at a time.

    Memory is bounded: a packet is refused as soon as its fixed header declares
    more than ``max_packet_size`` bytes, before its body is buffered, so once
    :meth:`next_packet` returns ``None`` fewer than ``max_packet_size`` bytes are
    held. The first error is final: the stream is out of step after it, so every
    later call raises it again.
    """

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        """Start with an empty buffer.

        Args:
            max_packet_size: Largest whole packet (fixed header included) accepted.
        """
        if max_packet_size < 2:
            raise ValueError("an MQTT packet has at least two bytes")
        self._max_packet_size = max_packet_size
        self._buffer = bytearray()
        self._error: MqttError | None = None

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as a packet."""
        return len(self._buffer)

    def feed(self, data: Buffer) -> None:
        """Append bytes from the connection; :meth:`next_packet` decodes them.

        Raises:
            MqttError: An earlier packet was refused; the stream is over.
        """
        if self._error is not None:
            raise self._error
        self._buffer += data

    def next_packet(self) -> ClientPacket | None:
        """Return the next complete packet, or ``None`` until more bytes arrive.

        Raises:
            MqttError: The stream is malformed, too large or outside the subset.
        """
        if self._error is not None:
            raise self._error
        try:
            return self._take_packet()
        except MqttError as err:
            self._error = err
            self._buffer.clear()
            raise

    def decode(self, data: Buffer) -> list[ClientPacket]:
        """Feed ``data`` and return every packet it completes."""
        self.feed(data)
        packets: list[ClientPacket] = []
        while (packet := self.next_packet()) is not None:
            packets.append(packet)
        return packets

    def _take_packet(self) -> ClientPacket | None:
        header = self._fixed_header()
        if header is None:
            return None
        header_size, remaining = header
        end = header_size + remaining
        if len(self._buffer) < end:
            return None
        first_byte = self._buffer[0]
        body = bytes(self._buffer[header_size:end])
        del self._buffer[:end]
        return _decode_body(first_byte, body)

    def _fixed_header(self) -> tuple[int, int] | None:
        """Return (header size, remaining length) once the header is complete."""
        buffer = self._buffer
        if not buffer:
            return None
        _packet_type(buffer[0])
        remaining = 0
        for index in range(1, 5):
            if index >= len(buffer):
                return None
            digit = buffer[index]
            remaining |= (digit & 0x7F) << (7 * (index - 1))
            if not digit & 0x80:
                break
        else:
            raise MalformedPacketError("remaining length runs past four bytes")
        header_size = index + 1
        if header_size + remaining > self._max_packet_size:
            raise PacketTooLargeError(
                f"packet of {header_size + remaining} bytes exceeds the limit of "
                f"{self._max_packet_size}"
            )
        return header_size, remaining


# ---------------------------------------------------------------- encoding


def encode_remaining_length(length: int) -> bytes:
    """Encode a remaining length (section 2.2.3)."""
    if not 0 <= length <= MAX_REMAINING_LENGTH:
        raise ValueError(
            f"remaining length {length} is outside 0..{MAX_REMAINING_LENGTH}"
        )
    encoded = bytearray()
    while True:
        digit, length = length & 0x7F, length >> 7
        encoded.append(digit | 0x80 if length else digit)
        if not length:
            return bytes(encoded)


def _packet(packet_type: PacketType, body: bytes, flags: int = 0) -> bytes:
    return bytes([packet_type << 4 | flags]) + encode_remaining_length(len(body)) + body


def _encode_text(value: str, what: str) -> bytes:
    raw = value.encode("utf-8")
    if len(raw) > MAX_STRING_BYTES:
        raise ValueError(f"{what} of {len(raw)} bytes exceeds {MAX_STRING_BYTES}")
    if "\x00" in value:
        raise ValueError(f"{what} contains U+0000")
    return _U16.pack(len(raw)) + raw


def encode_connack(
    return_code: ConnectReturnCode = ConnectReturnCode.ACCEPTED,
    *,
    session_present: bool = False,
) -> bytes:
    """Build a CONNACK.

    Raises:
        ValueError: ``session_present`` on a refusal (section 3.2.2.2).
    """
    if session_present and return_code is not ConnectReturnCode.ACCEPTED:
        raise ValueError("a refused connection has no session")
    return _packet(PacketType.CONNACK, bytes([int(session_present), return_code]))


def encode_publish(topic: str, payload: Buffer, *, retain: bool = False) -> bytes:
    """Build a QoS 0 PUBLISH for a client.

    Raises:
        ValueError: Empty or wildcard topic, or a packet beyond MQTT's size limit.
    """
    try:
        _check_topic_name(topic, "PUBLISH")
    except MalformedPacketError as err:
        raise ValueError(str(err)) from None
    flags = _PUBLISH_RETAIN if retain else 0
    return _packet(
        PacketType.PUBLISH, _encode_text(topic, "topic") + bytes(payload), flags
    )


def encode_suback(packet_id: int, return_codes: Sequence[int]) -> bytes:
    """Build a SUBACK: one granted QoS (0-2) or 0x80 (failure) per filter."""
    if not return_codes:
        raise ValueError("a SUBACK answers at least one topic filter")
    if any(code not in {0, 1, 2, _SUBACK_FAILURE} for code in return_codes):
        raise ValueError(f"invalid SUBACK return codes {list(return_codes)}")
    return _packet(PacketType.SUBACK, _U16.pack(packet_id) + bytes(return_codes))


def encode_unsuback(packet_id: int) -> bytes:
    """Build an UNSUBACK."""
    return _packet(PacketType.UNSUBACK, _U16.pack(packet_id))


def encode_pingresp() -> bytes:
    """Build a PINGRESP."""
    return _packet(PacketType.PINGRESP, b"")


# ---------------------------------------------------------------- connection


class ConnectionState(StrEnum):
    """Where a :class:`ServerConnection` is in its life."""

    AWAITING_CONNECT = "awaiting_connect"
    CONNECT_PENDING = "connect_pending"
    CONNECTED = "connected"
    CLOSED = "closed"


class ServerConnection:
    """The server's side of one client connection, without I/O.

    Feed it what the socket reads (:meth:`receive`), write what
    :meth:`data_to_send` returns. It enforces the order of MQTT 3.1.1: the first
    packet is CONNECT and there is only one; after a CONNECT nothing else is
    decoded until the owner calls :meth:`accept` (then ``receive(b"")`` processes
    what the client sent meanwhile) or :meth:`refuse`; after DISCONNECT nothing is
    processed. PINGREQ, SUBSCRIBE (granted QoS 0) and UNSUBSCRIBE are answered
    here; every packet is still returned, so the owner can restart its
    keep-alive watchdog (:attr:`Connect.keepalive_timeout`) whenever
    :meth:`receive` returns any.

    On :class:`MqttError`, write :meth:`data_to_send` (it may hold a refusing
    CONNACK) and close the socket.
    """

    def __init__(self, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> None:
        """Wait for a CONNECT.

        Args:
            max_packet_size: Largest packet accepted; also bounds what a client
                may send before its CONNECT is accepted.
        """
        self._decoder = PacketDecoder(max_packet_size)
        self._max_packet_size = max_packet_size
        self._outgoing = bytearray()
        self._state = ConnectionState.AWAITING_CONNECT
        self._connect: Connect | None = None

    @property
    def state(self) -> ConnectionState:
        """Where the connection is."""
        return self._state

    @property
    def connect(self) -> Connect | None:
        """The client's CONNECT, once received."""
        return self._connect

    def receive(self, data: Buffer) -> list[ClientPacket]:
        """Take bytes from the socket and return the packets they complete.

        Raises:
            MqttError: The client broke the protocol; the connection is over.
        """
        if self._state is ConnectionState.CLOSED:
            return []
        self._decoder.feed(data)
        if self._state is ConnectionState.CONNECT_PENDING:
            self._limit_pending()
            return []
        packets: list[ClientPacket] = []
        while (packet := self._next_packet()) is not None:
            packets.append(packet)
            if self._handle(packet):
                break
        return packets

    def accept(self) -> None:
        """Accept the pending CONNECT: queue CONNACK 0."""
        self._require(ConnectionState.CONNECT_PENDING, "accept")
        self._outgoing += encode_connack(ConnectReturnCode.ACCEPTED)
        self._state = ConnectionState.CONNECTED

    def refuse(self, return_code: ConnectReturnCode) -> None:
        """Refuse the connection: queue a CONNACK with ``return_code``.

        Raises:
            ValueError: ``return_code`` is ``ACCEPTED``.
        """
        if return_code is ConnectReturnCode.ACCEPTED:
            raise ValueError("refuse() needs a refusing return code")
        if self._state is ConnectionState.CONNECTED:
            raise RuntimeError("the connection was already accepted")
        self._outgoing += encode_connack(return_code)
        self._state = ConnectionState.CLOSED

    def publish(self, topic: str, payload: Buffer) -> None:
        """Queue a QoS 0 PUBLISH to the client."""
        self._require(ConnectionState.CONNECTED, "publish")
        self._outgoing += encode_publish(topic, payload)

    def data_to_send(self) -> bytes:
        """Return and forget the bytes queued for the socket."""
        data = bytes(self._outgoing)
        self._outgoing.clear()
        return data

    def _next_packet(self) -> ClientPacket | None:
        try:
            return self._decoder.next_packet()
        except ConnectRefusedError as err:
            if self._state is ConnectionState.AWAITING_CONNECT:
                self.refuse(err.return_code)
            self._state = ConnectionState.CLOSED
            raise
        except MqttError:
            self._state = ConnectionState.CLOSED
            raise

    def _handle(self, packet: ClientPacket) -> bool:
        """Apply one packet's rule; True when decoding must pause or stop."""
        if isinstance(packet, Connect):
            if self._state is not ConnectionState.AWAITING_CONNECT:
                raise self._fail("a second CONNECT on the same connection")
            self._connect = packet
            self._state = ConnectionState.CONNECT_PENDING
            return True
        if self._state is ConnectionState.AWAITING_CONNECT:
            raise self._fail(f"{type(packet).__name__} before CONNECT")
        if isinstance(packet, PingReq):
            self._outgoing += encode_pingresp()
        elif isinstance(packet, Subscribe):
            self._outgoing += encode_suback(
                packet.packet_id, [0] * len(packet.subscriptions)
            )
        elif isinstance(packet, Unsubscribe):
            self._outgoing += encode_unsuback(packet.packet_id)
        elif isinstance(packet, Disconnect):
            self._state = ConnectionState.CLOSED
            return True
        return False

    def _fail(self, message: str) -> MalformedPacketError:
        self._state = ConnectionState.CLOSED
        return MalformedPacketError(message)

    def _limit_pending(self) -> None:
        if self._decoder.buffered > self._max_packet_size:
            self._state = ConnectionState.CLOSED
            raise PacketTooLargeError(
                f"{self._decoder.buffered} bytes sent before the CONNECT was answered"
            )

    def _require(self, state: ConnectionState, action: str) -> None:
        if self._state is not state:
            raise RuntimeError(f"cannot {action} a connection in state {self._state}")
