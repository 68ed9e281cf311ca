"""A device's link and voice session: routing, handler interface, downlink, lifetime.

These tests give the link the WebSocket transport over a recording connection
instead of a socket, to reach the states a real device rarely produces (blocked
sends, handler bugs, interrupted plays); test_websocket.py covers the same link
behind a real WebSocket. A recording transport whose connection outlives its
voice sessions (as MQTT's will) covers the sessions coming and going on one link.
"""

import asyncio
from collections.abc import AsyncGenerator
from datetime import timedelta
import json
import logging
from typing import Any, cast

from aiohttp import WSMessage, WSMsgType, web
import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from custom_components.xiaozhi.device.handler import LoggingHandler
from custom_components.xiaozhi.device.link import DeviceLink
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import (
    IDLE_CHECK_INTERVAL_S,
    DeviceSession,
)
from custom_components.xiaozhi.device.supervisor import SessionClosedError
from custom_components.xiaozhi.protocol.codec import OpusDecoder
from custom_components.xiaozhi.protocol.framing import FrameType, decode_frame
from custom_components.xiaozhi.protocol.mcp import McpClosedError, McpError, McpTool
from custom_components.xiaozhi.protocol.messages import (
    Abort,
    AudioParams,
    Hello,
    Listen,
    ListenMode,
    ListenState,
    Mcp,
    Unknown,
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
from tests.helpers.devices import MAC, Recorder, RecordingHandler, dominant_hz, tone
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


async def test_handlers_follow_the_registered_factory(
    make_link: LinkFactory,
) -> None:
    runtime = DeviceRuntime(MAC)
    link = make_link(runtime=runtime)
    session = await say_hello(link)
    assert isinstance(session.handler, LoggingHandler)

    recorder = Recorder(runtime)
    assert [event[0] for event in recorder.log] == ["connected"]
    assert isinstance(session.handler, RecordingHandler)
    recorder.unregister()
    assert [event[0] for event in recorder.log] == ["connected", "disconnected"]
    assert isinstance(session.handler, LoggingHandler)
    recorder.unregister()  # a second call changes nothing
    assert isinstance(session.handler, LoggingHandler)

    other = Recorder(runtime)
    Recorder(runtime).unregister()  # not the registered factory: no change
    assert runtime.handler_factory is None
    assert [event[0] for event in other.log] == ["connected", "disconnected"]


async def test_a_factory_registered_before_the_hello_waits_for_it(
    make_link: LinkFactory,
) -> None:
    runtime = DeviceRuntime(MAC)
    link = make_link(runtime=runtime)
    recorder = Recorder(runtime)
    assert recorder.log == []
    await say_hello(link)
    assert [event[0] for event in recorder.log] == ["connected"]


class BrokenHandler:
    """A voice handler whose every method raises."""

    def __init__(self, session: DeviceSession) -> None:
        self.session = session

    def on_connected(self) -> None:
        raise RuntimeError("connected")

    def on_disconnected(self) -> None:
        raise RuntimeError("disconnected")

    async def on_listen_start(self, mode: ListenMode) -> None:
        raise RuntimeError("listen start")

    async def on_listen_stop(self) -> None:
        raise RuntimeError("listen stop")

    async def on_wake_word(self, text: str) -> None:
        raise RuntimeError("wake word")

    async def on_abort(self, reason: str | None) -> None:
        raise RuntimeError("abort")

    def on_audio(self, pcm: bytes) -> None:
        raise RuntimeError("audio")


async def test_handler_failures_are_logged_once_and_the_session_lives(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = DeviceRuntime(MAC)
    runtime.async_set_handler_factory(BrokenHandler)
    link = make_link(runtime=runtime)
    session = await say_hello(link)
    packet = opus_packets(1)[0]
    for _ in range(2):
        await link.async_handle_message(Listen(ListenState.START, ListenMode.AUTO))
        link.handle_audio(packet)
        await link.async_handle_message(Listen(ListenState.DETECT, text="hi"))
        await link.async_handle_message(Listen(ListenState.STOP))
        await link.async_handle_message(Abort())
    assert session.ready
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert sorted(r.getMessage().rsplit(" ", 1)[-1] for r in errors) == sorted(
        [
            "on_connected",
            "on_listen_start",
            "on_audio",
            "on_wake_word",
            "on_listen_stop",
            "on_abort",
        ]
    )
    assert link.bad_input["handler on_listen_start error"] == 2
    session.end(EndReason.NORMAL, "bye")
    assert link.bad_input["handler on_disconnected error"] == 1


async def test_the_logging_handler_drops_everything(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    link = make_link()
    session = await say_hello(link)
    await link.async_handle_message(Listen(ListenState.START, ListenMode.MANUAL))
    for packet in opus_packets(3):
        link.handle_audio(packet)
    await link.async_handle_message(Listen(ListenState.STOP))
    await link.async_handle_message(Listen(ListenState.DETECT, text="你好小智"))
    await link.async_handle_message(Abort("wake_word_detected"))
    handler = session.handler
    assert isinstance(handler, LoggingHandler)
    assert handler.dropped_audio_bytes > 0
    session.end(EndReason.NORMAL, "bye")
    assert "No voice handler for Kitchen yet" in caplog.text
    assert "heard its wake word '你好小智'" in caplog.text
    assert "Dropped" in caplog.text


# ---------------------------------------------------------------- incoming messages


async def test_listen_state_modes_and_defaults(make_link: LinkFactory) -> None:
    runtime = DeviceRuntime(MAC)
    recorder = Recorder(runtime)
    link = make_link(runtime=runtime)
    session = await say_hello(link)
    await link.async_handle_message(Listen(ListenState.START))
    listening = session.listening
    assert listening
    first_mode = session.listen_mode
    assert first_mode is ListenMode.AUTO
    assert recorder.log[-1][:2] == ("listen_start", ListenMode.AUTO)
    await link.async_handle_message(Listen(ListenState.START, ListenMode.REALTIME))
    assert session.listen_mode is ListenMode.REALTIME
    await link.async_handle_message(Listen(ListenState.STOP))
    assert not session.listening
    await link.async_handle_message(Unknown("iot", {"type": "iot"}))
    assert link.bad_input == {}


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


@pytest.mark.parametrize("version", [1, 2, 3])
async def test_play_sends_tts_start_then_framed_audio(
    make_link: LinkFactory, version: int
) -> None:
    link = make_link(version=version)
    session = await say_hello(link)
    packets = opus_packets(7)
    assert await session.playback.play_opus(packets)
    assert await session.playback.play_opus([])  # a second play of the same reply
    await session.playback.stop_speaking()
    transport = transport_of(session)
    assert transport.kinds()[1:] == ["start"] + ["binary"] * 7 + ["stop"]
    for frame, packet in zip(transport.frames, packets, strict=True):
        decoded = decode_frame(frame, version)
        assert decoded.type is FrameType.OPUS
        assert decoded.payload == packet
    assert not session.speaking


async def test_play_pcm_resamples_and_encodes(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link)

    async def chunks() -> AsyncGenerator[bytes]:
        pcm = tone(880, 16000, 0.5)
        for start in range(0, len(pcm), 3001):
            yield pcm[start : start + 3001]

    assert await session.playback.play_pcm(chunks(), 16000)
    decoder = OpusDecoder(24000)
    pcm = b"".join(decoder.decode(frame) for frame in transport_of(session).frames)
    assert abs(dominant_hz(pcm, 24000) - 880) < 10


async def test_unsendable_packets_are_skipped(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link(version=3)
    session = await say_hello(link)
    good = opus_packets(1)[0]
    assert await session.playback.play_opus([b"", b"x" * 70000, good])
    assert transport_of(session).frames == [
        b"\x00\x00" + len(good).to_bytes(2, "big") + good
    ]
    assert "Not sending an Opus packet to Kitchen" in caplog.text


async def test_stop_speaking_interrupts_a_play(make_link: LinkFactory) -> None:
    link = make_link()
    session = await say_hello(link)
    transport = transport_of(session)
    transport.binary_gate = asyncio.Event()
    first = asyncio.ensure_future(session.playback.play_opus(opus_packets(20)))
    await transport.binary_waiting.wait()
    second = asyncio.ensure_future(session.playback.play_opus(opus_packets(2)))
    await asyncio.sleep(0)
    await session.playback.stop_speaking()
    assert await first is False
    assert await second is False  # queued behind the interrupted reply
    assert transport.kinds()[1:] == ["start", "stop"]
    assert session.playback.downlink.queued == 0

    transport.binary_gate = None
    assert await session.playback.play_opus(opus_packets(1))
    assert transport.kinds()[3:] == ["start", "binary"]


async def test_abort_stops_the_reply_before_the_handler_hears_it(
    make_link: LinkFactory,
) -> None:
    runtime = DeviceRuntime(MAC)
    seen: list[list[str]] = []
    link = make_link(runtime=runtime)

    class AbortHandler(RecordingHandler):
        async def on_abort(self, reason: str | None) -> None:
            seen.append(transport_of(session).kinds())

    runtime.async_set_handler_factory(
        lambda s: AbortHandler(s, Recorder(DeviceRuntime(MAC)))
    )
    session = await say_hello(link)
    await session.playback.start_speaking()
    await session.playback.start_speaking()  # already speaking: no second tts start
    await link.async_handle_message(Abort())
    assert seen == [["hello", "start", "stop"]]
    assert not session.speaking
    await link.async_handle_message(Abort("wake_word_detected"))
    assert transport_of(session).kinds() == ["hello", "start", "stop"]


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


async def test_playback_stops_when_the_socket_breaks(
    make_link: LinkFactory,
) -> None:
    link = make_link()
    session = await say_hello(link)
    await session.playback.start_speaking()
    transport_of(session).error = TransportError("reset by peer")
    assert await session.playback.play_opus(opus_packets(8)) is False
    assert session.closed


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
        await link.call_tool("self.x")

    async def never_awaited() -> None:
        """Closed by create_task, not left un-awaited."""

    with pytest.raises(SessionClosedError):
        session.create_task(never_awaited(), "late")
    await link.async_wait_closed()
    assert transport_of(session).closed_with == (CloseCode.SERVER_CLOSED, "gone")


async def test_session_tasks_end_with_the_session(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    link = make_link()
    session = await say_hello(link)

    async def fail(error: Exception) -> None:
        raise error

    forever = session.create_task(asyncio.Event().wait(), "forever")
    broken = session.create_task(fail(ValueError("bug")), "broken")
    closed = session.create_task(fail(SessionClosedError("gone")), "closed")
    await asyncio.wait({broken, closed})
    assert "Task xiaozhi aa:bb:cc:dd:ee:ff broken of Kitchen failed" in caplog.text
    assert "closed of Kitchen failed" not in caplog.text
    await link.async_close("bye")
    assert forever.cancelled()


async def test_idle_sessions_close_but_never_while_speaking(
    hass: HomeAssistant, make_link: LinkFactory
) -> None:
    link = make_link()
    session = await say_hello(link)

    def check_idle() -> None:
        async_fire_time_changed(
            hass, dt_util.utcnow() + timedelta(seconds=IDLE_CHECK_INTERVAL_S + 1)
        )

    check_idle()
    check_idle()
    link.note_incoming()  # a frame arrived: the count starts over
    check_idle()
    check_idle()
    assert not session.closed
    await session.playback.start_speaking()
    for _ in range(5):
        check_idle()
    assert not session.closed
    await session.playback.stop_speaking()
    check_idle()
    check_idle()
    assert not session.closed
    check_idle()
    assert link.end_reason is EndReason.IDLE_TIMEOUT


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
        await link.call_tool("self.a", reply_timeout=0.01)


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


async def test_stop_while_the_producer_is_between_packets(
    make_link: LinkFactory,
) -> None:
    link = make_link()
    session = await say_hello(link)
    packets = opus_packets(2)
    next_sentence = asyncio.Event()

    async def streaming_tts() -> AsyncGenerator[bytes]:
        yield packets[0]
        await next_sentence.wait()
        yield packets[1]

    play = asyncio.ensure_future(session.playback.play_opus(streaming_tts()))
    while session.playback.downlink.stats.frames_sent < 1:
        await asyncio.sleep(0)
    await session.playback.stop_speaking()
    next_sentence.set()
    assert await play is False
    assert transport_of(session).kinds()[1:] == ["start", "binary", "stop"]


def test_a_replaced_session_leaving_does_not_detach_its_successor() -> None:
    runtime = DeviceRuntime(MAC)
    old, new = object(), object()
    runtime.async_attach(old)  # type: ignore[arg-type]
    runtime.async_attach(new)  # type: ignore[arg-type]
    runtime.async_detach(old)  # type: ignore[arg-type]
    assert runtime.link is new


async def test_a_failing_handler_factory_falls_back_to_logging(
    make_link: LinkFactory, caplog: pytest.LogCaptureFixture
) -> None:
    runtime = DeviceRuntime(MAC)

    def broken_factory(session: DeviceSession) -> RecordingHandler:
        raise RuntimeError("no pipeline")

    runtime.async_set_handler_factory(broken_factory)
    link = make_link(runtime=runtime)
    session = await say_hello(link)
    assert isinstance(session.handler, LoggingHandler)
    assert session.ready
    assert "Cannot create the voice handler of Kitchen" in caplog.text


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
    hello = transport.messages[0]
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


async def test_an_unusable_hello_on_a_lasting_link_is_only_bad_input(
    lasting_link: DeviceLink,
) -> None:
    link = lasting_link
    await link.async_handle_message(Hello(audio_params=AudioParams(format="pcm")))
    assert link.bad_input == {"unusable hello": 1}
    assert link.session is None
    assert not link.closed
    assert lasting_transport(link).messages == []
