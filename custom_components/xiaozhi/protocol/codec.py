"""Audio codecs for Xiaozhi devices: Opus (via PyAV's bundled libopus), PCM, WAV.

Every PyAV call of the integration lives here. PCM is always signed 16-bit
little-endian (``s16le``) unless a function says otherwise.

Cost, measured on the development machine (a busy 2-core VM, PyAV 19): encoding
one 60 ms packet at 24 kHz takes 0.2-0.4 ms (under 1 % of a core in real time),
decoding one 60 ms uplink packet including resampling to 16 kHz about 0.08 ms,
resampling a 60 ms chunk about 0.02 ms, creating an encoder about 0.3 ms. Calling
these once per frame from the event loop is fine; do not hand a whole utterance to
one call there (50 frames of encoding would block the loop for 10-20 ms).

Objects here keep codec state between calls and are not thread-safe: use one per
audio stream.
"""

from fractions import Fraction
import struct
from typing import Final, NamedTuple

import av
from av.audio.codeccontext import AudioCodecContext
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.error import FFmpegError

from .firmware import DOWNLINK_SAMPLE_RATE

OPUS_SAMPLE_RATES: Final = frozenset({8000, 12000, 16000, 24000, 48000})
OPUS_FRAME_DURATIONS_MS: Final = frozenset({10, 20, 40, 60, 80, 100, 120})
# libopus always decodes at 48 kHz in FFmpeg's wrapper, whatever rate is asked for.
OPUS_DECODE_RATE: Final = 48000
# A 120 ms packet at the 510 kbit/s maximum bit rate, plus framing slack.
MAX_OPUS_PACKET_BYTES: Final = 7680
DEFAULT_OPUS_BITRATE: Final = 32000

_SAMPLE_WIDTH: Final = 2  # bytes per s16 sample
_PCM_FORMATS: Final = {1: "u8", 2: "s16", 4: "s32"}


class CodecError(ValueError):
    """Audio data could not be decoded, encoded or parsed."""


class WavIncompleteError(CodecError):
    """The data looks like the start of a WAV file but the header is not complete."""


def _frame_from_pcm(
    pcm: bytes, width: int, channels: int, rate: int, pts: int
) -> AudioFrame:
    """Wrap interleaved PCM (a whole number of sample frames) in an AudioFrame."""
    frame = AudioFrame(
        format=_PCM_FORMATS[width],
        layout=f"{channels}c",
        samples=len(pcm) // (width * channels),
    )
    frame.planes[0].update(pcm)
    frame.sample_rate = rate
    frame.pts = pts
    frame.time_base = Fraction(1, rate)
    return frame


def _frame_pcm(frame: AudioFrame) -> bytes:
    """Return the samples of a mono s16 frame (the plane may carry padding)."""
    return bytes(frame.planes[0])[: frame.samples * _SAMPLE_WIDTH]


def _to_mono_s16(resampler: AudioResampler, frame: AudioFrame | None) -> bytes:
    """Push a frame (``None`` drains) through a mono s16 resampler, join the output."""
    # A passthrough resampler hands back its input, None included.
    return b"".join(_frame_pcm(out) for out in resampler.resample(frame) if out)


def _mono_s16_resampler(rate: int) -> AudioResampler:
    return AudioResampler(format="s16", layout="mono", rate=rate)


class PcmResampler:
    """Streaming converter from any PCM stream to mono s16le at another rate.

    Keeps filter state across chunks, so chunk boundaries leave no clicks; output
    lags input by the filter delay (a few samples) until :meth:`flush`. Chunks may
    split a sample anywhere: the odd bytes are kept for the next call.
    """

    def __init__(
        self, rate_in: int, rate_out: int, *, channels_in: int = 1, width_in: int = 2
    ) -> None:
        """Create a resampler.

        Args:
            rate_in: Input sample rate in Hz.
            rate_out: Output sample rate in Hz.
            channels_in: Interleaved input channels (downmixed to mono).
            width_in: Input bytes per sample: 1 (unsigned), 2 or 4 (signed).

        Raises:
            ValueError: Non-positive rate or channel count, unsupported width.
        """
        if rate_in <= 0 or rate_out <= 0:
            raise ValueError(f"sample rates must be positive: {rate_in}, {rate_out}")
        if channels_in <= 0:
            raise ValueError(f"channel count must be positive: {channels_in}")
        if width_in not in _PCM_FORMATS:
            raise ValueError(f"unsupported sample width {width_in}")
        self.rate_in = rate_in
        self.rate_out = rate_out
        self._channels = channels_in
        self._width = width_in
        self._block = channels_in * width_in
        self._passthrough = rate_in == rate_out and channels_in == 1 and width_in == 2
        self._pending = b""
        self._pts = 0
        self._resampler: AudioResampler | None = None

    def resample(self, pcm: bytes) -> bytes:
        """Convert the next chunk; returns what the filter has ready (maybe empty)."""
        data = self._pending + bytes(pcm)
        whole = len(data) - len(data) % self._block
        self._pending = data[whole:]
        if not whole:
            return b""
        if self._passthrough:
            return data[:whole]
        if self._resampler is None:
            self._resampler = _mono_s16_resampler(self.rate_out)
        frame = _frame_from_pcm(
            data[:whole], self._width, self._channels, self.rate_in, self._pts
        )
        self._pts += frame.samples
        return _to_mono_s16(self._resampler, frame)

    def flush(self) -> bytes:
        """Return the filter's remaining output and start over for a new stream.

        A trailing partial sample is dropped.
        """
        resampler, self._resampler = self._resampler, None
        self._pending = b""
        self._pts = 0
        if resampler is None:
            return b""
        return _to_mono_s16(resampler, None)


class OpusDecoder:
    """Decoder of single Opus packets (any duration) to mono s16le PCM."""

    def __init__(self, sample_rate_out: int = 16000) -> None:
        """Create a decoder.

        Args:
            sample_rate_out: Rate of the PCM returned, in Hz.

        Raises:
            ValueError: Non-positive rate.
        """
        if sample_rate_out <= 0:
            raise ValueError(f"sample rate must be positive: {sample_rate_out}")
        self.sample_rate_out = sample_rate_out
        self._codec = self._new_codec()
        self._resampler = _mono_s16_resampler(sample_rate_out)

    @staticmethod
    def _new_codec() -> AudioCodecContext:
        codec = av.CodecContext.create("libopus", "r")
        codec.layout = "mono"  # libopus downmixes stereo packets
        codec.open()
        return codec

    def decode(self, packet: bytes) -> bytes:
        """Decode one Opus packet.

        The first packets of a stream return a few samples less than their
        duration (resampling filter delay); :meth:`flush` returns the rest.

        Raises:
            CodecError: Empty, oversized or invalid packet. The decoder stays
                usable: later good packets decode normally.
        """
        if not packet:
            raise CodecError("empty Opus packet")
        if len(packet) > MAX_OPUS_PACKET_BYTES:
            raise CodecError(f"Opus packet of {len(packet)} bytes is too large")
        try:
            frames = self._codec.decode(av.Packet(bytes(packet)))
        except FFmpegError as err:
            raise CodecError(f"invalid Opus packet: {err}") from None
        return b"".join(_to_mono_s16(self._resampler, frame) for frame in frames)

    def flush(self) -> bytes:
        """Return the resampler tail at the end of a stream and reset for the next."""
        tail = _to_mono_s16(self._resampler, None)
        self.reset()
        return tail

    def reset(self) -> None:
        """Forget all state (dropping any tail), e.g. when a new utterance starts."""
        self._codec = self._new_codec()
        self._resampler = _mono_s16_resampler(self.sample_rate_out)


class OpusEncoder:
    """Encoder of a mono s16le PCM stream into Opus packets of one fixed duration.

    Feed PCM in chunks of any length; complete packets come out as soon as a full
    frame is buffered (libopus adds no packet delay, only 6.5 ms of in-band
    lookahead). The packets decode with the firmware's decoder, which expects
    ``sample_rate`` mono and ``frame_ms`` packets as announced in the server hello.
    """

    def __init__(
        self,
        sample_rate: int = 24000,
        frame_ms: int = 60,
        *,
        input_rate: int | None = None,
        bitrate: int = DEFAULT_OPUS_BITRATE,
    ) -> None:
        """Create an encoder.

        Args:
            sample_rate: Opus sample rate (8, 12, 16, 24 or 48 kHz).
            frame_ms: Packet duration: 10, 20, 40, 60, 80, 100 or 120 ms.
            input_rate: Rate of the PCM fed in, if not ``sample_rate``; it is then
                resampled with a :class:`PcmResampler`.
            bitrate: Target bit rate in bit/s.

        Raises:
            ValueError: Unsupported rate or frame duration, non-positive bit rate.
        """
        if sample_rate not in OPUS_SAMPLE_RATES:
            raise ValueError(f"Opus cannot encode at {sample_rate} Hz")
        if frame_ms not in OPUS_FRAME_DURATIONS_MS:
            raise ValueError(f"unsupported Opus frame duration {frame_ms} ms")
        if bitrate <= 0:
            raise ValueError(f"bit rate must be positive: {bitrate}")
        self.sample_rate = sample_rate
        self.frame_ms = frame_ms
        self.frame_samples = sample_rate * frame_ms // 1000
        self.frame_bytes = self.frame_samples * _SAMPLE_WIDTH
        self._bitrate = bitrate
        self._resampler = (
            PcmResampler(input_rate, sample_rate)
            if input_rate is not None and input_rate != sample_rate
            else None
        )
        self._buffer = bytearray()
        self._pts = 0
        self._codec = self._new_codec()

    def _new_codec(self) -> AudioCodecContext:
        codec = av.CodecContext.create("libopus", "w")
        codec.sample_rate = self.sample_rate
        codec.layout = "mono"
        codec.format = "s16"
        codec.bit_rate = self._bitrate
        codec.options = {"frame_duration": str(self.frame_ms)}
        codec.open()
        return codec

    def encode(self, pcm: bytes) -> list[bytes]:
        """Buffer PCM and return every complete packet (possibly none)."""
        if self._resampler is not None:
            pcm = self._resampler.resample(pcm)
        self._buffer += pcm
        return self._encode_whole_frames()

    def _encode_whole_frames(self) -> list[bytes]:
        packets: list[bytes] = []
        while len(self._buffer) >= self.frame_bytes:
            chunk = bytes(self._buffer[: self.frame_bytes])
            del self._buffer[: self.frame_bytes]
            frame = _frame_from_pcm(
                chunk, _SAMPLE_WIDTH, 1, self.sample_rate, self._pts
            )
            self._pts += self.frame_samples
            packets.extend(bytes(p) for p in self._codec.encode(frame))
        return packets

    def flush(self) -> list[bytes]:
        """End the stream: pad the tail with silence and drain the lookahead.

        Returns the last packets (each a full frame; the final one carries the
        lookahead tail, mostly silence). The encoder then starts a new stream, so
        call this once per stream, not between sentences of one reply.
        """
        if self._resampler is not None:
            self._buffer += self._resampler.flush()
        # A trailing odd byte cannot be a sample.
        del self._buffer[len(self._buffer) - len(self._buffer) % _SAMPLE_WIDTH :]
        if self._buffer:
            self._buffer += bytes(-len(self._buffer) % self.frame_bytes)
        packets = self._encode_whole_frames()
        if self._pts:
            packets.extend(bytes(p) for p in self._codec.encode(None))
        self.reset()
        return packets

    def reset(self) -> None:
        """Drop buffered audio and start a new stream."""
        self._buffer.clear()
        self._pts = 0
        if self._resampler is not None:
            self._resampler.flush()
        self._codec = self._new_codec()


# ---------------------------------------------------------------- WAV

_RIFF: Final = struct.Struct("<4sI4s")
_CHUNK: Final = struct.Struct("<4sI")
_FMT: Final = struct.Struct("<HHIIHH")
_WAVE_FORMAT_PCM: Final = 1
_WAVE_FORMAT_EXTENSIBLE: Final = 0xFFFE
# Streaming writers put one of these where the size is not known yet.
_UNKNOWN_SIZES: Final = frozenset({0, 0xFFFFFFFF})
_MAX_DATA_SIZE: Final = 0xFFFFFFFF - 36


class WavInfo(NamedTuple):
    """Format and samples of a WAV file (a tuple: ``rate, channels, width, pcm``)."""

    rate: int
    channels: int
    width: int
    pcm: bytes


def wav_header(
    rate: int, channels: int = 1, width: int = 2, data_size: int | None = None
) -> bytes:
    """Return a 44-byte PCM WAV header.

    Args:
        rate: Sample rate in Hz.
        channels: Interleaved channels.
        width: Bytes per sample.
        data_size: Bytes of PCM that follow; ``None`` for a stream of unknown
            length, written as 0xFFFFFFFF in both size fields (FFmpeg and most
            decoders then read to the end).

    Raises:
        ValueError: Non-positive rate, channels or width, or a size beyond 4 GiB.
    """
    if rate <= 0 or channels <= 0 or width <= 0:
        raise ValueError(f"invalid WAV format: {rate} Hz, {channels} ch, {width} B")
    if data_size is None:
        riff_size = data_chunk_size = 0xFFFFFFFF
    elif 0 <= data_size <= _MAX_DATA_SIZE:
        data_chunk_size = data_size
        riff_size = 36 + data_size + data_size % 2
    else:
        raise ValueError(f"invalid WAV data size {data_size}")
    block_align = channels * width
    return (
        _RIFF.pack(b"RIFF", riff_size, b"WAVE")
        + _CHUNK.pack(b"fmt ", _FMT.size)
        + _FMT.pack(
            _WAVE_FORMAT_PCM, channels, rate, rate * block_align, block_align, width * 8
        )
        + _CHUNK.pack(b"data", data_chunk_size)
    )


def pcm_to_wav(pcm: bytes, rate: int, channels: int = 1, width: int = 2) -> bytes:
    """Wrap PCM in a complete WAV file (padded to even length as RIFF requires)."""
    return wav_header(rate, channels, width, len(pcm)) + pcm + bytes(len(pcm) % 2)


def _parse_fmt(body: bytes) -> tuple[int, int, int]:
    tag, channels, rate, _, _, bits = _FMT.unpack_from(body)
    if tag == _WAVE_FORMAT_EXTENSIBLE and len(body) >= 26:
        # The real format tag opens the SubFormat GUID at offset 24.
        (tag,) = struct.unpack_from("<H", body, 24)
    if tag != _WAVE_FORMAT_PCM:
        raise CodecError(f"unsupported WAV encoding (format tag {tag:#x}), not PCM")
    if channels == 0 or rate == 0 or bits == 0 or bits % 8:
        raise CodecError(f"invalid WAV format: {rate} Hz, {channels} ch, {bits} bit")
    return rate, channels, bits // 8


class WavLayout(NamedTuple):
    """Where a WAV file's samples are, and their format.

    Attributes:
        rate: Sample rate in Hz.
        channels: Interleaved channels.
        width: Bytes per sample.
        data_start: Offset of the first sample (the data chunk's body).
        data_size: The data chunk's declared size; None when unknown (a stream).
    """

    rate: int
    channels: int
    width: int
    data_start: int
    data_size: int | None


def wav_layout(data: bytes) -> WavLayout:
    """Read a PCM WAV header: the format and where the samples start.

    ``data`` may be a whole file or the start of a streamed one; the header must
    be complete up to the data chunk's own header.

    Raises:
        WavIncompleteError: The data is a prefix of a WAV header; retry with more.
        CodecError: Not a RIFF/WAVE file, not integer PCM, or no data chunk.
    """
    data = bytes(data)
    if len(data) < _RIFF.size:
        if b"RIFF".startswith(data[:4]):
            raise WavIncompleteError("WAV header incomplete")
        raise CodecError("not a WAV file")
    riff, _, wave = _RIFF.unpack_from(data)
    if riff != b"RIFF" or wave != b"WAVE":
        raise CodecError("not a WAV file")
    offset = _RIFF.size
    audio_format: tuple[int, int, int] | None = None
    while True:
        if offset + _CHUNK.size > len(data):
            raise WavIncompleteError("WAV header incomplete: no data chunk yet")
        chunk_id, size = _CHUNK.unpack_from(data, offset)
        body_start = offset + _CHUNK.size
        if chunk_id == b"data":
            if audio_format is None:
                raise CodecError("WAV data chunk before fmt chunk")
            declared = None if size in _UNKNOWN_SIZES else size
            return WavLayout(*audio_format, body_start, declared)
        if chunk_id == b"fmt ":
            if size < _FMT.size:
                raise CodecError(f"WAV fmt chunk of {size} bytes is too short")
            if body_start + size > len(data):
                raise WavIncompleteError("WAV header incomplete: fmt chunk cut")
            audio_format = _parse_fmt(data[body_start : body_start + size])
        offset = body_start + size + size % 2


def parse_wav(data: bytes) -> WavInfo:
    """Parse a PCM WAV file, or the start of a streamed one.

    Tolerant of streaming: a data size of 0 or 0xFFFFFFFF, or larger than what is
    present, means "everything that follows". The PCM may then end with a partial
    sample frame, to be completed by the next chunk of the stream.

    Raises:
        WavIncompleteError: The data is a prefix of a WAV header; retry with more.
        CodecError: Not a RIFF/WAVE file, not integer PCM, or no data chunk.
    """
    data = bytes(data)
    layout = wav_layout(data)
    end = len(data)
    if layout.data_size is not None:
        end = min(end, layout.data_start + layout.data_size)
    return WavInfo(
        layout.rate, layout.channels, layout.width, data[layout.data_start : end]
    )


class WavStreamDecoder:
    """Incremental decoder of a WAV byte stream to mono s16le PCM at one rate.

    The stream is one WAV file, possibly of unknown length, or several files
    back to back (each must then declare its data size), as Home Assistant's
    TTS streams carry them. Bytes after a sized file that do not start another
    one (trailing metadata chunks) are ignored.
    """

    def __init__(self, rate_out: int = DOWNLINK_SAMPLE_RATE) -> None:
        """Create a decoder producing PCM at ``rate_out`` Hz (the device's, by default)."""
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
            layout = wav_layout(bytes(self._header))
        except WavIncompleteError:
            return b""
        except CodecError:
            if not self._files:
                raise
            self._ignoring = True  # trailing chunks of the last file
            return b""
        header = bytes(self._header)
        self._header.clear()
        self._remaining = layout.data_size
        self._pad = 0 if layout.data_size is None else layout.data_size % 2
        try:
            self._resampler = PcmResampler(
                layout.rate,
                self._rate_out,
                channels_in=layout.channels,
                width_in=layout.width,
            )
        except ValueError as err:
            raise CodecError(f"unsupported WAV audio: {err}") from err
        self._files += 1
        return header[layout.data_start :]

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
