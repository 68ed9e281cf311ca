"""Text-to-speech on the OpenAI-compatible service: the logic of the TTS entity.

A reply is spoken while it is still being written: the text stream goes through
the sentence splitter, each sentence is synthesized as soon as it is complete,
the next one's request is already running while the current one's audio streams
out (`sentences.lookahead.synthesize_in_order`), and audio bytes are passed on as they
arrive.

Output format. WAV and raw PCM are produced here, at whatever rate, channel
count and sample width the caller prefers: the service is asked for ``wav``,
whose header says the rate, width and channels (services differ: SiliconFlow's
``pcm`` is 44.1 kHz, most others' 24 kHz), each answer is brought to 24 kHz
mono s16le (`SpeechDecoder`), resampled with `protocol.codec.PcmResampler` and
framed. mp3, opus (``ogg``/``oga``) and aac are passed through from the service
as they come. Any other format gets WAV and is left to HA's ffmpeg conversion.

What a roughly compatible service sends is read by what its body is, never by
its Content-Type (``application/octet-stream``, ``audio/pcm`` and ``audio/mpeg``
come on WAV or PCM alike): a WAV of any size fields (known, 0 or 0xFFFFFFFF) and
a header cut anywhere, raw 24 kHz PCM from services that answer ``pcm``
whatever is asked, in chunks of any size or one body.

Note that HA (2026.10) still pipes the stream through ffmpeg whenever a caller
sets ``preferred_sample_rate``/``channels``/``bytes``, even though this entity
honours them; callers who want no ffmpeg on the hot path ask for the format
alone (the default, WAV at 24 kHz) or call `async_stream_tts_audio` directly.
"""

from collections.abc import AsyncGenerator, AsyncIterable, Iterator, Mapping
import contextlib
from dataclasses import dataclass
from typing import Any, Final, Literal, Protocol

import audioop
import openai

from homeassistant.components.tts import (
    ATTR_PREFERRED_FORMAT,
    ATTR_PREFERRED_SAMPLE_BYTES,
    ATTR_PREFERRED_SAMPLE_CHANNELS,
    ATTR_PREFERRED_SAMPLE_RATE,
)
from homeassistant.exceptions import HomeAssistantError

from ..const import DOMAIN, RECOMMENDED_SPEED
from ..protocol.codec import CodecError, PcmResampler, WavStreamDecoder, wav_header
from ..sentences.lookahead import DEFAULT_LOOKAHEAD, synthesize_in_order
from ..sentences.marks import SpeechMarks
from ..sentences.splitter import split_stream
from .answers import AnswerError

type ProviderFormat = Literal["wav", "mp3", "opus", "aac"]

# The rate every answer is brought to; what services send for response_format="pcm".
PROVIDER_SAMPLE_RATE: Final = 24000
PROVIDER_BYTES_PER_SECOND: Final = PROVIDER_SAMPLE_RATE * 2
DEFAULT_FORMAT: Final = "wav"
RAW_FORMATS: Final = frozenset({"pcm", "raw", "s16le"})
PASSTHROUGH_FORMATS: Final[Mapping[str, ProviderFormat]] = {
    "mp3": "mp3",
    "opus": "opus",
    "ogg": "opus",
    "oga": "opus",
    "aac": "aac",
}
SAMPLE_WIDTHS: Final = (1, 2, 3, 4)
# Enough of an answer's start to tell a WAV (or compressed audio) from raw PCM.
SNIFF_BYTES: Final = 4
# How the containers that may come instead of WAV or PCM start, and their names.
# (Bare MPEG frame sync is no signature: raw PCM can start with the same bytes.)
COMPRESSED_SIGNATURES: Final[Mapping[bytes, str]] = {
    b"ID3": "mp3",
    b"OggS": "Ogg",
    b"fLaC": "FLAC",
}
MAX_SAMPLE_RATE: Final = 192000
# Seconds the service may stay silent (connecting, or between audio chunks).
SPEECH_TIMEOUT: Final = 30.0

ERROR_UNSUPPORTED_AUDIO: Final = "unsupported_audio_format"


@dataclass(frozen=True, slots=True)
class AudioOutput:
    """What the caller gets and what the service is asked for.

    Attributes:
        extension: Format name handed back to HA (the one the caller asked for).
        provider_format: ``response_format`` asked of the service: ``wav`` for
            PCM output (decoded here), else the compressed format passed on.
        rate: Sample rate of PCM output, in Hz.
        channels: Channels of PCM output (the mono voice is duplicated).
        width: Bytes per sample of PCM output (8-bit is unsigned, as in WAV).
        wav: PCM output is framed as a streamed WAV file.
    """

    extension: str
    provider_format: ProviderFormat
    rate: int = PROVIDER_SAMPLE_RATE
    channels: int = 1
    width: int = 2
    wav: bool = False

    @property
    def passthrough(self) -> bool:
        """Return whether the service's audio is handed on as it comes."""
        return self.provider_format != "wav"


def audio_output(options: Mapping[str, Any]) -> AudioOutput:
    """Return the output that honours HA's ``preferred_*`` options.

    Raises:
        HomeAssistantError: A sample rate, channel count or width that cannot
            be produced.
    """
    extension = str(options.get(ATTR_PREFERRED_FORMAT) or DEFAULT_FORMAT).lower()
    if extension in PASSTHROUGH_FORMATS:
        return AudioOutput(extension, PASSTHROUGH_FORMATS[extension])
    if extension not in RAW_FORMATS:
        extension = "wav"  # HA converts it to anything else the caller wanted
    try:
        rate = int(options.get(ATTR_PREFERRED_SAMPLE_RATE) or PROVIDER_SAMPLE_RATE)
        channels = int(options.get(ATTR_PREFERRED_SAMPLE_CHANNELS) or 1)
        width = int(options.get(ATTR_PREFERRED_SAMPLE_BYTES) or 2)
    except (TypeError, ValueError) as err:
        raise _unsupported(options) from err
    if not 0 < rate <= MAX_SAMPLE_RATE or channels not in (1, 2):
        raise _unsupported(options)
    if width not in SAMPLE_WIDTHS:
        raise _unsupported(options)
    return AudioOutput(extension, "wav", rate, channels, width, extension == "wav")


def _unsupported(options: Mapping[str, Any]) -> HomeAssistantError:
    described = ", ".join(
        f"{key}={options.get(key)}"
        for key in (
            ATTR_PREFERRED_FORMAT,
            ATTR_PREFERRED_SAMPLE_RATE,
            ATTR_PREFERRED_SAMPLE_CHANNELS,
            ATTR_PREFERRED_SAMPLE_BYTES,
        )
        if options.get(key) is not None
    )
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key=ERROR_UNSUPPORTED_AUDIO,
        translation_placeholders={"format": described},
    )


class PcmConverter:
    """Converts the service's 24 kHz mono s16le stream to an `AudioOutput`."""

    def __init__(self, output: AudioOutput) -> None:
        """Create a converter for one continuous stream."""
        self._output = output
        self._resampler = PcmResampler(PROVIDER_SAMPLE_RATE, output.rate)

    def convert(self, pcm: bytes) -> bytes:
        """Convert the next chunk (any length); returns what is ready."""
        return self._layout(self._resampler.resample(pcm))

    def flush(self) -> bytes:
        """Return the resampler's tail at the end of the stream."""
        return self._layout(self._resampler.flush())

    def _layout(self, pcm: bytes) -> bytes:
        width = self._output.width
        if not pcm or (width == 2 and self._output.channels == 1):
            return pcm
        if width != 2:
            pcm = audioop.lin2lin(pcm, 2, width)
        if width == 1:
            pcm = audioop.bias(pcm, 1, 128)  # 8-bit PCM is unsigned
        if self._output.channels == 2:
            pcm = audioop.tostereo(pcm, width, 1, 1)
        return pcm


class _Decoder(Protocol):
    """Turns the bytes of one answer into 24 kHz mono s16le."""

    def feed(self, data: bytes) -> bytes:
        """Decode the next bytes; return the PCM ready so far."""
        ...

    def flush(self) -> bytes:
        """End the answer; return what is left."""
        ...


class _RawPcmDecoder:
    """Raw PCM at `PROVIDER_SAMPLE_RATE`: whole samples are handed on."""

    def __init__(self) -> None:
        """Pass 24 kHz mono s16le through, keeping a split sample for later."""
        self._samples = PcmResampler(PROVIDER_SAMPLE_RATE, PROVIDER_SAMPLE_RATE)

    def feed(self, data: bytes) -> bytes:
        """Return the whole samples of ``data`` (and of what was kept)."""
        return self._samples.resample(data)

    def flush(self) -> bytes:
        """Drop a trailing partial sample."""
        return self._samples.flush()


class SpeechDecoder:
    """One answer's audio as 24 kHz mono s16le, by what its body is.

    The body's first bytes decide: ``RIFF`` is a WAV (its header says the
    format; sizes known, 0 or 0xFFFFFFFF; the header may be cut across chunks),
    a compressed container's signature is refused (played as PCM it would be
    noise), anything else is raw 24 kHz PCM.
    """

    def __init__(self) -> None:
        """Wait for the answer's first bytes."""
        self._start = b""
        self._decoder: _Decoder | None = None

    def feed(self, data: bytes) -> bytes:
        """Decode the next bytes of the answer; return the PCM ready so far.

        Raises:
            AnswerError: The answer is compressed audio or a broken WAV.
        """
        if self._decoder is not None:
            with _unreadable_wav():
                return self._decoder.feed(data)
        self._start += data
        return self._begin() if len(self._start) >= SNIFF_BYTES else b""

    def flush(self) -> bytes:
        """End the answer; return the last PCM.

        Raises:
            AnswerError: The answer is compressed audio, or ended inside its
                WAV header.
        """
        pcm = self._begin() if self._decoder is None and self._start else b""
        if self._decoder is None:
            return pcm
        with _unreadable_wav():
            return pcm + self._decoder.flush()

    def _begin(self) -> bytes:
        """Pick the decoder by the answer's start and decode that start."""
        start, self._start = self._start, b""
        self._decoder = _decoder_for(start)
        with _unreadable_wav():
            return self._decoder.feed(start)


def _decoder_for(start: bytes) -> _Decoder:
    """Return the decoder for an answer that begins with ``start``.

    Raises:
        AnswerError: ``start`` is a compressed container's.
    """
    if start.startswith(b"RIFF"):
        return WavStreamDecoder(PROVIDER_SAMPLE_RATE)
    for signature, name in COMPRESSED_SIGNATURES.items():
        if start.startswith(signature):
            raise AnswerError(
                f"The service sent {name} audio where WAV was asked for; pick a "
                "voice model that offers WAV or PCM"
            )
    return _RawPcmDecoder()


@contextlib.contextmanager
def _unreadable_wav() -> Iterator[None]:
    """Raise a WAV the codec cannot read as the service's fault."""
    try:
        yield
    except CodecError as err:
        raise AnswerError(f"The service sent a WAV that cannot be read: {err}") from err


async def decode_speech(answer: AsyncGenerator[bytes]) -> AsyncGenerator[bytes]:
    """Yield one answer's audio as 24 kHz mono s16le (see `SpeechDecoder`).

    Closing the generator closes the answer.
    """
    decoder = SpeechDecoder()
    async with contextlib.aclosing(answer):
        async for chunk in answer:
            if pcm := decoder.feed(chunk):
                yield pcm
    if tail := decoder.flush():
        yield tail


async def format_audio(
    audio: AsyncGenerator[bytes], output: AudioOutput
) -> AsyncGenerator[bytes]:
    """Turn the service's audio stream into the output format.

    PCM output takes the decoded 24 kHz mono s16le stream; a WAV header (size
    unknown, as streamed WAV has it) rides on the first audio chunk, and a
    stream without audio is an empty WAV file.
    """
    async with contextlib.aclosing(audio):
        if output.passthrough:
            async for chunk in audio:
                yield chunk
            return
        converter = PcmConverter(output)
        header = (
            wav_header(output.rate, output.channels, output.width)
            if output.wav
            else b""
        )
        async for chunk in audio:
            if pcm := converter.convert(chunk):
                yield header + pcm
                header = b""
        if tail := header + converter.flush():
            yield tail


@dataclass(frozen=True, slots=True)
class VoiceSettings:
    """How the service is asked to speak."""

    model: str
    voice: str
    speed: float = RECOMMENDED_SPEED
    instructions: str | None = None


async def stream_speech(
    client: openai.AsyncOpenAI,
    settings: VoiceSettings,
    text: str,
    response_format: ProviderFormat,
) -> AsyncGenerator[bytes]:
    """Yield the audio of ``text`` as the service streams it.

    Closing the generator closes the HTTP response.
    """
    async with client.audio.speech.with_streaming_response.create(
        model=settings.model,
        voice=settings.voice,
        input=text,
        response_format=response_format,
        speed=settings.speed,
        instructions=settings.instructions or openai.omit,
        timeout=SPEECH_TIMEOUT,
    ) as response:
        async for chunk in response.iter_bytes():
            yield chunk


def speak(
    client: openai.AsyncOpenAI,
    settings: VoiceSettings,
    deltas: AsyncIterable[str | None],
    output: AudioOutput,
    *,
    lookahead: int = DEFAULT_LOOKAHEAD,
    marks: SpeechMarks | None = None,
) -> AsyncGenerator[bytes]:
    """Return the audio of a streamed text, sentence by sentence, formatted.

    Args:
        client: The service's client.
        settings: Model, voice, speed and instructions.
        deltas: The text as it is written (LLM deltas, or one whole message).
        output: The format to produce.
        lookahead: Sentences synthesized ahead of the one streaming out.
        marks: Told where each sentence's audio starts (PCM output only: a
            compressed format passed on has no positions to tell).
    """
    sentences = (segment.text async for segment in split_stream(deltas))

    def synthesize(text: str) -> AsyncGenerator[bytes]:
        answer = stream_speech(client, settings, text, output.provider_format)
        return answer if output.passthrough else decode_speech(answer)

    on_sentence = None
    if marks is not None and not output.passthrough:
        tell = marks

        def on_sentence(text: str, pcm_before: int) -> None:
            tell.sentence_starts(text, pcm_before / PROVIDER_BYTES_PER_SECOND)

    audio = synthesize_in_order(
        sentences, synthesize, lookahead=lookahead, on_sentence=on_sentence
    )
    return format_audio(audio, output)
