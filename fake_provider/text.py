"""Text helpers shared by the scripted replies, the demo and its speech."""

from collections.abc import Sequence
import re
from typing import Final, Literal

type Language = Literal["en", "zh"]

_CJK: Final = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_TOKEN: Final = re.compile(r"\s*(?:[A-Za-z0-9'’]+|\S)")


def detect_language(text: str) -> Language:
    """Return ``zh`` when the text has Chinese characters, else ``en``."""
    return "zh" if _CJK.search(text) else "en"


def tokenize(text: str) -> list[str]:
    """Split text into the pieces a model would stream: words, CJK characters, marks.

    Each piece keeps the whitespace before it, so joining them gives the text back
    (minus trailing whitespace).
    """
    return _TOKEN.findall(text)


def split_text(text: str, chunk: int) -> list[str]:
    """Split ``text`` into pieces of ``chunk`` characters."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    return [text[start : start + chunk] for start in range(0, len(text), chunk)]


def pieces_of(text: str | Sequence[str], chunk: int) -> list[str]:
    """Return ``text`` split every ``chunk`` characters, or the given pieces."""
    return split_text(text, chunk) if isinstance(text, str) else list(text)
