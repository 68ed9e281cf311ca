"""A simulated Xiaozhi device on the MQTT+UDP transport.

It behaves as main/protocols/mqtt_protocol.cc of github:78/xiaozhi-esp32 does: it
connects with the ``mqtt`` section of its OTA answer (client id, username,
password, keep-alive) and a clean session, never subscribes, publishes its JSON
on ``publish_topic``, and keeps the connection while idle, answering MCP
requests. Its hello (``transport: udp``, version 3) opens the audio channel: it
``connect()``s a UDP socket to the address the server hello names (so it takes
datagrams from exactly that address and port), sends each Opus packet the
firmware's way (the nonce with length, timestamp and sequence 1, 2, 3... written
over it, AES-128-CTR with that header as the counter block), and accepts a
datagram only with type 0x01, the exact length and a sequence above the last.
A ``goodbye`` of the current session closes the channel.

Everything else (listening, MCP tools, what is played) is :class:`SimulatedDevice`'s.
The MQTT client is paho-mqtt, in its own network thread.
"""

import asyncio
import contextlib
import json
import socket
from typing import Any, Final

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from custom_components.xiaozhi.protocol.firmware import UPLINK_SAMPLE_RATE
from custom_components.xiaozhi.protocol.udp import HEADER, HEADER_SIZE, aes_ctr

from .device import ChannelClosedError, SimulatedDevice

# The firmware's hello over MQTT (MqttProtocol::GetHelloMessage).
HELLO_VERSION: Final = 3
CONNECT_TIMEOUT_S: Final = 10.0


class MqttRefusedError(ChannelClosedError):
    """The server refused the CONNECT (its CONNACK reason is the text)."""


class _DeviceUdp(asyncio.DatagramProtocol):
    def __init__(self, device: MqttSimulatedDevice) -> None:
        self.device = device
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        self.device.datagram_received(data)


class MqttSimulatedDevice(SimulatedDevice):
    """One Xiaozhi device on MQTT (control, always connected) and UDP (audio).

    Typical use: ``await device.connect()`` (stays connected, answers MCP),
    ``await device.hello()`` to open a conversation, then as over WebSocket;
    ``await device.goodbye()`` ends it.

    Attributes:
        section: The OTA answer's ``mqtt`` section it connects with.
        bad_datagrams: Downlink datagrams it refused (type, length, sequence).
    """

    def __init__(self, section: dict[str, Any], **kwargs: Any) -> None:
        """Describe the device; nothing is sent before :meth:`connect`."""
        kwargs.setdefault("token", None)
        super().__init__(None, "", **kwargs)  # type: ignore[arg-type]
        self.section = section
        host, _, port = str(section["endpoint"]).partition(":")
        self.host, self.port = host, int(port or 8883)
        self.bad_datagrams = 0
        self.connack: ReasonCode | None = None
        self._loop = asyncio.get_running_loop()
        self._texts: asyncio.Queue[str | None] = asyncio.Queue()
        self._connected: asyncio.Future[ReasonCode] = self._loop.create_future()
        self._udp: _DeviceUdp | None = None
        self._key = b""
        self._nonce = b""
        self._sequence = 0
        self._remote_sequence = 0
        self._client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=str(section["client_id"]),
            protocol=paho.MQTTv311,
            clean_session=True,
        )
        self._client.username_pw_set(str(section["username"]), str(section["password"]))
        self._client.on_connect = self._on_connect
        self._client.on_message = self._on_message
        self._client.on_disconnect = self._on_disconnect
        self._client.on_socket_open = self._on_socket_open

    # ------------------------------------------------------------ paho's thread

    @staticmethod
    def _on_socket_open(client: Any, userdata: Any, sock: Any) -> None:
        # Send each publish at once, as a device whose messages are seconds apart
        # effectively does (Nagle would hold one behind an unacknowledged other).
        with contextlib.suppress(OSError, AttributeError):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def _on_connect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._loop.call_soon_threadsafe(self._set_connected, reason)
        if reason.is_failure:
            client.disconnect()  # no retry: paho's loop would reconnect

    def _set_connected(self, reason: ReasonCode) -> None:
        self.connack = reason
        if not self._connected.done():
            self._connected.set_result(reason)

    def _on_message(self, client: Any, userdata: Any, message: Any) -> None:
        text = message.payload.decode(errors="replace")
        self._loop.call_soon_threadsafe(self._texts.put_nowait, text)

    def _on_disconnect(
        self, client: Any, userdata: Any, flags: Any, reason: Any, properties: Any
    ) -> None:
        self._loop.call_soon_threadsafe(self._texts.put_nowait, None)

    # ------------------------------------------------------------ connection

    async def connect(self) -> None:
        """Connect and start answering; returns once the CONNACK accepted it.

        Raises:
            MqttRefusedError: The CONNACK refused it.
        """
        keepalive = int(self.section.get("keepalive") or 240)
        self._client.connect_async(self.host, self.port, keepalive)
        self._client.loop_start()
        self._reader = asyncio.create_task(self._read_loop())
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            reason = await asyncio.shield(self._connected)
        if reason.is_failure:
            self.close_reason = str(reason)
            await self.close()
            raise MqttRefusedError(None, str(reason))

    async def _read_loop(self) -> None:
        try:
            while (text := await self._texts.get()) is not None:
                await self._on_text(text)
        finally:
            self._close_udp()
            self._closed.set()
            self._hello_event.set()

    async def close(self) -> None:
        """Disconnect (the device powers off) and stop reading."""
        self._client.disconnect()
        await self._loop.run_in_executor(None, self._client.loop_stop)
        self._texts.put_nowait(None)
        if self._reader is not None:
            await self._reader
        for task in list(self._tool_tasks):
            task.cancel()
        if self._tool_tasks:
            await asyncio.wait(self._tool_tasks)

    # ------------------------------------------------------------ sending

    def client_hello(self) -> dict[str, Any]:
        """Return the hello MqttProtocol::GetHelloMessage builds."""
        return {
            "type": "hello",
            "version": HELLO_VERSION,
            "transport": "udp",
            "features": self.features,
            "audio_params": {
                "format": "opus",
                "sample_rate": UPLINK_SAMPLE_RATE,
                "channels": 1,
                "frame_duration": self.frame_duration_ms,
            },
        }

    async def send_json(self, message: dict[str, Any], *, binary: bool = False) -> None:
        """Publish a JSON message on the device's topic (QoS 0)."""
        if self.closed:
            raise ChannelClosedError(self.close_code, self.close_reason)
        text = json.dumps(message, ensure_ascii=False, separators=(",", ":"))
        self._client.publish(str(self.section["publish_topic"]), text, qos=0)
        if self.observer is not None:
            self.observer.json_sent(message)

    async def send_opus(self, packet: bytes, *, timestamp: int = 0) -> None:
        """Send one Opus packet as the channel's next datagram (SendAudio)."""
        if self._udp is None or self._udp.transport is None:
            return  # the firmware drops audio without a channel
        self._sequence += 1
        fields = list(HEADER.unpack(self._nonce))
        fields[2], fields[4], fields[5] = len(packet), timestamp, self._sequence
        header = HEADER.pack(*fields)
        self._udp.transport.sendto(header + aes_ctr(self._key, header, packet))

    async def goodbye(self) -> None:
        """Leave the conversation (button, CloseAudioChannel): goodbye, UDP closed."""
        await self.send_json(self._with_session(type="goodbye"))
        self._close_udp()
        self.session_id = ""

    # ------------------------------------------------------------ receiving

    async def _on_json(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "hello":
            self.received_types.append("hello")
            if self.observer is not None:
                self.observer.json_received(message)
            await self._on_server_hello(message)
            return
        if kind == "goodbye" and message.get("session_id") == self.session_id:
            self._close_udp()
            self.speaking = False
        await super()._on_json(message)

    async def _on_server_hello(self, message: dict[str, Any]) -> None:
        """ParseServerHello, then open the channel as OpenAudioChannel does."""
        udp = message.get("udp")
        if message.get("transport") != "udp" or not isinstance(udp, dict):
            return
        try:
            key, nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
            server, port = str(udp["server"]), int(udp["port"])
        except KeyError, TypeError, ValueError:
            return
        if len(key) != 16 or len(nonce) != HEADER_SIZE:
            return
        self._close_udp()
        self._key, self._nonce = key, nonce
        self._sequence = self._remote_sequence = 0
        _, self._udp = await self._loop.create_datagram_endpoint(
            lambda: _DeviceUdp(self), remote_addr=(server, port)
        )
        self.session_id = message.get("session_id") or self.session_id
        self.server_hello = message
        self._hello_received = True
        self._hello_event.set()

    def datagram_received(self, data: bytes) -> None:
        """The channel's OnMessage: check, decrypt, play while speaking."""
        if len(data) < HEADER_SIZE:
            self.bad_datagrams += 1
            return
        kind, _, length, _, _, sequence = HEADER.unpack_from(data)
        if kind != 0x01 or len(data) != HEADER_SIZE + length:
            self.bad_datagrams += 1
            return
        if sequence <= self._remote_sequence:
            self.bad_datagrams += 1
            return
        self._remote_sequence = sequence
        packet = aes_ctr(self._key, data[:HEADER_SIZE], data[HEADER_SIZE:])
        if self.observer is not None:
            self.observer.audio_received(packet, played=self.speaking)
        if self.speaking:
            self.received_audio.append(packet)
        else:
            self.dropped_audio += 1

    def _close_udp(self) -> None:
        if self._udp is not None and self._udp.transport is not None:
            self._udp.transport.close()
        self._udp = None

    @property
    def channel_open(self) -> bool:
        """Return whether the audio channel is open (between hello and goodbye)."""
        return self._udp is not None
