"""The OpenAI-compatible services we know, and what a new entry starts with.

Presets give a service's URL, whether it does speech, and sensible models for
it; subentries of a new provider entry start from them. Nothing here talks to a
service.
"""

from dataclasses import dataclass
from typing import Any, Final

from homeassistant.const import CONF_LLM_HASS_API, CONF_PROMPT
from homeassistant.helpers import llm

from ..const import (
    CONF_MAX_TOKENS,
    CONF_MODEL,
    CONF_SPEED,
    CONF_TEMPERATURE,
    CONF_VISION_MODEL,
    CONF_VOICE,
    DEVICE_TOOLS_API_ID,
    RECOMMENDED_MAX_TOKENS,
    RECOMMENDED_SPEED,
    RECOMMENDED_TEMPERATURE,
)


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
    # A model of the service that sees images, for the devices' cameras.
    vision_model: str | None = None


PRESET_CUSTOM: Final = "custom"

PRESETS: Final[dict[str, ProviderPreset]] = {
    "openai": ProviderPreset(
        base_url="https://api.openai.com/v1",
        supports_audio=True,
        chat_model="gpt-4o-mini",
        vision_model="gpt-4o-mini",
        stt_model="gpt-4o-mini-transcribe",
        tts_model="gpt-4o-mini-tts",
        tts_voice="alloy",
    ),
    "dashscope": ProviderPreset(
        base_url="https://dashscope.aliyuncs.com/compatible-mode/v1",
        supports_audio=False,
        chat_model="qwen-plus",
        vision_model="qwen-vl-max",
    ),
    "zhipu": ProviderPreset(
        base_url="https://open.bigmodel.cn/api/paas/v4",
        supports_audio=True,
        chat_model="glm-4-flash",
        vision_model="glm-4v-flash",
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
        vision_model="Qwen/Qwen2.5-VL-72B-Instruct",
        stt_model="FunAudioLLM/SenseVoiceSmall",
        tts_model="FunAudioLLM/CosyVoice2-0.5B",
        tts_voice="FunAudioLLM/CosyVoice2-0.5B:alex",
    ),
    "ollama": ProviderPreset(
        base_url="http://localhost:11434/v1",
        supports_audio=False,
        chat_model="qwen2.5:7b",
        vision_model="qwen2.5vl:7b",
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


def conversation_defaults(
    chat_model: str, vision_model: str | None = None
) -> dict[str, Any]:
    """Return the data of a new conversation subentry.

    The agent gets Home Assistant's Assist API and the tools of the device it
    speaks through; ``vision_model`` answers questions about the device's photos
    (left out: the chat model does).
    """
    data: dict[str, Any] = {
        CONF_MODEL: chat_model,
        CONF_PROMPT: llm.DEFAULT_INSTRUCTIONS_PROMPT,
        CONF_LLM_HASS_API: [llm.LLM_API_ASSIST, DEVICE_TOOLS_API_ID],
        CONF_TEMPERATURE: RECOMMENDED_TEMPERATURE,
        CONF_MAX_TOKENS: RECOMMENDED_MAX_TOKENS,
    }
    if vision_model:
        data[CONF_VISION_MODEL] = vision_model
    return data


def preset_vision_model(preset: str, models: list[str]) -> str | None:
    """Return the preset's vision model, if the service lists it (or lists nothing)."""
    known = PRESETS.get(preset)
    vision_model = known.vision_model if known else None
    if vision_model and (not models or vision_model in models):
        return vision_model
    return None


def stt_defaults(stt_model: str) -> dict[str, Any]:
    """Return the data of a new STT subentry."""
    return {CONF_MODEL: stt_model}


def tts_defaults(tts_model: str, voice: str) -> dict[str, Any]:
    """Return the data of a new TTS subentry."""
    return {CONF_MODEL: tts_model, CONF_VOICE: voice, CONF_SPEED: RECOMMENDED_SPEED}


PRESET_TITLES: Final[dict[str, str]] = {
    "openai": "OpenAI",
    "dashscope": "DashScope (Qwen)",
    "zhipu": "Zhipu (GLM)",
    "deepseek": "DeepSeek",
    "siliconflow": "SiliconFlow",
    "ollama": "Ollama",
}

# Whisper's languages (ISO 639-1), plus the regional tags HA uses for the
# languages Xiaozhi devices mostly speak. The API takes the part before "-".
_WHISPER_CODES: Final = (
    "af am ar as az ba be bg bn bo br bs ca cs cy da de el en es et eu fa fi fo fr"
    " gl gu ha he hi hr ht hu hy id is it ja ka kk km kn ko la lb ln lo lt lv mg mi"
    " mk ml mn mr ms mt my ne nl nn no oc pa pl ps pt ro ru sa sd si sk sl sn so sq"
    " sr su sv sw ta te tg th tk tl tr tt uk ur uz vi yi yo zh"
)
_REGIONAL_TAGS: Final = "en-GB en-US zh-CN zh-HK zh-Hans zh-Hant zh-TW"
SPEECH_LANGUAGES: Final = sorted({*_WHISPER_CODES.split(), *_REGIONAL_TAGS.split()})
