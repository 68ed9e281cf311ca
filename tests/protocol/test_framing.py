"""The WebSocket binary framing, versions 1 to 3, exact to the firmware."""

import struct
from typing import Any

from hypothesis import given, strategies as st
import pytest

from custom_components.xiaozhi.protocol import ProtocolError
from custom_components.xiaozhi.protocol.firmware import (
    DOWNLINK_FRAME_DURATION_MS,
    DOWNLINK_SAMPLE_RATE,
    UPLINK_FRAME_DURATION_MS,
    UPLINK_SAMPLE_RATE,
)
from custom_components.xiaozhi.protocol.framing import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    V3_MAX_PAYLOAD,
    BinaryFrame,
    FrameError,
    FrameType,
    ProtocolVersionError,
    decode_frame,
    encode_audio_frame,
    encode_frame,
    parse_protocol_version,
)
from custom_components.xiaozhi.protocol.messages import (
    Listen,
    ListenState,
    MessageError,
    parse_message,
)
from tests.helpers.fuzzing import fuzz

OPUS = bytes.fromhex("58 01 02 03 04 05 06 07 08 09")


def firmware_v2(payload: bytes, timestamp: int = 0, frame_type: int = 0) -> bytes:
    """Build a frame the way websocket_protocol.cc SendAudio does (htons/htonl)."""
    return struct.pack(">HHIII", 2, frame_type, 0, timestamp, len(payload)) + payload


def firmware_v3(payload: bytes, frame_type: int = 0) -> bytes:
    """Build a version 3 frame the way the firmware does."""
    return struct.pack(">BBH", frame_type, 0, len(payload)) + payload


# ---------------------------------------------------------------- versions


@pytest.mark.parametrize(
    ("value", "expected"),
    [(None, 1), ("", 1), ("  ", 1), ("1", 1), ("2", 2), ("3", 3), (" 2 ", 2)],
)
def test_parse_protocol_version(value: str | None, expected: int) -> None:
    assert parse_protocol_version(value) == expected


@pytest.mark.parametrize("value", ["0", "4", "v2", "2.0", "-1", "１", "twelve"])
def test_parse_protocol_version_rejects(value: str) -> None:
    with pytest.raises(ProtocolVersionError, match="unsupported Protocol-Version"):
        parse_protocol_version(value)


def test_error_hierarchy() -> None:
    for error in (FrameError, MessageError, ProtocolVersionError):
        assert issubclass(error, ProtocolError)
        assert issubclass(error, ValueError)


def test_constants_match_firmware() -> None:
    assert (DOWNLINK_SAMPLE_RATE, DOWNLINK_FRAME_DURATION_MS) == (24000, 60)
    assert (UPLINK_SAMPLE_RATE, UPLINK_FRAME_DURATION_MS) == (16000, 60)


# ---------------------------------------------------------------- encode


def test_encode_v1_is_raw_packet() -> None:
    assert encode_audio_frame(OPUS, 1) == OPUS


def test_encode_v2_matches_firmware_layout() -> None:
    frame = encode_audio_frame(OPUS, 2, timestamp=123456)
    assert frame == firmware_v2(OPUS, 123456)
    assert frame[:16] == bytes.fromhex("0002 0000 00000000 0001e240 0000000a")
    assert frame[16:] == OPUS


def test_encode_v2_timestamp_wraps_like_device_counter() -> None:
    frame = encode_audio_frame(OPUS, 2, timestamp=2**32 + 5)
    assert struct.unpack_from(">I", frame, 8) == (5,)


def test_encode_v3_matches_firmware_layout() -> None:
    frame = encode_audio_frame(OPUS, 3)
    assert frame == bytes.fromhex("00 00 000a") + OPUS
    assert frame == firmware_v3(OPUS)


def test_encode_json_type_for_simulated_clients() -> None:
    payload = b'{"type":"listen","state":"stop"}'
    assert encode_frame(payload, 2, frame_type=FrameType.JSON)[2:4] == b"\x00\x01"
    assert encode_frame(payload, 3, frame_type=FrameType.JSON)[0] == 1
    with pytest.raises(FrameError, match="version 1 frames can only carry Opus"):
        encode_frame(payload, 1, frame_type=FrameType.JSON)


def test_encode_v3_limit() -> None:
    assert len(encode_frame(bytes(V3_MAX_PAYLOAD), 3)) == V3_MAX_PAYLOAD + 4
    with pytest.raises(FrameError, match="exceeds the version 3 limit"):
        encode_frame(bytes(V3_MAX_PAYLOAD + 1), 3)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_encode_rejects_empty(version: int) -> None:
    with pytest.raises(FrameError, match="empty payload"):
        encode_audio_frame(b"", version)


@pytest.mark.parametrize("version", [0, 4, -1])
def test_encode_rejects_unknown_version(version: int) -> None:
    with pytest.raises(ProtocolVersionError):
        encode_audio_frame(OPUS, version)


# ---------------------------------------------------------------- decode


def test_decode_v1() -> None:
    assert decode_frame(OPUS, 1) == BinaryFrame(FrameType.OPUS, OPUS, 0)


def test_decode_firmware_v2_frame() -> None:
    frame = decode_frame(firmware_v2(OPUS, timestamp=987), 2)
    assert frame == BinaryFrame(FrameType.OPUS, OPUS, 987)


def test_decode_firmware_v3_frame() -> None:
    assert decode_frame(firmware_v3(OPUS), 3) == BinaryFrame(FrameType.OPUS, OPUS)


@pytest.mark.parametrize(("version", "build"), [(2, firmware_v2), (3, firmware_v3)])
def test_decode_json_in_binary(version: int, build: Any) -> None:
    text = b'{"session_id":"s","type":"listen","state":"stop"}'
    frame = decode_frame(build(text, frame_type=1), version)
    assert frame.type is FrameType.JSON
    assert parse_message(frame.payload) == Listen(ListenState.STOP, session_id="s")


def test_decode_v2_ignores_header_version_and_reserved() -> None:
    data = struct.pack(">HHIII", 1, 0, 0xDEADBEEF, 7, len(OPUS)) + OPUS
    assert decode_frame(data, 2) == BinaryFrame(FrameType.OPUS, OPUS, 7)


@pytest.mark.parametrize(("version", "build"), [(2, firmware_v2), (3, firmware_v3)])
def test_decode_ignores_bytes_after_declared_payload(version: int, build: Any) -> None:
    """Decision: a payload_size smaller than the frame yields the declared payload."""
    frame = decode_frame(build(OPUS) + b"trailing", version)
    assert frame.payload == OPUS


@pytest.mark.parametrize(
    ("data", "version", "message"),
    [
        (b"", 1, "empty payload"),
        (b"\x00\x02\x00", 2, "truncated version 2 header: 3 of 16"),
        (b"\x00\x00\x00", 3, "truncated version 3 header: 3 of 4"),
        (firmware_v2(OPUS)[:-1], 2, "header declares 10 payload bytes, 9 present"),
        (firmware_v3(OPUS)[:-3], 3, "header declares 10 payload bytes, 7 present"),
        (firmware_v2(OPUS, frame_type=2), 2, "unknown frame type 2"),
        (firmware_v3(OPUS, frame_type=255), 3, "unknown frame type 255"),
        (firmware_v2(b""), 2, "empty payload"),
        (firmware_v3(b""), 3, "empty payload"),
    ],
)
def test_decode_rejects_bad_frames(data: bytes, version: int, message: str) -> None:
    with pytest.raises(FrameError, match=message):
        decode_frame(data, version)


@pytest.mark.parametrize(("version", "build"), [(2, firmware_v2), (3, firmware_v3)])
def test_decode_rejects_oversized_declared_payload(version: int, build: Any) -> None:
    data = build(bytes(100))
    assert decode_frame(data, version, max_payload=100).payload == bytes(100)
    with pytest.raises(FrameError, match="100 bytes exceeds the limit of 99"):
        decode_frame(data, version, max_payload=99)


def test_decode_rejects_oversized_v1_frame() -> None:
    with pytest.raises(FrameError, match="exceeds the limit"):
        decode_frame(bytes(DEFAULT_MAX_FRAME_PAYLOAD + 1), 1)


def test_decode_huge_declared_size_is_truncation_not_allocation() -> None:
    data = struct.pack(">HHIII", 2, 0, 0, 0, 0xFFFFFFFF) + OPUS
    with pytest.raises(FrameError, match="exceeds the limit"):
        decode_frame(data, 2)
    with pytest.raises(FrameError, match="truncated"):
        decode_frame(data, 2, max_payload=2**33)


def test_decode_rejects_unknown_version() -> None:
    with pytest.raises(ProtocolVersionError, match="unsupported binary protocol"):
        decode_frame(OPUS, 5)


def test_decode_accepts_bytes_like() -> None:
    assert decode_frame(bytearray(OPUS), 1).payload == OPUS
    assert decode_frame(memoryview(firmware_v3(OPUS)), 3).payload == OPUS


@fuzz
@given(
    payload=st.binary(min_size=1, max_size=2000),
    version=st.sampled_from([1, 2, 3]),
    frame_type=st.sampled_from(list(FrameType)),
    timestamp=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_round_trip(
    payload: bytes, version: int, frame_type: FrameType, timestamp: int
) -> None:
    if version == 1:
        frame_type = FrameType.OPUS
    data = encode_frame(payload, version, frame_type=frame_type, timestamp=timestamp)
    frame = decode_frame(data, version)
    assert frame.payload == payload
    assert frame.type is frame_type
    assert frame.timestamp == (timestamp if version == 2 else 0)


@fuzz
@given(data=st.binary(max_size=64), version=st.sampled_from([1, 2, 3]))
def test_decode_garbage_only_raises_frame_error(data: bytes, version: int) -> None:
    try:
        frame = decode_frame(data, version, max_payload=32)
    except FrameError:
        return
    assert 0 < len(frame.payload) <= 32
    assert frame.payload in data


# ---------------------------------------------------------------- incoming JSON


# ---------------------------------------------------------------- outgoing JSON
