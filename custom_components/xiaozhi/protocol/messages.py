"""Xiaozhi device protocol: the JSON message model.

Pure code, no Home Assistant and no I/O. The firmware (github:78/xiaozhi-esp32,
main/protocols/*.cc, main/application.cc) is the authority for every field here.

JSON text messages are parsed into frozen dataclasses by :func:`parse_message`;
messages to the device are built as plain dicts by the ``*_message`` functions and
serialised by :func:`encode_message`. The binary framing of audio is in
``framing.py``.
"""

from collections.abc import Buffer, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
import json
from typing import Any, Final, NoReturn

from . import ProtocolError
from .firmware import (
    AUDIO_CHANNELS,
    AUDIO_FORMAT,
    DEFAULT_PROTOCOL_VERSION,
    DOWNLINK_FRAME_DURATION_MS,
    DOWNLINK_SAMPLE_RATE,
    TRANSPORT_WEBSOCKET,
    UPLINK_FRAME_DURATION_MS,
    UPLINK_SAMPLE_RATE,
)

DEFAULT_MAX_JSON_SIZE: Final = 65536

ABORT_REASON_WAKE_WORD: Final = "wake_word_detected"
SYSTEM_COMMAND_REBOOT: Final = "reboot"

# The emotion names the firmware shows: the emoji font every display falls back to
# (78/xiaozhi-fonts font_emoji.py emoji_mapping, drawn by LcdDisplay::SetEmotion)
# knows these 21; boards with faces of their own (esp-hi emoji_display.cc,
# esp-vocat emote.json) map most of them and show unknown ones as neutral.
EMOTIONS: Final = (
    *("neutral", "happy", "laughing", "funny", "sad", "angry", "crying", "loving"),
    *("embarrassed", "surprised", "shocked", "thinking", "winking", "cool"),
    *("relaxed", "delicious", "kissy", "confident", "sleepy", "silly", "confused"),
)


class MessageError(ProtocolError):
    """A JSON message is malformed or cannot be encoded."""


# ---------------------------------------------------------------- incoming JSON


class ListenState(StrEnum):
    """``state`` of a ``listen`` message."""

    START = "start"
    STOP = "stop"
    DETECT = "detect"


class ListenMode(StrEnum):
    """``mode`` of a ``listen start`` message.

    AUTO: the server decides when the utterance ends (VAD).
    MANUAL: push-to-talk, the device sends ``listen stop``.
    REALTIME: full duplex with device AEC; the device keeps listening while speaking.
    """

    AUTO = "auto"
    MANUAL = "manual"
    REALTIME = "realtime"


@dataclass(frozen=True, slots=True)
class AudioParams:
    """``audio_params`` of a hello; the defaults are what the firmware sends."""

    format: str = AUDIO_FORMAT
    sample_rate: int = UPLINK_SAMPLE_RATE
    channels: int = AUDIO_CHANNELS
    frame_duration: int = UPLINK_FRAME_DURATION_MS


@dataclass(frozen=True, slots=True)
class Hello:
    """The client hello, sent once right after the WebSocket connects.

    Attributes:
        version: Binary protocol version the client claims (default 1).
        features: The ``features`` object as sent (e.g. ``mcp``, ``aec``).
        transport: ``websocket`` for WebSocket clients.
        audio_params: Uplink audio parameters.
        session_id: Usually empty: the server assigns the session.
    """

    version: int = DEFAULT_PROTOCOL_VERSION
    features: Mapping[str, Any] = field(default_factory=dict)
    transport: str = TRANSPORT_WEBSOCKET
    audio_params: AudioParams = field(default_factory=AudioParams)
    session_id: str = ""

    @property
    def mcp(self) -> bool:
        """Whether the device serves MCP tools over this channel."""
        return self.features.get("mcp") is True

    @property
    def aec(self) -> bool:
        """Whether the device expects the server to cancel echo."""
        return self.features.get("aec") is True


@dataclass(frozen=True, slots=True)
class Listen:
    """A ``listen`` message: start/stop capturing, or wake word detected."""

    state: ListenState
    mode: ListenMode | None = None
    text: str | None = None
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Abort:
    """An ``abort`` message: stop speaking; reason ``wake_word_detected`` or None."""

    reason: str | None = None
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Mcp:
    """An ``mcp`` message carrying one JSON-RPC 2.0 object from the device."""

    payload: Mapping[str, Any]
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A message of a type this server does not handle, kept as received."""

    type: str
    raw: Mapping[str, Any]
    session_id: str = ""


@dataclass(frozen=True, slots=True)
class Goodbye:
    """A ``goodbye``: the device closed its audio channel (MQTT+UDP only).

    The firmware sends it on MQTT when it leaves a conversation itself (button,
    network loss, reboot, upgrade); over WebSocket it closes the socket instead.
    """

    session_id: str = ""


type IncomingMessage = Hello | Listen | Abort | Mcp | Goodbye | Unknown


def _reject_constant(name: str) -> NoReturn:
    raise MessageError(f"invalid JSON number {name}")


def _load_object(data: str | Buffer, max_size: int) -> dict[str, Any]:
    if isinstance(data, str):
        text = data
        # A character is one to four UTF-8 bytes: only encode when it matters.
        if len(text) * 4 > max_size:
            size = len(text.encode("utf-8", "surrogatepass"))
            if size > max_size:
                raise MessageError(f"message of {size} bytes exceeds {max_size}")
    else:
        raw = bytes(data)
        if len(raw) > max_size:
            raise MessageError(f"message of {len(raw)} bytes exceeds {max_size}")
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise MessageError(f"message is not UTF-8: {err}") from None
    try:
        value = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as err:
        raise MessageError(f"malformed JSON: {err}") from None
    except RecursionError:
        raise MessageError("JSON nested too deeply") from None
    except ValueError as err:  # e.g. an integer of more than 4300 digits
        raise MessageError(f"malformed JSON: {err}") from None
    if not isinstance(value, dict):
        raise MessageError(f"message is a JSON {type(value).__name__}, not an object")
    return value


def _optional_str(obj: Mapping[str, Any], key: str, where: str) -> str | None:
    value = obj.get(key)
    if value is None or isinstance(value, str):
        return value
    raise MessageError(f"{where}: {key!r} must be a string, got {value!r}")


def _optional_int(obj: Mapping[str, Any], key: str, default: int, where: str) -> int:
    """Return a positive integer field; JSON numbers like 60.0 count as integers."""
    value = obj.get(key)
    if value is None:
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise MessageError(
            f"{where}: {key!r} must be a positive integer, got {value!r}"
        )
    return value


def _optional_object(obj: Mapping[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise MessageError(f"{where}: {key!r} must be an object, got {value!r}")
    return value


def _parse_audio_params(obj: Mapping[str, Any]) -> AudioParams:
    params = _optional_object(obj, "audio_params", "hello")
    where = "hello audio_params"
    defaults = AudioParams()
    return AudioParams(
        format=_optional_str(params, "format", where) or defaults.format,
        sample_rate=_optional_int(params, "sample_rate", defaults.sample_rate, where),
        channels=_optional_int(params, "channels", defaults.channels, where),
        frame_duration=_optional_int(
            params, "frame_duration", defaults.frame_duration, where
        ),
    )


def _parse_hello(obj: Mapping[str, Any], session_id: str) -> Hello:
    return Hello(
        version=_optional_int(obj, "version", DEFAULT_PROTOCOL_VERSION, "hello"),
        features=_optional_object(obj, "features", "hello"),
        transport=_optional_str(obj, "transport", "hello") or TRANSPORT_WEBSOCKET,
        audio_params=_parse_audio_params(obj),
        session_id=session_id,
    )


def _parse_listen(obj: Mapping[str, Any], session_id: str) -> Listen:
    state = _optional_str(obj, "state", "listen")
    if state is None:
        raise MessageError("listen: missing 'state'")
    try:
        listen_state = ListenState(state)
    except ValueError:
        raise MessageError(f"listen: unknown state {state!r}") from None
    mode = _optional_str(obj, "mode", "listen")
    try:
        listen_mode = None if mode is None else ListenMode(mode)
    except ValueError:
        raise MessageError(f"listen: unknown mode {mode!r}") from None
    return Listen(
        state=listen_state,
        mode=listen_mode,
        text=_optional_str(obj, "text", "listen"),
        session_id=session_id,
    )


def _parse_abort(obj: Mapping[str, Any], session_id: str) -> Abort:
    return Abort(reason=_optional_str(obj, "reason", "abort"), session_id=session_id)


def _parse_mcp(obj: Mapping[str, Any], session_id: str) -> Mcp:
    payload = obj.get("payload")
    if not isinstance(payload, dict):
        raise MessageError(f"mcp: 'payload' must be an object, got {payload!r}")
    return Mcp(payload=payload, session_id=session_id)


def parse_message(
    data: str | Buffer, *, max_size: int = DEFAULT_MAX_JSON_SIZE
) -> IncomingMessage:
    """Parse one JSON message from the device.

    ``session_id`` may be absent, empty or null (real clients differ; the firmware
    sends whatever the server hello assigned). Unknown message types are returned
    as :class:`Unknown`, not rejected.

    Args:
        data: The text message, or the payload of a JSON binary frame (UTF-8).
        max_size: Largest message accepted, in UTF-8 bytes.

    Raises:
        MessageError: Oversized, not UTF-8, malformed JSON, not an object, missing
            or non-string ``type``, or a known field of the wrong type or value.
    """
    obj = _load_object(data, max_size)
    message_type = obj.get("type")
    if message_type is None:
        raise MessageError("message has no 'type'")
    if not isinstance(message_type, str):
        raise MessageError(f"'type' must be a string, got {message_type!r}")
    session_id = _optional_str(obj, "session_id", message_type) or ""
    match message_type:
        case "hello":
            return _parse_hello(obj, session_id)
        case "listen":
            return _parse_listen(obj, session_id)
        case "abort":
            return _parse_abort(obj, session_id)
        case "mcp":
            return _parse_mcp(obj, session_id)
        case "goodbye":
            return Goodbye(session_id=session_id)
        case _:
            return Unknown(type=message_type, raw=obj, session_id=session_id)


# ---------------------------------------------------------------- outgoing JSON


def hello_message(
    session_id: str,
    *,
    transport: str = TRANSPORT_WEBSOCKET,
    version: int = DEFAULT_PROTOCOL_VERSION,
    sample_rate: int = DOWNLINK_SAMPLE_RATE,
    frame_duration: int = DOWNLINK_FRAME_DURATION_MS,
    **transport_fields: Any,
) -> dict[str, Any]:
    """Build the server hello that opens the device's audio channel.

    The firmware requires ``type`` and ``transport`` (it dereferences ``transport``
    unchecked, so it must always be present, and ignores a hello naming another
    transport than its own), stores ``session_id`` and reads
    ``audio_params.sample_rate`` / ``frame_duration`` as the downlink Opus format.

    Args:
        session_id: Echoed by the device in every later message.
        transport: The transport the device uses (``websocket``, ``udp``).
        version: The binary protocol version in use (informational for the device).
        sample_rate: Downlink Opus sample rate.
        frame_duration: Downlink Opus packet duration in milliseconds.
        transport_fields: What else the transport tells the device (MQTT's
            ``udp`` section).
    """
    return {
        "type": "hello",
        "version": version,
        "transport": transport,
        "session_id": session_id,
        "audio_params": {
            "format": AUDIO_FORMAT,
            "sample_rate": sample_rate,
            "channels": AUDIO_CHANNELS,
            "frame_duration": frame_duration,
        },
        **transport_fields,
    }


def stt_message(text: str, *, session_id: str) -> dict[str, Any]:
    """Build ``stt``: the recognised user utterance, shown as the user's line."""
    return {"session_id": session_id, "type": "stt", "text": text}


def llm_message(emotion: str, text: str = "", *, session_id: str) -> dict[str, Any]:
    """Build ``llm``: the firmware only reads ``emotion`` (see :data:`EMOTIONS`)."""
    return {"session_id": session_id, "type": "llm", "emotion": emotion, "text": text}


def tts_start_message(*, session_id: str) -> dict[str, Any]:
    """Build ``tts start``: the device enters Speaking and plays audio from now on."""
    return {"session_id": session_id, "type": "tts", "state": "start"}


def tts_sentence_start_message(text: str, *, session_id: str) -> dict[str, Any]:
    """Build ``tts sentence_start``: the subtitle of the sentence now playing."""
    return {
        "session_id": session_id,
        "type": "tts",
        "state": "sentence_start",
        "text": text,
    }


def tts_stop_message(*, session_id: str) -> dict[str, Any]:
    """Build ``tts stop``: back to Listening (auto/realtime) or Idle (manual)."""
    return {"session_id": session_id, "type": "tts", "state": "stop"}


def mcp_message(payload: Mapping[str, Any], *, session_id: str) -> dict[str, Any]:
    """Build ``mcp`` around one JSON-RPC 2.0 object (the device needs numeric ids)."""
    return {"session_id": session_id, "type": "mcp", "payload": dict(payload)}


def alert_message(
    status: str, message: str, emotion: str, *, session_id: str
) -> dict[str, Any]:
    """Build ``alert``; the firmware ignores it unless all three strings are set."""
    return {
        "session_id": session_id,
        "type": "alert",
        "status": status,
        "message": message,
        "emotion": emotion,
    }


def system_reboot_message(*, session_id: str) -> dict[str, Any]:
    """Build ``system reboot``, the only system command the firmware supports."""
    return {
        "session_id": session_id,
        "type": "system",
        "command": SYSTEM_COMMAND_REBOOT,
    }


def goodbye_message(*, session_id: str) -> dict[str, Any]:
    """Build ``goodbye``: the voice session is over, back to idle.

    The firmware reads it only on transports that outlive a conversation (MQTT),
    and only with its current ``session_id``.
    """
    return {"session_id": session_id, "type": "goodbye"}


def encode_message(message: Mapping[str, Any]) -> str:
    """Serialise an outgoing message as compact JSON for a WebSocket text frame.

    Non-ASCII text is sent as UTF-8 (cJSON reads it as is). Lone surrogates, which
    cannot be sent as UTF-8, are replaced by ``?`` instead of failing the send.

    Raises:
        MessageError: The message holds values JSON cannot represent.
    """
    try:
        text = json.dumps(
            message, ensure_ascii=False, separators=(",", ":"), allow_nan=False
        )
    except (TypeError, ValueError) as err:
        raise MessageError(f"cannot encode message: {err}") from None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text
