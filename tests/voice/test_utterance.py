"""An utterance's audio, buffered from the device to the pipeline."""

import asyncio

from custom_components.xiaozhi.voice.utterance import UtteranceAudio

TIMEOUT = 5.0


async def test_utterance_audio_streams_until_its_end() -> None:
    audio = UtteranceAudio()
    audio.put(b"\x01\x00" * 4)
    audio.put(b"")
    chunks: list[bytes] = []

    async def read() -> None:
        chunks.extend([chunk async for chunk in audio.stream()])

    reader = asyncio.create_task(read())
    await asyncio.sleep(0)
    audio.put(b"\x02\x00")
    audio.end()
    audio.end()
    audio.put(b"\x03\x00")  # after the end: dropped
    async with asyncio.timeout(TIMEOUT):
        await reader
    assert chunks == [b"\x01\x00" * 4, b"\x02\x00"]
    assert audio.ended
    assert audio.dropped_bytes == 0


async def test_utterance_audio_drops_what_the_buffer_cannot_hold() -> None:
    audio = UtteranceAudio(max_buffered_bytes=4)
    audio.put(b"abcd")
    audio.put(b"ef")
    audio.end()
    async with asyncio.timeout(TIMEOUT):
        assert [chunk async for chunk in audio.stream()] == [b"abcd"]
    assert audio.dropped_bytes == 2
