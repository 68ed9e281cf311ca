"""Audio of the fake provider: uploaded WAVs, and the speech it answers with.

WAV files are read and written by the integration's own ``codec`` module (loaded
without Home Assistant, as the simulator loads it), so the fake has no WAV parser
of its own. Speech is 24 kHz mono s16le PCM, like OpenAI's ``pcm`` format, made
by a `Synthesizer`: a sine tone sized by `SpeechSettings` (scripted mode), or
``espeak-ng`` and, where it is missing, a melody (demo mode). ``ffmpeg``, where
installed, encodes the compressed formats the demo offers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
import functools
import itertools
import math
import shutil
import struct
from typing import Final, Literal, Protocol

# The one WAV reader/writer and resampler: the integration's, without HA.
from custom_components.xiaozhi.protocol import codec

from .text import Language, detect_language, tokenize

SAMPLE_RATE: Final = 24000
SAMPLE_WIDTH: Final = 2
STREAMING_WAV_SIZE: Final = 0xFFFFFFFF  # OpenAI's streamed WAV header: size unknown
# Streaming writers put one of these in the RIFF size: not a complete file.
_UNKNOWN_RIFF_SIZES: Final = frozenset({0, STREAMING_WAV_SIZE})
_RIFF_HEADER_SIZE: Final = 8

TONE_HZ: Final = 400  # divides 24000, so one period is a whole number of samples
TONE_AMPLITUDE: Final = 0.3

# What an encoder needs from ffmpeg for each compressed response_format.
FFMPEG_FORMATS: Final[Mapping[str, tuple[str, ...]]] = {
    "mp3": ("-f", "mp3"),
    "opus": ("-c:a", "libopus", "-f", "ogg"),
    "aac": ("-c:a", "aac", "-f", "adts"),
    "flac": ("-f", "flac"),
}
PCM_FORMATS: Final = ("pcm", "wav")
CONTENT_TYPES: Final[Mapping[str, str]] = {
    "pcm": "audio/pcm",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
    "aac": "audio/aac",
    "flac": "audio/flac",
}


# --------------------------------------------------------------------------
# WAV
# --------------------------------------------------------------------------


class InvalidWavError(ValueError):
    """The upload is not a complete PCM WAV."""


@dataclass(frozen=True, slots=True)
class WavFormat:
    """Format of an uploaded WAV."""

    sample_rate: int
    channels: int
    sample_width: int
    frames: int

    @property
    def duration(self) -> float:
        """Return the duration in seconds."""
        return self.frames / self.sample_rate


def read_complete_wav(data: bytes) -> tuple[WavFormat, bytes]:
    """Validate an uploaded WAV file and return its format and PCM frames.

    OpenAI wants whole files: besides what the codec checks, the RIFF size must be
    known and cover the bytes that came, and the PCM a whole number of frames.

    Raises:
        InvalidWavError: Not RIFF/WAVE, no fmt or data chunk, not PCM, or fewer
            bytes than the header announces.
    """
    try:
        wav = codec.parse_wav(data)
    except codec.CodecError as err:
        raise InvalidWavError(str(err)) from err
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if riff_size in _UNKNOWN_RIFF_SIZES:
        raise InvalidWavError("the RIFF size is unknown (a streamed WAV)")
    if riff_size + _RIFF_HEADER_SIZE > len(data):
        raise InvalidWavError("data chunk is truncated")
    block = wav.channels * wav.width
    if len(wav.pcm) % block:
        raise InvalidWavError("data chunk is truncated")
    frames = len(wav.pcm) // block
    return WavFormat(wav.rate, wav.channels, wav.width, frames), wav.pcm


def streaming_wav_header(sample_rate: int = SAMPLE_RATE) -> bytes:
    """Return the 44-byte mono s16le header OpenAI streams before WAV audio."""
    return codec.wav_header(sample_rate, 1, SAMPLE_WIDTH)


def to_mono(
    pcm: bytes, rate: int, channels: int, width: int = 2, *, rate_out: int = SAMPLE_RATE
) -> bytes:
    """Return integer PCM as mono s16le at ``rate_out`` (speech's rate by default)."""
    resampler = codec.PcmResampler(rate, rate_out, channels_in=channels, width_in=width)
    return resampler.resample(pcm) + resampler.flush()


def wav_to_mono(data: bytes, rate_out: int = SAMPLE_RATE) -> bytes:
    """Return a WAV file's audio as mono s16le at ``rate_out``.

    Tolerates the sizes of a WAV written to a pipe (as ``espeak-ng --stdout``
    does): the data chunk then runs to the end of the file.

    Raises:
        ValueError: Not a PCM RIFF/WAVE file.
    """
    wav = codec.parse_wav(data)
    return to_mono(wav.pcm, wav.rate, wav.channels, wav.width, rate_out=rate_out)


# --------------------------------------------------------------------------
# Synthesizers
# --------------------------------------------------------------------------


class SynthesisError(RuntimeError):
    """The speech synthesizer failed."""


class Synthesizer(Protocol):
    """Turns text into 24 kHz mono 16-bit PCM."""

    @property
    def label(self) -> str:
        """Return what the synthesizer is, for logs."""
        ...

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Return the PCM of ``text`` spoken with ``voice`` at ``speed``."""
        ...


type WavSizes = Literal["streaming", "zero", "exact"]
# Where split_wav_header cuts the 44-byte header: inside the fmt chunk.
WAV_HEADER_CUT: Final = 20


@dataclass(slots=True)
class SpeechSettings:
    """How ``/v1/audio/speech`` paces, sizes and frames its audio.

    The defaults answer like OpenAI; the fields after ``hold_after_chunks`` are
    switches for what roughly compatible servers do instead (see
    `fake_provider.quirks`).

    Attributes:
        first_byte_delay: Seconds from the request to the first audio chunk
            (synthesis time included).
        chunk_size: Bytes per body chunk (PCM bytes; the WAV header rides along
            with the first chunk).
        bytes_per_second: Pace chunks at this byte rate; ``None`` = no pacing.
        seconds_per_char: Tone seconds per character of input (at speed 1).
        min_seconds: Lower bound of the tone's length (at speed 1).
        hold_after_chunks: Hold the body after this many chunks until
            `FakeProvider.release`.
        content_type: Content-Type to send instead of the format's own (e.g.
            ``application/octet-stream`` for PCM or WAV, as servers that stream
            bytes without naming them do; ``audio/mpeg`` on anything, as servers
            that label every answer as their default format do).
        content_length: One body with a Content-Length instead of chunked
            transfer (servers that render the whole answer before sending it).
        chunk_sizes: Chunk sizes to cycle through instead of ``chunk_size``,
            e.g. ``range(1, 8)`` for the 1..7-byte chunks of servers that relay
            whatever their encoder's pipe yields.
        wav_sizes: The WAV header's sizes: ``streaming`` (0xFFFFFFFF, OpenAI's
            and Kokoro-FastAPI's), ``zero`` (both 0: what libsndfile writes
            before it knows, as speaches sent before a fix) or ``exact``
            (servers that render the whole file first).
        split_wav_header: Send the WAV header as two chunks of its own, cut
            inside the fmt chunk, before the audio.
    """

    first_byte_delay: float = 0.0
    chunk_size: int = 4800
    bytes_per_second: float | None = None
    seconds_per_char: float = 0.1
    min_seconds: float = 0.2
    hold_after_chunks: int | None = None
    content_type: str | None = None
    content_length: bool = False
    chunk_sizes: Sequence[int] = ()
    wav_sizes: WavSizes = "streaming"
    split_wav_header: bool = False

    def pcm_bytes(self, text: str, speed: float = 1.0) -> int:
        """Return the PCM byte length of the tone answered for ``text``."""
        seconds = max(len(text) * self.seconds_per_char, self.min_seconds) / speed
        return round(seconds * SAMPLE_RATE) * SAMPLE_WIDTH

    def wav_header(self, pcm_bytes: int) -> bytes:
        """Return the WAV header for ``pcm_bytes`` of speech, sized as set."""
        if self.wav_sizes == "exact":
            return codec.wav_header(SAMPLE_RATE, 1, SAMPLE_WIDTH, pcm_bytes)
        if self.wav_sizes == "zero":
            header = codec.wav_header(SAMPLE_RATE, 1, SAMPLE_WIDTH, 0)
            return header[:4] + bytes(4) + header[8:]
        return streaming_wav_header()

    def pieces(self, header: bytes, audio: bytes) -> list[bytes]:
        """Return the body chunks: the audio cut as set, the header in front."""
        sizes = itertools.cycle(self.chunk_sizes or (self.chunk_size,))
        pieces: list[bytes] = []
        start = 0
        while start < len(audio):
            size = next(sizes)
            pieces.append(audio[start : start + size])
            start += size
        if not header:
            return pieces
        if self.split_wav_header:
            return [header[:WAV_HEADER_CUT], header[WAV_HEADER_CUT:], *pieces]
        return [header + (pieces[0] if pieces else b""), *pieces[1:]]

    def content_type_of(self, response_format: str) -> str:
        """Return the Content-Type sent for ``response_format``."""
        return self.content_type or CONTENT_TYPES[response_format]


def tone_pcm(samples: int, sample_rate: int = SAMPLE_RATE) -> bytes:
    """Return ``samples`` of a mono s16le sine tone (``TONE_HZ``)."""
    period = sample_rate // TONE_HZ
    peak = TONE_AMPLITUDE * 32767
    one_period = struct.pack(
        f"<{period}h",
        *(round(peak * math.sin(2 * math.pi * n / period)) for n in range(period)),
    )
    repeats, rest = divmod(samples, period)
    return one_period * repeats + one_period[: rest * 2]


@dataclass(frozen=True, slots=True)
class ToneSynthesizer:
    """A sine tone as long as `SpeechSettings.pcm_bytes` says: the tests' speech."""

    settings: SpeechSettings
    label: str = "tone"

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Return the tone for ``text`` at ``speed``."""
        return tone_pcm(self.settings.pcm_bytes(text, speed) // SAMPLE_WIDTH)


# Voices that OpenAI describes as female get espeak's female variant.
FEMALE_VOICES: Final = frozenset({"coral", "nova", "sage", "shimmer", "ballad"})
ESPEAK_BASE_WPM: Final = 175
ESPEAK_VOICES: Final[Mapping[Language, str]] = {"zh": "cmn", "en": "en-us"}


class EspeakSynthesizer:
    """Real (robotic) speech from the ``espeak-ng`` program."""

    label = "espeak-ng"

    def __init__(self, command: str) -> None:
        """Use the ``espeak-ng`` executable at ``command``."""
        self.command = command

    @staticmethod
    def voice_for(text: str, voice: str) -> str:
        """Return the espeak voice: Mandarin or English, female variant if asked."""
        base = ESPEAK_VOICES[detect_language(text)]
        return base + ("+f3" if voice in FEMALE_VOICES else "")

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Run espeak-ng without blocking the event loop; return 24 kHz PCM."""
        words_per_minute = round(min(max(ESPEAK_BASE_WPM * speed, 80), 450))
        wav = await run_tool(
            (self.command, "--stdout", "--stdin", "-b", "1"),
            ("-v", self.voice_for(text, voice), "-s", str(words_per_minute)),
            text.encode(),
        )
        try:
            return await asyncio.to_thread(wav_to_mono, wav)
        except ValueError as err:
            raise SynthesisError(f"espeak-ng wrote no usable WAV: {err}") from err


async def run_tool(
    command: tuple[str, ...], options: tuple[str, ...], stdin: bytes
) -> bytes:
    """Run an audio tool on ``stdin``; return what it wrote to standard output.

    Raises:
        SynthesisError: The tool exited with an error.
    """
    process = await asyncio.create_subprocess_exec(
        *command,
        *options,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        output, errors = await process.communicate(stdin)
    except asyncio.CancelledError:
        # A client that hangs up cancels the handler: take the tool along.
        process.kill()
        await process.wait()
        raise
    if process.returncode != 0:
        raise SynthesisError(errors.decode(errors="replace").strip())
    return output


# A pentatonic scale: any sequence of its notes sounds pleasant.
MELODY_HZ: Final = (523.25, 587.33, 659.25, 783.99, 880.0)
NOTE_SECONDS: Final = 0.16
GAP_SECONDS: Final = 0.04
PAUSE_SECONDS: Final = 0.2
MELODY_AMPLITUDE: Final = 0.18 * 32767
FADE_SECONDS: Final = 0.02


def melody_pcm(text: str, speed: float = 1.0) -> bytes:
    """Return a soft melody with one note per word (or CJK character) of ``text``.

    Punctuation makes a pause, so the melody follows the rhythm of the text.
    """
    parts: list[bytes] = []
    notes = 0
    for token in tokenize(text):
        if any(character.isalnum() for character in token):
            frequency = MELODY_HZ[(notes * 3 + len(token)) % len(MELODY_HZ)]
            parts.append(note_pcm(frequency, NOTE_SECONDS / speed))
            parts.append(silence_pcm(GAP_SECONDS / speed))
            notes += 1
        else:
            parts.append(silence_pcm(PAUSE_SECONDS / speed))
    return b"".join(parts) or silence_pcm(PAUSE_SECONDS)


@functools.lru_cache(maxsize=256)
def note_pcm(frequency: float, seconds: float) -> bytes:
    """Return a sine note with short fades, so it does not click.

    Cached: a melody reuses a handful of notes, so making one costs next to nothing
    and needs no thread.
    """
    count = max(1, round(seconds * SAMPLE_RATE))
    fade = max(1, min(round(FADE_SECONDS * SAMPLE_RATE), count // 2))
    step = 2 * math.pi * frequency / SAMPLE_RATE
    samples = [
        round(
            MELODY_AMPLITUDE
            * math.sin(step * n)
            * min(1.0, n / fade, (count - 1 - n) / fade)
        )
        for n in range(count)
    ]
    return struct.pack(f"<{count}h", *samples)


def silence_pcm(seconds: float) -> bytes:
    """Return silence."""
    return bytes(SAMPLE_WIDTH * round(seconds * SAMPLE_RATE))


class MelodySynthesizer:
    """Stands in for speech when ``espeak-ng`` is not installed."""

    label = "melody (espeak-ng is not installed)"

    async def synthesize(self, text: str, voice: str, speed: float) -> bytes:
        """Return the melody of ``text``."""
        return melody_pcm(text, speed)


def default_synthesizer() -> Synthesizer:
    """Return espeak-ng when it is on ``PATH``, else the melody."""
    if command := shutil.which("espeak-ng"):
        return EspeakSynthesizer(command)
    return MelodySynthesizer()


async def encode_with_ffmpeg(pcm: bytes, response_format: str, ffmpeg: str) -> bytes:
    """Encode 24 kHz mono PCM into a compressed format with ffmpeg.

    Raises:
        SynthesisError: ffmpeg failed.
    """
    raw_input = ("-f", "s16le", "-ar", str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:0")
    return await run_tool(
        (ffmpeg, "-hide_banner", "-loglevel", "error"),
        (*raw_input, *FFMPEG_FORMATS[response_format], "pipe:1"),
        pcm,
    )
