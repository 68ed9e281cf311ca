"""One voice turn of the simulated device: speak, then listen to the answer.

As the firmware in Listening state: the utterance goes out as 60 ms Opus frames at
real-time pace. In ``auto`` mode silence follows until Home Assistant answers
(``tts start``: the firmware stops capturing when it starts Speaking), so that
HA's voice activity detection ends the utterance; in ``manual`` mode (push to
talk) ``listen stop`` ends it. Then every message is recorded until ``tts stop``.

The timing line counts from the end of speech: the moment the last frame holding
speech was sent.
"""

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
import time
from typing import Any, Final

from custom_components.xiaozhi.protocol.codec import OpusEncoder

from .audio import UPLINK_RATE, speech_frames
from .console import Console
from .device import SimulatedDevice
from .errors import SimulatorError

# HA's voice command segmenter gives up on a command after 15 s; so does this.
MAX_TRAILING_SILENCE_S: Final = 15.0
_SAMPLE_BYTES: Final = 2


@dataclass(frozen=True, slots=True)
class Timing:
    """Seconds from the end of speech to each milestone of the answer (None: absent)."""

    stt: float | None
    first_audio: float | None
    tts_stop: float | None

    def line(self) -> str:
        """Return the timing line the simulator ends with."""
        return (
            f"timing: end of speech → stt {_seconds(self.stt)},"
            f" → first audio {_seconds(self.first_audio)},"
            f" → tts stop {_seconds(self.tts_stop)}"
        )


def _seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} s"


def _since(moment: float | None, origin: float | None) -> float | None:
    if moment is None or origin is None:
        return None
    return moment - origin


@dataclass(slots=True)
class Speech:
    """What the device played between one ``tts start`` and its ``tts stop``."""

    sentences: list[str] = field(default_factory=list)
    packets: list[bytes] = field(default_factory=list)


class TurnRecorder:
    """Prints and timestamps what the device exchanges (a ``DeviceObserver``).

    Attributes:
        transcript: The text of the ``stt`` message, if any.
        sentences: The subtitles of ``tts sentence_start``, in order.
        alert: The ``alert`` message, if one came.
        speeches: Each finished ``tts start`` … ``tts stop``, as it ends.
        incoming: Set on every frame from Home Assistant (JSON or audio).
    """

    def __init__(
        self, console: Console, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Record against ``clock``, printing to ``console``."""
        self._console = console
        self._clock = clock
        self.stt_at: float | None = None
        self.first_audio_at: float | None = None
        self.tts_stop_at: float | None = None
        self.transcript: str | None = None
        self.sentences: list[str] = []
        self.alert: dict[str, Any] | None = None
        self.dropped_audio = 0
        self.reply_started = asyncio.Event()
        self.reply_finished = asyncio.Event()
        self.speeches: asyncio.Queue[Speech] = asyncio.Queue()
        self.incoming = asyncio.Event()
        self._speech: Speech | None = None

    def json_received(self, message: dict[str, Any]) -> None:
        """Print the message; note the milestones of the answer."""
        self._console.received(message)
        self.incoming.set()
        kind, state = message.get("type"), message.get("state")
        self._follow_speech(kind, state, message)
        if kind == "stt" and self.stt_at is None:
            self.stt_at = self._clock()
            self.transcript = str(message.get("text", ""))
        elif kind == "tts" and state == "start":
            self.reply_started.set()
        elif kind == "tts" and state == "sentence_start":
            self.sentences.append(str(message.get("text", "")))
        elif kind == "tts" and state == "stop" and self.reply_started.is_set():
            self.tts_stop_at = self._clock()
            self.reply_finished.set()
        elif kind == "alert":
            self.alert = message
            self.reply_finished.set()

    def _follow_speech(
        self, kind: object, state: object, message: dict[str, Any]
    ) -> None:
        """Collect each ``tts start`` … ``tts stop`` (an answer or an announcement)."""
        if kind != "tts":
            return
        if state == "start":
            self._speech = Speech()
        elif state == "sentence_start" and self._speech is not None:
            self._speech.sentences.append(str(message.get("text", "")))
        elif state == "stop" and self._speech is not None:
            self.speeches.put_nowait(self._speech)
            self._speech = None

    def json_sent(self, message: dict[str, Any]) -> None:
        """Print the message."""
        self._console.sent(message)

    def audio_received(self, packet: bytes, *, played: bool) -> None:
        """Note the first audio of the answer; count audio the firmware would drop."""
        self.incoming.set()
        if played and self._speech is not None:
            self._speech.packets.append(packet)
        if not played:
            if not self.dropped_audio:
                self._console.line("← audio outside tts start/stop: dropped")
            self.dropped_audio += 1
        elif self.first_audio_at is None:
            self.first_audio_at = self._clock()
            self._console.line(f"← audio: first Opus packet ({len(packet)} bytes)")

    def timing(self, end_of_speech: float | None) -> Timing:
        """Return the milestones relative to ``end_of_speech``."""
        return Timing(
            stt=_since(self.stt_at, end_of_speech),
            first_audio=_since(self.first_audio_at, end_of_speech),
            tts_stop=_since(self.tts_stop_at, end_of_speech),
        )


def split_frames(pcm: bytes, frame_bytes: int) -> list[bytes]:
    """Cut PCM into frames, the last one padded with silence."""
    padded = pcm + bytes(-len(pcm) % frame_bytes)
    return [padded[i : i + frame_bytes] for i in range(0, len(padded), frame_bytes)]


class UtteranceStreamer:
    """Sends audio as the firmware captures it: one Opus frame per frame duration."""

    def __init__(
        self,
        device: SimulatedDevice,
        *,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Stream to ``device`` at its frame duration."""
        self._device = device
        self._clock = clock
        self.frame_ms = device.frame_duration_ms
        self.frame_bytes = UPLINK_RATE * self.frame_ms // 1000 * _SAMPLE_BYTES
        self._encoder = OpusEncoder(UPLINK_RATE, self.frame_ms)
        self._start: float | None = None
        self.sent = 0

    async def send(self, frame: bytes) -> None:
        """Send one frame once it has been "captured" (real time since the first)."""
        if self._start is None:
            self._start = self._clock()
        captured = self._start + (self.sent + 1) * self.frame_ms / 1000
        if (delay := captured - self._clock()) > 0:
            await asyncio.sleep(delay)
        for packet in self._encoder.encode(frame):
            await self._device.send_opus(packet, timestamp=self.sent * self.frame_ms)
        self.sent += 1


async def speak(
    device: SimulatedDevice,
    pcm: bytes,
    recorder: TurnRecorder,
    console: Console,
    *,
    manual: bool,
    clock: Callable[[], float] = time.monotonic,
    max_silence: float = MAX_TRAILING_SILENCE_S,
) -> float:
    """Say ``pcm`` (16 kHz mono) as one utterance; returns the end of speech.

    Raises:
        ConnectionError: The connection broke while sending.
    """
    streamer = UtteranceStreamer(device, clock=clock)
    frames = split_frames(pcm, streamer.frame_bytes)
    voiced = speech_frames(pcm, streamer.frame_bytes) or len(frames)
    console.line(
        f"→ audio: {len(pcm) / _SAMPLE_BYTES / UPLINK_RATE:.2f} s as {len(frames)}"
        f" Opus frames of {streamer.frame_ms} ms, at real-time pace"
    )
    end_of_speech = clock()
    for index, frame in enumerate(frames):
        await streamer.send(frame)
        if index + 1 == voiced:
            end_of_speech = clock()
            console.line("→ end of speech")
    if manual:
        await device.listen_stop()
        return end_of_speech
    console.line("→ audio: silence until Home Assistant answers")
    silence = bytes(streamer.frame_bytes)
    limit = streamer.sent + round(max_silence * 1000 / streamer.frame_ms)
    while not recorder.reply_started.is_set() and not device.closed:
        if streamer.sent >= limit:
            console.line(f"→ audio: stopped after {max_silence:g} s of silence")
            break
        await streamer.send(silence)
    return end_of_speech


def closed_message(code: int | None, reason: str) -> str:
    """Describe how Home Assistant closed the connection."""
    text = f"Home Assistant closed the connection with code {code}"
    return f"{text} ({reason})" if reason else text


async def wait_for_answer(device: SimulatedDevice, recorder: TurnRecorder) -> None:
    """Wait for the end of the answer (``tts stop``), or for its failure.

    Raises:
        SimulatorError: The connection closed first, or Home Assistant sent an
            alert instead.
    """
    waits = {
        asyncio.ensure_future(recorder.reply_finished.wait()),
        asyncio.ensure_future(device.wait_disconnected()),
    }
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()
    if recorder.alert is not None:
        raise SimulatorError(
            "Home Assistant answered with an alert: "
            f"{recorder.alert.get('status', '')}: {recorder.alert.get('message', '')}"
        )
    if not recorder.reply_finished.is_set():
        code, reason = await device.wait_closed()
        raise SimulatorError(closed_message(code, reason) + " before answering")
