"""The look-ahead engine: ordered synthesis with bounded look-ahead."""

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator

import pytest

from custom_components.xiaozhi.sentences.lookahead import synthesize_in_order
from tests.helpers.streams import collect_into

TIMEOUT = 10.0


class ScriptedSynth:
    """A synthesizer whose every step the test can observe and gate."""

    def __init__(self, chunks_per_sentence: int = 2) -> None:
        """Create it; each sentence yields ``chunks_per_sentence`` chunks."""
        self.chunks_per_sentence = chunks_per_sentence
        self.log: list[str] = []
        self.started: dict[str, asyncio.Event] = {}
        self.gates: dict[str, asyncio.Event] = {}
        self.closed: set[str] = set()
        self.ended: dict[str, asyncio.Event] = {}
        self.failures: dict[str, Exception] = {}

    def event(self, name: str) -> asyncio.Event:
        """Return the started event of a sentence (created on demand)."""
        return self.started.setdefault(name, asyncio.Event())

    def end_event(self, name: str) -> asyncio.Event:
        """Return the event set when a sentence yielded all its audio."""
        return self.ended.setdefault(name, asyncio.Event())

    def gate(self, name: str) -> asyncio.Event:
        """Return the event a sentence waits for before its first chunk."""
        return self.gates.setdefault(name, asyncio.Event())

    async def __call__(self, text: str) -> AsyncGenerator[bytes]:
        """Synthesize ``text``: wait for its gate, then yield its chunks."""
        self.log.append(f"start {text}")
        self.event(text).set()
        try:
            if text in self.gates:
                await self.gates[text].wait()
            for index in range(self.chunks_per_sentence):
                yield f"{text}#{index}".encode()
                if text in self.failures and index == 0:
                    raise self.failures[text]
            self.log.append(f"end {text}")
            self.end_event(text).set()
        finally:
            self.closed.add(text)


async def texts(*items: str) -> AsyncIterator[str]:
    """Stream the given sentences."""
    for item in items:
        yield item


async def collect(audio: AsyncIterator[bytes]) -> list[bytes]:
    """Return all chunks, within the test timeout."""
    async with asyncio.timeout(TIMEOUT):
        return [chunk async for chunk in audio]


async def test_audio_is_in_sentence_order_while_later_ones_finish_first() -> None:
    """A look-ahead sentence that finishes first still comes out second."""
    synth = ScriptedSynth()
    # "a" only produces audio once "b" has been started and has finished.
    synth.gate("a")

    async def finish_b_then_release_a() -> None:
        await synth.end_event("b").wait()
        synth.gate("a").set()

    helper = asyncio.create_task(finish_b_then_release_a())
    chunks = await collect(synthesize_in_order(texts("a", "b", "c"), synth))
    await helper

    assert chunks == [b"a#0", b"a#1", b"b#0", b"b#1", b"c#0", b"c#1"]
    assert synth.log.index("end b") < synth.log.index("end a")


async def test_lookahead_is_bounded() -> None:
    """With look-ahead 1, a third sentence starts only when the first is out."""
    synth = ScriptedSynth()
    synth.gate("a")
    audio = synthesize_in_order(texts("a", "b", "c", "d"), synth, lookahead=1)
    consumer = asyncio.create_task(collect(audio))

    async with asyncio.timeout(TIMEOUT):
        await synth.event("b").wait()  # started while "a" is still gated
    synth.gate("a").set()
    chunks = await consumer

    assert len(chunks) == 8
    assert synth.log.index("start b") < synth.log.index("end a")
    # Each start waits for the sentence two places earlier to be fully out.
    assert synth.log.index("start c") > synth.log.index("end a")
    assert synth.log.index("start d") > synth.log.index("end b")


async def test_lookahead_two_keeps_two_in_flight() -> None:
    """A larger look-ahead starts more sentences early."""
    synth = ScriptedSynth()
    synth.gate("a")
    consumer = asyncio.create_task(
        collect(synthesize_in_order(texts("a", "b", "c", "d"), synth, lookahead=2))
    )

    async with asyncio.timeout(TIMEOUT):
        await synth.event("c").wait()
    synth.gate("a").set()
    await consumer

    assert synth.log.index("start c") < synth.log.index("end a")
    assert synth.log.index("start d") > synth.log.index("end a")


async def test_no_lookahead_is_sequential() -> None:
    """Look-ahead 0 synthesizes one sentence after the other."""
    synth = ScriptedSynth()

    chunks = await collect(synthesize_in_order(texts("a", "b"), synth, lookahead=0))

    assert len(chunks) == 4
    assert synth.log == ["start a", "end a", "start b", "end b"]


async def test_chunks_stream_before_the_sentence_is_done() -> None:
    """The first chunk is handed out while its sentence is still synthesizing."""
    first_chunk_seen = asyncio.Event()

    async def synth(text: str) -> AsyncGenerator[bytes]:
        yield b"first"
        await first_chunk_seen.wait()
        yield b"second"

    audio = synthesize_in_order(texts("a"), synth)
    async with asyncio.timeout(TIMEOUT):
        assert await anext(audio) == b"first"
        first_chunk_seen.set()
        assert [chunk async for chunk in audio] == [b"second"]


async def test_empty_chunks_are_skipped() -> None:
    """Empty chunks from a synthesizer are not passed on."""

    async def synth(text: str) -> AsyncGenerator[bytes]:
        yield b""
        yield text.encode()

    assert await collect(synthesize_in_order(texts("a", "b"), synth)) == [b"a", b"b"]


async def test_synthesis_error_after_partial_audio() -> None:
    """Audio before a failure is delivered, then the error; the rest is cancelled."""
    synth = ScriptedSynth()
    synth.failures["b"] = RuntimeError("provider broke")
    synth.gate("b")
    synth.gate("c")  # would wait forever: must be cancelled
    received: list[bytes] = []

    async def fail_b_once_c_started() -> None:
        await synth.event("c").wait()
        synth.gate("b").set()

    helper = asyncio.create_task(fail_b_once_c_started())
    with pytest.raises(RuntimeError, match="provider broke"):
        await collect_into(synthesize_in_order(texts("a", "b", "c"), synth), received)
    await helper

    assert received == [b"a#0", b"a#1", b"b#0"]
    assert synth.closed == {"a", "b", "c"}


async def test_text_stream_error_after_audio() -> None:
    """A failing text stream ends the audio after what was already spoken."""
    synth = ScriptedSynth()

    async def failing_text() -> AsyncIterator[str]:
        yield "a"
        raise ValueError("LLM stream broke")

    received: list[bytes] = []
    with pytest.raises(ValueError, match="LLM stream broke"):
        await collect_into(synthesize_in_order(failing_text(), synth), received)

    assert received == [b"a#0", b"a#1"]


@pytest.mark.parametrize("how", ["aclose", "cancel"])
async def test_stopping_cancels_syntheses_in_flight(how: str) -> None:
    """Closing or cancelling the consumer closes every running synthesis."""
    synth = ScriptedSynth()
    synth.gate("b")
    text_closed = asyncio.Event()

    async def endless_text() -> AsyncIterator[str]:
        try:
            yield "a"
            yield "b"
            yield "c"
            await asyncio.Event().wait()
            yield "never"
        finally:
            text_closed.set()

    audio = synthesize_in_order(endless_text(), synth)
    async with asyncio.timeout(TIMEOUT):
        assert await anext(audio) == b"a#0"
        assert await anext(audio) == b"a#1"
        await synth.event("b").wait()
        if how == "aclose":
            await audio.aclose()
        else:
            task = asyncio.create_task(anext(audio))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            await audio.aclose()
        await text_closed.wait()

    started = {line.removeprefix("start ") for line in synth.log if "start" in line}
    assert {"a", "b"} <= started
    assert "never" not in started
    assert synth.closed == started
    assert "end b" not in synth.log


class SentenceList:
    """An async iterable of sentences that is not a generator."""

    def __init__(self, *items: str) -> None:
        """Iterate over ``items``."""
        self._items = iter(items)

    def __aiter__(self) -> SentenceList:
        """Return itself."""
        return self

    async def __anext__(self) -> str:
        """Return the next sentence."""
        try:
            return next(self._items)
        except StopIteration:
            raise StopAsyncIteration from None


async def test_any_async_iterable_of_sentences() -> None:
    """Sentences may come from any async iterable."""
    chunks = await collect(synthesize_in_order(SentenceList("a", "b"), ScriptedSynth()))

    assert chunks == [b"a#0", b"a#1", b"b#0", b"b#1"]


async def test_negative_lookahead_is_rejected() -> None:
    """A negative look-ahead makes no sense."""
    with pytest.raises(ValueError, match="lookahead"):
        await anext(synthesize_in_order(texts("a"), ScriptedSynth(), lookahead=-1))


async def test_each_sentence_is_told_where_its_audio_starts() -> None:
    synth = ScriptedSynth()
    starts: list[tuple[str, int]] = []

    def on_sentence(text: str, before: int) -> None:
        starts.append((text, before))

    audio = synthesize_in_order(texts("a", "bb", "c"), synth, on_sentence=on_sentence)
    async with asyncio.timeout(TIMEOUT):
        chunks = [(len(starts), chunk) async for chunk in audio]

    # Told before its first chunk, with the audio bytes yielded before it.
    assert starts == [("a", 0), ("bb", 6), ("c", 14)]
    assert [told for told, _ in chunks] == [1, 1, 2, 2, 3, 3]
