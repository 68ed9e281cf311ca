"""One utterance's audio, from the device to the Assist pipeline as it arrives.

The device session decodes each Opus packet to 16 kHz PCM and hands it over
synchronously; the pipeline reads it as an async stream (its VAD may stop
reading early, at the end of speech). Pure module: no Home Assistant imports.
"""

import asyncio
from collections.abc import AsyncGenerator
from typing import Final

# 30 s of 16 kHz 16-bit audio: far more than a pipeline that reads in real time
# ever leaves unread; beyond it frames are dropped rather than kept in memory.
MAX_BUFFERED_BYTES: Final = 30 * 16000 * 2


class UtteranceAudio:
    """PCM frames of one utterance, buffered until the pipeline reads them.

    Attributes:
        dropped_bytes: Audio dropped because the buffer was full.
    """

    def __init__(self, max_buffered_bytes: int = MAX_BUFFERED_BYTES) -> None:
        """Start open and empty."""
        self._frames: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._buffered = 0
        self._max_buffered = max_buffered_bytes
        self._ended = False
        self.dropped_bytes = 0

    @property
    def ended(self) -> bool:
        """Return whether the utterance is over (later frames are dropped)."""
        return self._ended

    def put(self, pcm: bytes) -> None:
        """Add a frame; dropped once the utterance ended or the buffer is full."""
        if self._ended or not pcm:
            return
        if self._buffered + len(pcm) > self._max_buffered:
            self.dropped_bytes += len(pcm)
            return
        self._buffered += len(pcm)
        self._frames.put_nowait(pcm)

    def end(self) -> None:
        """End the utterance: the stream ends after the frames already added."""
        if not self._ended:
            self._ended = True
            self._frames.put_nowait(None)

    async def stream(self) -> AsyncGenerator[bytes]:
        """Yield the frames as they come until the utterance ends."""
        while (pcm := await self._frames.get()) is not None:
            self._buffered -= len(pcm)
            yield pcm
