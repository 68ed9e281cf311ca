"""TTS engines of a mock integration: one without and one with streaming input."""

import asyncio
from collections.abc import AsyncGenerator
import struct
from typing import Any

from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    MockModule,
    MockPlatform,
    mock_config_flow,
    mock_integration,
    mock_platform,
)

from homeassistant.components import tts
from homeassistant.components.tts import TextToSpeechEntity, TTSAudioResponse
from homeassistant.components.tts.entity import TTSAudioRequest
from homeassistant.config_entries import ConfigEntry, ConfigFlow
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from custom_components.xiaozhi.protocol.codec import pcm_to_wav, wav_header
from custom_components.xiaozhi.voice.speaking import estimated_speech_seconds

TEST_DOMAIN = "speaker_test"


RATE = 24000


def speech_pcm(text: str, rate: int = RATE, speed: float = 1.0) -> bytes:
    """PCM as long as the speaker's estimate for ``text`` (at ``speed`` 1)."""
    samples = round(estimated_speech_seconds(text) * rate / speed)
    return struct.pack("<h", sum(map(ord, text)) % 20000) * samples


async def encode_mp3(pcm: bytes, rate: int) -> bytes:
    """Encode mono s16le PCM as mp3 with the ffmpeg binary HA uses too."""
    process = await asyncio.create_subprocess_exec(
        *("ffmpeg", "-hide_banner", "-loglevel", "error", "-f", "s16le"),
        *("-ar", str(rate), "-ac", "1", "-i", "pipe:0", "-f", "mp3", "pipe:1"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    mp3, _ = await process.communicate(pcm)
    assert process.returncode == 0
    return mp3


class PlainTTS(TextToSpeechEntity):
    """An engine without streaming input: one whole message per request."""

    _attr_default_language = "en"

    def __init__(self, name: str, *, rate: int = RATE, extension: str = "wav") -> None:
        self._attr_supported_languages = ["en", "zh"]
        self._attr_supported_options = ["voice"]
        self._attr_name = name
        self._attr_unique_id = name
        self.rate = rate
        self.speed = 1.0
        self.extension = extension
        self.requests: list[str] = []
        self.options: list[dict[str, Any]] = []
        self.gates: dict[str, asyncio.Event] = {}
        self.failures: dict[str, Exception] = {}
        self._requested: dict[str, asyncio.Event] = {}

    def requested(self, text: str) -> asyncio.Event:
        """The event set when ``text`` reaches the engine."""
        return self._requested.setdefault(text, asyncio.Event())

    def gate(self, text: str) -> asyncio.Event:
        """An event ``text``'s synthesis waits for."""
        return self.gates.setdefault(text, asyncio.Event())

    async def _synthesize(self, text: str) -> bytes:
        self.requests.append(text)
        self.requested(text).set()
        if text in self.gates:
            await self.gates[text].wait()
        if text in self.failures:
            raise self.failures[text]
        return speech_pcm(text, self.rate, self.speed)

    async def async_get_tts_audio(
        self, message: str, language: str, options: dict[str, Any]
    ) -> tts.TtsAudioType:
        self.options.append(options)
        pcm = await self._synthesize(message)
        if self.extension == "mp3":
            return "mp3", await encode_mp3(pcm, self.rate)
        return "wav", pcm_to_wav(pcm, self.rate)


class StreamingTTS(PlainTTS):
    """An engine with streaming input: one WAV stream for all the text."""

    def __init__(self, name: str, *, rate: int = RATE) -> None:
        super().__init__(name, rate=rate)
        self.streams = 0
        self.received: list[str] = []
        self.input_ended = asyncio.Event()
        self.closed = asyncio.Event()

    async def async_stream_tts_audio(
        self, request: TTSAudioRequest
    ) -> TTSAudioResponse:
        self.streams += 1
        self.options.append(request.options)
        return TTSAudioResponse("wav", self._audio(request.message_gen))

    async def _audio(self, texts: AsyncGenerator[str]) -> AsyncGenerator[bytes]:
        try:
            yield wav_header(self.rate)
            async for text in texts:
                self.received.append(text)
                yield await self._synthesize(text.strip())
            self.input_ended.set()
        finally:
            self.closed.set()


class TestFlow(ConfigFlow):
    """The mock integration's (unused) config flow."""

    VERSION = 1


async def setup_tts_entities(
    hass: HomeAssistant, entities: list[TextToSpeechEntity]
) -> MockConfigEntry:
    """Register ``entities`` through a config entry of a mock integration."""

    async def setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        await hass.config_entries.async_forward_entry_setups(entry, [Platform.TTS])
        return True

    async def unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
        return await hass.config_entries.async_unload_platforms(entry, [Platform.TTS])

    async def setup_platform(
        hass: HomeAssistant,
        entry: ConfigEntry,
        async_add_entities: AddConfigEntryEntitiesCallback,
    ) -> None:
        async_add_entities(entities)

    mock_platform(hass, f"{TEST_DOMAIN}.config_flow")
    mock_integration(
        hass,
        MockModule(
            TEST_DOMAIN, async_setup_entry=setup_entry, async_unload_entry=unload_entry
        ),
    )
    mock_platform(
        hass, f"{TEST_DOMAIN}.tts", MockPlatform(async_setup_entry=setup_platform)
    )
    entry = MockConfigEntry(domain=TEST_DOMAIN)
    entry.add_to_hass(hass)
    with mock_config_flow(TEST_DOMAIN, TestFlow):
        assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()
    return entry
