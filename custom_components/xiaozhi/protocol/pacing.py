"""Paced Opus downlink: audio reaches the device at the rate it plays it.

The device plays each Opus packet it receives while Speaking and holds at most 40
of them (2.4 s, audio_service.h MAX_DECODE_PACKETS_IN_QUEUE); more are dropped, and
when its queue runs dry the listener hears a gap. So the first few frames of a reply
go out at once (the prebuffer: the device starts playing immediately and has a
cushion against network jitter) and the rest one frame per frame duration, keeping
that cushion constant.

The schedule is computed from the start of the run, never by sleeping one frame
duration after each send, so it does not drift: frame ``n`` (from 0) of a run is
due at ``start + max(0, n - prebuffer + 1) * frame``. When the producer falls so
far behind that the device must have played everything (an underrun), a new run
starts with a new prebuffer. Queued frames are bounded: :meth:`PacedSender.put`
waits for room, so a slow device or a fast producer cannot grow memory.

Markers travel in the same queue (:class:`Marker`): what must reach the device in
step with the audio, such as the subtitle of the sentence the next frame begins.
The sender sends a marker when it reaches it, that is right after the last frame
queued before it went out and before the first frame queued after it: at most
one frame duration before that frame is due.
"""

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
import time
from typing import Any, Final

DEFAULT_FRAME_DURATION_S: Final = 0.06
# 300 ms of cushion: enough for Wi-Fi hiccups, far below the device's 2.4 s queue.
DEFAULT_PREBUFFER_FRAMES: Final = 5
# 3 s of audio waiting on our side at most.
DEFAULT_MAX_QUEUED_FRAMES: Final = 50
# A frame sent this much after its due time counts as late (event loop lag).
LATE_TOLERANCE_S: Final = 0.02


@dataclass(slots=True)
class DownlinkStats:
    """Counters of one session's downlink, for diagnostics and the load bench.

    Attributes:
        frames_sent: Opus frames handed to the socket.
        late_frames: Frames sent more than ``LATE_TOLERANCE_S`` after their due
            time (the device's cushion absorbed the delay).
        underruns: Times the device ran out of audio in the middle of a reply
            (the producer or the event loop fell behind by more than the cushion).
        max_lateness: Largest delay of a frame past its due time, in seconds.
    """

    frames_sent: int = 0
    late_frames: int = 0
    underruns: int = 0
    max_lateness: float = 0.0


@dataclass(frozen=True, slots=True)
class Marker:
    """Something to send in step with the audio (see the module docstring).

    Attributes:
        send: Sends it; it may raise :class:`ConnectionError`, like a frame.
    """

    send: Callable[[], Awaitable[None]]


type SendFrame = Callable[[bytes], Awaitable[None]]
type StartTask = Callable[[Coroutine[Any, Any, None]], asyncio.Task[None]]


class PacedSender:
    """Sends Opus packets at real time after a prebuffer, from a bounded queue.

    Markers queued between packets are sent in their place in the stream.
    ``send`` delivers one packet; it may raise :class:`ConnectionError`, which closes
    the sender. ``start_task`` runs the sending coroutine as a task the owner
    tracks; the task exists only while frames are queued or being sent.
    """

    def __init__(
        self,
        send: SendFrame,
        start_task: StartTask,
        *,
        frame_duration: float = DEFAULT_FRAME_DURATION_S,
        prebuffer_frames: int = DEFAULT_PREBUFFER_FRAMES,
        max_queued_frames: int = DEFAULT_MAX_QUEUED_FRAMES,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """Create a sender; ``clock`` and ``sleep`` are injectable for tests.

        Raises:
            ValueError: Non-positive frame duration, queue size or prebuffer.
        """
        if frame_duration <= 0 or max_queued_frames <= 0 or prebuffer_frames <= 0:
            raise ValueError("invalid downlink pacing parameters")
        self._send = send
        self._start_task = start_task
        self._frame = frame_duration
        self._prebuffer = prebuffer_frames
        self._max_queued = max_queued_frames
        self._clock = clock
        self._sleep = sleep
        self._queue: deque[bytes | Marker] = deque()
        self._room = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        # Bumped by stop(): waiting put() and drain() calls see their audio dropped.
        self._epoch = 0
        self._closed = False
        self._run_start = 0.0
        self._run_frames = 0
        self._stream_frames = 0
        self.stats = DownlinkStats()

    @property
    def queued(self) -> int:
        """Return how many frames (and markers) wait to be sent."""
        return len(self._queue)

    @property
    def active(self) -> bool:
        """Return whether frames are queued or being sent."""
        return bool(self._queue) or self._task is not None

    @property
    def closed(self) -> bool:
        """Return whether the sender refuses new frames."""
        return self._closed

    @property
    def remaining_playback(self) -> float:
        """Return how long the device needs to play what was sent, in seconds."""
        if not self._stream_frames:
            return 0.0
        play_end = self._run_start + self._run_frames * self._frame
        return max(0.0, play_end - self._clock())

    async def put(self, packet: bytes | Marker) -> bool:
        """Queue one packet (or marker), waiting while the queue is full.

        Returns False, dropping the packet, when :meth:`stop` or :meth:`close` was
        called before it could be queued.
        """
        epoch = self._epoch
        while len(self._queue) >= self._max_queued and not self._dropped(epoch):
            self._room.clear()
            await self._room.wait()
        if self._dropped(epoch):
            return False
        self._queue.append(packet)
        self._idle.clear()
        if self._task is None:
            self._task = self._start_task(self._run())
        return True

    async def drain(self) -> bool:
        """Wait until every queued frame was sent; False if stopped meanwhile."""
        epoch = self._epoch
        await self._idle.wait()
        return not self._dropped(epoch)

    def reset(self) -> None:
        """Begin a new stream (a new reply): its first frames are a fresh prebuffer."""
        self._stream_frames = 0
        self._run_frames = 0

    def stop(self) -> None:
        """Drop queued frames and stop sending now (within the frame being sent)."""
        self._epoch += 1
        self._queue.clear()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            task.cancel()
        self._room.set()
        self._idle.set()
        self.reset()

    def close(self) -> None:
        """Stop and refuse every later frame."""
        self._closed = True
        self.stop()

    def _dropped(self, epoch: int) -> bool:
        return self._closed or epoch != self._epoch

    async def _run(self) -> None:
        try:
            while self._queue:
                if not isinstance(self._queue[0], Marker):
                    await self._wait_until_due()
                item = self._queue.popleft()
                self._room.set()
                if isinstance(item, Marker):
                    await item.send()  # the frames before it went out
                    continue
                await self._send(item)
                self._run_frames += 1
                self._stream_frames += 1
                self.stats.frames_sent += 1
        except ConnectionError:
            self.close()
        except Exception:
            self.close()  # a waiting drain() must not hang on a broken sender
            raise
        finally:
            if self._task is asyncio.current_task():
                self._task = None
                self._idle.set()

    async def _wait_until_due(self) -> None:
        now = self._clock()
        play_end = self._run_start + self._run_frames * self._frame
        if not self._run_frames or play_end < now:
            if self._stream_frames:
                self.stats.underruns += 1
            self._run_start = now
            self._run_frames = 0
        ahead = max(0, self._run_frames - self._prebuffer + 1)
        due = self._run_start + ahead * self._frame
        if due > now:
            await self._sleep(due - now)
            now = self._clock()
        lateness = now - due
        if lateness > LATE_TOLERANCE_S:
            self.stats.late_frames += 1
            self.stats.max_lateness = max(self.stats.max_lateness, lateness)
