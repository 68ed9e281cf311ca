"""Text-to-speech on the OpenAI-compatible service, one entity per TTS subentry.

The entity is Home Assistant's face of ``provider/speech.py``, which speaks a
text stream sentence by sentence and formats the audio the caller asked for.
"""

from collections.abc import AsyncGenerator, AsyncIterable, Mapping
import contextlib
from dataclasses import replace
from typing import Any, Final, override

from homeassistant.components.tts import (
    ATTR_PREFERRED_FORMAT,
    ATTR_PREFERRED_SAMPLE_BYTES,
    ATTR_PREFERRED_SAMPLE_CHANNELS,
    ATTR_PREFERRED_SAMPLE_RATE,
    ATTR_VOICE,
    TextToSpeechEntity,
    TTSAudioResponse,
    TtsAudioType,
    Voice,
)
from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import callback
from homeassistant.exceptions import HomeAssistantError

from .const import (
    CONF_INSTRUCTIONS,
    CONF_MODEL,
    CONF_SPEED,
    CONF_VOICE,
    DOMAIN,
    RECOMMENDED_SPEED,
    SUBENTRY_TTS,
)
from .ha_internals import TTSAudioRequest
from .protocol.codec import pcm_to_wav
from .provider.client import PROVIDER_ERRORS, ProviderConfigEntry
from .provider.entity import ProviderSubentryEntity, subentry_platform
from .provider.presets import OPENAI_VOICES, SPEECH_LANGUAGES
from .provider.speech import (
    DEFAULT_FORMAT,
    AudioOutput,
    VoiceSettings,
    audio_output,
    speak,
)
from .sentences.marks import SpeechMarks, marks_for

PARALLEL_UPDATES = 0

ERROR_TTS_FAILED: Final = "tts_failed"


class XiaozhiTextToSpeechEntity(ProviderSubentryEntity, TextToSpeechEntity):
    """Speaks with the service's ``audio/speech`` endpoint, streaming both ways."""

    # The service detects the language itself; this only satisfies HA.
    _attr_default_language = "en"
    # HA's tts manager refuses engines without a name of their own.
    _attr_has_entity_name = False

    def __init__(self, entry: ProviderConfigEntry, subentry: ConfigSubentry) -> None:
        """Describe the entity from its subentry."""
        super().__init__(entry, subentry)
        self._attr_supported_languages = list(SPEECH_LANGUAGES)
        self._attr_supported_options = [
            ATTR_VOICE,
            ATTR_PREFERRED_FORMAT,
            ATTR_PREFERRED_SAMPLE_RATE,
            ATTR_PREFERRED_SAMPLE_CHANNELS,
            ATTR_PREFERRED_SAMPLE_BYTES,
        ]
        self._attr_default_options = {
            ATTR_VOICE: subentry.data[CONF_VOICE],
            ATTR_PREFERRED_FORMAT: DEFAULT_FORMAT,
        }

    @property
    @override
    def name(self) -> str:
        """Return the subentry's title."""
        return self.subentry.title

    @callback
    @override
    def async_get_supported_voices(self, language: str) -> list[Voice]:
        """Return the configured voice, and OpenAI's others if it is one of them."""
        configured: str = self.subentry.data[CONF_VOICE]
        voices = [configured]
        if configured in OPENAI_VOICES:
            voices += [voice for voice in OPENAI_VOICES if voice != configured]
        return [Voice(voice, voice) for voice in voices]

    @override
    async def async_stream_tts_audio(
        self, request: TTSAudioRequest
    ) -> TTSAudioResponse:
        """Speak a text stream, starting with its first sentence.

        A caller that attached `sentences.marks` to the stream (the device's
        speaker) is told where each sentence's audio starts.
        """
        output = audio_output(request.options)
        marks = marks_for(request.message_gen)
        audio = self._speak(request.message_gen, request.options, output, marks)
        return TTSAudioResponse(output.extension, audio)

    @override
    async def async_get_tts_audio(
        self, message: str, language: str, options: dict[str, Any]
    ) -> TtsAudioType:
        """Speak a whole message and return the complete audio file."""
        output = audio_output(options)

        async def whole_message() -> AsyncGenerator[str]:
            yield message

        unframed = replace(output, wav=False)
        chunks = self._speak(whole_message(), options, unframed)
        data = b"".join([chunk async for chunk in chunks])
        if output.wav:
            data = pcm_to_wav(data, output.rate, output.channels, output.width)
        return output.extension, data

    async def _speak(
        self,
        deltas: AsyncIterable[str],
        options: Mapping[str, Any],
        output: AudioOutput,
        marks: SpeechMarks | None = None,
    ) -> AsyncGenerator[bytes]:
        """Yield the audio; a service failure becomes a translated error."""
        settings = self._voice_settings(options)
        try:
            async with contextlib.aclosing(
                speak(self.client, settings, deltas, output, marks=marks)
            ) as audio:
                async for chunk in audio:
                    yield chunk
        except PROVIDER_ERRORS as err:
            raise HomeAssistantError(
                translation_domain=DOMAIN,
                translation_key=ERROR_TTS_FAILED,
                translation_placeholders={"error": str(err) or type(err).__name__},
            ) from err

    def _voice_settings(self, options: Mapping[str, Any]) -> VoiceSettings:
        data = self.subentry.data
        return VoiceSettings(
            model=data[CONF_MODEL],
            voice=str(options.get(ATTR_VOICE) or data[CONF_VOICE]),
            speed=float(data.get(CONF_SPEED, RECOMMENDED_SPEED)),
            instructions=data.get(CONF_INSTRUCTIONS) or None,
        )


# One entity per tts subentry.
async_setup_entry = subentry_platform(SUBENTRY_TTS, XiaozhiTextToSpeechEntity)
