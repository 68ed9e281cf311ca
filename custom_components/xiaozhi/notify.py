"""A paired device's screen as a notify entity: an alert with its chime.

The firmware shows an ``alert`` (title, text and a face) and plays its
notification sound, in a conversation or not. On MQTT+UDP the device is
connected whenever it is powered, so a notification reaches it any time; on
WebSocket only during a conversation. Unavailable while it is not connected.
"""

from homeassistant.components.notify import NotifyEntity

from .const import CONF_DEVICE_LANGUAGE
from .device.entity import XiaozhiDeviceEntity, device_platform, not_connected_error
from .device.messages import device_message
from .device.runtime import DeviceConfigEntry
from .device.supervisor import SessionClosedError

# Each notification is one message to the device.
PARALLEL_UPDATES = 0
ALERT_EMOTION = "neutral"


class XiaozhiNotifyEntity(XiaozhiDeviceEntity, NotifyEntity):
    """Shows a message on the device's screen with its notification sound."""

    _attr_translation_key = "alert"

    def __init__(self, entry: DeviceConfigEntry) -> None:
        """Describe the notify entity of the device of ``entry``."""
        super().__init__(entry, "alert")

    @property
    def available(self) -> bool:
        """Return whether the device is connected."""
        return self.runtime.connected

    async def async_send_message(self, message: str, title: str | None = None) -> None:
        """Show ``message`` (under ``title``) on the device.

        Raises:
            HomeAssistantError: The device is not connected, or left meanwhile.
        """
        link = self.runtime.link
        title = title or device_message(
            "announcement_title", self.entry.data.get(CONF_DEVICE_LANGUAGE)
        )
        if link is None or not link.ready:
            raise not_connected_error(self.entry)
        try:
            await link.send_alert(title, message or " ", ALERT_EMOTION)
        except SessionClosedError as err:
            raise not_connected_error(self.entry) from err


# The device's notify entity.
async_setup_entry = device_platform(lambda _hass, entry: [XiaozhiNotifyEntity(entry)])
