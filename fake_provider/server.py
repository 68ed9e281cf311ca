r"""A real local OpenAI-compatible HTTP server for tests.

`FakeProvider` runs an aiohttp server on 127.0.0.1 (random port) that the real
`openai` SDK talks to over HTTP, nothing patched. It serves:

* ``GET /v1/models`` and ``GET /v1/models/{id}``
* ``POST /v1/chat/completions``: scripted `ChatReply` objects, streamed as SSE
  exactly like OpenAI (``data: {json}\n\n`` ... ``data: [DONE]\n\n``) or
  assembled into one ``chat.completion`` when ``stream`` is false.
* ``POST /v1/audio/transcriptions``: validates that the upload is a complete
  PCM WAV and answers a scripted transcript (``json``, ``text`` or, with
  ``stream=true``, ``transcript.text.delta`` / ``transcript.text.done`` SSE).
* ``POST /v1/audio/speech``: streams a real 24 kHz mono s16le sine tone whose
  length is proportional to the input text, as ``pcm`` or ``wav``. Other
  formats (mp3, opus, aac, flac) are answered with 400, so a caller that
  forgets to ask for pcm/wav fails loudly instead of decoding garbage.

Every request is recorded; failures can be injected per path; streams can be
held after N events and released by the test; a test can await the moment the
client closed a stream. The ``fake_provider`` pytest fixture
(tests/helpers/provider.py) starts one per test.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
import contextlib
from dataclasses import KW_ONLY, dataclass, field
import io
import itertools
import json
import math
import struct
import time
from typing import TYPE_CHECKING, Any, Literal, Self, TypedDict, Unpack
import wave

from aiohttp import BodyPartReader, web
from multidict import CIMultiDict

if TYPE_CHECKING:
    from types import TracebackType

    import openai

API_PREFIX = "/v1"
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
TRANSCRIPTIONS_PATH = "/v1/audio/transcriptions"
SPEECH_PATH = "/v1/audio/speech"

DEFAULT_API_KEY = "sk-test"
DEFAULT_MODELS = (
    "gpt-4o-mini",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-tts",
    "whisper-1",
    "tts-1",
)
DEFAULT_REPLY_TEXT = "OK."
DEFAULT_TRANSCRIPT = "你好"
SPEECH_SAMPLE_RATE = 24000
SPEECH_FORMATS = ("pcm", "wav")
TRANSCRIPTION_FORMATS = ("json", "text")
SPEECH_TONE_HZ = 400  # divides 24000, so one period is a whole number of samples
SPEECH_AMPLITUDE = 0.3
STREAMING_WAV_SIZE = 0xFFFFFFFF  # OpenAI's streamed WAV header: size unknown
MAX_SPEECH_INPUT = 4096

type FinishReason = Literal["stop", "tool_calls", "length"]
type JsonDict = dict[str, Any]
type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------
# Scripted chat events and replies
# --------------------------------------------------------------------------


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


def split_text(text: str, chunk: int) -> list[str]:
    """Split ``text`` into pieces of ``chunk`` characters."""
    if chunk < 1:
        raise ValueError("chunk must be >= 1")
    return [text[start : start + chunk] for start in range(0, len(text), chunk)]


def pieces_of(text: str | Sequence[str], chunk: int) -> list[str]:
    """Return ``text`` split every ``chunk`` characters, or the given pieces."""
    return split_text(text, chunk) if isinstance(text, str) else list(text)


# --------------------------------------------------------------------------
# OpenAI JSON shapes
# --------------------------------------------------------------------------

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
    """Builds the ``chat.completion.chunk`` objects of one stream."""

    completion_id: str
    created: int
    model: str
    include_usage: bool

    def chunk(self, delta: JsonDict, finish_reason: str | None = None) -> JsonDict:
        """Return a chunk with one choice."""
        choice = {
            "index": 0,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish_reason,
        }
        return self._wrap([choice], None)

    def usage_chunk(self, usage: Usage) -> JsonDict:
        """Return the final usage-only chunk (``choices`` empty)."""
        return self._wrap([], usage.as_json())

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
        if self.include_usage:
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


# --------------------------------------------------------------------------
# Audio helpers
# --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class WavInfo:
    """Format of an uploaded WAV."""

    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def duration(self) -> float:
        """Return the duration in seconds."""
        return self.frames / self.sample_rate


class InvalidWavError(ValueError):
    """The upload is not a complete PCM WAV."""


def parse_wav(data: bytes) -> tuple[WavInfo, bytes]:
    """Validate a WAV file and return its format and PCM frames.

    Raises:
        InvalidWavError: Not RIFF/WAVE, no fmt/data chunk, not PCM, or the data
            chunk is shorter than its header says.
    """
    if data[:4] != b"RIFF" or data[8:12] != b"WAVE":
        raise InvalidWavError("not a RIFF/WAVE file")
    try:
        with wave.open(io.BytesIO(data), "rb") as reader:
            info = WavInfo(
                reader.getframerate(),
                reader.getnchannels(),
                reader.getsampwidth(),
                reader.getnframes(),
            )
            frames = reader.readframes(info.frames)
    except (wave.Error, EOFError) as err:
        raise InvalidWavError(str(err)) from err
    if len(frames) != info.frames * info.channels * info.sample_width:
        raise InvalidWavError("data chunk is truncated")
    return info, frames


def streaming_wav_header(sample_rate: int, channels: int = 1, width: int = 2) -> bytes:
    """Return a 44-byte PCM WAV header with unknown (0xFFFFFFFF) sizes."""
    byte_rate = sample_rate * channels * width
    return (
        struct.pack("<4sI4s", b"RIFF", STREAMING_WAV_SIZE, b"WAVE")
        + struct.pack(
            "<4sIHHIIHH",
            b"fmt ",
            16,
            1,
            channels,
            sample_rate,
            byte_rate,
            channels * width,
            width * 8,
        )
        + struct.pack("<4sI", b"data", STREAMING_WAV_SIZE)
    )


def tone_pcm(samples: int, sample_rate: int = SPEECH_SAMPLE_RATE) -> bytes:
    """Return ``samples`` of a mono s16le sine tone (``SPEECH_TONE_HZ``)."""
    period = sample_rate // SPEECH_TONE_HZ
    peak = SPEECH_AMPLITUDE * 32767
    one_period = struct.pack(
        f"<{period}h",
        *(round(peak * math.sin(2 * math.pi * n / period)) for n in range(period)),
    )
    repeats, rest = divmod(samples, period)
    return one_period * repeats + one_period[: rest * 2]


# --------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------


@dataclass(slots=True)
class RecordedFile:
    """An uploaded multipart file."""

    filename: str | None
    content_type: str
    data: bytes


@dataclass(slots=True)
class RecordedRequest:
    """One HTTP request the provider received."""

    method: str
    path: str
    headers: CIMultiDict[str]
    json: Any = None
    form: dict[str, str] = field(default_factory=dict)
    files: dict[str, RecordedFile] = field(default_factory=dict)


@dataclass(slots=True)
class StreamRecord:
    """Progress of one streamed response (chat SSE or speech audio).

    Attributes:
        path: Request path.
        request: The recorded request.
        events_sent: Chat events or speech chunks written so far.
        held: True while waiting for `FakeProvider.release`.
        completed: The full body was written.
        client_closed: The client went away before the body was complete.
        server_aborted: The provider cut the connection (``disconnect_after``).
    """

    path: str
    request: RecordedRequest
    events_sent: int = 0
    held: bool = False
    completed: bool = False
    client_closed: bool = False
    server_aborted: bool = False


@dataclass(slots=True)
class TranscriptionRequest:
    """Fields of one transcription request and its validated WAV."""

    model: str
    language: str | None
    prompt: str | None
    response_format: str
    stream: bool
    wav: WavInfo
    pcm: bytes


@dataclass(slots=True)
class SpeechRequest:
    """Fields of one speech request."""

    model: str
    input: str
    voice: str | dict[str, Any]
    response_format: str
    speed: float
    instructions: str | None
    stream_format: str | None


@dataclass(slots=True)
class SpeechSettings:
    """How ``/v1/audio/speech`` paces and sizes its audio.

    Attributes:
        first_byte_delay: Seconds between the headers and the first audio chunk.
        chunk_size: Bytes per body chunk (PCM bytes; the WAV header rides along
            with the first chunk).
        bytes_per_second: Pace chunks at this PCM byte rate; ``None`` = no pacing.
        seconds_per_char: Audio seconds per character of input (at speed 1).
        min_seconds: Lower bound of the audio length (at speed 1).
        hold_after_chunks: Hold the body after this many chunks until
            `FakeProvider.release`.
    """

    first_byte_delay: float = 0.0
    chunk_size: int = 4800
    bytes_per_second: float | None = None
    seconds_per_char: float = 0.1
    min_seconds: float = 0.2
    hold_after_chunks: int | None = None

    def pcm_bytes(self, text: str, speed: float = 1.0) -> int:
        """Return the PCM byte length answered for ``text`` at ``speed``."""
        seconds = max(len(text) * self.seconds_per_char, self.min_seconds) / speed
        return round(seconds * SPEECH_SAMPLE_RATE) * 2


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str
    code: str | None


# --------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------


class FakeProvider:
    """A local OpenAI-compatible server; see the module docstring.

    Attributes:
        api_key: The only Bearer key accepted; others get 401.
        models: Model ids served by ``GET /v1/models``.
        requests: Every request received, in order.
        default_reply: Chat reply used when the scripted FIFO is empty.
        default_transcript: Transcript used when the scripted FIFO is empty.
        transcript_chunk: Characters per ``transcript.text.delta`` event.
        transcript_delay: Seconds before each streamed transcript delta.
        speech: `SpeechSettings` for ``/v1/audio/speech``.
        streams: Every streamed response, in order.
        transcriptions: Every valid transcription request.
        speech_requests: Every valid speech request.
    """

    def __init__(
        self, *, api_key: str = DEFAULT_API_KEY, models: Sequence[str] = DEFAULT_MODELS
    ) -> None:
        """Create a stopped provider."""
        self.api_key = api_key
        self.models = list(models)
        self.requests: list[RecordedRequest] = []
        self.default_reply = ChatReply.text(DEFAULT_REPLY_TEXT)
        self.default_transcript = DEFAULT_TRANSCRIPT
        self.transcript_chunk = 1
        self.transcript_delay = 0.0
        self.speech = SpeechSettings()
        self.streams: list[StreamRecord] = []
        self.transcriptions: list[TranscriptionRequest] = []
        self.speech_requests: list[SpeechRequest] = []
        self._replies: deque[ChatReply] = deque()
        self._transcripts: deque[str] = deque()
        self._failures: dict[str, deque[_Failure]] = {}
        self._permits = asyncio.Semaphore(0)
        self._held: asyncio.Queue[StreamRecord] = asyncio.Queue()
        self._closed: asyncio.Queue[StreamRecord] = asyncio.Queue()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = False

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind 127.0.0.1 on a random port and serve."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get(MODELS_PATH, self._handle_models)
        app.router.add_get(MODELS_PATH + "/{model}", self._handle_model)
        app.router.add_post(CHAT_PATH, self._handle_chat)
        app.router.add_post(TRANSCRIPTIONS_PATH, self._handle_transcription)
        app.router.add_post(SPEECH_PATH, self._handle_speech)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # handler_cancellation: a client disconnect cancels the handler, which
        # is how a held or sleeping stream learns that the client went away.
        runner = web.AppRunner(
            app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0
        )
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self._runner = runner
        self._port = runner.addresses[0][1]
        self._stopping = False

    async def stop(self) -> None:
        """Cancel in-flight handlers and shut the server down."""
        if self._runner is None:
            return
        self._stopping = True
        handlers = list(self._handlers)
        for task in handlers:
            task.cancel()
        if handlers:
            await asyncio.wait(handlers)
        await self._runner.cleanup()
        self._runner = None

    async def __aenter__(self) -> Self:
        """Start the server."""
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        """Stop the server."""
        await self.stop()

    @property
    def base_url(self) -> str:
        """Return ``http://127.0.0.1:<port>/v1``; only valid once started."""
        if self._port is None:
            raise RuntimeError("FakeProvider is not started")
        return f"http://127.0.0.1:{self._port}{API_PREFIX}"

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """Return an `openai.AsyncOpenAI` for this server (``max_retries=0``).

        The caller must close it (``await client.close()`` or ``async with``).
        """
        import openai  # only clients need the SDK; the server itself does not

        options: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self.api_key,
            "max_retries": 0,
        }
        return openai.AsyncOpenAI(**(options | kwargs))

    # -- scripting ---------------------------------------------------------

    def add_reply(self, *replies: ChatReply) -> None:
        """Queue chat replies, consumed one per chat request (FIFO)."""
        self._replies.extend(replies)

    def add_transcript(self, *texts: str) -> None:
        """Queue transcripts, consumed one per transcription request (FIFO)."""
        self._transcripts.extend(texts)

    def fail_next(
        self,
        path: str,
        status: int,
        message: str = "Injected failure",
        *,
        code: str | None = None,
    ) -> None:
        """Make the next request to ``path`` fail with ``status`` (FIFO per path).

        ``path`` may be given with or without the ``/v1`` prefix. Failures are
        checked after authentication and before the reply FIFOs, so they do
        not consume scripted replies.
        """
        self._failures.setdefault(full_path(path), deque()).append(
            _Failure(status, message, code)
        )

    @property
    def pending_replies(self) -> int:
        """Return how many scripted chat replies are still queued."""
        return len(self._replies)

    @property
    def chat_requests(self) -> list[JsonDict]:
        """Return the JSON bodies of all chat completion requests."""
        return [r.json for r in self.requests if r.path == CHAT_PATH and r.json]

    # -- flow control ------------------------------------------------------

    def release(self, count: int = 1) -> None:
        """Let ``count`` held streams continue.

        A release that comes before a stream reaches its hold point is kept,
        so the stream will not stop there.
        """
        for _ in range(count):
            self._permits.release()

    # A timeout of its own: a test that waits for a hold that never comes must fail,
    # not hang until pytest's timeout.
    async def wait_held(self, timeout: float = 10.0) -> StreamRecord:  # noqa: ASYNC109
        """Wait for the next stream to reach its hold point and return it."""
        async with asyncio.timeout(timeout):
            return await self._held.get()

    async def wait_stream_closed(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109
    ) -> StreamRecord:
        """Wait for the next stream the client closed before its end."""
        async with asyncio.timeout(timeout):
            return await self._closed.get()

    # -- plumbing ----------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Handler
    ) -> web.StreamResponse:
        record = RecordedRequest(
            request.method, request.path, CIMultiDict(request.headers)
        )
        self.requests.append(record)
        request["record"] = record
        if request.content_type == "application/json":
            # Recorded before auth and injected failures so tests can inspect
            # the body of rejected attempts too; aiohttp caches the body.
            with contextlib.suppress(ValueError):
                record.json = await request.json()
        if request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return error_response(
                401,
                "Incorrect API key provided.",
                code="invalid_api_key",
            )
        if failure := self._pop_failure(request.path):
            return error_response(failure.status, failure.message, code=failure.code)
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            return await handler(request)
        finally:
            self._handlers.discard(task)

    def _pop_failure(self, path: str) -> _Failure | None:
        queue = self._failures.get(path)
        return queue.popleft() if queue else None

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}-fake{next(self._ids)}"

    def _new_stream(self, request: web.Request) -> StreamRecord:
        stream = StreamRecord(request.path, request["record"])
        self.streams.append(stream)
        return stream

    async def _hold(self, stream: StreamRecord) -> None:
        stream.held = True
        self._held.put_nowait(stream)
        await self._permits.acquire()
        stream.held = False

    @contextlib.asynccontextmanager
    async def _watch(self, stream: StreamRecord) -> AsyncIterator[None]:
        """Turn a cancelled handler or failed write into ``client_closed``."""
        try:
            yield
        except asyncio.CancelledError:
            if not (stream.server_aborted or self._stopping):
                self._mark_client_closed(stream)
            raise
        except ConnectionResetError:
            self._mark_client_closed(stream)

    def _mark_client_closed(self, stream: StreamRecord) -> None:
        stream.client_closed = True
        self._closed.put_nowait(stream)

    @staticmethod
    def _abort(request: web.Request, stream: StreamRecord) -> None:
        # close() (not abort()) flushes what was written, then drops the
        # connection before the terminating chunk.
        stream.server_aborted = True
        if request.transport is not None:
            request.transport.close()

    @staticmethod
    async def _read_json(request: web.Request) -> JsonDict | web.Response:
        try:
            body = await request.json()
        except ValueError:
            return error_response(400, "We could not parse the JSON body.")
        if not isinstance(body, dict):
            return error_response(400, "The body must be a JSON object.")
        return body

    # -- models ------------------------------------------------------------

    def _model_json(self, model: str) -> JsonDict:
        return {
            "id": model,
            "object": "model",
            "created": 1700000000,
            "owned_by": "fake",
        }

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        data = [self._model_json(model) for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        if model not in self.models:
            return error_response(
                404, f"The model '{model}' does not exist", code="model_not_found"
            )
        return web.json_response(self._model_json(model))

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return error_response(
            404, f"Invalid URL ({request.method} {request.path})", code="unknown_url"
        )

    # -- chat --------------------------------------------------------------

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        if isinstance(body, web.Response):
            return body
        if not isinstance(body.get("model"), str) or not isinstance(
            body.get("messages"), list
        ):
            return error_response(400, "'model' and 'messages' are required.")
        reply = self._replies.popleft() if self._replies else self.default_reply
        if reply.error_status is not None:
            return error_response(
                reply.error_status, reply.error_message, code=reply.error_code
            )
        model = reply.model or body["model"]
        usage = reply.usage or default_usage(body, reply)
        if body.get("stream"):
            include_usage = bool(
                (body.get("stream_options") or {}).get("include_usage")
            )
            chunks = ChunkFactory(
                self._next_id("chatcmpl"), int(time.time()), model, include_usage
            )
            return await self._stream_chat(request, reply, chunks, usage)
        return await self._complete_chat(request, reply, model, usage)

    async def _complete_chat(
        self, request: web.Request, reply: ChatReply, model: str, usage: Usage
    ) -> web.StreamResponse:
        stream = self._new_stream(request)
        response = web.json_response(
            completion_json(
                reply, self._next_id("chatcmpl"), int(time.time()), model, usage
            )
        )
        async with self._watch(stream):
            if reply.hold_after is not None:
                await self._hold(stream)
            if reply.disconnect_after is not None:
                self._abort(request, stream)
                return response
            await asyncio.sleep(reply.ttft + reply.token_delay * len(reply.events))
            stream.events_sent = len(reply.events)
            stream.completed = True
        return response

    async def _stream_chat(
        self, request: web.Request, reply: ChatReply, chunks: ChunkFactory, usage: Usage
    ) -> web.StreamResponse:
        stream = self._new_stream(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        async with self._watch(stream):
            await self._write_chat_events(request, response, reply, chunks, stream)
            if stream.server_aborted or stream.completed:
                return response
            finish = chunks.chunk({}, reply.resolved_finish_reason())
            await response.write(sse(finish))
            if chunks.include_usage:
                await response.write(sse(chunks.usage_chunk(usage)))
            await response.write(sse("[DONE]"))
            await response.write_eof()
            stream.completed = True
        return response

    async def _write_chat_events(
        self,
        request: web.Request,
        response: web.StreamResponse,
        reply: ChatReply,
        chunks: ChunkFactory,
        stream: StreamRecord,
    ) -> None:
        """Write the role chunk and the events, honouring hold/disconnect."""
        events = list(reply.events)
        first_delta, merged = role_delta(events[0] if events else None)
        for position, event in enumerate(events):
            if not await self._checkpoint(request, reply, stream, position):
                return
            await asyncio.sleep(reply.ttft if position == 0 else reply.token_delay)
            if isinstance(event, ErrorEvent):
                await self._write_stream_error(response, event, stream)
                return
            if position == 0:
                await response.write(sse(chunks.chunk(first_delta)))
            if position > 0 or not merged:
                await response.write(sse(chunks.chunk(event_delta(event))))
            stream.events_sent += 1
        if not await self._checkpoint(request, reply, stream, len(events)):
            return
        if not events:
            await response.write(sse(chunks.chunk(first_delta)))

    async def _checkpoint(
        self,
        request: web.Request,
        reply: ChatReply,
        stream: StreamRecord,
        position: int,
    ) -> bool:
        """Hold or cut the stream at ``position``; False once the link is cut."""
        if position == reply.hold_after:
            await self._hold(stream)
        if position == reply.disconnect_after:
            self._abort(request, stream)
            return False
        return True

    @staticmethod
    async def _write_stream_error(
        response: web.StreamResponse, event: ErrorEvent, stream: StreamRecord
    ) -> None:
        error = {"message": event.message, "type": event.error_type, "param": None}
        await response.write(sse({"error": error | {"code": event.code}}))
        await response.write_eof()
        stream.completed = True

    # -- transcription -----------------------------------------------------

    async def _handle_transcription(self, request: web.Request) -> web.StreamResponse:
        record: RecordedRequest = request["record"]
        if request.content_type != "multipart/form-data":
            return error_response(400, "Expected a multipart/form-data body.")
        try:
            await self._read_multipart(request, record)
        except ValueError as err:
            return error_response(400, f"Invalid multipart body: {err}")
        upload = record.files.get("file")
        if upload is None or "model" not in record.form:
            return error_response(400, "'file' and 'model' are required.")
        response_format = record.form.get("response_format", "json")
        if response_format not in TRANSCRIPTION_FORMATS:
            return error_response(
                400,
                f"response_format '{response_format}' is not supported by the fake.",
                param="response_format",
            )
        try:
            wav, pcm = parse_wav(upload.data)
        except InvalidWavError as err:
            return error_response(
                400, f"Invalid file format: {err}", param="file", code="invalid_value"
            )
        transcription = TranscriptionRequest(
            model=record.form["model"],
            language=record.form.get("language"),
            prompt=record.form.get("prompt"),
            response_format=response_format,
            stream=record.form.get("stream", "false").lower() == "true",
            wav=wav,
            pcm=pcm,
        )
        self.transcriptions.append(transcription)
        text = (
            self._transcripts.popleft()
            if self._transcripts
            else self.default_transcript
        )
        if transcription.stream:
            return await self._stream_transcript(request, text)
        if response_format == "text":
            return web.Response(text=text, content_type="text/plain")
        usage = {"type": "duration", "seconds": math.ceil(wav.duration)}
        return web.json_response({"text": text, "usage": usage})

    @staticmethod
    async def _read_multipart(request: web.Request, record: RecordedRequest) -> None:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader) or part.name is None:
                raise ValueError("unexpected nested or unnamed part")
            if part.filename is None:
                record.form[part.name] = await part.text()
            else:
                content_type = part.headers.get("Content-Type", "")
                data = bytes(await part.read())
                record.files[part.name] = RecordedFile(
                    part.filename, content_type, data
                )

    async def _stream_transcript(
        self, request: web.Request, text: str
    ) -> web.StreamResponse:
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream; charset=utf-8"}
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        for piece in split_text(text, self.transcript_chunk):
            await asyncio.sleep(self.transcript_delay)
            await response.write(sse({"type": "transcript.text.delta", "delta": piece}))
        usage = {"type": "tokens", "input_tokens": 1, "output_tokens": len(text)}
        done = {
            "type": "transcript.text.done",
            "text": text,
            "usage": usage | {"total_tokens": 1 + len(text)},
        }
        await response.write(sse(done))
        await response.write_eof()
        return response

    # -- speech ------------------------------------------------------------

    async def _handle_speech(self, request: web.Request) -> web.StreamResponse:
        body = await self._read_json(request)
        if isinstance(body, web.Response):
            return body
        speech = parse_speech_request(body)
        if isinstance(speech, web.Response):
            return speech
        self.speech_requests.append(speech)
        return await self._stream_speech(request, speech)

    async def _stream_speech(
        self, request: web.Request, speech: SpeechRequest
    ) -> web.StreamResponse:
        settings = self.speech
        pcm = tone_pcm(settings.pcm_bytes(speech.input, speech.speed) // 2)
        content_type = "audio/wav" if speech.response_format == "wav" else "audio/pcm"
        response = web.StreamResponse(headers={"Content-Type": content_type})
        response.enable_chunked_encoding()
        stream = self._new_stream(request)
        await response.prepare(request)
        async with self._watch(stream):
            await asyncio.sleep(settings.first_byte_delay)
            prefix = b""
            if speech.response_format == "wav":
                prefix = streaming_wav_header(SPEECH_SAMPLE_RATE)
            for piece in split_bytes(pcm, settings.chunk_size):
                if stream.events_sent == settings.hold_after_chunks:
                    await self._hold(stream)
                await response.write(prefix + piece)
                prefix = b""
                stream.events_sent += 1
                if settings.bytes_per_second:
                    await asyncio.sleep(len(piece) / settings.bytes_per_second)
            await response.write_eof()
            stream.completed = True
        return response


def split_bytes(data: bytes, size: int) -> list[bytes]:
    """Split ``data`` into pieces of ``size`` bytes."""
    return [data[start : start + size] for start in range(0, len(data), size)]


def full_path(path: str) -> str:
    """Return ``path`` with the ``/v1`` prefix."""
    path = "/" + path.lstrip("/")
    return path if path.startswith(API_PREFIX + "/") else API_PREFIX + path


def parse_speech_request(body: Mapping[str, Any]) -> SpeechRequest | web.Response:
    """Validate a speech request body like OpenAI does (400 on errors)."""
    text = body.get("input")
    if not isinstance(text, str) or not text or len(text) > MAX_SPEECH_INPUT:
        return error_response(400, "'input' must be 1..4096 characters.", param="input")
    if not isinstance(body.get("model"), str):
        return error_response(400, "'model' is required.", param="model")
    voice = body.get("voice")
    if not isinstance(voice, (str, dict)) or not voice:
        return error_response(400, "'voice' is required.", param="voice")
    response_format = body.get("response_format", "mp3")
    if response_format not in SPEECH_FORMATS:
        return error_response(
            400,
            f"response_format '{response_format}' is not supported by the fake "
            "provider; use 'pcm' or 'wav'.",
            param="response_format",
        )
    speed = body.get("speed", 1.0)
    if not isinstance(speed, (int, float)) or not 0.25 <= speed <= 4.0:
        return error_response(400, "'speed' must be within 0.25..4.0.", param="speed")
    stream_format = body.get("stream_format")
    if stream_format not in (None, "audio"):
        return error_response(
            400, "Only stream_format 'audio' is supported.", param="stream_format"
        )
    return SpeechRequest(
        model=body["model"],
        input=text,
        voice=voice,
        response_format=response_format,
        speed=float(speed),
        instructions=body.get("instructions"),
        stream_format=stream_format,
    )
