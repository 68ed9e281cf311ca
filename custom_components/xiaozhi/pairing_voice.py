"""Who says the pairing code to a device that is not paired yet.

A pairing session (``server/pairing_session.py``) shows the code and has it said
by this speaker: Home Assistant's preferred Assist pipeline's TTS engine, in that
pipeline's TTS language and voice (the message is in that language too, so the
engine never reads a language it does not speak). The device has no pipeline of
its own yet. Without a TTS engine the code is only shown, and the log says so.
"""

from collections.abc import AsyncGenerator
from typing import Any

from homeassistant.components.assist_pipeline import PipelineNotFound
from homeassistant.components.tts import ATTR_VOICE
from homeassistant.core import HomeAssistant

from . import ha_internals
from .const import LOGGER
from .device.messages import device_message
from .voice.tts_audio import open_tts_stream, pcm_from_stream, start_message


def code_speech(code: str, language: str) -> str:
    """Return what is said: the activation message, then the code digit by digit."""
    return f"{device_message('activation', language)}: {' '.join(code)}"


async def async_speak_code(
    hass: HomeAssistant, code: str, device_language: str
) -> AsyncGenerator[bytes]:
    """Yield the code spoken by the preferred pipeline's TTS, as 24 kHz PCM.

    Raises:
        TtsError: The engine failed (the session logs it; the code stays shown).
    """
    try:
        pipeline = ha_internals.pipeline_by_id(hass, None)
    except PipelineNotFound:
        pipeline = None
    if pipeline is None or not pipeline.tts_engine:
        LOGGER.info(
            "No Assist pipeline with text-to-speech: the pairing code is only"
            " shown on the device, not spoken"
        )
        return
    language = pipeline.tts_language or device_language
    options: dict[str, Any] = {}
    if pipeline.tts_voice:
        options[ATTR_VOICE] = pipeline.tts_voice
    stream = open_tts_stream(hass, pipeline.tts_engine, language, options)
    start_message(stream, code_speech(code, language))
    async for pcm in pcm_from_stream(stream):
        yield pcm
