"""Speech-like audio and the stream HA's pipeline hands an STT engine."""

from collections.abc import AsyncIterator
import math
import random
import struct

from homeassistant.components import stt

RATE = 16000


CHUNK_BYTES = 320  # 10 ms, what HA's pipeline hands over


def speech_like_pcm(seconds: float, *, peak: float = 0.5, seed: int = 1) -> bytes:
    """Return 16 kHz mono s16le audio shaped like speech.

    A 140 Hz voice with harmonics, opened and closed four times a second like
    syllables, over a little noise.
    """
    noise = random.Random(seed)
    samples = []
    for n in range(round(seconds * RATE)):
        t = n / RATE
        voice = sum(math.sin(2 * math.pi * 140 * k * t) / k for k in range(1, 6)) / 2.3
        envelope = 0.5 - 0.5 * math.cos(2 * math.pi * 4 * t)
        value = peak * envelope * voice + noise.uniform(-0.005, 0.005)
        samples.append(round(max(-1.0, min(1.0, value)) * 32767))
    return struct.pack(f"<{len(samples)}h", *samples)


async def chunks_of(pcm: bytes, size: int = CHUNK_BYTES) -> AsyncIterator[bytes]:
    """Stream ``pcm`` in chunks, like a microphone."""
    for start in range(0, len(pcm), size):
        yield pcm[start : start + size]


def metadata(language: str = "en") -> stt.SpeechMetadata:
    """Return the metadata HA's pipeline passes for device audio."""
    return stt.SpeechMetadata(
        language=language,
        format=stt.AudioFormats.WAV,
        codec=stt.AudioCodecs.PCM,
        bit_rate=stt.AudioBitRates.BITRATE_16,
        sample_rate=stt.AudioSampleRates.SAMPLERATE_16000,
        channel=stt.AudioChannels.CHANNEL_MONO,
    )


def noise_pcm(seconds: float, dbfs: float) -> bytes:
    """Return white noise whose RMS is about ``dbfs``."""
    noise = random.Random(7)
    amplitude = 32768 * 10 ** (dbfs / 20) * math.sqrt(3)
    count = round(seconds * RATE)
    return struct.pack(
        f"<{count}h",
        *(round(noise.uniform(-amplitude, amplitude)) for _ in range(count)),
    )
