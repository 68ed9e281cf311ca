"""Speaker volume and screen brightness of a paired device, as number entities.

Which numbers a device has, their values and the tool calls that set them are
decided by its settings controller (``device/settings.py``); the entities here
show them and hand changes to it.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from homeassistant.components.number import (
    NumberEntityDescription,
    NumberMode,
    RestoreNumber,
)
from homeassistant.const import PERCENTAGE, EntityCategory
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .device.entity import XiaozhiDeviceEntity
from .device.runtime import DeviceConfigEntry
from .device.settings import (
    SCREEN_BRIGHTNESS,
    VOLUME,
    DeviceNumbers,
    DeviceSetting,
    offered_settings,
)

# Device calls go over the device's own socket, which takes them in parallel.
PARALLEL_UPDATES = 0


@dataclass(frozen=True, kw_only=True)
class XiaozhiNumberEntityDescription(NumberEntityDescription):
    """A device setting shown as a 0-100 % slider.

    Attributes:
        setting: The setting, its tool and where the device reports it.
    """

    setting: DeviceSetting


def _percentage(setting: DeviceSetting) -> XiaozhiNumberEntityDescription:
    return XiaozhiNumberEntityDescription(
        key=setting.key,
        translation_key=setting.key,
        entity_category=EntityCategory.CONFIG,
        native_min_value=0,
        native_max_value=100,
        native_step=1,
        native_unit_of_measurement=PERCENTAGE,
        mode=NumberMode.SLIDER,
        setting=setting,
    )


NUMBERS: Final = {
    setting.key: _percentage(setting) for setting in (VOLUME, SCREEN_BRIGHTNESS)
}


def offered_numbers(
    tool_names: Iterable[str],
) -> tuple[XiaozhiNumberEntityDescription, ...]:
    """Return the numbers a device with these tools has."""
    return tuple(NUMBERS[setting.key] for setting in offered_settings(tool_names))


async def async_setup_entry(
    hass: HomeAssistant,
    entry: DeviceConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the numbers of the tools the device offered, now and as it lists them."""
    numbers = DeviceNumbers(hass, entry, async_add_entities, new_number)
    entry.async_on_unload(numbers.async_start())


def new_number(
    numbers: DeviceNumbers[XiaozhiNumber], setting: DeviceSetting
) -> XiaozhiNumber:
    """Create the entity of one of the device's settings."""
    return XiaozhiNumber(numbers, NUMBERS[setting.key])


class XiaozhiNumber(XiaozhiDeviceEntity, RestoreNumber):
    """A device setting from 0 to 100, available while the device is connected.

    The value last known is restored after a restart; a device that offers no
    way to read the setting keeps it as an assumed state (what was last set).
    """

    entity_description: XiaozhiNumberEntityDescription

    def __init__(
        self,
        numbers: DeviceNumbers[XiaozhiNumber],
        description: XiaozhiNumberEntityDescription,
    ) -> None:
        """Describe the setting of the device ``numbers`` serves."""
        super().__init__(numbers.entry, description.key)
        self.entity_description = description
        self._numbers = numbers

    @property
    def available(self) -> bool:
        """Return whether the device is connected and serves its tools."""
        return self._numbers.available

    @property
    def assumed_state(self) -> bool:
        """Return True when the device cannot report the value (it is what was set)."""
        return not self._numbers.reports_value(self.entity_description.setting)

    async def async_added_to_hass(self) -> None:
        """Show the last known value until the device reports one."""
        await super().async_added_to_hass()
        if self._attr_native_value is not None:
            return
        last = await self.async_get_last_number_data()
        if last is not None and last.native_value is not None:
            self._attr_native_value = round(last.native_value)

    async def async_set_native_value(self, value: float) -> None:
        """Send the value to the device; show it once the device took it."""
        level = round(value)
        await self._numbers.async_set(self.entity_description.setting, level)
        self.async_show_value(level)

    @callback
    def async_show_value(self, value: int) -> None:
        """Show a value the device reported or confirmed."""
        self._attr_native_value = value
        if self.hass is not None:
            self.async_write_ha_state()
