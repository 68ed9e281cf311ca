"""A paired device's reboot button.

The firmware reboots on ``{"type": "system", "command": "reboot"}``, in a
conversation or not. Available while the device is connected (on MQTT+UDP
whenever it is powered). Named after its device class ("Restart"), which Home
Assistant translates itself.
"""

from homeassistant.components.button import ButtonEntity
from homeassistant.const import EntityCategory

from .device.entity import XiaozhiDeviceEntity, device_platform, not_connected_error
from .device.runtime import DeviceConfigEntry
from .device.supervisor import SessionClosedError
from .ha_internals import ButtonDeviceClass

# A press is one message to the device.
PARALLEL_UPDATES = 0


class XiaozhiRebootButton(XiaozhiDeviceEntity, ButtonEntity):
    """Reboots the device."""

    _attr_device_class = ButtonDeviceClass.RESTART
    _attr_entity_category = EntityCategory.CONFIG

    def __init__(self, entry: DeviceConfigEntry) -> None:
        """Describe the reboot button of the device of ``entry``."""
        super().__init__(entry, "reboot")

    @property
    def available(self) -> bool:
        """Return whether the device is connected."""
        return self.runtime.connected

    async def async_press(self) -> None:
        """Tell the device to reboot.

        Raises:
            HomeAssistantError: The device is not connected, or left meanwhile.
        """
        link = self.runtime.link
        if link is None or not link.ready:
            raise not_connected_error(self.entry)
        try:
            await link.reboot()
        except SessionClosedError as err:
            raise not_connected_error(self.entry) from err


# The device's reboot button.
async_setup_entry = device_platform(lambda _hass, entry: [XiaozhiRebootButton(entry)])
