"""The device WebSocket endpoint, driven by a simulated device over a real socket."""

import asyncio
import contextlib
from datetime import timedelta
from http import HTTPStatus
import json
import logging
from typing import Any, cast

import aiohttp
from aiohttp import WSMessage, WSMsgType, web
from aiohttp.test_utils import TestClient
import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from custom_components.xiaozhi.const import WEBSOCKET_PATH
from custom_components.xiaozhi.device.handler import LoggingHandler
from custom_components.xiaozhi.device.link import DeviceLink
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.protocol.identity import bearer_token
from custom_components.xiaozhi.protocol.mcp import McpError, McpTimeoutError
from custom_components.xiaozhi.protocol.messages import ListenMode
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.transport.base import (
    EndReason,
    SendTimeoutError,
    TransportError,
)
from custom_components.xiaozhi.transport.websocket import (
    MAX_MESSAGE_BYTES,
    CloseCode,
    Handshake,
    WebSocketConnection,
    WebSocketTransport,
    _async_receive,
    close_message,
)
from simulator.device import SimTool, SimulatedDevice
from tests.helpers.devices import (
    MAC,
    TOKEN,
    DeviceFactory,
    Recorder,
    assert_link_gone,
    assert_session_gone,
    dominant_hz,
    make_device_entry,
    runtime_of,
    session_tasks,
    tone,
    wait_until,
)


def framing_version(session: DeviceSession | None) -> int:
    """The binary framing version the session's WebSocket speaks."""
    assert session is not None
    transport = session.link.transport
    assert isinstance(transport, WebSocketTransport)
    return transport.protocol_version


# ---------------------------------------------------------------- the happy path


@pytest.mark.parametrize(("version", "frame_ms"), [(1, 60), (2, 20), (3, 40)])
async def test_device_talks_and_listens_over_each_framing(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    version: int,
    frame_ms: int,
) -> None:
    recorder = Recorder(runtime)
    tools = [SimTool("self.get_device_status", "Status"), SimTool("self.reboot")]
    device = devices(protocol_version=version, frame_duration_ms=frame_ms, tools=tools)

    hello = await device.open()
    assert hello["type"] == "hello"
    assert hello["transport"] == "websocket"
    assert hello["session_id"]
    assert hello["audio_params"] == {
        "format": "opus",
        "sample_rate": 24000,
        "channels": 1,
        "frame_duration": 60,
    }
    assert device.received_types[0] == "hello"
    assert await recorder.next_event() == ("connected",)
    session = runtime.session
    assert session is not None
    connected = runtime.connected
    assert connected
    assert framing_version(session) == version
    assert session.session_id == hello["session_id"]
    assert async_get_server(ha_core).links[MAC] is session.link
    await wait_until(runtime, lambda: len(runtime.tools) == 2)
    assert [tool.name for tool in runtime.tools] == [t.name for t in tools]

    # Uplink: real Opus frames reach the handler as 16 kHz PCM.
    await device.listen_start("auto")
    assert await recorder.next_event() == ("listen_start", ListenMode.AUTO)
    listening = session.listening
    assert listening
    frames = await device.send_pcm(tone(440, 16000, 1.0))
    await device.listen_stop()
    event = await recorder.next_event()
    assert event[0] == "listen_stop"
    audio = bytes(recorder.handlers[0].audio)
    expected = frames * frame_ms * 16 * 2
    assert expected - frame_ms * 16 * 2 < len(audio) <= expected
    assert abs(dominant_hz(audio, 16000) - 440) < 10
    assert not session.listening

    await device.wake_word("你好小智")
    assert await recorder.next_event() == ("wake_word", "你好小智")
    await device.abort()
    assert await recorder.next_event() == ("abort", None)
    await device.abort("wake_word_detected")
    assert await recorder.next_event() == ("abort", "wake_word_detected")
    for mode in ("manual", "realtime"):
        await device.listen_start(mode)
        assert await recorder.next_event() == ("listen_start", ListenMode(mode))

    # Downlink: tts start precedes the audio, framed the connection's way.
    await session.send_stt("打开灯")
    await session.send_emotion("happy", "😀")
    await session.playback.start_speaking()
    await session.send_sentence("好的")
    assert await session.playback.play_pcm([tone(660, 16000, 0.6)], 16000)
    await session.playback.stop_speaking()
    for expected_message in (
        {"type": "stt", "text": "打开灯"},
        {"type": "llm", "emotion": "happy", "text": "😀"},
        {"type": "tts", "state": "start"},
        {"type": "tts", "state": "sentence_start", "text": "好的"},
        {"type": "tts", "state": "stop"},
    ):
        message = await device.next_message()
        assert message == {"session_id": session.session_id, **expected_message}
    assert device.dropped_audio == 0
    assert len(device.received_audio) >= 10  # 600 ms (+ the encoder's tail)
    assert len(device.received_audio) == session.playback.downlink.stats.frames_sent
    assert abs(dominant_hz(device.received_pcm(), 24000) - 660) < 10

    await session.link.send_alert("Warning", "Battery low", "sad")
    await session.link.reboot()
    assert await device.next_message() == {
        "session_id": session.session_id,
        "type": "alert",
        "status": "Warning",
        "message": "Battery low",
        "emotion": "sad",
    }
    assert (await device.next_message())["command"] == "reboot"

    await device.close()
    assert await recorder.next_event() == ("disconnected",)
    await assert_session_gone(ha_core, session)
    assert not runtime.connected
    assert session.link.end_reason is EndReason.NORMAL


@pytest.mark.parametrize("version", [2, 3])
async def test_json_in_binary_frames_is_handled(
    runtime: DeviceRuntime, devices: DeviceFactory, version: int
) -> None:
    recorder = Recorder(runtime)
    device = devices(protocol_version=version, features={})
    await device.connect()
    assert (await device.hello(binary=True))["transport"] == "websocket"
    assert await recorder.next_event() == ("connected",)
    await device.send_json(
        {"type": "listen", "state": "start", "mode": "manual"}, binary=True
    )
    assert await recorder.next_event() == ("listen_start", ListenMode.MANUAL)


async def test_audio_without_a_voice_handler_is_dropped(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    # The satellite registers the voice handler; take it away.
    runtime.async_set_handler_factory(LoggingHandler)
    device = devices(features={})
    await device.open()
    session = runtime.session
    assert session is not None
    await device.listen_start()
    await device.send_pcm(tone(440, 16000, 0.3))
    await device.wake_word("hi")
    await device.close()
    await session.link.async_wait_closed()
    handler = session.handler
    assert isinstance(handler, LoggingHandler)
    assert handler.dropped_audio_bytes > 0


# ---------------------------------------------------------------- authentication


@pytest.mark.parametrize(
    ("overrides", "reason"),
    [
        ({"token": None}, "missing token"),
        ({"token": "wrong-token"}, "invalid token"),
        ({"token": TOKEN + "x"}, "invalid token"),
        ({"token": "令牌"}, "invalid token"),
        ({"mac": "11:22:33:44:55:66"}, "device not paired"),
    ],
)
async def test_wrong_credentials_get_401_before_the_upgrade(
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    reason: str,
) -> None:
    """No socket is opened: clients (xiaozhi-sdk) stop at a 401 instead of
    waiting for a hello that never comes."""
    recorder = Recorder(runtime)
    device = devices(**overrides)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await device.connect()
    assert refused.value.status == HTTPStatus.UNAUTHORIZED
    assert runtime.session is None
    assert recorder.log == []
    assert "Refused device connection" in caplog.text
    assert reason in caplog.text
    assert TOKEN not in caplog.text
    assert "wrong-token" not in caplog.text


@pytest.mark.parametrize(
    ("overrides", "code", "reason"),
    [
        ({"mac": "not-a-mac"}, CloseCode.BAD_HANDSHAKE, "invalid Device-Id"),
        ({"mac": ""}, CloseCode.BAD_HANDSHAKE, "invalid Device-Id"),
        ({"protocol_version": 7}, CloseCode.BAD_HANDSHAKE, "Protocol-Version"),
    ],
)
async def test_refused_connections_are_closed_with_a_reason(
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
    overrides: dict[str, Any],
    code: CloseCode,
    reason: str,
) -> None:
    recorder = Recorder(runtime)
    device = devices(**overrides)
    await device.connect()
    # Whatever it sends is never read: no hello answer, no audio decoded.
    with contextlib.suppress(ConnectionError):
        await device.ws.send_bytes(b"\xf8\xff\xfe")
        await device.send_json(device.client_hello())
    close_code, close_reason = await device.wait_closed()
    assert close_code == code
    assert reason in close_reason
    assert device.server_hello is None
    assert runtime.session is None
    assert recorder.log == []
    assert "Refused device connection" in caplog.text
    assert reason in caplog.text
    assert TOKEN not in caplog.text
    assert "wrong-token" not in caplog.text


async def test_query_parameters_and_bare_tokens_are_accepted(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices(credentials_in_query=True, protocol_version=3, features={})
    await device.open()
    assert runtime.session is not None
    assert framing_version(runtime.session) == 3
    await device.close()

    bare = devices(bearer_prefix=False, features={})
    await bare.open()
    assert runtime.connected


async def test_headers_are_case_insensitive_and_mac_is_normalized(
    runtime: DeviceRuntime, client: TestClient[web.Request, web.Application]
) -> None:
    ws = await client.ws_connect(
        WEBSOCKET_PATH.rstrip("/"),
        headers={
            "authorization": f"bearer {TOKEN}",
            "device-id": MAC.upper().replace(":", "-"),
            "protocol-version": "1",
        },
    )
    await ws.send_json({"type": "hello", "transport": "websocket"})
    message = await ws.receive_json(timeout=10)
    assert message["type"] == "hello"
    assert runtime.connected
    await ws.close()


async def test_disabled_device_is_refused(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert await ha_core.config_entries.async_unload(device_entry.entry_id)
    device = devices()
    await device.connect()
    code, reason = await device.wait_closed()
    assert code == CloseCode.UNAUTHORIZED
    assert "not enabled" in reason


async def test_plain_http_request_is_rejected(
    client: TestClient[web.Request, web.Application],
) -> None:
    response = await client.get(WEBSOCKET_PATH)
    assert response.status == 400


def test_handshake_helpers() -> None:
    assert bearer_token("Bearer abc") == "abc"
    assert bearer_token("  bearer   abc ") == "abc"
    assert bearer_token("abc") == "abc"
    assert bearer_token("token with space") == "token with space"
    assert Handshake("m", "t", "1").client_id == ""
    assert close_message("x" * 200) == b"x" * 123
    # Never cut a multi-byte character in half.
    assert close_message("好" * 50) == ("好" * 41).encode()


# ---------------------------------------------------------------- session lifetime


async def test_second_connection_replaces_the_first(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    recorder = Recorder(runtime)
    first = devices(features={})
    await first.open()
    first_session = runtime.session
    assert first_session is not None

    second = devices(features={})
    await second.open()
    assert await first.wait_closed() == (
        CloseCode.REPLACED,
        "replaced by a new connection of the device",
    )
    second_session = runtime.session
    assert second_session is not None
    assert second_session is not first_session
    assert async_get_server(ha_core).links[MAC] is second_session.link
    assert [(event[0], event[-1]) for event in recorder.log] == [
        ("connected", first_session),
        ("disconnected", first_session),
        ("connected", second_session),
    ]
    await first_session.link.async_wait_closed()

    await second.listen_start()
    while (await recorder.next_event())[0] != "listen_start":
        pass
    assert recorder.log[-1][-1] is second_session


async def test_hello_timeout_closes_the_socket(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices()
    await device.connect()
    await wait_until(runtime, lambda: runtime.link is not None)
    link = runtime.link
    assert link is not None
    assert not runtime.connected  # authenticated, but no hello yet
    async_fire_time_changed(ha_core, dt_util.utcnow() + timedelta(seconds=11))
    assert await device.wait_closed() == (
        CloseCode.HELLO_TIMEOUT,
        "no hello within 10 s",
    )
    await assert_link_gone(ha_core, link)


async def test_unloading_the_device_entry_closes_its_session(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    recorder = Recorder(runtime)
    device = devices(features={})
    await device.open()
    session = runtime.session
    assert session is not None
    assert await ha_core.config_entries.async_unload(device_entry.entry_id)
    assert device_entry.state is ConfigEntryState.NOT_LOADED
    assert await device.wait_closed() == (
        CloseCode.SERVER_CLOSED,
        "device entry unloaded",
    )
    assert recorder.log[-1][0] == "disconnected"
    await assert_session_gone(ha_core, session)


async def test_removing_the_device_entry_closes_its_session(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    device = devices(features={})
    await device.open()
    session = runtime.session
    assert session is not None
    await ha_core.config_entries.async_remove(device_entry.entry_id)
    code, _ = await device.wait_closed()
    assert code == CloseCode.SERVER_CLOSED
    await assert_session_gone(ha_core, session)


async def test_home_assistant_stop_closes_sessions(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices(features={})
    await device.open()
    session = runtime.session
    assert session is not None
    ha_core.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    assert await device.wait_closed() == (
        CloseCode.SERVER_SHUTDOWN,
        "Home Assistant is stopping",
    )
    await assert_session_gone(ha_core, session)


# ---------------------------------------------------------------- MCP


async def test_tools_are_listed_across_pages_with_numeric_ids(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    tools = [
        SimTool(f"self.tool_{index}", "x" * 150, {"value": {"type": "integer"}})
        for index in range(12)
    ]
    tools.insert(3, SimTool("self.reboot", "user only", user_only=True))
    device = devices(tools=tools, tools_page_bytes=700)
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == 12)
    assert [tool.name for tool in runtime.tools] == [
        f"self.tool_{index}" for index in range(12)
    ]
    assert runtime.tools[0].input_schema == {
        "type": "object",
        "properties": {"value": {"type": "integer"}},
        "required": ["value"],
    }
    requests = device.mcp_requests
    assert [r["method"] for r in requests[:2]] == [
        "initialize",
        "notifications/initialized",
    ]
    listing = [r for r in requests if r["method"] == "tools/list"]
    assert len(listing) >= 4  # it really was paginated
    assert listing[0]["params"] == {"cursor": "", "withUserTools": False}
    assert all(r["params"]["cursor"] for r in listing[1:])
    ids = [r["id"] for r in requests if "id" in r]
    assert all(type(i) is int for i in ids)
    assert ids == sorted(set(ids))


async def test_tool_calls_results_errors_and_timeouts(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    def set_volume(arguments: dict[str, Any]) -> Any:
        if not 0 <= arguments["volume"] <= 100:
            raise ValueError("Missing valid argument: volume")
        return True

    device = devices(
        tools=[
            SimTool("self.audio_speaker.set_volume", callback=set_volume),
            SimTool("self.get_device_status", callback=lambda _: {"volume": 40}),
        ]
    )
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == 2)
    session = runtime.session
    assert session is not None

    result = await session.link.tool_client().call_tool(
        "self.audio_speaker.set_volume", {"volume": 30}
    )
    assert result.text == "true"
    assert not result.is_error
    status = await session.link.tool_client().call_tool("self.get_device_status")
    assert json.loads(status.text) == {"volume": 40}

    with pytest.raises(McpError, match=r"Unknown tool: self\.nope") as err:
        await session.link.tool_client().call_tool("self.nope")
    assert err.value.code is None
    with pytest.raises(McpError, match="Missing valid argument: volume"):
        await session.link.tool_client().call_tool(
            "self.audio_speaker.set_volume", {"volume": 300}
        )

    device.answer_mcp = False
    with pytest.raises(McpTimeoutError):
        await session.link.tool_client().call_tool(
            "self.get_device_status", reply_timeout=0.05
        )
    late_id = device.mcp_requests[-1]["id"]
    # A late reply, a string id and an unknown id are all dropped harmlessly.
    await device.mcp_reply(late_id, result={"content": []})
    await device.mcp_reply(str(late_id + 1), result={})
    await device.mcp_reply(9999, result={})
    device.answer_mcp = True
    again = await session.link.tool_client().call_tool("self.get_device_status")
    assert json.loads(again.text) == {"volume": 40}
    assert session.ready


async def test_device_without_mcp_gets_no_mcp_requests(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices(features={"aec": True})
    await device.open()
    session = runtime.session
    assert session is not None
    with pytest.raises(McpError, match="does not serve MCP tools"):
        await session.link.tool_client().call_tool("self.get_device_status")
    assert device.mcp_requests == []
    assert runtime.tools == ()


async def test_failed_tool_listing_leaves_the_session_healthy(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(runtime)
    device = devices()
    device.answer_mcp = False
    await device.open()
    assert await recorder.next_event() == ("connected",)
    session = runtime.session
    assert session is not None
    (discovery,) = [t for t in session_tasks() if "mcp discovery" in t.get_name()]
    await wait_for_request(device, "initialize")
    # The 10 s initialize timeout expires.
    async_fire_time_changed(ha_core, dt_util.utcnow() + timedelta(seconds=11))
    await asyncio.wait({discovery})
    assert "Could not list the tools of Kitchen speaker" in caplog.text
    assert runtime.tools == ()
    await device.listen_start()
    assert await recorder.next_event() == ("listen_start", ListenMode.AUTO)


async def wait_for_request(device: SimulatedDevice, method: str) -> None:
    for _ in range(200):
        if any(r["method"] == method for r in device.mcp_requests):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {method} request")


# ---------------------------------------------------------------- bad input


async def test_bad_input_is_logged_and_the_session_stays_healthy(
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder(runtime)
    device = devices(protocol_version=3, features={})
    await device.connect()
    # Before the hello: audio and other messages are dropped.
    await device.send_opus(b"\xf8\xff\xfe")
    await device.listen_start()
    await device.hello()
    assert await recorder.next_event() == ("connected",)
    session = runtime.session
    assert session is not None

    ws = device.ws
    await ws.send_str("{not json")
    await ws.send_str("[1, 2]")
    await ws.send_str(json.dumps({"type": "listen", "state": "sideways"}))
    await ws.send_str(json.dumps({"type": "iot", "descriptors": []}))
    await ws.send_bytes(b"\x00\x00")  # truncated v3 header
    await ws.send_bytes(b"\x00\x00\x00\x09abc")  # declares more than it carries
    await ws.send_bytes(b"\x07\x00\x00\x01a")  # unknown frame type
    await device.send_opus(b"\xff\xfe\xfd\xfc\xfb")  # garbage Opus
    await device.send_opus(b"\xff\xfe\xfd\xfc\xfa")
    second_hello = await device.hello()  # hello twice
    assert second_hello["session_id"] == session.session_id

    await device.listen_start("manual")
    assert await recorder.next_event() == ("listen_start", ListenMode.MANUAL)
    assert session.link.bad_input == {
        "audio before hello": 1,
        "message before hello": 1,
        "malformed message": 3,
        "malformed frame": 3,
        "invalid Opus audio": 2,
        "second hello": 1,
    }
    assert "Ignoring malformed message from Kitchen speaker" in caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 6  # one per kind, the repeats at debug level
    assert "Traceback" not in caplog.text


async def test_text_sent_as_v1_binary_does_not_hurt(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    recorder = Recorder(runtime)
    device = devices(protocol_version=1, features={})
    await device.open()
    assert await recorder.next_event() == ("connected",)
    await device.ws.send_bytes(b'{"type":"listen","state":"start","mode":"auto"}')
    await device.listen_start("realtime")
    assert await recorder.next_event() == ("listen_start", ListenMode.REALTIME)
    assert runtime.connected


async def test_oversize_message_closes_the_session(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = devices(features={})
    await device.open()
    session = runtime.session
    assert session is not None
    await device.ws.send_bytes(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    code, _ = await device.wait_closed()
    assert code == 1009
    await assert_session_gone(ha_core, session)
    assert "Closing the session of Kitchen speaker: bad frame" in caplog.text


async def test_unsupported_uplink_format_is_refused(
    runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices(features={})
    await device.connect()
    hello = device.client_hello()
    hello["audio_params"]["format"] = "pcm"
    await device.send_json(hello)
    assert await device.wait_closed() == (
        CloseCode.PROTOCOL_ERROR,
        "unsupported audio format 'pcm'",
    )


async def test_device_that_vanishes_mid_reply_ends_cleanly(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices(features={})
    await device.open()
    session = runtime.session
    assert session is not None
    await session.playback.start_speaking()
    play = asyncio.ensure_future(
        session.playback.play_pcm([tone(300, 24000, 5.0)], 24000)
    )
    while session.playback.downlink.stats.frames_sent < 3:
        await asyncio.sleep(0.01)
    await device.close()
    assert await play is False
    await assert_session_gone(ha_core, session)


# ---------------------------------------------------------------- the transport


class StuckWebSocket:
    """A stand-in for aiohttp's WebSocketResponse whose writes never finish."""

    def __init__(self, error: Exception | None = None) -> None:
        self.error = error
        self.closed_with: tuple[int, bytes] | None = None

    async def _write(self) -> None:
        if self.error is not None:
            raise self.error
        await asyncio.Event().wait()

    async def send_str(self, text: str) -> None:
        await self._write()

    async def send_bytes(self, data: bytes) -> None:
        await self._write()

    async def close(self, *, code: int, message: bytes) -> None:
        self.closed_with = (code, message)
        await self._write()


def transport_over(ws: StuckWebSocket) -> WebSocketConnection:
    return WebSocketConnection(
        cast(web.WebSocketResponse, ws), send_timeout=0.01, close_timeout=0.01
    )


async def test_transport_turns_stuck_and_broken_writes_into_errors() -> None:
    stuck = transport_over(StuckWebSocket())
    with pytest.raises(SendTimeoutError, match=r"blocked for 0\.01 s"):
        await stuck.send_text("{}")
    with pytest.raises(SendTimeoutError):
        await stuck.send_binary(b"x")
    await stuck.close(CloseCode.SEND_TIMEOUT, "the device stopped reading")

    broken = transport_over(StuckWebSocket(ConnectionResetError()))
    with pytest.raises(TransportError, match="ConnectionResetError"):
        await broken.send_text("{}")
    with pytest.raises(TransportError):
        await broken.send_binary(b"x")
    await broken.close(CloseCode.NORMAL, "bye")


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


async def test_receive_loop_stops_when_a_reply_cannot_be_sent(
    hass: HomeAssistant,
) -> None:
    runtime = DeviceRuntime(MAC)
    ws = StuckWebSocket(ConnectionResetError("gone"))
    transport = WebSocketTransport(transport_over(ws), protocol_version=1, name=MAC)
    link = DeviceLink(hass, runtime, transport, mac=MAC)
    hello = WSMessage(WSMsgType.TEXT, json.dumps({"type": "hello"}), None)
    listen = WSMessage(WSMsgType.TEXT, json.dumps({"type": "listen"}), None)
    scripted = ScriptedWebSocket([hello, listen])
    await _async_receive(cast(web.WebSocketResponse, scripted), link)
    assert scripted.messages == [listen]  # nothing read after the failure
    assert link.end_detail == "connection lost: gone"
    await link.async_wait_closed()


async def test_one_misbehaving_device_does_not_disturb_another(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    other_mac, other_token = "aa:bb:cc:dd:ee:01", "another-device-token"
    other_entry = make_device_entry(other_mac, other_token)
    other_entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(other_entry.entry_id)
    other_runtime = runtime_of(other_entry)
    recorder = Recorder(other_runtime)

    unruly = devices(features={})
    calm = devices(mac=other_mac, token=other_token, protocol_version=2, features={})
    await unruly.open()
    await calm.open()
    unruly_session = runtime.session
    assert unruly_session is not None
    assert other_runtime.session is not unruly_session

    await unruly.ws.send_bytes(b"\x00" * (MAX_MESSAGE_BYTES + 1))
    await unruly.wait_closed()
    await assert_session_gone(ha_core, unruly_session)

    await calm.listen_start()
    assert await recorder.next_event() == ("connected",)
    assert await recorder.next_event() == ("listen_start", ListenMode.AUTO)
    assert other_runtime.connected
    assert set(async_get_server(ha_core).links) == {other_mac}
