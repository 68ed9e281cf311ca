"""Binary framing of the WebSocket transport: protocol versions 1, 2 and 3.

Pure code, no Home Assistant and no I/O; the firmware (websocket_protocol.cc,
protocol.h) is the authority. One frame per WebSocket binary message, the version
selected by the ``Protocol-Version`` handshake header, all big-endian:

* version 1: the raw Opus packet, no header;
* version 2: 16-byte header ``u16 version | u16 type | u32 reserved | u32 timestamp |
  u32 payload_size`` followed by the payload;
* version 3: 4-byte header ``u8 type | u8 reserved | u16 payload_size``, then payload.

``type`` is 0 for Opus and 1 for JSON. What we send is exactly what the firmware
parses. What we receive is decoded liberally but never into garbage; see
:func:`decode_frame` for the exact rules.
"""

from collections.abc import Buffer
from dataclasses import dataclass
from enum import IntEnum
import struct
from typing import Final

from . import ProtocolError
from .firmware import DEFAULT_PROTOCOL_VERSION

PROTOCOL_VERSIONS: Final = frozenset({1, 2, 3})

V2_HEADER: Final = struct.Struct(">HHIII")
V3_HEADER: Final = struct.Struct(">BBH")
V2_HEADER_SIZE: Final = V2_HEADER.size
V3_HEADER_SIZE: Final = V3_HEADER.size
_U32_MASK: Final = 0xFFFFFFFF
V2_MAX_PAYLOAD: Final = _U32_MASK
V3_MAX_PAYLOAD: Final = 0xFFFF

# Large enough for any Opus packet and for JSON-in-binary MCP replies (the device
# paginates tools/list at about 8 kB); callers may pass a tighter limit.
DEFAULT_MAX_FRAME_PAYLOAD: Final = 65536


class FrameError(ProtocolError):
    """A binary frame could not be framed or unframed."""


class ProtocolVersionError(ProtocolError):
    """The binary protocol version is not one the firmware defines."""


class FrameType(IntEnum):
    """Payload type of a version 2 or 3 binary frame."""

    OPUS = 0
    JSON = 1


@dataclass(frozen=True, slots=True)
class BinaryFrame:
    """A decoded binary frame.

    Attributes:
        type: What the payload is (version 1 frames are always Opus).
        payload: The Opus packet or the UTF-8 JSON text; never empty.
        timestamp: Milliseconds from a version 2 header (for server-side AEC), else 0.
    """

    type: FrameType
    payload: bytes
    timestamp: int = 0


def parse_protocol_version(value: str | None) -> int:
    """Return the binary protocol version named by a ``Protocol-Version`` header.

    Args:
        value: The header value; ``None`` or blank means the firmware default (1).

    Raises:
        ProtocolVersionError: The value is not 1, 2 or 3.
    """
    if value is None or not value.strip():
        return DEFAULT_PROTOCOL_VERSION
    text = value.strip()
    if text not in {"1", "2", "3"}:
        raise ProtocolVersionError(f"unsupported Protocol-Version {value!r}")
    return int(text)


def _check_version(version: int) -> None:
    if version not in PROTOCOL_VERSIONS:
        raise ProtocolVersionError(f"unsupported binary protocol version {version!r}")


def encode_frame(
    payload: bytes,
    version: int,
    *,
    frame_type: FrameType = FrameType.OPUS,
    timestamp: int = 0,
) -> bytes:
    """Frame one payload for a WebSocket binary message.

    Downlink audio must use ``FrameType.OPUS``: the firmware plays every binary
    frame it receives as Opus and ignores the type field. JSON goes to the device as
    a text message; ``FrameType.JSON`` exists for simulating clients.

    Args:
        payload: The Opus packet (or JSON bytes); must not be empty.
        version: Binary protocol version 1, 2 or 3.
        frame_type: Payload type written into a version 2 or 3 header.
        timestamp: Milliseconds for the version 2 header; taken modulo 2**32,
            the way the device's own counter wraps.

    Raises:
        FrameError: Empty payload, payload too large for a version 3 header, or a
            JSON payload on version 1 (which has no type field).
        ProtocolVersionError: Unknown version.
    """
    _check_version(version)
    if not payload:
        raise FrameError("refusing to frame an empty payload")
    if version == 1:
        if frame_type is not FrameType.OPUS:
            raise FrameError("protocol version 1 frames can only carry Opus")
        return bytes(payload)
    limit = V2_MAX_PAYLOAD if version == 2 else V3_MAX_PAYLOAD
    if len(payload) > limit:
        raise FrameError(
            f"payload of {len(payload)} bytes exceeds the version {version} limit "
            f"of {limit}"
        )
    if version == 2:
        header = V2_HEADER.pack(2, frame_type, 0, timestamp & _U32_MASK, len(payload))
        return header + payload
    return V3_HEADER.pack(frame_type, 0, len(payload)) + payload


def encode_audio_frame(packet: bytes, version: int, timestamp: int = 0) -> bytes:
    """Frame one downlink Opus packet exactly as the firmware parses it.

    Args:
        packet: One Opus packet.
        version: The connection's binary protocol version.
        timestamp: Milliseconds for the version 2 header.

    Raises:
        FrameError: Empty or oversized packet.
        ProtocolVersionError: Unknown version.
    """
    return encode_frame(packet, version, timestamp=timestamp)


def _frame_type(value: int) -> FrameType:
    try:
        return FrameType(value)
    except ValueError:
        raise FrameError(f"unknown frame type {value}") from None


def _unframe(data: bytes, header_size: int, declared_size: int, version: int) -> bytes:
    available = len(data) - header_size
    if declared_size > available:
        raise FrameError(
            f"truncated version {version} frame: header declares {declared_size} "
            f"payload bytes, {available} present"
        )
    # Bytes after the declared payload are ignored, as the firmware's own parser does.
    return data[header_size : header_size + declared_size]


def decode_frame(
    data: Buffer, version: int, *, max_payload: int = DEFAULT_MAX_FRAME_PAYLOAD
) -> BinaryFrame:
    """Decode one uplink WebSocket binary message.

    Accepted liberally, as real clients differ from the firmware:

    * the version field of a version 2 header is not checked (the firmware never
      reads it either), nor are the reserved fields;
    * bytes after the declared payload are ignored, exactly as the firmware's
      parser does, so a header whose ``payload_size`` is smaller than the frame
      yields the declared payload.

    Everything else is rejected rather than guessed.

    Args:
        data: The binary message.
        version: The connection's binary protocol version.
        max_payload: Largest payload accepted, in bytes.

    Raises:
        FrameError: Header shorter than its fixed size, declared payload larger
            than the frame (truncated), unknown type, empty or oversized payload.
        ProtocolVersionError: Unknown version.
    """
    _check_version(version)
    data = bytes(data)
    if version == 1:
        _check_size(len(data), max_payload)
        frame = BinaryFrame(FrameType.OPUS, data)
    elif version == 2:
        if len(data) < V2_HEADER_SIZE:
            raise FrameError(
                f"truncated version 2 header: {len(data)} of {V2_HEADER_SIZE} bytes"
            )
        _, raw_type, _, timestamp, size = V2_HEADER.unpack_from(data)
        frame_type = _frame_type(raw_type)
        _check_size(size, max_payload)
        frame = BinaryFrame(
            frame_type, _unframe(data, V2_HEADER_SIZE, size, version), timestamp
        )
    else:
        if len(data) < V3_HEADER_SIZE:
            raise FrameError(
                f"truncated version 3 header: {len(data)} of {V3_HEADER_SIZE} bytes"
            )
        raw_type, _, size = V3_HEADER.unpack_from(data)
        frame_type = _frame_type(raw_type)
        _check_size(size, max_payload)
        frame = BinaryFrame(frame_type, _unframe(data, V3_HEADER_SIZE, size, version))
    if not frame.payload:
        raise FrameError("empty payload")
    return frame


def _check_size(size: int, max_payload: int) -> None:
    if size > max_payload:
        raise FrameError(f"payload of {size} bytes exceeds the limit of {max_payload}")
