"""Benchmark: time to the first TTS segment, the seed's splitter vs ours.

Not a test. Replays the replies of ``bench/replies.py`` as LLM token streams
(simple realistic tokenizer, time to first token 250 ms, then 30 tokens/s) through

* the seed: the streaming text splitter of xinnan-tech/xiaozhi-esp32-server,
  re-implemented below for comparison only, and
* ours: ``custom_components/xiaozhi/sentences/splitter.py``,

and prints, per reply and in total, when the first segment is handed to TTS and
its text. Time is simulated (token ``i`` arrives at ``TTFT + i / rate``), so the
numbers are exact and repeatable; ``--realtime`` replays with real sleeps instead
and measures ours through the async ``split_stream``.

Run from the repository root: ``/work/venv/bin/python bench/first_segment.py``.
It imports the integration's ``text`` package, which needs no Home Assistant.
"""

import argparse
import asyncio
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
import re
import statistics
import sys

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from replies import REPLIES  # noqa: E402

from custom_components.xiaozhi.sentences import splitter  # noqa: E402

# ---------------------------------------------------------------------------
# The seed, re-implemented for comparison. Source: xinnan-tech/xiaozhi-esp32-server
# at 7475ea2b (2026-08-06), main/xiaozhi-server/:
#   core/providers/tts/base.py   TTSProviderBase.__init__ (punctuations,
#       first_sentence_punctuations), tts_text_priority_thread (one
#       _get_segment_text call per text delta), _get_segment_text,
#       _process_remaining_text_stream, to_tts_stream (MarkdownCleaner first)
#   core/utils/textUtils.py      get_string_no_punctuation_or_emoji,
#       is_punctuation_or_emoji, is_emoji, EMOJI_RANGES, check_emoji
#   core/utils/tts.py            MarkdownCleaner, punctuation_set
# Its defects this bench makes visible: the first segment ends at the first
# comma-like mark even inside a number ("1,286" -> "1", "18~27" -> "18~"); "." is
# no break at all (upstream dropped it from both sets in ec4694f8, 2025-06-26;
# before that "3.5" was cut after "3."), so an English reply without commas is
# spoken only when complete; a newline is no break, and check_emoji deletes every
# "\n", gluing list lines together ("today:- 10:00 a.m. ..."); markdown is cleaned
# per segment, so a "**" pair cut apart by a split survives.
# ---------------------------------------------------------------------------

SEED_PUNCTUATIONS = ("。", "？", "?", "！", "!", "；", ";", "：")
SEED_FIRST_SENTENCE_PUNCTUATIONS = (
    *("，", "~", "、", ",", "。", "？", "?", "！", "!", "；", ";", "："),
)
_SEED_STRIP_SET = frozenset(
    {"，", ",", "。", ".", "！", "!", "“", "”", '"', "：", ":", "-", "－", "、"}
    | {"[", "]", "【", "】"}
)
_SEED_ASCII_SET = _SEED_STRIP_SET | {"~"}
_SEED_EMOJI_RANGES = (
    (0x1F600, 0x1F64F),
    (0x1F300, 0x1F5FF),
    (0x1F680, 0x1F6FF),
    (0x1F900, 0x1F9FF),
    (0x1FA70, 0x1FAFF),
    (0x2600, 0x26FF),
    (0x2700, 0x27BF),
)


def _seed_is_emoji(char: str) -> bool:
    return any(start <= ord(char) <= end for start, end in _SEED_EMOJI_RANGES)


def _seed_strip(text: str) -> str:
    """textUtils.get_string_no_punctuation_or_emoji."""

    def junk(char: str) -> bool:
        return char.isspace() or char in _SEED_STRIP_SET or _seed_is_emoji(char)

    start, end = 0, len(text) - 1
    while start < len(text) and junk(text[start]):
        start += 1
    while end >= start and junk(text[end]):
        end -= 1
    return text[start : end + 1]


def _seed_table(match: re.Match[str]) -> str:
    """MarkdownCleaner._replace_table_block."""
    rows = []
    for line in match.group("table_block").strip("\n").split("\n"):
        stripped = line.strip()
        if re.match(r"^\|\s*[-:]+\s*(\|\s*[-:]+\s*)+\|?$", stripped):
            continue
        columns = [col.strip() for col in stripped.split("|") if col.strip() != ""]
        if columns:
            rows.append(columns)
    if not rows:
        return ""
    if len(rows) == 1:
        return f"单行表格：{', '.join(rows[0])}\n"
    headers, lines = rows[0], [f"表头是：{', '.join(rows[0])}"]
    for number, row in enumerate(rows[1:], start=1):
        cells = [
            f"{headers[index]} = {cell}" if index < len(headers) else cell
            for index, cell in enumerate(row)
        ]
        lines.append(f"第 {number} 行：{', '.join(cells)}")
    return "\n".join(lines) + "\n"


def _seed_inline_dollar(match: re.Match[str]) -> str:
    """MarkdownCleaner._replace_inline_dollar."""
    content = match.group(1)
    if re.search(r"[a-zA-Z\\^_{}\+\-\(\)\[\]=]", content):
        return content
    return match.group(0)


_SEED_MARKDOWN: tuple[tuple[re.Pattern[str], str | Callable[[re.Match[str]], str]], ...]
_SEED_MARKDOWN = (
    (re.compile(r"```.*?```", re.DOTALL), ""),
    (re.compile(r"^#+\s*", re.MULTILINE), ""),
    (re.compile(r"(\*\*|__)(.*?)\1"), r"\2"),
    (re.compile(r"(\*|_)(?=\S)(.*?)(?<=\S)\1"), r"\2"),
    (re.compile(r"!\[.*?\]\(.*?\)"), ""),
    (re.compile(r"\[(.*?)\]\(.*?\)"), r"\1"),
    (re.compile(r"^\s*>+\s*", re.MULTILINE), ""),
    (re.compile(r"(?P<table_block>(?:^[^\n]*\|[^\n]*\n)+)", re.MULTILINE), _seed_table),
    (re.compile(r"^\s*[*+-]\s*", re.MULTILINE), "- "),
    (re.compile(r"\$\$.*?\$\$", re.DOTALL), ""),
    (
        re.compile(r"(?<![A-Za-z0-9])\$([^\n$]+)\$(?![A-Za-z0-9])"),
        _seed_inline_dollar,
    ),
    (re.compile(r"\n{2,}"), "\n"),
)


def _seed_clean_markdown(text: str) -> str:
    """MarkdownCleaner.clean_markdown (what to_tts_stream sends to the TTS)."""
    for regex, replacement in _SEED_MARKDOWN:
        text = regex.sub(replacement, text)
    text = "".join(c for c in text if not _seed_is_emoji(c) and c != "\n")
    if text and all(c.isascii() or c.isspace() or c in _SEED_ASCII_SET for c in text):
        return text
    return text.strip()


class SeedSplitter:
    """TTSProviderBase's streaming split: one ``_get_segment_text`` per delta."""

    def __init__(self) -> None:
        self.tts_text_buff: list[str] = []
        self.processed_chars = 0
        self.is_first_sentence = True
        self.first_cut: int | None = None  # raw offset of the first cut (bench only)

    def feed(self, delta: str) -> str | None:
        """tts_text_priority_thread for a TEXT message; returns the TTS text."""
        self.tts_text_buff.append(delta)
        segment_text = self._get_segment_text()
        if segment_text:
            return _seed_clean_markdown(segment_text)
        return None

    def flush(self) -> str | None:
        """_process_remaining_text_stream at the LAST message."""
        remaining_text = "".join(self.tts_text_buff)[self.processed_chars :]
        if remaining_text:
            segment_text = _seed_strip(remaining_text)
            if segment_text:
                return _seed_clean_markdown(segment_text)
        return None

    def _get_segment_text(self) -> str | None:
        full_text = "".join(self.tts_text_buff)
        current_text = full_text[self.processed_chars :]
        last_punct_pos = -1
        punctuations_to_use = (
            SEED_FIRST_SENTENCE_PUNCTUATIONS
            if self.is_first_sentence
            else SEED_PUNCTUATIONS
        )
        # Upstream keeps the smallest of the *last* positions of each mark.
        for punct in punctuations_to_use:
            pos = current_text.rfind(punct)
            if (pos != -1 and last_punct_pos == -1) or (
                pos != -1 and pos < last_punct_pos
            ):
                last_punct_pos = pos
        if last_punct_pos == -1:
            return None
        segment_text_raw = current_text[: last_punct_pos + 1]
        if self.first_cut is None:
            self.first_cut = self.processed_chars + len(segment_text_raw)
        self.processed_chars += len(segment_text_raw)
        self.is_first_sentence = False
        return _seed_strip(segment_text_raw)


# ---------------------------------------------------------------------------
# Token streams.
# ---------------------------------------------------------------------------

_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_PIECES = re.compile(
    r"\n+"
    r"|'(?:s|t|re|ve|m|ll|d)(?![A-Za-z])"
    r"|[ \t]?[A-Za-z]+"
    r"|[ \t]?[0-9]{1,3}"
    rf"|[ \t]?[{_CJK}]+"
    rf"|[ \t]?(?P<mark>[^\sA-Za-z0-9{_CJK}])(?P=mark)*"
    r"|\s",
)
_CJK_CHUNKS = (2, 1, 2)  # CJK: about 1.7 characters per token
_WORD_PIECE = (
    4  # latin: words up to 7 letters are one token, longer ones 4-letter pieces
)


def tokenize(text: str) -> list[str]:
    """Split text the way a BPE tokenizer roughly does (deterministic)."""
    tokens: list[str] = []
    for match in _PIECES.finditer(text):
        piece = match.group(0)
        core = piece.lstrip(" \t")
        if core and re.fullmatch(rf"[{_CJK}]+", core):
            tokens.extend(_chunk(piece, len(piece) - len(core), _CJK_CHUNKS))
        elif core.isascii() and core.isalpha() and len(core) > 7:
            tokens.extend(_chunk(piece, len(piece) - len(core), (_WORD_PIECE,)))
        else:
            tokens.append(piece)
    assert "".join(tokens) == text
    return tokens


def _chunk(piece: str, lead: int, sizes: Sequence[int]) -> list[str]:
    chunks, pos, turn = [], 0, 0
    while pos < len(piece):
        size = sizes[turn % len(sizes)] + (lead if pos == 0 else 0)
        chunks.append(piece[pos : pos + size])
        pos += size
        turn += 1
    return chunks


# ---------------------------------------------------------------------------
# Measurements.
# ---------------------------------------------------------------------------


@dataclass(slots=True)
class FirstSegment:
    """When (seconds after the request) and what the first segment was."""

    seconds: float
    text: str


@dataclass(slots=True)
class Result:
    """Both splitters on one reply."""

    label: str
    text: str
    seed: FirstSegment
    ours: FirstSegment
    seed_cut: int  # raw offset after the seed's first cut

    @property
    def seed_split_inside_number(self) -> bool:
        """The seed cut between two digits ("1,|286", "18~|27")."""
        text, cut = self.text, self.seed_cut
        return 2 <= cut < len(text) and text[cut - 2].isdigit() and text[cut].isdigit()

    @property
    def seed_cut_after_number_comma(self) -> bool:
        """The seed cut at "N," where only the next character tells "42, " from "42,000"."""
        text, cut = self.text, self.seed_cut
        return cut >= 2 and text[cut - 1] == "," and text[cut - 2].isdigit()


def arrival(index: int, ttft: float, rate: float) -> float:
    """Simulated arrival time of token ``index``."""
    return ttft + index / rate


def seed_first(tokens: list[str], ttft: float, rate: float) -> tuple[FirstSegment, int]:
    """First audible segment of the seed, and the raw offset where it cut."""
    seed = SeedSplitter()
    for index, token in enumerate(tokens):
        spoken = seed.feed(token)
        if spoken:
            return FirstSegment(arrival(index, ttft, rate), spoken), seed.first_cut or 0
    end = arrival(len(tokens) - 1, ttft, rate)
    return FirstSegment(end, seed.flush() or ""), len("".join(tokens))


def ours_first(
    tokens: list[str], ttft: float, rate: float, options: splitter.SplitterOptions
) -> FirstSegment:
    """First segment of our splitter."""
    ours = splitter.SentenceSplitter(**options)
    for index, token in enumerate(tokens):
        segments = ours.feed(token)
        if segments:
            return FirstSegment(arrival(index, ttft, rate), segments[0].text)
    segments = ours.flush()
    end = arrival(len(tokens) - 1, ttft, rate)
    return FirstSegment(end, segments[0].text if segments else "")


async def realtime_first(
    tokens: list[str], ttft: float, rate: float, options: splitter.SplitterOptions
) -> tuple[FirstSegment, FirstSegment]:
    """Replay with real sleeps; ours runs through the async ``split_stream``."""
    loop = asyncio.get_running_loop()
    start = loop.time()
    seed = SeedSplitter()
    seed_hit: list[FirstSegment] = []

    async def stream() -> AsyncIterator[str]:
        for index, token in enumerate(tokens):
            await asyncio.sleep(
                max(0.0, start + arrival(index, ttft, rate) - loop.time())
            )
            spoken = seed.feed(token)
            if spoken and not seed_hit:
                seed_hit.append(FirstSegment(loop.time() - start, spoken))
            yield token
        if not seed_hit:
            seed_hit.append(FirstSegment(loop.time() - start, seed.flush() or ""))

    ours: FirstSegment | None = None
    async for segment in splitter.split_stream(stream(), **options):
        if ours is None:
            ours = FirstSegment(loop.time() - start, segment.text)
    assert ours is not None
    return seed_hit[0], ours


def measure(args: argparse.Namespace) -> list[Result]:
    """Run both splitters on every reply."""
    ttft, rate = args.ttft_ms / 1000, args.tokens_per_s
    options: splitter.SplitterOptions = {
        "first_min_cjk": args.first_min_cjk,
        "first_min_latin": args.first_min_latin,
    }
    counters = {"zh": 0, "en": 0}
    results = []
    for lang, text in REPLIES:
        counters[lang] += 1
        tokens = tokenize(text)
        seed, cut = seed_first(tokens, ttft, rate)
        if args.realtime:
            seed, ours = asyncio.run(realtime_first(tokens, ttft, rate, options))
        else:
            ours = ours_first(tokens, ttft, rate, options)
        results.append(Result(f"{lang}-{counters[lang]:02d}", text, seed, ours, cut))
    return results


def later_note(result: Result, token_s: float) -> tuple[str, bool]:
    """Explain why ours is later on a reply; the flag is False if unexplained."""
    if result.seed_split_inside_number:
        return "ours later: the seed's early cut is inside a number", True
    waited = result.ours.seconds - result.seed.seconds
    if result.seed_cut_after_number_comma and waited <= token_s * 1.5:
        return "ours one token later: 'N,' may be a thousands separator", True
    return "OURS LATER", False


def report(results: list[Result], args: argparse.Namespace) -> int:
    """Print per reply and totals; return the number of unexplained later replies."""
    token_s = 1 / args.tokens_per_s
    slack = 0.015 if args.realtime else 1e-9
    ratios, unexplained = [], 0
    for result in results:
        seed_ms, ours_ms = result.seed.seconds * 1000, result.ours.seconds * 1000
        ratio = result.seed.seconds / result.ours.seconds
        ratios.append(ratio)
        notes = []
        if result.seed_split_inside_number:
            notes.append("seed splits inside a number")
        if result.ours.seconds > result.seed.seconds + slack:
            note, explained = later_note(result, token_s)
            notes.append(note)
            unexplained += not explained
        suffix = f"  [{'; '.join(notes)}]" if notes else ""
        print(
            f"{result.label}  seed {seed_ms:5.0f} ms  ours {ours_ms:5.0f} ms"
            f"  x{ratio:4.2f}{suffix}"
        )
        print(f"    seed | {result.seed.text!r}")
        print(f"    ours | {result.ours.text!r}")
    earlier = sum(r.ours.seconds < r.seed.seconds - slack for r in results)
    later = sum(r.ours.seconds > r.seed.seconds + slack for r in results)
    print()
    print(
        f"replies: {len(results)} ({sum(r.label.startswith('zh') for r in results)} zh)"
        f"  ours earlier: {earlier}  same: {len(results) - earlier - later}"
        f"  later: {later} (unexplained: {unexplained})"
    )
    print(
        "seed first segments split inside a number: "
        f"{sum(r.seed_split_inside_number for r in results)}"
    )
    for name, pick in (("seed", "seed"), ("ours", "ours")):
        times = [getattr(r, pick).seconds * 1000 for r in results]
        print(
            f"time to first segment, {name}: total {sum(times):.0f} ms,"
            f" median {statistics.median(times):.0f} ms, max {max(times):.0f} ms"
        )
    for lang in ("zh", "en"):
        subset = [
            ratio
            for r, ratio in zip(results, ratios, strict=True)
            if r.label.startswith(lang)
        ]
        print(
            f"{lang}: median ratio {statistics.median(subset):.2f},"
            f" mean ratio {statistics.fmean(subset):.2f}"
        )
    if unexplained:
        print(
            f"WARNING: ours later than the seed on {unexplained} replies (unexplained)"
        )
    print(f"first-segment speedup vs seed: {statistics.median(ratios):.2f}")
    return unexplained


def main() -> int:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ttft-ms", type=float, default=250.0)
    parser.add_argument("--tokens-per-s", type=float, default=30.0)
    parser.add_argument(
        "--first-min-cjk", type=int, default=splitter.DEFAULT_FIRST_MIN_CJK
    )
    parser.add_argument(
        "--first-min-latin", type=int, default=splitter.DEFAULT_FIRST_MIN_LATIN
    )
    parser.add_argument(
        "--realtime", action="store_true", help="replay with real sleeps (slow)"
    )
    args = parser.parse_args()
    return 1 if report(measure(args), args) else 0


if __name__ == "__main__":
    sys.exit(main())
