"""Speech-to-text on the OpenAI-compatible service: the logic of the STT entity.

The audio is raw 16 kHz, 16-bit mono PCM (what HA's pipeline and the device
sessions deliver). It is read as it arrives: the length limit, the loudness
measurement and the WAV framing happen while the person is still speaking, so at
the end of the stream only the upload is left. The upload itself cannot start
earlier: the SDK sends ``file=`` as a multipart body built from bytes or a
blocking file object (no async source), and a WAV with an unknown length is
rejected by strict servers. Models that stream their transcript
(gpt-4o(-mini)-transcribe) are asked to (``stream=True``); whatever shape the
answer comes in (events, JSON, text), it is read by what it is.

Audio that cannot hold speech is not sent at all: empty, shorter than
`MIN_AUDIO_SECONDS`, or silent. Silence means that no 20 ms window reaches
`SILENCE_DBFS` RMS; real speech close to a microphone is 20 to 30 dB louder.
"""

from collections.abc import AsyncIterable
from dataclasses import dataclass, field
import math
from typing import Final

import audioop
import openai

from ..const import LOGGER
from ..protocol.codec import pcm_to_wav
from .answers import (
    AnswerError,
    JsonObject,
    body_text,
    event_objects,
    excerpt,
    is_event_stream,
    json_object,
    raise_for_error,
)

SAMPLE_RATE: Final = 16000
SAMPLE_WIDTH: Final = 2
MAX_AUDIO_SECONDS: Final = 30.0
MIN_AUDIO_SECONDS: Final = 0.3
SILENCE_DBFS: Final = -50.0
LOUDNESS_WINDOW_SECONDS: Final = 0.02
TRANSCRIPTION_TIMEOUT: Final = 30.0

# Models known to stream their transcript; others get one JSON answer.
_STREAMING_MODEL_MARKERS: Final = ("gpt-4o-transcribe", "gpt-4o-mini-transcribe")


def api_language(language: str) -> str | None:
    """Return the ISO 639-1 code the API takes for a HA language tag, if any."""
    code = language.split("-", 1)[0].strip().lower()
    return code or None


def streams_transcript(model: str) -> bool:
    """Return whether the model can stream its transcript as events."""
    return any(marker in model for marker in _STREAMING_MODEL_MARKERS)


@dataclass(slots=True)
class Utterance:
    """Mono 16-bit PCM collected as it arrives, measured on the way.

    Attributes:
        rate: Sample rate in Hz.
        max_seconds: Audio beyond this length is dropped.
        pcm: The audio kept so far.
        loudest_rms: Highest RMS of any complete loudness window so far.
        truncated: Audio was dropped because of the length limit.
    """

    rate: int = SAMPLE_RATE
    max_seconds: float = MAX_AUDIO_SECONDS
    pcm: bytearray = field(default_factory=bytearray, repr=False)
    loudest_rms: int = 0
    truncated: bool = False
    _measured: int = field(default=0, init=False, repr=False)

    @property
    def _window_bytes(self) -> int:
        return round(self.rate * LOUDNESS_WINDOW_SECONDS) * SAMPLE_WIDTH

    @property
    def _max_bytes(self) -> int:
        return round(self.rate * self.max_seconds) * SAMPLE_WIDTH

    @property
    def seconds(self) -> float:
        """Return the length of the audio kept, in seconds."""
        return len(self.pcm) / SAMPLE_WIDTH / self.rate

    def add(self, chunk: bytes) -> bool:
        """Append a chunk; return False once the length limit is reached."""
        room = self._max_bytes - len(self.pcm)
        if len(chunk) >= room:
            self.truncated = len(chunk) > room
            self.pcm += chunk[:room]
            self._measure(final=False)
            return False
        self.pcm += chunk
        self._measure(final=False)
        return True

    def _measure(self, *, final: bool) -> None:
        window = self._window_bytes
        while len(self.pcm) - self._measured >= window or (
            final and len(self.pcm) - self._measured >= SAMPLE_WIDTH
        ):
            end = min(self._measured + window, len(self.pcm))
            end -= (end - self._measured) % SAMPLE_WIDTH
            rms = audioop.rms(bytes(self.pcm[self._measured : end]), SAMPLE_WIDTH)
            self.loudest_rms = max(self.loudest_rms, rms)
            self._measured = end

    def problem(self) -> str | None:
        """Return why this audio cannot hold speech, or None if it may."""
        self._measure(final=True)
        if not self.pcm:
            return "no audio"
        if self.seconds < MIN_AUDIO_SECONDS:
            return f"audio too short ({self.seconds:.2f} s)"
        if self.loudest_rms < silence_rms():
            return f"silence (peak {rms_dbfs(self.loudest_rms):.1f} dBFS)"
        return None

    def wav(self) -> bytes:
        """Return the audio as a complete WAV file."""
        return pcm_to_wav(bytes(self.pcm), self.rate)


def silence_rms() -> float:
    """Return the RMS (of 16-bit samples) below which audio counts as silence."""
    return 32768 * 10 ** (SILENCE_DBFS / 20)


def rms_dbfs(rms: int) -> float:
    """Return an RMS of 16-bit samples in dB relative to full scale."""
    return 20 * math.log10(rms / 32768) if rms else -math.inf


async def collect_utterance(
    stream: AsyncIterable[bytes], rate: int = SAMPLE_RATE
) -> Utterance:
    """Read the audio stream until it ends or reaches the length limit."""
    utterance = Utterance(rate)
    async for chunk in stream:
        if not utterance.add(chunk):
            LOGGER.warning(
                "Speech longer than %.0f s: transcribing only the start",
                utterance.max_seconds,
            )
            break
    return utterance


async def transcribe(
    client: openai.AsyncOpenAI,
    wav: bytes,
    *,
    model: str,
    language: str,
    prompt: str | None,
) -> str:
    """Return what the service hears in a WAV file (streamed where the model can).

    The answer is read raw and parsed by what it is (`transcript_of_answer`):
    many compatible services ignore ``stream`` and ``response_format``, and the
    SDK would parse by what was asked (a JSON answer to ``stream=True`` reads as
    an empty event stream, a text answer to ``json`` as a bare string).

    Raises:
        openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError: The request failed
            (see :data:`client.PROVIDER_ERRORS`).
        AnswerError: The service answered something that holds no transcript.
    """
    async with client.audio.transcriptions.with_streaming_response.create(
        model=model,
        file=("speech.wav", wav, "audio/wav"),
        language=api_language(language) or openai.omit,
        prompt=prompt or openai.omit,
        response_format="json",
        stream=True if streams_transcript(model) else openai.omit,
        timeout=TRANSCRIPTION_TIMEOUT,
    ) as response:
        body = await response.read()
        content_type = response.headers.get("content-type")
    return transcript_of_answer(content_type, body)


def transcript_of_answer(content_type: str | None, body: bytes) -> str:
    """Return the transcript in a transcription answer, whatever its shape.

    Understood, by the body more than by its Content-Type (which roughly
    compatible services get wrong too): server-sent events (OpenAI's
    ``transcript.text.*`` events, or chat-style ``choices[].delta.content``
    chunks), a JSON object with ``text`` (``json``, ``verbose_json``), or the
    bare transcript as text.

    Raises:
        AnswerError: The answer is an error, or JSON without a transcript.
    """
    text = body_text(content_type, body)
    if is_event_stream(content_type, text):
        return _transcript_of_events(event_objects(text))
    if (answer := json_object(text)) is not None:
        raise_for_error(answer)
        if isinstance(transcript := answer.get("text"), str):
            return transcript
        raise AnswerError(f"The transcription answer has no text: {excerpt(text)}")
    return text


def _transcript_of_events(events: list[JsonObject]) -> str:
    """Return the transcript a stream of transcription events carries.

    The ``done`` event's text is the whole transcript; without one, or when it
    is empty (llama.cpp's server), the deltas are.
    """
    deltas: list[str] = []
    for event in events:
        if event.get("type") == "transcript.text.done":
            if isinstance(done := event.get("text"), str) and done:
                return done
        else:
            deltas.append(_event_delta(event))
    return "".join(deltas)


def _event_delta(event: JsonObject) -> str:
    """Return the text an event adds: OpenAI's ``delta``, or chat-style choices.

    vLLM streams transcripts as ``transcription.chunk`` objects shaped like chat
    completion chunks. Other events (``transcript.text.segment``) add nothing.
    """
    if event.get("type") == "transcript.text.delta":
        delta = event.get("delta")
        return delta if isinstance(delta, str) else ""
    pieces: list[str] = []
    for choice in event.get("choices") or ():
        delta = choice.get("delta") if isinstance(choice, dict) else None
        content = delta.get("content") if isinstance(delta, dict) else None
        if isinstance(content, str):
            pieces.append(content)
    return "".join(pieces)
