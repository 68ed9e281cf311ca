"""Speech played on the device: the `speaking.SpeechSink` of a voice session.

``tts start`` goes out as soon as the reply has its first segment, then the PCM
the speaker hands over is encoded to 60 ms Opus frames and paced out by the
session's downlink, all in one play. Sentence starts travel in band with the
audio: ``sentence_start`` is sent when the audio before it has been sent, so the
subtitle changes when the sentence's first frame goes out (a few hundred
milliseconds before the device plays it, its prebuffer) rather than when the
audio was synthesized, which may be seconds ahead.
"""

import asyncio
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass
import time
from typing import Final

from ..device.messages import device_message
from ..device.session import DeviceSession
from .tts_audio import SPEECH_SAMPLE_RATE

# About half a second of 60 ms chunks waiting for the encoder: the downlink keeps
# up to 3 s more, so the speaker stays ahead without holding a whole reply.
MAX_QUEUED_CHUNKS: Final = 8
ALERT_EMOTION: Final = "sad"


@dataclass(frozen=True, slots=True)
class _Sentence:
    text: str


type _Item = bytes | _Sentence | None


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
        before_start: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """Speak on ``session``; ``on_start`` is called when speaking starts.

        ``before_start`` is awaited first (what the device must hear of before
        ``tts start``).
        """
        self._session = session
        self._device_language = device_language
        self._on_start = on_start
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
        """Show the reply's emotion now."""
        await self._session.send_emotion(emotion, emoji)

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

    async def _pcm(self) -> AsyncGenerator[bytes]:
        while (item := await self._items.get()) is not None:
            if isinstance(item, _Sentence):
                if not await self._session.playback.downlink.drain():
                    return
                await self._session.send_sentence(item.text)
                continue
            if self.first_audio_at is None:
                self.first_audio_at = time.monotonic()
            yield item
