"""The MQTT endpoint's life and limits: start, stop, caps, the keep-alive watchdog."""

import asyncio
from collections.abc import Callable
import json
import logging
import socket
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.server.limits import ConnectionLimits
from custom_components.xiaozhi.transport.base import EndReason
from custom_components.xiaozhi.transport.mqtt import (
    DATA_MQTT_SETTINGS,
    MqttSettings,
    async_get_mqtt,
)
from tests.helpers.devices import (
    make_device_entry,
    runtime_of,
    session_tasks,
    wait_until,
)
from tests.helpers.mqtt import LOCALHOST, MqttDevice, check_in

OTHER_MAC = "aa:bb:cc:dd:ee:01"


async def start(ha_core: HomeAssistant, **settings: Any) -> MockConfigEntry:
    ha_core.data[DATA_MQTT_SETTINGS] = MqttSettings(
        **{"host": LOCALHOST, "mqtt_port": 0, "udp_port": 0, **settings}
    )
    entry = make_device_entry()
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    return entry


async def online(
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    mac: str | None = None,
    keepalive: int | None = None,
) -> MqttDevice:
    client = await hass_client_no_auth()
    answer = await (check_in(client) if mac is None else check_in(client, mac=mac))
    device = MqttDevice(answer["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect(keepalive)) == "Success"
    return device


def link_end(entry: MockConfigEntry) -> asyncio.Future[EndReason]:
    """Resolves with the reason the device's current link ends with."""
    runtime = runtime_of(entry)
    link = runtime.link
    assert link is not None
    future: asyncio.Future[EndReason] = asyncio.get_running_loop().create_future()

    async def wait() -> None:
        await link.async_wait_closed()
        assert link.end_reason is not None
        future.set_result(link.end_reason)

    task = asyncio.get_running_loop().create_task(wait())
    future.add_done_callback(lambda _: task.cancel())
    return future


async def test_the_last_unload_stops_the_endpoint_leaving_nothing(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = await start(ha_core)
    endpoint = async_get_mqtt(ha_core)
    port, udp_port = endpoint.mqtt_port, endpoint.udp.port
    device = await online(hass_client_no_auth, mqtt_devices)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)
    await device.hello()  # in a conversation: its UDP channel is open
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).session is not None)
    ended = link_end(entry)
    assert await ha_core.config_entries.async_unload(entry.entry_id)
    assert await ended == EndReason.SERVER_CLOSED
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == []
    await device.disconnected.wait()
    assert not endpoint.running
    assert endpoint.connections == 0
    assert session_tasks() == []
    # Both ports are free again.
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        probe = socket.socket(socket.AF_INET, kind)
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((LOCALHOST, port if kind == socket.SOCK_STREAM else udp_port))
        probe.close()
    # A paired device is told WebSocket only while the endpoint is down.
    answer = await check_in(await hass_client_no_auth())
    assert "mqtt" not in answer
    assert "websocket" in answer
    # Loading again starts it again.
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    assert endpoint.running


async def test_home_assistant_stopping_closes_every_connection(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(ha_core)
    device = await online(hass_client_no_auth, mqtt_devices)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)
    ended = link_end(entry)
    ha_core.bus.async_fire(EVENT_HOMEASSISTANT_STOP)
    assert await ended == EndReason.SERVER_SHUTDOWN
    await device.disconnected.wait()
    endpoint = async_get_mqtt(ha_core)
    await ha_core.async_block_till_done()
    assert not endpoint.running


async def test_a_port_in_use_leaves_devices_on_websocket(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    caplog: pytest.LogCaptureFixture,
) -> None:
    busy = socket.socket()
    busy.bind((LOCALHOST, 0))
    busy.listen()
    try:
        await start(ha_core, mqtt_port=busy.getsockname()[1])
    finally:
        busy.close()
    assert not async_get_mqtt(ha_core).running
    assert "Cannot serve devices over MQTT" in caplog.text
    answer = await check_in(await hass_client_no_auth())
    assert "mqtt" not in answer


async def test_a_silent_device_is_dropped_after_one_and_a_half_keepalives(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(ha_core)
    device = await online(hass_client_no_auth, mqtt_devices, keepalive=1)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)
    ended = link_end(entry)
    # The device stops talking (its network thread stops, the socket stays).
    await asyncio.get_running_loop().run_in_executor(None, device.client.loop_stop)
    assert await ended == EndReason.IDLE_TIMEOUT


async def test_too_many_connections_are_closed_at_once(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(ha_core, max_connections=2)
    endpoint = async_get_mqtt(ha_core)
    idle = [
        await asyncio.open_connection(LOCALHOST, endpoint.mqtt_port) for _ in range(2)
    ]
    reader, writer = await asyncio.open_connection(LOCALHOST, endpoint.mqtt_port)
    assert await reader.read() == b""  # closed without a word
    writer.close()
    for _, idle_writer in idle:
        idle_writer.close()
    await asyncio.gather(*(w.wait_closed() for _, w in idle))
    # Once they are gone the device gets in.
    for idle_reader, _ in idle:
        await idle_reader.read()
    await online(hass_client_no_auth, mqtt_devices)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)


async def test_a_connection_without_connect_is_closed(
    ha_core: HomeAssistant, socket_enabled: None
) -> None:
    await start(ha_core, connect_timeout=0.1)
    endpoint = async_get_mqtt(ha_core)
    reader, writer = await asyncio.open_connection(LOCALHOST, endpoint.mqtt_port)
    async with asyncio.timeout(10):
        assert await reader.read() == b""
    writer.close()


async def test_an_oversized_packet_closes_the_connection(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(ha_core, max_packet_size=1024)
    device = await online(hass_client_no_auth, mqtt_devices)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)
    ended = link_end(entry)
    device.publish({"type": "mcp", "payload": {"junk": "x" * 2000}})
    assert await ended == EndReason.MESSAGE_TOO_BIG


async def test_a_flood_of_packets_closes_the_connection(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    limits = ConnectionLimits(messages_per_second=1, message_burst=5)
    entry = await start(ha_core, limits=limits)
    device = await online(hass_client_no_auth, mqtt_devices)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)
    ended = link_end(entry)
    for _ in range(20):
        device.publish({"type": "iot", "descriptors": []})
    assert await ended == EndReason.RATE_LIMITED


async def test_one_device_too_many_is_told_the_server_is_unavailable(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(ha_core, limits=ConnectionLimits(max_sessions=1))
    async_get_server_limits(ha_core, ConnectionLimits(max_sessions=1))
    other = make_device_entry(mac=OTHER_MAC)
    other.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(other.entry_id)
    await online(hass_client_no_auth, mqtt_devices)
    await wait_until(runtime_of(entry), lambda: runtime_of(entry).connected)
    answer = await check_in(await hass_client_no_auth(), mac=OTHER_MAC)
    device = MqttDevice(answer["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Server unavailable"


def async_get_server_limits(hass: HomeAssistant, limits: ConnectionLimits) -> None:
    from custom_components.xiaozhi.server.registry import async_get_server

    async_get_server(hass).limits = limits


async def test_bad_json_and_old_firmware_subscriptions_keep_the_link(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    entry = await start(ha_core)
    device = await online(hass_client_no_auth, mqtt_devices)
    runtime = runtime_of(entry)
    await wait_until(runtime, lambda: runtime.connected)
    loop = asyncio.get_running_loop()
    subscribed: asyncio.Future[bool] = loop.create_future()

    def on_subscribe(*args: Any) -> None:
        loop.call_soon_threadsafe(subscribed.set_result, True)

    device.client.on_subscribe = on_subscribe
    device.client.subscribe(device.section["subscribe_topic"], qos=2)
    assert await subscribed
    caplog.set_level(logging.WARNING)
    device.client.publish(device.section["publish_topic"], b"{not json")
    device.client.publish(device.section["publish_topic"], json.dumps([1, 2]))
    # A ping round trip later both were handled, and the link is still there.
    initialize = await device.next_message("mcp")
    assert initialize["payload"]["method"] == "initialize"
    link = runtime.link
    assert link is not None
    await until_bad_input(link, "malformed message", 2)
    assert not link.closed


async def until_bad_input(link: Any, kind: str, count: int) -> None:
    async with asyncio.timeout(10):
        while link.bad_input.get(kind, 0) < count:
            await asyncio.sleep(0.005)
