"""Tests of the MQTT 3.1.1 server codec, with paho-mqtt as the device over real sockets.

Client packets are built here from the MQTT 3.1.1 specification (the ``client_*``
helpers), not with the codec under test. ``MiniBroker`` is a small asyncio
endpoint on :class:`ServerConnection`, shaped like the integration's will be
(credentials per client id, keep-alive watchdog, a push to one client); paho-mqtt
2.1.0, the version Home Assistant 2026.10 pins, plays the device, driven by the
test's event loop the way Home Assistant's own MQTT client drives it.

The fuzz test mutates valid packets with a seeded generator (``XIAOZHI_MQTT_FUZZ_SEED``
picks another seed) and checks that every stream is either decoded or refused
with the codec's own error, with the decoder's buffer bounded throughout.
"""

import asyncio
from collections.abc import AsyncIterator, Callable, Iterator
import contextlib
from dataclasses import dataclass
import itertools
import json
import os
import random
import struct
from typing import Any

from hypothesis import HealthCheck, given, settings, strategies as st
from paho.mqtt import client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
import pytest

from custom_components.xiaozhi.protocol.mqtt import (
    DEFAULT_MAX_PACKET_SIZE,
    MAX_REMAINING_LENGTH,
    ClientPacket,
    Connect,
    ConnectionState,
    ConnectRefusedError,
    ConnectReturnCode,
    Disconnect,
    MalformedPacketError,
    MqttError,
    PacketDecoder,
    PacketTooLargeError,
    PingReq,
    Publish,
    ServerConnection,
    Subscribe,
    Subscription,
    Unsubscribe,
    UnsupportedPacketError,
    Will,
    encode_connack,
    encode_pingresp,
    encode_publish,
    encode_remaining_length,
    encode_suback,
    encode_unsuback,
)

FUZZ_SEED = int(os.environ.get("XIAOZHI_MQTT_FUZZ_SEED", "20261214"))
FUZZ_CASES = 12_000
property_test = settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)

# ---------------------------------------------------------------- client packets


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        digit, value = value % 128, value // 128
        out.append(digit | (0x80 if value else 0))
        if not value:
            return bytes(out)


def frame(first_byte: int, body: bytes) -> bytes:
    return bytes([first_byte]) + varint(len(body)) + body


def field(value: str | bytes) -> bytes:
    raw = value.encode() if isinstance(value, str) else value
    return struct.pack(">H", len(raw)) + raw


def client_connect(
    client_id: str | bytes = "dev-1",
    *,
    username: str | bytes | None = None,
    password: bytes | None = None,
    keepalive: int = 60,
    clean: bool = True,
    name: str = "MQTT",
    level: int = 4,
    will: tuple[str, bytes, int, bool] | None = None,
    extra_flags: int = 0,
    trailer: bytes = b"",
) -> bytes:
    flags = extra_flags | (0x02 if clean else 0)
    payload = field(client_id)
    if will is not None:
        topic, message, qos, retain = will
        flags |= 0x04 | qos << 3 | (0x20 if retain else 0)
        payload += field(topic) + field(message)
    if username is not None:
        flags |= 0x80
        payload += field(username)
    if password is not None:
        flags |= 0x40
        payload += field(password)
    header = field(name) + bytes([level, flags]) + struct.pack(">H", keepalive)
    return frame(0x10, header + payload + trailer)


def client_publish(
    topic: str | bytes,
    payload: bytes,
    *,
    qos: int = 0,
    retain: bool = False,
    dup: bool = False,
) -> bytes:
    first = 0x30 | qos << 1 | (0x08 if dup else 0) | (0x01 if retain else 0)
    packet_id = struct.pack(">H", 1) if qos else b""
    return frame(first, field(topic) + packet_id + payload)


def client_subscribe(packet_id: int, filters: list[tuple[str, int]]) -> bytes:
    body = struct.pack(">H", packet_id)
    body += b"".join(field(name) + bytes([qos]) for name, qos in filters)
    return frame(0x82, body)


def client_unsubscribe(packet_id: int, filters: list[str]) -> bytes:
    return frame(0xA2, struct.pack(">H", packet_id) + b"".join(map(field, filters)))


PINGREQ = b"\xc0\x00"
DISCONNECT = b"\xe0\x00"
HELLO = json.dumps({"type": "hello", "version": 3, "transport": "udp"}).encode()


# ---------------------------------------------------------------- decoding


def decode_one(data: bytes, max_packet_size: int = DEFAULT_MAX_PACKET_SIZE) -> Any:
    packets = PacketDecoder(max_packet_size).decode(data)
    assert len(packets) == 1
    return packets[0]


def test_decodes_the_firmware_connect() -> None:
    packet = decode_one(
        client_connect(
            "xiaozhi-a1b2", username="dev", password=b"s3cret", keepalive=240
        )
    )
    assert packet == Connect(4, "xiaozhi-a1b2", True, 240, "dev", b"s3cret", None)
    assert packet.keepalive_timeout == 360


def test_decodes_connect_without_credentials_and_with_a_will() -> None:
    assert decode_one(client_connect("d", keepalive=0)) == Connect(4, "d", True, 0)
    assert decode_one(client_connect("d", keepalive=0)).keepalive_timeout is None
    packet = decode_one(client_connect("d", will=("gone/d", b"bye", 1, True)))
    assert packet.will == Will("gone/d", b"bye", 1, True)


def test_decodes_mqtt_3_1_and_an_empty_client_id_with_clean_session() -> None:
    assert decode_one(client_connect("old", name="MQIsdp", level=3)).protocol_level == 3
    assert decode_one(client_connect("")).client_id == ""


def test_decodes_publish_subscribe_unsubscribe_ping_disconnect() -> None:
    stream = (
        client_publish("device-server", HELLO)
        + client_publish("t", b"", retain=True)
        + client_subscribe(7, [("devices/p2p/#", 2), ("a/+/b", 0)])
        + client_unsubscribe(8, ["devices/p2p/#"])
        + PINGREQ
        + DISCONNECT
    )
    assert PacketDecoder().decode(stream) == [
        Publish("device-server", HELLO),
        Publish("t", b"", retain=True),
        Subscribe(7, (Subscription("devices/p2p/#", 2), Subscription("a/+/b", 0))),
        Unsubscribe(8, ("devices/p2p/#",)),
        PingReq(),
        Disconnect(),
    ]


REFUSED: list[tuple[str, bytes, type[MqttError]]] = [
    ("protocol name", client_connect(name="MQTX"), MalformedPacketError),
    ("reserved flag", client_connect(extra_flags=0x01), MalformedPacketError),
    ("will qos alone", client_connect(extra_flags=0x08), MalformedPacketError),
    ("will retain alone", client_connect(extra_flags=0x20), MalformedPacketError),
    ("will qos 3", client_connect(will=("w", b"", 3, False)), MalformedPacketError),
    (
        "will wildcard",
        client_connect(will=("w/#", b"", 0, False)),
        MalformedPacketError,
    ),
    ("password alone", client_connect(password=b"pw"), MalformedPacketError),
    ("trailing bytes", client_connect(trailer=b"\x00"), MalformedPacketError),
    ("bad utf-8", client_connect(b"\xff\xfe"), MalformedPacketError),
    ("surrogate", client_connect(b"\xed\xa0\x80"), MalformedPacketError),
    ("nul", client_connect(username="a\x00b"), MalformedPacketError),
    ("cut string", frame(0x10, b"\x00\x04MQ"), MalformedPacketError),
    ("cut header", frame(0x10, field("MQTT") + b"\x04\x02"), MalformedPacketError),
    ("qos 1 publish", client_publish("t", b"x", qos=1), UnsupportedPacketError),
    ("qos 2 publish", client_publish("t", b"x", qos=2), UnsupportedPacketError),
    ("qos 3 publish", client_publish("t", b"x", qos=3), MalformedPacketError),
    ("dup on qos 0", client_publish("t", b"x", dup=True), MalformedPacketError),
    ("empty topic", client_publish("", b"x"), MalformedPacketError),
    ("wildcard topic", client_publish("a/+", b"x"), MalformedPacketError),
    ("cut topic", frame(0x30, b"\x00\x09abc"), MalformedPacketError),
    (
        "subscribe flags",
        frame(0x80, b"\x00\x01" + field("t") + b"\x00"),
        MalformedPacketError,
    ),
    ("packet id 0", client_subscribe(0, [("t", 0)]), MalformedPacketError),
    ("no filter", client_subscribe(1, []), MalformedPacketError),
    ("qos byte 3", client_subscribe(1, [("t", 3)]), MalformedPacketError),
    ("reserved qos bits", client_subscribe(1, [("t", 0x40)]), MalformedPacketError),
    ("hash mid filter", client_subscribe(1, [("a/#/b", 0)]), MalformedPacketError),
    ("partial plus", client_subscribe(1, [("a+/b", 0)]), MalformedPacketError),
    ("empty filter", client_subscribe(1, [("", 0)]), MalformedPacketError),
    ("no unsub filter", client_unsubscribe(1, []), MalformedPacketError),
    ("unsub flags", frame(0xA0, b"\x00\x01" + field("t")), MalformedPacketError),
    ("unsub bad filter", client_unsubscribe(1, ["#/a"]), MalformedPacketError),
    ("ping body", b"\xc0\x01\x00", MalformedPacketError),
    ("disconnect flags", b"\xe1\x00", MalformedPacketError),
    ("connack", b"\x20\x02\x00\x00", MalformedPacketError),
    ("suback", b"\x90\x03\x00\x01\x00", MalformedPacketError),
    ("pingresp", b"\xd0\x00", MalformedPacketError),
    ("puback", b"\x40\x02\x00\x01", UnsupportedPacketError),
    ("pubrel", b"\x62\x02\x00\x01", UnsupportedPacketError),
    ("type 0", b"\x00\x00", MalformedPacketError),
    ("type 15", b"\xf0\x00", MalformedPacketError),
    ("5-byte length", b"\x30\xff\xff\xff\xff\x01", MalformedPacketError),
    ("too large", b"\x30" + varint(DEFAULT_MAX_PACKET_SIZE), PacketTooLargeError),
]


@pytest.mark.parametrize(
    ("data", "error"), [case[1:] for case in REFUSED], ids=[case[0] for case in REFUSED]
)
def test_refuses(data: bytes, error: type[MqttError]) -> None:
    with pytest.raises(error) as caught:
        PacketDecoder().decode(data)
    assert type(caught.value) is error


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (client_connect(level=5), ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION),
        (client_connect(level=3), ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION),
        (
            client_connect(name="MQIsdp", level=4),
            ConnectReturnCode.UNACCEPTABLE_PROTOCOL_VERSION,
        ),
        (client_connect("", clean=False), ConnectReturnCode.IDENTIFIER_REJECTED),
        (
            client_connect("", name="MQIsdp", level=3),
            ConnectReturnCode.IDENTIFIER_REJECTED,
        ),
    ],
)
def test_refuses_connect_with_a_return_code(
    data: bytes, code: ConnectReturnCode
) -> None:
    with pytest.raises(ConnectRefusedError) as caught:
        PacketDecoder().decode(data)
    assert caught.value.return_code is code


def test_decodes_byte_by_byte() -> None:
    stream = client_connect("d") + client_publish("t", bytes(300)) + PINGREQ
    decoder = PacketDecoder()
    packets: list[ClientPacket] = []
    for byte in stream:
        packets += decoder.decode(bytes([byte]))
    assert [type(packet) for packet in packets] == [Connect, Publish, PingReq]
    assert decoder.buffered == 0


def test_an_error_is_final_and_frees_the_buffer() -> None:
    decoder = PacketDecoder()
    with pytest.raises(MalformedPacketError):
        decoder.decode(b"\xf0\x00" + PINGREQ)
    assert decoder.buffered == 0
    with pytest.raises(MalformedPacketError):
        decoder.feed(PINGREQ)
    with pytest.raises(MalformedPacketError):
        decoder.next_packet()


def test_a_huge_declared_length_is_refused_before_its_body() -> None:
    decoder = PacketDecoder(max_packet_size=1024)
    decoder.feed(b"\x30" + varint(MAX_REMAINING_LENGTH))
    with pytest.raises(PacketTooLargeError):
        decoder.next_packet()
    # The limit counts the whole packet, fixed header included.
    decoder = PacketDecoder(max_packet_size=1024)
    assert decoder.decode(frame(0x30, field("t") + bytes(1024 - 3 - 3))) != []
    with pytest.raises(PacketTooLargeError):
        PacketDecoder(max_packet_size=1024).decode(
            frame(0x30, field("t") + bytes(1019))
        )


def test_an_incomplete_packet_holds_less_than_the_limit() -> None:
    decoder = PacketDecoder(max_packet_size=4096)
    packet = client_publish("t", bytes(4000))
    assert decoder.decode(packet[:-1]) == []
    assert decoder.buffered == len(packet) - 1 < 4096
    assert decoder.decode(packet[-1:]) == [Publish("t", bytes(4000))]


def test_the_limit_needs_room_for_a_packet() -> None:
    with pytest.raises(ValueError, match="two bytes"):
        PacketDecoder(max_packet_size=1)


@property_test
@given(
    packets=st.lists(
        st.one_of(
            st.builds(
                Publish,
                st.text(
                    st.characters(
                        exclude_characters="+#\x00", exclude_categories=["Cs"]
                    ),
                    min_size=1,
                    max_size=30,
                ),
                st.binary(max_size=400),
                st.booleans(),
            ),
            st.just(PingReq()),
        ),
        min_size=1,
        max_size=12,
    ),
    cuts=st.lists(st.integers(min_value=0), max_size=20),
)
def test_chunking_never_changes_what_is_decoded(
    packets: list[Publish | PingReq], cuts: list[int]
) -> None:
    stream = b"".join(
        client_publish(p.topic, p.payload, retain=p.retain)
        if isinstance(p, Publish)
        else PINGREQ
        for p in packets
    )
    points = sorted({cut % (len(stream) + 1) for cut in cuts} | {0, len(stream)})
    decoder = PacketDecoder()
    decoded: list[ClientPacket] = []
    for start, end in itertools.pairwise(points):
        decoded += decoder.decode(stream[start:end])
    assert decoded == packets


# ---------------------------------------------------------------- encoding


def test_encodes_server_packets_exactly() -> None:
    assert encode_connack() == b"\x20\x02\x00\x00"
    assert encode_connack(session_present=True) == b"\x20\x02\x01\x00"
    assert encode_connack(ConnectReturnCode.NOT_AUTHORIZED) == b"\x20\x02\x00\x05"
    assert encode_pingresp() == b"\xd0\x00"
    assert encode_suback(10, [0, 0x80]) == b"\x90\x04\x00\x0a\x00\x80"
    assert encode_unsuback(7) == b"\xb0\x02\x00\x07"
    assert encode_publish("t", b"x") == b"\x30\x04\x00\x01tx"
    assert encode_publish("t", b"x", retain=True)[0] == 0x31


@pytest.mark.parametrize(
    ("length", "encoded"),
    [
        (0, b"\x00"),
        (127, b"\x7f"),
        (128, b"\x80\x01"),
        (16383, b"\xff\x7f"),
        (16384, b"\x80\x80\x01"),
        (2_097_151, b"\xff\xff\x7f"),
        (2_097_152, b"\x80\x80\x80\x01"),
        (MAX_REMAINING_LENGTH, b"\xff\xff\xff\x7f"),
    ],
)
def test_remaining_length_encoding(length: int, encoded: bytes) -> None:
    assert encode_remaining_length(length) == encoded
    assert varint(length) == encoded


def test_publish_round_trips_at_length_boundaries() -> None:
    for size in (0, 124, 125, 16380, 16381, 70_000):
        packet = encode_publish("t", bytes(size))
        assert decode_one(packet, max_packet_size=80_000) == Publish("t", bytes(size))


@pytest.mark.parametrize(
    "build",
    [
        lambda: encode_remaining_length(MAX_REMAINING_LENGTH + 1),
        lambda: encode_remaining_length(-1),
        lambda: encode_connack(ConnectReturnCode.NOT_AUTHORIZED, session_present=True),
        lambda: encode_publish("", b""),
        lambda: encode_publish("a/#", b""),
        lambda: encode_publish("a\x00", b""),
        lambda: encode_publish("t" * 65536, b""),
        lambda: encode_suback(1, []),
        lambda: encode_suback(1, [3]),
    ],
)
def test_refuses_to_build_invalid_packets(build: Callable[[], bytes]) -> None:
    with pytest.raises(ValueError, match=r"."):
        build()


# ---------------------------------------------------------------- connection rules


def connected(data: bytes = b"") -> ServerConnection:
    connection = ServerConnection()
    assert connection.receive(client_connect("d")) == [Connect(4, "d", True, 60)]
    connection.accept()
    assert connection.data_to_send() == b"\x20\x02\x00\x00"
    if data:
        connection.receive(data)
    return connection


def test_connect_must_come_first() -> None:
    connection = ServerConnection()
    with pytest.raises(MalformedPacketError, match="before CONNECT"):
        connection.receive(PINGREQ)
    assert connection.state is ConnectionState.CLOSED
    assert connection.receive(client_connect()) == []


def test_nothing_is_processed_until_the_connect_is_answered() -> None:
    connection = ServerConnection()
    packets = connection.receive(client_connect("d") + client_publish("t", b"1"))
    assert packets == [Connect(4, "d", True, 60)]
    assert connection.state is ConnectionState.CONNECT_PENDING
    assert connection.receive(client_publish("t", b"2")) == []
    assert connection.data_to_send() == b""
    connection.accept()
    assert connection.receive(b"") == [Publish("t", b"1"), Publish("t", b"2")]
    assert connection.connect == Connect(4, "d", True, 60)


def test_a_refused_client_gets_its_connack_and_nothing_more() -> None:
    connection = ServerConnection()
    connection.receive(client_connect("d") + client_publish("t", b"x"))
    connection.refuse(ConnectReturnCode.BAD_USERNAME_OR_PASSWORD)
    assert connection.data_to_send() == b"\x20\x02\x00\x04"
    assert connection.state is ConnectionState.CLOSED
    assert connection.receive(b"") == []


def test_an_unsupported_protocol_level_is_answered_before_closing() -> None:
    connection = ServerConnection()
    with pytest.raises(ConnectRefusedError):
        connection.receive(client_connect(level=5))
    assert connection.data_to_send() == b"\x20\x02\x00\x01"
    assert connection.state is ConnectionState.CLOSED


def test_a_second_connect_breaks_the_connection() -> None:
    connection = connected()
    with pytest.raises(MalformedPacketError, match="second CONNECT"):
        connection.receive(client_connect("d"))
    second = connected()
    with pytest.raises(ConnectRefusedError):
        second.receive(client_connect(level=5))
    assert second.data_to_send() == b""
    assert second.state is ConnectionState.CLOSED


def test_pings_and_subscriptions_are_answered() -> None:
    connection = connected()
    packets = connection.receive(
        PINGREQ
        + client_subscribe(3, [("devices/p2p/x", 2), ("b", 1)])
        + client_unsubscribe(4, ["b"])
    )
    assert [type(packet) for packet in packets] == [PingReq, Subscribe, Unsubscribe]
    assert connection.data_to_send() == (
        b"\xd0\x00" + b"\x90\x04\x00\x03\x00\x00" + b"\xb0\x02\x00\x04"
    )


def test_nothing_after_disconnect_is_processed() -> None:
    connection = connected()
    assert connection.receive(DISCONNECT + client_publish("t", b"x")) == [Disconnect()]
    assert connection.state is ConnectionState.CLOSED
    assert connection.receive(PINGREQ) == []
    assert connection.data_to_send() == b""


def test_publish_only_on_an_accepted_connection() -> None:
    connection = ServerConnection()
    with pytest.raises(RuntimeError):
        connection.publish("t", b"x")
    connection.receive(client_connect())
    with pytest.raises(RuntimeError):
        connection.publish("t", b"x")
    connection.accept()
    connection.data_to_send()
    connection.publish("t", b"x")
    assert connection.data_to_send() == encode_publish("t", b"x")
    with pytest.raises(RuntimeError):
        connection.refuse(ConnectReturnCode.NOT_AUTHORIZED)
    with pytest.raises(RuntimeError):
        connection.accept()


def test_refuse_needs_a_refusing_code() -> None:
    connection = ServerConnection()
    connection.receive(client_connect())
    with pytest.raises(ValueError, match="refusing return code"):
        connection.refuse(ConnectReturnCode.ACCEPTED)


def test_a_client_may_not_flood_before_its_connack() -> None:
    connection = ServerConnection(max_packet_size=2048)
    connection.receive(client_connect())
    connection.receive(client_publish("t", bytes(1500)))
    with pytest.raises(PacketTooLargeError):
        connection.receive(client_publish("t", bytes(1500)))
    assert connection.state is ConnectionState.CLOSED


# ---------------------------------------------------------------- fuzz


def corpus() -> list[bytes]:
    return [
        client_connect("xiaozhi-a1b2", username="dev", password=b"pw", keepalive=240),
        client_connect("d", will=("w", b"bye", 1, False)),
        client_connect("old", name="MQIsdp", level=3),
        client_publish("device-server", HELLO),
        client_publish(
            "device-server", json.dumps({"type": "mcp", "payload": {"id": 1}}).encode()
        ),
        client_subscribe(1, [("devices/p2p/a1b2", 2)]),
        client_unsubscribe(2, ["devices/p2p/a1b2"]),
        PINGREQ,
        DISCONNECT,
    ]


def mutate(rng: random.Random, packets: list[bytes]) -> bytes:
    """Return a stream of a CONNECT and packets, with one to three mutations."""
    data = bytearray(packets[rng.randrange(3)])
    for _ in range(rng.randrange(0, 4)):
        data += rng.choice(packets)
    for _ in range(rng.randint(1, 3)):
        mutation = rng.randrange(9)
        spot = rng.randrange(len(data) + 1)
        if mutation == 0 and data:  # flip a bit
            index = rng.randrange(len(data))
            data[index] ^= 1 << rng.randrange(8)
        elif mutation == 1 and data:  # replace a byte
            data[rng.randrange(len(data))] = rng.randrange(256)
        elif mutation == 2:  # insert bytes
            data[spot:spot] = rng.randbytes(rng.randint(1, 8))
        elif mutation == 3 and data:  # delete a run
            del data[spot : spot + rng.randint(1, 8)]
        elif mutation == 4:  # truncate
            del data[spot:]
        elif mutation == 5 and len(data) > 2:  # lie about a remaining length
            data[1 : 1 + rng.randint(1, 4)] = rng.choice(
                [
                    b"\xff\xff\xff\xff",
                    b"\xff\xff\xff\x7f",
                    b"\x80",
                    bytes([rng.randrange(256)]),
                ]
            )
        elif mutation == 6 and len(data) > 8:  # lie about a string length
            index = rng.randrange(2, len(data) - 2)
            data[index : index + 2] = struct.pack(
                ">H", rng.choice([0, 1, 0xFFFF, rng.randrange(1 << 16)])
            )
        elif mutation == 7 and data:  # change type and flags
            data[0] = rng.randrange(256)
        else:  # splice random bytes
            data[spot:spot] = rng.randbytes(rng.randint(1, 64))
    return bytes(data)


def chunks(rng: random.Random, data: bytes) -> Iterator[bytes]:
    start = 0
    while start < len(data):
        end = start + rng.randint(1, 200)
        yield data[start:end]
        start = end


def run_stream(
    rng: random.Random, data: bytes, max_packet_size: int
) -> tuple[str, int]:
    """Feed one stream through a decoder and a connection; return the outcome."""
    decoder = PacketDecoder(max_packet_size)
    connection = ServerConnection(max_packet_size)
    decoded = 0
    try:
        for chunk in chunks(rng, data):
            decoded += len(decoder.decode(chunk))
            assert decoder.buffered < max_packet_size
            for packet in connection.receive(chunk):
                if isinstance(packet, Connect):
                    connection.accept()
                    connection.receive(b"")
    except MqttError as err:
        return type(err).__name__, decoded
    return "decoded", decoded


def test_fuzz_mutated_streams_are_decoded_or_refused_cleanly() -> None:
    rng = random.Random(FUZZ_SEED)
    packets = corpus()
    outcomes: dict[str, int] = {}
    decoded_packets = 0
    for case in range(FUZZ_CASES):
        data = mutate(rng, packets)
        limit = rng.choice([DEFAULT_MAX_PACKET_SIZE, 256])
        try:
            outcome, decoded = run_stream(rng, data, limit)
        except Exception as err:  # the point: any other exception fails
            pytest.fail(f"case {case} (seed {FUZZ_SEED}) raised {err!r} for {data!r}")
        outcomes[outcome] = outcomes.get(outcome, 0) + 1
        decoded_packets += decoded
    print(
        f"MQTT fuzz: {FUZZ_CASES} mutated streams, outcomes {outcomes}, {decoded_packets} packets decoded"
    )
    assert sum(outcomes.values()) == FUZZ_CASES >= 10_000
    assert {
        "decoded",
        "MalformedPacketError",
        "PacketTooLargeError",
        "UnsupportedPacketError",
        "ConnectRefusedError",
    } <= set(outcomes)


# ---------------------------------------------------------------- real sockets

CONNECT_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Account:
    username: str
    password: bytes


@dataclass(frozen=True)
class Closed:
    client_id: str | None
    reason: str


class MiniBroker:
    """An MQTT endpoint on ServerConnection: a credential check and routing by client id."""

    def __init__(self, accounts: dict[str, Account] | None = None) -> None:
        self.accounts = accounts
        self.packets: asyncio.Queue[tuple[str, ClientPacket]] = asyncio.Queue()
        self.closed: asyncio.Queue[Closed] = asyncio.Queue()
        self.clients: dict[str, tuple[ServerConnection, asyncio.StreamWriter]] = {}
        self._handlers: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def stop(self) -> None:
        assert self._server is not None
        self._server.close()
        for _, writer in self.clients.values():
            writer.close()
        if self._handlers:
            await asyncio.wait(self._handlers)
        await self._server.wait_closed()

    def push(self, client_id: str, topic: str, payload: bytes) -> None:
        connection, writer = self.clients[client_id]
        connection.publish(topic, payload)
        writer.write(connection.data_to_send())

    def decide(self, connect: Connect) -> ConnectReturnCode:
        if self.accounts is None:
            return ConnectReturnCode.ACCEPTED
        account = self.accounts.get(connect.client_id)
        if account is None:
            return ConnectReturnCode.NOT_AUTHORIZED
        if (connect.username, connect.password) != (account.username, account.password):
            return ConnectReturnCode.BAD_USERNAME_OR_PASSWORD
        return ConnectReturnCode.ACCEPTED

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        connection = ServerConnection()
        session = _Session(self, connection, writer)
        try:
            session.reason = await session.run(reader)
        except MqttError as err:
            session.reason = f"{type(err).__name__}: {err}"
        except ConnectionError:
            session.reason = "connection reset"
        finally:
            with contextlib.suppress(ConnectionError):
                writer.write(connection.data_to_send())
            if (
                session.client_id
                and self.clients.get(session.client_id, (None,))[0] is connection
            ):
                del self.clients[session.client_id]
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
            self.closed.put_nowait(Closed(session.client_id, session.reason))
            self._handlers.discard(task)


class _Session:
    """One connection of the MiniBroker: its loop and keep-alive watchdog."""

    def __init__(
        self,
        broker: MiniBroker,
        connection: ServerConnection,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.broker = broker
        self.connection = connection
        self.writer = writer
        self.client_id: str | None = None
        self.reason = "connection lost"

    async def run(self, reader: asyncio.StreamReader) -> str:
        loop = asyncio.get_running_loop()
        deadline: float | None = loop.time() + CONNECT_TIMEOUT_S
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    data = await reader.read(4096)
            except TimeoutError:
                return "keepalive expired" if self.client_id else "no CONNECT"
            if not data:
                return "connection lost"
            packets = self.connection.receive(data)
            if packets:
                connect = self.connection.connect
                timeout = connect.keepalive_timeout if connect else None
                deadline = None if timeout is None else loop.time() + timeout
            if (reason := self.handle(packets)) is not None:
                return reason
            self.writer.write(self.connection.data_to_send())

    def handle(self, packets: list[ClientPacket]) -> str | None:
        pending = list(packets)
        while pending:
            packet = pending.pop(0)
            if isinstance(packet, Connect):
                code = self.broker.decide(packet)
                if code is not ConnectReturnCode.ACCEPTED:
                    self.connection.refuse(code)
                    return f"refused {code.name}"
                self.connection.accept()
                self.client_id = packet.client_id
                self.broker.clients[packet.client_id] = (self.connection, self.writer)
                pending += self.connection.receive(b"")
                continue
            assert self.client_id is not None
            self.broker.packets.put_nowait((self.client_id, packet))
            if isinstance(packet, Disconnect):
                return "client disconnected"
        return None


class PahoDevice:
    """paho-mqtt as the device, its sockets driven by this event loop."""

    def __init__(
        self,
        client_id: str,
        *,
        username: str | None = None,
        password: str | None = None,
        protocol: MQTTProtocolVersion = MQTTProtocolVersion.MQTTv311,
    ) -> None:
        self.loop = asyncio.get_running_loop()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=protocol
        )
        if username is not None:
            self.client.username_pw_set(username, password)
        self.connack: asyncio.Future[ReasonCode] = self.loop.create_future()
        self.disconnected: asyncio.Future[ReasonCode] = self.loop.create_future()
        self.messages: asyncio.Queue[tuple[str, bytes]] = asyncio.Queue()
        self.subacks: asyncio.Queue[list[ReasonCode]] = asyncio.Queue()
        self.unsubacks: asyncio.Queue[list[ReasonCode]] = asyncio.Queue()
        self.pingresps: asyncio.Queue[None] = asyncio.Queue()
        self._misc: asyncio.TimerHandle | None = None
        client = self.client
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_message = lambda _c, _u, msg: self.messages.put_nowait(
            (msg.topic, msg.payload)
        )
        client.on_subscribe = lambda _c, _u, _m, codes, _p: self.subacks.put_nowait(
            codes
        )
        client.on_unsubscribe = lambda _c, _u, _m, codes, _p: self.unsubacks.put_nowait(
            codes
        )
        client.on_log = self._on_log
        client.on_socket_open = self._watch_reads
        client.on_socket_close = self._unwatch
        client.on_socket_register_write = self._watch_writes
        client.on_socket_unregister_write = self._unwatch_writes

    def connect(self, port: int, keepalive: int = 60) -> None:
        self.client.connect("127.0.0.1", port, keepalive)

    def keep_alive(self) -> None:
        """Run paho's timer duties (it sends PINGREQ when the link is quiet)."""
        self.client.loop_misc()
        self._misc = self.loop.call_later(0.1, self.keep_alive)

    async def close(self) -> None:
        if self._misc is not None:
            self._misc.cancel()
        if not self.disconnected.done():
            self.client.disconnect()
            await self.disconnected
        if (sock := self.client.socket()) is not None:
            self._unwatch(self.client, None, sock)

    def _watch_reads(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.add_reader(sock, client.loop_read)

    def _unwatch(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.remove_reader(sock)
        self.loop.remove_writer(sock)

    def _watch_writes(self, client: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.add_writer(sock, client.loop_write)

    def _unwatch_writes(self, _c: paho.Client, _u: Any, sock: Any) -> None:
        self.loop.remove_writer(sock)

    def _on_connect(
        self, _c: Any, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if not self.connack.done():
            self.connack.set_result(reason)

    def _on_disconnect(
        self, _c: Any, _u: Any, _flags: Any, reason: ReasonCode, _props: Any
    ) -> None:
        if self._misc is not None:
            self._misc.cancel()
        if not self.disconnected.done():
            self.disconnected.set_result(reason)

    def _on_log(self, _c: Any, _u: Any, _level: int, message: str) -> None:
        if message == "Received PINGRESP":
            self.pingresps.put_nowait(None)


ACCOUNTS = {
    "xiaozhi-aa": Account("aa", b"secret-aa"),
    "xiaozhi-bb": Account("bb", b"secret-bb"),
}


@pytest.fixture
async def broker(socket_enabled: None) -> AsyncIterator[tuple[MiniBroker, int]]:
    mini = MiniBroker(ACCOUNTS)
    port = await mini.start()
    yield mini, port
    await mini.stop()


@pytest.fixture
async def paho_devices() -> AsyncIterator[list[PahoDevice]]:
    created: list[PahoDevice] = []
    yield created
    for device in created:
        await device.close()


async def connect_device(
    paho_devices: list[PahoDevice],
    port: int,
    client_id: str,
    keepalive: int = 60,
    **kwargs: Any,
) -> tuple[PahoDevice, ReasonCode]:
    device = PahoDevice(client_id, **kwargs)
    paho_devices.append(device)
    device.connect(port, keepalive)
    return device, await device.connack


async def test_device_connects_with_its_credentials(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    _, reason = await connect_device(
        paho_devices, port, "xiaozhi-aa", username="aa", password="secret-aa"
    )
    assert reason == 0
    assert list(mini.clients) == ["xiaozhi-aa"]
    assert mini.clients["xiaozhi-aa"][0].connect == Connect(
        4, "xiaozhi-aa", True, 60, "aa", b"secret-aa"
    )


async def test_anonymous_connect_where_allowed(
    socket_enabled: None, paho_devices: list[PahoDevice]
) -> None:
    mini = MiniBroker(accounts=None)
    port = await mini.start()
    try:
        device, reason = await connect_device(paho_devices, port, "anyone")
        assert reason == 0
        await device.close()
        assert (await mini.closed.get()).reason == "client disconnected"
    finally:
        await mini.stop()


@pytest.mark.parametrize(
    ("client_id", "username", "password", "expected"),
    [
        ("xiaozhi-aa", "aa", "wrong", "Bad user name or password"),
        ("xiaozhi-aa", "bb", "secret-bb", "Bad user name or password"),
        ("xiaozhi-aa", None, None, "Bad user name or password"),
        ("xiaozhi-zz", "aa", "secret-aa", "Not authorized"),
    ],
)
async def test_wrong_or_other_device_credentials_are_refused(
    broker: tuple[MiniBroker, int],
    paho_devices: list[PahoDevice],
    client_id: str,
    username: str | None,
    password: str | None,
    expected: str,
) -> None:
    mini, port = broker
    device, reason = await connect_device(
        paho_devices, port, client_id, username=username, password=password
    )
    assert reason.is_failure
    assert str(reason) == expected
    await device.disconnected
    assert (await mini.closed.get()).reason.startswith("refused")
    assert mini.clients == {}


async def test_publish_both_ways_without_a_subscription(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices, port, "xiaozhi-aa", username="aa", password="secret-aa"
    )
    device.client.publish("device-server", HELLO, qos=0)
    assert await mini.packets.get() == ("xiaozhi-aa", Publish("device-server", HELLO))
    reply = json.dumps(
        {"type": "hello", "transport": "udp", "session_id": "1"}
    ).encode()
    mini.push("xiaozhi-aa", "devices/p2p/aa", reply)
    mini.push("xiaozhi-aa", "devices/p2p/aa", bytes(20_000))
    assert await device.messages.get() == ("devices/p2p/aa", reply)
    assert await device.messages.get() == ("devices/p2p/aa", bytes(20_000))


async def test_old_firmware_subscribes_and_unsubscribes(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices, port, "xiaozhi-bb", username="bb", password="secret-bb"
    )
    device.client.subscribe("devices/p2p/bb", qos=2)
    granted = await device.subacks.get()
    assert [code.value for code in granted] == [0]
    _, packet = await mini.packets.get()
    assert packet == Subscribe(1, (Subscription("devices/p2p/bb", 2),))
    mini.push("xiaozhi-bb", "devices/p2p/bb", b"{}")
    assert await device.messages.get() == ("devices/p2p/bb", b"{}")
    device.client.unsubscribe("devices/p2p/bb")
    await device.unsubacks.get()
    assert isinstance((await mini.packets.get())[1], Unsubscribe)


async def test_pings_keep_a_quiet_device_connected(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices,
        port,
        "xiaozhi-aa",
        keepalive=1,
        username="aa",
        password="secret-aa",
    )
    device.keep_alive()
    for _ in range(3):
        await device.pingresps.get()
        assert await mini.packets.get() == ("xiaozhi-aa", PingReq())
    assert not device.disconnected.done()
    assert mini.closed.empty()


async def test_a_silent_device_is_dropped_after_one_and_a_half_keepalives(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices,
        port,
        "xiaozhi-aa",
        keepalive=1,
        username="aa",
        password="secret-aa",
    )
    # paho's timer duties never run: it sends no PINGREQ, like a device whose
    # power was cut.
    assert await mini.closed.get() == Closed("xiaozhi-aa", "keepalive expired")
    assert (await device.disconnected).is_failure
    assert mini.clients == {}


async def test_clean_disconnect(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices, port, "xiaozhi-bb", username="bb", password="secret-bb"
    )
    device.client.disconnect()
    assert await device.disconnected == 0
    assert await mini.packets.get() == ("xiaozhi-bb", Disconnect())
    assert await mini.closed.get() == Closed("xiaozhi-bb", "client disconnected")


async def test_qos_1_publish_closes_the_connection(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices, port, "xiaozhi-aa", username="aa", password="secret-aa"
    )
    device.client.publish("device-server", HELLO, qos=1)
    closed = await mini.closed.get()
    assert closed.reason.startswith("UnsupportedPacketError")
    assert (await device.disconnected).is_failure


async def test_mqtt_3_1_client_is_served(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, reason = await connect_device(
        paho_devices,
        port,
        "xiaozhi-aa",
        username="aa",
        password="secret-aa",
        protocol=MQTTProtocolVersion.MQTTv31,
    )
    assert reason == 0
    device.client.publish("device-server", b"{}")
    assert await mini.packets.get() == ("xiaozhi-aa", Publish("device-server", b"{}"))


async def test_mqtt_5_client_is_told_the_version_is_unsupported(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, reason = await connect_device(
        paho_devices,
        port,
        "xiaozhi-aa",
        username="aa",
        password="secret-aa",
        protocol=MQTTProtocolVersion.MQTTv5,
    )
    assert str(reason) == "Unsupported protocol version"
    assert (await mini.closed.get()).reason.startswith("ConnectRefusedError")
    await device.disconnected


async def test_fuzzed_connections_next_to_a_healthy_device(
    broker: tuple[MiniBroker, int], paho_devices: list[PahoDevice]
) -> None:
    mini, port = broker
    device, _ = await connect_device(
        paho_devices, port, "xiaozhi-aa", username="aa", password="secret-aa"
    )
    rng = random.Random(FUZZ_SEED + 1)
    packets = corpus()
    streams = 300
    for _ in range(streams):
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(mutate(rng, packets))
        with contextlib.suppress(ConnectionError):
            await writer.drain()
            writer.write_eof()
            await reader.read()  # until the server closes its side
        writer.close()
        await writer.wait_closed()
    reasons = {(await mini.closed.get()).reason.split(" ")[0] for _ in range(streams)}
    allowed = {"refused", "connection", "MalformedPacketError:", "PacketTooLargeError:"}
    allowed |= {"UnsupportedPacketError:", "ConnectRefusedError:"}
    assert reasons <= allowed
    assert "MalformedPacketError:" in reasons
    assert list(mini.clients) == ["xiaozhi-aa"]
    device.client.publish("device-server", HELLO)
    assert await mini.packets.get() == ("xiaozhi-aa", Publish("device-server", HELLO))
    mini.push("xiaozhi-aa", "devices/p2p/aa", b"{}")
    assert await device.messages.get() == ("devices/p2p/aa", b"{}")
    assert not device.disconnected.done()
