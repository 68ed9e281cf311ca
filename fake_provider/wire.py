"""OpenAI's wire format: error bodies, SSE events, chunks and completions.

The only place that knows what the JSON of OpenAI's chat API looks like; the
server writes what these functions return, in scripted and in demo mode alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
import json
from typing import Any, Final

from aiohttp import web

from .chat import (
    ChatEvent,
    ChatReply,
    JsonDict,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
    Usage,
)
from .quirks import ChatQuirks
from .text import detect_language

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "invalid_request_error",
    404: "invalid_request_error",
    429: "requests",
}


def error_body(
    status: int,
    message: str,
    *,
    code: str | None = None,
    param: str | None = None,
) -> JsonDict:
    """Return an OpenAI-style error body for an HTTP ``status``."""
    error_type = _ERROR_TYPES.get(status, "server_error")
    return {
        "error": {"message": message, "type": error_type, "param": param, "code": code}
    }


def error_response(
    status: int, message: str, *, code: str | None = None, param: str | None = None
) -> web.Response:
    """Return an aiohttp JSON response carrying an OpenAI error body."""
    body = error_body(status, message, code=code, param=param)
    return web.json_response(body, status=status)


def tool_call_delta_json(delta: ToolCallDelta) -> JsonDict:
    """Return one ``delta.tool_calls`` element."""
    function: JsonDict = {"arguments": delta.arguments}
    if delta.call_id is None:
        return {"index": delta.index, "function": function}
    return {
        "index": delta.index,
        "id": delta.call_id,
        "type": "function",
        "function": {"name": delta.name, **function},
    }


def event_delta(event: TextDelta | ReasoningDelta | ToolCallDelta) -> JsonDict:
    """Return the ``delta`` object of one streamed event."""
    if isinstance(event, TextDelta):
        return {"content": event.text}
    if isinstance(event, ReasoningDelta):
        return {"reasoning_content": event.text}
    return {"tool_calls": [tool_call_delta_json(event)]}


def assemble_tool_calls(events: Sequence[ChatEvent]) -> list[JsonDict]:
    """Merge streamed tool call fragments into complete message tool calls."""
    calls: dict[int, JsonDict] = {}
    for event in events:
        if not isinstance(event, ToolCallDelta):
            continue
        if event.call_id is not None:
            calls[event.index] = {
                "id": event.call_id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
        calls[event.index]["function"]["arguments"] += event.arguments
    return [calls[index] for index in sorted(calls)]


def default_usage(request_body: Mapping[str, Any], reply: ChatReply) -> Usage:
    """Derive a deterministic usage from the request size and the events."""
    messages = json.dumps(request_body.get("messages", []), ensure_ascii=False)
    reasoning = sum(isinstance(e, ReasoningDelta) for e in reply.events)
    return Usage(len(messages) // 4 + 1, len(reply.events), reasoning)


@dataclass(frozen=True, slots=True)
class ChunkFactory:
    """Builds the ``chat.completion.chunk`` objects of one stream.

    Like OpenAI unless `quirks` say otherwise (see `fake_provider.quirks`).
    """

    completion_id: str
    created: int
    model: str
    include_usage: bool
    quirks: ChatQuirks = field(default_factory=ChatQuirks)

    @property
    def sends_usage(self) -> bool:
        """Return whether the stream carries usage (asked for, not omitted)."""
        return self.include_usage and not self.quirks.omit_usage

    def chunk(self, delta: JsonDict, finish_reason: str | None = None) -> JsonDict:
        """Return a chunk with one choice."""
        if self.quirks.role_in_every_chunk:
            delta = {"role": "assistant", **delta}
        choice: JsonDict = {"index": 0, "delta": delta, "logprobs": None}
        if not self.quirks.omit_finish_reason:
            choice["finish_reason"] = finish_reason
        return self._wrap([choice], None)

    def opening_chunks(self, first_delta: JsonDict) -> list[JsonDict]:
        """Return the chunks that open the message (role and first delta)."""
        return [*self._empty_choices(), self.chunk(first_delta)]

    def event_chunks(self, delta: JsonDict, position: int) -> list[JsonDict]:
        """Return the chunks that carry one event's delta."""
        chunks = [self.chunk(delta)]
        if self.quirks.empty_content_deltas:
            chunks.append(self.chunk({"content": "" if position % 2 else None}))
        return chunks

    def closing_chunks(self, finish_reason: str, usage: Usage) -> list[JsonDict | str]:
        """Return what ends the stream: finish chunk, usage chunk, ``[DONE]``."""
        chunks: list[JsonDict | str] = [*self._empty_choices()]
        if not self.quirks.omit_finish_reason:
            chunks.append(self.chunk({}, finish_reason))
        if self.sends_usage:
            chunks.append(self._wrap([], usage.as_json()))
        if not self.quirks.omit_done:
            chunks.append("[DONE]")
        return chunks

    def _empty_choices(self) -> list[JsonDict]:
        if not self.quirks.empty_choices_chunks:
            return []
        # What Azure OpenAI's content filter annotations look like.
        return [self._wrap([], None) | {"prompt_filter_results": []}]

    def _wrap(self, choices: list[JsonDict], usage: JsonDict | None) -> JsonDict:
        chunk: JsonDict = {
            "id": self.completion_id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "service_tier": "default",
            "system_fingerprint": "fp_fake",
            "choices": choices,
        }
        # Like OpenAI: the usage key only exists when include_usage was asked.
        if self.sends_usage:
            chunk["usage"] = usage
        return chunk


def role_delta(first_event: ChatEvent | None) -> tuple[JsonDict, bool]:
    """Return the first delta and whether it already carries ``first_event``.

    OpenAI merges the role into the first tool call fragment, but sends a
    separate ``{"role": "assistant", "content": ""}`` chunk before text.
    """
    if isinstance(first_event, ToolCallDelta):
        delta = {"role": "assistant", "content": None, **event_delta(first_event)}
        return {**delta, "refusal": None}, True
    return {"role": "assistant", "content": "", "refusal": None}, False


def completion_json(
    reply: ChatReply, completion_id: str, created: int, model: str, usage: Usage
) -> JsonDict:
    """Return the non-streamed ``chat.completion`` equivalent of ``reply``."""
    message: JsonDict = {
        "role": "assistant",
        "content": reply.content or None,
        "refusal": None,
    }
    if reply.reasoning:
        message["reasoning_content"] = reply.reasoning
    if tool_calls := assemble_tool_calls(reply.events):
        message["tool_calls"] = tool_calls
    choice = {
        "index": 0,
        "message": message,
        "logprobs": None,
        "finish_reason": reply.resolved_finish_reason(),
    }
    return {
        "id": completion_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "service_tier": "default",
        "system_fingerprint": "fp_fake",
        "choices": [choice],
        "usage": usage.as_json(),
    }


def sse(payload: JsonDict | str) -> bytes:
    """Encode one SSE ``data:`` event (compact JSON, like OpenAI)."""
    if isinstance(payload, str):
        return f"data: {payload}\n\n".encode()
    data = json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def open_event_stream(request: web.Request) -> web.StreamResponse:
    """Send the headers of a chunked ``text/event-stream`` answer and return it."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream; charset=utf-8"}
    )
    response.enable_chunked_encoding()
    await response.prepare(request)
    return response


def model_json(model: str) -> JsonDict:
    """Return one entry of ``GET /v1/models``."""
    return {"id": model, "object": "model", "created": 1700000000, "owned_by": "fake"}


def sse_events(payloads: Sequence[JsonDict | str]) -> bytes:
    """Encode several SSE events, to be written at once."""
    return b"".join(sse(payload) for payload in payloads)


# Whisper's verbose_json names languages, not codes.
_LANGUAGE_NAMES: Final[Mapping[str, str]] = {"zh": "chinese", "en": "english"}


def verbose_transcription_json(
    text: str, duration: float, language: str | None
) -> JsonDict:
    """Return a ``verbose_json`` transcription: one segment spanning the audio."""
    code = (language or detect_language(text)).split("-")[0].lower()
    segment = {
        "id": 0,
        "seek": 0,
        "start": 0.0,
        "end": duration,
        "text": text,
        "tokens": [],
        "temperature": 0.0,
        "avg_logprob": -0.2,
        "compression_ratio": 1.0,
        "no_speech_prob": 0.01,
    }
    return {
        "task": "transcribe",
        "language": _LANGUAGE_NAMES.get(code, code),
        "duration": duration,
        "text": text,
        "segments": [segment],
    }


def transcript_done_event(text: str, output_tokens: int) -> JsonDict:
    """Return the ``transcript.text.done`` event that ends a streamed transcript."""
    usage = {"type": "tokens", "input_tokens": 1, "output_tokens": output_tokens}
    return {
        "type": "transcript.text.done",
        "text": text,
        "usage": usage | {"total_tokens": 1 + output_tokens},
    }
