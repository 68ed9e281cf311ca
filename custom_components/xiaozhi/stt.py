"""Speech-to-text on the OpenAI-compatible service, one entity per STT subentry.

The entity is Home Assistant's face of ``provider/transcription.py``, which
measures the audio as it arrives and talks to the service.
"""

from collections.abc import AsyncIterable
from typing import override

from homeassistant.components import stt
from homeassistant.const import CONF_PROMPT

from .const import CONF_LANGUAGE, CONF_MODEL, LOGGER, SUBENTRY_STT
from .provider.client import PROVIDER_ERRORS
from .provider.entity import ProviderSubentryEntity, subentry_platform
from .provider.presets import SPEECH_LANGUAGES
from .provider.transcription import collect_utterance, transcribe

PARALLEL_UPDATES = 0


class XiaozhiSpeechToTextEntity(ProviderSubentryEntity, stt.SpeechToTextEntity):
    """Transcribes speech with the service's ``audio/transcriptions`` endpoint."""

    @property
    @override
    def supported_languages(self) -> list[str]:
        """Return the subentry's language, or every Whisper language."""
        if language := self.subentry.data.get(CONF_LANGUAGE):
            return [language]
        return list(SPEECH_LANGUAGES)

    @property
    @override
    def supported_formats(self) -> list[stt.AudioFormats]:
        """Return the supported container: WAV (raw PCM is framed here)."""
        return [stt.AudioFormats.WAV]

    @property
    @override
    def supported_codecs(self) -> list[stt.AudioCodecs]:
        """Return the supported codec: PCM."""
        return [stt.AudioCodecs.PCM]

    @property
    @override
    def supported_bit_rates(self) -> list[stt.AudioBitRates]:
        """Return the supported sample size: 16 bit."""
        return [stt.AudioBitRates.BITRATE_16]

    @property
    @override
    def supported_sample_rates(self) -> list[stt.AudioSampleRates]:
        """Return the supported sample rate: 16 kHz."""
        return [stt.AudioSampleRates.SAMPLERATE_16000]

    @property
    @override
    def supported_channels(self) -> list[stt.AudioChannels]:
        """Return the supported channel layout: mono."""
        return [stt.AudioChannels.CHANNEL_MONO]

    @override
    async def async_process_audio_stream(
        self, metadata: stt.SpeechMetadata, stream: AsyncIterable[bytes]
    ) -> stt.SpeechResult:
        """Transcribe the stream; any failure is an ERROR result, logged."""
        utterance = await collect_utterance(stream, metadata.sample_rate.value)
        if (problem := utterance.problem()) is not None:
            LOGGER.info("Speech not sent for transcription: %s", problem)
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        language = self.subentry.data.get(CONF_LANGUAGE) or metadata.language
        try:
            text = await transcribe(
                self.client,
                utterance.wav(),
                model=self.subentry.data[CONF_MODEL],
                language=language,
                prompt=self.subentry.data.get(CONF_PROMPT),
            )
        except PROVIDER_ERRORS as err:
            LOGGER.warning("Speech-to-text request failed: %s", err)
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        if not (text := text.strip()):
            LOGGER.info("The service recognised no speech")
            return stt.SpeechResult(None, stt.SpeechResultState.ERROR)
        return stt.SpeechResult(text, stt.SpeechResultState.SUCCESS)


# One entity per stt subentry.
async_setup_entry = subentry_platform(SUBENTRY_STT, XiaozhiSpeechToTextEntity)
