"""A voice session: its handler, listening, tasks and idle timeout."""

import asyncio
from datetime import timedelta
import logging

import pytest
from pytest_homeassistant_custom_component.common import async_fire_time_changed

from homeassistant.core import HomeAssistant
from homeassistant.util import dt as dt_util

from custom_components.xiaozhi.device.handler import LoggingHandler
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import (
    IDLE_CHECK_INTERVAL_S,
    DeviceSession,
)
from custom_components.xiaozhi.device.supervisor import SessionClosedError
from custom_components.xiaozhi.protocol.messages import (
    Abort,
    Listen,
    ListenMode,
    ListenState,
    Unknown,
)
from custom_components.xiaozhi.transport.base import EndReason
from tests.helpers.devices import MAC, Recorder, RecordingHandler
from tests.helpers.links import LinkFactory, opus_packets, say_hello, transport_of


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
