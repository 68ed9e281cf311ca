"""The entities of a paired Xiaozhi device: their base, registry info, unique ids."""

from collections.abc import Callable, Coroutine, Mapping
from typing import Any

from homeassistant.core import HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from ..const import CONF_BOARD, CONF_FIRMWARE_VERSION, CONF_MAC, DOMAIN
from ..protocol.sanitize import clean_field
from .runtime import DeviceConfigEntry, DeviceRuntime

MANUFACTURER = "Xiaozhi (xiaozhi-esp32)"

# The keys assist_pipeline's selects put after the unique id prefix (the MAC).
PIPELINE_KEY = "pipeline"
VAD_SENSITIVITY_KEY = "vad_sensitivity"


def pipeline_select_unique_id(mac: str) -> str:
    """Return the unique id of the pipeline select of the device with ``mac``."""
    return f"{mac}-{PIPELINE_KEY}"


def vad_sensitivity_select_unique_id(mac: str) -> str:
    """Return the unique id of the VAD sensitivity select of the device with ``mac``."""
    return f"{mac}-{VAD_SENSITIVITY_KEY}"


type PlatformSetup = Callable[
    [HomeAssistant, DeviceConfigEntry, AddConfigEntryEntitiesCallback],
    Coroutine[Any, Any, None],
]


def device_platform(
    create: Callable[[HomeAssistant, DeviceConfigEntry], list[Entity]],
) -> PlatformSetup:
    """Return a platform's ``async_setup_entry``: the entities ``create`` makes."""

    async def async_setup_entry(
        hass: HomeAssistant,
        entry: DeviceConfigEntry,
        async_add_entities: AddConfigEntryEntitiesCallback,
    ) -> None:
        """Add the device's entities of this platform."""
        async_add_entities(create(hass, entry))

    return async_setup_entry


def device_registry_info(data: Mapping[str, Any]) -> dict[str, Any]:
    """Describe the device for the device registry from its entry data."""
    mac: str = data[CONF_MAC]
    # Cleaned at check-in; again here for entries stored before that.
    board = clean_field(str(data.get(CONF_BOARD) or ""), 64) or "Xiaozhi"
    version = clean_field(str(data.get(CONF_FIRMWARE_VERSION) or ""), 32)
    return {
        "identifiers": {(DOMAIN, mac)},
        "connections": {(dr.CONNECTION_NETWORK_MAC, mac)},
        "name": f"{board} {mac.replace(':', '')[-6:]}",
        "manufacturer": MANUFACTURER,
        "model": board,
        "sw_version": version or None,
    }


def not_connected_error(entry: DeviceConfigEntry) -> HomeAssistantError:
    """Return the error of an action that needs the device while it is away."""
    return HomeAssistantError(
        translation_domain=DOMAIN,
        translation_key="device_not_connected",
        translation_placeholders={"device": entry.title},
    )


class XiaozhiDeviceEntity(Entity):
    """An entity of a paired device, refreshed whenever its session changes."""

    _attr_has_entity_name = True
    _attr_should_poll = False

    def __init__(self, entry: DeviceConfigEntry, key: str) -> None:
        """Name the entity after its key on the device's device page."""
        self.entry = entry
        self.runtime: DeviceRuntime = entry.runtime_data
        self._attr_unique_id = f"{entry.data[CONF_MAC]}-{key}"
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, entry.data[CONF_MAC])}
        )

    async def async_added_to_hass(self) -> None:
        """Follow the device's session."""
        await super().async_added_to_hass()
        self.async_on_remove(
            self.runtime.async_add_listener(self._async_device_changed)
        )

    @callback
    def _async_device_changed(self) -> None:
        """Write the new state; subclasses may refresh attributes first."""
        self.async_write_ha_state()
