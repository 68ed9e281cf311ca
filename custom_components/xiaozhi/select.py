"""The Assist pipeline, "finished speaking" and transport selects of a paired device.

They are Home Assistant's own selects from assist_pipeline, attached to the
device: their unique ids are ``<mac>-pipeline`` and ``<mac>-vad_sensitivity``,
which is how the device's assist satellite (and assist_pipeline's
``get_chosen_pipeline`` / ``get_vad_sensitivity``) find them in the entity
registry. Their choice is restored across restarts by the base classes and works
whether or not the device is connected.

The transport select (``<mac>-transport``) picks what the device's OTA answer
names: MQTT+UDP (the default; the device stays connected) or WebSocket (it
connects for each conversation). It is stored in the entry's options. The
firmware picks its transport once per boot, so a change reboots a connected
device, which checks in and takes the new one.
"""

from homeassistant.components.assist_pipeline import (
    AssistPipelineSelect,
    VadSensitivitySelect,
)
from homeassistant.components.select import SelectEntity
from homeassistant.const import EntityCategory
from homeassistant.core import HomeAssistant

from .const import (
    CONF_MAC,
    CONF_TRANSPORT,
    DOMAIN,
    LOGGER,
    TRANSPORT_MQTT,
    TRANSPORT_WEBSOCKET,
)
from .device.entity import (
    PIPELINE_KEY,
    VAD_SENSITIVITY_KEY,
    XiaozhiDeviceEntity,
    device_platform,
)
from .device.runtime import DeviceConfigEntry
from .device.supervisor import SessionClosedError
from .transport.mqtt import device_transport

# Choosing an option only stores it; nothing is sent to the device.
PARALLEL_UPDATES = 0


class XiaozhiPipelineSelect(XiaozhiDeviceEntity, AssistPipelineSelect):
    """Which Assist pipeline the device's voice requests run through."""

    def __init__(self, hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
        """Attach assist_pipeline's pipeline select to the device of ``entry``."""
        XiaozhiDeviceEntity.__init__(self, entry, PIPELINE_KEY)
        AssistPipelineSelect.__init__(self, hass, DOMAIN, entry.data[CONF_MAC])


class XiaozhiVadSensitivitySelect(XiaozhiDeviceEntity, VadSensitivitySelect):
    """How soon a pause ends the person's request."""

    def __init__(self, hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
        """Attach assist_pipeline's VAD sensitivity select to the device of ``entry``."""
        XiaozhiDeviceEntity.__init__(self, entry, VAD_SENSITIVITY_KEY)
        VadSensitivitySelect.__init__(self, hass, entry.data[CONF_MAC])


class XiaozhiTransportSelect(XiaozhiDeviceEntity, SelectEntity):
    """How the device reaches Home Assistant: MQTT+UDP or WebSocket."""

    _attr_entity_category = EntityCategory.CONFIG
    _attr_translation_key = "transport"
    _attr_options = [TRANSPORT_MQTT, TRANSPORT_WEBSOCKET]  # noqa: RUF012 (HA's type)

    def __init__(self, entry: DeviceConfigEntry) -> None:
        """Describe the transport select of the device of ``entry``."""
        super().__init__(entry, CONF_TRANSPORT)

    @property
    def current_option(self) -> str:
        """Return the transport the device's OTA answer names."""
        return device_transport(self.entry)

    async def async_select_option(self, option: str) -> None:
        """Store the choice; a connected device reboots to take it."""
        if option == self.current_option:
            return
        self.hass.config_entries.async_update_entry(
            self.entry, options={**self.entry.options, CONF_TRANSPORT: option}
        )
        self.async_write_ha_state()
        link = self.runtime.link
        if link is None or link.closed:
            return  # it takes the new transport at its next boot
        LOGGER.info("Rebooting %s to switch it to %s", link.name, option)
        try:
            await link.reboot()
        except SessionClosedError:
            LOGGER.debug("%s left before it could be rebooted", link.name)


# The device's pipeline, VAD sensitivity and transport selects.
async_setup_entry = device_platform(
    lambda hass, entry: [
        XiaozhiPipelineSelect(hass, entry),
        XiaozhiVadSensitivitySelect(hass, entry),
        XiaozhiTransportSelect(entry),
    ]
)
