"""The MQTT endpoint's life and limits: start, stop, caps, the keep-alive watchdog."""

import asyncio
from collections.abc import Callable
import json
import logging
from pathlib import Path
import socket
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.device.supervisor import SessionClosedError
from custom_components.xiaozhi.protocol.mqtt import encode_remaining_length
from custom_components.xiaozhi.server.limits import ConnectionLimits
from custom_components.xiaozhi.transport.base import EndReason
from custom_components.xiaozhi.transport.mqtt import (
    DATA_MQTT_SETTINGS,
    UDP_RECEIVE_BUFFER,
    MqttSettings,
    MqttTransport,
    _ipv4,
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


def test_settings_that_would_refuse_every_device_are_refused() -> None:
    for bad in ({"max_connections": 0}, {"send_timeout": 0}, {"mqtt_port": 70000}):
        with pytest.raises(ValueError, match="MQTT"):
            MqttSettings(**bad)  # type: ignore[arg-type]


def test_an_ipv4_mapped_address_is_advertised_as_ipv4() -> None:
    assert _ipv4("::ffff:192.168.1.5") == "192.168.1.5"
    assert _ipv4("192.168.1.5") == "192.168.1.5"
    assert _ipv4("fe80::1") == "fe80::1"
    assert _ipv4("not an address") == "not an address"


async def test_a_device_that_stops_reading_is_dropped(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
) -> None:
    entry = await start(ha_core, send_timeout=0.2)
    endpoint = async_get_mqtt(ha_core)
    section = (await check_in(await hass_client_no_auth()))["mqtt"]
    # A client that connects and then never reads.
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((LOCALHOST, endpoint.mqtt_port))
    sock.sendall(connect_bytes(section))
    runtime = runtime_of(entry)
    await wait_until(runtime, lambda: runtime.connected)
    link = runtime.link
    assert link is not None
    ended = link_end(entry)
    with pytest.raises(SessionClosedError):
        await flood(link)
    assert await ended == EndReason.SEND_TIMEOUT
    sock.close()


async def flood(link: Any) -> None:
    """Send big alerts until a send fails (the device reads nothing)."""
    for _ in range(10_000):
        await link.send_alert("x", "y" * 60_000, "neutral")


def connect_bytes(section: dict[str, Any]) -> bytes:
    """A CONNECT as the firmware sends it (clean session, user and password)."""

    def text(value: str) -> bytes:
        raw = value.encode()
        return len(raw).to_bytes(2) + raw

    body = text("MQTT") + bytes([4, 0xC2]) + (240).to_bytes(2)
    body += text(section["client_id"]) + text(section["username"])
    body += text(section["password"])
    return bytes([0x10]) + encode_remaining_length(len(body)) + body


async def test_audio_before_the_device_s_first_datagram_has_nowhere_to_go(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(ha_core)
    device = await online(hass_client_no_auth, mqtt_devices)
    runtime = runtime_of(entry)
    await device.hello()
    await wait_until(runtime, lambda: runtime.session is not None)
    session = runtime.session
    assert session is not None
    link = session.link
    transport = link.transport
    assert isinstance(transport, MqttTransport)
    await session.playback.start_speaking()
    assert await session.playback.play_pcm([bytes(16000)], 16000)
    await session.playback.stop_speaking()
    # The device connect()ed its socket but has said nothing on it yet.
    assert transport.no_address > 0
    assert transport.diagnostics()["device_address_known"] is False
    assert device.udp is not None
    assert device.udp.datagrams.empty()
    # After the session, audio has no channel at all.
    session.end(EndReason.NORMAL, "over")
    await device.next_message("goodbye")
    await transport.send_audio(b"\x01\x02")
    assert transport.diagnostics()["audio_channel"] is False


async def test_a_datagram_flood_is_dropped_not_heard(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entry = await start(
        ha_core, limits=ConnectionLimits(messages_per_second=1, message_burst=200)
    )
    device = await online(hass_client_no_auth, mqtt_devices)
    runtime = runtime_of(entry)
    await device.hello()
    await wait_until(runtime, lambda: runtime.session is not None)
    link = runtime.link
    assert link is not None
    transport = link.transport
    assert isinstance(transport, MqttTransport)
    for _ in range(30):
        device.send_audio(b"\xf8\xff\xfe")
    async with asyncio.timeout(10):
        while transport.last_uplink_sequence < 20 and not transport.dropped:
            await asyncio.sleep(0.005)
    # The burst of 200 takes these; past it, drops (the session stays).
    for _ in range(250):
        device.send_audio(b"\xf8\xff\xfe")
    async with asyncio.timeout(10):
        while not transport.dropped["rate_limited"]:
            await asyncio.sleep(0.005)
    assert not link.closed


async def test_the_udp_socket_queues_a_busy_moment_s_datagrams(
    ha_core: HomeAssistant, socket_enabled: None
) -> None:
    await start(ha_core)
    udp = async_get_mqtt(ha_core).udp
    assert udp._transport is not None
    sock = udp._transport.get_extra_info("socket")
    granted = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
    rmem_max = int(Path("/proc/sys/net/core/rmem_max").read_text())
    # Linux doubles what it grants (for its bookkeeping), up to rmem_max.
    assert granted == 2 * min(UDP_RECEIVE_BUFFER, rmem_max)
