"""Incremental sentence splitter that feeds text-to-speech.

Pure module (no Home Assistant imports): it turns the text deltas of a streaming
LLM reply into speakable segments, each emitted as soon as it is complete, so
the device starts talking while the model is still writing.

Pipeline, one character at a time (``feed`` is O(new text)):

1. ``_SpeechCleaner`` drops what must not be spoken: markdown (``**``, ``#``
   headings, backticks and fenced code blocks, list markers, block quotes,
   horizontal rules and table rules; links become their text), emojis (removed
   but reported), zero-width and control characters, repeated whitespace (every
   run of blank space becomes one space and every line break one newline),
   spaces before commas and sentence-final marks, repeated sentence-final
   punctuation (``！！`` → ``！``) and closing quotes or brackets that close
   nothing. ``clean_for_speech`` is this cleaner applied to a
   whole text, which is what the segments concatenate to.
2. ``SentenceSplitter`` cuts the cleaned characters into segments:

   * always after ``。！？；.!?;`` and at a newline;
   * for the first segment of a reply also after ``，、,：:~～`` as soon as the
     clause before it holds ``first_min_cjk`` CJK characters or
     ``first_min_latin`` latin letters/digits (a weighted mix for mixed text);
   * later segments prefer whole sentences; once a segment reaches
     ``max_chars`` it is cut at its last clause break or, failing that, at its
     last word boundary (a space, between two CJK characters, or where CJK
     meets a latin word); a run without any boundary (a long URL) stays whole;
   * never inside numbers (``3.5``, ``1,000``, ``12:30``, ``18~25``), versions
     (``v1.6.2``), abbreviations (``e.g.``, ``Mr.``; ``U.S.``, ``p.m.``,
     ``etc.`` end a sentence only before a capital letter), URLs, e-mail
     addresses or ellipses (``...``, ``……``); a closing quote or bracket stays
     with the sentence it closes (``。”``).

Deciding some of these needs the next character (is the ``.`` followed by a
digit?), so such a break is held until that character arrives. Breaks whose
meaning is already certain (``，``, ``。``, ``!`` outside a URL, ``,`` after a
letter) are taken at once, which is what makes the first segment fast. The
segments depend only on the text, never on how it was chunked into deltas.

First-segment minimum and latency. The reference server (xiaozhi-esp32-server)
cuts the first segment at its first comma whatever its length, so ``好，`` or
``OK,`` are spoken on their own. A minimum of a few words (say 4 CJK / 12 latin
characters) can only make the first audio later on such replies, never earlier,
because a streaming splitter cannot know where the next break will be. The
defaults therefore ask for one word (``first_min_cjk=1``, ``first_min_latin=2``):
short interjections are natural prosodic phrases and TTS engines voice them
well, while the fragments that really sound wrong (a lone digit of ``1,000``, a
list number, ``Mr.``, emoji or punctuation only) are excluded by the structural
rules above rather than by length. Callers whose TTS engine stumbles on
one-word inputs can raise the minimum and trade first-audio latency for it.

With these defaults the first segment is never later than the reference
server's, with one exception by necessity: an ASCII comma after a 1-3 digit
integer (``42,``) may be a thousands separator (``42,000``), so that break waits
for the next character, one token. The reference server cuts there at once and
so speaks ``1,286`` as "1" and "286". A comma after a decimal, time or version
(``84.50,``, ``3:45,``, ``2.4.1,``) or after 4+ digits cannot go on as a number
and is taken at once. ``bench/first_segment.py`` measures all this.

Emojis are reported on the segment whose text surrounds them; an emoji right
after a break belongs to the next segment. Emojis after the last segment of a
reply have no segment to ride on; ``SentenceSplitter.trailing_emojis`` keeps
them after ``flush``.
"""

from collections.abc import AsyncGenerator, AsyncIterable, Callable
from dataclasses import dataclass
from enum import Enum, auto
import re
from typing import Final, Literal, TypedDict, Unpack
import unicodedata

DEFAULT_FIRST_MIN_CJK: Final = 1
DEFAULT_FIRST_MIN_LATIN: Final = 2
DEFAULT_MAX_CHARS: Final = 100

_HARD_BREAKS: Final = frozenset("。！？；")
_HARD_ASCII_BREAKS: Final = frozenset("!?;")
_SOFT_BREAKS: Final = frozenset("，、")
_TILDES: Final = frozenset("~～")
_RUN_TERMINATORS: Final = frozenset("。！？!?；;")
_OPEN_TO_CLOSE: Final = {
    "“": "”",
    "「": "」",
    "『": "』",
    "（": "）",
    "(": ")",
    "《": "》",
    "【": "】",
    "〈": "〉",
    "[": "]",
}
_CLOSERS: Final = frozenset(_OPEN_TO_CLOSE.values())
_QUOTE: Final = '"'
_NO_SPACE_BEFORE: Final = frozenset(",!?;:，。！？；：、")
_SPEAKABLE_SYMBOLS: Final = frozenset("%‰°℃℉$€£¥")
_ASCII_DIGITS: Final = frozenset("0123456789")
_NEVER_BREAK_ABBREVIATIONS: Final = frozenset(
    {"mr", "mrs", "ms", "dr", "prof", "sr", "jr", "st", "mt", "vs", "e.g", "i.e"}
    | {"cf", "approx", "fig", "a.k.a"}
)
_CAPITAL_BREAK_ABBREVIATIONS: Final = frozenset(
    {"etc", "inc", "ltd", "co", "corp", "dept", "min", "hr", "hrs", "sec", "no"}
    | {"jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct"}
    | {"nov", "dec"}
)
_MAX_LINK_TEXT: Final = 200
_MAX_BRACKET_DEPTH: Final = 8

# Characters a line may start with while it can still turn out to be a markdown
# prefix (heading, quote, bullet, numbered item, rule or table rule).
_LINE_PREFIX_CHARS: Final = frozenset(" \t#>-*+•·|=_:.)、0123456789")
_LINE_MARKER = re.compile(
    r"[ \t]*(?:>|#{1,6}(?=[ \t]|$)|[-*+•·](?=[ \t]|$)|\d{1,3}[.)、](?=[ \t]|$))"
)
_RULE_CHARS: Final = frozenset("-*_=")
_RULE_LINE_CHARS: Final = frozenset("-*_=|: \t")


def _is_cjk(ch: str) -> bool:
    cp = ord(ch)
    return (
        0x3040 <= cp <= 0x30FF  # kana
        or 0x3400 <= cp <= 0x4DBF
        or 0x4E00 <= cp <= 0x9FFF
        or 0xF900 <= cp <= 0xFAFF
        or 0xAC00 <= cp <= 0xD7AF  # hangul
        or 0x20000 <= cp <= 0x3134F
    )


def _is_word_boundary(prev: str, ch: str) -> bool:
    """Whether a hard cut may fall between ``prev`` and ``ch``.

    Before a space, between two CJK characters, or where CJK meets a latin word;
    never inside a number or a latin word.
    """
    if ch.isspace():
        return True
    prev_cjk, ch_cjk = _is_cjk(prev), _is_cjk(ch)
    return (
        (prev_cjk or _is_ascii_alpha(prev))
        and (ch_cjk or _is_ascii_alpha(ch))
        and (prev_cjk or ch_cjk)
    )


def _is_ascii_alpha(ch: str) -> bool:
    return ch.isascii() and ch.isalpha()


def _is_ascii_alnum(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def _is_speakable(ch: str) -> bool:
    return ch.isalnum() or ch in _SPEAKABLE_SYMBOLS


def _is_emoji_modifier(cp: int) -> bool:
    """Variation selectors, skin tones, tag characters, keycap."""
    return (
        cp in (0xFE0E, 0xFE0F, 0x20E3)
        or 0x1F3FB <= cp <= 0x1F3FF
        or 0xE0020 <= cp <= 0xE007F
    )


def _is_emoji_base(cp: int) -> bool:
    return (
        0x1F000 <= cp <= 0x1FAFF
        or 0x2600 <= cp <= 0x27BF
        or cp in (0x231A, 0x231B, 0x2328, 0x23CF, 0x2B50, 0x2B55, 0x3030, 0x303D)
        or cp in (0x3297, 0x3299, 0x2B1B, 0x2B1C)
        or 0x23E9 <= cp <= 0x23F3
        or 0x23F8 <= cp <= 0x23FA
        or 0x2B05 <= cp <= 0x2B07
    )


def _is_regional_indicator(cp: int) -> bool:
    return 0x1F1E6 <= cp <= 0x1F1FF


@dataclass(frozen=True, slots=True)
class Segment:
    """A speakable piece of a reply.

    Attributes:
        text: Cleaned text to speak; never empty and never punctuation only.
        emojis: Emojis removed from this segment's raw text, in order.
    """

    text: str
    emojis: tuple[str, ...] = ()


class SplitterOptions(TypedDict, total=False):
    """Keyword options of ``SentenceSplitter`` (and ``split_stream``)."""

    first_min_cjk: int
    first_min_latin: int
    max_chars: int


class _BracketTracker:
    """Open quotes and brackets of the current line, innermost last."""

    def __init__(self) -> None:
        self._expected: list[str] = []

    @property
    def depth(self) -> int:
        return len(self._expected)

    def reset(self) -> None:
        self._expected.clear()

    def closes(self, ch: str) -> bool:
        """Whether ``ch`` would close an open quote or bracket."""
        return (ch in _CLOSERS or ch == _QUOTE) and ch in self._expected

    def is_opener(self, ch: str) -> bool:
        return ch in _OPEN_TO_CLOSE or (ch == _QUOTE and _QUOTE not in self._expected)

    def track(self, ch: str) -> bool:
        """Update for ``ch``; False when it is a closer that closes nothing."""
        if self.closes(ch):
            index = len(self._expected) - 1 - self._expected[::-1].index(ch)
            del self._expected[index:]
            return True
        if self.is_opener(ch):
            if len(self._expected) < _MAX_BRACKET_DEPTH:
                self._expected.append(_OPEN_TO_CLOSE.get(ch, _QUOTE))
            return True
        return ch not in _CLOSERS


class _SpeechCleaner:
    """Streaming text cleaner; reports cleaned characters and emojis to a sink.

    Two layers: ``_structural`` handles markdown that needs context (line
    prefixes, code fences, links), ``_inline`` handles single characters
    (emojis, whitespace, stray closers, repeated terminators).
    """

    def __init__(
        self, on_char: Callable[[str], None], on_emoji: Callable[[str], None]
    ) -> None:
        self._on_char = on_char
        self._on_emoji = on_emoji
        # Structural layer.
        self._line_start = True
        self._prefix: list[str] = []
        self._ticks = 0
        self._in_fence = False
        self._link: list[str] | None = None
        self._link_url = False
        self._link_closed = False
        self._link_parens = 0
        # Inline layer.
        self._emoji: list[str] = []
        self._emoji_join = False
        self._emoji_gap = False
        self._pending_space = False
        self._last = ""
        self._brackets = _BracketTracker()

    def feed(self, text: str) -> None:
        """Clean ``text``, the next piece of the stream."""
        for ch in text:
            self._structural(ch)

    def finish(self) -> None:
        """Release everything held back at the end of the stream."""
        if self._ticks:
            self._end_tick_run()
        if self._link is not None:
            self._release_link(literal=not self._link_url)
        if self._line_start and self._prefix:
            self._release_prefix(None)
        self._finish_emoji()
        self._pending_space = False

    # Structural layer -----------------------------------------------------

    def _structural(self, ch: str) -> None:
        if ch == "`" and self._link is None:
            if self._line_start and self._prefix and not self._in_fence:
                self._release_prefix(ch)
            self._ticks += 1
            return
        if self._ticks:
            self._end_tick_run()
        if self._in_fence:
            return
        if self._link is not None:
            self._link_char(ch)
            return
        if self._line_start:
            if ch in _LINE_PREFIX_CHARS:
                self._prefix.append(ch)
                return
            self._release_prefix(ch)
        if ch == "[":
            self._link = []
            self._link_closed = False
            self._link_url = False
            return
        self._inline(ch)
        if ch == "\n":
            self._line_start = True

    def _end_tick_run(self) -> None:
        run, self._ticks = self._ticks, 0
        if run >= 3:
            self._in_fence = not self._in_fence
        # Shorter runs delimit inline code: the backticks go, the code stays.
        self._line_start = False

    def _release_prefix(self, next_ch: str | None) -> None:
        held = "".join(self._prefix)
        self._prefix.clear()
        self._line_start = False
        line_ends = next_ch is None or next_ch == "\n"
        rest = _strip_line_markers(held, line_ends or _is_cjk(next_ch or ""))
        if line_ends and _is_rule(rest):
            return
        for ch in rest:
            self._inline(ch)

    def _link_char(self, ch: str) -> None:
        assert self._link is not None
        if self._link_url:
            if ch == "(":
                self._link_parens += 1
            elif ch == ")" and self._link_parens:
                self._link_parens -= 1
            elif ch in ")\n":
                self._release_link(literal=False)
                if ch == "\n":
                    self._structural(ch)
            return
        if self._link_closed:
            if ch == "(":
                self._link_url = True
                self._link_parens = 0
                return
            self._release_link(literal=True)
            self._structural(ch)
            return
        if ch == "]":
            self._link_closed = True
        elif ch in "[\n" or len(self._link) >= _MAX_LINK_TEXT:
            self._release_link(literal=True)
            self._structural(ch)
        else:
            self._link.append(ch)

    def _release_link(self, *, literal: bool) -> None:
        assert self._link is not None
        text = "".join(self._link)
        if literal:
            text = "[" + text + ("]" if self._link_closed else "")
        self._link = None
        self._link_url = False
        for ch in text:
            self._inline(ch)

    # Inline layer ---------------------------------------------------------

    def _inline(self, ch: str) -> None:
        if self._emoji_char(ch):
            return
        self._finish_emoji()
        if ch == "\n":
            self._newline()
        elif ch.isspace() or ch == "|":
            self._pending_space = self._last not in ("", "\n")
        elif ch in "*`" or unicodedata.category(ch) in ("Cc", "Cf"):
            return
        elif not self._brackets.track(ch):
            return  # a closing quote or bracket that closes nothing
        elif (
            ch in _RUN_TERMINATORS
            and self._last in _RUN_TERMINATORS
            and not self._pending_space
        ):
            return
        else:
            self._output(ch)

    def _newline(self) -> None:
        self._pending_space = False
        self._emoji_gap = False
        self._brackets.reset()
        if self._last not in ("", "\n"):
            self._last = "\n"
            self._on_char("\n")

    def _output(self, ch: str) -> None:
        if self._pending_space and ch not in _NO_SPACE_BEFORE:
            self._on_char(" ")
        elif self._emoji_gap and _is_ascii_alnum(ch) and _is_ascii_alnum(self._last):
            self._on_char(" ")  # "OK👍Done" is spoken "OK Done"
        self._pending_space = False
        self._emoji_gap = False
        self._last = ch
        self._on_char(ch)

    def _emoji_char(self, ch: str) -> bool:
        cp = ord(ch)
        if ch == "\u200d":
            if self._emoji:
                self._emoji.append(ch)
                self._emoji_join = True
            return True
        if _is_emoji_modifier(cp):
            if self._emoji:
                self._emoji.append(ch)
            return True
        if not _is_emoji_base(cp):
            return False
        if self._emoji and (self._emoji_join or self._completes_flag(cp)):
            self._emoji.append(ch)
        else:
            self._finish_emoji()
            self._emoji.append(ch)
        self._emoji_join = False
        return True

    def _completes_flag(self, cp: int) -> bool:
        return (
            _is_regional_indicator(cp)
            and len(self._emoji) == 1
            and _is_regional_indicator(ord(self._emoji[0]))
        )

    def _finish_emoji(self) -> None:
        if not self._emoji:
            return
        emoji = "".join(self._emoji)
        self._emoji.clear()
        self._emoji_join = False
        self._emoji_gap = _is_ascii_alnum(self._last)
        self._on_emoji(emoji)


def _strip_line_markers(held: str, end_is_boundary: bool) -> str:
    """Remove markdown line prefixes (``## ``, ``> ``, ``- ``, ``1. ``) from ``held``.

    ``end_is_boundary`` tells whether a marker may end exactly where ``held``
    ends (the line ends there, or CJK text follows as in ``1.打开``).
    """
    pos = 0
    while match := _LINE_MARKER.match(held, pos):
        needs_boundary = match.end() == len(held) and held[-1] != ">"
        if needs_boundary and not end_is_boundary:
            break
        pos = match.end()
    return held[pos:].lstrip(" \t")


def _is_rule(text: str) -> bool:
    """Whether a whole line is a horizontal rule or a table's separator row."""
    return sum(ch in _RULE_CHARS for ch in text) >= 3 and all(
        ch in _RULE_LINE_CHARS for ch in text
    )


def clean_for_speech(text: str) -> str:
    """Return ``text`` cleaned for speech, exactly as the splitter cleans it.

    Args:
        text: A whole reply (markdown, emojis and all).

    Returns:
        The speakable text; the splitter's segments concatenate to it (with the
        whitespace between them), except for a trailing remainder that holds
        nothing to speak.
    """
    chars: list[str] = []
    cleaner = _SpeechCleaner(chars.append, lambda _emoji: None)
    cleaner.feed(text)
    cleaner.finish()
    return "".join(chars).strip()


class _Wait(Enum):
    """What a held break is waiting to learn from the next character."""

    PERIOD = auto()  # "." : decimal, version, domain, abbreviation or end?
    CAPITAL = auto()  # "p.m. " : does a new sentence (capital letter) follow?
    NUMBER = auto()  # "1," "12：" "18~" : does the number go on?
    COLON = auto()  # ":" : time, URL scheme or a real colon?
    URL = auto()  # "?" "," ... inside a URL: does the URL end here?
    CLOSERS = auto()  # after a break with open quotes: do they close now?


@dataclass(slots=True)
class _HeldBreak:
    wait: _Wait
    cut: int
    hard: bool


class SentenceSplitter:
    """Incremental splitter of a streamed reply into speakable segments.

    Feed it every text delta as it arrives, then call ``flush`` once at the end
    of the reply; after ``flush`` it is ready for the next reply. The segments
    depend only on the text, never on how it was chunked.
    """

    def __init__(
        self,
        *,
        first_min_cjk: int = DEFAULT_FIRST_MIN_CJK,
        first_min_latin: int = DEFAULT_FIRST_MIN_LATIN,
        max_chars: int = DEFAULT_MAX_CHARS,
    ) -> None:
        """Create a splitter.

        Args:
            first_min_cjk: CJK characters a first clause needs before a comma,
                colon or enumeration mark ends the first segment.
            first_min_latin: Latin letters/digits a first clause needs for the
                same (mixed clauses count each script as a share of its minimum).
            max_chars: Length from which a segment is cut at its last clause
                break, or else at its last word boundary.

        Raises:
            ValueError: If a minimum is negative or ``max_chars`` is below 1.
        """
        if first_min_cjk < 0 or first_min_latin < 0 or max_chars < 1:
            raise ValueError(
                "first_min_cjk and first_min_latin must be >= 0, max_chars >= 1"
            )
        self._first_min_cjk = first_min_cjk
        self._first_min_latin = first_min_latin
        self._max_chars = max_chars
        self.trailing_emojis: tuple[str, ...] = ()
        self._reset()

    def _reset(self) -> None:
        self._cleaner = _SpeechCleaner(self._on_char, self._on_emoji)
        self._out: list[Segment] = []
        self._buf: list[str] = []
        self._cjk = 0
        self._latin = 0
        self._speakable = 0
        self._emojis: list[str] = []
        self._held_emojis: list[str] = []
        self._held: _HeldBreak | None = None
        self._first = True
        self._soft_cut = 0
        self._word_cut = 0
        self._in_url = False
        self._brackets = _BracketTracker()

    def feed(self, delta: str | None) -> list[Segment]:
        """Add the next delta of the reply.

        Args:
            delta: New text; ``None`` and ``""`` are accepted and ignored.

        Returns:
            The segments completed by this delta, in order (often none).
        """
        if delta:
            self.trailing_emojis = ()
            self._cleaner.feed(delta)
        return self._take()

    def flush(self) -> list[Segment]:
        """End the reply: return the remaining segments and reset.

        Returns:
            The segments still pending, in order. Emojis that follow the last
            segment are left in ``trailing_emojis``.
        """
        self.trailing_emojis = ()
        self._cleaner.finish()
        if self._held is not None:
            self._drop_held()
        self._emit(len(self._buf), final=True)
        segments = self._take()
        self._reset()
        return segments

    def _take(self) -> list[Segment]:
        out, self._out = self._out, []
        return out

    # Callbacks of the cleaner ---------------------------------------------

    def _on_emoji(self, emoji: str) -> None:
        held = self._held is not None
        (self._held_emojis if held else self._emojis).append(emoji)

    def _on_char(self, ch: str) -> None:
        if self._held is not None and self._resolve(ch):
            return
        if ch == "\n":
            self._newline()
        else:
            self._append(ch)
            self._consider_break(ch)
            self._enforce_max()

    # Character handling -----------------------------------------------------

    def _newline(self) -> None:
        self._brackets.reset()
        self._in_url = False
        self._emit(len(self._buf))
        if self._buf:  # punctuation only, carried on: keep its line break
            self._word_cut = len(self._buf)
            self._buf.append("\n")

    def _append(self, ch: str) -> None:
        if ch.isspace() or _is_cjk(ch) or not ch.isascii():
            self._in_url = False
        if not self._buf and ch.isspace():
            return
        if self._buf and _is_word_boundary(self._buf[-1], ch):
            self._word_cut = len(self._buf)
        self._buf.append(ch)
        self._count(ch)
        self._brackets.track(ch)
        if (ch == "/" and self._tail(3) == "://") or (
            ch == "." and self._tail(4).lower() == "www." and not self._alnum_at(-5)
        ):
            self._in_url = True

    def _tail(self, n: int) -> str:
        return "".join(self._buf[-n:])

    def _alnum_at(self, index: int) -> bool:
        return len(self._buf) >= -index and _is_ascii_alnum(self._buf[index])

    def _count(self, ch: str) -> None:
        if _is_cjk(ch):
            self._cjk += 1
        elif ch.isalnum():
            self._latin += 1
        if _is_speakable(ch):
            self._speakable += 1

    def _consider_break(self, ch: str) -> None:
        prev = self._buf[-2] if len(self._buf) > 1 else ""
        if ch in _HARD_BREAKS:
            self._candidate(hard=True)
        elif ch in _SOFT_BREAKS:
            self._candidate(hard=False)
        elif ch in _HARD_ASCII_BREAKS or ch == ",":
            self._consider_ascii(ch)
        elif ch == ".":
            if prev != ".":
                self._hold(_Wait.PERIOD, hard=True)
        elif ch == ":":
            self._hold(_Wait.COLON, hard=False)
        elif ch == "：":
            if prev in _ASCII_DIGITS:
                self._hold(_Wait.NUMBER, hard=False)
            else:
                self._candidate(hard=False)
        elif ch in _TILDES:
            if prev in _ASCII_DIGITS:
                self._hold(_Wait.NUMBER, hard=False)
            elif prev and not prev.isspace():
                self._candidate(hard=False)

    def _consider_ascii(self, ch: str) -> None:
        hard = ch != ","
        if self._in_url:
            self._hold(_Wait.URL, hard=hard)
        elif ch == "," and self._may_be_thousands_separator():
            self._hold(_Wait.NUMBER, hard=False)
        else:
            self._candidate(hard=hard)

    def _may_be_thousands_separator(self) -> bool:
        """Whether the "," just added may go on as in "1,286" or "42,000".

        Only after a run of 1 to 3 digits that is not itself the decimal,
        minutes or version part ("84.50,", "3:45,", "2.4.1,") or a code ("E21,").
        """
        run = 0
        for ch in reversed(self._buf[:-1]):
            if ch not in _ASCII_DIGITS:
                return run >= 1 and not (ch in ".:" or _is_ascii_alnum(ch))
            run += 1
            if run > 3:
                return False
        return run >= 1

    def _hold(self, wait: _Wait, *, hard: bool) -> None:
        self._held = _HeldBreak(wait, len(self._buf), hard)

    def _candidate(self, *, hard: bool, cut: int | None = None) -> bool:
        """A break is certain after ``cut``; wait for closers if quotes are open.

        Returns:
            True when the break now waits for closing quotes or brackets.
        """
        at = len(self._buf) if cut is None else cut
        if self._brackets.depth:
            self._held = _HeldBreak(_Wait.CLOSERS, at, hard)
            return True
        self._confirm(at, hard=hard)
        return False

    def _confirm(self, cut: int, *, hard: bool) -> None:
        if hard or (self._first and self._first_clause_long_enough()):
            self._emit(cut)
        else:
            self._soft_cut = cut

    def _first_clause_long_enough(self) -> bool:
        need_cjk, need_latin = self._first_min_cjk, self._first_min_latin
        return self._cjk * need_latin + self._latin * need_cjk >= need_cjk * need_latin

    def _resolve(self, ch: str) -> bool:
        """Settle the held break with the next character ``ch``.

        Returns:
            True when ``ch`` was consumed (a closer kept with its sentence).
        """
        held = self._held
        assert held is not None
        if held.wait is _Wait.CLOSERS:
            return self._resolve_closers(held, ch)
        if held.wait is _Wait.PERIOD and ch == " ":
            kind = self._abbreviation_before(held.cut - 1)
            if kind == "never":
                self._drop_held()
            elif kind == "capital":
                held.wait = _Wait.CAPITAL
            else:
                self._break_held(held, ch)
            return False
        if self._is_break(held.wait, ch):
            return self._break_held(held, ch)
        self._drop_held()
        return False

    def _is_break(self, wait: _Wait, ch: str) -> bool:
        if ch == "\n":
            return True
        match wait:
            case _Wait.PERIOD:
                # "3.5", "v1.2", "x.com", "a@b.c", "...", "etc.," go on.
                return not (_is_ascii_alnum(ch) or ch in "./@_-,;:")
            case _Wait.CAPITAL:
                return ch.isupper() or _is_cjk(ch) or self._brackets.is_opener(ch)
            case _Wait.NUMBER:
                return ch not in _ASCII_DIGITS
            case _:  # COLON and URL: a real break only before a space or CJK
                return ch.isspace() or _is_cjk(ch) or self._brackets.is_opener(ch)

    def _break_held(self, held: _HeldBreak, ch: str) -> bool:
        self._held = None
        if self._candidate(hard=held.hard, cut=held.cut):
            return self._resolve(ch)
        self._release_held_emojis()
        return False

    def _resolve_closers(self, held: _HeldBreak, ch: str) -> bool:
        if self._brackets.closes(ch):
            # Emojis seen before the closer belong to its sentence.
            self._emojis.extend(self._held_emojis)
            self._held_emojis.clear()
            self._buf.append(ch)
            self._brackets.track(ch)
            held.cut = len(self._buf)
            if not self._brackets.depth:
                self._held = None
                self._confirm(held.cut, hard=held.hard)
                self._release_held_emojis()
            return True
        self._held = None
        self._confirm(held.cut, hard=held.hard)
        self._release_held_emojis()
        return False

    def _drop_held(self) -> None:
        """The held break was no break: its emojis stay in this segment."""
        self._held = None
        self._emojis.extend(self._held_emojis)
        self._held_emojis.clear()

    def _release_held_emojis(self) -> None:
        # Reached only when the held cut was not emitted (soft break kept or
        # punctuation-only text): the emojis stay in the current segment.
        self._emojis.extend(self._held_emojis)
        self._held_emojis.clear()

    def _abbreviation_before(self, dot: int) -> Literal["never", "capital", "none"]:
        """Classify the word that ends at ``self._buf[dot]`` (a period)."""
        start = dot
        while start > 0 and dot - start < 12:
            ch = self._buf[start - 1]
            if not (ch.isascii() and (ch.isalpha() or ch == ".")):
                break
            start -= 1
        word = "".join(self._buf[start:dot])
        lower = word.lower()
        if lower in _NEVER_BREAK_ABBREVIATIONS or (len(word) == 1 and word.isupper()):
            return "never"
        if lower in _CAPITAL_BREAK_ABBREVIATIONS or "." in word:
            return "capital"
        return "none"

    def _enforce_max(self) -> None:
        if self._held is not None or len(self._buf) < self._max_chars:
            return
        cut = self._soft_cut
        if cut < self._max_chars // 3:
            cut = self._word_cut or cut
        if cut:
            self._emit(cut)

    # Emission -------------------------------------------------------------

    def _emit(self, cut: int, *, final: bool = False) -> None:
        """Emit ``self._buf[:cut]`` as a segment if it has something to speak."""
        speakable_after_cut = sum(_is_speakable(ch) for ch in self._buf[cut:])
        if self._speakable == speakable_after_cut:
            # Punctuation only: it stays and leads the next segment.
            self._soft_cut = self._word_cut = 0
            self._emojis.extend(self._held_emojis)
            self._held_emojis.clear()
            if final:
                self.trailing_emojis = tuple(self._emojis)
            return
        emojis = self._emojis + self._held_emojis if final else self._emojis
        text = "".join(self._buf[:cut]).strip()
        self._out.append(Segment(text, tuple(emojis)))
        self._first = False
        self._emojis, self._held_emojis = self._held_emojis, []
        if final:
            self._emojis = []
        rest = self._buf[cut:]
        while rest and rest[0].isspace():
            rest.pop(0)
        self._buf = rest
        self._recount()

    def _recount(self) -> None:
        self._cjk = self._latin = self._speakable = 0
        self._soft_cut = self._word_cut = 0
        for index, ch in enumerate(self._buf):
            self._count(ch)
            if index and _is_word_boundary(self._buf[index - 1], ch):
                self._word_cut = index


async def split_stream(
    deltas: AsyncIterable[str | None], **options: Unpack[SplitterOptions]
) -> AsyncGenerator[Segment]:
    """Split an async stream of text deltas into speakable segments.

    Args:
        deltas: The reply's text deltas (``None`` or empty ones are ignored).
        **options: ``SentenceSplitter`` options.

    Yields:
        Each segment as soon as the deltas complete it; the tail at the end.
    """
    splitter = SentenceSplitter(**options)
    async for delta in deltas:
        for segment in splitter.feed(delta):
            yield segment
    for segment in splitter.flush():
        yield segment
