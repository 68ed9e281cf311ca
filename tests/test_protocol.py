"""Tests of the pure Xiaozhi device protocol layer (framing and JSON messages)."""

import contextlib
import json
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
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
    ABORT_REASON_WAKE_WORD,
    Abort,
    AudioParams,
    Hello,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    MessageError,
    Unknown,
    alert_message,
    encode_message,
    hello_message,
    llm_message,
    mcp_message,
    parse_message,
    stt_message,
    system_reboot_message,
    tts_sentence_start_message,
    tts_start_message,
    tts_stop_message,
)

# The conftest's autouse HA fixture is function scoped; these tests do not use it.
fuzz = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

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

FIRMWARE_HELLO = (
    '{"type":"hello","version":2,"features":{"aec":true,"mcp":true,'
    '"glyph_push":false},"transport":"websocket","audio_params":{"format":"opus",'
    '"sample_rate":16000,"channels":1,"frame_duration":60}}'
)


def test_parse_firmware_hello() -> None:
    hello = parse_message(FIRMWARE_HELLO)
    assert hello == Hello(
        version=2,
        features={"aec": True, "mcp": True, "glyph_push": False},
        transport="websocket",
        audio_params=AudioParams("opus", 16000, 1, 60),
        session_id="",
    )
    assert isinstance(hello, Hello)
    assert hello.mcp
    assert hello.aec


def test_parse_minimal_hello_uses_firmware_defaults() -> None:
    hello = parse_message('{"type":"hello"}')
    assert hello == Hello(
        version=1,
        features={},
        transport="websocket",
        audio_params=AudioParams("opus", 16000, 1, 60),
    )
    assert isinstance(hello, Hello)
    assert not hello.mcp
    assert not hello.aec


def test_parse_hello_from_other_clients() -> None:
    hello = parse_message(
        '{"type":"hello","session_id":null,"features":{"mcp":"yes"},'
        '"audio_params":{"sample_rate":24000.0,"frame_duration":20}}'
    )
    assert isinstance(hello, Hello)
    assert hello.audio_params == AudioParams("opus", 24000, 1, 20)
    assert hello.session_id == ""
    assert not hello.mcp  # only a JSON true counts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type":"hello","version":"1"}', "'version' must be a positive integer"),
        ('{"type":"hello","version":true}', "'version' must be a positive integer"),
        ('{"type":"hello","features":[]}', "'features' must be an object"),
        ('{"type":"hello","transport":1}', "'transport' must be a string"),
        ('{"type":"hello","audio_params":"opus"}', "'audio_params' must be an object"),
        (
            '{"type":"hello","audio_params":{"sample_rate":16000.5}}',
            "'sample_rate' must be a positive integer",
        ),
        (
            '{"type":"hello","audio_params":{"channels":0}}',
            "'channels' must be a positive integer",
        ),
        (
            '{"type":"hello","audio_params":{"format":5}}',
            "'format' must be a string",
        ),
    ],
)
def test_parse_hello_rejects_wrong_types(text: str, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        parse_message(text)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            '{"session_id":"abc","type":"listen","state":"start","mode":"auto"}',
            Listen(ListenState.START, ListenMode.AUTO, None, "abc"),
        ),
        (
            '{"session_id":"abc","type":"listen","state":"start","mode":"manual"}',
            Listen(ListenState.START, ListenMode.MANUAL, None, "abc"),
        ),
        (
            '{"session_id":"abc","type":"listen","state":"start","mode":"realtime"}',
            Listen(ListenState.START, ListenMode.REALTIME, None, "abc"),
        ),
        (
            '{"session_id":"abc","type":"listen","state":"stop"}',
            Listen(ListenState.STOP, None, None, "abc"),
        ),
        (
            '{"session_id":"","type":"listen","state":"detect","text":"你好小智"}',
            Listen(ListenState.DETECT, None, "你好小智", ""),
        ),
        ('{"type":"listen","state":"start"}', Listen(ListenState.START)),
    ],
)
def test_parse_listen(text: str, expected: Listen) -> None:
    assert parse_message(text) == expected


def test_listen_enums_compare_to_wire_strings() -> None:
    message = parse_message('{"type":"listen","state":"start","mode":"auto"}')
    assert isinstance(message, Listen)
    assert message.state == "start"
    assert message.mode == "auto"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('{"type":"listen"}', "listen: missing 'state'"),
        ('{"type":"listen","state":"pause"}', "listen: unknown state 'pause'"),
        ('{"type":"listen","state":1}', "'state' must be a string"),
        ('{"type":"listen","state":"start","mode":"ptt"}', "unknown mode 'ptt'"),
        ('{"type":"listen","state":"detect","text":7}', "'text' must be a string"),
    ],
)
def test_parse_listen_rejects(text: str, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        parse_message(text)


def test_parse_abort() -> None:
    assert parse_message('{"session_id":"s","type":"abort"}') == Abort(None, "s")
    assert parse_message(
        '{"session_id":"s","type":"abort","reason":"wake_word_detected"}'
    ) == Abort(ABORT_REASON_WAKE_WORD, "s")
    with pytest.raises(MessageError, match="'reason' must be a string"):
        parse_message('{"type":"abort","reason":1}')


def test_parse_mcp() -> None:
    payload = {"jsonrpc": "2.0", "id": 1, "result": {"content": [], "isError": False}}
    text = json.dumps({"session_id": "s", "type": "mcp", "payload": payload})
    assert parse_message(text) == Mcp(payload, "s")
    for bad in ('{"type":"mcp"}', '{"type":"mcp","payload":"{}"}'):
        with pytest.raises(MessageError, match="'payload' must be an object"):
            parse_message(bad)


@pytest.mark.parametrize("kind", ["goodbye", "iot", "ping", "tts", ""])
def test_parse_unknown_type(kind: str) -> None:
    raw = {"type": kind, "session_id": "x", "extra": [1, 2]}
    assert parse_message(json.dumps(raw)) == Unknown(kind, raw, "x")


def test_parse_bytes_and_bom() -> None:
    text = '{"type":"listen","state":"stop","text":"é"}'
    assert parse_message(text.encode()) == parse_message(text)
    assert parse_message(b"\xef\xbb\xbf" + text.encode()) == parse_message(text)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("", "malformed JSON"),
        ("{", "malformed JSON"),
        ("hello", "malformed JSON"),
        ("[1, 2]", "JSON list, not an object"),
        ('"hello"', "JSON str, not an object"),
        ("null", "JSON NoneType, not an object"),
        ("{}", "no 'type'"),
        ('{"type":null}', "no 'type'"),
        ('{"type":5}', "'type' must be a string"),
        ('{"type":["hello"]}', "'type' must be a string"),
        ('{"type":"abort","session_id":5}', "'session_id' must be a string"),
        ('{"type":"abort","n":NaN}', "invalid JSON number NaN"),
        ('{"type":"abort","n":-Infinity}', "invalid JSON number -Infinity"),
        (b"\xff\xfe{}", "not UTF-8"),
        ("[" * 100_000 + "]" * 100_000, "nested too deeply|malformed"),
    ],
)
def test_parse_rejects_malformed(data: str | bytes, message: str) -> None:
    with pytest.raises(MessageError, match=message):
        parse_message(data, max_size=10**6)


def test_parse_max_size_counts_utf8_bytes() -> None:
    text = '{"type":"stt","text":"' + "字" * 10 + '"}'
    size = len(text.encode())
    assert isinstance(parse_message(text, max_size=size), Unknown)
    with pytest.raises(MessageError, match=f"{size} bytes exceeds {size - 1}"):
        parse_message(text, max_size=size - 1)
    with pytest.raises(MessageError, match=f"{size} bytes exceeds {size - 1}"):
        parse_message(text.encode(), max_size=size - 1)
    with pytest.raises(MessageError, match="exceeds"):
        parse_message("x" * 70_000)


@fuzz
@given(data=st.one_of(st.binary(max_size=200), st.text(max_size=200)))
def test_parse_garbage_only_raises_message_error(data: str | bytes) -> None:
    with contextlib.suppress(MessageError):
        assert isinstance(parse_message(data), Hello | Listen | Abort | Mcp | Unknown)


@fuzz
@given(
    obj=st.dictionaries(
        st.sampled_from(
            ["type", "state", "mode", "text", "reason", "payload", "session_id"]
        ),
        st.one_of(
            st.sampled_from(["hello", "listen", "abort", "mcp", "start", "auto"]),
            st.none(),
            st.integers(),
            st.booleans(),
            st.lists(st.integers(), max_size=2),
            st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
        ),
    )
)
def test_parse_structured_garbage(obj: dict[str, Any]) -> None:
    try:
        message = parse_message(json.dumps(obj))
    except MessageError:
        return
    expected = {"hello": Hello, "listen": Listen, "abort": Abort, "mcp": Mcp}
    assert isinstance(message, expected.get(obj["type"], Unknown))


# ---------------------------------------------------------------- outgoing JSON


def test_hello_message() -> None:
    assert hello_message("sid-1") == {
        "type": "hello",
        "version": 1,
        "transport": "websocket",
        "session_id": "sid-1",
        "audio_params": {
            "format": "opus",
            "sample_rate": 24000,
            "channels": 1,
            "frame_duration": 60,
        },
    }
    custom = hello_message("s", version=3, sample_rate=16000, frame_duration=20)
    assert custom["version"] == 3
    assert custom["audio_params"]["sample_rate"] == 16000
    assert custom["audio_params"]["frame_duration"] == 20


def test_server_messages() -> None:
    sid = "sid"
    assert stt_message("开灯", session_id=sid) == {
        "session_id": sid,
        "type": "stt",
        "text": "开灯",
    }
    assert llm_message("happy", "🙂", session_id=sid) == {
        "session_id": sid,
        "type": "llm",
        "emotion": "happy",
        "text": "🙂",
    }
    assert llm_message("sad", session_id=sid)["text"] == ""
    assert tts_start_message(session_id=sid) == {
        "session_id": sid,
        "type": "tts",
        "state": "start",
    }
    assert tts_sentence_start_message("Hi.", session_id=sid) == {
        "session_id": sid,
        "type": "tts",
        "state": "sentence_start",
        "text": "Hi.",
    }
    assert tts_stop_message(session_id=sid) == {
        "session_id": sid,
        "type": "tts",
        "state": "stop",
    }
    assert alert_message("Warning", "Battery low", "sad", session_id=sid) == {
        "session_id": sid,
        "type": "alert",
        "status": "Warning",
        "message": "Battery low",
        "emotion": "sad",
    }
    assert system_reboot_message(session_id=sid) == {
        "session_id": sid,
        "type": "system",
        "command": "reboot",
    }


def test_mcp_message_copies_payload() -> None:
    payload = {"jsonrpc": "2.0", "id": 2, "method": "tools/list", "params": {}}
    message = mcp_message(payload, session_id="s")
    assert message == {"session_id": "s", "type": "mcp", "payload": payload}
    message["payload"]["id"] = 3
    assert payload["id"] == 2


def test_encode_message_compact_utf8() -> None:
    text = encode_message(stt_message("你好 😀", session_id="s"))
    assert text == '{"session_id":"s","type":"stt","text":"你好 😀"}'
    assert json.loads(text)["text"] == "你好 😀"


def test_encode_message_replaces_lone_surrogates() -> None:
    text = encode_message(stt_message("a\ud800b", session_id="s"))
    text.encode("utf-8")
    assert json.loads(text)["text"] == "a?b"


@pytest.mark.parametrize(
    "message",
    [{"type": "mcp", "payload": {"x": float("nan")}}, {"type": "mcp", "p": {1, 2}}],
)
def test_encode_message_rejects_unencodable(message: dict[str, Any]) -> None:
    with pytest.raises(MessageError, match="cannot encode message"):
        encode_message(message)


def test_server_hello_satisfies_firmware_parser() -> None:
    """Mirror of ParseServerHello: transport string, session id, audio params."""
    hello = json.loads(encode_message(hello_message("abc", version=2)))
    assert hello["type"] == "hello"
    assert hello["transport"] == "websocket"
    assert isinstance(hello["session_id"], str)
    assert isinstance(hello["audio_params"]["sample_rate"], int)
    assert isinstance(hello["audio_params"]["frame_duration"], int)


def test_huge_json_integer_is_a_message_error() -> None:
    # json.loads refuses integers of more than 4300 digits with a plain ValueError.
    with pytest.raises(MessageError, match="malformed JSON"):
        parse_message('{"type": "listen", "n": ' + "9" * 5000 + "}")
