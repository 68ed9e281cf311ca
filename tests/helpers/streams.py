"""Sentences to speak and what the tests read back from audio streams."""

import asyncio
from collections.abc import AsyncIterator
import struct

# How long reading a stream may take before the test fails.
TIMEOUT = 10.0

SENTENCES = [
    "The kitchen light is on.",
    "The living room is at twenty one degrees.",
    "Tomorrow will be sunny.",
    "Take an umbrella anyway.",
    "Anything else?",
]


async def collect_into(audio: AsyncIterator[bytes], received: list[bytes]) -> None:
    """Append every chunk to ``received`` (kept when the stream fails)."""
    async with asyncio.timeout(TIMEOUT):
        async for chunk in audio:
            received.append(chunk)  # noqa: PERF401 - must survive the failure


def samples(pcm: bytes) -> list[int]:
    """Return signed 16-bit samples."""
    return list(struct.unpack(f"<{len(pcm) // 2}h", pcm))
