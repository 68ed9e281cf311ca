"""A device's link: its hello, routing, MCP, failures and lifetime.

These tests give the link the WebSocket transport over a recording connection
instead of a socket (tests/helpers/links.py), to reach the states a real device
rarely produces (blocked sends, interrupted plays); tests/transport/ covers the
same link behind a real WebSocket. A transport whose connection outlives its
voice sessions (as MQTT's will) covers the sessions coming and going on one link.
"""

import asyncio
from datetime import timedelta
import json
import logging
from typing import Any, cast

from aiohttp import WSMessage, WSMsgType, web
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from custom_components.xiaozhi.device.link import DeviceLink
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.supervisor import SessionClosedError
from custom_components.xiaozhi.protocol.mcp import McpClosedError, McpError, McpTool
from custom_components.xiaozhi.protocol.messages import (
    AudioParams,
    Goodbye,
    Hello,
    Listen,
    ListenState,
    Mcp,
)
from custom_components.xiaozhi.transport.base import (
    EndReason,
    SendTimeoutError,
    TransportError,
)
from custom_components.xiaozhi.transport.websocket import (
    CloseCode,
    WebSocketTransport,
    _async_receive,
)
from tests.helpers.devices import MAC, Recorder, RecordingHandler, wait_until
from tests.helpers.links import (
    LinkFactory,
    Scripted,
    lasting_transport,
    opus_packets,
    say_hello,
    transport_of,
)

# ---------------------------------------------------------------- hello and handler


async def test_hello_is_answered_first_then_the_handler_is_connected(
    make_link: LinkFactory,
) -> None:
    runtime = DeviceRuntime(MAC)
    changes: list[bool] = []
    runtime.async_add_listener(lambda: changes.append(runtime.connected))
    recorder = Recorder(runtime)
    link = make_link(runtime=runtime)
    assert changes == [False]  # attached, no hello yet
    ready_before_hello = link.ready
    assert not ready_before_hello
    session_before_hello = link.session
    assert session_before_hello is None

    session = await say_hello(link)
    hello = transport_of(session).messages[0]
    assert hello["type"] == "hello"
    assert hello["session_id"] == session.session_id
    assert hello["audio_params"]["sample_rate"] == 24000
    assert recorder.log[0][0] == "connected"
    assert isinstance(session.handler, RecordingHandler)
    assert session.ready
    assert link.ready
    assert link.mcp_supported is False
    assert changes == [False, True]


# ---------------------------------------------------------------- incoming messages


async def test_input_before_the_hello_is_dropped(make_link: LinkFactory) -> None:
    runtime = DeviceRuntime(MAC)
    recorder = Recorder(runtime)
    link = make_link(runtime=runtime)
    link.handle_audio(opus_packets(1)[0])
    await link.async_handle_message(Listen(ListenState.START))
    assert link.bad_input == {"audio before hello": 1, "message before hello": 1}
    assert recorder.log == []
    assert transport_of(link).sent == []


async def test_hello_version_differing_from_the_handshake_keeps_the_handshake(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = make_link(version=3)
    hello = WSMessage(WSMsgType.TEXT, json.dumps({"type": "hello", "version": 1}), None)
    await _async_receive(
        cast(web.WebSocketResponse, Scripted([hello])), link, protocol_version=3
    )
    transport = link.transport
    assert isinstance(transport, WebSocketTransport)
    assert transport.protocol_version == 3
    assert transport_of(link).messages[0]["version"] == 3
    assert "says version 1 in its hello, 3 in its handshake" in caplog.text


async def test_a_hello_with_raw_pcm_uplink_is_refused(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link()
    await link.async_handle_message(Hello(audio_params=AudioParams(format="pcm")))
    await link.async_wait_closed()
    assert transport_of(link).closed_with == (
        CloseCode.PROTOCOL_ERROR,
        "unsupported audio format 'pcm'",
    )
    assert "Closing the session of Kitchen: unsupported audio format" in caplog.text
    # Nothing is processed once the session ended.
    link.handle_audio(b"x")
    await link.async_handle_message(Hello())
    assert transport_of(link).sent == []


# ---------------------------------------------------------------- downlink


async def test_messages_to_the_device(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link)
    await session.send_stt("hello")
    await session.send_emotion("thinking")
    await session.send_sentence("one")
    await link.send_alert("Error", "Offline")
    await link.reboot()
    sid = session.session_id
    assert transport_of(session).messages[1:] == [
        {"session_id": sid, "type": "stt", "text": "hello"},
        {"session_id": sid, "type": "llm", "emotion": "thinking", "text": ""},
        {"session_id": sid, "type": "tts", "state": "sentence_start", "text": "one"},
        {
            "session_id": sid,
            "type": "alert",
            "status": "Error",
            "message": "Offline",
            "emotion": "neutral",
        },
        {"session_id": sid, "type": "system", "command": "reboot"},
    ]


# ---------------------------------------------------------------- failures and end


async def test_a_device_that_stops_reading_is_closed(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = DeviceRuntime(MAC)
    recorder = Recorder(runtime)
    link = make_link(runtime=runtime)
    session = await say_hello(link)
    transport = transport_of(session)
    await session.playback.start_speaking()
    transport.error = SendTimeoutError("a send blocked for 5 s")
    assert await session.playback.play_opus(opus_packets(3)) is False
    with pytest.raises(SessionClosedError):
        await session.send_stt("x")
    await link.async_wait_closed()
    assert link.end_reason is EndReason.SEND_TIMEOUT
    assert transport.closed_with == (
        CloseCode.SEND_TIMEOUT,
        "the device stopped reading",
    )
    assert recorder.log[-1][0] == "disconnected"
    assert runtime.session is None
    assert "Closing the session of Kitchen: the device stopped reading" in caplog.text


async def test_a_broken_connection_ends_the_session(
    make_link: LinkFactory,
) -> None:
    link = make_link()
    session = await say_hello(link)
    transport_of(session).error = TransportError("reset by peer")
    with pytest.raises(SessionClosedError):
        await session.send_emotion("happy")
    assert link.end_reason is EndReason.NORMAL
    assert link.end_detail == "connection lost: reset by peer"


async def test_nothing_can_be_sent_after_the_end(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link, mcp=True)
    session.end(EndReason.SERVER_CLOSED, "gone")
    session.end(EndReason.NORMAL, "again")  # no effect
    assert link.end_reason is EndReason.SERVER_CLOSED
    assert not session.ready
    with pytest.raises(SessionClosedError):
        await session.send_stt("x")
    with pytest.raises(SessionClosedError):
        await session.playback.play_opus([b"x"])
    with pytest.raises(McpClosedError):
        await link.tool_client().call_tool("self.x")

    async def never_awaited() -> None:
        """Closed by create_task, not left un-awaited."""

    with pytest.raises(SessionClosedError):
        session.create_task(never_awaited(), "late")
    await link.async_wait_closed()
    assert transport_of(session).closed_with == (CloseCode.SERVER_CLOSED, "gone")


async def test_hello_timeout(hass: HomeAssistant, make_link: LinkFactory) -> None:
    link = make_link()
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=11))
    await link.async_wait_closed()
    assert transport_of(link).closed_with == (
        CloseCode.HELLO_TIMEOUT,
        "no hello within 10 s",
    )


# ---------------------------------------------------------------- MCP


async def test_tools_are_discovered_after_the_hello(
    make_link: LinkFactory,
) -> None:
    runtime = DeviceRuntime(MAC)
    link = make_link(runtime=runtime)
    session = await say_hello(link, mcp=True)
    assert link.mcp_supported
    transport = transport_of(session)

    async def reply(method: str, result: dict[str, Any]) -> None:
        while not any(
            m.get("payload", {}).get("method") == method for m in transport.messages
        ):
            await asyncio.sleep(0)
        request = next(
            m["payload"]
            for m in transport.messages
            if m.get("payload", {}).get("method") == method
        )
        await link.async_handle_message(
            Mcp({"jsonrpc": "2.0", "id": request["id"], "result": result})
        )

    await reply("initialize", {"serverInfo": {"name": "board"}})
    tools_changed = asyncio.Event()
    runtime.async_add_listener(tools_changed.set)
    await reply("tools/list", {"tools": [{"name": "self.a"}]})
    await tools_changed.wait()
    assert runtime.tools == (McpTool("self.a"),)


async def test_discovery_errors_are_logged(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = DeviceRuntime(MAC)
    link = make_link(runtime=runtime)
    session = await say_hello(link, mcp=True)
    transport = transport_of(session)
    while not transport.messages[1:]:
        await asyncio.sleep(0)
    request = transport.messages[1]["payload"]
    await link.async_handle_message(
        Mcp({"jsonrpc": "2.0", "id": request["id"], "error": {"message": "busy"}})
    )
    (discovery,) = [t for t in link._supervisor.tasks if "mcp" in t.get_name()]
    await discovery
    assert "Could not list the tools of Kitchen: busy" in caplog.text
    assert runtime.tools == ()


async def test_discovery_ends_quietly_with_the_session(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link()
    await say_hello(link, mcp=True)
    (discovery,) = [t for t in link._supervisor.tasks if "mcp" in t.get_name()]
    await asyncio.sleep(0)
    link._mcp.close()
    await discovery
    assert "Could not list" not in caplog.text
    with pytest.raises(McpError):
        await link.tool_client().call_tool("self.a", reply_timeout=0.01)


# ---------------------------------------------------------------- runtime


def test_runtime_listeners_survive_a_failing_one(
    caplog: pytest.LogCaptureFixture,
) -> None:
    runtime = DeviceRuntime(MAC)
    calls: list[str] = []

    def broken() -> None:
        raise RuntimeError("entity bug")

    runtime.async_add_listener(broken)
    remove = runtime.async_add_listener(lambda: calls.append("ok"))
    runtime.async_set_tools([McpTool("self.a")])
    assert calls == ["ok"]
    assert "Error in a listener of device aa:bb:cc:dd:ee:ff" in caplog.text
    remove()
    remove()
    runtime.async_update_listeners()
    assert calls == ["ok"]
    assert not runtime.connected


def test_a_replaced_session_leaving_does_not_detach_its_successor() -> None:
    runtime = DeviceRuntime(MAC)
    old, new = object(), object()
    runtime.async_attach(old)  # type: ignore[arg-type]
    runtime.async_attach(new)  # type: ignore[arg-type]
    runtime.async_detach(old)  # type: ignore[arg-type]
    assert runtime.link is new


# ---------------------------------------------------------------- sessions on one link


async def test_a_link_that_outlives_sessions_says_goodbye_and_takes_the_next_hello(
    hass: HomeAssistant, lasting_link: DeviceLink
) -> None:
    link = lasting_link
    recorder = Recorder(link.runtime)
    # No hello timeout: such a link may stay without a voice session.
    async_fire_time_changed(hass, dt_util.utcnow() + timedelta(seconds=11))
    assert not link.closed

    first = await say_hello(link, mcp=True)
    transport = lasting_transport(link)
    hello = await transport.next_type("hello")
    assert (hello["transport"], hello["udp"]) == ("udp", {"port": 8884})
    first.end(EndReason.NORMAL, "the conversation is over")
    goodbye = await transport.next_type("goodbye")
    assert goodbye == {"session_id": first.session_id, "type": "goodbye"}
    assert not link.closed
    assert link.session is None
    assert link.runtime.connected  # the device stays reachable
    assert transport.closed_with is None

    second = await say_hello(link)
    assert second is not first
    assert second.session_id != first.session_id
    assert [event[0] for event in recorder.log] == [
        "connected",
        "disconnected",
        "connected",
    ]
    # Ending the link ends its session, and only now the connection.
    await link.async_close("gone")
    assert second.closed
    assert transport.closed_with == (EndReason.SERVER_CLOSED, "gone")


async def test_a_lasting_link_is_ready_and_lists_tools_without_a_hello(
    lasting_link: DeviceLink,
) -> None:
    link = lasting_link
    transport = lasting_transport(link)
    assert link.runtime.connected
    assert link.mcp_supported
    initialize = await transport.next_type("mcp")
    assert initialize["payload"]["method"] == "initialize"
    assert initialize["session_id"] == ""
    reply = {"jsonrpc": "2.0", "id": initialize["payload"]["id"]}
    await link.async_handle_message(
        Mcp({**reply, "result": {"serverInfo": {"name": "x", "version": "1"}}})
    )
    listing = await wait_for_method(transport, "tools/list")
    tools = [{"name": "self.get_device_status", "inputSchema": {"type": "object"}}]
    await link.async_handle_message(
        Mcp({"jsonrpc": "2.0", "id": listing["id"], "result": {"tools": tools}})
    )
    await wait_until(link.runtime, lambda: bool(link.runtime.tools))
    assert [tool.name for tool in link.runtime.tools] == ["self.get_device_status"]
    # A hello later does not initialise MCP again: once per connection.
    await say_hello(link, mcp=True)
    methods = [
        m["payload"].get("method") for m in transport.messages if m["type"] == "mcp"
    ]
    assert methods == ["initialize", "notifications/initialized", "tools/list"]


async def wait_for_method(transport: Any, method: str) -> dict[str, Any]:
    while True:
        for message in transport.messages:
            if message["type"] == "mcp" and message["payload"].get("method") == method:
                payload: dict[str, Any] = message["payload"]
                return payload
        transport.sent.clear()
        await transport.sent.wait()


async def test_the_device_s_goodbye_ends_its_session_without_one_back(
    lasting_link: DeviceLink,
) -> None:
    link = lasting_link
    recorder = Recorder(link.runtime)
    transport = lasting_transport(link)
    session = await say_hello(link)
    await link.async_handle_message(Goodbye("another session"))
    assert session.end_reason is None  # not the live session's: ignored
    await link.async_handle_message(Goodbye(session.session_id))
    assert session.closed
    assert link.session is None
    assert not link.closed
    assert link.runtime.connected
    assert [event[0] for event in recorder.log] == ["connected", "disconnected"]
    assert not any(m["type"] == "goodbye" for m in transport.messages)
    assert transport.sessions_ended == 1


async def test_a_goodbye_over_websocket_is_ignored(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link)
    await link.async_handle_message(Goodbye(session.session_id))
    assert link.session is session
    assert link.bad_input == {}
    assert not link.closed


async def test_a_hello_on_a_live_lasting_session_opens_a_new_one(
    lasting_link: DeviceLink,
) -> None:
    link = lasting_link
    transport = lasting_transport(link)
    first = await say_hello(link)
    second = await say_hello(link)
    assert first.closed
    assert second is link.session
    assert second.session_id != first.session_id
    hellos = [m for m in transport.messages if m["type"] == "hello"]
    assert [m["session_id"] for m in hellos] == [first.session_id, second.session_id]
    assert link.bad_input == {}


async def test_an_unusable_hello_on_a_lasting_link_is_only_bad_input(
    lasting_link: DeviceLink,
) -> None:
    link = lasting_link
    await link.async_handle_message(Hello(audio_params=AudioParams(format="pcm")))
    assert link.bad_input == {"unusable hello": 1}
    assert link.session is None
    assert not link.closed
    assert [m["type"] for m in lasting_transport(link).messages] == ["mcp"]
