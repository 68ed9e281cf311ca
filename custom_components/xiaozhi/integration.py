"""The Xiaozhi integration: Home Assistant as the server for Xiaozhi voice devices."""

from functools import partial
from typing import Final

import openai

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import CONF_API_KEY, EVENT_HOMEASSISTANT_STOP, Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import ConfigEntryAuthFailed, ConfigEntryNotReady
from homeassistant.helpers import config_validation as cv, device_registry as dr, llm
from homeassistant.helpers.typing import ConfigType

from .config_flow import XiaozhiConfigFlow
from .const import CONF_BASE_URL, CONF_MAC, DOMAIN
from .device.entity import device_registry_info
from .device.firmware_check import (
    async_forget_firmware_issue,
    async_track_firmware_features,
)
from .device.runtime import DeviceConfigEntry, DeviceRuntime, is_device_entry
from .device.tools_api import DeviceToolsAPI
from .pairing_voice import async_speak_code
from .photo_answers import async_answer_photo
from .pipeline_setup import async_offer_voice_pipeline
from .provider.client import (
    ProviderConfigEntry,
    ProviderRuntime,
    async_create_client,
    async_list_models,
)
from .server.ota import ActivateView, OtaView
from .server.registry import DATA_SERVER, XiaozhiServer, async_get_server
from .server.vision import VisionView
from .transport.mqtt import async_get_mqtt, async_setup_mqtt
from .transport.websocket import async_setup_websocket
from .voice.pipeline_check import async_forget_pipeline_issue
from .voice.timers import async_setup_timers

CONFIG_SCHEMA = cv.config_entry_only_config_schema(DOMAIN)

# Entry data that version 1.1 kept on device entries: the WebSocket framing they
# were handed (always 1), which the WebSocket transport owns now.
_STALE_DEVICE_KEYS: Final = ("protocol_version",)

PROVIDER_PLATFORMS: tuple[Platform, ...] = (
    Platform.CONVERSATION,
    Platform.STT,
    Platform.TTS,
)
DEVICE_PLATFORMS: tuple[Platform, ...] = (
    Platform.ASSIST_SATELLITE,
    Platform.BINARY_SENSOR,
    Platform.BUTTON,
    Platform.IMAGE,
    Platform.NOTIFY,
    Platform.NUMBER,
    Platform.SELECT,
    Platform.SENSOR,
)


def _platforms(entry: ConfigEntry) -> tuple[Platform, ...]:
    if is_device_entry(entry):
        return DEVICE_PLATFORMS
    return PROVIDER_PLATFORMS


async def async_setup(hass: HomeAssistant, config: ConfigType) -> bool:
    """Start the device server: its HTTP views live as long as HA, entries come and go."""
    server = hass.data[DATA_SERVER] = XiaozhiServer(hass)
    hass.http.register_view(OtaView())
    hass.http.register_view(ActivateView())
    hass.http.register_view(VisionView(async_answer_photo))
    async_setup_websocket(hass)
    server.pairing_sessions.speaker = partial(async_speak_code, hass)
    async_setup_mqtt(hass)
    llm.async_register_api(hass, DeviceToolsAPI(hass))
    await async_setup_timers(hass)
    hass.bus.async_listen_once(EVENT_HOMEASSISTANT_STOP, server.async_shutdown)
    return True


async def async_setup_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Set up a provider or a paired device from a config entry."""
    if is_device_entry(entry):
        _async_setup_device(hass, entry)
        # The first device starts the MQTT endpoint (the last one stops it).
        await async_get_mqtt(hass).async_start()
    else:
        await _async_setup_provider(hass, entry)
        # Subentry changes add or change entities. (Device entries are not reloaded
        # on data changes: a check-in refreshing the firmware version must not drop
        # the live session.)
        entry.async_on_unload(entry.add_update_listener(_async_reload_on_update))
    await hass.config_entries.async_forward_entry_setups(entry, _platforms(entry))
    if not is_device_entry(entry):
        # A fresh HA's preferred pipeline has no speech: give it the service's.
        entry.async_on_unload(async_offer_voice_pipeline(hass, entry))
    return True


@callback
def _async_setup_device(hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
    entry.runtime_data = DeviceRuntime(entry.data[CONF_MAC])
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, **device_registry_info(entry.data)
    )
    entry.async_on_unload(entry.add_update_listener(_async_refresh_device))
    entry.async_on_unload(async_track_firmware_features(hass, entry))


async def _async_refresh_device(hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
    """Show a new firmware version or board on the device page at once."""
    dr.async_get(hass).async_get_or_create(
        config_entry_id=entry.entry_id, **device_registry_info(entry.data)
    )


async def _async_setup_provider(
    hass: HomeAssistant, entry: ProviderConfigEntry
) -> None:
    client = await async_create_client(
        hass, entry.data[CONF_BASE_URL], entry.data.get(CONF_API_KEY)
    )
    try:
        models = await async_list_models(client)
    except openai.AuthenticationError as err:
        raise ConfigEntryAuthFailed(
            translation_domain=DOMAIN, translation_key="invalid_auth"
        ) from err
    except openai.OpenAIError as err:
        raise ConfigEntryNotReady(
            translation_domain=DOMAIN,
            translation_key="cannot_connect",
            translation_placeholders={"error": str(err)},
        ) from err
    entry.runtime_data = ProviderRuntime(client=client, models=models)


async def async_migrate_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Bring an entry stored by an older version of the integration up to date.

    Returns False for an entry of a newer major version (after a downgrade):
    this version cannot know what it means.
    """
    if entry.version > XiaozhiConfigFlow.VERSION:
        return False
    if entry.minor_version < 2:
        data = {
            key: value
            for key, value in entry.data.items()
            if key not in _STALE_DEVICE_KEYS
        }
        hass.config_entries.async_update_entry(entry, data=data, minor_version=2)
    return True


async def async_unload_entry(hass: HomeAssistant, entry: ConfigEntry) -> bool:
    """Unload a config entry; a device's open connection is closed at once."""
    if is_device_entry(entry):
        await async_get_server(hass).async_disconnect(
            entry.data[CONF_MAC], "device entry unloaded"
        )
        if not any(
            other.entry_id != entry.entry_id
            and is_device_entry(other)
            and other.state is ConfigEntryState.LOADED
            for other in hass.config_entries.async_entries(DOMAIN)
        ):
            await async_get_mqtt(hass).async_stop()
    return await hass.config_entries.async_unload_platforms(entry, _platforms(entry))


async def async_remove_entry(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Forget what a removed device left behind outside its entry."""
    if is_device_entry(entry):
        async_forget_firmware_issue(hass, entry)
        async_forget_pipeline_issue(hass, entry.entry_id)


async def _async_reload_on_update(hass: HomeAssistant, entry: ConfigEntry) -> None:
    """Reload so entities follow subentry and option changes."""
    await hass.config_entries.async_reload(entry.entry_id)
