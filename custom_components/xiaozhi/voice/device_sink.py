"""Speech played on the device: the `speaking.SpeechSink` of a voice session.

``tts start`` goes out as soon as the reply has its first segment, then the PCM
the speaker hands over is encoded to 60 ms Opus frames and paced out by the
session's downlink, all in one play. Sentence starts and the reply's face
travel in band with the audio, as markers of the paced downlink
(`protocol.pacing.Marker`): ``sentence_start`` goes out right after the last
frame before it and before the sentence's first frame, so the subtitle changes
as the sentence starts playing (the device's prebuffer, a few hundred
milliseconds, ahead of its speaker) rather than when the audio was synthesized,
which may be seconds ahead; the downlink meanwhile stays full.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
import time
from typing import Final

from ..device.messages import device_message
from ..device.session import DeviceSession
from ..protocol.messages import llm_message, tts_sentence_start_message
from ..protocol.pacing import Marker
from .tts_audio import SPEECH_SAMPLE_RATE

# About half a second of 60 ms chunks waiting for the encoder: the downlink keeps
# up to 3 s more, so the speaker stays ahead without holding a whole reply.
MAX_QUEUED_CHUNKS: Final = 8
ALERT_EMOTION: Final = "sad"


@dataclass(frozen=True, slots=True)
class _Sentence:
    text: str


@dataclass(frozen=True, slots=True)
class _Emotion:
    emotion: str
    emoji: str


type _Item = bytes | _Sentence | _Emotion | None


class DeviceSpeech:
    """Plays one spoken reply on the device.

    Attributes:
        started_at: When ``tts start`` was asked for (the first segment existed).
        first_audio_at: When the first PCM reached the encoder.
        played: None until the end; then whether all audio went out (False
            when interrupted).
    """

    def __init__(
        self,
        session: DeviceSession,
        device_language: str | None,
        on_start: Callable[[], None] | None = None,
        on_first_audio: Callable[[float], None] | None = None,
        before_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Speak on ``session``; ``on_start`` is called when speaking starts.

        ``on_first_audio`` gets the time the first PCM reached the encoder.
        ``before_start`` is awaited first (what the device must hear of before
        ``tts start``).
        """
        self._session = session
        self._device_language = device_language
        self._on_start = on_start
        self._on_first_audio = on_first_audio
        self._before_start = before_start
        self._items: asyncio.Queue[_Item] = asyncio.Queue(MAX_QUEUED_CHUNKS)
        self._playback: asyncio.Task[bool] | None = None
        self.started_at: float | None = None
        self.first_audio_at: float | None = None
        self.played: bool | None = None

    @property
    def started(self) -> bool:
        """Return whether ``tts start`` was sent."""
        return self.started_at is not None

    async def start_speaking(self) -> None:
        """Send ``tts start`` and start the playback."""
        if self._before_start is not None:
            await self._before_start()
        self.started_at = time.monotonic()
        if self._on_start is not None:
            self._on_start()
        await self._session.playback.start_speaking()
        self._playback = self._session.create_task(
            self._session.playback.play_pcm(self._pcm(), SPEECH_SAMPLE_RATE), "playback"
        )
        self._playback.add_done_callback(self._playback_done)

    async def sentence_started(self, text: str) -> None:
        """Send ``sentence_start`` once the audio before it went out."""
        await self._put(_Sentence(text))

    async def emotion(self, emotion: str, emoji: str) -> None:
        """Show the reply's emotion with the audio that follows."""
        await self._put(_Emotion(emotion, emoji))

    async def audio(self, pcm_24k_mono: bytes) -> None:
        """Queue PCM for the encoder; waits while enough is queued."""
        await self._put(pcm_24k_mono)

    async def stop_speaking(self) -> None:
        """Wait until all audio went out, then send ``tts stop``."""
        self.played = True
        if self._playback is not None:
            await self._put(None)
            self.played = await self._playback
        await self._session.playback.stop_speaking()

    async def alert(self, message: str) -> None:
        """Show ``message`` as an error alert."""
        title = device_message("error_title", self._device_language)
        await self._session.link.send_alert(title, message, ALERT_EMOTION)

    def close(self) -> None:
        """Stop the playback now (barge-in); later calls are no-ops."""
        if self._playback is not None:
            self._playback.cancel()

    async def _put(self, item: _Item) -> None:
        if self._playback is None or self._playback.done():
            return  # nothing plays: interrupted, or the session ended
        await self._items.put(item)

    def _playback_done(self, _task: asyncio.Task[bool]) -> None:
        # Wakes a producer waiting for room; what it then adds is never read.
        while not self._items.empty():
            self._items.get_nowait()

    async def _pcm(self) -> AsyncGenerator[bytes | Marker]:
        session = self._session
        while (item := await self._items.get()) is not None:
            match item:
                case _Sentence(text):
                    yield session.playback.marker(
                        tts_sentence_start_message(text, session_id=session.session_id)
                    )
                case _Emotion(emotion, emoji):
                    yield session.playback.marker(
                        llm_message(emotion, emoji, session_id=session.session_id)
                    )
                case bytes():
                    if self.first_audio_at is None:
                        self.first_audio_at = time.monotonic()
                        if self._on_first_audio is not None:
                            self._on_first_audio(self.first_audio_at)
                    yield item
