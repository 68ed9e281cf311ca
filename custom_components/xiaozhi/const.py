"""Constants for the Xiaozhi integration."""

from dataclasses import dataclass
import logging
from typing import Any, Final

from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT
from homeassistant.helpers import llm

DOMAIN: Final = "xiaozhi"
LOGGER: Final = logging.getLogger(__package__)

# What a config entry stands for: an OpenAI-compatible service, or one paired device.
CONF_ENTRY_KIND: Final = "entry_kind"
ENTRY_KIND_PROVIDER: Final = "provider"
ENTRY_KIND_DEVICE: Final = "device"

# Provider entry data.
CONF_PRESET: Final = "preset"
CONF_BASE_URL: Final = "base_url"
CONF_SUPPORTS_AUDIO: Final = "supports_audio"

# Subentry types.
SUBENTRY_CONVERSATION: Final = "conversation"
SUBENTRY_STT: Final = "stt"
SUBENTRY_TTS: Final = "tts"

# Subentry data.
CONF_MODEL: Final = "model"
CONF_TEMPERATURE: Final = "temperature"
CONF_MAX_TOKENS: Final = "max_tokens"
CONF_LANGUAGE: Final = "language"
CONF_VOICE: Final = "voice"
CONF_SPEED: Final = "speed"
CONF_INSTRUCTIONS: Final = "instructions"

RECOMMENDED_TEMPERATURE: Final = 0.7
RECOMMENDED_MAX_TOKENS: Final = 1024
RECOMMENDED_SPEED: Final = 1.0

# The agent stops calling tools after this many rounds and says so.
MAX_TOOL_ROUNDS: Final = 10

DEFAULT_CONVERSATION_NAME: Final = "Xiaozhi conversation"
DEFAULT_STT_NAME: Final = "Xiaozhi STT"
DEFAULT_TTS_NAME: Final = "Xiaozhi TTS"

# Provider calls: how long the config flow and setup wait for the service.
VALIDATION_TIMEOUT: Final = 10.0
# Sent as the API key to local servers that take none (the SDK insists on one).
NO_API_KEY: Final = "no-key"


@dataclass(frozen=True, slots=True)
class ProviderPreset:
    """A well-known OpenAI-compatible service and sensible default models for it."""

    base_url: str
    supports_audio: bool
    chat_model: str
    stt_model: str | None = None
    tts_model: str | None = None
    tts_voice: str | None = None
    requires_api_key: bool = True


PRESET_CUSTOM: Final = "custom"

PRESETS: Final[dict[str, ProviderPreset]] = {
    "openai": ProviderPreset(
        base_url="https://api.openai.com/v1",
        supports_audio=True,
        chat_model="gpt-4o-mini",
        stt_model="gpt-4o-mini-transcribe",
        tts_model="gpt-4o-mini-tts",
        tts_voice="alloy",
    ),
    "dashscope": ProviderPreset(
        base_url="https://dashscope.aliyuncs.com/compatible-mode/v1",
        supports_audio=False,
        chat_model="qwen-plus",
    ),
    "zhipu": ProviderPreset(
        base_url="https://open.bigmodel.cn/api/paas/v4",
        supports_audio=True,
        chat_model="glm-4-flash",
        stt_model="glm-asr",
        tts_model="glm-tts",
        tts_voice="tongtong",
    ),
    "deepseek": ProviderPreset(
        base_url="https://api.deepseek.com/v1",
        supports_audio=False,
        chat_model="deepseek-chat",
    ),
    "siliconflow": ProviderPreset(
        base_url="https://api.siliconflow.cn/v1",
        supports_audio=True,
        chat_model="Qwen/Qwen2.5-7B-Instruct",
        stt_model="FunAudioLLM/SenseVoiceSmall",
        tts_model="FunAudioLLM/CosyVoice2-0.5B",
        tts_voice="FunAudioLLM/CosyVoice2-0.5B:alex",
    ),
    "ollama": ProviderPreset(
        base_url="http://localhost:11434/v1",
        supports_audio=False,
        chat_model="qwen2.5:7b",
        requires_api_key=False,
    ),
}

# Defaults for a custom (unknown) service: the names OpenAI-compatible servers copy.
CUSTOM_DEFAULT_CHAT_MODEL: Final = "gpt-4o-mini"
CUSTOM_DEFAULT_STT_MODEL: Final = "whisper-1"
CUSTOM_DEFAULT_TTS_MODEL: Final = "tts-1"
CUSTOM_DEFAULT_TTS_VOICE: Final = "alloy"

OPENAI_VOICES: Final = (
    "alloy",
    "ash",
    "ballad",
    "coral",
    "echo",
    "fable",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)


def conversation_defaults(chat_model: str) -> dict[str, Any]:
    """Return the data of a new conversation subentry."""
    return {
        CONF_MODEL: chat_model,
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST],
        CONF_TEMPERATURE: RECOMMENDED_TEMPERATURE,
        CONF_MAX_TOKENS: RECOMMENDED_MAX_TOKENS,
    }


def stt_defaults(stt_model: str) -> dict[str, Any]:
    """Return the data of a new STT subentry."""
    return {CONF_MODEL: stt_model}


def tts_defaults(tts_model: str, voice: str) -> dict[str, Any]:
    """Return the data of a new TTS subentry."""
    return {CONF_MODEL: tts_model, CONF_VOICE: voice, CONF_SPEED: RECOMMENDED_SPEED}


# Paired device entry data.
CONF_MAC: Final = "mac"
CONF_CLIENT_ID: Final = "client_id"
CONF_BOARD: Final = "board"
CONF_FIRMWARE_VERSION: Final = "firmware_version"
CONF_DEVICE_LANGUAGE: Final = "device_language"

# HTTP paths the firmware uses (its OTA URL setting points at OTA_PATH).
OTA_PATH: Final = "/xiaozhi/ota/"
ACTIVATE_PATH: Final = "/xiaozhi/ota/activate"
WEBSOCKET_PATH: Final = "/xiaozhi/v1/"
