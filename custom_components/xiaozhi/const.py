"""Constants for the Xiaozhi integration."""

import logging
from typing import Final

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

# Conversation subentry data: the model that answers questions about a device's
# photos (empty: the chat model).
CONF_VISION_MODEL: Final = "vision_model"

# The LLM API that gives an agent the tools of the device a conversation comes from.
DEVICE_TOOLS_API_ID: Final = "xiaozhi_device"
DEVICE_TOOLS_API_NAME: Final = "Xiaozhi device"

# The agent stops calling tools after this many rounds and says so.
MAX_TOOL_ROUNDS: Final = 10

DEFAULT_CONVERSATION_NAME: Final = "Xiaozhi conversation"
DEFAULT_STT_NAME: Final = "Xiaozhi STT"
DEFAULT_TTS_NAME: Final = "Xiaozhi TTS"

# Provider calls: how long the config flow and setup wait for the service.
VALIDATION_TIMEOUT: Final = 10.0
# Sent as the API key to local servers that take none (the SDK insists on one).
NO_API_KEY: Final = "no-key"


# Paired device entry data.
CONF_MAC: Final = "mac"
CONF_CLIENT_ID: Final = "client_id"
CONF_BOARD: Final = "board"
CONF_FIRMWARE_VERSION: Final = "firmware_version"
CONF_DEVICE_LANGUAGE: Final = "device_language"
# SHA-256 digests (hex) of the MQTT passwords the device was handed: the newest
# first, and the one before it (until the device used the new one).
CONF_MQTT_PASSWORD_HASHES: Final = "mqtt_password_hashes"  # noqa: S105 (a key)

# Paired device entry options: the transport its OTA answer names.
CONF_TRANSPORT: Final = "transport"
TRANSPORT_MQTT: Final = "mqtt"
TRANSPORT_WEBSOCKET: Final = "websocket"
DEFAULT_TRANSPORT: Final = TRANSPORT_MQTT

# HTTP paths the firmware uses (its OTA URL setting points at OTA_PATH).
OTA_PATH: Final = "/xiaozhi/ota/"
ACTIVATE_PATH: Final = "/xiaozhi/ota/activate"
WEBSOCKET_PATH: Final = "/xiaozhi/v1/"
# Where a device's camera posts its photos (MCP initialize's capabilities.vision).
VISION_PATH: Final = "/xiaozhi/vision"
