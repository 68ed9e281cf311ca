"""The MQTT+UDP transport, with paho-mqtt as the device and real UDP sockets."""

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY
from homeassistant.const import CONF_CODE
from homeassistant.core import HomeAssistant
from homeassistant.data_entry_flow import FlowResultType
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import CONF_MQTT_PASSWORD_HASHES, DOMAIN
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.session import DeviceSession
from custom_components.xiaozhi.protocol.codec import OpusDecoder, OpusEncoder
from custom_components.xiaozhi.protocol.messages import ListenMode
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.transport.mqtt import (
    DATA_MQTT_SETTINGS,
    MqttEndpoint,
    MqttSettings,
    MqttTransport,
)
from simulator.device import DEFAULT_CLIENT_ID
from tests.helpers.devices import (
    MAC,
    Recorder,
    dominant_hz,
    runtime_of,
    session_tasks,
    tone,
    wait_until,
)
from tests.helpers.mqtt import MqttDevice, check_in

# How paho names CONNACK 4 of MQTT 3.1.1.
BAD_CREDENTIALS = "Bad user name or password"


async def answer_mcp(device: MqttDevice, tools: list[dict[str, Any]]) -> None:
    """Answer initialize and tools/list as the firmware's McpServer does."""
    initialize = await device.next_message("mcp")
    assert initialize["payload"]["method"] == "initialize"
    device.publish(
        {
            "session_id": "",
            "type": "mcp",
            "payload": {
                "jsonrpc": "2.0",
                "id": initialize["payload"]["id"],
                "result": {
                    "protocolVersion": "2024-11-05",
                    "capabilities": {"tools": {}},
                    "serverInfo": {"name": "bread-compact-wifi", "version": "2.0.0"},
                },
            },
        }
    )
    while True:
        listing = await device.next_message("mcp")
        if listing["payload"].get("method") == "tools/list":
            break
    device.publish(
        {
            "session_id": "",
            "type": "mcp",
            "payload": {
                "jsonrpc": "2.0",
                "id": listing["payload"]["id"],
                "result": {"tools": tools},
            },
        }
    )


TOOLS = [
    {
        "name": "self.audio_speaker.set_volume",
        "description": "Set the volume",
        "inputSchema": {
            "type": "object",
            "properties": {"volume": {"type": "integer"}},
            "required": ["volume"],
        },
    }
]


async def connected_device(
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    runtime: DeviceRuntime,
) -> MqttDevice:
    client = await hass_client_no_auth()
    answer = await check_in(client)
    device = MqttDevice(answer["mqtt"])
    mqtt_devices.append(device)
    assert (await device.connect()).value == 0
    await answer_mcp(device, TOOLS)
    await wait_until(runtime, lambda: bool(runtime.tools))
    return device


async def test_ota_connect_mcp_hello_audio_goodbye_idle(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    mqtt_endpoint: MqttEndpoint,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    runtime = runtime_of(mqtt_entry)
    client = await hass_client_no_auth()
    answer = await check_in(client)
    section = answer["mqtt"]
    host = client.make_url("/").host
    assert section["endpoint"] == f"{host}:{mqtt_endpoint.mqtt_port}"
    assert section["client_id"] == "xiaozhi-aabbccddeeff"
    assert section["username"] == MAC
    assert section["keepalive"] == 240
    assert section["publish_topic"]
    assert len(section["password"]) >= 32
    assert "websocket" in answer  # the fallback the firmware stores too
    # Only a digest of the password is kept.
    stored = mqtt_entry.data[CONF_MQTT_PASSWORD_HASHES]
    assert section["password"] not in str(mqtt_entry.data)
    assert len(stored) == 1

    device = MqttDevice(section)
    mqtt_devices.append(device)
    assert (await device.connect()).value == 0
    # MCP while idle: no hello, the link is up and lists the tools.
    await answer_mcp(device, TOOLS)
    await wait_until(runtime, lambda: bool(runtime.tools))
    assert runtime.connected
    assert runtime.session is None
    assert [tool.name for tool in runtime.tools] == ["self.audio_speaker.set_volume"]
    link = runtime.link
    assert link is not None
    assert isinstance(link.transport, MqttTransport)

    # A voice session: hello, audio both ways.
    recorder = Recorder(runtime)
    hello = await device.hello()
    assert hello["transport"] == "udp"
    assert hello["audio_params"]["sample_rate"] == 24000
    udp = hello["udp"]
    assert (udp["server"], udp["port"]) == ("127.0.0.1", mqtt_endpoint.udp.port)
    assert len(udp["key"]) == len(udp["nonce"]) == 32
    assert await recorder.next_event() == ("connected",)
    session = live_session(runtime)
    assert session.session_id == hello["session_id"]

    device.publish(
        {
            "session_id": device.session_id,
            "type": "listen",
            "state": "start",
            "mode": "auto",
        }
    )
    assert await recorder.next_event() == ("listen_start", ListenMode.AUTO)
    encoder = OpusEncoder(16000, 60)
    sent = encoder.encode(tone(440, 16000, 1.0))
    for packet in sent:
        device.send_audio(packet)
    # UDP and MQTT race each other: the stop waits for the audio to be in.
    await until(lambda: channel_sequence(runtime) == len(sent))
    device.publish({"session_id": device.session_id, "type": "listen", "state": "stop"})
    event = await recorder.next_event()
    assert event[0] == "listen_stop"
    audio = bytes(recorder.handlers[0].audio)
    assert len(audio) > 16000 * 2 * 0.8
    assert abs(dominant_hz(audio, 16000) - 440) < 10

    await session.playback.start_speaking()
    assert await session.playback.play_pcm([tone(660, 16000, 0.6)], 16000)
    await session.playback.stop_speaking()
    decoder = OpusDecoder(24000)
    pcm = bytearray()
    while len(pcm) < 24000 * 2 * 0.5:
        pcm += decoder.decode(await device.next_audio())
    assert abs(dominant_hz(bytes(pcm), 24000) - 660) < 15
    assert (await device.next_message("tts"))["state"] == "start"

    # The server's goodbye ends the session; the link stays, idle.
    session.end(session.end_reason or _normal(), "the conversation is over")
    goodbye = await device.next_message("goodbye")
    assert goodbye["session_id"] == hello["session_id"]
    assert runtime.session is None
    assert runtime.connected
    assert mqtt_endpoint.udp.sessions == 0
    # The next conversation, ended by the device this time.
    second = await device.hello()
    assert second["session_id"] != hello["session_id"]
    assert second["udp"]["key"] != udp["key"]
    await wait_until(runtime, lambda: runtime.session is not None)
    device.goodbye()
    await wait_until(runtime, lambda: runtime.session is None)
    assert runtime.connected
    assert link is runtime.link

    # Gone: the link ends, nothing is left behind.
    await device.close()
    await wait_until(runtime, lambda: runtime.link is None)
    await link.async_wait_closed()
    assert async_get_server(ha_core).links == {}
    for _ in range(50):
        if mqtt_endpoint.connections == 0 and not session_tasks():
            break
        await asyncio.sleep(0.01)
    assert mqtt_endpoint.connections == 0
    assert session_tasks() == []


async def until(predicate: Callable[[], bool]) -> None:
    """Wait until ``predicate`` holds (datagrams arrive one per loop turn)."""
    async with asyncio.timeout(10):
        while not predicate():
            await asyncio.sleep(0.005)


def channel_sequence(runtime: DeviceRuntime) -> int:
    """The last uplink sequence the session's channel accepted."""
    link = runtime.link
    assert link is not None
    transport = link.transport
    assert isinstance(transport, MqttTransport)
    return transport.last_uplink_sequence


def live_session(runtime: DeviceRuntime) -> DeviceSession:
    session = runtime.session
    assert session is not None
    return session


def _normal() -> Any:
    from custom_components.xiaozhi.transport.base import EndReason

    return EndReason.NORMAL


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"password": "wrong-password-0123456789abcdef"}, BAD_CREDENTIALS),
        ({"username": "11:22:33:44:55:66"}, BAD_CREDENTIALS),
        ({"username": "not a mac"}, BAD_CREDENTIALS),
        ({"password": ""}, BAD_CREDENTIALS),
    ],
)
async def test_wrong_credentials_are_refused(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    change: dict[str, str],
    code: str,
) -> None:
    answer = await check_in(await hass_client_no_auth())
    device = MqttDevice({**answer["mqtt"], **change})
    mqtt_devices.append(device)
    assert str(await device.connect()) == code
    assert runtime_of(mqtt_entry).link is None


async def test_another_client_id_is_refused(
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    answer = await check_in(await hass_client_no_auth())
    device = MqttDevice(answer["mqtt"], client_id="xiaozhi-112233445566")
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Client identifier not valid"
    assert runtime_of(mqtt_entry).link is None


async def test_the_previous_password_works_until_the_new_one_is_used(
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    client = await hass_client_no_auth()
    first = (await check_in(client))["mqtt"]
    second = (await check_in(client))["mqtt"]
    assert first["password"] != second["password"]
    old = MqttDevice(first)
    mqtt_devices.append(old)
    assert (await old.connect()).value == 0  # the second answer may have been lost
    new = MqttDevice(second)
    mqtt_devices.append(new)
    assert (await new.connect()).value == 0  # the newest connection wins
    await old.disconnected.wait()
    assert len(mqtt_entry.data[CONF_MQTT_PASSWORD_HASHES]) == 1
    late = MqttDevice(first)
    mqtt_devices.append(late)
    assert str(await late.connect()) == BAD_CREDENTIALS


# ---------------------------------------------------------------- bad datagrams


async def test_bad_datagrams_are_dropped_and_the_session_goes_on(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    mqtt_endpoint: MqttEndpoint,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    runtime = runtime_of(mqtt_entry)
    device = await connected_device(hass_client_no_auth, mqtt_devices, runtime)
    recorder = Recorder(runtime)
    await device.hello()
    assert await recorder.next_event() == ("connected",)
    link = runtime.link
    assert link is not None
    transport = link.transport
    assert isinstance(transport, MqttTransport)
    device.publish(
        {"session_id": device.session_id, "type": "listen", "state": "start"}
    )
    assert (await recorder.next_event())[0] == "listen_start"
    packets = OpusEncoder(16000, 60).encode(tone(440, 16000, 0.6))

    good = device.seal(packets[0], sequence=5)
    device.send_datagram(good)
    device.send_datagram(good)  # replayed
    device.send_datagram(device.seal(packets[1], sequence=3))  # reordered
    device.send_datagram(good[:10])  # truncated inside the header
    device.send_datagram(good[:-3])  # truncated payload: the length lies
    device.send_datagram(device.seal(b"\x00" * 1600, sequence=6))  # oversized
    foreign_key = bytes(16)
    header = good[:16]
    from custom_components.xiaozhi.protocol.udp import aes_ctr

    wrong = bytearray(device.seal(packets[2], sequence=7))
    wrong[16:] = aes_ctr(foreign_key, header, packets[2])
    device.send_datagram(bytes(wrong))  # another key: noise for the decoder
    other = bytearray(good)
    other[4:8] = b"\x00\x00\x00\x01"  # no session has this ssrc
    device.send_datagram(bytes(other))
    # From another address than the device's MQTT connection.
    loop = asyncio.get_running_loop()
    stranger, _ = await loop.create_datagram_endpoint(
        asyncio.DatagramProtocol,
        local_addr=("127.0.0.2", 0),
        remote_addr=("127.0.0.1", mqtt_endpoint.udp.port),
    )
    stranger.sendto(device.seal(packets[3], sequence=100))
    stranger.close()
    # Then the device goes on: its next datagrams are heard.
    device.sequence = 7
    for packet in packets[3:]:
        device.send_audio(packet)
    await until(lambda: channel_sequence(runtime) == device.sequence)
    await until(lambda: transport.dropped["foreign_address"] == 1)
    device.publish({"session_id": device.session_id, "type": "listen", "state": "stop"})
    assert (await recorder.next_event())[0] == "listen_stop"
    heard = bytes(recorder.handlers[0].audio)
    # The good packets were heard (the one under another key decodes to noise
    # or is refused by the decoder, as its random bytes happen to be).
    assert len(heard) >= len(packets[3:]) * 960 * 2
    assert abs(dominant_hz(heard, 16000) - 440) < 10
    assert transport.dropped == {
        "replayed": 2,
        "too_long": 1,
        "length_mismatch": 1,
        "foreign_address": 1,
    }
    assert mqtt_endpoint.udp.dropped == {"too_short": 1, "no_session": 1}
    # A downlink packet the device could not take is not sent.
    sent_before = transport.diagnostics()
    await transport.send_audio(bytes(1600))
    assert transport.diagnostics() == sent_before
    assert device.udp is not None
    assert device.udp.datagrams.empty()
    assert runtime.session is not None
    assert not runtime.session.closed


async def test_a_device_that_came_over_ipv6_keeps_websocket(
    mqtt_entry: MockConfigEntry, hass_client_no_auth: Callable[[], Any]
) -> None:
    client = await hass_client_no_auth()
    response = await client.post(
        "/xiaozhi/ota/",
        headers={
            "Device-Id": MAC,
            "Client-Id": DEFAULT_CLIENT_ID,
            "Host": "[fd00::5]:8123",
        },
        json={},
    )
    answer = await response.json()
    assert "mqtt" not in answer
    assert "websocket" in answer


async def test_a_device_paired_by_its_code_is_handed_mqtt_and_connects(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    ha_core.data[DATA_MQTT_SETTINGS] = MqttSettings(
        host="127.0.0.1", mqtt_port=0, udp_port=0
    )
    assert await async_setup_component(ha_core, DOMAIN, {})
    client = await hass_client_no_auth()
    first = await check_in(client)
    assert "mqtt" not in first  # not paired: a code to speak
    code = first["activation"]["code"]
    await ha_core.async_block_till_done()
    [flow] = [
        flow
        for flow in ha_core.config_entries.flow.async_progress_by_handler(DOMAIN)
        if flow["context"]["source"] == SOURCE_INTEGRATION_DISCOVERY
    ]
    result = await ha_core.config_entries.flow.async_configure(
        flow["flow_id"], {CONF_CODE: code}
    )
    assert result["type"] is FlowResultType.CREATE_ENTRY
    await ha_core.async_block_till_done()
    # The firmware checks in again once activated: now it is told MQTT.
    answer = await check_in(client)
    device = MqttDevice(answer["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Success"
    entry = ha_core.config_entries.async_entry_for_domain_unique_id(DOMAIN, MAC)
    assert entry is not None
    runtime = runtime_of(entry)
    await wait_until(runtime, lambda: runtime.connected)
    assert (await device.next_message("mcp"))["payload"]["method"] == "initialize"
