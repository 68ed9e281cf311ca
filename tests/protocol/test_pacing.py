"""The paced Opus sender, on a virtual clock (no timing assertions)."""

import asyncio
from collections.abc import AsyncGenerator, Coroutine
from typing import Any

import pytest

from custom_components.xiaozhi.protocol.pacing import (
    DEFAULT_PREBUFFER_FRAMES,
    LATE_TOLERANCE_S,
    DownlinkStats,
    Marker,
    PacedSender,
)

FRAME = 0.06
PREBUFFER = DEFAULT_PREBUFFER_FRAMES


class VirtualTime:
    """A clock that only moves when the sender sleeps (or a test says so)."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


class Device:
    """The receiving end: records when each packet was sent; can block sends."""

    def __init__(self, time: VirtualTime) -> None:
        self.time = time
        self.sent: list[tuple[float, bytes]] = []
        self.gate: asyncio.Event | None = None
        self.waiting = asyncio.Event()
        self.send_cost = 0.0
        self.error: Exception | None = None

    async def send(self, packet: bytes) -> None:
        if self.error is not None:
            raise self.error
        if self.gate is not None:
            self.waiting.set()
            await self.gate.wait()
        self.time.now += self.send_cost
        self.sent.append((self.time.now, packet))


class Harness:
    def __init__(self, **kwargs: Any) -> None:
        self.time = VirtualTime()
        self.device = Device(self.time)
        self.tasks: list[asyncio.Task[None]] = []
        self.sender = PacedSender(
            self.device.send,
            self.start_task,
            frame_duration=FRAME,
            clock=self.time.clock,
            sleep=self.time.sleep,
            **kwargs,
        )

    def start_task(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self.tasks.append(task)
        return task

    async def put_all(self, count: int, start: int = 0) -> None:
        for index in range(start, start + count):
            assert await self.sender.put(index.to_bytes(2, "big"))

    @property
    def send_times(self) -> list[float]:
        return [at for at, _ in self.device.sent]


@pytest.fixture
async def harness() -> AsyncGenerator[Harness]:
    made = Harness(max_queued_frames=1000)
    yield made
    made.sender.close()
    await asyncio.gather(*made.tasks, return_exceptions=True)


async def settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_prebuffer_then_one_frame_per_duration_without_drift(
    harness: Harness,
) -> None:
    start = harness.time.now
    await harness.put_all(500)
    assert await harness.sender.drain()
    times = harness.send_times
    assert len(times) == 500
    for index, sent_at in enumerate(times):
        assert sent_at == pytest.approx(start + max(0, index - PREBUFFER + 1) * FRAME)
    # The schedule comes from the start time, so the last frame is exact too.
    assert times[-1] - start == pytest.approx((500 - PREBUFFER) * FRAME, abs=1e-9)
    assert [p for _, p in harness.device.sent] == [
        i.to_bytes(2, "big") for i in range(500)
    ]
    assert harness.sender.stats == DownlinkStats(frames_sent=500)
    assert harness.sender.remaining_playback == pytest.approx(PREBUFFER * FRAME)
    assert not harness.sender.active


async def test_a_late_frame_is_counted_and_the_schedule_holds(
    harness: Harness,
) -> None:
    start = harness.time.now
    await harness.put_all(PREBUFFER + 1)
    assert await harness.sender.drain()
    harness.device.send_cost = 0.1  # the loop stalls while sending frame 6
    await harness.put_all(1, start=6)
    assert await harness.sender.drain()
    harness.device.send_cost = 0.0
    await harness.put_all(3, start=7)
    assert await harness.sender.drain()
    stats = harness.sender.stats
    assert stats.late_frames == 1
    assert stats.max_lateness == pytest.approx(0.1 - FRAME)
    assert stats.max_lateness > LATE_TOLERANCE_S
    assert stats.underruns == 0
    # Frames after the stall are back on the original schedule.
    assert harness.send_times[-1] == pytest.approx(start + (10 - PREBUFFER) * FRAME)


async def test_a_starved_stream_counts_an_underrun_and_prebuffers_again(
    harness: Harness,
) -> None:
    await harness.put_all(8)
    assert await harness.sender.drain()
    harness.time.now += 5.0  # the producer had nothing for 5 s
    restart = harness.time.now
    await harness.put_all(PREBUFFER + 2, start=8)
    assert await harness.sender.drain()
    assert harness.sender.stats.underruns == 1
    resumed = harness.send_times[8:]
    assert resumed[:PREBUFFER] == [restart] * PREBUFFER
    assert resumed[-1] == pytest.approx(restart + 2 * FRAME)


async def test_a_new_stream_after_reset_is_no_underrun(harness: Harness) -> None:
    await harness.put_all(8)
    assert await harness.sender.drain()
    harness.time.now += 5.0
    harness.sender.reset()
    assert harness.sender.remaining_playback == 0.0
    await harness.put_all(8, start=8)
    assert await harness.sender.drain()
    assert harness.sender.stats.underruns == 0


async def test_back_to_back_plays_keep_a_constant_cushion(harness: Harness) -> None:
    start = harness.time.now
    for sentence in range(4):
        await harness.put_all(10, start=sentence * 10)
        assert await harness.sender.drain()
    # One continuous schedule: no extra prebuffer per sentence.
    assert harness.send_times[-1] == pytest.approx(start + (40 - PREBUFFER) * FRAME)


async def test_the_queue_is_bounded_and_put_waits_for_room() -> None:
    harness = Harness(max_queued_frames=3)
    harness.device.gate = asyncio.Event()
    await harness.put_all(4)  # one being sent (blocked), three queued
    await harness.device.waiting.wait()
    assert harness.sender.queued == 3
    blocked_put = asyncio.ensure_future(harness.sender.put(b"late"))
    await settle()
    assert not blocked_put.done()
    assert harness.sender.queued == 3
    harness.device.gate.set()
    assert await blocked_put
    assert await harness.sender.drain()
    assert len(harness.device.sent) == 5
    harness.sender.close()


async def test_stop_drops_everything_at_once() -> None:
    harness = Harness(max_queued_frames=2)
    harness.device.gate = asyncio.Event()
    await harness.put_all(3)
    await harness.device.waiting.wait()
    (task,) = harness.tasks
    blocked_put = asyncio.ensure_future(harness.sender.put(b"x"))
    draining = asyncio.ensure_future(harness.sender.drain())
    await settle()
    was_active = harness.sender.active
    assert was_active

    harness.sender.stop()
    assert await blocked_put is False
    assert await draining is False
    await asyncio.gather(task, return_exceptions=True)
    assert task.cancelled()  # the frame in flight was abandoned
    assert harness.sender.queued == 0
    assert not harness.sender.active
    assert harness.device.sent == []

    # The sender is usable again for the next reply.
    harness.device.gate.set()
    assert await harness.sender.put(b"next")
    assert await harness.sender.drain()
    assert [p for _, p in harness.device.sent] == [b"next"]
    harness.sender.close()
    await asyncio.gather(*harness.tasks[1:])


async def test_close_refuses_frames(harness: Harness) -> None:
    harness.sender.close()
    assert harness.sender.closed
    assert await harness.sender.put(b"x") is False
    assert await harness.sender.drain() is False


async def test_a_lost_connection_closes_the_sender(harness: Harness) -> None:
    harness.device.error = ConnectionError("gone")
    await harness.put_all(1)
    assert await harness.sender.drain() is False
    assert harness.sender.closed
    assert await harness.sender.put(b"x") is False


async def test_a_failing_send_does_not_hang_drain(harness: Harness) -> None:
    harness.device.error = ValueError("bug")
    await harness.put_all(2)
    assert await harness.sender.drain() is False
    (task,) = harness.tasks
    with pytest.raises(ValueError, match="bug"):
        await task


@pytest.mark.parametrize(
    "kwargs",
    [
        {"frame_duration": 0},
        {"max_queued_frames": 0},
        {"prebuffer_frames": 0},
    ],
)
def test_invalid_parameters(kwargs: dict[str, Any]) -> None:
    async def send(packet: bytes) -> None:
        """Never called."""

    with pytest.raises(ValueError, match="pacing"):
        PacedSender(send, asyncio.ensure_future, **kwargs)


async def test_real_clock_smoke() -> None:
    sent: list[bytes] = []

    async def send(packet: bytes) -> None:
        sent.append(packet)

    sender = PacedSender(
        send, asyncio.ensure_future, frame_duration=0.002, prebuffer_frames=2
    )
    for index in range(10):
        assert await sender.put(bytes([index]))
    assert await sender.drain()
    assert sent == [bytes([i]) for i in range(10)]
    assert sender.stats.frames_sent == 10


# ---------------------------------------------------------------- markers


def marker(harness: Harness, name: str) -> Marker:
    """A marker the device log records in its place, with its send time."""

    async def send() -> None:
        harness.device.sent.append((harness.time.now, name.encode()))

    return Marker(send)


async def test_markers_go_out_in_their_place_without_changing_the_schedule(
    harness: Harness,
) -> None:
    start = harness.time.now
    await harness.put_all(10)
    assert await harness.sender.put(marker(harness, "second"))
    await harness.put_all(10, start=10)
    assert await harness.sender.drain()

    sent = [packet for _, packet in harness.device.sent]
    assert sent.index(b"second") == 10  # after frame 9, before frame 10
    frames = [(at, p) for at, p in harness.device.sent if p != b"second"]
    for index, (sent_at, _) in enumerate(frames):
        assert sent_at == pytest.approx(start + max(0, index - PREBUFFER + 1) * FRAME)
    # Right after the frame before it: at most one frame before the next is due.
    marked_at = harness.device.sent[10][0]
    assert marked_at == pytest.approx(frames[9][0])
    assert frames[10][0] - marked_at == pytest.approx(FRAME)
    assert harness.sender.stats == DownlinkStats(frames_sent=20)


async def test_a_marker_first_and_last_is_sent_too(harness: Harness) -> None:
    assert await harness.sender.put(marker(harness, "first"))
    await harness.put_all(2)
    assert await harness.sender.put(marker(harness, "last"))
    assert await harness.sender.drain()
    assert [p for _, p in harness.device.sent] == [b"first", b"\0\0", b"\0\1", b"last"]


async def test_stop_drops_the_markers_with_the_audio() -> None:
    harness = Harness()
    harness.device.gate = asyncio.Event()
    await harness.put_all(2)
    assert await harness.sender.put(marker(harness, "dropped"))
    await harness.device.waiting.wait()

    harness.sender.stop()
    harness.device.gate.set()
    await asyncio.gather(*harness.tasks, return_exceptions=True)
    assert harness.device.sent == []
    assert harness.sender.queued == 0


async def test_a_marker_that_cannot_be_sent_closes_the_sender(
    harness: Harness,
) -> None:
    async def lost() -> None:
        raise ConnectionError("gone")

    await harness.put_all(1)
    assert await harness.sender.put(Marker(lost))
    await harness.put_all(1, start=1)
    assert await harness.sender.drain() is False
    assert harness.sender.closed
    assert [p for _, p in harness.device.sent] == [b"\0\0"]
