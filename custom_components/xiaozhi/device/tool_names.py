"""Which of a device's MCP tools a language model is offered, and under what name.

Device tool names have dots (``self.otto.action``); services accept function
names of ``[A-Za-z0-9_-]`` up to 64 characters (OpenAI, Qwen), and some reject
descriptions over 1024 characters. Home Assistant adds ``xiaozhi-device__`` (16
characters) to every name when our API is selected together with another one, so
a name here is at most 48 characters. Names are made of the MCP name, dots and
other characters becoming ``_`` (as the reference server does); a name that is
too long or that two tools would share is shortened and gets 8 hex digits of the
MCP name's SHA-1, the same on every connection. Tool names quoted in
descriptions are rewritten to the names offered, and a description's tail past
1024 characters goes into the API's prompt instead.

Never offered: tools the device marks for its user only (reboot, firmware
upgrade: the firmware lists them only when asked ``withUserTools``, but calls
them whenever named), and the tools that take the device off its Wi-Fi, which
Home Assistant cannot undo.
"""

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
import hashlib
import re
from typing import Final

from ..protocol.mcp import McpTool

MAX_NAME_CHARS: Final = 48
MAX_DESCRIPTION_CHARS: Final = 1024
HIDDEN_TOOLS: Final = frozenset({"self.system.reconfigure_wifi", "self.disp.network"})
_HASH_CHARS: Final = 8
_INVALID: Final = re.compile(r"[^A-Za-z0-9_-]")
# Where a description may be cut: after a sentence or a line.
_SENTENCE_END: Final = re.compile(r"(?<=[.!?。！？；;])\s*|\n+")


@dataclass(frozen=True, slots=True)
class ExposedTool:
    """A device tool as the language model sees it.

    Attributes:
        name: The function name the model calls.
        tool: The device's tool.
        description: The description, tool names rewritten, at most 1024 characters.
        overflow: What did not fit into ``description`` (empty when all did).
    """

    name: str
    tool: McpTool
    description: str
    overflow: str


def is_offered(tool: McpTool) -> bool:
    """Return whether a language model may see and call ``tool``."""
    return not tool.user_only and tool.name not in HIDDEN_TOOLS


def _sanitized(name: str) -> str:
    clean = _INVALID.sub("_", name)
    return clean if clean[:1].isalpha() else f"t_{clean}"


def _hashed(name: str, clean: str) -> str:
    digest = hashlib.sha1(name.encode(), usedforsecurity=False).hexdigest()
    return f"{clean[: MAX_NAME_CHARS - _HASH_CHARS - 1]}_{digest[:_HASH_CHARS]}"


def exposed_names(names: Iterable[str]) -> dict[str, str]:
    """Return the function name of each MCP tool name: valid, unique, <= 48 characters."""
    clean = {name: _sanitized(name) for name in names}
    shared = Counter(clean.values())
    hashed = {
        name
        for name, value in clean.items()
        if len(value) > MAX_NAME_CHARS or shared[value] > 1
    }
    while True:
        exposed = {
            name: _hashed(name, value) if name in hashed else value
            for name, value in clean.items()
        }
        taken = Counter(exposed.values())
        # A shortened name may meet another tool's plain one: hash that one too.
        clashing = {name for name, value in exposed.items() if taken[value] > 1}
        if not clashing - hashed:
            return exposed
        hashed |= clashing


def _rewrite_names(text: str, names: dict[str, str]) -> str:
    """Rewrite the MCP names of ``names`` (never empty) in ``text``."""
    # Longest first, so that self.otto.action is not read as self.otto + .action;
    # a name counts only where it is not part of a longer dotted name.
    alternatives = "|".join(
        re.escape(name) for name in sorted(names, key=len, reverse=True)
    )
    pattern = re.compile(rf"(?<![\w.-])({alternatives})(?![\w-]|\.\w)", flags=re.ASCII)
    return pattern.sub(lambda match: names[match.group(1)], text)


def split_description(text: str) -> tuple[str, str]:
    """Return the first 1024 characters of ``text`` (cut after a sentence) and the rest."""
    if len(text) <= MAX_DESCRIPTION_CHARS:
        return text, ""
    cut = MAX_DESCRIPTION_CHARS
    ends = [
        match.end()
        for match in _SENTENCE_END.finditer(text, 0, MAX_DESCRIPTION_CHARS)
        if match.end() <= MAX_DESCRIPTION_CHARS
    ]
    if ends and ends[-1] > MAX_DESCRIPTION_CHARS // 2:
        cut = ends[-1]
    return text[:cut].rstrip(), text[cut:].strip()


def exposed_tools(tools: Iterable[McpTool]) -> list[ExposedTool]:
    """Return the tools a language model is offered, in the device's order."""
    offered = [tool for tool in tools if is_offered(tool)]
    names = exposed_names(tool.name for tool in offered)
    result = []
    for tool in offered:
        description, overflow = split_description(
            _rewrite_names(tool.description, names)
        )
        result.append(ExposedTool(names[tool.name], tool, description, overflow))
    return result
