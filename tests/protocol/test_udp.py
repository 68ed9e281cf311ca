"""Tests of the UDP audio channel against the firmware's scheme, over real sockets.

``FirmwareAudio`` is the device's side written from the firmware's description
(main/protocols/mqtt_protocol.cc v2.4: ``ParseServerHello``, ``SendAudio``, the UDP
``OnMessage``), with its own AES-CTR built from AES-ECB blocks, so our channel
is checked against an independent implementation rather than against itself.
"""

import asyncio
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
import json
import random
import struct

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from hypothesis import HealthCheck, given, settings, strategies as st
import pytest

from custom_components.xiaozhi.protocol.udp import (
    AUDIO_PACKET_TYPE,
    HEADER_SIZE,
    MAX_DATAGRAM_SIZE,
    MAX_PAYLOAD_SIZE,
    AudioChannel,
    DatagramRejectedError,
    DropReason,
    Header,
    UdpError,
    UplinkPacket,
    random_ssrc,
)

property_test = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
OPUS = bytes(range(1, 121))


def ctr_from_ecb(key: bytes, counter_block: bytes, data: bytes) -> bytes:
    """AES-CTR as PSA_ALG_CTR does it: the whole 128-bit block counts up."""
    counter = int.from_bytes(counter_block, "big")
    blocks = (len(data) + 15) // 16
    stream = b"".join(
        ((counter + index) % (1 << 128)).to_bytes(16, "big") for index in range(blocks)
    )
    encryptor = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    keystream = encryptor.update(stream) + encryptor.finalize()
    return bytes(a ^ b for a, b in zip(data, keystream, strict=False))


@dataclass
class FirmwareAudio:
    """The device's half of the channel, as the firmware implements it."""

    key: bytes
    nonce: bytes
    server: str
    port: int
    local_sequence: int = 0
    remote_sequence: int = 0
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_hello(cls, hello: str) -> FirmwareAudio:
        """Parse a server hello the way ParseServerHello does (both 16 bytes)."""
        udp = json.loads(hello)["udp"]
        key, nonce = bytes.fromhex(udp["key"]), bytes.fromhex(udp["nonce"])
        assert len(key) == 16
        assert len(nonce) == 16
        assert isinstance(udp["server"], str)
        assert 0 < udp["port"] <= 65535
        return cls(key, nonce, udp["server"], udp["port"])

    def send(self, payload: bytes, timestamp: int = 0) -> bytes:
        """Build an uplink datagram (SendAudio): the nonce with three fields set."""
        self.local_sequence += 1
        header = bytearray(self.nonce)
        struct.pack_into(">H", header, 2, len(payload))
        struct.pack_into(">I", header, 8, timestamp)
        struct.pack_into(">I", header, 12, self.local_sequence)
        return bytes(header) + ctr_from_ecb(self.key, bytes(header), payload)

    def receive(self, datagram: bytes) -> bytes | None:
        """Accept or drop a downlink datagram (the UDP OnMessage handler)."""
        data = datagram[:MAX_DATAGRAM_SIZE]  # recv() into a 1500-byte buffer
        if len(data) < 16 or data[0] != 0x01:
            return None
        (payload_len,) = struct.unpack_from(">H", data, 2)
        (sequence,) = struct.unpack_from(">I", data, 12)
        if len(data) != 16 + payload_len or sequence <= self.remote_sequence:
            return None
        if sequence != self.remote_sequence + 1:
            self.warnings.append(f"wrong sequence {sequence}")
        self.remote_sequence = sequence
        return ctr_from_ecb(self.key, data[:16], data[16:])


def channel_and_device(ssrc: int = 0x1234ABCD) -> tuple[AudioChannel, FirmwareAudio]:
    channel = AudioChannel.create(ssrc)
    hello: dict[str, object] = {"type": "hello", "transport": "udp", "session_id": "1"}
    hello["udp"] = channel.hello_udp("127.0.0.1", 8899)
    return channel, FirmwareAudio.from_hello(json.dumps(hello))


# ---------------------------------------------------------------- keys and hello


def test_create_hands_out_32_hex_key_and_nonce() -> None:
    channel = AudioChannel.create(0xDEADBEEF)
    for value in (channel.key_hex, channel.nonce_hex):
        assert len(value) == 32
        assert value == value.lower()
        bytes.fromhex(value)
    nonce = bytes.fromhex(channel.nonce_hex)
    assert nonce[0] == AUDIO_PACKET_TYPE
    assert nonce[1] == 0
    assert nonce[4:8] == bytes.fromhex("deadbeef")
    assert channel.ssrc == 0xDEADBEEF
    assert AudioChannel.create(0xDEADBEEF).key_hex != channel.key_hex


def test_hello_udp_has_what_the_firmware_reads() -> None:
    channel = AudioChannel.create(7)
    udp = channel.hello_udp("192.0.2.10", 8899)
    assert udp["server"] == "192.0.2.10"
    assert udp["port"] == 8899
    assert udp["key"] == channel.key_hex
    assert udp["nonce"] == channel.nonce_hex
    assert AudioChannel.create(7).hello_udp("ha.local", 1)["server"] == "ha.local"


@pytest.mark.parametrize(
    ("server", "port"),
    [("", 8899), ("::1", 8899), ("fe80::1", 8899), ("127.0.0.1", 0), ("h", 65536)],
)
def test_hello_udp_refuses_what_the_device_cannot_use(server: str, port: int) -> None:
    with pytest.raises(UdpError):
        AudioChannel.create(7).hello_udp(server, port)


@pytest.mark.parametrize(
    ("key", "nonce"),
    [
        (bytes(15), bytes([1]) + bytes(15)),
        (bytes(16), bytes([1]) + bytes(14)),
        (bytes(16), bytes(16)),  # type byte 0: the device would send type 0
    ],
)
def test_channel_refuses_bad_key_or_nonce(key: bytes, nonce: bytes) -> None:
    with pytest.raises(UdpError):
        AudioChannel(key, nonce)


@pytest.mark.parametrize("ssrc", [0, -1, 1 << 32])
def test_create_refuses_ssrc_outside_32_bits(ssrc: int) -> None:
    with pytest.raises(UdpError):
        AudioChannel.create(ssrc)


class FirstDrawsTaken:
    """Claims the first draws are in use, to see random_ssrc draw again."""

    def __init__(self, draws: int) -> None:
        self.asked: list[object] = []
        self.draws = draws

    def __contains__(self, ssrc: object) -> bool:
        self.asked.append(ssrc)
        return len(self.asked) <= self.draws


def test_random_ssrc_avoids_taken_and_zero() -> None:
    taken = {random_ssrc() for _ in range(50)}
    assert 0 not in taken
    assert all(0 < ssrc < 1 << 32 for ssrc in taken)
    assert random_ssrc(taken) not in taken
    busy = FirstDrawsTaken(3)
    ssrc = random_ssrc(busy)
    assert busy.asked[-1] == ssrc
    assert len(busy.asked) == 4


# ---------------------------------------------------------------- the firmware's scheme


def test_uplink_from_the_firmware_scheme_decrypts() -> None:
    channel, device = channel_and_device()
    for index in range(1, 6):
        packet = channel.open(device.send(OPUS[: index * 20]))
        assert packet == UplinkPacket(OPUS[: index * 20], 0, index, 0)
    assert channel.last_received_sequence == 5


def test_downlink_is_what_the_firmware_accepts() -> None:
    channel, device = channel_and_device()
    for index in range(1, 6):
        datagram = channel.seal(OPUS[: index * 20])
        assert len(datagram) == HEADER_SIZE + index * 20
        assert device.receive(datagram) == OPUS[: index * 20]
    assert device.remote_sequence == 5
    assert channel.last_sent_sequence == 5
    assert device.warnings == []


def test_downlink_header_fields() -> None:
    channel = AudioChannel.create(0xCAFE)
    header = Header.unpack(channel.seal(OPUS, timestamp=960))
    assert header == Header(1, 0, len(OPUS), 0xCAFE, 960, 1)
    assert Header.unpack(channel.seal(OPUS)).timestamp == 2


def test_counter_carries_across_the_whole_block() -> None:
    """Sequence and timestamp at their maximum: the counter runs into the ssrc."""
    channel, device = channel_and_device(0xFFFFFFFF)
    device.local_sequence = 0xFFFFFFFE
    payload = bytes(range(256)) * 3
    datagram = device.send(payload, timestamp=0xFFFFFFFF)
    # A counter of 32 or 64 bits would wrap here instead of carrying.
    assert channel.open(datagram).payload == payload


def test_every_downlink_datagram_has_its_own_keystream() -> None:
    """Equal payloads: no 16-byte keystream block is used twice."""
    channel = AudioChannel.create(9)
    blocks: set[bytes] = set()
    plain = bytes(MAX_PAYLOAD_SIZE)
    for _ in range(40):
        stream = channel.seal(plain)[HEADER_SIZE:]  # zeros in: keystream out
        chunks = [stream[i : i + 16] for i in range(0, len(stream), 16)]
        assert blocks.isdisjoint(chunks)
        blocks.update(chunks)


@property_test
@given(
    payloads=st.lists(
        st.binary(min_size=1, max_size=MAX_PAYLOAD_SIZE), min_size=1, max_size=8
    ),
    timestamps=st.lists(st.integers(0, 0xFFFFFFFF), min_size=8, max_size=8),
)
def test_round_trip_both_ways(payloads: list[bytes], timestamps: list[int]) -> None:
    channel, device = channel_and_device(0x5EED)
    for payload, timestamp in zip(payloads, timestamps, strict=False):
        packet = channel.open(device.send(payload, timestamp))
        assert (packet.payload, packet.timestamp) == (payload, timestamp)
        assert device.receive(channel.seal(payload, timestamp)) == payload


# ---------------------------------------------------------------- what is dropped


def rejected(channel: AudioChannel, datagram: bytes) -> DropReason:
    with pytest.raises(DatagramRejectedError) as caught:
        channel.open(datagram)
    return caught.value.reason


def test_replayed_uplink_is_dropped() -> None:
    channel, device = channel_and_device()
    first = device.send(OPUS)
    channel.open(first)
    assert rejected(channel, first) is DropReason.REPLAYED
    assert channel.open(device.send(OPUS)).sequence == 2


def test_reordered_uplink_keeps_the_newest_and_counts_the_gap() -> None:
    channel, device = channel_and_device()
    one, two, three = (device.send(OPUS) for _ in range(3))
    channel.open(one)
    assert channel.open(three).skipped == 1
    assert rejected(channel, two) is DropReason.REPLAYED
    assert channel.last_received_sequence == 3


def test_truncated_uplink_is_dropped() -> None:
    channel, device = channel_and_device()
    datagram = device.send(OPUS)
    assert rejected(channel, datagram[:15]) is DropReason.TOO_SHORT
    assert rejected(channel, b"") is DropReason.TOO_SHORT
    assert rejected(channel, datagram[:-1]) is DropReason.LENGTH_MISMATCH
    assert rejected(channel, datagram + b"\x00") is DropReason.LENGTH_MISMATCH
    # None of them consumed the sequence number.
    assert channel.open(datagram).sequence == 1


def test_oversized_uplink_is_dropped() -> None:
    channel, device = channel_and_device()
    assert rejected(channel, device.send(bytes(MAX_PAYLOAD_SIZE + 1))) is (
        DropReason.TOO_LONG
    )
    assert channel.open(device.send(bytes(MAX_PAYLOAD_SIZE))).sequence == 2


def test_wrong_type_is_dropped() -> None:
    channel, device = channel_and_device()
    datagram = bytearray(device.send(OPUS))
    datagram[0] = 0x02
    assert rejected(channel, bytes(datagram)) is DropReason.WRONG_TYPE


def test_other_channels_datagrams_are_dropped() -> None:
    """Keyed for another session: another ssrc (or flags), so not ours."""
    channel, _ = channel_and_device(0x11111111)
    other_channel, other_device = channel_and_device(0x22222222)
    stray = other_device.send(OPUS)
    assert rejected(channel, stray) is DropReason.FOREIGN
    assert other_channel.open(stray).payload == OPUS
    flagged = bytearray(stray)
    flagged[1] = 0x01
    assert rejected(other_channel, bytes(flagged)) is DropReason.FOREIGN


def test_random_datagrams_only_ever_raise_the_rejection_error() -> None:
    channel, device = channel_and_device()
    rng = random.Random(14)
    valid = device.send(OPUS)
    reasons: set[DropReason] = set()
    for _ in range(3000):
        if rng.random() < 0.5:
            datagram = rng.randbytes(rng.randrange(0, 1600))
        else:
            mutated = bytearray(valid)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            datagram = bytes(mutated[: rng.randrange(len(mutated) + 1)])
        try:
            channel.open(datagram)
        except DatagramRejectedError as err:
            reasons.add(err.reason)
    assert {DropReason.TOO_SHORT, DropReason.FOREIGN, DropReason.LENGTH_MISMATCH} <= (
        reasons
    )


# ---------------------------------------------------------------- what is never built


def test_downlink_refuses_empty_and_oversized_payloads() -> None:
    channel = AudioChannel.create(5)
    with pytest.raises(UdpError):
        channel.seal(b"")
    with pytest.raises(UdpError):
        channel.seal(bytes(MAX_PAYLOAD_SIZE + 1))
    assert len(channel.seal(bytes(MAX_PAYLOAD_SIZE))) == MAX_DATAGRAM_SIZE
    assert channel.last_sent_sequence == 1


def test_downlink_sequence_never_wraps() -> None:
    channel = AudioChannel.create(5)
    for _ in range(3):
        channel.seal(OPUS)
    sequences = [Header.unpack(channel.seal(OPUS)).sequence for _ in range(3)]
    assert sequences == [4, 5, 6]
    channel._sent_sequence = 0xFFFFFFFF
    with pytest.raises(UdpError):
        channel.seal(OPUS)


# ---------------------------------------------------------------- real sockets


class AudioServer(asyncio.DatagramProtocol):
    """One server socket routing uplink datagrams to channels by ssrc."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None
        self.channels: dict[int, AudioChannel] = {}
        self.peers: dict[int, tuple[str, int]] = {}
        self.received: asyncio.Queue[tuple[int, UplinkPacket]] = asyncio.Queue()
        self.dropped: asyncio.Queue[DropReason] = asyncio.Queue()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        try:
            channel = self.channels.get(Header.unpack(data).ssrc)
            if channel is None:
                self.dropped.put_nowait(DropReason.FOREIGN)
                return
            packet = channel.open(data)
        except DatagramRejectedError as err:
            self.dropped.put_nowait(err.reason)
            return
        # The device's address is learnt from its first valid datagram.
        self.peers[channel.ssrc] = addr
        self.received.put_nowait((channel.ssrc, packet))

    def send(self, ssrc: int, payload: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(self.channels[ssrc].seal(payload), self.peers[ssrc])


class DeviceSocket(asyncio.DatagramProtocol):
    """The device's connect()ed UDP socket: it hears only the advertised address."""

    def __init__(self, audio: FirmwareAudio) -> None:
        self.audio = audio
        self.transport: asyncio.DatagramTransport | None = None
        self.played: asyncio.Queue[bytes] = asyncio.Queue()
        self.dropped = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.DatagramTransport)
        self.transport = transport

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        payload = self.audio.receive(data)
        if payload is None:
            self.dropped += 1
        else:
            self.played.put_nowait(payload)

    def send(self, datagram: bytes) -> None:
        assert self.transport is not None
        self.transport.sendto(datagram)


@pytest.fixture
async def server(socket_enabled: None) -> AsyncIterator[tuple[AudioServer, int]]:
    loop = asyncio.get_running_loop()
    transport, protocol = await loop.create_datagram_endpoint(
        AudioServer, local_addr=("127.0.0.1", 0)
    )
    yield protocol, transport.get_extra_info("sockname")[1]
    transport.close()


async def open_device(
    server: AudioServer, port: int, ssrc: int
) -> tuple[DeviceSocket, Callable[[], None]]:
    channel = AudioChannel.create(ssrc)
    server.channels[ssrc] = channel
    hello = json.dumps({"udp": channel.hello_udp("127.0.0.1", port)})
    audio = FirmwareAudio.from_hello(hello)
    loop = asyncio.get_running_loop()
    transport, device = await loop.create_datagram_endpoint(
        lambda: DeviceSocket(audio), remote_addr=(audio.server, audio.port)
    )
    return device, transport.close


async def test_audio_both_ways_over_real_sockets(
    server: tuple[AudioServer, int],
) -> None:
    audio_server, port = server
    first, close_first = await open_device(audio_server, port, 0xA1)
    second, close_second = await open_device(audio_server, port, 0xB2)
    try:
        for index in range(1, 11):
            first.send(first.audio.send(OPUS[:index]))
            second.send(second.audio.send(OPUS[-index:]))
        got: dict[int, list[bytes]] = {0xA1: [], 0xB2: []}
        for _ in range(20):
            ssrc, packet = await audio_server.received.get()
            got[ssrc].append(packet.payload)
        # Loopback does not reorder; each device's stream arrives whole.
        assert got[0xA1] == [OPUS[:index] for index in range(1, 11)]
        assert got[0xB2] == [OPUS[-index:] for index in range(1, 11)]
        for index in range(1, 6):
            audio_server.send(0xA1, OPUS[: index * 10])
            audio_server.send(0xB2, OPUS[: index * 11])
        assert [await first.played.get() for _ in range(5)] == [
            OPUS[: index * 10] for index in range(1, 6)
        ]
        assert [await second.played.get() for _ in range(5)] == [
            OPUS[: index * 11] for index in range(1, 6)
        ]
        assert first.dropped == second.dropped == 0
    finally:
        close_first()
        close_second()


async def test_bad_datagrams_leave_the_session_healthy(
    server: tuple[AudioServer, int],
) -> None:
    audio_server, port = server
    device, close = await open_device(audio_server, port, 0xC3)
    try:
        good = device.audio.send(OPUS)  # sequence 1
        device.send(good)
        await audio_server.received.get()
        cut = device.audio.send(OPUS)[:-3]  # 2
        oversized = device.audio.send(bytes(MAX_PAYLOAD_SIZE + 10))  # 3
        wrong_type = bytearray(device.audio.send(OPUS))  # 4
        wrong_type[0] = 0x02
        stranger = FirmwareAudio(
            bytes(16), bytes.fromhex("01" + "00" * 6 + "d4") + bytes(8), "", 0
        )
        bad = [
            good,  # replayed
            good[:10],  # shorter than a header
            cut,
            oversized,
            bytes(wrong_type),
            stranger.send(OPUS),  # keyed for a session this server does not have
        ]
        for datagram in bad:
            device.send(datagram)
        reasons = [await audio_server.dropped.get() for _ in bad]
        assert reasons == [
            DropReason.REPLAYED,
            DropReason.TOO_SHORT,
            DropReason.LENGTH_MISMATCH,
            DropReason.TOO_LONG,
            DropReason.WRONG_TYPE,
            DropReason.FOREIGN,
        ]
        device.send(device.audio.send(OPUS[:7]))
        ssrc, packet = await audio_server.received.get()
        assert (ssrc, packet.payload, packet.skipped) == (0xC3, OPUS[:7], 3)
        audio_server.send(0xC3, OPUS)
        assert await device.played.get() == OPUS
    finally:
        close()
