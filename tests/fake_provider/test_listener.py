"""Tests of the demo's ears: what it hears of espeak-ng speech, silence and noise.

The speech is made as the simulator makes it (`simulator.audio.say`: espeak-ng,
16 kHz mono), then sent through Opus and back as a device's microphone audio
reaches Home Assistant, and uploaded to the demo's ``/audio/transcriptions``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
import logging
import math
import shutil

import numpy as np
import openai
import pytest

from custom_components.xiaozhi.protocol import codec
from fake_provider.demo import DemoMode, Timing, Topic, classify
from fake_provider.listener import (
    MATCH_THRESHOLD,
    VOCABULARY,
    Listener,
    Phrase,
    TemplateBank,
    features,
)
from fake_provider.server import FakeProvider
from simulator import audio as simulator_audio

pytestmark = pytest.mark.skipif(
    shutil.which("espeak-ng") is None, reason="the demo learns with espeak-ng"
)

RATE = 16000
# The simulator's espeak-ng languages for a phrase: Chinese in its default
# (zh-CN), English also with --language en or en-US.
SIMULATOR_LANGUAGES = {"cmn": "zh-CN", "en": "en", "en-us": "en-US"}
UNKNOWN_SENTENCES = (
    ("请播放一首音乐", "zh-CN"),
    ("打开窗帘", "zh-CN"),
    ("关掉电视", "zh-CN"),
    ("把空调调到二十六度", "zh-CN"),
    ("Please play some music", "en"),
    ("Turn on the fan", "en"),
    ("What is the time in Tokyo?", "en"),
    ("Open the garage door", "en"),
)


@pytest.fixture
async def client(socket_enabled: None) -> AsyncIterator[openai.AsyncOpenAI]:
    demo = DemoMode(timing=Timing.instant())
    async with FakeProvider.for_demo(demo) as provider, provider.client() as sdk:
        yield sdk


def through_opus(pcm: bytes) -> bytes:
    """Return ``pcm`` after Opus at 16 kHz and back (the device's uplink)."""
    encoder = codec.OpusEncoder(RATE, 60)
    decoder = codec.OpusDecoder(RATE)
    packets = encoder.encode(pcm) + encoder.flush()
    return b"".join(decoder.decode(packet) for packet in packets) + decoder.flush()


def with_silence(pcm: bytes, seconds: float = 0.5) -> bytes:
    """Return ``pcm`` with the silence a microphone records around speech."""
    silence = bytes(2 * round(RATE * seconds))
    return silence + pcm + silence


async def transcribe(client: openai.AsyncOpenAI, pcm: bytes) -> str:
    result = await client.audio.transcriptions.create(
        model="whisper-1",
        file=("speech.wav", codec.pcm_to_wav(pcm, RATE), "audio/wav"),
    )
    return result.text


async def espeak(text: str, voice: str, *options: str) -> bytes:
    """Return ``text`` spoken by espeak-ng with extra options, as 16 kHz PCM."""
    process = await asyncio.create_subprocess_exec(
        "espeak-ng", "--stdout", "-v", voice, *options, text,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    wav, _ = await process.communicate()
    return simulator_audio.wav_to_uplink_pcm(wav)


def spoken_by_the_simulator() -> list[tuple[str, str]]:
    return [
        (phrase.text, SIMULATOR_LANGUAGES[voice])
        for phrase in VOCABULARY
        for voice in phrase.voices
    ]


async def test_every_phrase_is_heard_as_itself(client: openai.AsyncOpenAI) -> None:
    heard = {}
    for text, language in spoken_by_the_simulator():
        pcm = await simulator_audio.say(text, language)
        heard[text, language] = await transcribe(
            client, through_opus(with_silence(pcm))
        )

    assert heard == {key: key[0] for key in heard}
    assert len(heard) == 44


@pytest.mark.parametrize("options", [("-s", "140"), ("-s", "220"), ("-p", "70")])
async def test_phrases_are_heard_slower_faster_and_higher(
    options: tuple[str, ...],
) -> None:
    listener = Listener(shutil.which("espeak-ng"))
    for phrase in VOCABULARY:
        voice = "en-us" if "en-us" in phrase.voices else "cmn"
        pcm = through_opus(await espeak(phrase.text, voice, *options))

        heard = await listener.hear(pcm, RATE, 1, 2)

        assert (heard.text, heard.nearest) == (phrase.text, phrase.text)
        assert heard.distance < MATCH_THRESHOLD / 1.3  # a margin, not a fluke


async def test_unknown_sentences_are_not_heard(client: openai.AsyncOpenAI) -> None:
    listener = Listener(shutil.which("espeak-ng"))
    for text, language in UNKNOWN_SENTENCES:
        pcm = through_opus(await simulator_audio.say(text, language))

        assert await transcribe(client, pcm) == ""
        heard = await listener.hear(pcm, RATE, 1, 2)
        assert heard.distance > MATCH_THRESHOLD * 1.3, text


async def test_silence_and_noise_are_not_heard(client: openai.AsyncOpenAI) -> None:
    noise = np.random.default_rng(7).normal(0, 3000, 2 * RATE)
    hum = 3000 * np.sin(2 * np.pi * 50 * np.arange(2 * RATE) / RATE)
    sounds = {
        "silence": bytes(4 * RATE),
        "white noise": noise.astype("<i2").tobytes(),
        "mains hum": hum.astype("<i2").tobytes(),
        "a click": bytes(RATE) + b"\xff\x7f" * 80 + bytes(RATE),
    }
    heard = {name: await transcribe(client, pcm) for name, pcm in sounds.items()}

    assert heard == dict.fromkeys(sounds, "")


async def test_uploads_of_any_rate_and_channels_are_heard(
    client: openai.AsyncOpenAI,
) -> None:
    pcm = await simulator_audio.say("打开客厅灯", "zh-CN")
    upsampler = codec.PcmResampler(RATE, 48000)
    at_48k = np.frombuffer(upsampler.resample(pcm) + upsampler.flush(), dtype="<i2")
    wav = codec.pcm_to_wav(np.repeat(at_48k, 2).tobytes(), 48000, channels=2)

    result = await client.audio.transcriptions.create(
        model="whisper-1", file=("speech.wav", wav, "audio/wav")
    )

    assert result.text == "打开客厅灯"


async def test_without_espeak_nothing_is_heard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = Listener(None)
    pcm = await simulator_audio.say("你好", "zh-CN")

    with caplog.at_level(logging.WARNING):
        heard = await listener.hear(pcm, RATE, 1, 2)

    assert (heard.text, heard.nearest, heard.distance) == ("", "", math.inf)
    assert "cannot listen" in caplog.text


async def test_a_vocabulary_espeak_cannot_speak_is_not_learnt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    listener = Listener("/bin/false", (Phrase("你好", ("cmn",)),))

    with caplog.at_level(logging.WARNING):
        await listener.prepare()
        heard = await listener.hear(bytes(RATE), RATE, 1, 2)

    assert "cannot learn its vocabulary" in caplog.text
    assert heard.text == ""
    assert listener.espeak is None


def test_features_need_speech() -> None:
    tone = (8000 * np.sin(np.arange(RATE) / 5)).astype("<i2").tobytes()

    assert features(b"") is None
    assert features(bytes(2 * RATE)) is None  # silence
    assert features(tone[:3000]) is None  # shorter than a syllable
    frames = features(tone)
    assert frames is not None
    assert frames.shape[1] == 12
    assert np.allclose(frames.mean(axis=0), 0.0)  # loudness is normalised away


def test_warping_is_limited_to_half_and_double_speed() -> None:
    rng = np.random.default_rng(3)
    long = rng.normal(size=(100, 12))
    bank = TemplateBank.of([("long", long), ("same", long[:40])])

    distances = bank.distances(long[:40])

    assert math.isinf(distances[0])  # 40 frames cannot be 100 at 2x at most
    assert distances[1] == pytest.approx(0.0, abs=1e-6)
    assert np.isinf(bank.distances(rng.normal(size=(201, 12)))).all()  # too long


def test_every_phrase_heard_has_an_answer() -> None:
    # What the demo can hear it can also answer: no phrase falls to "only a demo".
    topics = {phrase.text: classify(phrase.text) for phrase in VOCABULARY}

    assert Topic.OTHER not in topics.values()
    assert set(topics.values()) == set(Topic) - {Topic.OTHER}
