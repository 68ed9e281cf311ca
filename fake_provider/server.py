r"""The fake OpenAI-compatible server: one app for tests, benchmarks and the demo.

`FakeProvider` runs an aiohttp server (127.0.0.1 and a random port unless told
otherwise) that the real ``openai`` SDK talks to over HTTP, nothing patched:

* ``GET /v1/models`` and ``GET /v1/models/{id}``
* ``POST /v1/chat/completions``: `ChatReply` objects, streamed as SSE exactly
  like OpenAI (``data: {json}\n\n`` ... ``data: [DONE]\n\n``) or assembled into
  one ``chat.completion`` when ``stream`` is false. Images in the messages
  (``image_url`` parts) must be base64 data URLs of real JPEG, PNG, GIF or WebP
  bytes, else 400 as OpenAI answers; they are kept in ``images``.
* ``POST /v1/audio/transcriptions``: checks that the upload is a complete PCM
  WAV and answers a transcript (``json``, ``text`` or, with ``stream=true``,
  ``transcript.text.delta`` / ``transcript.text.done`` SSE).
* ``POST /v1/audio/speech``: 24 kHz mono s16le audio of the input text, as
  ``pcm`` or ``wav`` (and compressed formats where ffmpeg is given), streamed in
  chunks. Other formats are answered with 400, so a caller that forgets to ask
  for pcm/wav fails loudly instead of decoding garbage.

Two modes of the same server. Scripted (the default, for tests and benchmarks):
replies and transcripts come from FIFOs a test fills (then from defaults),
speech is a sine tone whose length is proportional to the text, only the one
API key is accepted; every request is recorded, failures can be injected per
path, streams can be held after N events and released by the test, a test can
await the moment the client closed a stream, and switches make it answer like a
roughly compatible server instead of OpenAI (`fake_provider.quirks`).
Demo (`FakeProvider.for_demo`, ``python -m fake_provider --demo``): when nothing
is queued, `DemoMode` answers (see `fake_provider.demo`: keyword rules, speech by
espeak-ng, and `fake_provider.listener`, which hears a closed vocabulary), any
key is accepted and nothing is kept. The ``fake_provider`` pytest fixture
(tests/helpers/provider.py) starts a scripted one per test.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
import contextlib
from dataclasses import dataclass
from datetime import datetime
import itertools
import logging
import math
import time
from typing import TYPE_CHECKING, Any, Final, Self

from aiohttp import web
from multidict import CIMultiDict

from .audio import (
    FFMPEG_FORMATS,
    PCM_FORMATS,
    SpeechSettings,
    SynthesisError,
    Synthesizer,
    ToneSynthesizer,
    encode_with_ffmpeg,
)
from .chat import ChatReply, ErrorEvent, JsonDict, Usage
from .demo import DEFAULT_HOST, INDEX_TEXT, MODELS as DEMO_MODELS, DemoMode
from .inputs import (
    ChatImage,
    RecordedRequest,
    SpeechRequest,
    StreamRecord,
    TranscriptionRequest,
    chat_images,
    parse_speech_request,
    parse_transcription,
    read_json,
)
from .quirks import ChatQuirks, TranscriptAnswer, merge_tool_call_fragments
from .text import split_text
from .wire import (
    ChunkFactory,
    completion_json,
    default_usage,
    error_response,
    event_delta,
    model_json,
    open_event_stream,
    role_delta,
    sse,
    sse_events,
    transcript_done_event,
    verbose_transcription_json,
)

if TYPE_CHECKING:
    from types import TracebackType

    import openai

LOGGER: Final = logging.getLogger(__name__)

API_PREFIX: Final = "/v1"
CHAT_PATH: Final = "/v1/chat/completions"
MODELS_PATH: Final = "/v1/models"
TRANSCRIPTIONS_PATH: Final = "/v1/audio/transcriptions"
SPEECH_PATH: Final = "/v1/audio/speech"

DEFAULT_API_KEY: Final = "sk-test"
DEFAULT_MODELS: Final = (
    "gpt-4o-mini",
    "gpt-4o-mini-transcribe",
    "gpt-4o-mini-tts",
    "whisper-1",
    "tts-1",
)
DEFAULT_REPLY_TEXT: Final = "OK."
DEFAULT_TRANSCRIPT: Final = "你好"
SCRIPTED_INDEX_TEXT: Final = (
    "Fake OpenAI-compatible provider (scripted mode): an API at /v1.\n"
)

type Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class _Failure:
    status: int
    message: str
    code: str | None


class FakeProvider:
    """A local OpenAI-compatible server; see the module docstring.

    Attributes:
        api_key: The only Bearer key accepted (others get 401); ``None`` accepts
            any key and none.
        models: Model ids served by ``GET /v1/models``.
        demo: What answers when nothing is queued; ``None`` in scripted mode.
        history: Keep every request, stream and upload for inspection (tests);
            a demo that runs for hours keeps none.
        requests: Every request received, in order.
        default_reply: Chat reply used when the scripted FIFO is empty.
        default_transcript: Transcript used when the scripted FIFO is empty.
        transcript_chunk: Characters per ``transcript.text.delta`` event.
        transcript_delay: Seconds before each streamed transcript delta.
        transcript_answer: The shape of transcription answers (OpenAI's, or a
            roughly compatible server's: `TranscriptAnswer`).
        chat_quirks: How chat streams depart from OpenAI's (`ChatQuirks`).
        speech: `SpeechSettings` for ``/v1/audio/speech``.
        synthesizer: What speaks; ``None`` is a tone sized by ``speech``.
        ffmpeg: ffmpeg executable for compressed speech formats, if any.
        streams: Every streamed response, in order.
        transcriptions: Every valid transcription request.
        speech_requests: Every valid speech request.
        images: Every image chat requests carried (checked to be valid).
    """

    def __init__(
        self,
        *,
        api_key: str | None = DEFAULT_API_KEY,
        models: Sequence[str] = DEFAULT_MODELS,
        demo: DemoMode | None = None,
        history: bool = True,
        host: str = DEFAULT_HOST,
        port: int = 0,
    ) -> None:
        """Create a stopped provider; it serves on ``host:port`` (0: any port)."""
        self.api_key = api_key
        self.models = list(models)
        self.demo = demo
        self.history = history
        self.requests: list[RecordedRequest] = []
        self.default_reply = ChatReply.text(DEFAULT_REPLY_TEXT)
        self.default_transcript = DEFAULT_TRANSCRIPT
        self.transcript_chunk = 1
        self.transcript_delay = 0.0
        self.transcript_answer = TranscriptAnswer.AS_ASKED
        self.chat_quirks = ChatQuirks()
        self.speech = SpeechSettings() if demo is None else demo.speech_settings()
        self.synthesizer: Synthesizer | None = (
            None if demo is None else demo.synthesizer
        )
        self.ffmpeg = None if demo is None else demo.ffmpeg
        self.streams: list[StreamRecord] = []
        self.transcriptions: list[TranscriptionRequest] = []
        self.speech_requests: list[SpeechRequest] = []
        self.images: list[ChatImage] = []
        self._replies: deque[ChatReply] = deque()
        self._transcripts: deque[str] = deque()
        self._failures: dict[str, deque[_Failure]] = {}
        self._permits = asyncio.Semaphore(0)
        self._held: asyncio.Queue[StreamRecord] = asyncio.Queue()
        self._closed: asyncio.Queue[StreamRecord] = asyncio.Queue()
        self._handlers: set[asyncio.Task[Any]] = set()
        self._ids = itertools.count(1)
        self._host = host
        self._requested_port = port
        self._runner: web.AppRunner | None = None
        self._port: int | None = None
        self._stopping = False

    @classmethod
    def for_demo(
        cls,
        demo: DemoMode | None = None,
        *,
        history: bool = False,
        host: str = DEFAULT_HOST,
        port: int = 0,
    ) -> Self:
        """Return a stopped provider in demo mode (any API key, the demo's models)."""
        return cls(
            api_key=None,
            models=DEMO_MODELS,
            demo=demo or DemoMode(),
            history=history,
            host=host,
            port=port,
        )

    # -- lifecycle ---------------------------------------------------------

    async def start(self) -> None:
        """Bind the address given at creation and serve."""
        app = web.Application(middlewares=[self._middleware])
        app.router.add_get("/", self._handle_index)
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
        site = web.TCPSite(runner, self._host, self._requested_port)
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
        """Return ``http://<host>:<port>/v1``; only valid once started."""
        if self._port is None:
            raise RuntimeError("FakeProvider is not started")
        return f"http://{self._host}:{self._port}{API_PREFIX}"

    def client(self, **kwargs: Any) -> openai.AsyncOpenAI:
        """Return an `openai.AsyncOpenAI` for this server (``max_retries=0``).

        The caller must close it (``await client.close()`` or ``async with``).
        """
        import openai  # only clients need the SDK; the server itself does not

        options: dict[str, Any] = {
            "base_url": self.base_url,
            "api_key": self.api_key or "any",
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
        if self.history:
            self.requests.append(record)
        request["record"] = record
        if request.content_type == "application/json":
            # Recorded before auth and injected failures so tests can inspect
            # the body of rejected attempts too; aiohttp caches the body.
            with contextlib.suppress(ValueError):
                record.json = await request.json()
        if self.api_key is not None and (
            request.headers.get("Authorization") != f"Bearer {self.api_key}"
        ):
            return error_response(
                401, "Incorrect API key provided.", code="invalid_api_key"
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
        if self.history:
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
        # Barge-in does this all the time: normal, not worth more than debug.
        LOGGER.debug("The client closed %s before its end", stream.path)
        stream.client_closed = True
        if self.history:
            self._closed.put_nowait(stream)

    @staticmethod
    def _abort(request: web.Request, stream: StreamRecord) -> None:
        # close() (not abort()) flushes what was written, then drops the
        # connection before the terminating chunk.
        stream.server_aborted = True
        if request.transport is not None:
            request.transport.close()

    # -- index and models --------------------------------------------------

    async def _handle_index(self, request: web.Request) -> web.StreamResponse:
        return web.Response(
            text=SCRIPTED_INDEX_TEXT if self.demo is None else INDEX_TEXT
        )

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        data = [model_json(model) for model in self.models]
        return web.json_response({"object": "list", "data": data})

    async def _handle_model(self, request: web.Request) -> web.StreamResponse:
        model = request.match_info["model"]
        # The demo answers to whatever model an entry was set up with.
        if model not in self.models and self.demo is None:
            return error_response(
                404, f"The model '{model}' does not exist", code="model_not_found"
            )
        return web.json_response(model_json(model))

    async def _handle_unknown(self, request: web.Request) -> web.StreamResponse:
        return error_response(
            404, f"Invalid URL ({request.method} {request.path})", code="unknown_url"
        )

    # -- chat --------------------------------------------------------------

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        messages = body.get("messages")
        if not isinstance(body.get("model"), str) or not (
            isinstance(messages, list) and messages
        ):
            return error_response(
                400, "'model' and a non-empty 'messages' list are required."
            )
        images = chat_images(body)
        if isinstance(images, web.Response):
            return images
        if self.history:
            self.images.extend(images)
        reply = self._next_reply(body)
        if reply.error_status is not None:
            return error_response(
                reply.error_status, reply.error_message, code=reply.error_code
            )
        model = reply.model or body["model"]
        usage = reply.usage or default_usage(body, reply)
        if body.get("stream") and not self.chat_quirks.ignore_stream:
            include_usage = bool(
                (body.get("stream_options") or {}).get("include_usage")
            )
            chunks = ChunkFactory(
                self._next_id("chatcmpl"),
                int(time.time()),
                model,
                include_usage,
                self.chat_quirks,
            )
            return await self._stream_chat(request, reply, chunks, usage)
        return await self._complete_chat(request, reply, model, usage)

    def _next_reply(self, body: JsonDict) -> ChatReply:
        """Return the next queued reply, else the demo's, else the default one."""
        if self._replies:
            return self._replies.popleft()
        if self.demo is not None:
            return self.demo.chat_reply(body, now=datetime.now().astimezone())
        return self.default_reply

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
        response = await open_event_stream(request)
        async with self._watch(stream):
            await self._write_chat_events(request, response, reply, chunks, stream)
            if stream.server_aborted or stream.completed:
                return response
            closing = chunks.closing_chunks(reply.resolved_finish_reason(), usage)
            await response.write(sse_events(closing))
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
        if chunks.quirks.whole_tool_calls:
            events = merge_tool_call_fragments(events)
        first_delta, merged = role_delta(events[0] if events else None)
        for position, event in enumerate(events):
            if not await self._checkpoint(request, reply, stream, position):
                return
            await asyncio.sleep(reply.ttft if position == 0 else reply.token_delay)
            if isinstance(event, ErrorEvent):
                await self._write_stream_error(response, event, stream)
                return
            if position == 0:
                await response.write(sse_events(chunks.opening_chunks(first_delta)))
            if position > 0 or not merged:
                delta = event_delta(event)
                await response.write(sse_events(chunks.event_chunks(delta, position)))
            stream.events_sent += 1
        if not await self._checkpoint(request, reply, stream, len(events)):
            return
        if not events:
            await response.write(sse_events(chunks.opening_chunks(first_delta)))

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
        transcription = await parse_transcription(request, request["record"])
        if isinstance(transcription, web.Response):
            return transcription
        if self.history:
            self.transcriptions.append(transcription)
        text = await self._next_transcript(transcription)
        return await self._answer_transcript(request, transcription, text)

    async def _answer_transcript(
        self, request: web.Request, transcription: TranscriptionRequest, text: str
    ) -> web.StreamResponse:
        """Answer ``text`` in the shape asked for, or the one `transcript_answer` says."""
        answer = self.transcript_answer
        if answer.streamed and not transcription.stream:
            answer = TranscriptAnswer.AS_ASKED
        duration = transcription.wav.duration
        match answer:
            case TranscriptAnswer.AS_ASKED if transcription.stream:
                return await self._stream_transcript(request, text, done_text=text)
            case TranscriptAnswer.AS_ASKED if transcription.response_format == "json":
                usage = {"type": "duration", "seconds": math.ceil(duration)}
                return web.json_response({"text": text, "usage": usage})
            case TranscriptAnswer.AS_ASKED | TranscriptAnswer.TEXT:
                return web.Response(text=text, content_type="text/plain")
            case TranscriptAnswer.JSON:
                return web.json_response({"text": text})
            case TranscriptAnswer.VERBOSE_JSON:
                verbose = verbose_transcription_json(
                    text, duration, transcription.language
                )
                return web.json_response(verbose)
            case TranscriptAnswer.SSE_DONE_ONLY:
                return await self._stream_transcript(
                    request, text, deltas=False, done_text=text
                )
            case TranscriptAnswer.SSE_DELTAS_ONLY:
                return await self._stream_transcript(request, text, done_text=None)
            case TranscriptAnswer.SSE_EMPTY_DONE:
                return await self._stream_transcript(request, text, done_text="")

    async def _next_transcript(self, transcription: TranscriptionRequest) -> str:
        """Return the next queued transcript, else the demo's, else the default."""
        if self._transcripts:
            return self._transcripts.popleft()
        if self.demo is not None:
            return await self.demo.transcript(transcription)
        return self.default_transcript

    async def _stream_transcript(
        self,
        request: web.Request,
        text: str,
        *,
        deltas: bool = True,
        done_text: str | None,
    ) -> web.StreamResponse:
        """Stream ``text`` as delta events, then a done event with ``done_text``.

        ``done_text`` is ``None`` for no done event.
        """
        response = await open_event_stream(request)
        for piece in split_text(text, self.transcript_chunk) if deltas else ():
            await asyncio.sleep(self.transcript_delay)
            await response.write(sse({"type": "transcript.text.delta", "delta": piece}))
        if done_text is not None:
            await response.write(sse(transcript_done_event(done_text, len(text))))
        await response.write_eof()
        return response

    # -- speech ------------------------------------------------------------

    @property
    def speech_formats(self) -> tuple[str, ...]:
        """Return the ``response_format`` values served: PCM, WAV, ffmpeg's."""
        return PCM_FORMATS + (tuple(FFMPEG_FORMATS) if self.ffmpeg else ())

    async def _handle_speech(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        if isinstance(body, web.Response):
            return body
        speech = parse_speech_request(body, self.speech_formats)
        if isinstance(speech, web.Response):
            return speech
        if self.history:
            self.speech_requests.append(speech)
        started = time.monotonic()
        try:
            header, audio = await self._render_speech(speech)
        except SynthesisError as err:
            LOGGER.warning("Speech synthesis failed: %s", err)
            return error_response(500, f"Speech synthesis failed: {err}")
        first_byte_at = started + self.speech.first_byte_delay
        return await self._stream_speech(
            request, speech.response_format, header, audio, first_byte_at
        )

    async def _render_speech(self, speech: SpeechRequest) -> tuple[bytes, bytes]:
        """Return the header and the audio of the answer, in the asked format."""
        synthesizer = self.synthesizer or ToneSynthesizer(self.speech)
        pcm = await synthesizer.synthesize(
            speech.input, speech.voice_name, speech.speed
        )
        if speech.response_format == "pcm":
            return b"", pcm
        if speech.response_format == "wav":
            return self.speech.wav_header(len(pcm)), pcm
        assert self.ffmpeg is not None  # speech_formats offered it
        return b"", await encode_with_ffmpeg(pcm, speech.response_format, self.ffmpeg)

    async def _stream_speech(
        self,
        request: web.Request,
        response_format: str,
        header: bytes,
        audio: bytes,
        first_byte_at: float,
    ) -> web.StreamResponse:
        """Send ``header`` and ``audio`` in the pieces and pace `speech` sets."""
        settings = self.speech
        response = web.StreamResponse(
            headers={"Content-Type": settings.content_type_of(response_format)}
        )
        if settings.content_length:
            response.content_length = len(header) + len(audio)
            pieces = [header + audio]
        else:
            response.enable_chunked_encoding()
            pieces = settings.pieces(header, audio)
        stream = self._new_stream(request)
        await response.prepare(request)
        async with self._watch(stream):
            await asyncio.sleep(max(0.0, first_byte_at - time.monotonic()))
            for piece in pieces:
                if stream.events_sent == settings.hold_after_chunks:
                    await self._hold(stream)
                await response.write(piece)
                stream.events_sent += 1
                if settings.bytes_per_second:
                    await asyncio.sleep(len(piece) / settings.bytes_per_second)
            await response.write_eof()
            stream.completed = True
        return response


def full_path(path: str) -> str:
    """Return ``path`` with the ``/v1`` prefix."""
    path = "/" + path.lstrip("/")
    return path if path.startswith(API_PREFIX + "/") else API_PREFIX + path
