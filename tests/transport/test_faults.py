"""Device-side faults and lifecycle: disconnects at every stage, reload, shutdown.

Devices are simulated over real sockets. A device leaves either cleanly (WebSocket
close handshake) or by dropping the TCP connection without a close frame (Wi-Fi
gone, power cut); at every stage of a session this must end the session quietly,
cancel what it was doing and let the device come back.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import replace
import logging
import socket
from typing import Any

from aiohttp import WSMsgType, web
from aiohttp.test_utils import TestClient
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import CoreState, HomeAssistant

from custom_components.xiaozhi.const import WEBSOCKET_PATH
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.protocol.messages import ListenMode
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.transport.base import EndReason
from custom_components.xiaozhi.transport.websocket import (
    DATA_WEBSOCKET_LIMITS,
    CloseCode,
)
from simulator.device import SimTool, SimulatedDevice
from tests.helpers.devices import (
    MAC,
    TOKEN,
    DeviceFactory,
    Recorder,
    assert_link_gone,
    assert_session_gone,
    make_device_entry,
    runtime_of,
    session_tasks,
    tone,
    until_disconnected,
    wait_until,
)

TOOLS = [SimTool("self.get_device_status", "Status"), SimTool("self.reboot")]

type Leave = Callable[[SimulatedDevice], Awaitable[None]]


async def close_cleanly(device: SimulatedDevice) -> None:
    await device.close()


async def drop_connection(device: SimulatedDevice) -> None:
    """Cut the TCP connection under the WebSocket: no close frame is sent."""
    device.ws.get_extra_info("socket").shutdown(socket.SHUT_RDWR)
    await device.wait_closed()


LEAVES = {"close": close_cleanly, "drop": drop_connection}


def errors(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Error records, and tracebacks of ours at any level.

    (asyncio logs a write to a dropped peer with its traceback at debug level.)
    """
    return [
        record.getMessage()
        for record in caplog.records
        if record.levelno >= logging.ERROR
        or (record.exc_info and record.name.startswith("custom_components.xiaozhi"))
    ]


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.01)


async def wait_for_request(device: SimulatedDevice, method: str) -> dict[str, Any]:
    await until(lambda: any(r["method"] == method for r in device.mcp_requests))
    return next(r for r in device.mcp_requests if r["method"] == method)


async def add_device_entry(hass: HomeAssistant, mac: str, token: str) -> DeviceRuntime:
    entry = make_device_entry(mac, token)
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    return runtime_of(entry)


async def assert_device_is_served(
    devices: DeviceFactory, runtime: DeviceRuntime, **kwargs: Any
) -> SimulatedDevice:
    """A new connection of the device completes hello, MCP discovery and a listen."""
    recorder = Recorder(runtime)
    device = devices(tools=TOOLS, **kwargs)
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == len(TOOLS))
    await device.listen_start()
    assert await recorder.next_event() == ("connected",)
    assert await recorder.next_event() == ("listen_start", ListenMode.AUTO)
    recorder.unregister()
    return device


# ---------------------------------------------------------------- disconnects


STAGES = (
    "before hello",
    "after hello",
    "mid MCP discovery",
    "while audio is sent down",
    "mid listen",
)


@pytest.mark.parametrize("leave", LEAVES.values(), ids=LEAVES.keys())
@pytest.mark.parametrize("stage", STAGES)
async def test_device_leaving_at_any_stage_ends_the_session_quietly(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
    stage: str,
    leave: Leave,
) -> None:
    recorder = Recorder(runtime)
    device = devices(tools=TOOLS)
    play: asyncio.Future[bool] | None = None
    if stage == "before hello":
        await device.connect()
        await wait_until(runtime, lambda: runtime.link is not None)
    elif stage == "mid MCP discovery":
        device.answer_mcp = False
        await device.open()
        initialize = await wait_for_request(device, "initialize")
        await device.mcp_reply(initialize["id"], result={"serverInfo": {}})
        await wait_for_request(device, "tools/list")  # never answered
    else:
        await device.open()
    link = runtime.link
    assert link is not None
    session = runtime.session
    assert (session is None) == (stage == "before hello")
    if stage == "while audio is sent down":
        assert session is not None
        play = asyncio.ensure_future(
            session.playback.play_pcm([tone(300, 24000, 5.0)], 24000)
        )
        await until(lambda: session.playback.downlink.stats.frames_sent >= 3)
        assert session.speaking
    elif stage == "mid listen":
        assert session is not None
        await device.listen_start("manual")
        await device.send_pcm(tone(440, 16000, 0.3))
        await until(lambda: bool(recorder.handlers and recorder.handlers[0].audio))
        assert session.listening

    await leave(device)

    await until_disconnected(ha_core)
    await assert_link_gone(ha_core, link)
    assert link.end_reason is EndReason.NORMAL
    assert not runtime.connected
    if session is not None:
        assert session.closed
        assert not session.listening
        assert not session.speaking
        assert not session.playback.downlink.active
    if play is not None:
        assert await play is False
    events = [event[0] for event in recorder.log]
    assert events[-1:] == ([] if stage == "before hello" else ["disconnected"])
    if stage == "mid MCP discovery":
        assert runtime.tools == ()  # the listing never finished
    assert "Could not list the tools" not in caplog.text
    assert errors(caplog) == []

    await assert_device_is_served(devices, runtime)


async def test_one_device_dropping_leaves_the_others_alone(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    other_mac, other_token = "aa:bb:cc:dd:ee:07", "other-token-0123456789"
    other_runtime = await add_device_entry(ha_core, other_mac, other_token)
    other = await assert_device_is_served(
        devices, other_runtime, mac=other_mac, token=other_token
    )
    device = devices(features={})
    await device.open()
    await drop_connection(device)
    await until_disconnected(ha_core)
    other_session = other_runtime.session
    assert other_session is not None
    assert other_session.ready
    result = await other_session.link.tool_client().call_tool("self.get_device_status")
    assert result.text == "true"
    assert not other.closed


# ---------------------------------------------------------------- entry lifecycle


async def test_reload_closes_sessions_and_the_device_reconnects(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = devices(tools=TOOLS)
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == len(TOOLS))
    session = runtime.session
    assert session is not None
    play = asyncio.ensure_future(
        session.playback.play_pcm([tone(300, 24000, 5.0)], 24000)
    )
    await until(lambda: session.playback.downlink.stats.frames_sent >= 1)

    assert await ha_core.config_entries.async_reload(device_entry.entry_id)

    assert await device.wait_closed() == (
        CloseCode.SERVER_CLOSED,
        "device entry unloaded",
    )
    assert await play is False
    await assert_session_gone(ha_core, session)
    assert device_entry.state is ConfigEntryState.LOADED
    reloaded = runtime_of(device_entry)
    assert reloaded is not runtime
    assert reloaded.session is None
    await assert_device_is_served(devices, reloaded)
    assert reloaded.connected
    assert errors(caplog) == []


async def test_unload_closes_only_that_device_and_setup_lets_it_back(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    others = {
        "aa:bb:cc:dd:ee:11": "token-eleven-0123456789",
        "aa:bb:cc:dd:ee:12": "token-twelve-0123456789",
    }
    other_runtimes = {
        mac: await add_device_entry(ha_core, mac, token)
        for mac, token in others.items()
    }
    other_devices = [
        await assert_device_is_served(
            devices, other_runtimes[mac], mac=mac, token=token
        )
        for mac, token in others.items()
    ]
    device = devices(features={})
    await device.open()
    await device.listen_start()  # mid listen
    session = runtime.session
    assert session is not None

    assert await ha_core.config_entries.async_unload(device_entry.entry_id)
    assert (await device.wait_closed())[0] == CloseCode.SERVER_CLOSED
    await assert_session_gone(ha_core, session)
    assert all(runtime.connected for runtime in other_runtimes.values())
    assert not any(other.closed for other in other_devices)

    # While unloaded it is refused; once set up again it is served.
    refused = devices(features={})
    await refused.connect()
    assert (await refused.wait_closed())[0] == CloseCode.UNAUTHORIZED
    assert await ha_core.config_entries.async_setup(device_entry.entry_id)
    await assert_device_is_served(devices, runtime_of(device_entry))
    assert set(async_get_server(ha_core).links) == {MAC, *others}
    assert errors(caplog) == []


# ---------------------------------------------------------------- shutdown


async def test_shutdown_with_active_sessions_completes_quickly(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    client: TestClient[web.Request, web.Application],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Every device is told 1001; one that never reads is dropped after 0.5 s."""
    server = async_get_server(ha_core)
    ha_core.data[DATA_WEBSOCKET_LIMITS] = replace(
        ha_core.data[DATA_WEBSOCKET_LIMITS], close_timeout=0.5
    )
    macs = {
        f"aa:bb:cc:dd:ee:2{index}": f"token-{index}-0123456789" for index in range(3)
    }
    runtimes = {mac: await add_device_entry(ha_core, mac, t) for mac, t in macs.items()}
    sims = [
        await assert_device_is_served(devices, runtimes[mac], mac=mac, token=token)
        for mac, token in macs.items()
    ]
    speaking = runtimes[next(iter(macs))].session
    assert speaking is not None
    play = asyncio.ensure_future(
        speaking.playback.play_pcm([tone(300, 24000, 5.0)], 24000)
    )
    await until(lambda: speaking.playback.downlink.stats.frames_sent >= 1)
    # A device that stops reading after its hello: it never answers the close.
    deaf = await client.ws_connect(
        WEBSOCKET_PATH,
        headers={
            "Authorization": f"Bearer {TOKEN}",
            "Device-Id": MAC,
            "Protocol-Version": "1",
        },
    )
    await deaf.send_json({"type": "hello"})
    assert (await deaf.receive_json(timeout=10))["type"] == "hello"
    sessions = [r.session for r in (runtime, *runtimes.values())]

    async with asyncio.timeout(30):
        await ha_core.async_stop()

    assert ha_core.state is CoreState.stopped
    for sim in sims:
        assert await sim.wait_closed() == (
            CloseCode.SERVER_SHUTDOWN,
            "Home Assistant is stopping",
        )
    assert await play is False
    for session in sessions:
        assert session is not None
        assert session.link.end_reason is EndReason.SERVER_SHUTDOWN
    assert not server.links
    assert session_tasks() == []
    close = await deaf.receive(timeout=10)
    assert (close.type, close.data) == (WSMsgType.CLOSE, CloseCode.SERVER_SHUTDOWN)
    assert errors(caplog) == []
