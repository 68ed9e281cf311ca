"""The JSON message model: parsing what devices send, building what we send."""

import contextlib
import json
from typing import Any

from hypothesis import given, strategies as st
import pytest

from custom_components.xiaozhi.protocol.messages import (
    ABORT_REASON_WAKE_WORD,
    Abort,
    AudioParams,
    Goodbye,
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
from tests.helpers.fuzzing import fuzz

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


def test_parse_goodbye() -> None:
    assert parse_message('{"session_id":"s1","type":"goodbye"}') == Goodbye("s1")
    assert parse_message('{"type":"goodbye","session_id":null}') == Goodbye("")


@pytest.mark.parametrize("kind", ["iot", "ping", "tts", ""])
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
