"""Fuzz the MQTT endpoint next to a healthy device: over 10,000 malformed packets.

A second paired device's credentials open the fuzzing connections (the first
device stays connected through all of it). Two kinds of malformed packets, from
a fixed seed (``XIAOZHI_FUZZ_SEED`` picks another):

* broken MQTT: mutated CONNECTs and packets after a valid CONNECT (bit flips,
  lying lengths, reserved types and flags, truncation, random bytes), each stream
  ending the connection at its first bad packet;
* broken messages in valid PUBLISHes: mutated JSON of every message the
  firmware sends, wrong types, invalid UTF-8, random bytes, deep nesting; the
  connection must survive them.

At the end no error and no traceback of ours was logged, the healthy device
still has the same link and answers, and once it leaves no connection and no
task of the integration is left.
"""

import asyncio
from collections.abc import Callable
import contextlib
from dataclasses import replace
import json
import logging
import os
import random
import struct
from typing import Any

import pytest

from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.protocol.mqtt import encode_remaining_length
from custom_components.xiaozhi.server.registry import async_get_server
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

FUZZ_SEED = int(os.environ.get("XIAOZHI_FUZZ_SEED", "20261202"))
OTHER_MAC = "aa:bb:cc:dd:ee:01"
BROKEN_STREAMS = 3000
BROKEN_MESSAGES = 8000
PER_CONNECTION = 150  # under the burst of the message rate limit
LOGGER_NAME = "custom_components.xiaozhi"

MESSAGES: list[dict[str, Any]] = [
    {
        "type": "hello",
        "version": 3,
        "transport": "udp",
        "features": {"mcp": True},
        "audio_params": {"format": "opus", "sample_rate": 16000, "channels": 1},
    },
    {"session_id": "x", "type": "listen", "state": "start", "mode": "auto"},
    {"session_id": "x", "type": "listen", "state": "detect", "text": "你好小智"},
    {"session_id": "x", "type": "listen", "state": "stop"},
    {"session_id": "x", "type": "abort", "reason": "wake_word_detected"},
    {"session_id": "x", "type": "goodbye"},
    {"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}}},
    {"type": "mcp", "payload": {"jsonrpc": "2.0", "id": 2, "error": {"message": "no"}}},
    {"type": "iot", "descriptors": []},
]


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack(">H", len(raw)) + raw


def packet(first: int, body: bytes) -> bytes:
    return bytes([first]) + encode_remaining_length(len(body)) + body


def connect_packet(section: dict[str, Any], keepalive: int = 60) -> bytes:
    body = _text("MQTT") + bytes([4, 0xC2]) + struct.pack(">H", keepalive)
    body += _text(section["client_id"]) + _text(section["username"])
    body += _text(section["password"])
    return packet(0x10, body)


def publish_packet(topic: str, payload: bytes) -> bytes:
    return packet(0x30, _text(topic) + payload)


def client_packets(section: dict[str, Any]) -> list[bytes]:
    topic = section["publish_topic"]
    return [
        *(publish_packet(topic, json.dumps(m).encode()) for m in MESSAGES),
        packet(
            0x82, struct.pack(">H", 7) + _text(section["subscribe_topic"]) + b"\x02"
        ),
        packet(0xA2, struct.pack(">H", 8) + _text(section["subscribe_topic"])),
        packet(0xC0, b""),
    ]


def mutate_bytes(rng: random.Random, data: bytes) -> bytes:
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        spot = rng.randrange(len(out) + 1)
        match rng.randrange(7):
            case 0 if out:
                out[rng.randrange(len(out))] ^= 1 << rng.randrange(8)
            case 1 if out:
                out[rng.randrange(len(out))] = rng.randrange(256)
            case 2:
                out[spot:spot] = rng.randbytes(rng.randint(1, 16))
            case 3:
                del out[spot : spot + rng.randint(1, 8)]
            case 4 if len(out) > 2:
                out[1 : 1 + rng.randint(1, 4)] = rng.choice(
                    [b"\xff\xff\xff\xff", b"\x80", bytes([rng.randrange(256)])]
                )
            case 5 if out:
                out[0] = rng.randrange(256)
            case _:
                del out[spot:]
    return bytes(out)


def broken_stream(rng: random.Random, section: dict[str, Any]) -> bytes:
    """A stream whose CONNECT, or a packet after it, is malformed."""
    packets = client_packets(section)
    if rng.random() < 0.3:
        return mutate_bytes(rng, connect_packet(section))
    good = b"".join(rng.choice(packets) for _ in range(rng.randrange(3)))
    return connect_packet(section) + good + mutate_bytes(rng, rng.choice(packets))


def broken_message(rng: random.Random) -> bytes:
    """A PUBLISH payload that is not a valid message."""
    choice = rng.randrange(8)
    if choice == 0:
        return rng.randbytes(rng.randint(0, 64))
    if choice == 1:
        return b"\xff\xfe" + json.dumps(rng.choice(MESSAGES)).encode()[2:]
    if choice == 2:
        depth = rng.choice([64, 1000, 20000])
        return b"[" * depth + b"]" * depth
    if choice == 3:
        return rng.choice([b"null", b"[]", b'"hello"', b"1e999", b"{}", b""])
    message = dict(rng.choice(MESSAGES))
    key = rng.choice([*message, "session_id", "payload", "state", "audio_params"])
    message[key] = rng.choice(
        [None, 1, -1, 2**70, 1.5, "", "x" * 300, [], {}, True, {"format": 3}]
    )
    text = json.dumps(message).encode()
    return mutate_bytes(rng, text) if choice == 7 else text


async def send_stream(port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection(LOCALHOST, port)
    writer.write(data)
    with contextlib.suppress(ConnectionError):
        await writer.drain()
        writer.write_eof()
        await reader.read()  # until the server closes its side
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


async def test_malformed_packets_next_to_a_healthy_device(
    ha_core: HomeAssistant,
    socket_enabled: None,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    ha_core.data[DATA_MQTT_SETTINGS] = MqttSettings(
        host=LOCALHOST, mqtt_port=0, udp_port=0
    )
    healthy_entry, fuzz_entry = make_device_entry(), make_device_entry(mac=OTHER_MAC)
    for entry in (healthy_entry, fuzz_entry):
        entry.add_to_hass(ha_core)
        assert await ha_core.config_entries.async_setup(entry.entry_id)
    # The streams come much faster than a device may connect, over many
    # connections: the rate limits are tested elsewhere; here, the parsing.
    server = async_get_server(ha_core)
    server.limits = replace(
        server.limits,
        messages_per_second=1e9,
        message_burst=10**9,
        connections_per_second=1e9,
        connection_burst=10**9,
    )
    endpoint = async_get_mqtt(ha_core)
    client = await hass_client_no_auth()
    healthy = MqttDevice((await check_in(client))["mqtt"])
    mqtt_devices.append(healthy)
    assert str(await healthy.connect()) == "Success"
    runtime = runtime_of(healthy_entry)
    await wait_until(runtime, lambda: runtime.connected)
    link = runtime.link
    section = (await check_in(client, mac=OTHER_MAC))["mqtt"]

    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    rng = random.Random(FUZZ_SEED)
    for _ in range(BROKEN_STREAMS):
        await send_stream(endpoint.mqtt_port, broken_stream(rng, section))
    sent = 0
    topic = section["publish_topic"]
    while sent < BROKEN_MESSAGES:
        batch = [
            publish_packet(topic, broken_message(rng)) for _ in range(PER_CONNECTION)
        ]
        await send_stream(endpoint.mqtt_port, connect_packet(section) + b"".join(batch))
        sent += len(batch)
    assert BROKEN_STREAMS + sent >= 10_000

    ours = [r for r in caplog.records if r.name.startswith(LOGGER_NAME)]
    assert [r.getMessage() for r in ours if r.levelno >= logging.ERROR] == []
    assert [r.getMessage() for r in ours if r.exc_info] == []
    # Many kinds of bad input were seen and survived.
    assert sum("Ignoring malformed message" in r.getMessage() for r in ours) > 100
    # The healthy device never noticed.
    assert runtime.link is link
    assert link is not None
    assert not link.closed
    await link.send_alert("Hi", "still here", "happy")
    alert = await healthy.next_message("alert")
    assert alert["message"] == "still here"
    hello = await healthy.hello()
    assert hello["session_id"]
    await healthy.close()
    await wait_until(runtime, lambda: runtime.link is None)
    async with asyncio.timeout(10):
        while endpoint.connections or session_tasks():
            await asyncio.sleep(0.01)
