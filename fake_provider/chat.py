"""What a scripted chat reply is made of: the deltas, tool calls and usage.

A test builds `ChatReply` objects (``ChatReply.text``, ``ChatReply.tool_call``,
``ChatReply.error``...) and queues them with `FakeProvider.add_reply`; the demo
builds the same objects from its keyword rules. `fake_provider.wire` turns them
into OpenAI's JSON and SSE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
import json
from typing import Any, Literal, Self, TypedDict, Unpack

from .text import pieces_of, split_text

type FinishReason = Literal["stop", "tool_calls", "length"]
type JsonDict = dict[str, Any]


@dataclass(frozen=True, slots=True)
class TextDelta:
    """One ``delta.content`` piece."""

    text: str


@dataclass(frozen=True, slots=True)
class ReasoningDelta:
    """One ``delta.reasoning_content`` piece (DeepSeek / Qwen style)."""

    text: str


@dataclass(frozen=True, slots=True)
class ToolCallDelta:
    """One ``delta.tool_calls[0]`` fragment.

    The first fragment of a call carries ``call_id`` and ``name``; later ones
    carry only argument pieces, exactly like OpenAI streams them.
    """

    index: int
    arguments: str = ""
    call_id: str | None = None
    name: str | None = None


@dataclass(frozen=True, slots=True)
class ErrorEvent:
    """An in-stream ``data: {"error": ...}`` event; the stream ends after it."""

    message: str
    error_type: str = "server_error"
    code: str | None = None


type ChatEvent = TextDelta | ReasoningDelta | ToolCallDelta | ErrorEvent


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage reported for a reply."""

    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int = 0

    def as_json(self) -> JsonDict:
        """Return the OpenAI ``usage`` object."""
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.prompt_tokens + self.completion_tokens,
            "prompt_tokens_details": {"cached_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }


@dataclass(frozen=True, slots=True)
class ToolCall:
    """A complete tool call to script, streamed by `ToolCall.deltas`."""

    name: str
    arguments: Mapping[str, Any] | str = field(default_factory=dict)
    call_id: str | None = None

    @property
    def arguments_json(self) -> str:
        """Return the arguments as the JSON string the model would emit."""
        if isinstance(self.arguments, str):
            return self.arguments
        return json.dumps(self.arguments, ensure_ascii=False)

    def deltas(self, index: int, chunk: int | None = 8) -> list[ToolCallDelta]:
        """Return the streamed fragments of this call.

        Args:
            index: Position of the call among parallel calls.
            chunk: Characters per argument piece; ``None`` sends id, name and
                the whole arguments in a single fragment.
        """
        call_id = self.call_id or f"call_{index}"
        arguments = self.arguments_json
        if chunk is None:
            return [ToolCallDelta(index, arguments, call_id, self.name)]
        head = ToolCallDelta(index, "", call_id, self.name)
        return [head] + [
            ToolCallDelta(index, piece) for piece in split_text(arguments, chunk)
        ]


class ReplyOptions(TypedDict, total=False):
    """Keyword options shared by the `ChatReply` constructors."""

    finish_reason: FinishReason | None
    token_delay: float
    ttft: float
    usage: Usage | None
    hold_after: int | None
    disconnect_after: int | None
    model: str | None


@dataclass(frozen=True)
class ChatReply:
    """One scripted answer to one chat completion request.

    Attributes:
        events: The deltas, one SSE chunk each.
        finish_reason: ``None`` picks ``tool_calls`` when the reply has tool
            calls, else ``stop``.
        token_delay: Seconds slept before every event but the first.
        ttft: Seconds slept before the first event (time to first token).
        usage: Reported usage; ``None`` derives it from the request and events.
        hold_after: Hold the stream after this many events until
            `FakeProvider.release` (0 holds before the first event).
        disconnect_after: Close the connection after this many events, with
            no finish chunk and no ``[DONE]`` (0 closes right after headers).
        model: Model echoed in the response; ``None`` echoes the request's.
        error_status: Answer this HTTP status with an OpenAI error body
            instead of a reply.
        error_message: Message of that error.
        error_code: ``code`` of that error.
    """

    events: Sequence[ChatEvent] = ()
    _: KW_ONLY
    finish_reason: FinishReason | None = None
    token_delay: float = 0.0
    ttft: float = 0.0
    usage: Usage | None = None
    hold_after: int | None = None
    disconnect_after: int | None = None
    model: str | None = None
    error_status: int | None = None
    error_message: str = "Scripted error"
    error_code: str | None = None

    @classmethod
    def text(
        cls,
        text: str | Sequence[str],
        *,
        chunk: int = 4,
        reasoning: str | Sequence[str] | None = None,
        **options: Unpack[ReplyOptions],
    ) -> Self:
        """Build a text reply, optionally preceded by reasoning deltas.

        Args:
            text: The answer; a string is split every ``chunk`` characters, a
                sequence is used as the exact list of pieces.
            chunk: Characters per delta when ``text`` is a string.
            reasoning: Reasoning content streamed before the answer.
            **options: `ReplyOptions`.
        """
        events: list[ChatEvent] = []
        if reasoning is not None:
            events += [ReasoningDelta(piece) for piece in pieces_of(reasoning, chunk)]
        events += [TextDelta(piece) for piece in pieces_of(text, chunk)]
        return cls(events, **options)

    @classmethod
    def tool_call(
        cls,
        name: str,
        arguments: Mapping[str, Any] | str | None = None,
        *,
        call_id: str | None = None,
        chunk: int | None = 8,
        text: str | None = None,
        **options: Unpack[ReplyOptions],
    ) -> Self:
        """Build a reply that calls one tool.

        Args:
            name: Tool name.
            arguments: Arguments (mapping → JSON) or the raw JSON string.
            call_id: Tool call id; defaults to ``call_0``.
            chunk: Characters per argument fragment; ``None`` for one piece.
            text: Content streamed before the call.
            **options: `ReplyOptions`.
        """
        call = ToolCall(name, {} if arguments is None else arguments, call_id)
        return cls.tool_calls(call, chunk=chunk, text=text, **options)

    @classmethod
    def tool_calls(
        cls,
        *calls: ToolCall,
        chunk: int | None = 8,
        text: str | None = None,
        **options: Unpack[ReplyOptions],
    ) -> Self:
        """Build a reply with parallel tool calls, streamed one after another.

        Args:
            *calls: The calls; a call without id gets ``call_<index>``.
            chunk: Characters per argument fragment; ``None`` for one piece.
            text: Content streamed before the calls.
            **options: `ReplyOptions`.
        """
        events: list[ChatEvent] = []
        if text is not None:
            events += [TextDelta(piece) for piece in split_text(text, 4)]
        for index, call in enumerate(calls):
            events += call.deltas(index, chunk)
        return cls(events, **options)

    @classmethod
    def error(
        cls, status: int, message: str = "Scripted error", *, code: str | None = None
    ) -> Self:
        """Build a reply answered with HTTP ``status`` and an OpenAI error body."""
        return cls(error_status=status, error_message=message, error_code=code)

    @property
    def content(self) -> str:
        """Return the concatenated text deltas."""
        return "".join(e.text for e in self.events if isinstance(e, TextDelta))

    @property
    def reasoning(self) -> str:
        """Return the concatenated reasoning deltas."""
        return "".join(e.text for e in self.events if isinstance(e, ReasoningDelta))

    def resolved_finish_reason(self) -> FinishReason:
        """Return the finish reason, derived from the events when unset."""
        if self.finish_reason is not None:
            return self.finish_reason
        if any(isinstance(e, ToolCallDelta) for e in self.events):
            return "tool_calls"
        return "stop"
