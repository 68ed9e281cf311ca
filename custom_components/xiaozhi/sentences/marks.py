"""Where each sentence's audio starts in one streamed TTS answer, when its engine says.

One continuous TTS stream (an engine with streaming input) does not say where a
sentence's audio begins, so the device's speaker estimates it from the text
(`voice.speaking.SentenceClock`) and its subtitles drift from the voice when the
voice is faster or slower than estimated. An engine that knows, such as this
integration's own (it synthesizes one sentence after the other), tells it here:

* the speaker creates a :class:`SpeechMarks` for the message stream it hands to
  Home Assistant and attaches it to that stream object (:func:`attach_marks`);
  Home Assistant gives the same object to the engine as ``message_gen``;
* the engine looks it up (:func:`marks_for`) and, right before the first audio
  of each sentence it speaks, calls :meth:`SpeechMarks.sentence_starts` with the
  sentence and the seconds of audio it produced before it.

Sentences are matched by position in the text, counted without whitespace
(:func:`text_length`): the engine's sentences need not be the speaker's
segments, only the same text. Streams are held weakly; an engine that does not
know this module (any other) simply never marks, and the speaker estimates.
"""

from collections.abc import AsyncGenerator
from dataclasses import dataclass
import weakref


def text_length(text: str) -> int:
    """Return how far ``text`` moves a position in the stream's text."""
    return sum(not char.isspace() for char in text)


@dataclass(frozen=True, slots=True)
class SentenceMark:
    """One sentence's start: where in the text, and where in the audio.

    Attributes:
        position: `text_length` of the stream's text before the sentence.
        seconds: Audio the engine produced before the sentence.
    """

    position: int
    seconds: float


class SpeechMarks:
    """The sentence starts one engine reports for one message stream.

    Attributes:
        marks: The starts reported so far, in order.
    """

    def __init__(self) -> None:
        """Start with no marks."""
        self.marks: list[SentenceMark] = []
        self._position = 0

    @property
    def told(self) -> bool:
        """Return whether the engine reports marks (it marks its first sentence first)."""
        return bool(self.marks)

    def sentence_starts(self, text: str, seconds: float) -> None:
        """Report that the audio of ``text``, the next sentence, starts at ``seconds``."""
        self.marks.append(SentenceMark(self._position, seconds))
        self._position += text_length(text)


_MARKS: weakref.WeakKeyDictionary[AsyncGenerator[str], SpeechMarks] = (
    weakref.WeakKeyDictionary()
)


def attach_marks(stream: AsyncGenerator[str]) -> SpeechMarks:
    """Return new marks that the engine speaking ``stream`` can report to."""
    marks = _MARKS[stream] = SpeechMarks()
    return marks


def marks_for(stream: AsyncGenerator[str]) -> SpeechMarks | None:
    """Return the marks the speaker of ``stream`` waits for, if any."""
    try:
        return _MARKS.get(stream)
    except TypeError:  # not weakly referenceable: nobody attached marks
        return None
