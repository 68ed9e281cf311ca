"""The UDP audio channel of the MQTT transport: datagrams, AES-CTR, sequences.

Pure code, no sockets and no Home Assistant. Every rule here is the firmware's
(main/protocols/mqtt_protocol.cc ``SendAudio``, ``OpenAudioChannel``,
``ParseServerHello``; 78/xiaozhi-esp32 v2.4):

* A datagram is a 16-byte header, big-endian ``type u8 | flags u8 |
  payload_len u16 | ssrc u32 | timestamp u32 | sequence u32``, then the Opus
  packet encrypted with AES-128-CTR. The header itself is the initial counter
  block, in both directions, and the counter runs over all 128 bits.
* The server hands out a 16-byte key and a 16-byte nonce in its hello. For each
  uplink packet the device copies ``type``, ``flags`` and ``ssrc`` from the nonce
  and writes ``payload_len``, ``timestamp`` and ``sequence`` (1, 2, 3... from each
  hello). ``ssrc`` is therefore the routing key of a shared server socket.
* The device accepts a downlink datagram only with type 0x01, a ``payload_len``
  equal to the bytes that follow, and a sequence above the last one it accepted
  (gaps are only logged), and reads at most 1500 bytes of it.

There is no integrity check in this scheme: a datagram encrypted under another
key decrypts to noise. What a channel can refuse is what does not belong to it
(type, flags, ssrc, length) and what it has already seen (sequence).
"""

from collections.abc import Buffer, Container
from dataclasses import dataclass
from enum import StrEnum
import ipaddress
import secrets
import struct
from typing import Final, Self

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HEADER: Final = struct.Struct(">BBHIII")
HEADER_SIZE: Final = HEADER.size
AUDIO_PACKET_TYPE: Final = 0x01
KEY_SIZE: Final = 16
NONCE_SIZE: Final = HEADER_SIZE
# The device's receive buffer (esp-ml307 src/esp/esp_udp.cc ReceiveTask): a
# longer datagram arrives cut, fails the length check and is dropped.
MAX_DATAGRAM_SIZE: Final = 1500
MAX_PAYLOAD_SIZE: Final = MAX_DATAGRAM_SIZE - HEADER_SIZE
MAX_SEQUENCE: Final = 0xFFFFFFFF
_U32_MASK: Final = 0xFFFFFFFF
# Informational: the firmware ignores it; other servers send it too.
ENCRYPTION: Final = "aes-128-ctr"


class DropReason(StrEnum):
    """Why an uplink datagram was refused."""

    TOO_SHORT = "too_short"
    TOO_LONG = "too_long"
    WRONG_TYPE = "wrong_type"
    LENGTH_MISMATCH = "length_mismatch"
    FOREIGN = "foreign"
    REPLAYED = "replayed"


class UdpError(ValueError):
    """Base class of the errors of this module."""


class DatagramRejectedError(UdpError):
    """An uplink datagram that must be dropped; ``reason`` says why."""

    def __init__(self, reason: DropReason, message: str) -> None:
        """Keep the reason for counters and logs."""
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Header:
    """The 16-byte header of an audio datagram."""

    type: int
    flags: int
    payload_length: int
    ssrc: int
    timestamp: int
    sequence: int

    def pack(self) -> bytes:
        """Return the header's 16 bytes."""
        return HEADER.pack(
            self.type,
            self.flags,
            self.payload_length,
            self.ssrc,
            self.timestamp,
            self.sequence,
        )

    @classmethod
    def unpack(cls, datagram: Buffer) -> Self:
        """Read the header at the start of ``datagram``.

        Raises:
            DatagramRejectedError: Fewer than 16 bytes.
        """
        view = memoryview(datagram)
        if len(view) < HEADER_SIZE:
            raise DatagramRejectedError(
                DropReason.TOO_SHORT,
                f"{len(view)}-byte datagram is shorter than the {HEADER_SIZE}-byte header",
            )
        return cls(*HEADER.unpack_from(view))


@dataclass(frozen=True, slots=True)
class UplinkPacket:
    """One accepted uplink datagram.

    Attributes:
        payload: The decrypted Opus packet (may be empty).
        timestamp: The device's timestamp (0 unless server AEC is on).
        sequence: The device's sequence number.
        skipped: Sequence numbers jumped over since the last accepted packet:
            lost or late datagrams (late ones are then refused as replays).
    """

    payload: bytes
    timestamp: int
    sequence: int
    skipped: int


def random_ssrc(taken: Container[int] = ()) -> int:
    """Return a random non-zero ssrc that is not in ``taken``."""
    while True:
        ssrc = secrets.randbits(32)
        if ssrc and ssrc not in taken:
            return ssrc


def aes_ctr(
    key: bytes, counter_block: bytes, data: bytes | bytearray | memoryview
) -> bytes:
    """Encrypt or decrypt ``data`` the way the firmware does (PSA_ALG_CTR).

    ``cryptography``'s CTR mode, like PSA's, increments the whole 16-byte block
    as one big-endian number.
    """
    cipher = Cipher(algorithms.AES(key), modes.CTR(counter_block))
    encryptor = cipher.encryptor()
    return encryptor.update(data) + encryptor.finalize()


class AudioChannel:
    """The UDP audio of one voice session: from a server hello to its end.

    Create one per server hello (:meth:`create`): the device resets both
    sequences at each hello and keys the channel with what that hello carries.
    A fresh random ``ssrc`` per channel means datagrams of an earlier session
    never route to a later one.
    """

    def __init__(self, key: bytes, nonce: bytes) -> None:
        """Use a key and nonce (as sent in the server hello).

        Raises:
            UdpError: Not 16 bytes each, or a nonce whose type byte the device
                would copy into datagrams the server must refuse.
        """
        if len(key) != KEY_SIZE:
            raise UdpError(f"AES-128 key must be {KEY_SIZE} bytes, got {len(key)}")
        if len(nonce) != NONCE_SIZE:
            raise UdpError(f"nonce must be {NONCE_SIZE} bytes, got {len(nonce)}")
        if nonce[0] != AUDIO_PACKET_TYPE:
            raise UdpError(f"nonce type byte must be {AUDIO_PACKET_TYPE:#04x}")
        self._key = bytes(key)
        self._nonce = Header.unpack(nonce)
        self._sent_sequence = 0
        self._received_sequence = 0

    @classmethod
    def create(cls, ssrc: int) -> Self:
        """Return a channel with a random key and a nonce carrying ``ssrc``.

        Raises:
            UdpError: ``ssrc`` is not a non-zero 32-bit number.
        """
        if not 0 < ssrc <= _U32_MASK:
            raise UdpError(f"ssrc must be a non-zero 32-bit number, got {ssrc}")
        nonce = Header(AUDIO_PACKET_TYPE, 0, 0, ssrc, 0, 0).pack()
        return cls(secrets.token_bytes(KEY_SIZE), nonce)

    @property
    def ssrc(self) -> int:
        """The routing key every uplink datagram of this channel carries."""
        return self._nonce.ssrc

    @property
    def key_hex(self) -> str:
        """The key for the server hello: 32 lowercase hex characters."""
        return self._key.hex()

    @property
    def nonce_hex(self) -> str:
        """The nonce for the server hello: 32 lowercase hex characters."""
        return self._nonce.pack().hex()

    @property
    def last_sent_sequence(self) -> int:
        """Sequence of the last downlink datagram built (0: none yet)."""
        return self._sent_sequence

    @property
    def last_received_sequence(self) -> int:
        """Sequence of the last uplink datagram accepted (0: none yet)."""
        return self._received_sequence

    def hello_udp(self, server: str, port: int) -> dict[str, str | int]:
        """Return the ``udp`` object of the server hello.

        Args:
            server: Where the device sends its datagrams: an IPv4 address or a
                host name (the device resolves IPv4 only), and exactly the
                address the server replies from, as the device ``connect()``s its
                socket.
            port: The server's UDP port.

        Raises:
            UdpError: An empty server, an IPv6 address or a port outside 1..65535.
        """
        if not server:
            raise UdpError("the UDP server address is empty")
        try:
            address = ipaddress.ip_address(server)
        except ValueError:
            address = None
        if isinstance(address, ipaddress.IPv6Address):
            raise UdpError(f"the device cannot reach IPv6 address {server}")
        if not 0 < port <= 0xFFFF:
            raise UdpError(f"UDP port {port} is outside 1..65535")
        return {
            "server": server,
            "port": port,
            "encryption": ENCRYPTION,
            "key": self.key_hex,
            "nonce": self.nonce_hex,
        }

    def seal(self, payload: Buffer, timestamp: int | None = None) -> bytes:
        """Build the next downlink datagram: header plus encrypted ``payload``.

        Args:
            payload: One Opus packet, 1 to :data:`MAX_PAYLOAD_SIZE` bytes.
            timestamp: The device hands it to its player as the server-AEC
                reference. By default the sequence number: a different value in
                every header gives every datagram its own keystream, where equal
                headers but for the sequence would overlap (the counter runs into
                the next datagram's).

        Raises:
            UdpError: Empty or oversized payload, or the 32-bit sequence is used
                up (send a new hello).
        """
        data = bytes(payload)
        if not data:
            raise UdpError("refusing to send an empty audio datagram")
        if len(data) > MAX_PAYLOAD_SIZE:
            raise UdpError(
                f"{len(data)}-byte payload exceeds the device's limit of "
                f"{MAX_PAYLOAD_SIZE}"
            )
        if self._sent_sequence == MAX_SEQUENCE:
            raise UdpError("downlink sequence numbers are used up")
        self._sent_sequence += 1
        header = Header(
            AUDIO_PACKET_TYPE,
            self._nonce.flags,
            len(data),
            self._nonce.ssrc,
            (self._sent_sequence if timestamp is None else timestamp) & _U32_MASK,
            self._sent_sequence,
        ).pack()
        return header + aes_ctr(self._key, header, data)

    def open(self, datagram: Buffer) -> UplinkPacket:
        """Check and decrypt one uplink datagram.

        Raises:
            DatagramRejectedError: Too short or too long, not an audio packet,
                another channel's (flags or ssrc), a length field that does not
                match, or a sequence not above the last accepted one (a replay or
                a datagram overtaken by a later one).
        """
        view = memoryview(datagram)
        if len(view) > MAX_DATAGRAM_SIZE:
            raise DatagramRejectedError(
                DropReason.TOO_LONG,
                f"{len(view)}-byte datagram exceeds {MAX_DATAGRAM_SIZE} bytes",
            )
        header = Header.unpack(view)
        self._check_belongs(header)
        if header.payload_length != len(view) - HEADER_SIZE:
            raise DatagramRejectedError(
                DropReason.LENGTH_MISMATCH,
                f"header declares {header.payload_length} payload bytes, "
                f"{len(view) - HEADER_SIZE} present",
            )
        if header.sequence <= self._received_sequence:
            raise DatagramRejectedError(
                DropReason.REPLAYED,
                f"sequence {header.sequence} is not above {self._received_sequence}",
            )
        skipped = header.sequence - self._received_sequence - 1
        self._received_sequence = header.sequence
        payload = aes_ctr(self._key, bytes(view[:HEADER_SIZE]), view[HEADER_SIZE:])
        return UplinkPacket(payload, header.timestamp, header.sequence, skipped)

    def _check_belongs(self, header: Header) -> None:
        if header.type != AUDIO_PACKET_TYPE:
            raise DatagramRejectedError(
                DropReason.WRONG_TYPE, f"datagram type {header.type:#04x} is not audio"
            )
        if header.ssrc != self._nonce.ssrc or header.flags != self._nonce.flags:
            raise DatagramRejectedError(
                DropReason.FOREIGN,
                f"datagram of ssrc {header.ssrc:#010x} flags {header.flags:#04x} "
                f"does not belong to channel {self._nonce.ssrc:#010x}",
            )
