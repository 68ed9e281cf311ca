"""Device-supplied text made safe to show: bounded and without control characters.

Anyone who can reach the OTA endpoint chooses a board name, a firmware version
and a language; a paired device chooses its tool names, MCP replies and error
texts. Such text reaches log lines, flow titles, entity and device names and
repair issues, where a newline would forge a log record and a bidirectional
override would disguise a name. :func:`printable` is the one function every such
place uses. Pure code, no Home Assistant.
"""

from typing import Final
import unicodedata

# The longest device-supplied text shown anywhere (a log line, a title).
MAX_SHOWN_CHARS: Final = 200
# Unicode categories escaped: controls, format characters (bidirectional
# overrides, zero-width joiners), line and paragraph separators, surrogates,
# private use and unassigned code points.
_ESCAPED_CATEGORIES: Final = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"})


def _escaped(char: str) -> str:
    if unicodedata.category(char) not in _ESCAPED_CATEGORIES:
        return char
    code = ord(char)
    if code <= 0xFF:
        return f"\\x{code:02x}"
    if code <= 0xFFFF:
        return f"\\u{code:04x}"
    return f"\\U{code:08x}"


def printable(value: object, limit: int = MAX_SHOWN_CHARS) -> str:
    r"""Return ``value`` as one line of at most ``limit`` visible characters.

    Control and format characters become ``\\xNN``/``\\uNNNN`` escapes (a
    backslash stays as it is: escapes only ever add backslashes, never a line);
    text past ``limit`` characters is cut and says how long it was. ``limit``
    counts the characters of the result before the length note.
    """
    text = value if isinstance(value, str) else str(value)
    shown: list[str] = []
    size = 0
    for char in text:
        piece = _escaped(char)
        if size + len(piece) > limit:
            return f"{''.join(shown)}... ({len(text)} characters)"
        shown.append(piece)
        size += len(piece)
    return "".join(shown)


def clean_field(value: str, limit: int) -> str:
    """Return a stored field (board, version, language): printable and bounded.

    Unlike :func:`printable`, no length note is added: the field is cut to
    ``limit`` characters, as what is stored is shown as it is.
    """
    return "".join(_escaped(char) for char in value)[:limit].strip()
