"""What a voice session plays on the device: the speaking state and its audio.

The firmware plays audio only between ``tts start`` and ``tts stop`` (its
Speaking state) and drops it otherwise, so :class:`Playback` owns both: it sends
``tts start`` before the first packet of a reply, encodes PCM to the downlink
Opus format, paces the packets at real time (``protocol/pacing.py``) and sends
``tts stop`` at the end or on an interruption. A reply may be several plays (one
per sentence); plays are serialised, and stopping drops whatever was not sent.
A play's source may carry `pacing.Marker` items between its audio: each is sent
in its place in the paced stream (a subtitle as its sentence's first frame goes
out), and dropped with the audio on an interruption.
"""

import asyncio
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    Awaitable,
    Callable,
    Iterable,
    Mapping,
)
from contextlib import aclosing
from typing import Any, Final

from ..protocol.codec import OpusEncoder
from ..protocol.firmware import DOWNLINK_FRAME_DURATION_MS, DOWNLINK_SAMPLE_RATE
from ..protocol.messages import tts_start_message, tts_stop_message
from ..protocol.pacing import Marker, PacedSender, StartTask

_DOWNLINK_FRAME_S: Final = DOWNLINK_FRAME_DURATION_MS / 1000

type SendJson = Callable[[Mapping[str, Any]], Awaitable[None]]
type SendAudio = Callable[[bytes], Awaitable[None]]


async def _async_iterate[T](items: AsyncIterable[T] | Iterable[T]) -> AsyncGenerator[T]:
    if isinstance(items, AsyncIterable):
        async for item in items:
            yield item
    else:
        for item in items:
            yield item


async def _async_encode(
    encoder: OpusEncoder,
    chunks: AsyncIterable[bytes | Marker] | Iterable[bytes | Marker],
) -> AsyncGenerator[bytes | Marker]:
    async with aclosing(_async_iterate(chunks)) as source:
        async for chunk in source:
            if isinstance(chunk, Marker):
                # Before the frame holding the PCM after it (that frame may
                # still end the audio before it).
                yield chunk
                continue
            for packet in encoder.encode(chunk):
                yield packet
    for packet in encoder.flush():
        yield packet


class Playback:
    """The speaking state of one voice session and its paced downlink.

    Attributes:
        speaking: A reply is playing (between ``tts start`` and ``tts stop``).
        downlink: Paces the Opus packets to the device.
    """

    def __init__(
        self,
        session_id: str,
        *,
        send_json: SendJson,
        send_audio: SendAudio,
        start_task: StartTask,
        on_change: Callable[[], None],
    ) -> None:
        """Play for the session ``session_id``.

        ``send_json`` and ``send_audio`` reach the device; ``start_task`` runs the
        downlink as a task of the session; ``on_change`` is called whenever
        :attr:`speaking` changes.
        """
        self.speaking = False
        self._session_id = session_id
        self._send_json = send_json
        self._on_change = on_change
        self._lock = asyncio.Lock()
        # Bumped by stop_speaking(): plays of an interrupted reply give up.
        self._epoch = 0
        self.downlink = PacedSender(
            send_audio, start_task, frame_duration=_DOWNLINK_FRAME_S
        )

    async def start_speaking(self) -> None:
        """Send ``tts start`` (the device plays audio only after it) unless speaking."""
        if self.speaking:
            return
        self.speaking = True
        self.downlink.reset()
        self._on_change()
        await self._send_json(tts_start_message(session_id=self._session_id))

    async def stop_speaking(self) -> None:
        """End or cut short the reply: drop unsent audio, send ``tts stop``.

        Call it after the last :meth:`play_opus` / :meth:`play_pcm` of a reply
        returned, or at any time to interrupt (a play in progress returns False).
        """
        self._epoch += 1
        self.downlink.stop()
        if not self.speaking:
            return
        self.speaking = False
        self._on_change()
        await self._send_json(tts_stop_message(session_id=self._session_id))

    async def play_opus(
        self,
        packets: AsyncIterable[bytes | Marker] | Iterable[bytes | Marker],
    ) -> bool:
        """Play 24 kHz mono 60 ms Opus packets, paced at real time.

        Markers among them are sent in their place in the stream.

        Sends ``tts start`` first when not speaking. Plays are serialised; a reply
        may be several plays (one per sentence) before :meth:`stop_speaking`. A
        play stopped while it waits for its source returns when the source yields
        or ends: cancel the producer too (in ``on_abort``) to end it at once.

        Returns:
            True once every packet was sent; False when the reply was stopped
            (:meth:`stop_speaking`, an abort from the device) or the session ended.

        Raises:
            SessionClosedError: The session had ended before the play started.
        """
        epoch = self._epoch
        async with self._lock:
            if epoch != self._epoch:
                return False
            await self.start_speaking()
            async with aclosing(_async_iterate(packets)) as source:
                async for packet in source:
                    if epoch != self._epoch:
                        return False
                    if packet and not await self.downlink.put(packet):
                        return False
            return await self.downlink.drain() and epoch == self._epoch

    async def play_pcm(
        self,
        chunks: AsyncIterable[bytes | Marker] | Iterable[bytes | Marker],
        sample_rate: int,
    ) -> bool:
        """Encode mono s16le PCM at ``sample_rate`` to downlink Opus and play it.

        Same contract as :meth:`play_opus`; the end of the audio is padded to a
        whole frame. A marker goes out right before the frame that holds the
        PCM after it.
        """
        encoder = OpusEncoder(
            DOWNLINK_SAMPLE_RATE, DOWNLINK_FRAME_DURATION_MS, input_rate=sample_rate
        )
        return await self.play_opus(_async_encode(encoder, chunks))

    def marker(self, message: Mapping[str, Any]) -> Marker:
        """Return a marker that sends ``message`` in its place in a play."""

        async def send() -> None:
            await self._send_json(message)

        return Marker(send)

    def close(self) -> None:
        """Stop for good: the session ended (nothing is sent to the device)."""
        self.downlink.close()
        self.speaking = False
