"""Ordered speech synthesis of a sentence stream with bounded look-ahead.

A reply is spoken sentence by sentence. Synthesis of a sentence starts as soon as
the sentence is complete, and while the audio of one sentence is handed out, the
requests for up to ``lookahead`` following sentences are already in flight, their
audio buffered in memory. The audio comes out in sentence order, each chunk as
soon as it arrived from the synthesizer.

This module knows nothing about Home Assistant or the provider: the synthesizer
is any function turning one sentence into an async generator of audio bytes.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Callable
import contextlib

type Synthesizer = Callable[[str], AsyncGenerator[bytes]]
"""Turns one sentence into its audio, streamed. Closing the generator cancels it."""

DEFAULT_LOOKAHEAD = 1


class _Synthesis:
    """One sentence being synthesized in its own task, its audio queued."""

    def __init__(self, text: str, synthesize: Synthesizer) -> None:
        # None marks the end, whether the synthesis succeeded or failed.
        self.chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(text, synthesize))

    async def _run(self, text: str, synthesize: Synthesizer) -> None:
        try:
            async with contextlib.aclosing(synthesize(text)) as audio:
                async for chunk in audio:
                    if chunk:
                        self.chunks.put_nowait(chunk)
        finally:
            self.chunks.put_nowait(None)


class _Scheduler:
    """Starts syntheses in sentence order, at most ``lookahead + 1`` unconsumed."""

    def __init__(self, synthesize: Synthesizer, lookahead: int) -> None:
        self._synthesize = synthesize
        self._slots = asyncio.Semaphore(lookahead + 1)
        # None marks the end of the sentences (or a failure reading them).
        self.started: asyncio.Queue[_Synthesis | None] = asyncio.Queue()
        self.running: set[_Synthesis] = set()

    async def start_all(self, sentences: AsyncIterable[str]) -> None:
        """Start a synthesis per sentence, waiting for a free slot before each."""
        iterator = aiter(sentences)
        try:
            async for text in iterator:
                await self._slots.acquire()
                synthesis = _Synthesis(text, self._synthesize)
                self.running.add(synthesis)
                self.started.put_nowait(synthesis)
        finally:
            self.started.put_nowait(None)
            if isinstance(iterator, AsyncGenerator):
                await iterator.aclose()

    def finished(self, synthesis: _Synthesis) -> None:
        """Free the slot of a synthesis whose audio was handed out completely."""
        self.running.discard(synthesis)
        self._slots.release()

    async def cancel(self) -> None:
        """Cancel every synthesis still running and wait until they are closed."""
        tasks = [synthesis.task for synthesis in self.running]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def synthesize_in_order(
    sentences: AsyncIterable[str],
    synthesize: Synthesizer,
    *,
    lookahead: int = DEFAULT_LOOKAHEAD,
) -> AsyncGenerator[bytes]:
    """Yield the audio of each sentence in order, synthesizing ahead.

    Args:
        sentences: The sentences to speak, as they become complete.
        synthesize: Produces the audio of one sentence.
        lookahead: How many sentences after the one being handed out may be
            synthesized at the same time; 0 synthesizes strictly one by one.

    Yields:
        Audio chunks, in sentence order, as soon as each arrives.

    Raises:
        ValueError: ``lookahead`` is negative.
        Exception: Whatever ``synthesize`` or ``sentences`` raised, after all
            audio produced before the failure was yielded.

    Closing or cancelling the generator cancels every synthesis in flight, which
    closes their generators (and so their provider requests).
    """
    if lookahead < 0:
        raise ValueError(f"lookahead must not be negative: {lookahead}")
    scheduler = _Scheduler(synthesize, lookahead)
    producer = asyncio.create_task(scheduler.start_all(sentences))
    try:
        while (synthesis := await scheduler.started.get()) is not None:
            while (chunk := await synthesis.chunks.get()) is not None:
                yield chunk
            await synthesis.task  # raises the synthesis error, if any
            scheduler.finished(synthesis)
        await producer
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        await scheduler.cancel()
