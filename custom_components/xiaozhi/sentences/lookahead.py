"""Ordered speech synthesis of a stream of texts, with bounded look-ahead.

A reply is spoken piece by piece (sentences, or the speaker's segments). Synthesis
of a piece starts as soon as the piece exists, and while the audio of one piece
is handed out, the requests for up to ``lookahead`` following pieces are already
in flight, their audio buffered in memory. The audio comes out in order, each
chunk as soon as it arrived from the synthesizer.

The one engine of the integration: the TTS entity uses :func:`synthesize_in_order`
(one audio stream), the device's speaker :func:`syntheses_in_order` (one
:class:`Synthesis` per piece, to know where each piece's audio starts). It knows
nothing about Home Assistant or the provider: a synthesizer is any function
turning one piece into an async generator of audio bytes.
"""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterable, Callable
import contextlib
from typing import Final

type Synthesizer[T] = Callable[[T], AsyncGenerator[bytes]]
"""Turns one piece into its audio, streamed. Closing the generator cancels it."""

# One piece synthesized ahead of the one playing: enough to hide a request's
# latency behind the audio before it, without holding much of a reply in memory.
DEFAULT_LOOKAHEAD: Final = 1


class Synthesis[T]:
    """One piece being synthesized in its own task, its audio queued.

    Attributes:
        item: The piece.
    """

    def __init__(self, item: T, synthesize: Synthesizer[T], *, name: str) -> None:
        """Start synthesizing ``item`` now, in a task called ``name``."""
        self.item = item
        # None marks the end, whether the synthesis succeeded or failed.
        self._chunks: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.task = asyncio.create_task(self._run(synthesize), name=name)

    async def _run(self, synthesize: Synthesizer[T]) -> None:
        try:
            async with contextlib.aclosing(synthesize(self.item)) as audio:
                async for chunk in audio:
                    if chunk:
                        self._chunks.put_nowait(chunk)
        finally:
            self._chunks.put_nowait(None)

    async def audio(self) -> AsyncGenerator[bytes]:
        """Yield the piece's audio as it arrives.

        Raises:
            Exception: Whatever the synthesizer raised, after the audio it
                produced before failing.
        """
        while (chunk := await self._chunks.get()) is not None:
            yield chunk
        await self.task

    async def cancel(self) -> None:
        """Stop the synthesis (if it still runs) and wait until it is closed."""
        if self.task.done():
            if not self.task.cancelled():
                self.task.exception()  # a skipped piece's failure is no news
            return
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)


class _Scheduler[T]:
    """Starts syntheses in order, at most ``lookahead + 1`` not yet handed out."""

    def __init__(self, synthesize: Synthesizer[T], lookahead: int, name: str) -> None:
        self._synthesize = synthesize
        self._name = name
        self._slots = asyncio.Semaphore(lookahead + 1)
        # None marks the end of the pieces (or a failure reading them).
        self.started: asyncio.Queue[Synthesis[T] | None] = asyncio.Queue()
        self.running: set[Synthesis[T]] = set()

    async def start_all(self, items: AsyncIterable[T]) -> None:
        """Start a synthesis per piece, waiting for a free slot before each."""
        iterator = aiter(items)
        try:
            async for item in iterator:
                await self._slots.acquire()
                synthesis = Synthesis(
                    item, self._synthesize, name=f"{self._name}.synthesis"
                )
                self.running.add(synthesis)
                self.started.put_nowait(synthesis)
        finally:
            self.started.put_nowait(None)
            if isinstance(iterator, AsyncGenerator):
                await iterator.aclose()

    async def finished(self, synthesis: Synthesis[T]) -> None:
        """Free the slot of a synthesis whose audio was handed out (or skipped)."""
        await synthesis.cancel()
        self.running.discard(synthesis)
        self._slots.release()

    async def cancel(self) -> None:
        """Cancel every synthesis still running and wait until they are closed."""
        await asyncio.gather(*(synthesis.cancel() for synthesis in self.running))


async def syntheses_in_order[T](
    items: AsyncIterable[T],
    synthesize: Synthesizer[T],
    *,
    lookahead: int = DEFAULT_LOOKAHEAD,
    name: str = "xiaozhi.lookahead",
) -> AsyncGenerator[Synthesis[T]]:
    """Yield the synthesis of each piece in order, the next ones started ahead.

    Read a synthesis's :meth:`Synthesis.audio` before asking for the next one;
    asking for the next one stops whatever is left of the current one (a piece
    the caller skips).

    Args:
        items: The pieces to speak, as they come.
        synthesize: Produces the audio of one piece.
        lookahead: How many pieces after the one being handed out may be
            synthesized at the same time; 0 synthesizes strictly one by one.
        name: What the engine's task names start with.

    Raises:
        ValueError: ``lookahead`` is negative.
        Exception: Whatever ``items`` raised, after the pieces before it.

    Closing or cancelling the generator cancels every synthesis in flight, which
    closes their generators (and so their requests).
    """
    if lookahead < 0:
        raise ValueError(f"lookahead must not be negative: {lookahead}")
    scheduler = _Scheduler(synthesize, lookahead, name)
    producer = asyncio.create_task(scheduler.start_all(items), name=f"{name}.requests")
    try:
        while (synthesis := await scheduler.started.get()) is not None:
            yield synthesis
            await scheduler.finished(synthesis)
        await producer
    finally:
        producer.cancel()
        await asyncio.gather(producer, return_exceptions=True)
        await scheduler.cancel()


async def synthesize_in_order(
    sentences: AsyncIterable[str],
    synthesize: Synthesizer[str],
    *,
    lookahead: int = DEFAULT_LOOKAHEAD,
    on_sentence: Callable[[str, int], None] | None = None,
) -> AsyncGenerator[bytes]:
    """Yield the audio of each sentence in order, synthesizing ahead.

    Args:
        sentences: The sentences to speak, as they become complete.
        synthesize: Produces the audio of one sentence.
        lookahead: How many sentences after the one being handed out may be
            synthesized at the same time; 0 synthesizes strictly one by one.
        on_sentence: Called with each sentence and the audio bytes yielded
            before it, right before its audio is (where its audio starts).

    Yields:
        Audio chunks, in sentence order, as soon as each arrives.

    Raises:
        ValueError: ``lookahead`` is negative.
        Exception: Whatever ``synthesize`` or ``sentences`` raised, after all
            audio produced before the failure was yielded.

    Closing or cancelling the generator cancels every synthesis in flight, which
    closes their generators (and so their provider requests).
    """
    syntheses = syntheses_in_order(sentences, synthesize, lookahead=lookahead)
    yielded = 0
    async with contextlib.aclosing(syntheses):
        async for synthesis in syntheses:
            if on_sentence is not None:
                on_sentence(synthesis.item, yielded)
            async with contextlib.aclosing(synthesis.audio()) as audio:
                async for chunk in audio:
                    yielded += len(chunk)
                    yield chunk
