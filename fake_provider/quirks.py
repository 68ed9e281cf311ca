"""Switches that make the fake answer like a roughly compatible server.

Many servers that call themselves OpenAI-compatible answer in shapes OpenAI does
not, and clients written against OpenAI alone break on them. Each switch below
reproduces one such shape, so that a test can prove the integration copes. All
are off by default (the fake then answers like OpenAI); a test sets them on its
provider: ``fake_provider.chat_quirks.omit_usage = True``,
``fake_provider.transcript_answer = TranscriptAnswer.JSON``, and for speech the
fields of `fake_provider.audio.SpeechSettings` (``content_type``,
``content_length``, ``chunk_sizes``, ``wav_sizes``, ``split_wav_header``).

Where a switch names a server, that server was seen doing so in its own issue
tracker at some version; the shape matters, not the name: others do the same.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

from .chat import ChatEvent, ToolCallDelta


class TranscriptAnswer(StrEnum):
    """How ``/v1/audio/transcriptions`` answers, whatever the request asked for.

    The SDK picks its parser from what it asked (``stream=True`` reads SSE), not
    from what came back: a client must look at the answer's Content-Type.
    """

    AS_ASKED = "as_asked"
    """OpenAI: SSE for ``stream=true``, else ``json`` or ``text`` as asked."""

    JSON = "json"
    """``{"text": ...}`` as ``application/json`` even for ``stream=true`` or
    ``response_format=text``: servers that predate OpenAI's streamed
    transcriptions (2025) and read neither field."""

    TEXT = "text"
    """The bare transcript as ``text/plain`` even for ``stream=true`` or
    ``json``."""

    VERBOSE_JSON = "verbose_json"
    """Whisper's ``verbose_json`` (``task``, ``language``, ``duration``,
    ``segments`` besides ``text``) whatever was asked: LocalAI answers its
    segments-bearing JSON and ignores ``response_format``."""

    SSE_DONE_ONLY = "sse_done_only"
    """For ``stream=true``: one ``transcript.text.done`` event, no deltas
    (servers that transcribe the whole upload, then answer in OpenAI's event
    format)."""

    SSE_DELTAS_ONLY = "sse_deltas_only"
    """For ``stream=true``: ``transcript.text.delta`` events and no ``done``."""

    SSE_EMPTY_DONE = "sse_empty_done"
    """For ``stream=true``: deltas, then a ``done`` whose ``text`` is empty
    (llama.cpp's server when it added OpenAI's transcription API)."""

    @property
    def streamed(self) -> bool:
        """Return whether the answer is SSE (these apply to streamed requests)."""
        return self.name.startswith("SSE_")


@dataclass(slots=True)
class ChatQuirks:
    """How ``/v1/chat/completions`` departs from OpenAI's stream.

    Attributes:
        ignore_stream: Answer one ``chat.completion`` JSON to ``stream=true``
            (servers and proxies that cannot stream).
        omit_usage: No ``usage`` anywhere, also when
            ``stream_options.include_usage`` asked for it (servers that do not
            know ``stream_options``).
        omit_finish_reason: No ``finish_reason`` key in any chunk and no finish
            chunk: the stream just ends (models behind the one-api gateway).
        empty_choices_chunks: Chunks whose ``choices`` is ``[]``, one before the
            first delta and one after the last (Azure OpenAI's content filter
            annotations, ``prompt_filter_results``).
        empty_content_deltas: After each event a chunk whose delta is
            ``{"content": null}`` or ``{"content": ""}``, by turns.
        omit_done: No ``data: [DONE]``: the body ends after the last chunk
            (gpustack's llama-box before a fix).
        role_in_every_chunk: ``"role": "assistant"`` in every delta, not only the
            first (some model gateways).
        whole_tool_calls: Every tool call in one fragment with its id, name and
            complete arguments (Ollama streams tool calls so).
    """

    ignore_stream: bool = False
    omit_usage: bool = False
    omit_finish_reason: bool = False
    empty_choices_chunks: bool = False
    empty_content_deltas: bool = False
    omit_done: bool = False
    role_in_every_chunk: bool = False
    whole_tool_calls: bool = False


def merge_tool_call_fragments(events: Sequence[ChatEvent]) -> list[ChatEvent]:
    """Return ``events`` with each tool call's fragments joined into one."""
    merged: list[ChatEvent] = []
    for event in events:
        previous = merged[-1] if merged else None
        if (
            isinstance(event, ToolCallDelta)
            and event.call_id is None
            and isinstance(previous, ToolCallDelta)
            and previous.index == event.index
        ):
            merged[-1] = ToolCallDelta(
                previous.index,
                previous.arguments + event.arguments,
                previous.call_id,
                previous.name,
            )
        else:
            merged.append(event)
    return merged
