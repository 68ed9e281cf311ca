"""Speech-to-text on the OpenAI-compatible service: the logic of the STT entity.

The audio is raw 16 kHz, 16-bit mono PCM (what HA's pipeline and the device
sessions deliver). It is read as it arrives: the length limit, the loudness
measurement and the WAV framing happen while the person is still speaking, so at
the end of the stream only the upload is left. The upload itself cannot start
earlier: the SDK sends ``file=`` as a multipart body built from bytes or a
blocking file object (no async source), and a WAV with an unknown length is
rejected by strict servers. Models that stream their transcript
(gpt-4o(-mini)-transcribe) are asked to (``stream=True``).

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
from openai.types.audio import TranscriptionStreamEvent

from ..const import LOGGER
from ..protocol.codec import pcm_to_wav

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

    Raises:
        openai.OpenAIError, httpx.HTTPError, httpx2.HTTPError: The request failed
            (see :data:`client.PROVIDER_ERRORS`).
    """
    audio = ("speech.wav", wav, "audio/wav")
    code = api_language(language) or openai.omit
    transcriptions = client.audio.transcriptions
    if not streams_transcript(model):
        result = await transcriptions.create(
            model=model,
            file=audio,
            language=code,
            prompt=prompt or openai.omit,
            response_format="json",
            timeout=TRANSCRIPTION_TIMEOUT,
        )
        return result.text
    events = await transcriptions.create(
        model=model,
        file=audio,
        language=code,
        prompt=prompt or openai.omit,
        response_format="json",
        stream=True,
        timeout=TRANSCRIPTION_TIMEOUT,
    )
    async with events:
        return await transcript_of(events)


async def transcript_of(events: AsyncIterable[TranscriptionStreamEvent]) -> str:
    """Return the final transcript of a stream of transcription events.

    The ``done`` event carries the whole text; a stream cut before it yields
    what the deltas said so far.
    """
    deltas: list[str] = []
    async for event in events:
        if event.type == "transcript.text.done":
            return event.text
        if event.type == "transcript.text.delta":
            deltas.append(event.delta)
    return "".join(deltas)
