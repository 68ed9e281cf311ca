"""The simulator on MQTT+UDP against the real endpoint: idle MCP, a conversation."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.protocol.messages import ListenMode
from custom_components.xiaozhi.protocol.udp import HEADER
from custom_components.xiaozhi.transport.mqtt import MqttTransport
from simulator.device import SimTool
from simulator.mqtt_device import MqttRefusedError, MqttSimulatedDevice
from tests.helpers.devices import Recorder, dominant_hz, runtime_of, tone, wait_until
from tests.helpers.mqtt import check_in


async def test_the_simulator_stays_connected_and_talks_over_udp(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
) -> None:
    runtime = runtime_of(mqtt_entry)
    section = (await check_in(await hass_client_no_auth()))["mqtt"]
    device = MqttSimulatedDevice(
        section,
        tools=[
            SimTool("self.get_device_status", "Status", callback=lambda _: {"ok": 1})
        ],
    )
    try:
        await device.connect()
        # Idle: the link lists the tools and calls one, no hello needed.
        await wait_until(runtime, lambda: bool(runtime.tools))
        assert idle(runtime)
        link = runtime.link
        assert link is not None
        result = await link.tool_client().call_tool("self.get_device_status", {})
        assert result.text == '{"ok":1}'
        assert device.tool_calls == [("self.get_device_status", {})]

        recorder = Recorder(runtime)
        hello = await device.hello()
        assert hello["transport"] == "udp"
        assert device.channel_open
        assert await recorder.next_event() == ("connected",)
        await device.listen_start("manual")
        assert await recorder.next_event() == ("listen_start", ListenMode.MANUAL)
        # Its first datagram tells the server where to send the reply's audio.
        await device.send_pcm(tone(440, 16000, 0.3))
        transport = link.transport
        assert isinstance(transport, MqttTransport)
        await until(lambda: transport.last_uplink_sequence > 0)
        session = live(runtime)
        await session.playback.start_speaking()
        assert await session.playback.play_pcm([tone(500, 16000, 0.5)], 16000)
        await session.playback.stop_speaking()
        await wait_until(runtime, lambda: not session.speaking)
        await device.next_message("tts")
        pcm = device.received_pcm()
        assert abs(dominant_hz(pcm, 24000) - 500) < 15
        assert device.bad_datagrams == 0
        assert device.channel_open

        await device.goodbye()
        await wait_until(runtime, lambda: runtime.session is None)
        assert device.session_id == ""
        assert runtime.connected
    finally:
        await device.close()
    await wait_until(runtime, lambda: runtime.link is None)


def idle(runtime: DeviceRuntime) -> bool:
    return runtime.session is None


def live(runtime: DeviceRuntime) -> DeviceSession:
    session = runtime.session
    assert session is not None
    return session


async def until(predicate: Callable[[], bool]) -> None:
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.005)


async def test_the_simulator_is_told_its_password_is_wrong(
    mqtt_entry: MockConfigEntry, hass_client_no_auth: Callable[[], Any]
) -> None:
    section = (await check_in(await hass_client_no_auth()))["mqtt"]
    device = MqttSimulatedDevice({**section, "password": "nope"})
    with pytest.raises(MqttRefusedError, match="Bad user name or password"):
        await device.connect()
    assert device.closed


async def test_the_simulator_refuses_datagrams_as_the_firmware_does(
    socket_enabled: None,
) -> None:
    section = {
        "endpoint": "127.0.0.1:1",
        "client_id": "xiaozhi-aabbccddeeff",
        "username": "aa:bb:cc:dd:ee:ff",
        "password": "x",
        "publish_topic": "up",
    }
    device = MqttSimulatedDevice(section)
    await device._on_server_hello(
        {"type": "hello", "transport": "websocket", "session_id": "s"}
    )
    await device._on_server_hello({"type": "hello", "transport": "udp", "udp": "x"})
    await device._on_server_hello(
        {"type": "hello", "transport": "udp", "udp": {"key": "zz", "nonce": "00"}}
    )
    await device._on_server_hello(
        {
            "type": "hello",
            "transport": "udp",
            "udp": {"server": "127.0.0.1", "port": 9, "key": "00", "nonce": "00"},
        }
    )
    assert device.server_hello is None
    refused_all = not device.channel_open
    await device._on_server_hello(
        {
            "type": "hello",
            "transport": "udp",
            "session_id": "s",
            "udp": {
                "server": "127.0.0.1",
                "port": 9,
                "key": "00" * 16,
                "nonce": "01" + "00" * 15,
            },
        }
    )
    assert refused_all
    assert device.channel_open
    header = HEADER.pack(0x01, 0, 3, 7, 0, 5)
    device.datagram_received(b"short")
    device.datagram_received(b"\x02" + header[1:] + b"abc")  # not audio
    device.datagram_received(header + b"abcd")  # the length lies
    device.speaking = True
    device.datagram_received(header + b"abc")  # accepted
    device.datagram_received(header + b"abc")  # the same sequence again
    assert device.bad_datagrams == 4
    assert len(device.received_audio) == 1
    await device.close()
