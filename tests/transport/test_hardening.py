"""Limits and hostile input at the device endpoint, over real sockets.

Every kind of bad input from the issue is thrown at a connected device, next to a
well-behaved second device: each gets a clear log line and leaves its session
either healthy or closed with the documented code, the other device never notices,
and nothing stored is lost. Then the limits: message rate, concurrent sessions,
connections while Home Assistant stops, and a device that stops reading.
"""

import asyncio
import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields, replace
import json
import logging
import os
import socket
from typing import Any, cast

from aiohttp import (
    WebSocketError,
    WSCloseCode,
    WSMessage,
    WSMsgType,
    WSServerHandshakeError,
    web,
)
from aiohttp.test_utils import TestClient
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import CoreState, HomeAssistant

from custom_components.xiaozhi.const import WEBSOCKET_PATH
from custom_components.xiaozhi.device.link import (
    MAX_LOGGED_DETAIL,
    DeviceLink,
    log_excerpt,
)
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.device.supervisor import SessionClosedError
from custom_components.xiaozhi.protocol.codec import MAX_OPUS_PACKET_BYTES, OpusEncoder
from custom_components.xiaozhi.protocol.framing import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    V2_HEADER,
    FrameType,
)
from custom_components.xiaozhi.protocol.messages import (
    DEFAULT_MAX_JSON_SIZE,
    ListenMode,
)
from custom_components.xiaozhi.server.auth import AdmissionError, admit
from custom_components.xiaozhi.server.limits import (
    MAX_SESSIONS,
    MESSAGE_BURST,
    MESSAGES_PER_SECOND,
    ConnectionLimits,
)
from custom_components.xiaozhi.server.ratelimit import LogThrottle, RateLimiter
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.transport import websocket
from custom_components.xiaozhi.transport.base import EndReason, SendTimeoutError
from custom_components.xiaozhi.transport.websocket import (
    DATA_WEBSOCKET_LIMITS,
    MAX_MESSAGE_BYTES,
    CloseCode,
    WebSocketConnection,
    WebSocketLimits,
    _async_receive,
)
from simulator.device import ChannelClosedError, SimTool, SimulatedDevice
from tests.helpers.devices import (
    MAC,
    TOKEN,
    DeviceFactory,
    Recorder,
    assert_session_gone,
    make_device_entry,
    runtime_of,
    tone,
    until_disconnected,
    wait_until,
)
from tests.helpers.logs import log_waiter

OTHER_MAC = "aa:bb:cc:dd:ee:01"
OTHER_TOKEN = "another-device-token-0123456789"
LOGGER_NAME = "custom_components.xiaozhi"

type Send = Callable[[SimulatedDevice], Awaitable[None]]


async def add_device_entry(
    hass: HomeAssistant, mac: str, token: str, title: str = "Hall speaker"
) -> MockConfigEntry:
    entry = make_device_entry(mac, token)
    entry.add_to_hass(hass)
    hass.config_entries.async_update_entry(entry, title=title)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return entry


def set_limits(hass: HomeAssistant, **changes: Any) -> None:
    """Change limits of every transport and of the WebSocket transport, by name."""
    server = async_get_server(hass)
    general = {field.name for field in fields(ConnectionLimits)}
    server.limits = replace(
        server.limits, **{k: v for k, v in changes.items() if k in general}
    )
    hass.data[DATA_WEBSOCKET_LIMITS] = replace(
        hass.data[DATA_WEBSOCKET_LIMITS],
        **{k: v for k, v in changes.items() if k not in general},
    )


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Error records, and tracebacks of ours at any level."""
    return [
        record
        for record in caplog.records
        if record.levelno >= logging.ERROR
        or (record.exc_info and record.name.startswith(LOGGER_NAME))
    ]


def opus_packet() -> bytes:
    return OpusEncoder(16000, 60).encode(tone(440, 16000, 0.06))[0]


async def expect_listen_start(recorder: Recorder, *, reconnected: bool = False) -> None:
    """Skip to the next listen start: the session handled everything before it."""
    while (event := await recorder.next_event())[0] != "listen_start":
        assert reconnected or event[0] != "disconnected"


# ---------------------------------------------------------------- bad input


def text(data: str) -> Send:
    async def send(device: SimulatedDevice) -> None:
        await device.ws.send_str(data)

    return send


def as_json(message: Any) -> Send:
    return text(json.dumps(message))


def binary(data: bytes) -> Send:
    async def send(device: SimulatedDevice) -> None:
        await device.ws.send_bytes(data)

    return send


def raw_frame(data: bytes, opcode: WSMsgType) -> Send:
    async def send(device: SimulatedDevice) -> None:
        await device.ws.send_frame(data, opcode)

    return send


def opus(packet: bytes) -> Send:
    async def send(device: SimulatedDevice) -> None:
        await device.send_opus(packet)

    return send


def mcp_reply(request_id: Any) -> Send:
    async def send(device: SimulatedDevice) -> None:
        await device.mcp_reply(request_id, result={"content": []})

    return send


async def hello(device: SimulatedDevice) -> None:
    assert (await device.hello())["session_id"]


@dataclass(frozen=True)
class BadInput:
    """One kind of bad input and what it must lead to."""

    send: Send
    log: str
    kind: str | None = None  # the session's bad_input counter it raises
    closes_with: int | None = None
    version: int = 3
    before_hello: bool = False


def malformed(send: Send, log: str) -> BadInput:
    return BadInput(send, log, kind="malformed message")


def bad_frame(send: Send, log: str, *, version: int = 3) -> BadInput:
    return BadInput(send, log, kind="malformed frame", version=version)


def bad_audio(send: Send, log: str, *, version: int = 3) -> BadInput:
    return BadInput(send, log, kind="invalid Opus audio", version=version)


def v2_frame(frame_type: int, declared: int, payload: bytes) -> bytes:
    return V2_HEADER.pack(2, frame_type, 0, 0, declared) + payload


def pcm_hello() -> dict[str, Any]:
    return {"type": "hello", "audio_params": {"format": "pcm"}}


BAD_INPUT = {
    "malformed JSON": malformed(
        text("{not json"), "malformed message from Kitchen speaker: malformed JSON"
    ),
    "JSON array": malformed(text("[1, 2]"), "a JSON list, not an object"),
    "JSON string": malformed(text('"hello"'), "a JSON str, not an object"),
    "JSON null": malformed(text("null"), "not an object"),
    "type not a string": malformed(as_json({"type": 5}), "'type' must be a string"),
    "no type": malformed(as_json({"state": "start"}), "message has no 'type'"),
    "listen state a number": malformed(
        as_json({"type": "listen", "state": 1}), "'state' must be a string"
    ),
    "listen mode unknown": malformed(
        as_json({"type": "listen", "state": "start", "mode": "loud"}),
        "unknown mode 'loud'",
    ),
    "hello features a list": malformed(
        as_json({"type": "hello", "features": []}), "'features' must be an object"
    ),
    "session_id a number": malformed(
        as_json({"type": "abort", "session_id": 7}), "'session_id' must be a string"
    ),
    "mcp payload a string": malformed(
        as_json({"type": "mcp", "payload": "x"}), "'payload' must be an object"
    ),
    "integer of 5000 digits": malformed(
        text('{"type": "listen", "state": "start", "n": ' + "9" * 5000 + "}"),
        "Exceeds the limit (4300 digits)",
    ),
    "deep nesting": malformed(text("[" * 60000), "malformed JSON"),
    "NaN": malformed(
        text('{"type": "listen", "state": "start", "x": NaN}'),
        "invalid JSON number NaN",
    ),
    "JSON over its size limit": malformed(  # but within the message limit
        as_json({"type": "x", "pad": "a" * (DEFAULT_MAX_JSON_SIZE - 14)}),
        "message of 65546 bytes exceeds 65536",
    ),
    "v3 header truncated": bad_frame(
        binary(b"\x00\x00"), "malformed frame from Kitchen speaker: truncated version 3"
    ),
    "v3 size larger than the frame": bad_frame(
        binary(b"\x00\x00\x00\x09abc"), "declares 9 payload bytes, 3 present"
    ),
    "v3 unknown type": bad_frame(binary(b"\x07\x00\x00\x01a"), "unknown frame type 7"),
    "v3 empty payload": bad_frame(binary(b"\x00\x00\x00\x00"), "empty payload"),
    "v2 header truncated": bad_frame(
        binary(b"\x00\x02\x00\x00"), "truncated version 2 header", version=2
    ),
    "v2 size larger than the frame": bad_frame(
        binary(v2_frame(0, 100, b"x" * 10)),
        "declares 100 payload bytes, 10 present",
        version=2,
    ),
    "v2 size over the limit": bad_frame(
        binary(v2_frame(0, 70000, b"x" * 10)),
        "payload of 70000 bytes exceeds the limit of 65536",
        version=2,
    ),
    "v2 JSON frame not UTF-8": BadInput(
        binary(v2_frame(FrameType.JSON, 2, b"\xff\xfe")),
        "message is not UTF-8",
        kind="malformed message",
        version=2,
    ),
    "text in a v3 binary frame": BadInput(
        binary(b'{"type":"listen","state":"start"}'),
        "unknown frame type 123",
        kind="malformed frame",
    ),
    "text in a v1 binary frame": bad_audio(
        binary(b'{"type":"hello"}'),
        "invalid Opus audio from Kitchen speaker",
        version=1,
    ),
    "Opus packet over its limit": bad_audio(
        opus(b"\xf8" * (MAX_OPUS_PACKET_BYTES + 1)), "7681 bytes is too large"
    ),
    "garbage Opus": bad_audio(
        opus(b"\xff\xfe\xfd\xfc\xfb"), "invalid Opus audio from Kitchen speaker"
    ),
    "v2 frame of the largest size": bad_audio(
        binary(v2_frame(0, DEFAULT_MAX_FRAME_PAYLOAD, b"\xf8" * 65536)),
        "Opus packet of 65536 bytes is too large",  # not refused by the socket
        version=2,
    ),
    "audio before hello": BadInput(
        opus(b"\xf8\xff\xfe"),
        "audio before hello",
        kind="audio before hello",
        before_hello=True,
    ),
    "message before hello": BadInput(
        as_json({"type": "listen", "state": "start"}),
        "message before hello",
        kind="message before hello",
        before_hello=True,
    ),
    "hello twice": BadInput(
        hello, "second hello from Kitchen speaker", kind="second hello"
    ),
    "unknown message type": BadInput(
        as_json({"type": "iot", "descriptors": []}),
        "Ignoring 'iot' message from Kitchen speaker",
    ),
    "MCP reply with an unknown id": BadInput(
        mcp_reply(9999), "Dropping MCP reply from Kitchen speaker with id 9999"
    ),
    "MCP reply with a string id": BadInput(
        mcp_reply("1"), "Dropping MCP reply from Kitchen speaker with id '1'"
    ),
    "MCP request from the device": BadInput(
        as_json({"type": "mcp", "payload": {"jsonrpc": "2.0", "method": "ping"}}),
        "Ignoring MCP 'ping' from Kitchen speaker",
    ),
    "message over the size limit": BadInput(
        binary(b"\x00" * (MAX_MESSAGE_BYTES + 1)),
        "Closing the session of Kitchen speaker: bad frame: Message size",
        closes_with=CloseCode.MESSAGE_TOO_BIG,
    ),
    "text message over the size limit": BadInput(
        text("a" * (MAX_MESSAGE_BYTES + 1)),
        "Closing the session of Kitchen speaker: bad frame: Message size",
        closes_with=CloseCode.MESSAGE_TOO_BIG,
    ),
    "binary data in a text frame": BadInput(
        raw_frame(b"\xf8\xff\xfe", WSMsgType.TEXT),
        "Closing the session of Kitchen speaker: bad frame",
        closes_with=CloseCode.INVALID_TEXT,
    ),
    "continuation without a start": BadInput(
        raw_frame(b"x", WSMsgType.CONTINUATION),
        "Closing the session of Kitchen speaker: bad frame",
        closes_with=CloseCode.BAD_FRAME,
    ),
    "hello with PCM audio": BadInput(
        as_json(pcm_hello()),
        "Closing the session of Kitchen speaker: unsupported audio format 'pcm'",
        closes_with=CloseCode.PROTOCOL_ERROR,
        before_hello=True,
    ),
    "hello with a 60 kB format": BadInput(
        as_json({"type": "hello", "audio_params": {"format": "x" * 60000}}),
        "unsupported audio format 'xxxx",
        closes_with=CloseCode.PROTOCOL_ERROR,
        before_hello=True,
    ),
}


@pytest.mark.parametrize("case", BAD_INPUT.values(), ids=BAD_INPUT.keys())
async def test_bad_input_is_logged_and_harms_nobody(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
    case: BadInput,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    other_entry = await add_device_entry(ha_core, OTHER_MAC, OTHER_TOKEN)
    other_runtime = runtime_of(other_entry)
    other_recorder = Recorder(other_runtime)
    recorder = Recorder(runtime)
    tools = [SimTool("self.get_device_status"), SimTool("self.reboot")]
    calm = devices(mac=OTHER_MAC, token=OTHER_TOKEN, protocol_version=2, tools=tools)
    await calm.open()
    await wait_until(other_runtime, lambda: len(other_runtime.tools) == 2)
    stored = (dict(device_entry.data), dict(other_entry.data))

    device = devices(protocol_version=case.version)
    await device.connect()
    if not case.before_hello:
        await device.hello()
    await case.send(device)

    if case.closes_with is None:
        if case.before_hello:
            await device.hello()
        await device.listen_start("manual")
        await expect_listen_start(recorder)
        session = runtime.session
        assert session is not None
        assert session.ready
        if case.kind is not None:
            assert session.link.bad_input.get(case.kind) == 1
    else:
        code, _ = await device.wait_closed()
        assert code == case.closes_with
        assert runtime.session is None
        # The device reconnects and is served as before.
        again = devices(protocol_version=case.version)
        await again.open()
        await again.listen_start()
        await expect_listen_start(recorder, reconnected=True)
    assert case.log in caplog.text
    for record in caplog.records:  # bad input is quoted in short excerpts
        if record.name.startswith(LOGGER_NAME):
            assert len(record.getMessage()) < 2 * MAX_LOGGED_DETAIL + 200

    # The other device noticed nothing; nothing stored was lost.
    await calm.listen_start()
    assert await other_recorder.next_event() == ("connected",)
    assert await other_recorder.next_event() == ("listen_start", ListenMode.AUTO)
    assert other_runtime.connected
    assert [tool.name for tool in other_runtime.tools] == [t.name for t in tools]
    assert (dict(device_entry.data), dict(other_entry.data)) == stored
    assert device_entry.state is other_entry.state is ConfigEntryState.LOADED
    assert error_records(caplog) == []


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_the_largest_messages_are_accepted(
    runtime: DeviceRuntime, devices: DeviceFactory, version: int
) -> None:
    """JSON of the largest size, as text and (v2) as a binary frame of the largest."""
    recorder = Recorder(runtime)
    device = devices(protocol_version=version, features={})
    await device.open()
    head = '{"type": "listen", "state": "start", "mode": "manual", "pad": "'
    largest = head + "a" * (DEFAULT_MAX_JSON_SIZE - len(head) - 2) + '"}'
    assert len(largest.encode()) == DEFAULT_MAX_JSON_SIZE
    await device.ws.send_str(largest)
    await expect_listen_start(recorder)
    if version == 2:
        frame = v2_frame(FrameType.JSON, len(largest), largest.encode())
        assert len(frame) == MAX_MESSAGE_BYTES
        await device.ws.send_bytes(frame)
        await expect_listen_start(recorder)
    session = runtime.session
    assert session is not None
    assert session.link.bad_input == {}


def test_log_excerpts_are_bounded() -> None:
    assert log_excerpt("short") == "short"
    long = log_excerpt("x" * 10_000)
    assert long == "x" * MAX_LOGGED_DETAIL + "... (10000 characters)"


# ---------------------------------------------------------------- message rate


async def test_a_device_over_the_message_rate_is_closed(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A near-zero refill makes the bucket hold exactly the burst, whatever the clock.
    set_limits(ha_core, messages_per_second=1e-6, message_burst=20)
    recorder = Recorder(runtime)
    device = devices(features={})
    await device.open()  # the hello is message 1
    session = runtime.session
    assert session is not None
    packet = opus_packet()
    for _ in range(18):
        await device.send_opus(packet)
    await device.listen_start()  # message 20: still served
    await expect_listen_start(recorder)
    assert session.ready
    await device.send_opus(packet)  # message 21
    assert await device.wait_closed() == (
        CloseCode.RATE_LIMITED,
        "more than 1e-06 messages per second (bursts of 20)",
    )
    await assert_session_gone(ha_core, session)
    assert "Closing the session of Kitchen speaker: more than 1e-06" in caplog.text
    # Reconnecting does not refill the budget: it is the device's, not the socket's.
    again = devices(features={})
    with pytest.raises(ChannelClosedError, match="4008"):
        await again.open()
    assert not runtime.connected


async def test_a_device_that_reconnects_too_often_is_refused(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    set_limits(ha_core, connections_per_second=1e-6, connection_burst=2)
    for _ in range(2):
        device = devices(features={})
        await device.open()
        await device.close()
        await until_disconnected(ha_core, MAC)
    third = devices(features={})
    await third.connect()
    assert await third.wait_closed() == (
        CloseCode.RATE_LIMITED,
        "more than 1e-06 connections per second (bursts of 2)",
    )
    assert runtime.link is None
    # Another device is not affected.
    await add_device_entry(ha_core, OTHER_MAC, OTHER_TOKEN)
    other = devices(mac=OTHER_MAC, token=OTHER_TOKEN, features={})
    await other.open()


async def handshake_status(
    client: TestClient[web.Request, web.Application], token: str
) -> int | None:
    """Return the HTTP status of a refused handshake, None when it was upgraded."""
    headers = {"Authorization": f"Bearer {token}", "Device-Id": MAC}
    headers["Protocol-Version"] = "1"
    try:
        ws = await client.ws_connect(WEBSOCKET_PATH, headers=headers)
    except WSServerHandshakeError as err:
        return err.status
    await ws.close()
    return None


async def test_refused_handshakes_are_rate_limited_per_address(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    client: TestClient[web.Request, web.Application],
) -> None:
    set_limits(ha_core, refusals_per_second=1e-6, refusal_burst=3)
    with log_waiter() as logs:
        for _ in range(3):
            # Wrong credentials: refused before the upgrade, and logged.
            assert await handshake_status(client, "wrong") == 401
        # The address's refusals are spent: a bare 429, no upgrade, no log line.
        for _ in range(20):
            assert await handshake_status(client, "wrong") == 429
        assert len(logs.matching("Refused device connection")) == 3
        # The paired device behind the same address still gets in.
        assert await handshake_status(client, TOKEN) is None


def test_log_lines_about_refusals_are_throttled_and_counted() -> None:
    now = [0.0]
    throttle = LogThrottle(rate=0.1, burst=2, clock=lambda: now[0])
    with log_waiter() as logs:
        logger = logging.getLogger(LOGGER_NAME)
        logged = [
            throttle.log(logger, logging.WARNING, "refused %s", n) for n in range(50)
        ]
        throttle.skip()
        assert logged == [True, True] + [False] * 48
        now[0] = 10.0
        assert throttle.log(logger, logging.WARNING, "refused %s", "later")
        lines = [record.getMessage() for record in logs.records]
    assert lines == [
        "refused 0",
        "refused 1",
        "refused later (49 similar lines left out)",
    ]
    assert throttle.left_out == 0


def test_the_default_rate_leaves_room_for_real_devices() -> None:
    """20 ms frames plus JSON for a minute, and a burst after a Wi-Fi stall, pass."""
    now = [0.0]
    budget = RateLimiter(
        MESSAGES_PER_SECOND, MESSAGE_BURST, max_keys=1, clock=lambda: now[0]
    )
    for frame in range(3000):  # 60 s of 20 ms frames, a JSON message every 10
        now[0] = frame * 0.02
        assert budget.allow(MAC)
        if frame % 10 == 0:
            assert budget.allow(MAC)
    # Wi-Fi held back 4 s of 20 ms audio, delivered at once.
    now[0] += 4.0
    assert all(budget.allow(MAC) for _ in range(200))
    # A flood of 2000 messages a second gets the burst and what refills meanwhile.
    now[0] += 10.0
    allowed = 0
    while budget.allow(MAC):
        allowed += 1
        now[0] += 0.0005
        assert allowed < 10_000, "the flood was never limited"
    assert MESSAGE_BURST <= allowed < MESSAGE_BURST * 1.1


def test_limits_must_be_positive() -> None:
    assert ConnectionLimits().max_sessions == 32
    for field in (f.name for f in fields(ConnectionLimits)):
        with pytest.raises(ValueError, match="must be positive"):
            replace(ConnectionLimits(), **{field: 0})
    for field in ("send_timeout", "close_timeout"):
        with pytest.raises(ValueError, match="must be positive"):
            replace(WebSocketLimits(), **{field: 0})


# ---------------------------------------------------------------- sessions in total


async def test_devices_beyond_the_session_limit_are_refused(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    set_limits(ha_core, max_sessions=2)
    second_mac, third_mac = OTHER_MAC, "aa:bb:cc:dd:ee:02"
    await add_device_entry(ha_core, second_mac, OTHER_TOKEN)
    third_entry = await add_device_entry(ha_core, third_mac, "third-token", "Attic")
    first = devices(features={})
    second = devices(mac=second_mac, token=OTHER_TOKEN, features={})
    await first.open()
    await second.open()

    third = devices(mac=third_mac, token="third-token", features={})
    await third.connect()
    assert await third.wait_closed() == (
        CloseCode.SERVER_BUSY,
        "too many devices connected (limit 2)",
    )
    assert "Refused device connection" in caplog.text
    assert runtime_of(third_entry).session is None

    # A device replacing its own connection is not a third session.
    first_again = devices(features={})
    await first_again.open()
    assert (await first.wait_closed())[0] == CloseCode.REPLACED
    assert set(async_get_server(ha_core).links) == {MAC, second_mac}

    # Once a device leaves, the next one gets in.
    await second.close()
    await until_disconnected(ha_core, second_mac)
    third_again = devices(mac=third_mac, token="third-token", features={})
    await third_again.open()
    assert runtime_of(third_entry).connected


async def test_thirty_two_devices_talk_at_once_and_a_thirty_third_waits(
    ha_core: HomeAssistant, devices: DeviceFactory
) -> None:
    """The default limit under load: every admitted device is served in full."""
    credentials = [
        (f"aa:bb:cc:00:00:{index:02x}", f"token-{index:02d}-0123456789")
        for index in range(MAX_SESSIONS + 1)
    ]
    runtimes = [
        runtime_of(await add_device_entry(ha_core, mac, token, f"Speaker {mac}"))
        for mac, token in credentials
    ]
    recorders = [Recorder(runtime) for runtime in runtimes]
    sims = [
        devices(mac=mac, token=token, features={}, protocol_version=index % 3 + 1)
        for index, (mac, token) in enumerate(credentials)
    ]
    admitted, late = sims[:MAX_SESSIONS], sims[MAX_SESSIONS]
    await asyncio.gather(*(sim.open() for sim in admitted))
    await late.connect()
    assert (await late.wait_closed())[0] == CloseCode.SERVER_BUSY

    async def talk(sim: SimulatedDevice) -> None:
        await sim.listen_start("manual")
        await sim.send_pcm(tone(440, 16000, 0.5))
        await sim.listen_stop()

    await asyncio.gather(*(talk(sim) for sim in admitted))
    for recorder in recorders[:MAX_SESSIONS]:
        assert await recorder.next_event() == ("connected",)
        assert await recorder.next_event() == ("listen_start", ListenMode.MANUAL)
        stop, audio_bytes = await recorder.next_event()
        assert stop == "listen_stop"
        assert audio_bytes > 0
    assert len(async_get_server(ha_core).links) == MAX_SESSIONS
    assert recorders[MAX_SESSIONS].log == []


async def test_connections_are_refused_while_home_assistant_stops(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    ha_core.set_state(CoreState.stopping)
    try:
        # HA's HTTP layer answers 503 before our view runs ...
        with pytest.raises(WSServerHandshakeError) as err:
            await devices(features={}).connect()
        assert err.value.status == 503
        # ... and our admission check closes the race of a request that got past it
        # just before HA began to stop (the upgrade awaits in between).
        with pytest.raises(AdmissionError) as refused:
            admit(ha_core, async_get_server(ha_core), MAC)
        assert refused.value.reason is EndReason.SERVER_SHUTDOWN
        assert runtime.session is None
    finally:
        ha_core.set_state(CoreState.running)


# ---------------------------------------------------------------- slow consumer


async def send_until_closed(session: DeviceSession) -> int:
    """Send 9 kB subtitles until the session ends; returns the bytes sent."""
    sentence = "好" * 3000
    sent = 0
    while sent < 64 * 1024 * 1024:
        try:
            await session.send_sentence(sentence)
        except SessionClosedError:
            return sent
        sent += len(sentence.encode())
    raise AssertionError("64 MiB were sent and no send ever blocked")


async def test_a_device_that_stops_reading_is_dropped(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    client: TestClient[web.Request, web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Over a real socket whose reader stopped: sends block, then the link is cut.

    The client does not read after the hello: aiohttp's client stops taking data
    from the socket once 64 KiB of messages wait unread, then the kernel buffers
    of both ends fill up, and the server's sends block as with a stuck device.
    """
    set_limits(ha_core, send_timeout=0.5, close_timeout=0.5)
    ws = await client.ws_connect(
        WEBSOCKET_PATH,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Device-Id": MAC,
            "Protocol-Version": "1",
        },
    )
    await ws.send_json({"type": "hello"})
    assert (await ws.receive_json(timeout=10))["type"] == "hello"
    session = runtime.session
    assert session is not None

    sent = await send_until_closed(session)
    assert sent < 64 * 1024 * 1024
    assert session.link.end_reason is EndReason.SEND_TIMEOUT
    assert "Closing the session of Kitchen speaker: the device stopped reading" in (
        caplog.text
    )
    # The close frame cannot be sent either: the connection is aborted, so neither
    # the socket nor its unsent data stays behind, though the device never reads.
    await until_disconnected(ha_core, MAC)
    await assert_session_gone(ha_core, session)
    # What was sent before reaches the device, then the end of the connection, with
    # no close frame: it was dropped, not closed behind data nobody reads.
    while (message := await ws.receive(timeout=10)).type in (
        WSMsgType.TEXT,
        WSMsgType.BINARY,
    ):
        pass
    assert message.type in (WSMsgType.CLOSING, WSMsgType.CLOSED, WSMsgType.ERROR)
    assert ws.close_code != CloseCode.SEND_TIMEOUT  # no close frame got through


async def open_raw_device(port: int, rcvbuf: int) -> asyncio.StreamWriter:
    """Connect like an ESP32 (a small TCP window), say hello, then never read."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    key = base64.b64encode(os.urandom(16)).decode()
    writer.write(
        f"GET {WEBSOCKET_PATH} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        "Upgrade: websocket\r\nConnection: Upgrade\r\n"
        f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Authorization: Bearer {TOKEN}\r\nDevice-Id: {MAC}\r\n"
        "Protocol-Version: 1\r\n\r\n".encode()
    )
    await reader.readuntil(b"\r\n\r\n")
    hello = b'{"type":"hello","version":1,"transport":"websocket"}'
    mask = os.urandom(4)
    masked = bytes(byte ^ mask[i % 4] for i, byte in enumerate(hello))
    writer.write(bytes([0x81, 0x80 | len(hello)]) + mask + masked)
    await writer.drain()
    head = await reader.readexactly(2)
    await reader.readexactly(head[1] & 0x7F)  # the server's hello
    cast(
        asyncio.Transport, writer.transport
    ).pause_reading()  # asyncio's reader would buffer 128 KiB
    return writer


async def test_a_paced_reply_to_a_device_that_stopped_reading_is_bounded_in_time(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    client: TestClient[web.Request, web.Application],
) -> None:
    """No send blocks for long (the kernel takes it), yet the device is dropped.

    Real-time paced 240-byte frames (32 kbit/s) fill the kernel's buffers slowly:
    only the age of what still waits unsent shows the device stopped reading.
    The send timeout is far away, so only that bound can end this session.
    """
    set_limits(ha_core, send_timeout=3600.0, max_queued=0.5)
    port = client.server.port
    assert port is not None
    writer = await open_raw_device(port, 4096)
    await wait_until(runtime, lambda: runtime.session is not None)
    session = runtime.session
    assert session is not None
    frames = [os.urandom(240) for _ in range(100_000)]  # 100 minutes of audio
    play = asyncio.create_task(session.playback.play_opus(frames))
    async with asyncio.timeout(60):
        await session.link.async_wait_closed()
    assert session.link.end_reason is EndReason.SEND_TIMEOUT
    assert not await play
    await until_disconnected(ha_core, MAC)
    writer.close()


async def test_a_reading_device_is_never_dropped_for_its_queue() -> None:
    """With a backlog that drains, the bound never trips, however long it runs."""
    sent: list[bytes] = []

    class Socket:
        close_code = None

        async def send_bytes(self, data: bytes) -> None:
            sent.append(data)

        async def send_str(self, data: str) -> None:
            sent.append(data.encode())

    connection = WebSocketConnection(
        cast(web.WebSocketResponse, Socket()), backlog=lambda: 0, max_queued=1e-9
    )
    for _ in range(1000):
        await connection.send_binary(b"x" * 240)
    assert len(sent) == 1000
    stuck = WebSocketConnection(
        cast(web.WebSocketResponse, Socket()), backlog=lambda: 10**9, max_queued=1e-9
    )
    await stuck.send_binary(b"x" * 300)  # the first send has no age yet
    with pytest.raises(SendTimeoutError, match="still not taken"):
        await stuck.send_binary(b"x" * 70_000)
    with pytest.raises(SendTimeoutError):
        await stuck.send_text("later")


@pytest.mark.usefixtures("socket_enabled")
def test_the_kernel_queue_is_read_only_where_it_can_be(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with socket.socket() as sock:
        assert websocket._unsent_in_kernel(sock.fileno()) == 0  # nothing sent yet
    closed = socket.socket()
    fileno = closed.fileno()
    closed.close()
    assert websocket._unsent_in_kernel(fileno) == 0  # gone: no error escapes
    monkeypatch.setattr(websocket, "_SIOCOUTQ", None)  # macOS, Windows
    with socket.socket() as sock:
        assert websocket._unsent_in_kernel(sock.fileno()) == 0
    assert websocket._backlog(cast(web.Request, FakeRequest(None))) is None
    closing = FakeTransport(closing=True)
    backlog = websocket._backlog(cast(web.Request, FakeRequest(closing)))
    assert backlog is not None
    assert backlog() == 0
    open_transport = FakeTransport(closing=False)
    backlog = websocket._backlog(cast(web.Request, FakeRequest(open_transport)))
    assert backlog is not None
    assert backlog() == 7


class FakeTransport:
    """The part of an asyncio transport the backlog reads (no socket)."""

    def __init__(self, *, closing: bool) -> None:
        self._closing = closing

    def get_extra_info(self, name: str) -> None:
        return None

    def is_closing(self) -> bool:
        return self._closing

    def get_write_buffer_size(self) -> int:
        return 7


class FakeRequest:
    def __init__(self, transport: FakeTransport | None) -> None:
        self.transport = transport


# ---------------------------------------------------------------- the receive loop


class FailingTransport:
    """A transport whose writes fail with an error it should never raise."""

    session_ends_connection = True

    def __init__(self) -> None:
        self.closed_with: tuple[EndReason, str] | None = None

    def server_hello_fields(self) -> dict[str, Any]:
        return {"transport": "websocket", "version": 1}

    def session_ended(self) -> None:
        raise AssertionError("a WebSocket's session ends with its connection")

    def diagnostics(self) -> dict[str, Any]:
        return {}

    async def send_text(self, text: str) -> None:
        raise RuntimeError("transport bug")

    async def send_audio(self, packet: bytes) -> None:
        raise RuntimeError("transport bug")

    async def close(self, reason: EndReason, detail: str) -> None:
        self.closed_with = (reason, detail)


class ScriptedWebSocket:
    """Yields prepared messages, as ``async for message in ws`` does."""

    def __init__(self, messages: list[WSMessage]) -> None:
        self.messages = messages

    def __aiter__(self) -> ScriptedWebSocket:
        return self

    async def __anext__(self) -> WSMessage:
        if not self.messages:
            raise StopAsyncIteration
        return self.messages.pop(0)


def scripted(*messages: WSMessage) -> web.WebSocketResponse:
    return cast(web.WebSocketResponse, ScriptedWebSocket(list(messages)))


async def test_a_bug_while_handling_a_message_closes_only_that_session(
    hass: HomeAssistant, caplog: pytest.LogCaptureFixture
) -> None:
    transport = FailingTransport()
    link = DeviceLink(hass, DeviceRuntime(MAC), transport, mac=MAC)
    hello_message = WSMessage(WSMsgType.TEXT, json.dumps({"type": "hello"}), None)
    listen = WSMessage(WSMsgType.TEXT, '{"type": "listen"}', None)
    ws = scripted(hello_message, listen)
    await _async_receive(ws, link)
    await link.async_wait_closed()
    assert transport.closed_with == (EndReason.INTERNAL_ERROR, "internal error")
    assert cast(ScriptedWebSocket, ws).messages == [listen]
    assert "Unexpected error handling a message from" in caplog.text
    assert "RuntimeError: transport bug" in caplog.text


@pytest.mark.parametrize(
    ("error", "end", "reason"),
    [
        (
            WebSocketError(WSCloseCode.MESSAGE_TOO_BIG, "too big"),
            EndReason.MESSAGE_TOO_BIG,
            "bad frame: too big",
        ),
        (
            WebSocketError(WSCloseCode.UNSUPPORTED_DATA, "odd"),
            EndReason.PROTOCOL_ERROR,
            "bad frame: odd",
        ),
        (
            ConnectionResetError("reset"),
            EndReason.NORMAL,
            "connection lost: ConnectionResetError('reset')",
        ),
    ],
)
async def test_receive_errors_end_the_session_with_the_code_sent(
    hass: HomeAssistant, error: Exception, end: EndReason, reason: str
) -> None:
    transport = FailingTransport()
    link = DeviceLink(hass, DeviceRuntime(MAC), transport, mac=MAC)
    await _async_receive(scripted(WSMessage(WSMsgType.ERROR, error, None)), link)
    await link.async_wait_closed()
    assert (link.end_reason, link.end_detail) == (end, reason)
    assert transport.closed_with == (end, reason)


class ClosingWebSocket:
    """A stand-in for aiohttp's WebSocketResponse at close time."""

    def __init__(self, *, hang: bool, close_code: int) -> None:
        self.hang = hang
        self.close_code = close_code

    async def close(self, *, code: int, message: bytes) -> None:
        if self.hang:
            await asyncio.Event().wait()


@pytest.mark.parametrize(
    ("hang", "close_code", "aborted"),
    [
        (True, WSCloseCode.OK, True),  # the close frame cannot even be sent
        (False, WSCloseCode.ABNORMAL_CLOSURE, True),  # no close frame came back
        (False, WSCloseCode.OK, False),  # a clean close handshake
    ],
)
async def test_a_close_that_cannot_complete_aborts_the_connection(
    hang: bool, close_code: int, aborted: bool
) -> None:
    aborts: list[bool] = []
    ws = ClosingWebSocket(hang=hang, close_code=close_code)
    transport = WebSocketConnection(
        cast(web.WebSocketResponse, ws),
        close_timeout=0.01,
        abort=lambda: aborts.append(True),
    )
    await transport.close(CloseCode.SEND_TIMEOUT, "the device stopped reading")
    assert aborts == ([True] if aborted else [])


class SharedDrainWebSocket:
    """Writes wait on one shared future, as aiohttp's writers wait for a drain."""

    def __init__(self) -> None:
        self.drained: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.close_code = WSCloseCode.OK
        self.close_calls = 0

    async def send_str(self, text: str) -> None:
        await self.drained

    async def send_bytes(self, data: bytes) -> None:
        await self.drained

    async def close(self, *, code: int, message: bytes) -> None:
        self.close_calls += 1
        await self.drained


def shared_drain_transport(
    ws: SharedDrainWebSocket, timeout: float, aborts: list[str], name: str
) -> WebSocketConnection:
    return WebSocketConnection(
        cast(web.WebSocketResponse, ws),
        send_timeout=timeout,
        close_timeout=timeout,
        abort=lambda: aborts.append(name),
    )


async def test_a_send_timing_out_fails_the_other_waiting_writes_cleanly() -> None:
    """A timed-out send cancels aiohttp's shared drain future under other writers.

    They must see the device as stuck (SendTimeoutError, a dropped connection), not
    a CancelledError that would look like their own task being cancelled.
    """
    ws = SharedDrainWebSocket()
    aborts: list[str] = []
    impatient = shared_drain_transport(ws, 0.01, aborts, "impatient")
    patient_sender = shared_drain_transport(ws, 60, aborts, "sender")
    patient_closer = shared_drain_transport(ws, 60, aborts, "closer")
    waiting_send = asyncio.create_task(patient_sender.send_binary(b"audio"))
    waiting_close = asyncio.create_task(patient_closer.close(4005, "bye"))
    await asyncio.sleep(0)
    with pytest.raises(SendTimeoutError):
        await impatient.send_text("{}")
    with pytest.raises(SendTimeoutError):
        await waiting_send
    await waiting_close
    assert aborts == ["closer"]
    # Stuck now: later sends fail at once and closing drops the connection.
    with pytest.raises(SendTimeoutError):
        await patient_sender.send_text("{}")
    await patient_sender.close(4007, "the device stopped reading")
    assert aborts == ["closer", "sender"]
    assert ws.close_calls == 1  # the stuck transport did not queue a close frame


async def test_cancelling_a_write_still_cancels_it() -> None:
    ws = SharedDrainWebSocket()
    aborts: list[str] = []
    transport = shared_drain_transport(ws, 60, aborts, "transport")
    for write in (transport.send_text("{}"), transport.close(1000, "bye")):
        task = asyncio.create_task(write)
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        ws.drained = asyncio.get_running_loop().create_future()
    assert aborts == []
