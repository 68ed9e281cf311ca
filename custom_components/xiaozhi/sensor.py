"""How long a paired device's last reply took to start: a diagnostic sensor.

The time from the end of the user's speech (HA's VAD, or the device's
``listen stop``) to the first audio of the reply. HA's pipeline debug view
shows the stages up to the intent; the speaking stage is this integration's
own, so this is where the user sees the whole wait. Kept across restarts.
"""

from typing import override

from homeassistant.components.sensor import (
    RestoreSensor,
    SensorDeviceClass,
    SensorEntityDescription,
    SensorStateClass,
)
from homeassistant.const import EntityCategory, UnitOfTime
from homeassistant.core import callback

from .device.entity import XiaozhiDeviceEntity, device_platform
from .device.runtime import DeviceConfigEntry

PARALLEL_UPDATES = 0

REPLY_DELAY_KEY = "last_reply_delay"


class XiaozhiReplyDelaySensor(XiaozhiDeviceEntity, RestoreSensor):
    """End of speech → first audio of the device's last reply, in milliseconds."""

    entity_description = SensorEntityDescription(
        key=REPLY_DELAY_KEY,
        translation_key=REPLY_DELAY_KEY,
        device_class=SensorDeviceClass.DURATION,
        state_class=SensorStateClass.MEASUREMENT,
        native_unit_of_measurement=UnitOfTime.MILLISECONDS,
        suggested_display_precision=0,
        entity_category=EntityCategory.DIAGNOSTIC,
    )

    def __init__(self, entry: DeviceConfigEntry) -> None:
        """Describe the sensor of the device of ``entry``."""
        super().__init__(entry, REPLY_DELAY_KEY)
        self._attr_native_value: int | None = None

    @override
    async def async_added_to_hass(self) -> None:
        """Show the last delay measured before a restart until the next reply."""
        await super().async_added_to_hass()
        if (
            self.runtime.last_reply_delay is None
            and (last := await self.async_get_last_sensor_data()) is not None
            and isinstance(last.native_value, int | float)
        ):
            self._attr_native_value = round(last.native_value)
        self._refresh()

    @callback
    @override
    def _async_device_changed(self) -> None:
        self._refresh()
        super()._async_device_changed()

    def _refresh(self) -> None:
        if (seconds := self.runtime.last_reply_delay) is not None:
            self._attr_native_value = round(seconds * 1000)


# The device's reply delay sensor.
async_setup_entry = device_platform(
    lambda _hass, entry: [XiaozhiReplyDelaySensor(entry)]
)
