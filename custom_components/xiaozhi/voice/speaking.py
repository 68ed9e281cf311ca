"""The speaking stage of a device session: a streamed reply becomes device audio.

`speak_reply` takes the text deltas of the agent's answer while the agent is still
writing it, cuts them into speakable segments with the sentence splitter, has the
pipeline's TTS engine (any HA engine, see `tts_audio`) synthesize them and hands
24 kHz mono PCM to a `SpeechSink`, which owns Opus encoding, pacing and the device
messages. The first segment goes to TTS the moment the splitter emits it, and the
sink gets ``start_speaking`` then (the device must be in its speaking state before
audio arrives).

Two ways to synthesize, chosen by the engine:

* Streaming input (the engine overrides ``async_stream_tts_audio``): one HA
  ResultStream whose message stream yields each segment as soon as it exists.
* Otherwise one ResultStream per segment, created when the segment exists; at
  most ``lookahead`` segments are synthesized ahead of the one playing, and the
  audio is played in segment order.

``sentence_start`` timing. With one request per segment it is exact: the sink
hears of a segment right before its first PCM. One continuous stream does not say
where a sentence's audio begins; an engine that knows tells it through
`sentences.marks` (this integration's own does: it speaks one sentence after the
other), and each segment is announced right before the PCM piece its audio
starts in. For any other streaming engine the start of each later segment is
estimated from the audio already handed out and the text's length
(`SentenceClock`: about 0.22 s per wide (CJK) character, 0.065 s per other one,
and never before the segment's text reached the engine). Either way, segments
still unannounced when the audio ends are announced then, so the device always
ends on the last sentence.

The reply's face. Every reply shows one with its first words: the emotion of
the first emoji that maps to one (see `sentences.emotion`) when the first segment
has it, else neutral (the device otherwise keeps whatever face it showed last).
An emoji found later changes the face once, before the next sentence or audio
chunk, so the face matches the reply while it is spoken; emojis are never spoken
(the splitter removes them).

Tool calls: a ``None`` delta means the agent paused (for example to call a
tool); the text written so far is then spoken at once instead of waiting for the
end of its sentence.

Errors never escape as exceptions (except the sink's own): a failing text stream
(the agent) is followed by a spoken apology, a failing TTS engine by an ``alert``
to the device; the rest of the reply is then read but not spoken, so the caller's
flow stays the same. Cancelling the task running `speak_reply` (barge-in) stops
at once: no further sink calls, our tasks are gone and the engine's text input is
ended. A request HA already started runs to its end in HA's own task (its public
API cannot cancel it) and its audio is dropped; that is at most ``lookahead + 1``
segments with a non-streaming engine.
"""

import asyncio
from collections import deque
from collections.abc import AsyncGenerator, AsyncIterable, AsyncIterator, Mapping
import contextlib
from dataclasses import dataclass, field
import time
from typing import Any, Final, Protocol
import unicodedata

from homeassistant.components.tts import ResultStream
from homeassistant.core import HomeAssistant

from ..const import LOGGER
from ..device.messages import device_message
from ..sentences.emotion import NEUTRAL, emoji_for_emotion, emotion_for_emojis
from ..sentences.lookahead import DEFAULT_LOOKAHEAD, Synthesis, syntheses_in_order
from ..sentences.marks import SpeechMarks, attach_marks, text_length
from ..sentences.splitter import Segment, SentenceSplitter, SplitterOptions
from .tts_audio import (
    SPEECH_SAMPLE_RATE,
    TtsError,
    open_tts_stream,
    pcm_from_stream,
    start_message,
    start_message_stream,
)

# PCM is handed to the sink in pieces of at most one Opus frame, so sentence
# starts and the emotion can go out between them.
AUDIO_CHUNK_MS: Final = 60
BYTES_PER_SECOND: Final = SPEECH_SAMPLE_RATE * 2
AUDIO_CHUNK_BYTES: Final = BYTES_PER_SECOND * AUDIO_CHUNK_MS // 1000

ERROR_TTS: Final = "error_tts"
ERROR_AGENT: Final = "error_agent"

# Speaking rates for `estimated_speech_seconds`: Chinese and Japanese TTS voices
# speak about 4.5 characters a second, alphabetic text about 15.
_WIDE_CHAR_SECONDS: Final = 0.22
_NARROW_CHAR_SECONDS: Final = 0.065


class SpeechSink(Protocol):
    """Where a spoken reply goes; the device session's downlink implements it.

    All calls of one `speak_reply` come from one task, in order.
    """

    async def start_speaking(self) -> None:
        """Send ``{"type": "tts", "state": "start"}`` (before anything else)."""

    async def sentence_started(self, text: str) -> None:
        """Send ``sentence_start`` with ``text``; its audio follows next."""

    async def emotion(self, emotion: str, emoji: str) -> None:
        """Send ``{"type": "llm", "emotion": emotion, "text": emoji}``."""

    async def audio(self, pcm_24k_mono: bytes) -> None:
        """Encode and send 24 kHz mono s16le PCM; may wait (backpressure)."""

    async def stop_speaking(self) -> None:
        """Send ``{"type": "tts", "state": "stop"}`` after all audio."""

    async def alert(self, message: str) -> None:
        """Show an error ``message`` (already in the device's language)."""


@dataclass(slots=True)
class SpeakResult:
    """What `speak_reply` did, with the timings the benchmarks need.

    Times are `time.monotonic` seconds.

    Attributes:
        started_at: When `speak_reply` was called.
        segments: Every segment of the reply, in order (spoken or not).
        spoken: Segments announced with ``sentence_start`` (audio went out).
        streaming_input: One streaming TTS stream was used (None: no TTS).
        first_segment_at: When the splitter emitted the first segment.
        first_audio_at: When the first PCM was handed to the sink.
        audio_bytes: PCM handed to the sink.
        error: Key of the `device.messages` text the user got, if any.
    """

    started_at: float
    segments: list[str] = field(default_factory=list)
    spoken: list[str] = field(default_factory=list)
    streaming_input: bool | None = None
    first_segment_at: float | None = None
    first_audio_at: float | None = None
    audio_bytes: int = 0
    error: str | None = None

    @property
    def audio_seconds(self) -> float:
        """Duration of the PCM handed to the sink."""
        return self.audio_bytes / BYTES_PER_SECOND


def estimated_speech_seconds(text: str) -> float:
    """Return roughly how long a TTS voice takes to say ``text``."""
    wide = sum(unicodedata.east_asian_width(ch) in "WF" for ch in text)
    return wide * _WIDE_CHAR_SECONDS + (len(text) - wide) * _NARROW_CHAR_SECONDS


def _pcm_bytes(seconds: float) -> int:
    return round(seconds * SPEECH_SAMPLE_RATE) * BYTES_PER_SECOND // SPEECH_SAMPLE_RATE


def _estimated_speech_bytes(text: str) -> int:
    samples = round(estimated_speech_seconds(text) * SPEECH_SAMPLE_RATE)
    return samples * BYTES_PER_SECOND // SPEECH_SAMPLE_RATE


class SentenceClock:
    """Where each segment's audio starts in one continuous TTS stream.

    From the engine's marks once it reports them (`sentences.marks`), else
    estimated. Positions are bytes of 24 kHz mono s16le PCM from the start of
    the stream.

    Attributes:
        marks: What the engine reports, if the stream asked it to.
    """

    def __init__(self) -> None:
        """Start with no segments, at the start of the stream."""
        # (estimated start, position in the text, segment)
        self._starts: deque[tuple[int, int, Segment]] = deque()
        self._end = 0
        self._text_position = 0
        self.marks: SpeechMarks | None = None

    def add(self, segment: Segment, played: int) -> None:
        """Note a segment handed to the engine when ``played`` bytes had played.

        Its audio cannot start before its text reached the engine.
        """
        start = max(self._end, played)
        self._starts.append((start, self._text_position, segment))
        self._end = start + _estimated_speech_bytes(segment.text)
        self._text_position += text_length(segment.text)

    def due(self, until: int) -> list[tuple[Segment, int]]:
        """Remove and return the segments starting before position ``until``.

        Each comes with where it starts (estimated, or as marked).
        """
        marks = self.marks
        due: list[tuple[Segment, int]] = []
        while self._starts:
            start, position, segment = self._starts[0]
            if marks is not None and marks.told:
                # Its audio has begun once a sentence at or after it has.
                begun = [
                    _pcm_bytes(mark.seconds)
                    for mark in marks.marks
                    if mark.position >= position
                ]
                start = min(begun, default=until)
            if start >= until:
                break
            self._starts.popleft()
            due.append((segment, start))
        return due

    def rest(self) -> list[Segment]:
        """Remove and return every segment not yet due."""
        rest = [segment for _, _, segment in self._starts]
        self._starts.clear()
        return rest


def _pieces(pcm: bytes) -> list[bytes]:
    return [
        pcm[start : start + AUDIO_CHUNK_BYTES]
        for start in range(0, len(pcm), AUDIO_CHUNK_BYTES)
    ]


async def _chained(
    first: Segment, rest: AsyncIterator[Segment]
) -> AsyncGenerator[Segment]:
    """The reply's segments, the first already read (closing this leaves ``rest`` open)."""
    yield first
    async for segment in rest:
        yield segment


async def _queued_texts(texts: asyncio.Queue[str | None]) -> AsyncGenerator[str]:
    """The message stream of a streaming TTS request; ``None`` ends it."""
    while (text := await texts.get()) is not None:
        yield text


@dataclass(frozen=True, slots=True)
class _Voice:
    """The pipeline's TTS engine, language and options."""

    hass: HomeAssistant
    engine: str
    language: str | None
    options: Mapping[str, Any] | None

    def open_stream(self) -> ResultStream:
        return open_tts_stream(self.hass, self.engine, self.language, self.options)


class _ReplySpeaker:
    """Speaks one reply; see the module docstring for the behaviour."""

    def __init__(
        self,
        voice: _Voice,
        sink: SpeechSink,
        device_language: str | None,
        lookahead: int,
        splitter_options: SplitterOptions,
    ) -> None:
        self.result = SpeakResult(started_at=time.monotonic())
        self._voice = voice
        self._sink = sink
        self._device_language = device_language
        self._lookahead = lookahead
        self._splitter_options = splitter_options
        self._emotion_found = False
        self._face_shown = False
        self._pending_emotion: tuple[str, str] | None = None
        self._tts_failed = False

    async def run(self, text_deltas: AsyncIterable[str | None]) -> None:
        segments = self._segments(text_deltas)
        async with contextlib.aclosing(segments):
            first = await anext(segments, None)
            if first is None:
                return
            await self._sink.start_speaking()
            await self._speak(first, segments)
        await self._send_emotion(first_words=False)
        await self._sink.stop_speaking()

    async def _speak(self, first: Segment, segments: AsyncIterator[Segment]) -> None:
        try:
            stream = self._voice.open_stream()
        except TtsError as err:
            await self._fail_tts(err)
            await self._drain(segments)
            return
        self.result.streaming_input = stream.supports_streaming_input
        if stream.supports_streaming_input:
            await self._speak_streaming(stream, first, segments)
        else:
            await self._speak_per_segment(stream, first, segments)

    # Text --------------------------------------------------------------------

    async def _segments(
        self, text_deltas: AsyncIterable[str | None]
    ) -> AsyncGenerator[Segment]:
        """The reply's segments; an apology follows if the text stream fails."""
        splitter = SentenceSplitter(**self._splitter_options)
        try:
            async for delta in text_deltas:
                for segment in self._split(splitter, delta):
                    yield segment
        except Exception:
            LOGGER.warning("The reply's text stream failed", exc_info=True)
            self.result.error = ERROR_AGENT
            apology = Segment(device_message(ERROR_AGENT, self._device_language))
            tail = [*self._split(splitter, None), self._noted(apology)]
        else:
            tail = self._split(splitter, None)
        for segment in tail:
            yield segment

    def _split(self, splitter: SentenceSplitter, delta: str | None) -> list[Segment]:
        """Feed a delta; ``None`` flushes what is pending (the agent paused)."""
        if delta is not None:
            return [self._noted(segment) for segment in splitter.feed(delta)]
        segments = [self._noted(segment) for segment in splitter.flush()]
        self._note_emojis(splitter.trailing_emojis)
        return segments

    def _noted(self, segment: Segment) -> Segment:
        if self.result.first_segment_at is None:
            self.result.first_segment_at = time.monotonic()
        self.result.segments.append(segment.text)
        self._note_emojis(segment.emojis)
        return segment

    def _note_emojis(self, emojis: tuple[str, ...]) -> None:
        if self._emotion_found:
            return
        for emoji in emojis:
            if emotion := emotion_for_emojis((emoji,)):
                self._pending_emotion = (emotion, emoji)
                self._emotion_found = True
                return

    async def _drain(self, segments: AsyncIterator[Segment]) -> None:
        async for _ in segments:
            pass

    # Sink --------------------------------------------------------------------

    async def _send_emotion(self, *, first_words: bool = True) -> None:
        """Show the pending emotion; the first words get neutral if none is known.

        After the last audio (``first_words=False``) only a pending emotion is
        shown: a reply that never played keeps its alert's face.
        """
        pending = self._pending_emotion
        if pending is None and (self._face_shown or not first_words):
            return
        emotion, emoji = pending or (NEUTRAL, emoji_for_emotion(NEUTRAL))
        self._pending_emotion = None
        self._face_shown = True
        await self._sink.emotion(emotion, emoji)

    async def _announce(self, segment: Segment) -> None:
        await self._send_emotion()
        await self._sink.sentence_started(segment.text)
        self.result.spoken.append(segment.text)

    async def _play(self, pcm: bytes, clock: SentenceClock | None = None) -> None:
        for piece in _pieces(pcm):
            rest = piece
            if clock is not None:
                for segment, start in clock.due(self.result.audio_bytes + len(rest)):
                    # The audio before the segment's start goes out before it.
                    head = (start - self.result.audio_bytes) & ~1
                    if 0 < head < len(rest):
                        await self._hand(rest[:head])
                        rest = rest[head:]
                    await self._announce(segment)
            await self._hand(rest)

    async def _hand(self, piece: bytes) -> None:
        await self._send_emotion()
        if self.result.first_audio_at is None:
            self.result.first_audio_at = time.monotonic()
        self.result.audio_bytes += len(piece)
        await self._sink.audio(piece)

    async def _fail_tts(self, err: TtsError) -> None:
        if self._tts_failed:
            return
        LOGGER.warning("Speaking with %s failed: %s", self._voice.engine, err)
        self._tts_failed = True
        self.result.error = ERROR_TTS
        await self._sink.alert(device_message(ERROR_TTS, self._device_language))

    # One request per segment -------------------------------------------------

    async def _speak_per_segment(
        self, stream: ResultStream, first: Segment, segments: AsyncIterator[Segment]
    ) -> None:
        unused: list[ResultStream] = [stream]  # opened to learn the engine's kind

        async def synthesize(segment: Segment) -> AsyncGenerator[bytes]:
            if self._tts_failed:
                return
            request = unused.pop() if unused else self._voice.open_stream()
            start_message(request, segment.text)
            async with contextlib.aclosing(pcm_from_stream(request)) as audio:
                async for pcm in audio:
                    yield pcm

        syntheses = syntheses_in_order(
            _chained(first, segments),
            synthesize,
            lookahead=self._lookahead,
            name="xiaozhi.speaker",
        )
        async with contextlib.aclosing(syntheses):
            async for synthesis in syntheses:
                await self._play_synthesis(synthesis)

    async def _play_synthesis(self, synthesis: Synthesis[Segment]) -> None:
        if self._tts_failed:
            return
        announced = False
        try:
            async with contextlib.aclosing(synthesis.audio()) as audio:
                async for pcm in audio:
                    if not announced:
                        await self._announce(synthesis.item)
                        announced = True
                    await self._play(pcm)
        except TtsError as err:
            await self._fail_tts(err)

    # One streaming request -----------------------------------------------------

    async def _speak_streaming(
        self, stream: ResultStream, first: Segment, segments: AsyncIterator[Segment]
    ) -> None:
        texts: asyncio.Queue[str | None] = asyncio.Queue()
        clock = SentenceClock()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(
                    self._feed_texts(first, segments, texts, clock),
                    name="xiaozhi.speaker.texts",
                )
                await self._play_stream(stream, texts, clock)
        finally:
            # Ends the engine's text input, on cancellation too.
            texts.put_nowait(None)

    async def _feed_texts(
        self,
        first: Segment,
        segments: AsyncIterator[Segment],
        texts: asyncio.Queue[str | None],
        clock: SentenceClock,
    ) -> None:
        # Each segment ends with a newline: engines append chunks verbatim (segments
        # lost their spaces), and a streaming engine that splits sentences (ours does)
        # speaks a segment at once even when it ends without punctuation, e.g. the
        # words before a tool call.
        clock.add(first, self.result.audio_bytes)
        texts.put_nowait(first.text + "\n")
        async for segment in segments:
            clock.add(segment, self.result.audio_bytes)
            texts.put_nowait(segment.text + "\n")
        texts.put_nowait(None)

    async def _play_stream(
        self,
        stream: ResultStream,
        texts: asyncio.Queue[str | None],
        clock: SentenceClock,
    ) -> None:
        try:
            message_stream = _queued_texts(texts)
            clock.marks = attach_marks(message_stream)
            start_message_stream(stream, message_stream)
            async with contextlib.aclosing(pcm_from_stream(stream)) as audio:
                async for pcm in audio:
                    await self._play(pcm, clock)
        except TtsError as err:
            await self._fail_tts(err)
            return
        for segment in clock.rest():
            await self._announce(segment)


async def speak_reply(
    hass: HomeAssistant,
    text_deltas: AsyncIterable[str | None],
    *,
    engine: str,
    language: str | None,
    options: Mapping[str, Any] | None,
    sink: SpeechSink,
    device_language: str | None,
    lookahead: int = DEFAULT_LOOKAHEAD,
    splitter_options: SplitterOptions | None = None,
) -> SpeakResult:
    """Speak a reply while it is being written.

    Returns when the text stream has ended and all audio went to the sink. The
    sink gets ``start_speaking`` when the first segment exists and
    ``stop_speaking`` at the end; nothing at all if the reply has nothing to
    say. Cancel the calling task to stop at once (barge-in): the sink then gets
    no further call, not even ``stop_speaking``.

    Args:
        hass: Home Assistant.
        text_deltas: The reply's text as it is written; ``None`` marks a pause
            of the agent (a tool call): the text so far is spoken right away.
        engine: TTS entity id or legacy provider (the pipeline's ``tts_engine``).
        language: TTS language (``None``: the engine's default).
        options: TTS options, e.g. ``{"voice": ...}``.
        sink: Receives the device messages and the PCM.
        device_language: Language of the device, for error messages.
        lookahead: Segments synthesized ahead of the one playing (engines
            without streaming input).
        splitter_options: Options of the `SentenceSplitter`.

    Raises:
        ValueError: Negative ``lookahead``.
        Exception: Whatever the sink raised (e.g. the connection closed).
    """
    if lookahead < 0:
        raise ValueError(f"lookahead must be >= 0, not {lookahead}")
    speaker = _ReplySpeaker(
        _Voice(hass, engine, language, options),
        sink,
        device_language,
        lookahead,
        splitter_options or {},
    )
    try:
        await speaker.run(text_deltas)
    except ExceptionGroup as group:
        # Only the sink can fail here (our tasks handle their own errors), so
        # hand its error on as it was raised; any other one stays as the cause.
        extra = group if len(group.exceptions) > 1 else None
        raise group.exceptions[0] from extra
    return speaker.result
