"""Config flow for Xiaozhi: OpenAI-compatible providers and their subentries."""

from collections.abc import Mapping
from typing import Any, Final, override

import openai
import probatio

from homeassistant.config_entries import (
    ConfigEntry,
    ConfigEntryState,
    ConfigFlow,
    ConfigFlowResult,
    ConfigSubentryData,
    ConfigSubentryFlow,
    SubentryFlowResult,
)
from homeassistant.const import (
    CONF_API_KEY,
    CONF_CODE,
    CONF_LLM_HASS_API,
    CONF_NAME,
    CONF_PROMPT,
    CONF_TOKEN,
)
from homeassistant.core import callback
from homeassistant.helpers import llm
from homeassistant.helpers.selector import (
    LanguageSelector,
    NumberSelector,
    NumberSelectorConfig,
    NumberSelectorMode,
    SelectOptionDict,
    SelectSelector,
    SelectSelectorConfig,
    SelectSelectorMode,
    TemplateSelector,
    TextSelector,
    TextSelectorConfig,
    TextSelectorType,
)
from homeassistant.helpers.typing import VolDictType

from .const import (
    CONF_BASE_URL,
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_DEVICE_LANGUAGE,
    CONF_ENTRY_KIND,
    CONF_FIRMWARE_VERSION,
    CONF_INSTRUCTIONS,
    CONF_LANGUAGE,
    CONF_MAC,
    CONF_MAX_TOKENS,
    CONF_MODEL,
    CONF_PRESET,
    CONF_SPEED,
    CONF_SUPPORTS_AUDIO,
    CONF_TEMPERATURE,
    CONF_VISION_MODEL,
    CONF_VOICE,
    DEFAULT_CONVERSATION_NAME,
    DEFAULT_STT_NAME,
    DEFAULT_TTS_NAME,
    DOMAIN,
    ENTRY_KIND_DEVICE,
    ENTRY_KIND_PROVIDER,
    LOGGER,
    RECOMMENDED_MAX_TOKENS,
    RECOMMENDED_SPEED,
    RECOMMENDED_TEMPERATURE,
    SUBENTRY_CONVERSATION,
    SUBENTRY_STT,
    SUBENTRY_TTS,
)
from .device.runtime import is_device_entry
from .provider.client import (
    ProviderConfigEntry,
    async_create_client,
    async_list_models,
    normalize_base_url,
    provider_title,
)
from .provider.presets import (
    CUSTOM_DEFAULT_CHAT_MODEL,
    CUSTOM_DEFAULT_STT_MODEL,
    CUSTOM_DEFAULT_TTS_MODEL,
    CUSTOM_DEFAULT_TTS_VOICE,
    OPENAI_VOICES,
    PRESET_CUSTOM,
    PRESET_TITLES,
    PRESETS,
    conversation_defaults,
    preset_vision_model,
    stt_defaults,
    tts_defaults,
)
from .server.pairing import PairingError, PendingPairing
from .server.registry import async_get_server

API_KEY_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.PASSWORD))
URL_SELECTOR = TextSelector(TextSelectorConfig(type=TextSelectorType.URL))


async def async_validate_service(
    hass: Any, base_url: str, api_key: str | None
) -> tuple[list[str], dict[str, str]]:
    """Call the service; return its models, or form errors keyed like HA forms."""
    try:
        client = await async_create_client(hass, base_url, api_key)
        return await async_list_models(client), {}
    except openai.AuthenticationError:
        return [], {"base": "invalid_auth"}
    except openai.APIConnectionError:
        return [], {"base": "cannot_connect"}
    except Exception:
        LOGGER.exception("Unexpected error validating %s", base_url)
        return [], {"base": "unknown"}


def pick_model(preferred: str, models: list[str]) -> str:
    """Prefer the preset's model; for an unknown server, one it really offers."""
    if not models or preferred in models:
        return preferred
    return models[0]


def default_subentries(
    preset: str, supports_audio: bool, models: list[str]
) -> list[ConfigSubentryData]:
    """Return the subentries a new provider entry starts with."""
    known = PRESETS.get(preset)
    chat_model = known.chat_model if known else CUSTOM_DEFAULT_CHAT_MODEL
    subentries = [
        ConfigSubentryData(
            subentry_type=SUBENTRY_CONVERSATION,
            title=DEFAULT_CONVERSATION_NAME,
            data=conversation_defaults(
                pick_model(chat_model, models), preset_vision_model(preset, models)
            ),
            unique_id=None,
        )
    ]
    if not supports_audio:
        return subentries
    stt_model = (known.stt_model if known else None) or CUSTOM_DEFAULT_STT_MODEL
    tts_model = (known.tts_model if known else None) or CUSTOM_DEFAULT_TTS_MODEL
    voice = (known.tts_voice if known else None) or CUSTOM_DEFAULT_TTS_VOICE
    subentries.append(
        ConfigSubentryData(
            subentry_type=SUBENTRY_STT,
            title=DEFAULT_STT_NAME,
            data=stt_defaults(stt_model),
            unique_id=None,
        )
    )
    subentries.append(
        ConfigSubentryData(
            subentry_type=SUBENTRY_TTS,
            title=DEFAULT_TTS_NAME,
            data=tts_defaults(tts_model, voice),
            unique_id=None,
        )
    )
    return subentries


def device_title(device: Mapping[str, Any]) -> str:
    """Return a device entry title: its board and the end of its MAC."""
    suffix = device[CONF_MAC].replace(":", "")[-6:]
    return f"{device.get(CONF_BOARD) or 'Xiaozhi'} {suffix}"


# The text shown once a device is paired (config.create_entry in strings.json).
CREATE_ENTRY_PAIRED: Final = "paired"


class XiaozhiConfigFlow(ConfigFlow, domain=DOMAIN):
    """Add an OpenAI-compatible service."""

    VERSION = 1
    # 1.2: device entries no longer store the WebSocket framing version.
    MINOR_VERSION = 2

    def __init__(self) -> None:
        """Start with no preset chosen and no device discovered."""
        self._preset = PRESET_CUSTOM
        self._device: dict[str, Any] = {}

    @override
    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Let the user pick a known service or a custom URL."""
        if user_input is not None:
            self._preset = user_input[CONF_PRESET]
            return await self.async_step_connect()
        return self.async_show_form(
            step_id="user",
            data_schema=probatio.Schema(
                {
                    probatio.Required(CONF_PRESET, default="openai"): SelectSelector(
                        SelectSelectorConfig(
                            options=[*PRESETS, PRESET_CUSTOM],
                            translation_key=CONF_PRESET,
                            mode=SelectSelectorMode.LIST,
                        )
                    )
                }
            ),
        )

    async def async_step_connect(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the URL and key, and prove them by calling the service."""
        errors: dict[str, str] = {}
        known = PRESETS.get(self._preset)
        if user_input is not None:
            base_url = normalize_base_url(user_input[CONF_BASE_URL])
            await self.async_set_unique_id(base_url)
            self._abort_if_unique_id_configured()
            api_key = user_input.get(CONF_API_KEY) or None
            models, errors = await async_validate_service(self.hass, base_url, api_key)
            if not errors:
                supports_audio = (
                    known.supports_audio
                    if known
                    else bool(user_input.get(CONF_SUPPORTS_AUDIO))
                )
                data: dict[str, Any] = {
                    CONF_ENTRY_KIND: ENTRY_KIND_PROVIDER,
                    CONF_PRESET: self._preset,
                    CONF_BASE_URL: base_url,
                    CONF_API_KEY: api_key,
                    CONF_SUPPORTS_AUDIO: supports_audio,
                }
                return self.async_create_entry(
                    title=provider_title(self._preset, base_url),
                    data=data,
                    subentries=default_subentries(self._preset, supports_audio, models),
                )
        schema: VolDictType = {
            probatio.Required(
                CONF_BASE_URL, default=known.base_url if known else ""
            ): URL_SELECTOR,
            probatio.Optional(CONF_API_KEY): API_KEY_SELECTOR,
        }
        if known is None:
            schema[probatio.Required(CONF_SUPPORTS_AUDIO, default=False)] = bool
        return self.async_show_form(
            step_id="connect",
            data_schema=self.add_suggested_values_to_schema(
                probatio.Schema(schema), user_input
            ),
            errors=errors,
            description_placeholders={"preset": PRESET_TITLES.get(self._preset, "")},
        )

    async def async_step_reauth(
        self, entry_data: Mapping[str, Any]
    ) -> ConfigFlowResult:
        """Start reauthentication after the service rejected the key."""
        return await self.async_step_reauth_confirm()

    async def async_step_reauth_confirm(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for a new key for the same service."""
        entry = self._get_reauth_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            api_key = user_input.get(CONF_API_KEY) or None
            _, errors = await async_validate_service(
                self.hass, entry.data[CONF_BASE_URL], api_key
            )
            if not errors:
                return self.async_update_reload_and_abort(
                    entry, data_updates={CONF_API_KEY: api_key}
                )
        return self.async_show_form(
            step_id="reauth_confirm",
            data_schema=probatio.Schema(
                {probatio.Optional(CONF_API_KEY): API_KEY_SELECTOR}
            ),
            errors=errors,
            description_placeholders={"name": entry.title},
        )

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Change the URL, key or audio support of a service."""
        entry = self._get_reconfigure_entry()
        errors: dict[str, str] = {}
        if user_input is not None:
            base_url = normalize_base_url(user_input[CONF_BASE_URL])
            if base_url != entry.unique_id:
                await self.async_set_unique_id(base_url)
                self._abort_if_unique_id_configured()
            api_key = user_input.get(CONF_API_KEY) or None
            _, errors = await async_validate_service(self.hass, base_url, api_key)
            if not errors:
                return self.async_update_reload_and_abort(
                    entry,
                    unique_id=base_url,
                    title=provider_title(entry.data[CONF_PRESET], base_url),
                    data_updates={
                        CONF_BASE_URL: base_url,
                        CONF_API_KEY: api_key,
                        CONF_SUPPORTS_AUDIO: user_input[CONF_SUPPORTS_AUDIO],
                    },
                )
        current = user_input or {
            CONF_BASE_URL: entry.data[CONF_BASE_URL],
            CONF_API_KEY: entry.data.get(CONF_API_KEY),
            CONF_SUPPORTS_AUDIO: entry.data[CONF_SUPPORTS_AUDIO],
        }
        return self.async_show_form(
            step_id="reconfigure",
            data_schema=self.add_suggested_values_to_schema(
                probatio.Schema(
                    {
                        probatio.Required(CONF_BASE_URL): URL_SELECTOR,
                        probatio.Optional(CONF_API_KEY): API_KEY_SELECTOR,
                        probatio.Required(CONF_SUPPORTS_AUDIO): bool,
                    }
                ),
                current,
            ),
            errors=errors,
        )

    async def async_step_integration_discovery(
        self, discovery_info: dict[str, Any]
    ) -> ConfigFlowResult:
        """Offer to pair a device that checked in with an activation request."""
        self._device = discovery_info
        mac = discovery_info[CONF_MAC]
        entry = await self.async_set_unique_id(mac)
        if entry is not None and entry.data.get(CONF_CLIENT_ID) == discovery_info.get(
            CONF_CLIENT_ID
        ):
            return self.async_abort(reason="already_configured")
        self.context["title_placeholders"] = {"mac": mac}
        return await self.async_step_pair()

    async def async_step_pair(
        self, user_input: dict[str, Any] | None = None
    ) -> ConfigFlowResult:
        """Ask for the code the device speaks, which proves it is in the person's hands."""
        mac = self._device[CONF_MAC]
        errors: dict[str, str] = {}
        if user_input is not None:
            server = async_get_server(self.hass)
            try:
                pending = server.pairings.verify(mac, user_input[CONF_CODE])
            except PairingError as err:
                if err.reason != "invalid_code":
                    server.pairing_sessions.async_void(mac)
                    return self.async_abort(reason=err.reason)
                errors[CONF_CODE] = err.reason
            else:
                server.pairing_sessions.async_paired(mac)
                return self._async_pair_device(pending)
        return self.async_show_form(
            step_id="pair",
            data_schema=probatio.Schema({probatio.Required(CONF_CODE): str}),
            errors=errors,
            description_placeholders={
                "mac": mac,
                "board": self._device.get(CONF_BOARD) or "Xiaozhi",
            },
        )

    def _async_pair_device(self, pending: PendingPairing) -> ConfigFlowResult:
        device = self._device
        data = {
            CONF_ENTRY_KIND: ENTRY_KIND_DEVICE,
            CONF_MAC: device[CONF_MAC],
            # The claim the typed code was issued to (the newest check-in).
            CONF_CLIENT_ID: pending.device.client_id,
            CONF_BOARD: device.get(CONF_BOARD, ""),
            CONF_FIRMWARE_VERSION: device.get(CONF_FIRMWARE_VERSION, ""),
            CONF_DEVICE_LANGUAGE: device.get(CONF_DEVICE_LANGUAGE, ""),
            # The token issued with this code (fresh on every pairing: a re-paired
            # device's old token dies); a client that connected with it while
            # waiting reconnects with it (server/pairing_session.py).
            CONF_TOKEN: pending.token,
        }
        entry = self.hass.config_entries.async_entry_for_domain_unique_id(
            DOMAIN, device[CONF_MAC]
        )
        if entry is not None:
            return self.async_update_reload_and_abort(
                entry, data=data, reason="repaired"
            )
        title = device_title(device)
        # The device connects only when woken: HA's satellite wizard, which opens
        # next, tests the connection, and waits for it (see assist_satellite.py).
        return self.async_create_entry(
            title=title,
            data=data,
            description=CREATE_ENTRY_PAIRED,
            description_placeholders={"device": title},
        )

    @classmethod
    @callback
    @override
    def async_get_supported_subentry_types(
        cls, config_entry: ConfigEntry
    ) -> dict[str, type[ConfigSubentryFlow]]:
        """Return the subentry types a provider entry supports."""
        if is_device_entry(config_entry):
            return {}
        types: dict[str, type[ConfigSubentryFlow]] = {
            SUBENTRY_CONVERSATION: ConversationSubentryFlow
        }
        if config_entry.data.get(CONF_SUPPORTS_AUDIO):
            types[SUBENTRY_STT] = SttSubentryFlow
            types[SUBENTRY_TTS] = TtsSubentryFlow
        return types


class _ProviderSubentryFlow(ConfigSubentryFlow):
    """Shared steps of the conversation, STT and TTS subentry flows."""

    default_name: str
    options: dict[str, Any]

    @property
    def _is_new(self) -> bool:
        return self.source == "user"

    def _defaults(self) -> dict[str, Any]:
        raise NotImplementedError

    def _fields(self) -> VolDictType:
        raise NotImplementedError

    def _model_selector(self) -> SelectSelector:
        entry: ProviderConfigEntry = self._get_entry()
        return SelectSelector(
            SelectSelectorConfig(
                options=list(entry.runtime_data.models),
                mode=SelectSelectorMode.DROPDOWN,
                custom_value=True,
                sort=True,
            )
        )

    async def async_step_user(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Add a subentry."""
        self.options = self._defaults()
        return await self.async_step_init()

    async def async_step_reconfigure(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Edit a subentry."""
        self.options = dict(self._get_reconfigure_subentry().data)
        return await self.async_step_init()

    async def async_step_init(
        self, user_input: dict[str, Any] | None = None
    ) -> SubentryFlowResult:
        """Show and store the subentry's settings."""
        if self._get_entry().state is not ConfigEntryState.LOADED:
            return self.async_abort(reason="entry_not_loaded")
        if user_input is not None:
            title = user_input.pop(CONF_NAME, None)
            data = self._clean(user_input)
            if self._is_new:
                return self.async_create_entry(title=title, data=data)
            return self.async_update_and_abort(
                self._get_entry(), self._get_reconfigure_subentry(), data=data
            )
        schema: VolDictType = {}
        if self._is_new:
            schema[probatio.Required(CONF_NAME, default=self.default_name)] = str
        schema.update(self._fields())
        return self.async_show_form(
            step_id="init",
            data_schema=self.add_suggested_values_to_schema(
                probatio.Schema(schema), self.options
            ),
        )

    def _clean(self, user_input: dict[str, Any]) -> dict[str, Any]:
        """Drop optional fields the user cleared so defaults apply again."""
        return {
            key: value
            for key, value in user_input.items()
            if value not in ("", None, [])
        }


class ConversationSubentryFlow(_ProviderSubentryFlow):
    """Configure a conversation agent on the service."""

    default_name = DEFAULT_CONVERSATION_NAME

    def _defaults(self) -> dict[str, Any]:
        entry: ProviderConfigEntry = self._get_entry()
        known = PRESETS.get(entry.data[CONF_PRESET])
        chat_model = known.chat_model if known else CUSTOM_DEFAULT_CHAT_MODEL
        models = entry.runtime_data.models
        return conversation_defaults(
            pick_model(chat_model, models),
            preset_vision_model(entry.data[CONF_PRESET], models),
        )

    def _fields(self) -> VolDictType:
        apis = [
            SelectOptionDict(label=api.name, value=api.id)
            for api in llm.async_get_apis(self.hass)
        ]
        valid = {api["value"] for api in apis}
        chosen = self.options.get(CONF_LLM_HASS_API) or []
        self.options[CONF_LLM_HASS_API] = [api for api in chosen if api in valid]
        return {
            probatio.Required(CONF_MODEL): self._model_selector(),
            probatio.Optional(CONF_VISION_MODEL): self._model_selector(),
            probatio.Optional(CONF_PROMPT): TemplateSelector(),
            probatio.Optional(CONF_LLM_HASS_API): SelectSelector(
                SelectSelectorConfig(options=apis, multiple=True)
            ),
            probatio.Optional(
                CONF_TEMPERATURE, default=RECOMMENDED_TEMPERATURE
            ): NumberSelector(NumberSelectorConfig(min=0, max=2, step=0.05)),
            probatio.Optional(
                CONF_MAX_TOKENS, default=RECOMMENDED_MAX_TOKENS
            ): NumberSelector(
                NumberSelectorConfig(
                    min=16, max=32768, step=1, mode=NumberSelectorMode.BOX
                )
            ),
        }

    @override
    def _clean(self, user_input: dict[str, Any]) -> dict[str, Any]:
        data = super()._clean(user_input)
        if CONF_MAX_TOKENS in data:
            data[CONF_MAX_TOKENS] = int(data[CONF_MAX_TOKENS])
        return data


class SttSubentryFlow(_ProviderSubentryFlow):
    """Configure speech-to-text on the service."""

    default_name = DEFAULT_STT_NAME

    def _defaults(self) -> dict[str, Any]:
        entry: ProviderConfigEntry = self._get_entry()
        known = PRESETS.get(entry.data[CONF_PRESET])
        return stt_defaults(
            (known.stt_model if known else None) or CUSTOM_DEFAULT_STT_MODEL
        )

    def _fields(self) -> VolDictType:
        return {
            probatio.Required(CONF_MODEL): self._model_selector(),
            probatio.Optional(CONF_LANGUAGE): LanguageSelector(),
            probatio.Optional(CONF_PROMPT): TextSelector(
                TextSelectorConfig(multiline=True)
            ),
        }


class TtsSubentryFlow(_ProviderSubentryFlow):
    """Configure text-to-speech on the service."""

    default_name = DEFAULT_TTS_NAME

    def _defaults(self) -> dict[str, Any]:
        entry: ProviderConfigEntry = self._get_entry()
        known = PRESETS.get(entry.data[CONF_PRESET])
        return tts_defaults(
            (known.tts_model if known else None) or CUSTOM_DEFAULT_TTS_MODEL,
            (known.tts_voice if known else None) or CUSTOM_DEFAULT_TTS_VOICE,
        )

    def _fields(self) -> VolDictType:
        return {
            probatio.Required(CONF_MODEL): self._model_selector(),
            probatio.Required(CONF_VOICE): SelectSelector(
                SelectSelectorConfig(
                    options=list(OPENAI_VOICES),
                    mode=SelectSelectorMode.DROPDOWN,
                    custom_value=True,
                )
            ),
            probatio.Optional(CONF_SPEED, default=RECOMMENDED_SPEED): NumberSelector(
                NumberSelectorConfig(min=0.25, max=4.0, step=0.05)
            ),
            probatio.Optional(CONF_INSTRUCTIONS): TextSelector(
                TextSelectorConfig(multiline=True)
            ),
        }
