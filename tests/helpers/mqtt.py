"""The MQTT+UDP endpoint on free local ports, and a device speaking to it.

The device is paho-mqtt (the client library HA's own MQTT integration uses) in
its network thread, plus a real UDP socket ``connect()``ed to the address the
server hello names, as the firmware's is (main/protocols/mqtt_protocol.cc): it
only takes datagrams from exactly that address and port. Its datagrams are
built the firmware's way (the nonce with length, timestamp and sequence written
over it, AES-128-CTR with the header as the counter block).
"""

import asyncio
from collections.abc import AsyncGenerator
import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode
import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.const import OTA_PATH
from custom_components.xiaozhi.protocol.udp import HEADER, HEADER_SIZE, aes_ctr
from custom_components.xiaozhi.transport.mqtt import (
    DATA_MQTT_SETTINGS,
    MqttEndpoint,
    MqttSettings,
    async_get_mqtt,
)
from simulator.device import DEFAULT_CLIENT_ID
from tests.helpers.devices import MAC, make_device_entry

LOCALHOST = "127.0.0.1"


@pytest.fixture
async def mqtt_entry(ha_core: HomeAssistant, socket_enabled: None) -> MockConfigEntry:
    """A paired device entry, loaded; the endpoint listens on free loopback ports."""
    ha_core.data[DATA_MQTT_SETTINGS] = MqttSettings(
        host=LOCALHOST, mqtt_port=0, udp_port=0
    )
    entry = make_device_entry()
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    return entry


@pytest.fixture
def mqtt_endpoint(ha_core: HomeAssistant, mqtt_entry: MockConfigEntry) -> MqttEndpoint:
    """The running endpoint."""
    endpoint = async_get_mqtt(ha_core)
    assert endpoint.running
    return endpoint


async def check_in(
    client: TestClient[web.Request, web.Application],
    mac: str = MAC,
    client_id: str = DEFAULT_CLIENT_ID,
) -> dict[str, Any]:
    """The device's OTA check-in; returns the answer."""
    response = await client.post(
        OTA_PATH,
        headers={"Device-Id": mac, "Client-Id": client_id},
        json={"application": {"version": "2.0.0"}},
    )
    assert response.status == 200
    answer: dict[str, Any] = await response.json()
    return answer


class DeviceUdp(asyncio.DatagramProtocol):
    """The device's UDP socket: it keeps what arrives."""

    def __init__(self) -> None:
        self.datagrams: asyncio.Queue[bytes] = asyncio.Queue()
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.datagrams.put_nowait(data)


class MqttDevice:
    """A device on the MQTT+UDP transport, configured by its OTA answer's ``mqtt``."""

    def __init__(
        self, section: dict[str, Any], *, client_id: str | None = None
    ) -> None:
        self.section = section
        host, _, port = section["endpoint"].partition(":")
        self.host, self.port = host, int(port)
        self.loop = asyncio.get_running_loop()
        self.messages: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.received: list[dict[str, Any]] = []
        self.connack: asyncio.Future[ReasonCode] = self.loop.create_future()
        self.disconnected = asyncio.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=client_id or section["client_id"],
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        self.client.username_pw_set(section["username"], section["password"])
        self.client.on_connect = self._on_connect
        self.client.on_message = self._on_message
        self.client.on_disconnect = self._on_disconnect
        self.udp: DeviceUdp | None = None
        self.key = b""
        self.nonce = b""
        self.session_id = ""
        self.sequence = 0
        self.remote_sequence = 0

    # ------------------------------------------------------------ paho's thread

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.loop.call_soon_threadsafe(self._set_connack, reason)
        if reason.is_failure:
            client.disconnect()  # no retry: paho's loop would reconnect

    def _set_connack(self, reason: ReasonCode) -> None:
        if not self.connack.done():
            self.connack.set_result(reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        payload = json.loads(message.payload)
        self.loop.call_soon_threadsafe(self._got_message, payload)

    def _got_message(self, payload: dict[str, Any]) -> None:
        self.received.append(payload)
        self.messages.put_nowait(payload)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self.loop.call_soon_threadsafe(self.disconnected.set)

    # ------------------------------------------------------------ MQTT

    async def connect(self, keepalive: int | None = None) -> ReasonCode:
        """Connect; returns the CONNACK's reason."""
        self.client.connect_async(
            self.host, self.port, keepalive or int(self.section["keepalive"])
        )
        self.client.loop_start()
        async with asyncio.timeout(10):
            return await self.connack

    def publish(self, message: dict[str, Any]) -> None:
        self.client.publish(self.section["publish_topic"], json.dumps(message), qos=0)

    async def next_message(
        self,
        message_type: str | None = None,
        timeout: float = 10.0,
    ) -> dict[str, Any]:
        """The next message (of ``message_type``, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.messages.get()
                if message_type is None or message["type"] == message_type:
                    return message

    async def close(self) -> None:
        self.client.disconnect()
        await asyncio.get_running_loop().run_in_executor(None, self.client.loop_stop)
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()

    # ------------------------------------------------------------ voice

    async def hello(self) -> dict[str, Any]:
        """Ask for an audio channel, as OpenAudioChannel does; returns the server hello."""
        self.publish(
            {
                "type": "hello",
                "version": 3,
                "transport": "udp",
                "features": {"mcp": True},
                "audio_params": {
                    "format": "opus",
                    "sample_rate": 16000,
                    "channels": 1,
                    "frame_duration": 60,
                },
            }
        )
        hello = await self.next_message("hello")
        udp = hello["udp"]
        self.key, self.nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
        self.session_id = hello["session_id"]
        self.sequence = self.remote_sequence = 0
        if self.udp is not None and self.udp.transport is not None:
            self.udp.transport.close()
        _, self.udp = await self.loop.create_datagram_endpoint(
            DeviceUdp, remote_addr=(udp["server"], udp["port"])
        )
        return hello

    def seal(self, payload: bytes, sequence: int | None = None) -> bytes:
        """Build an uplink datagram as SendAudio does (the next sequence by default)."""
        if sequence is None:
            self.sequence += 1
            sequence = self.sequence
        fields = list(HEADER.unpack(self.nonce))
        fields[2], fields[4], fields[5] = len(payload), 0, sequence
        header = HEADER.pack(*fields)
        return header + aes_ctr(self.key, header, payload)

    def send_datagram(self, datagram: bytes) -> None:
        assert self.udp is not None
        assert self.udp.transport is not None
        self.udp.transport.sendto(datagram)

    def send_audio(self, packet: bytes) -> None:
        self.send_datagram(self.seal(packet))

    async def next_audio(self) -> bytes:
        """The next downlink Opus packet, checked as the firmware checks it."""
        assert self.udp is not None
        async with asyncio.timeout(10):
            data = await self.udp.datagrams.get()
        assert len(data) >= HEADER_SIZE
        kind, _, length, _, _, sequence = HEADER.unpack_from(data)
        assert kind == 0x01
        assert len(data) == HEADER_SIZE + length
        assert sequence > self.remote_sequence
        self.remote_sequence = sequence
        return aes_ctr(self.key, data[:HEADER_SIZE], data[HEADER_SIZE:])

    def goodbye(self) -> None:
        self.publish({"session_id": self.session_id, "type": "goodbye"})


@pytest.fixture
async def mqtt_devices() -> AsyncGenerator[list[MqttDevice]]:
    """Devices a test creates; each is disconnected after it."""
    created: list[MqttDevice] = []
    yield created
    for device in created:
        await device.close()
