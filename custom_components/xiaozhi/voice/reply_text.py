"""The assistant's answer as text deltas, taken from the Assist pipeline's events.

While the conversation agent writes, the pipeline reports each of its chat log
deltas in an ``intent-progress`` event, whatever the TTS engine; its final answer
comes with ``intent-end``. `ReplyText` turns both into the text stream that
`speaking.speak_reply` speaks from the first clause on:

* assistant ``content`` is passed on as it arrives;
* a tool call, or a new message (assistant or tool result), is a pause
  (``None``): the text written before it is spoken at once;
* the final answer is spoken only when it was not streamed (a local intent, a
  sentence trigger, an agent that does not stream), or when it differs from the
  last streamed message;
* a failure ends the text with `ReplyFailedError` (the speaker then apologises),
  unless the agent already said something, typically its own error message.

Pure module: no Home Assistant imports, no I/O.
"""

import asyncio
from collections.abc import AsyncGenerator, Mapping
from typing import Any, Final

ROLE_ASSISTANT: Final = "assistant"


class ReplyFailedError(Exception):
    """The pipeline failed before the assistant said anything."""


class _End:
    """Marks the end of the text in the queue."""


_END: Final = _End()

type _Item = str | _End | ReplyFailedError | None


class ReplyText:
    """One answer's text, fed with pipeline event data, read as deltas.

    Feeding is synchronous (pipeline events arrive in callbacks); `deltas` is
    read by one consumer. Everything fed after the text ended is ignored.
    """

    def __init__(self) -> None:
        """Start empty, in no message."""
        self._items: asyncio.Queue[_Item] = asyncio.Queue()
        self._parts: list[str] = []
        self._role: str | None = None
        self._message = ""
        self._ended = False

    @property
    def text(self) -> str:
        """Return all the assistant text received so far."""
        return "".join(self._parts)

    @property
    def ended(self) -> bool:
        """Return whether the text is complete (finished, failed or ended)."""
        return self._ended

    def add_delta(self, delta: Mapping[str, Any]) -> None:
        """Take one ``chat_log_delta`` of an ``intent-progress`` event."""
        if self._ended:
            return
        if role := delta.get("role"):
            self._role = role
            self._message = ""
            self._pause()
        if delta.get("tool_calls"):
            self._pause()
        content = delta.get("content")
        if self._role == ROLE_ASSISTANT and isinstance(content, str) and content:
            self._message += content
            self._say(content)

    def finish(self, speech: str) -> None:
        """End with the agent's final answer (``intent-end``).

        The answer is added only when it is not what was just streamed.
        """
        if self._ended:
            return
        if speech.strip() and speech.strip() != self._message.strip():
            self._pause()
            self._say(speech)
        self._end(_END)

    def fail(self, reason: str) -> None:
        """End because the pipeline failed.

        Without any text yet, reading the deltas raises `ReplyFailedError`;
        otherwise the text just ends (the agent said what went wrong, or the
        partial answer is all there is).
        """
        self._end(_END if self._parts else ReplyFailedError(reason))

    def end(self) -> None:
        """End the text where it is (the run ended without an answer)."""
        self._end(_END)

    async def deltas(self) -> AsyncGenerator[str | None]:
        """Yield the text as it comes; ``None`` marks a pause of the agent.

        Raises:
            ReplyFailedError: The pipeline failed before any text.
        """
        while True:
            item = await self._items.get()
            if isinstance(item, _End):
                return
            if isinstance(item, ReplyFailedError):
                raise item
            yield item

    def _say(self, text: str) -> None:
        self._parts.append(text)
        self._items.put_nowait(text)

    def _pause(self) -> None:
        if self._parts:
            self._items.put_nowait(None)

    def _end(self, last: _End | ReplyFailedError) -> None:
        if self._ended:
            return
        self._ended = True
        self._items.put_nowait(last)
