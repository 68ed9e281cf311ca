"""What the simulator prints: timestamped protocol lines and the activation code.

Every line of a run starts with the seconds since the run started, so the
messages of one exchange can be read as a timeline; JSON messages are printed
compact on one line, ``←`` from Home Assistant, ``→`` to it.
"""

from collections.abc import Callable, Iterable, Mapping
import json
import time
from typing import Any, Final, TextIO

# 5 x 5 block digits, one string per row; "#" is drawn as a full block.
_BIG_DIGITS: Final[Mapping[str, tuple[str, ...]]] = {
    "0": (" ### ", "#   #", "#   #", "#   #", " ### "),
    "1": ("  #  ", " ##  ", "  #  ", "  #  ", " ### "),
    "2": (" ### ", "#   #", "  ## ", " #   ", "#####"),
    "3": ("#### ", "    #", " ### ", "    #", "#### "),
    "4": ("#   #", "#   #", "#####", "    #", "    #"),
    "5": ("#####", "#    ", "#### ", "    #", "#### "),
    "6": (" ### ", "#    ", "#### ", "#   #", " ### "),
    "7": ("#####", "    #", "   # ", "  #  ", "  #  "),
    "8": (" ### ", "#   #", " ### ", "#   #", " ### "),
    "9": (" ### ", "#   #", " ####", "    #", " ### "),
}
_BLANK_GLYPH: Final = ("     ",) * 5


def big_text(code: str, *, ink: str = "█") -> list[str]:
    """Return ``code`` drawn in 5-row block digits (other characters left blank)."""
    glyphs = [_BIG_DIGITS.get(char, _BLANK_GLYPH) for char in code]
    return [
        "  ".join(glyph[row] for glyph in glyphs).replace("#", ink).rstrip()
        for row in range(5)
    ]


def compact(message: Mapping[str, Any]) -> str:
    """Return a message as one line of compact JSON (non-ASCII kept readable)."""
    return json.dumps(message, ensure_ascii=False, separators=(",", ":"))


def activation_banner(code: str, message: str, mac: str) -> list[str]:
    """Return the lines that show the activation code to the person pairing."""
    lines = [
        "",
        f"  Activation code: {' '.join(code)}",
        "",
        *(f"    {row}" for row in big_text(code)),
        "",
    ]
    if message:
        lines.append(f"  {message}")
    lines += [
        "  In Home Assistant: Settings → Devices & services → Discovered:",
        f'  "Xiaozhi device {mac}" → Add → type the code.',
        "",
    ]
    return lines


class Console:
    """Writes the run's lines to a text stream, stamped with the time since start."""

    def __init__(
        self, out: TextIO, *, clock: Callable[[], float] = time.monotonic
    ) -> None:
        """Start the run's clock now."""
        self._out = out
        self._clock = clock
        self.started = clock()

    def elapsed(self) -> float:
        """Return the seconds since the run started."""
        return self._clock() - self.started

    def line(self, text: str) -> None:
        """Write one stamped line."""
        self._out.write(f"[{self.elapsed():7.3f}] {text}\n")
        self._out.flush()

    def lines(self, texts: Iterable[str]) -> None:
        """Write lines as they are (no stamp), e.g. a banner."""
        self._out.write("".join(f"{text}\n" for text in texts))
        self._out.flush()

    def received(self, message: Mapping[str, Any]) -> None:
        """Write a JSON message from Home Assistant."""
        self.line(f"← {compact(message)}")

    def sent(self, message: Mapping[str, Any]) -> None:
        """Write a JSON message to Home Assistant."""
        self.line(f"→ {compact(message)}")
