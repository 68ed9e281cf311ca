"""Speaker volume and screen brightness of a paired device, over its MCP tools.

The firmware (main/mcp_server.cc, ``AddCommonTools``) offers
``self.audio_speaker.set_volume`` ``{volume: 0-100}`` on every board and
``self.screen.set_brightness`` ``{brightness: 0-100}`` only on boards with a
backlight; ``self.get_device_status`` returns JSON with
``audio_speaker.volume`` and ``screen.brightness``.

The tool list is only known while the device is connected, so the names of the
tools of its last listing are kept in the entry (``mcp_tools``): after a restart
the entities exist at once, unavailable until the device connects. A listing
adds the entities of new tools and removes those of tools the device no longer
offers (another firmware or board), and the values are read from the device's
status once per connection. A set value is shown as set when the device
confirms it: reading the status back would catch the backlight mid-fade. A
change the device makes itself (a voice command, its buttons) shows at its next
connection.
"""

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
import json
import math
from typing import Any, Final

from homeassistant.components.number import (
    DOMAIN as NUMBER_DOMAIN,
    NumberEntity,
    NumberEntityDescription,
    NumberMode,
)
from homeassistant.const import PERCENTAGE, EntityCategory
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN, LOGGER
from .device.entity import XiaozhiDeviceEntity
from .device.link import DeviceLink
from .device.runtime import DeviceConfigEntry, DeviceRuntime
from .protocol.mcp import McpClosedError, McpError, McpTimeoutError, McpTool

# Device calls go over the device's own socket, which takes them in parallel.
PARALLEL_UPDATES = 0

STATUS_TOOL: Final = "self.get_device_status"
VOLUME_TOOL: Final = "self.audio_speaker.set_volume"
BRIGHTNESS_TOOL: Final = "self.screen.set_brightness"
# Entry data: the tool names of the device's last listing, sorted.
CONF_MCP_TOOLS: Final = "mcp_tools"
# Both tools run in the device's main loop at once; a busy device still answers
# well within this.
TOOL_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, kw_only=True)
class XiaozhiNumberEntityDescription(NumberEntityDescription):
    """A device setting set through one MCP tool and read from the device status.

    Attributes:
        tool: The tool that sets the value.
        argument: The tool's integer argument.
        status_path: Where ``self.get_device_status`` reports the value.
    """

    tool: str
    argument: str
    status_path: tuple[str, ...]


NUMBERS: Final = (
    XiaozhiNumberEntityDescription(
        key="volume",
        translation_key="volume",
        entity_category=EntityCategory.CONFIG,
        native_min_value=0,
        native_max_value=100,
        native_step=1,
        native_unit_of_measurement=PERCENTAGE,
        mode=NumberMode.SLIDER,
        tool=VOLUME_TOOL,
        argument="volume",
        status_path=("audio_speaker", "volume"),
    ),
    XiaozhiNumberEntityDescription(
        key="screen_brightness",
        translation_key="screen_brightness",
        entity_category=EntityCategory.CONFIG,
        native_min_value=0,
        native_max_value=100,
        native_step=1,
        native_unit_of_measurement=PERCENTAGE,
        mode=NumberMode.SLIDER,
        tool=BRIGHTNESS_TOOL,
        argument="brightness",
        status_path=("screen", "brightness"),
    ),
)


def stored_tool_names(data: Mapping[str, Any]) -> frozenset[str]:
    """Return the tool names kept in a device entry's data (none if absent or bad)."""
    names = data.get(CONF_MCP_TOOLS)
    if not isinstance(names, list):
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str))


def offered_numbers(
    tool_names: Iterable[str],
) -> tuple[XiaozhiNumberEntityDescription, ...]:
    """Return the numbers a device with these tools has."""
    names = set(tool_names)
    return tuple(description for description in NUMBERS if description.tool in names)


def _integer_at(status: Mapping[str, Any], path: tuple[str, ...]) -> int | None:
    node: Any = status
    for part in path:
        if not isinstance(node, Mapping):
            return None
        node = node.get(part)
    if isinstance(node, bool) or not isinstance(node, int | float):
        return None
    if not math.isfinite(node):
        return None
    return round(node)


def parse_device_status(text: str) -> dict[str, int]:
    """Return the numbers' values (by key) in a ``self.get_device_status`` reply.

    Values that are missing or not numbers are left out; so is everything when
    the reply is not a JSON object.
    """
    try:
        status = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(status, Mapping):
        return {}
    values: dict[str, int] = {}
    for description in NUMBERS:
        value = _integer_at(status, description.status_path)
        if value is not None:
            values[description.key] = value
    return values


async def async_setup_entry(
    hass: HomeAssistant,
    entry: DeviceConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the numbers of the tools the device offered, now and as it lists them."""
    numbers = DeviceNumbers(hass, entry, async_add_entities)
    entry.async_on_unload(numbers.async_start())


class DeviceNumbers:
    """The number entities of one device: which exist, their values, their calls.

    Attributes:
        entities: The entities created, by description key.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        entry: DeviceConfigEntry,
        add_entities: AddConfigEntryEntitiesCallback,
    ) -> None:
        """Serve the device of ``entry``; call :meth:`async_start`."""
        self.hass = hass
        self.entry = entry
        self.runtime: DeviceRuntime = entry.runtime_data
        self.entities: dict[str, XiaozhiNumber] = {}
        self._add_entities = add_entities
        # The listing handled last: the runtime keeps a listing's tuple until
        # the next listing replaces it.
        self._handled_tools: tuple[McpTool, ...] = ()
        self._was_available = self.available

    @property
    def available(self) -> bool:
        """Return whether the device can take tool calls now."""
        link = self.runtime.link
        return self.runtime.connected and link is not None and link.mcp_supported

    @callback
    def async_start(self) -> CALLBACK_TYPE:
        """Create the entities of the stored tools and follow the device.

        Returns the call that stops following it.
        """
        self._async_sync_entities(stored_tool_names(self.entry.data))
        unsubscribe = self.runtime.async_add_listener(self._async_device_changed)
        self._async_device_changed()
        return unsubscribe

    @callback
    def _async_device_changed(self) -> None:
        self._log_availability_change()
        tools = self.runtime.tools
        if tools is not self._handled_tools:
            self._handled_tools = tools
            self._async_tools_listed(tools)

    def _log_availability_change(self) -> None:
        available = self.available
        if available == self._was_available:
            return
        self._was_available = available
        if not self.entities:
            return
        if available:
            LOGGER.info("%s is connected: its settings can be changed", self._name)
        else:
            LOGGER.info(
                "%s is not connected: its settings are unavailable until it"
                " connects again",
                self._name,
            )

    @property
    def _name(self) -> str:
        return self.entry.title

    @callback
    def _async_tools_listed(self, tools: tuple[McpTool, ...]) -> None:
        names = frozenset(tool.name for tool in tools)
        if not names:
            # A device serves at least its common tools: an empty list tells nothing.
            return
        if names != stored_tool_names(self.entry.data):
            self.hass.config_entries.async_update_entry(
                self.entry, data={**self.entry.data, CONF_MCP_TOOLS: sorted(names)}
            )
        self._async_sync_entities(names)
        link = self.runtime.link
        if (
            self.entities
            and STATUS_TOOL in names
            and link is not None
            and self.available
        ):
            link.create_task(self._async_read_status(link), "read status")

    @callback
    def _async_sync_entities(self, tool_names: Iterable[str]) -> None:
        wanted = offered_numbers(tool_names)
        new = [
            XiaozhiNumber(self, description)
            for description in wanted
            if description.key not in self.entities
        ]
        for entity in new:
            self.entities[entity.entity_description.key] = entity
        if new:
            self._add_entities(new)
        gone = self.entities.keys() - {description.key for description in wanted}
        for key in gone:
            self._async_remove_entity(self.entities.pop(key))

    @callback
    def _async_remove_entity(self, entity: XiaozhiNumber) -> None:
        registry = er.async_get(self.hass)
        assert entity.unique_id is not None
        entity_id = registry.async_get_entity_id(
            NUMBER_DOMAIN, DOMAIN, entity.unique_id
        )
        if entity_id is not None:
            # The entity leaves Home Assistant with its registry entry.
            LOGGER.info(
                "%s no longer offers %s: removing %s",
                self._name,
                entity.entity_description.tool,
                entity_id,
            )
            registry.async_remove(entity_id)

    async def _async_read_status(self, link: DeviceLink) -> None:
        try:
            result = await link.call_tool(STATUS_TOOL, reply_timeout=TOOL_TIMEOUT_S)
        except McpError as err:
            LOGGER.debug("Could not read the status of %s: %s", self._name, err)
            return
        if result.is_error:
            LOGGER.debug("%s failed to report its status: %s", self._name, result.text)
            return
        for key, value in parse_device_status(result.text).items():
            if (entity := self.entities.get(key)) is not None:
                entity.async_show_value(value)

    async def async_set(
        self, description: XiaozhiNumberEntityDescription, value: int
    ) -> None:
        """Set one setting on the device.

        Raises:
            HomeAssistantError: The device is not connected, went away, did not
                answer in time or refused the value.
        """
        link = self.runtime.link
        if link is None or not self.available:
            raise self._error("device_not_connected")
        try:
            result = await link.call_tool(
                description.tool,
                {description.argument: value},
                reply_timeout=TOOL_TIMEOUT_S,
            )
        except McpClosedError as err:
            raise self._error("device_not_connected") from err
        except McpTimeoutError as err:
            raise self._error("device_timeout") from err
        except McpError as err:
            raise self._error("device_error", error=str(err)) from err
        if result.is_error:
            raise self._error("device_error", error=result.text)

    def _error(self, key: str, **placeholders: str) -> HomeAssistantError:
        return HomeAssistantError(
            translation_domain=DOMAIN,
            translation_key=key,
            translation_placeholders={"device": self._name, **placeholders},
        )


class XiaozhiNumber(XiaozhiDeviceEntity, NumberEntity):
    """A device setting from 0 to 100, available while the device is connected."""

    entity_description: XiaozhiNumberEntityDescription

    def __init__(
        self, numbers: DeviceNumbers, description: XiaozhiNumberEntityDescription
    ) -> None:
        """Describe the setting of the device ``numbers`` serves."""
        super().__init__(numbers.entry, description.key)
        self.entity_description = description
        self._numbers = numbers

    @property
    def available(self) -> bool:
        """Return whether the device is connected and serves its tools."""
        return self._numbers.available

    async def async_set_native_value(self, value: float) -> None:
        """Send the value to the device; show it once the device took it."""
        level = round(value)
        await self._numbers.async_set(self.entity_description, level)
        self.async_show_value(level)

    @callback
    def async_show_value(self, value: int) -> None:
        """Show a value the device reported or confirmed."""
        self._attr_native_value = value
        if self.hass is not None:
            self.async_write_ha_state()
