"""The MQTT+UDP transport: a device's lasting link over MQTT, its voice over UDP.

The firmware's other transport (main/protocols/mqtt_protocol.cc) keeps one MQTT
connection for the device's whole uptime: JSON both ways (MCP tools, alerts,
reboot, and the hello that opens a conversation). Each conversation's audio goes
over UDP, AES-128-CTR encrypted with a key our hello hands out
(``protocol/udp.py``). The device never subscribes: we push to it on its
connection, which is why a stock broker cannot serve it and this endpoint is a
minimal one of its own (``protocol/mqtt.py`` is its codec).

Endpoint. One TCP listener for MQTT 3.1.1 (default port :data:`DEFAULT_MQTT_PORT`,
18830: neither Mosquitto's 1883 nor 8883, which the firmware would speak TLS to)
and one UDP socket (:data:`DEFAULT_UDP_PORT`, 18831), both on all IPv4
addresses. They start with the first paired device's entry and stop with the
last one, and when Home Assistant stops, leaving no socket or task behind; a
port that cannot be bound is logged and devices keep WebSocket.

A connection. The CONNECT must come within 10 s and carry the device's own
username (its MAC), client id and password, as its OTA answer handed them
(``server/credentials.py``); anything else is refused with a CONNACK code
(below) and closed. An accepted connection becomes the device's link
(``device/link.py``): the newest connection of a device wins. The link lists the
device's MCP tools once per connection and carries alerts and reboots while the
device is idle. A ``hello`` opens a voice session, whose server hello carries the
session's ``udp`` keys from :meth:`MqttTransport.server_hello_fields`; a
``goodbye`` (ours or the device's) ends it and the link stays.

==============================  ================================================
Refusal (``EndReason``)         CONNACK return code
==============================  ================================================
UNAUTHORIZED                    4 bad user name or password (also: unpaired, or
                                its entry not loaded)
BAD_HANDSHAKE                   2 identifier rejected (another device's client id)
SERVER_BUSY, SERVER_SHUTDOWN    3 server unavailable
==============================  ================================================

MQTT 3.1.1 has no way for a server to say why it closes a connection it
accepted: every later end (replaced, unloaded, idle, rate limited, bad packet) is
the socket closing, logged here as on WebSocket. The firmware reconnects by
itself a little later while idle.

UDP. Datagrams are routed by the ``ssrc`` of the session's nonce (random per
hello), accepted only from the IP address of the device's MQTT connection, and
checked by the channel (type, flags, length, a sequence above the last: replays,
reordered, truncated, oversized and foreign datagrams are dropped and counted;
one with the wrong key decrypts to noise the Opus decoder refuses). Downlink goes
to the address of the session's last accepted uplink datagram, from the one UDP
socket; the hello advertises the local address of the device's MQTT connection,
which is the address the kernel answers it from on a host with one route to it.

Limits. This transport's own (:class:`MqttSettings`): connections at once
(:data:`MAX_CONNECTIONS`, counted before authentication; more are closed at
once), the largest packet (64 KiB, larger closes), the CONNECT timeout, the send
timeout (5 s, then the device counts as gone), the keep-alive watchdog (nothing
for 1.5 keep-alive periods closes: the device pings every 240 s). Those of every
transport (``server.limits``): devices connected at once (CONNACK 3), and MQTT
packets per second and UDP datagrams per second, each; too many packets close
the connection, too many datagrams are dropped.
"""

import asyncio
from collections import Counter
from collections.abc import Mapping
import contextlib
from dataclasses import dataclass, field
import ipaddress
import logging
import socket
from typing import Any, Final
from urllib.parse import urlsplit

from aiohttp import web

from homeassistant.config_entries import ConfigEntry
from homeassistant.const import EVENT_HOMEASSISTANT_STOP
from homeassistant.core import Event, HomeAssistant, callback
from homeassistant.helpers.http import KEY_HASS
from homeassistant.util.hass_dict import HassKey

from ..const import (
    CONF_MAC,
    CONF_TRANSPORT,
    DEFAULT_TRANSPORT,
    DOMAIN,
    LOGGER,
    TRANSPORT_MQTT,
)
from ..device.link import DeviceLink
from ..device.supervisor import SessionClosedError
from ..protocol.messages import parse_message
from ..protocol.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    ConnectionState,
    ConnectReturnCode,
    MqttError,
    PacketTooLargeError,
    Publish,
    ServerConnection,
)
from ..protocol.sanitize import printable
from ..protocol.udp import (
    HEADER_SIZE,
    AudioChannel,
    DatagramRejectedError,
    UdpError,
    random_ssrc,
)
from ..server.auth import AdmissionError, AuthenticatedDevice, admit, may_refuse_openly
from ..server.credentials import (
    async_authenticate_mqtt,
    async_issue_password,
    client_id_of,
    device_topic_of,
    publish_topic_of,
    username_of,
)
from ..server.limits import ConnectionLimits
from ..server.ratelimit import RateLimiter
from ..server.registry import XiaozhiServer, async_get_server
from .base import EndReason, SendTimeoutError, TransportError

DEFAULT_MQTT_PORT: Final = 18830
DEFAULT_UDP_PORT: Final = 18831
# What the OTA answer tells the device to ping at (the firmware's own default).
KEEPALIVE_S: Final = 240
CONNECT_TIMEOUT_S: Final = 10.0
SEND_TIMEOUT_S: Final = 5.0
CLOSE_TIMEOUT_S: Final = 2.0
# TCP connections at once, authenticated or not.
MAX_CONNECTIONS: Final = 64
READ_SIZE: Final = 16 * 1024
# The UDP socket's receive buffer: every device's uplink (17 datagrams a second
# each) queues here while the event loop is busy; the kernel's default (208 KiB,
# about 250 small datagrams with their overhead) overflows within a 300 ms stall
# at 50 talking devices. The kernel caps it at net.core.rmem_max.
UDP_RECEIVE_BUFFER: Final = 4 * 1024 * 1024
# The hello's transport and version as the firmware's own hello says them.
TRANSPORT_UDP: Final = "udp"
UDP_HELLO_VERSION: Final = 3

# What a refused CONNECT is answered with.
CONNACK_CODES: Final[Mapping[EndReason, ConnectReturnCode]] = {
    EndReason.UNAUTHORIZED: ConnectReturnCode.BAD_USERNAME_OR_PASSWORD,
    EndReason.BAD_HANDSHAKE: ConnectReturnCode.IDENTIFIER_REJECTED,
    EndReason.SERVER_BUSY: ConnectReturnCode.SERVER_UNAVAILABLE,
    EndReason.SERVER_SHUTDOWN: ConnectReturnCode.SERVER_UNAVAILABLE,
    EndReason.RATE_LIMITED: ConnectReturnCode.SERVER_UNAVAILABLE,
}


@dataclass(frozen=True, slots=True)
class MqttSettings:
    """Where the endpoint listens and this transport's own limits.

    Attributes:
        enabled: Whether the endpoint starts at all (False: WebSocket only).
        host: The address both sockets bind (all IPv4 addresses by default).
        mqtt_port: The MQTT (TCP) port; 0 picks a free one.
        udp_port: The UDP port; 0 picks a free one.
        keepalive: The keep-alive the device is told to use, in seconds.
        max_connections: TCP connections at once, before authentication too.
        max_packet_size: The largest MQTT packet accepted.
        connect_timeout: Seconds a connection may take to send its CONNECT.
        send_timeout: Seconds a send may block before the device counts as gone.
        close_timeout: Seconds closing waits for the socket to flush.
    """

    enabled: bool = True
    host: str = "0.0.0.0"  # noqa: S104 (devices are on the LAN)
    mqtt_port: int = DEFAULT_MQTT_PORT
    udp_port: int = DEFAULT_UDP_PORT
    keepalive: int = KEEPALIVE_S
    max_connections: int = MAX_CONNECTIONS
    max_packet_size: int = DEFAULT_MAX_PACKET_SIZE
    connect_timeout: float = CONNECT_TIMEOUT_S
    send_timeout: float = SEND_TIMEOUT_S
    close_timeout: float = CLOSE_TIMEOUT_S
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    def __post_init__(self) -> None:
        """Refuse settings that would refuse every device.

        Raises:
            ValueError: A limit or timeout is not positive, or a port is invalid.
        """
        positive = (
            self.keepalive,
            self.max_connections,
            self.max_packet_size,
            self.connect_timeout,
            self.send_timeout,
            self.close_timeout,
        )
        if any(value <= 0 for value in positive):
            raise ValueError(f"MQTT limits must be positive: {self}")
        if not (0 <= self.mqtt_port <= 0xFFFF and 0 <= self.udp_port <= 0xFFFF):
            raise ValueError(f"invalid MQTT or UDP port: {self}")


# What the endpoint uses unless ``hass.data[DATA_MQTT_SETTINGS]`` says otherwise.
DEFAULT_SETTINGS: Final = MqttSettings()
DATA_MQTT_SETTINGS: HassKey[MqttSettings] = HassKey(f"{DOMAIN}_mqtt_settings")
DATA_MQTT: HassKey[MqttEndpoint] = HassKey(f"{DOMAIN}_mqtt")


def device_transport(entry: ConfigEntry) -> str:
    """Return the transport the device's OTA answer names (its option, else MQTT)."""
    choice: str = entry.options.get(CONF_TRANSPORT, DEFAULT_TRANSPORT)
    return choice


def _ipv4(address: str) -> str:
    """Return an IPv4 address as the device can reach it (unwrapping ::ffff:)."""
    with contextlib.suppress(ValueError):
        parsed = ipaddress.ip_address(address)
        if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped:
            return str(parsed.ipv4_mapped)
    return address


# ---------------------------------------------------------------- UDP


class UdpAudio(asyncio.DatagramProtocol):
    """The one UDP socket: routes each datagram to its session by ssrc.

    Attributes:
        dropped: Datagrams that belonged to no session, by reason.
    """

    def __init__(self) -> None:
        """Start without a socket or sessions."""
        self.dropped: Counter[str] = Counter()
        self._routes: dict[int, MqttTransport] = {}
        self._transport: asyncio.DatagramTransport | None = None
        self._closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @property
    def port(self) -> int:
        """The bound port."""
        assert self._transport is not None
        port: int = self._transport.get_extra_info("sockname")[1]
        return port

    @property
    def sessions(self) -> int:
        """The audio channels open now."""
        return len(self._routes)

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Keep the socket."""
        assert isinstance(transport, asyncio.DatagramTransport)
        self._transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str | Any, int]) -> None:
        """Hand a datagram to the session its ssrc names; drop anything else."""
        if len(data) < HEADER_SIZE:
            self.dropped["too_short"] += 1
            return
        route = self._routes.get(int.from_bytes(data[4:8]))
        if route is None:
            self.dropped["no_session"] += 1
            return
        try:
            route.handle_datagram(data, (str(addr[0]), int(addr[1])))
        except Exception:  # one bad datagram must not take down the socket
            LOGGER.exception("Unexpected error handling a UDP datagram")

    def connection_lost(self, exc: Exception | None) -> None:
        """Note that the socket is closed."""
        if not self._closed.done():
            self._closed.set_result(None)

    def error_received(self, exc: Exception) -> None:
        """Log an ICMP error (a device went away mid-reply); keep serving."""
        LOGGER.debug("UDP audio socket error: %s", exc)

    def open_channel(self, owner: MqttTransport) -> AudioChannel:
        """Create a session's channel, with an ssrc no live channel has."""
        channel = AudioChannel.create(random_ssrc(self._routes))
        self._routes[channel.ssrc] = owner
        return channel

    def close_channel(self, channel: AudioChannel, owner: MqttTransport) -> None:
        """Forget a session's channel."""
        if self._routes.get(channel.ssrc) is owner:
            del self._routes[channel.ssrc]

    def sendto(self, datagram: bytes, addr: tuple[str, int]) -> None:
        """Send one datagram (dropped by the kernel when the socket is full)."""
        if self._transport is not None and not self._transport.is_closing():
            self._transport.sendto(datagram, addr)

    async def async_close(self) -> None:
        """Close the socket; returns once it is closed."""
        self._routes.clear()
        if self._transport is not None:
            self._transport.close()
            await self._closed


# ---------------------------------------------------------------- one connection


class MqttTransport:
    """A device's MQTT connection and its session's UDP channel (``transport.base``).

    Attributes:
        link: The device's link, once the connection was accepted.
        dropped: Uplink datagrams this connection's sessions dropped, by reason.
        no_address: Downlink packets dropped because the device had not sent any
            datagram of the session yet (its UDP address is learnt from them).
    """

    session_ends_connection = False

    def __init__(
        self,
        endpoint: MqttEndpoint,
        connection: ServerConnection,
        writer: asyncio.StreamWriter,
        *,
        mac: str,
        name: str,
    ) -> None:
        """Serve the accepted ``connection`` of device ``mac``."""
        self.link: DeviceLink | None = None
        self.dropped: Counter[str] = Counter()
        self.no_address = 0
        self._endpoint = endpoint
        # Its own reference: the endpoint forgets the socket as it stops.
        self._udp = endpoint.udp
        self._connection = connection
        self._writer = writer
        self._mac = mac
        self._name = name
        self._topic = device_topic_of(mac)
        settings = endpoint.settings
        self._send_timeout = settings.send_timeout
        self._close_timeout = settings.close_timeout
        self._datagrams = RateLimiter(
            settings.limits.messages_per_second,
            settings.limits.message_burst,
            max_keys=1,
        )
        peer = writer.get_extra_info("peername")
        local = writer.get_extra_info("sockname")
        self._peer_host = _ipv4(str(peer[0])) if peer else ""
        self._local_host = _ipv4(str(local[0])) if local else ""
        self._channel: AudioChannel | None = None
        self._udp_address: tuple[str, int] | None = None
        self._stuck = False

    @property
    def last_uplink_sequence(self) -> int:
        """The sequence of the session's last accepted datagram (0: none, no session)."""
        return 0 if self._channel is None else self._channel.last_received_sequence

    # ------------------------------------------------------------ seam

    def server_hello_fields(self) -> Mapping[str, Any]:
        """Open the session's UDP channel: a new key, nonce and ssrc per hello."""
        self._drop_channel()
        udp = self._udp
        channel = udp.open_channel(self)
        self._channel = channel
        try:
            fields = channel.hello_udp(self._local_host, udp.port)
        except UdpError as err:
            LOGGER.warning("%s cannot reach the UDP socket: %s", self._name, err)
            fields = {}
        return {"transport": TRANSPORT_UDP, "version": UDP_HELLO_VERSION, "udp": fields}

    def session_ended(self) -> None:
        """Close the session's UDP channel: later datagrams of it are dropped."""
        self._drop_channel()

    def diagnostics(self) -> dict[str, Any]:
        """Return the state of the audio channel and what its sessions dropped."""
        return {
            "transport": "mqtt",
            "audio_channel": self._channel is not None,
            "device_address_known": self._udp_address is not None,
            "dropped_datagrams": dict(self.dropped),
            "downlink_without_address": self.no_address,
        }

    async def send_text(self, text: str) -> None:
        """Publish one JSON message to the device (QoS 0)."""
        if self._stuck:
            raise SendTimeoutError(f"a send blocked for {self._send_timeout:g} s")
        try:
            self._connection.publish(self._topic, text.encode())
        except RuntimeError as err:  # the device disconnected
            raise TransportError(str(err)) from err
        await self.flush()

    async def flush(self) -> None:
        """Write what the connection queued (CONNACK, PINGRESP, publishes).

        Raises:
            TransportError: The socket is gone (:class:`SendTimeoutError` when the
                device stopped reading).
        """
        data = self._connection.data_to_send()
        if self._writer.is_closing():
            raise TransportError("the connection is closed")
        if data:
            self._writer.write(data)
        try:
            async with asyncio.timeout(self._send_timeout):
                await self._writer.drain()
        except TimeoutError as err:
            self._stuck = True
            raise SendTimeoutError(
                f"a send blocked for {self._send_timeout:g} s"
            ) from err
        except ConnectionError as err:
            raise TransportError(str(err) or type(err).__name__) from err

    async def send_audio(self, packet: bytes) -> None:
        """Send one Opus packet as the session's next encrypted datagram."""
        channel, address = self._channel, self._udp_address
        if channel is None:
            LOGGER.debug("Not sending audio to %s: no audio channel", self._name)
            return
        if address is None:
            self.no_address += 1
            if self.no_address == 1:
                LOGGER.debug(
                    "Not sending audio to %s before its first datagram", self._name
                )
            return
        try:
            datagram = channel.seal(packet)
        except UdpError as err:
            LOGGER.warning("Not sending an Opus packet to %s: %s", self._name, err)
            return
        self._udp.sendto(datagram, address)

    async def close(self, reason: EndReason, detail: str) -> None:
        """Close the socket (MQTT 3.1.1 cannot tell the device why)."""
        self._drop_channel()
        writer = self._writer
        if self._stuck:
            writer.transport.abort()
            return
        writer.close()
        try:
            async with asyncio.timeout(self._close_timeout):
                await writer.wait_closed()
        except TimeoutError:
            writer.transport.abort()
        except ConnectionError:
            pass

    # ------------------------------------------------------------ UDP

    def handle_datagram(self, data: bytes, address: tuple[str, int]) -> None:
        """Check, decrypt and hand one uplink datagram of this connection's session."""
        channel, link = self._channel, self.link
        if channel is None or link is None or link.session is None:
            self.dropped["no_session"] += 1
            return
        if address[0] != self._peer_host:
            self._drop("foreign_address", f"datagram from {address[0]}")
            return
        if not self._datagrams.allow(self._mac):
            self._drop("rate_limited", "too many datagrams per second")
            return
        try:
            packet = channel.open(data)
        except DatagramRejectedError as err:
            self._drop(str(err.reason), err)
            return
        if packet.skipped:
            LOGGER.debug("%s: %d datagrams lost", self._name, packet.skipped)
        self._udp_address = address
        link.note_incoming()
        if packet.payload:
            link.handle_audio(packet.payload)

    def _drop(self, reason: str, detail: object) -> None:
        self.dropped[reason] += 1
        if self.link is not None:
            self.link.report_bad_input(f"UDP datagram ({reason})", detail)

    def _drop_channel(self) -> None:
        if self._channel is not None:
            self._udp.close_channel(self._channel, self)
            self._channel = None
            self._udp_address = None


# ---------------------------------------------------------------- the endpoint


class MqttEndpoint:
    """The MQTT listener and the UDP socket, shared by every device.

    Attributes:
        settings: Where it listens and its limits (read at each start).
    """

    def __init__(self, hass: HomeAssistant, server: XiaozhiServer) -> None:
        """Create the endpoint, not listening yet."""
        self.hass = hass
        self.settings = DEFAULT_SETTINGS
        self._server = server
        self._tcp: asyncio.Server | None = None
        self._udp: UdpAudio | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._lock = asyncio.Lock()

    @property
    def running(self) -> bool:
        """Return whether both sockets are listening."""
        return self._tcp is not None and self._udp is not None

    @property
    def udp(self) -> UdpAudio:
        """Return the UDP socket's protocol (only while running)."""
        assert self._udp is not None
        return self._udp

    @property
    def mqtt_port(self) -> int:
        """Return the bound MQTT port (only while running)."""
        assert self._tcp is not None
        port: int = self._tcp.sockets[0].getsockname()[1]
        return port

    @property
    def connections(self) -> int:
        """Return the TCP connections open now."""
        return len(self._connections)

    async def async_start(self) -> bool:
        """Listen, unless already listening; False when it cannot (logged)."""
        async with self._lock:
            if self.running:
                return True
            self.settings = self.hass.data.get(DATA_MQTT_SETTINGS, DEFAULT_SETTINGS)
            if not self.settings.enabled:
                return False
            settings = self.settings
            loop = asyncio.get_running_loop()
            try:
                self._tcp = await asyncio.start_server(
                    self._async_handle_client,
                    settings.host,
                    settings.mqtt_port,
                    reuse_address=True,
                )
                udp_transport, self._udp = await loop.create_datagram_endpoint(
                    UdpAudio, local_addr=(settings.host, settings.udp_port)
                )
                _enlarge_receive_buffer(udp_transport)
            except OSError as err:
                LOGGER.error(
                    "Cannot serve devices over MQTT on %s ports %d (MQTT) and %d "
                    "(UDP): %s; they keep WebSocket",
                    settings.host,
                    settings.mqtt_port,
                    settings.udp_port,
                    err,
                )
                await self._async_close_sockets()
                return False
            LOGGER.info(
                "Serving devices over MQTT on port %d, audio on UDP port %d",
                self.mqtt_port,
                self.udp.port,
            )
            return True

    async def async_stop(self, reason: EndReason = EndReason.SERVER_CLOSED) -> None:
        """Stop listening and close every connection; returns once all are gone."""
        async with self._lock:
            if self._tcp is None and self._udp is None:
                return
            for link in list(self._server.links.values()):
                if isinstance(link.transport, MqttTransport):
                    link.end(reason, "the MQTT endpoint stopped")
            await self._async_close_sockets()
            LOGGER.debug("MQTT endpoint stopped")

    async def _async_close_sockets(self) -> None:
        tcp, self._tcp = self._tcp, None
        udp, self._udp = self._udp, None
        if tcp is not None:
            tcp.close()
            tcp.close_clients()
        if self._connections:
            # Their sockets are closed: each ends its link and returns.
            _, pending = await asyncio.wait(
                list(self._connections), timeout=2 * self.settings.close_timeout
            )
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending)
        if tcp is not None:
            await tcp.wait_closed()
        if udp is not None:
            await udp.async_close()

    async def _async_handle_client(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.set_name("xiaozhi-mqtt connection")
        self._connections.add(task)
        try:
            if len(self._connections) > self.settings.max_connections:
                LOGGER.warning(
                    "Refusing an MQTT connection from %s: %d connections open",
                    writer.get_extra_info("peername"),
                    self.settings.max_connections,
                )
                return
            await self._async_serve(reader, writer)
        except Exception:  # a bug of ours must not take down the listener
            LOGGER.exception("Unexpected error serving an MQTT connection")
        finally:
            self._connections.discard(task)
            writer.transport.abort()

    async def _async_serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        settings = self.settings
        connection = ServerConnection(settings.max_packet_size)
        peer = writer.get_extra_info("peername")
        try:
            async with asyncio.timeout(settings.connect_timeout):
                while connection.state is ConnectionState.AWAITING_CONNECT:
                    data = await reader.read(READ_SIZE)
                    if not data:
                        return
                    connection.receive(data)
        except TimeoutError:
            LOGGER.debug("No MQTT CONNECT from %s in time", peer)
            return
        except MqttError as err:
            self._server.refusal_log.log(
                LOGGER,
                logging.WARNING,
                "Refused MQTT connection from %s: %s",
                printable(str(peer), 64),
                printable(str(err), 200),
            )
            await _async_write_last(writer, connection.data_to_send())
            return
        except ConnectionError:
            return
        connect = connection.connect
        assert connect is not None
        try:
            device = async_authenticate_mqtt(self._server, connect)
            admit(self.hass, self._server, device.mac)
        except AdmissionError as err:
            address = str(peer[0]) if isinstance(peer, tuple) else "unknown"
            if not may_refuse_openly(self._server, address):
                return  # a flood of refusals: closed without a reply or a log line
            self._server.refusal_log.log(
                LOGGER,
                logging.WARNING,
                "Refused MQTT connection from %s (username %s): %s",
                printable(address, 64),
                printable(repr(connect.username or ""), 64),
                err.detail,
            )
            connection.refuse(
                CONNACK_CODES.get(err.reason, ConnectReturnCode.SERVER_UNAVAILABLE)
            )
            await _async_write_last(writer, connection.data_to_send())
            return
        connection.accept()
        await self._async_serve_device(reader, writer, connection, device)

    async def _async_serve_device(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        connection: ServerConnection,
        device: AuthenticatedDevice,
    ) -> None:
        transport = MqttTransport(
            self, connection, writer, mac=device.mac, name=device.name
        )
        link = DeviceLink(
            self.hass,
            device.runtime,
            transport,
            mac=device.mac,
            name=device.name,
            hello_timeout=None,
        )
        transport.link = link
        self._server.async_register_link(link)
        try:
            await transport.flush()  # the CONNACK, before anything the link sends
            link.start()
            LOGGER.debug("%s connected over MQTT", device.name)
            await self._async_receive(reader, connection, transport, link)
        except TransportError as err:
            link.end(EndReason.NORMAL, f"connection lost: {err}")
        finally:
            link.end(EndReason.NORMAL, "the device disconnected")
            self._server.async_unregister_link(link)
            await link.async_wait_closed()

    async def _async_receive(
        self,
        reader: asyncio.StreamReader,
        connection: ServerConnection,
        transport: MqttTransport,
        link: DeviceLink,
    ) -> None:
        """Hand each packet to the link until either ends."""
        limits = self.settings.limits
        budget = RateLimiter(
            limits.messages_per_second, limits.message_burst, max_keys=1
        )
        connect = connection.connect
        assert connect is not None
        watchdog = connect.keepalive_timeout
        data = b""  # first what came with the CONNECT
        while True:
            try:
                packets = connection.receive(data)
            except PacketTooLargeError as err:
                link.end(EndReason.MESSAGE_TOO_BIG, str(err))
                return
            except MqttError as err:
                link.end(EndReason.BAD_FRAME, f"bad MQTT packet: {err}")
                return
            for packet in packets:
                if not budget.allow(link.mac):
                    link.end(
                        EndReason.RATE_LIMITED,
                        f"more than {limits.messages_per_second:g} packets per second "
                        f"(bursts of {limits.message_burst})",
                    )
                    return
                if isinstance(packet, Publish):
                    await _async_handle_publish(link, packet)
                if link.closed:
                    return
            await transport.flush()
            if connection.state is ConnectionState.CLOSED:
                link.end(EndReason.NORMAL, "the device disconnected (DISCONNECT)")
                return
            try:
                async with asyncio.timeout(watchdog):
                    data = await reader.read(READ_SIZE)
            except TimeoutError:
                link.end(
                    EndReason.IDLE_TIMEOUT,
                    f"nothing received for {watchdog:g} s (1.5 keep-alive periods)",
                )
                return
            except ConnectionError as err:
                link.end(EndReason.NORMAL, f"connection lost: {err!r}")
                return
            if not data:
                return
            link.note_incoming()


def _enlarge_receive_buffer(transport: asyncio.BaseTransport) -> None:
    """Let the UDP socket queue a busy moment's datagrams (as the kernel allows)."""
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, UDP_RECEIVE_BUFFER)
    LOGGER.debug(
        "UDP audio receive buffer: %d bytes",
        sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
    )


async def _async_handle_publish(link: DeviceLink, packet: Publish) -> None:
    try:
        message = parse_message(packet.payload)
    except ValueError as err:  # MessageError, or a limit of json itself
        link.report_bad_input("malformed message", err)
        return
    try:
        await link.async_handle_message(message)
    except SessionClosedError:
        return
    except Exception:  # one bad message must not take down the server
        LOGGER.exception("Unexpected error handling a message from %s", link.name)
        link.end(EndReason.INTERNAL_ERROR, "internal error")


async def _async_write_last(writer: asyncio.StreamWriter, data: bytes) -> None:
    """Write a refusal and let it go out before the socket is dropped."""
    if not data or writer.is_closing():
        return
    writer.write(data)
    with contextlib.suppress(TimeoutError, ConnectionError):
        async with asyncio.timeout(CLOSE_TIMEOUT_S):
            await writer.drain()
            writer.close()
            await writer.wait_closed()


# ---------------------------------------------------------------- OTA and setup


def ota_section(request: web.Request, entry: ConfigEntry) -> dict[str, Any] | None:
    """Return the OTA answer's ``mqtt`` section, if the device is to use MQTT.

    The endpoint's host is the one the device reached Home Assistant by; each
    answer hands out a new password (see ``server/credentials.py``).
    """
    hass = request.app[KEY_HASS]
    endpoint = hass.data.get(DATA_MQTT)
    if endpoint is None or not endpoint.running:
        return None
    if device_transport(entry) != TRANSPORT_MQTT:
        return None
    host = urlsplit(f"//{request.host}").hostname or request.host
    if ":" in host:
        # An IPv6 literal: the firmware splits host:port at the first colon and
        # resolves IPv4 only. It keeps WebSocket.
        LOGGER.debug("Not offering MQTT to %s, which came over IPv6", entry.title)
        return None
    mac: str = entry.data[CONF_MAC]
    return {
        "endpoint": f"{host}:{endpoint.mqtt_port}",
        "client_id": client_id_of(mac),
        "username": username_of(mac),
        "password": async_issue_password(hass, entry),
        "keepalive": endpoint.settings.keepalive,
        "publish_topic": publish_topic_of(mac),
        # Firmware before 2025 subscribes to it; current firmware ignores it.
        "subscribe_topic": device_topic_of(mac),
    }


@callback
def async_setup_mqtt(hass: HomeAssistant) -> MqttEndpoint:
    """Create the endpoint (started by the first device entry) and its OTA section."""
    server = async_get_server(hass)
    endpoint = hass.data[DATA_MQTT] = MqttEndpoint(hass, server)
    server.ota_sections["mqtt"] = ota_section

    async def _async_stop(event: Event) -> None:
        await endpoint.async_stop(EndReason.SERVER_SHUTDOWN)

    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, _async_stop)
    return endpoint


@callback
def async_get_mqtt(hass: HomeAssistant) -> MqttEndpoint:
    """Return the MQTT endpoint (created by the integration's async_setup)."""
    return hass.data[DATA_MQTT]
