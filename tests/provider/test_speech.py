"""The speech logic of the TTS entity: output formats, the service's audio, framing."""

from collections.abc import AsyncGenerator
import struct
from typing import Any

import pytest

from homeassistant.exceptions import HomeAssistantError

from custom_components.xiaozhi.protocol.codec import parse_wav, pcm_to_wav, wav_header
from custom_components.xiaozhi.provider.answers import AnswerError
from custom_components.xiaozhi.provider.speech import (
    PROVIDER_SAMPLE_RATE,
    AudioOutput,
    PcmConverter,
    SpeechDecoder,
    audio_output,
    decode_speech,
    format_audio,
)
from tests.helpers.streams import samples


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, AudioOutput("wav", "wav", wav=True)),
        (
            {
                "preferred_format": "wav",
                "preferred_sample_rate": 16000,
                "preferred_sample_channels": 1,
                "preferred_sample_bytes": 2,
            },
            AudioOutput("wav", "wav", 16000, 1, 2, wav=True),
        ),
        (
            {"preferred_format": "pcm", "preferred_sample_rate": "8000"},
            AudioOutput("pcm", "wav", 8000),
        ),
        ({"preferred_format": "RAW"}, AudioOutput("raw", "wav")),
        ({"preferred_format": "mp3"}, AudioOutput("mp3", "mp3")),
        (
            {"preferred_format": "ogg", "preferred_sample_rate": 48000},
            AudioOutput("ogg", "opus"),
        ),
        ({"preferred_format": "aac"}, AudioOutput("aac", "aac")),
        ({"preferred_format": "flac"}, AudioOutput("wav", "wav", wav=True)),
    ],
)
def test_audio_output(options: dict[str, Any], expected: AudioOutput) -> None:
    """Preferred options map to what is produced and what is asked for."""
    assert audio_output(options) == expected


@pytest.mark.parametrize(
    "options",
    [
        {"preferred_sample_rate": "fast"},
        {"preferred_sample_rate": -1},
        {"preferred_sample_rate": 1_000_000},
        {"preferred_sample_channels": 6},
        {"preferred_format": "pcm", "preferred_sample_bytes": 8},
    ],
)
def test_audio_output_rejects_impossible_layouts(options: dict[str, Any]) -> None:
    """Layouts that cannot be produced are a translated error."""
    with pytest.raises(HomeAssistantError) as err:
        audio_output(options)

    assert err.value.translation_key == "unsupported_audio_format"
    assert err.value.translation_placeholders is not None
    assert next(iter(options.values())) is not None
    assert (
        str(next(iter(options.values())))
        in (err.value.translation_placeholders["format"])
    )


def test_pcm_converter_layouts() -> None:
    """Width and channel conversion of the service's mono s16 audio."""
    pcm = struct.pack("<4h", 0, 256, -256, 32767)

    stereo = PcmConverter(AudioOutput("wav", "wav", channels=2))
    assert samples(stereo.convert(pcm) + stereo.flush()) == [
        0,
        0,
        256,
        256,
        -256,
        -256,
        32767,
        32767,
    ]
    unsigned = PcmConverter(AudioOutput("wav", "wav", width=1))
    assert list(unsigned.convert(pcm) + unsigned.flush()) == [128, 129, 127, 255]
    wide = PcmConverter(AudioOutput("pcm", "wav", width=4))
    converted = wide.convert(pcm) + wide.flush()
    assert struct.unpack("<4i", converted) == (0, 256 << 16, -256 << 16, 32767 << 16)


async def test_format_audio_passes_compressed_audio_through() -> None:
    """mp3 (and opus, aac) chunks are handed on untouched."""

    async def mp3() -> AsyncGenerator[bytes]:
        yield b"ID3"
        yield b"frame"

    output = AudioOutput("mp3", "mp3")
    assert [chunk async for chunk in format_audio(mp3(), output)] == [b"ID3", b"frame"]


async def test_format_audio_completes_split_samples() -> None:
    """A chunk that ends inside a sample waits for the rest of it."""

    async def split_sample() -> AsyncGenerator[bytes]:
        yield b"\x01"
        yield b"\x02\x03"
        yield b"\x04"

    output = AudioOutput("pcm", "wav")
    chunks = [chunk async for chunk in format_audio(split_sample(), output)]
    assert chunks == [b"\x01\x02", b"\x03\x04"]


async def test_format_audio_without_audio_is_an_empty_wav() -> None:
    """A reply with nothing to say is still a valid WAV file."""

    async def nothing() -> AsyncGenerator[bytes]:
        no_chunks: tuple[bytes, ...] = ()
        for chunk in no_chunks:
            yield chunk

    data = b"".join(
        [
            chunk
            async for chunk in format_audio(
                nothing(), AudioOutput("wav", "wav", wav=True)
            )
        ]
    )
    wav = parse_wav(data)
    assert (wav.rate, wav.pcm) == (PROVIDER_SAMPLE_RATE, b"")
    raw = [c async for c in format_audio(nothing(), AudioOutput("pcm", "wav"))]
    assert raw == []


# -- what the service sends ------------------------------------------------------

# 0.1 s of a ramp at 24 kHz: every sample differs, so a lost or moved byte shows.
PCM = struct.pack("<2400h", *range(-1200, 1200))


def decode(pieces: list[bytes]) -> bytes:
    """Decode an answer sent in ``pieces``."""
    decoder = SpeechDecoder()
    return b"".join(decoder.feed(piece) for piece in pieces) + decoder.flush()


def in_pieces(data: bytes, sizes: list[int]) -> list[bytes]:
    """Cut ``data`` in pieces of the sizes given, cycling through them."""
    pieces, start, turn = [], 0, 0
    while start < len(data):
        size = sizes[turn % len(sizes)]
        pieces.append(data[start : start + size])
        start, turn = start + size, turn + 1
    return pieces


def zero_sized(header: bytes) -> bytes:
    """Return a WAV header with both sizes 0, as libsndfile writes it first."""
    return header[:4] + bytes(4) + header[8:40] + bytes(4)


WAVS = {
    "streaming": wav_header(PROVIDER_SAMPLE_RATE) + PCM,
    "zero": zero_sized(wav_header(PROVIDER_SAMPLE_RATE)) + PCM,
    "exact": pcm_to_wav(PCM, PROVIDER_SAMPLE_RATE),
    "exact-then-list-chunk": pcm_to_wav(PCM, PROVIDER_SAMPLE_RATE)
    + b"LIST\4\0\0\0INFO",
}


@pytest.mark.parametrize("wav", WAVS.values(), ids=WAVS.keys())
@pytest.mark.parametrize(
    "sizes",
    [[len(PCM) * 2], [1], [1, 2, 3, 4, 5, 6, 7], [20, 4800]],
    ids=["one-body", "bytes", "1-to-7", "header-cut-in-fmt"],
)
def test_a_wav_answer_is_its_samples(wav: bytes, sizes: list[int]) -> None:
    """Sizes known, 0 or unknown, a trailer, the header cut anywhere: the samples."""
    assert decode(in_pieces(wav, sizes)) == PCM


@pytest.mark.parametrize("sizes", [[len(PCM)], [1], [3, 1, 7]])
def test_raw_pcm_answer_is_handed_on(sizes: list[int]) -> None:
    """A service that sends raw PCM where WAV was asked is heard all the same."""
    assert decode(in_pieces(PCM, sizes)) == PCM


def test_an_answer_shorter_than_a_signature_is_raw_pcm() -> None:
    assert decode([b"\x01", b"\x02"]) == b"\x01\x02"
    assert decode([]) == b""


def test_a_wav_of_another_layout_becomes_24khz_mono() -> None:
    stereo_16k = struct.pack(
        "<3200h", *(value for n in range(1600) for value in (n, n))
    )

    pcm = decode([pcm_to_wav(stereo_16k, 16000, channels=2)])

    assert abs(len(pcm) // 2 - 2400) <= 2


@pytest.mark.parametrize(
    ("start", "name"),
    [(b"ID3\x04\x00", "mp3"), (b"OggS\x00", "Ogg"), (b"fLaC\x00", "FLAC")],
)
def test_compressed_audio_where_wav_was_asked_is_refused(
    start: bytes, name: str
) -> None:
    """Played as PCM it would be noise: an error that names what came instead."""
    with pytest.raises(AnswerError, match=f"sent {name} audio where WAV was asked"):
        decode([start[:2], start[2:] + bytes(100)])


def test_a_wav_that_cannot_be_read_is_refused() -> None:
    float_header = bytearray(wav_header(PROVIDER_SAMPLE_RATE, width=4))
    float_header[20:22] = struct.pack("<H", 3)  # WAVE_FORMAT_IEEE_FLOAT

    with pytest.raises(AnswerError, match="WAV that cannot be read"):
        decode([bytes(float_header)])
    with pytest.raises(AnswerError, match="WAV that cannot be read"):
        decode([wav_header(PROVIDER_SAMPLE_RATE)[:30]])


async def test_decode_speech_hands_on_what_only_the_end_completes() -> None:
    async def answer() -> AsyncGenerator[bytes]:
        yield b"\x01"
        yield b"\x02"

    assert [pcm async for pcm in decode_speech(answer())] == [b"\x01\x02"]


async def test_decode_speech_closes_the_answer_when_closed() -> None:
    closed = False

    async def answer() -> AsyncGenerator[bytes]:
        nonlocal closed
        try:
            yield WAVS["streaming"][:100]
            yield WAVS["streaming"][100:]
        finally:
            closed = True

    decoded = decode_speech(answer())
    assert await anext(decoded) == PCM[: 100 - 44]
    await decoded.aclose()

    assert closed
