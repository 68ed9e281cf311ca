"""Fuzz the device endpoint: over 10,000 random and mutated frames on real sockets.

Hypothesis generates batches of frames from a fixed seed (``XIAOZHI_FUZZ_SEED``
picks another, ``XIAOZHI_FUZZ_BATCHES`` runs longer): valid hello / listen /
abort / MCP messages with mutated fields and bytes, v1/v2/v3 binary frames with
wrong types and sizes, real and mangled Opus, pathological JSON, random bytes, and
rare frames at and over the size limits, invalid UTF-8 text and stray
continuation frames (which must close the socket). Each batch goes to the paired device's endpoint over a real WebSocket,
reconnecting whenever the server closes one, and ends with a hello round trip so
the server has handled all of it before its log is checked.

At the end: no error was logged and no traceback of ours at any level, a fresh
device completes hello, MCP discovery, a listen with audio and a tool call, and
no task of the integration is left over.

The batches are generated before sending (the server is shared across them, so
shrinking a failure would not be meaningful); a failing batch is printed.
"""

import asyncio
from collections.abc import Callable
import contextlib
import copy
from dataclasses import dataclass, field, replace
import json
import logging
import os
import random
import time
from typing import Any

from aiohttp import WSCloseCode, WSMsgType
from hypothesis import HealthCheck, Phase, given, seed, settings, strategies as st
import pytest

from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.protocol.codec import MAX_OPUS_PACKET_BYTES, OpusEncoder
from custom_components.xiaozhi.protocol.framing import (
    DEFAULT_MAX_FRAME_PAYLOAD,
    V2_HEADER,
    V3_HEADER,
)
from custom_components.xiaozhi.protocol.messages import (
    DEFAULT_MAX_JSON_SIZE,
    ListenMode,
)
from custom_components.xiaozhi.server.registry import async_get_server
from custom_components.xiaozhi.transport.websocket import MAX_MESSAGE_BYTES, CloseCode
from simulator.device import ChannelClosedError, SimTool, SimulatedDevice
from tests.helpers.devices import DeviceFactory, Recorder, tone, wait_until

FUZZ_SEED = int(os.environ.get("XIAOZHI_FUZZ_SEED", "20261125"))
BATCHES = int(os.environ.get("XIAOZHI_FUZZ_BATCHES", "300"))
FRAMES_PER_BATCH = (50, 60)
MIN_FRAMES = 10_000
LOGGER_NAME = "custom_components.xiaozhi"
TOOLS = [SimTool("self.get_device_status", "Status"), SimTool("self.reboot")]

# ---------------------------------------------------------------- frames


@dataclass(frozen=True)
class Frame:
    """One WebSocket frame to send, and the close code it must draw, if any."""

    opcode: WSMsgType
    data: bytes
    closes_with: CloseCode | None = None

    def __repr__(self) -> str:
        data = self.data if len(self.data) <= 80 else self.data[:80] + b"..."
        return f"Frame({self.opcode.name}, {len(self.data)} B, {data!r})"


@dataclass(frozen=True)
class Material:
    """What Hypothesis draws for one batch: the connection and JSON to mangle."""

    protocol_version: int
    mcp: bool
    messages: list[bytes]


@dataclass(frozen=True)
class Batch:
    """Frames for one connection (reopened if the server closes it)."""

    protocol_version: int
    mcp: bool
    hello_first: bool
    frames: list[Frame]


def _opus_packets() -> list[bytes]:
    encoder = OpusEncoder(16000, 60)
    return encoder.encode(tone(440, 16000, 0.6)) + encoder.flush()


OPUS = _opus_packets()

TEMPLATES: list[dict[str, Any]] = [
    {
        "type": "hello",
        "version": 1,
        "features": {"mcp": True},
        "transport": "websocket",
        "audio_params": {
            "format": "opus",
            "sample_rate": 16000,
            "channels": 1,
            "frame_duration": 60,
        },
    },
    {"session_id": "", "type": "listen", "state": "start", "mode": "auto"},
    {"session_id": "", "type": "listen", "state": "start", "mode": "manual"},
    {"session_id": "", "type": "listen", "state": "start", "mode": "realtime"},
    {"session_id": "", "type": "listen", "state": "stop"},
    {"session_id": "", "type": "listen", "state": "detect", "text": "你好小智"},
    {"session_id": "", "type": "abort"},
    {"session_id": "", "type": "abort", "reason": "wake_word_detected"},
    {
        "session_id": "",
        "type": "mcp",
        "payload": {"jsonrpc": "2.0", "id": 1, "result": {"tools": []}},
    },
    {
        "session_id": "",
        "type": "mcp",
        "payload": {"jsonrpc": "2.0", "id": 2, "error": {"message": "no"}},
    },
    {
        "session_id": "",
        "type": "mcp",
        "payload": {"jsonrpc": "2.0", "method": "notifications/x", "params": {}},
    },
    {"session_id": "", "type": "iot", "descriptors": []},
    {"session_id": "", "type": "goodbye"},
]
VALID_MESSAGES = [json.dumps(template).encode() for template in TEMPLATES[1:8]]
KEYS = sorted({key for template in TEMPLATES for key in template} | {"id", "nope"})
NESTED_KEYS = ["mcp", "format", "sample_rate", "frame_duration", "id", "result"]

PATHOLOGICAL_TEXT = [
    b"",
    b" ",
    b"null",
    b"[]",
    b'"hello"',
    b"{",
    b"}",
    b"[" * 60000,
    b'{"type": "listen", "state": "start", "n": ' + b"9" * 5000 + b"}",
    b'{"type": "hello", "version": 1e999}',
    b'{"type": "listen", "state": "start", "x": NaN}',
    b'{"type": "abort", "x": -Infinity}',
    b'\xef\xbb\xbf{"type": "abort"}',
    b'{"type": "abort"}{"type": "abort"}',
    b'{"type": "hello", "features": {"mcp": true}}',
    b'{"type": "hello", "audio_params": {"format": "pcm"}}',
    b'{"type": "\\ud800"}',
    b'{"type": "mcp", "payload": {"id": 1, "result": {"tools": [1, {"name": 2}]}}}',
    b'{"type": "mcp", "payload": {"id": 1.0, "result": {"nextCursor": "x"}}}',
    b'{"type": "mcp", "payload": {"id": true, "result": {}}}',
    b'{"type": "mcp", "payload": {"id": 1e300, "result": {}}}',
]

# ------------------------------------------------ what Hypothesis draws: nasty JSON

json_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_leaves,
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=6), children, max_size=3)
    ),
    max_leaves=6,
)


@st.composite
def json_messages(draw: st.DrawFn) -> bytes:
    """A message the device could send, with fields replaced, removed or nested."""
    message = copy.deepcopy(draw(st.sampled_from(TEMPLATES)))
    for _ in range(draw(st.integers(1, 3))):
        key = draw(st.sampled_from(KEYS))
        match draw(st.sampled_from(["set", "delete", "nested"])):
            case "set":
                message[key] = draw(json_values)
            case "delete":
                message.pop(key, None)
            case _:
                inner = message.get(key)
                if isinstance(inner, dict):
                    inner[draw(st.sampled_from(NESTED_KEYS))] = draw(json_values)
    return json.dumps(message, ensure_ascii=draw(st.booleans())).encode()


materials = st.builds(
    Material,
    protocol_version=st.sampled_from([1, 2, 3]),
    mcp=st.booleans(),
    messages=st.lists(json_messages(), min_size=4, max_size=8),
)

# ------------------------------------------------ what the seeded Random adds


def _text_frame(data: bytes) -> Frame:
    try:
        data.decode()
    except UnicodeDecodeError:
        return Frame(WSMsgType.TEXT, data, CloseCode.INVALID_TEXT)
    return Frame(WSMsgType.TEXT, data, _size_close(data))


def _binary_frame(data: bytes) -> Frame:
    return Frame(WSMsgType.BINARY, data, _size_close(data))


def _size_close(data: bytes) -> CloseCode | None:
    return CloseCode.MESSAGE_TOO_BIG if len(data) > MAX_MESSAGE_BYTES else None


def _sized(size: int) -> bytes:
    """``size`` bytes that look like nothing in particular."""
    block = bytes(range(256))
    return (block * (size // 256 + 1))[:size]


def _json_of_size(size: int) -> bytes:
    head = b'{"type": "listen", "state": "start", "pad": "'
    return head + b"a" * (size - len(head) - 2) + b'"}'


LIMIT_FRAMES: list[Frame] = [
    _binary_frame(_sized(MAX_MESSAGE_BYTES)),
    _binary_frame(OPUS[0] + _sized(MAX_OPUS_PACKET_BYTES - len(OPUS[0]))),
    _binary_frame(OPUS[0] + _sized(MAX_OPUS_PACKET_BYTES + 1 - len(OPUS[0]))),
    _binary_frame(V3_HEADER.pack(0, 0, 0xFFFF) + _sized(0xFFFF)),
    _binary_frame(
        V2_HEADER.pack(2, 1, 0, 0, DEFAULT_MAX_FRAME_PAYLOAD)
        + _json_of_size(DEFAULT_MAX_FRAME_PAYLOAD)
    ),
    _text_frame(_json_of_size(DEFAULT_MAX_JSON_SIZE)),
    _text_frame(_json_of_size(DEFAULT_MAX_JSON_SIZE + 1)),
    _text_frame(_json_of_size(MAX_MESSAGE_BYTES)),
]
CLOSING_FRAMES: list[Frame] = [
    _binary_frame(_sized(MAX_MESSAGE_BYTES + 1)),
    _text_frame(_json_of_size(MAX_MESSAGE_BYTES + 1)),
    _text_frame(b'{"type": "abort", "x": "\xff"}'),
    Frame(WSMsgType.CONTINUATION, b"x", CloseCode.BAD_FRAME),
]


def mangle(rnd: random.Random, data: bytes) -> bytes:
    """Flip, cut, insert or repeat bytes, now and then."""
    for _ in range(rnd.choice([0, 0, 1, 2, 3])):
        if not data:
            return data
        at = rnd.randrange(len(data))
        match rnd.randrange(4):
            case 0:
                data = (
                    data[:at]
                    + bytes([data[at] ^ rnd.randrange(1, 256)])
                    + data[at + 1 :]
                )
            case 1:
                data = data[:at]
            case 2:
                data = data[:at] + rnd.randbytes(rnd.randrange(1, 5)) + data[at:]
            case _:
                data += data[at:]
    return data


def payload(rnd: random.Random, material: Material) -> bytes:
    match rnd.randrange(4):
        case 0:
            return rnd.choice(OPUS)
        case 1:
            return mangle(rnd, rnd.choice(OPUS))
        case 2:
            return rnd.choice(material.messages)
        case _:
            return rnd.randbytes(rnd.randrange(65))


def headed(rnd: random.Random, data: bytes, frame_type: int) -> bytes:
    """``data`` behind a v2 or v3 header whose fields may lie."""
    size = len(data)
    declared = rnd.choice(
        [size, size, size, max(0, size - 3), size + 1, size + 100, 0, 0xFFFF]
    )
    if rnd.random() < 0.5:
        version = rnd.choice([2, 2, 0, 3, 0xFFFF])
        timestamp = rnd.randrange(2**32)
        header = V2_HEADER.pack(version, frame_type, 0, timestamp, declared)
    else:
        header = V3_HEADER.pack(frame_type, 0, declared & 0xFFFF)
    framed = header + data
    if rnd.random() < 0.05:
        framed = framed[: rnd.randrange(len(header) + 1)]  # cut inside the header
    return framed


def frame(rnd: random.Random, material: Material) -> Frame:
    """One frame; the rare kinds (at and over the limits) are one in a thousand."""
    roll = rnd.randrange(1000)
    if roll < len(CLOSING_FRAMES):
        return CLOSING_FRAMES[roll]
    if roll < 18:
        return rnd.choice(LIMIT_FRAMES)
    if roll < 150:
        return _binary_frame(rnd.choice(OPUS))
    if roll < 200:
        return _text_frame(rnd.choice(VALID_MESSAGES))
    if roll < 450:
        text = mangle(rnd, rnd.choice(material.messages))
        if rnd.random() < 0.9:  # mostly still UTF-8: invalid text ends the socket
            text = text.decode(errors="replace").encode()
        return _text_frame(text)
    if roll < 500:
        return _text_frame(rnd.choice(PATHOLOGICAL_TEXT))
    if roll < 800:
        frame_type = rnd.choice([0, 0, 1, 2, 255])
        return _binary_frame(headed(rnd, payload(rnd, material), frame_type))
    if roll < 900:
        data = mangle(rnd, rnd.choice(material.messages))
        return _binary_frame(headed(rnd, data, 1))
    return _binary_frame(rnd.randbytes(rnd.randrange(201)))


def assemble(material: Material, index: int) -> Batch:
    rnd = random.Random(f"{FUZZ_SEED}:{index}")
    count = rnd.randint(*FRAMES_PER_BATCH)
    return Batch(
        protocol_version=material.protocol_version,
        mcp=material.mcp,
        hello_first=rnd.random() < 0.75,
        frames=[frame(rnd, material) for _ in range(count)],
    )


def generate_batches() -> list[Batch]:
    """Draw the JSON from Hypothesis, then build each batch with a seeded Random.

    Hypothesis is good at nasty values but explores by mutating its earlier
    examples, so its draws repeat a lot; the volume and the choice of frame kinds
    come from a Random seeded per batch. Nothing is shrunk: the server is shared by
    all batches, so a failing batch is reported as a whole instead.
    """
    drawn: list[Material] = []

    @seed(FUZZ_SEED)
    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(materials)
    def collect(material: Material) -> None:
        drawn.append(material)

    collect()
    return [assemble(material, index) for index, material in enumerate(drawn)]


# ---------------------------------------------------------------- sending


@dataclass
class FuzzStats:
    """What the run did, printed at the end."""

    frames: int = 0
    connections: int = 0
    closes: dict[str, int] = field(default_factory=dict)
    # Closes that no frame called for: (code, the frame sent last).
    unexpected_closes: list[tuple[int | None, Frame | None]] = field(
        default_factory=list
    )
    # The sessions' bad input counters, of the sessions that were still open.
    bad_input: dict[str, int] = field(default_factory=dict)

    def count_close(
        self, code: int | None, last: Frame | None, expected: CloseCode | None
    ) -> None:
        name = CloseCode(code).name if code in set(CloseCode) else str(code)
        self.closes[name] = self.closes.get(name, 0) + 1
        if code in (expected, CloseCode.PROTOCOL_ERROR):
            # (A hello with another audio format closes without a bad frame.)
            return
        # A device that keeps sending an oversize message is reset by the kernel
        # (the server closed with data unread), which may eat the close frame.
        reset = code == WSCloseCode.ABNORMAL_CLOSURE
        if not (reset and expected is CloseCode.MESSAGE_TOO_BIG):
            self.unexpected_closes.append((code, last))


class FuzzDevice:
    """The paired device, reconnected whenever the server closes its socket."""

    def __init__(
        self,
        make: Callable[..., SimulatedDevice],
        runtime: DeviceRuntime,
        batch: Batch,
        stats: FuzzStats,
    ) -> None:
        self._make = make
        self._runtime = runtime
        self._batch = batch
        self._stats = stats
        self.device: SimulatedDevice | None = None
        self._last: Frame | None = None

    async def open(self) -> SimulatedDevice:
        if self.device is not None and not self.device.closed:
            return self.device
        if self.device is not None:
            await self._closed(self.device)
        features = {"mcp": True} if self._batch.mcp else {}
        device = self._make(
            protocol_version=self._batch.protocol_version,
            features=features,
            tools=TOOLS,
        )
        await device.connect()
        self._stats.connections += 1
        if self._batch.hello_first:
            with contextlib.suppress(ChannelClosedError):
                await device.hello()
        self.device = device
        return device

    async def _closed(
        self, device: SimulatedDevice, expected: CloseCode | None = None
    ) -> None:
        code, _ = await device.wait_closed()
        self._stats.count_close(code, self._last, expected)

    async def send(self, frame: Frame) -> None:
        device = await self.open()
        self._last = frame
        try:
            await device.ws.send_frame(frame.data, frame.opcode)
        except ConnectionError:
            return  # the server closed it meanwhile: the frame is not counted
        self._stats.frames += 1
        if frame.closes_with is not None:
            await self._closed(device, frame.closes_with)
            self.device = None

    async def settle(self) -> None:
        """Return once the server handled everything: a hello answered, or a close."""
        device = self.device
        if device is None:
            return
        try:
            await device.hello(timeout=20)
        except ChannelClosedError:
            await self._closed(device)
            self.device = None
            return
        session = self._runtime.session
        assert session is not None
        for kind, count in session.link.bad_input.items():
            self._stats.bad_input[kind] = self._stats.bad_input.get(kind, 0) + count
        await device.close()


# ---------------------------------------------------------------- the test


def our_errors(caplog: pytest.LogCaptureFixture, since: int) -> list[str]:
    return [
        f"{record.name} {record.levelname}: {record.getMessage()}"
        for record in caplog.records[since:]
        if record.levelno >= logging.ERROR
        or (record.exc_info and record.name.startswith(LOGGER_NAME))
    ]


def integration_tasks(baseline: set[asyncio.Task[Any]]) -> list[asyncio.Task[Any]]:
    """Tasks started since ``baseline`` that are still running."""
    return [
        task
        for task in asyncio.all_tasks()
        if task not in baseline
        and not task.done()
        and task is not asyncio.current_task()
    ]


# Hypothesis 6.170 on Python 3.14 warns about its own global Random.
@pytest.mark.filterwarnings("ignore:It looks like `register_random`")
@pytest.mark.timeout(180)  # about 10 s alone; give a loaded CI machine room
async def test_fuzzed_frames_never_break_the_server(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO)
    # The frames come much faster than a device may send, over many connections:
    # the rate limits are tested elsewhere (test_hardening.py); here, the parsing.
    server = async_get_server(ha_core)
    server.limits = replace(
        server.limits,
        messages_per_second=1e9,
        message_burst=10**9,
        connections_per_second=1e9,
        connection_burst=10**9,
    )
    recorder = Recorder(runtime)
    started = time.monotonic()
    all_batches = generate_batches()
    generated = time.monotonic()
    stats = FuzzStats()
    baseline = set(asyncio.all_tasks())

    for index, batch in enumerate(all_batches):
        since = len(caplog.records)
        device = FuzzDevice(devices, runtime, batch, stats)
        for frame in batch.frames:
            await device.send(frame)
        await device.settle()
        errors = our_errors(caplog, since)
        assert not errors, (index, batch, errors)
    sent = time.monotonic()

    async with asyncio.timeout(10):
        while server.links:
            await asyncio.sleep(0.01)
    print(
        f"\nfuzz seed {FUZZ_SEED}: {stats.frames} frames in {len(all_batches)} "
        f"batches over {stats.connections} connections; server closes "
        f"{dict(sorted(stats.closes.items()))}; bad input handled "
        f"{dict(sorted(stats.bad_input.items()))}; generated in "
        f"{generated - started:.1f} s, sent in {sent - generated:.1f} s"
    )
    assert stats.frames >= MIN_FRAMES
    # The server closed a socket only where a frame called for it, with its code.
    assert stats.unexpected_closes == []

    # A fresh device is served in full.
    recorder.unregister()
    recorder = Recorder(runtime)
    fresh = devices(tools=TOOLS, protocol_version=2)
    await fresh.open()
    await wait_until(runtime, lambda: len(runtime.tools) == len(TOOLS))
    session = runtime.session
    assert session is not None
    await fresh.listen_start("manual")
    await fresh.send_pcm(tone(440, 16000, 0.3))
    await fresh.listen_stop()
    assert await recorder.next_event() == ("connected",)
    assert await recorder.next_event() == ("listen_start", ListenMode.MANUAL)
    event = await recorder.next_event()
    assert event[0] == "listen_stop"
    assert event[1] > 0  # the audio arrived
    assert (
        await session.link.tool_client().call_tool("self.get_device_status")
    ).text == "true"
    await fresh.close()
    async with asyncio.timeout(10):
        while server.links:
            await asyncio.sleep(0.01)

    for _ in range(50):
        if not integration_tasks(baseline):
            break
        await asyncio.sleep(0.02)
    assert integration_tasks(baseline) == []
    assert our_errors(caplog, 0) == []
