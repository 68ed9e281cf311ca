"""The speech logic of the TTS entity: output formats, conversion, framing."""

from collections.abc import AsyncGenerator
import struct
from typing import Any

import pytest

from homeassistant.exceptions import HomeAssistantError

from custom_components.xiaozhi.protocol.codec import parse_wav
from custom_components.xiaozhi.provider.speech import (
    PROVIDER_SAMPLE_RATE,
    AudioOutput,
    PcmConverter,
    audio_output,
    format_audio,
)
from tests.helpers.streams import samples


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({}, AudioOutput("wav", "pcm", wav=True)),
        (
            {
                "preferred_format": "wav",
                "preferred_sample_rate": 16000,
                "preferred_sample_channels": 1,
                "preferred_sample_bytes": 2,
            },
            AudioOutput("wav", "pcm", 16000, 1, 2, wav=True),
        ),
        (
            {"preferred_format": "pcm", "preferred_sample_rate": "8000"},
            AudioOutput("pcm", "pcm", 8000),
        ),
        ({"preferred_format": "RAW"}, AudioOutput("raw", "pcm")),
        ({"preferred_format": "mp3"}, AudioOutput("mp3", "mp3")),
        (
            {"preferred_format": "ogg", "preferred_sample_rate": 48000},
            AudioOutput("ogg", "opus"),
        ),
        ({"preferred_format": "aac"}, AudioOutput("aac", "aac")),
        ({"preferred_format": "flac"}, AudioOutput("wav", "pcm", wav=True)),
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

    stereo = PcmConverter(AudioOutput("wav", "pcm", channels=2))
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
    unsigned = PcmConverter(AudioOutput("wav", "pcm", width=1))
    assert list(unsigned.convert(pcm) + unsigned.flush()) == [128, 129, 127, 255]
    wide = PcmConverter(AudioOutput("pcm", "pcm", width=4))
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

    output = AudioOutput("pcm", "pcm")
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
                nothing(), AudioOutput("wav", "pcm", wav=True)
            )
        ]
    )
    wav = parse_wav(data)
    assert (wav.rate, wav.pcm) == (PROVIDER_SAMPLE_RATE, b"")
    raw = [c async for c in format_audio(nothing(), AudioOutput("pcm", "pcm"))]
    assert raw == []
