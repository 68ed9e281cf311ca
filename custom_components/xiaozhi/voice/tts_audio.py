"""24 kHz mono PCM from any Home Assistant TTS engine.

Speech is requested through HA's public streaming API
(`homeassistant.components.tts.async_create_stream` and its ``ResultStream``),
so every engine works the same way: entities with or without streaming input,
legacy providers, HA's TTS cache.

Format. HA is asked for WAV only (``preferred_format``). It converts with
ffmpeg when the engine produces another container (mp3, ogg...), but it would
*also* run ffmpeg for every request that names a sample rate, channel count or
sample width, even when the engine honours them itself
(``SpeechManager._async_generate_tts_audio`` in HA 2026.10: ``needs_conversion``
is true whenever one of them is set). So those are never asked for: the WAV is
parsed here as it streams and brought to 24 kHz mono s16le with
`protocol.codec.PcmResampler`, which costs far less than spawning ffmpeg per sentence.

HA's ResultStream may carry one WAV file with an unknown size (a streaming
engine) or several WAV files back to back (each with its size); both are
handled by `protocol.codec.WavStreamDecoder`.
"""

from collections.abc import AsyncGenerator, Mapping
import contextlib
from typing import Any, Final

from homeassistant.components import tts
from homeassistant.core import HomeAssistant

from ..protocol.codec import WavStreamDecoder

SPEECH_SAMPLE_RATE: Final = 24000
WAV_FORMAT: Final = "wav"

# Options that would make HA pipe every result through ffmpeg (see above).
_FFMPEG_OPTIONS: Final = (
    tts.ATTR_PREFERRED_SAMPLE_RATE,
    tts.ATTR_PREFERRED_SAMPLE_CHANNELS,
    tts.ATTR_PREFERRED_SAMPLE_BYTES,
    tts.ATTR_PREFERRED_BITRATE,
)


class TtsError(Exception):
    """The TTS engine failed, or sent audio that could not be decoded."""


def wav_request_options(options: Mapping[str, Any] | None) -> dict[str, Any]:
    """Return the TTS options asking HA for WAV without forcing an ffmpeg pass.

    Args:
        options: The caller's engine options (voice...); ``preferred_*``
            sample options in it are dropped, see the module docstring.
    """
    request = {
        key: value
        for key, value in (options or {}).items()
        if key not in _FFMPEG_OPTIONS
    }
    request[tts.ATTR_PREFERRED_FORMAT] = WAV_FORMAT
    return request


def open_tts_stream(
    hass: HomeAssistant,
    engine: str,
    language: str | None,
    options: Mapping[str, Any] | None,
) -> tts.ResultStream:
    """Create a ResultStream for ``engine`` that delivers WAV.

    Nothing is synthesized until a message (or message stream) is set on it.

    Raises:
        TtsError: Unknown engine, unsupported language or invalid options.
    """
    try:
        return tts.async_create_stream(
            hass, engine, language, wav_request_options(options)
        )
    except Exception as err:
        raise TtsError(f"cannot use TTS engine {engine}: {err}") from err


def start_message(stream: tts.ResultStream, text: str) -> None:
    """Start synthesizing ``text`` at once; HA runs it in a task of its own.

    Raises:
        TtsError: The engine cannot be used.
    """
    try:
        stream.async_set_message(text)
    except Exception as err:
        raise TtsError(f"cannot start TTS: {err}") from err


def start_message_stream(stream: tts.ResultStream, texts: AsyncGenerator[str]) -> None:
    """Start synthesizing a text stream; HA's task pulls ``texts`` as it goes.

    Raises:
        TtsError: The engine cannot be used.
    """
    try:
        stream.async_set_message_stream(texts)
    except Exception as err:
        raise TtsError(f"cannot start TTS: {err}") from err


async def pcm_from_stream(
    stream: tts.ResultStream, rate: int = SPEECH_SAMPLE_RATE
) -> AsyncGenerator[bytes]:
    """Yield a ResultStream's audio as mono s16le PCM at ``rate``, as it arrives.

    Closing the generator stops reading the stream.

    Raises:
        TtsError: The engine failed (whatever it raised) or its audio is not PCM
            WAV.
    """
    decoder = WavStreamDecoder(rate)
    try:
        async with contextlib.aclosing(stream.async_stream_result()) as chunks:
            async for chunk in chunks:
                if pcm := decoder.feed(chunk):
                    yield pcm
        tail = decoder.flush()
    except Exception as err:
        raise TtsError(f"TTS audio failed: {err}") from err
    if tail:
        yield tail
