"""Text-to-speech on the OpenAI-compatible service: the logic of the TTS entity.

A reply is spoken while it is still being written: the text stream goes through
the sentence splitter, each sentence is synthesized as soon as it is complete,
the next one's request is already running while the current one's audio streams
out (`text.lookahead.synthesize_in_order`), and audio bytes are passed on as they
arrive.

Output format. WAV and raw PCM are produced here, at whatever rate, channel
count and sample width the caller prefers: the service is asked for ``pcm``
(24 kHz mono s16le, which OpenAI-compatible services share), resampled with
`protocol.codec.PcmResampler` and framed. mp3, opus (``ogg``/``oga``) and aac are passed
through from the service as they come. Any other format gets WAV and is left to
HA's ffmpeg conversion.

Note that HA (2026.10) still pipes the stream through ffmpeg whenever a caller
sets ``preferred_sample_rate``/``channels``/``bytes``, even though this entity
honours them; callers who want no ffmpeg on the hot path ask for the format
alone (the default, WAV at 24 kHz) or call `async_stream_tts_audio` directly.
"""

from collections.abc import AsyncGenerator, AsyncIterable, Mapping
import contextlib
from dataclasses import dataclass
from typing import Any, Final, Literal

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
from ..protocol.codec import PcmResampler, wav_header
from ..sentences.lookahead import DEFAULT_LOOKAHEAD, synthesize_in_order
from ..sentences.splitter import split_stream

type ProviderFormat = Literal["pcm", "mp3", "opus", "aac"]

# What OpenAI-compatible services send for response_format="pcm".
PROVIDER_SAMPLE_RATE: Final = 24000
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
MAX_SAMPLE_RATE: Final = 192000
# Seconds the service may stay silent (connecting, or between audio chunks).
SPEECH_TIMEOUT: Final = 30.0

ERROR_UNSUPPORTED_AUDIO: Final = "unsupported_audio_format"


@dataclass(frozen=True, slots=True)
class AudioOutput:
    """What the caller gets and what the service is asked for.

    Attributes:
        extension: Format name handed back to HA (the one the caller asked for).
        provider_format: ``response_format`` asked of the service.
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
    return AudioOutput(extension, "pcm", rate, channels, width, extension == "wav")


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


async def format_audio(
    audio: AsyncGenerator[bytes], output: AudioOutput
) -> AsyncGenerator[bytes]:
    """Turn the service's audio stream into the output format.

    A WAV header (size unknown, as streamed WAV has it) rides on the first
    audio chunk; a stream without audio is an empty WAV file.
    """
    async with contextlib.aclosing(audio):
        if output.provider_format != "pcm":
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
) -> AsyncGenerator[bytes]:
    """Return the audio of a streamed text, sentence by sentence, formatted.

    Args:
        client: The service's client.
        settings: Model, voice, speed and instructions.
        deltas: The text as it is written (LLM deltas, or one whole message).
        output: The format to produce.
        lookahead: Sentences synthesized ahead of the one streaming out.
    """
    sentences = (segment.text async for segment in split_stream(deltas))

    def synthesize(text: str) -> AsyncGenerator[bytes]:
        return stream_speech(client, settings, text, output.provider_format)

    audio = synthesize_in_order(sentences, synthesize, lookahead=lookahead)
    return format_audio(audio, output)
