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
`codec.PcmResampler`, which costs far less than spawning ffmpeg per sentence.

HA's ResultStream may carry one WAV file with an unknown size (a streaming
engine) or several WAV files back to back (each with its size); both are
handled by `WavStreamDecoder`.
"""

from collections.abc import AsyncGenerator, Mapping
import contextlib
import struct
from typing import Any, Final

from homeassistant.components import tts
from homeassistant.core import HomeAssistant

from ..protocol.codec import CodecError, PcmResampler, WavIncompleteError, parse_wav

SPEECH_SAMPLE_RATE: Final = 24000
WAV_FORMAT: Final = "wav"

# Options that would make HA pipe every result through ffmpeg (see above).
_FFMPEG_OPTIONS: Final = (
    tts.ATTR_PREFERRED_SAMPLE_RATE,
    tts.ATTR_PREFERRED_SAMPLE_CHANNELS,
    tts.ATTR_PREFERRED_SAMPLE_BYTES,
    tts.ATTR_PREFERRED_BITRATE,
)
_RIFF_HEADER_SIZE: Final = 12
_CHUNK_HEADER: Final = struct.Struct("<4sI")
# What streaming writers put in the data size when it is not known (as codec).
_UNKNOWN_DATA_SIZES: Final = frozenset({0, 0xFFFFFFFF})


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


def _data_chunk_span(header: bytes) -> tuple[int, int]:
    """Return where the data chunk's body starts and its declared size.

    ``header`` is a WAV prefix that `parse_wav` accepted, so the chunk is there.
    """
    offset = _RIFF_HEADER_SIZE
    while True:
        chunk_id, size = _CHUNK_HEADER.unpack_from(header, offset)
        offset += _CHUNK_HEADER.size
        if chunk_id == b"data":
            return offset, size
        offset += size + size % 2


class WavStreamDecoder:
    """Incremental decoder of a WAV byte stream to mono s16le PCM at one rate.

    The stream is one WAV file, possibly of unknown length, or several files
    back to back (each must then declare its data size). Bytes after a sized
    file that do not start another one (trailing metadata chunks) are ignored.
    `codec.parse_wav` validates each header; this class only tracks where the
    headers and data chunks are, which `parse_wav` does not report.
    """

    def __init__(self, rate_out: int = SPEECH_SAMPLE_RATE) -> None:
        """Create a decoder producing PCM at ``rate_out`` Hz."""
        self._rate_out = rate_out
        self._reset()

    def _reset(self) -> None:
        self._header = bytearray()
        self._resampler: PcmResampler | None = None
        self._remaining: int | None = None  # data bytes left; None: to the end
        self._pad = 0  # RIFF pads odd-sized chunks with one byte
        self._files = 0
        self._ignoring = False

    def feed(self, data: bytes) -> bytes:
        """Decode the next bytes; returns the PCM ready so far (maybe empty).

        Raises:
            CodecError: The stream is not PCM WAV.
        """
        pcm = bytearray()
        rest = bytes(data)
        while rest and not self._ignoring:
            if self._resampler is None:
                rest = self._read_header(rest)
            else:
                rest = self._read_data(rest, pcm)
        return bytes(pcm)

    def flush(self) -> bytes:
        """End the stream: return the resampler's tail and reset.

        Raises:
            CodecError: The stream ended inside the first file's header.
        """
        tail = self._resampler.flush() if self._resampler is not None else b""
        cut_header = bool(self._header) and not self._files
        self._reset()
        if cut_header:
            raise CodecError("TTS audio ended inside its WAV header")
        return tail

    def _read_header(self, data: bytes) -> bytes:
        skip, self._pad = min(self._pad, len(data)), 0
        self._header += data[skip:]
        try:
            info = parse_wav(bytes(self._header))
        except WavIncompleteError:
            return b""
        except CodecError:
            if not self._files:
                raise
            self._ignoring = True  # trailing chunks of the last file
            return b""
        header = bytes(self._header)
        self._header.clear()
        start, size = _data_chunk_span(header)
        self._remaining = None if size in _UNKNOWN_DATA_SIZES else size
        self._pad = 0 if self._remaining is None else size % 2
        try:
            self._resampler = PcmResampler(
                info.rate,
                self._rate_out,
                channels_in=info.channels,
                width_in=info.width,
            )
        except ValueError as err:
            raise CodecError(f"unsupported WAV audio: {err}") from err
        self._files += 1
        return header[start:]

    def _read_data(self, data: bytes, pcm: bytearray) -> bytes:
        assert self._resampler is not None
        if self._remaining is None:
            pcm += self._resampler.resample(data)
            return b""
        take, rest = data[: self._remaining], data[self._remaining :]
        self._remaining -= len(take)
        pcm += self._resampler.resample(take)
        if not self._remaining:
            pcm += self._resampler.flush()
            self._resampler = None
        return rest
