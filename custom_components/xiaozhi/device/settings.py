"""Speaker volume and screen brightness of a paired device, over its MCP tools.

The controller of the number platform's entities (``number.py``):

The firmware (main/mcp_server.cc, ``AddCommonTools``) offers
``self.audio_speaker.set_volume`` ``{volume: 0-100}`` on every board and
``self.screen.set_brightness`` ``{brightness: 0-100}`` only on boards with a
backlight; ``self.get_device_status`` returns JSON with
``audio_speaker.volume`` and ``screen.brightness``. Clients without that
status tool may have a getter of their own: py-xiaozhi offers
``self.audio_speaker.get_volume`` (the volume as a bare number); its value is
read from there. A setting the device offers no way to read is shown as an
assumed state: the value last set from Home Assistant (kept across restarts),
which is what the device has unless something else changed it, rather than a
slider stuck at "unknown".

The tool list is only known while the device is connected, so the names of the
tools of its last listing are kept in the entry (``mcp_tools``): after a restart
the entities exist at once, unavailable until the device connects. A listing
adds the entities of new tools and removes those of tools the device no longer
offers (another firmware or board), and the values are read from the device's
status once per connection. A set value is shown as set when the device
confirms it: reading the status back would catch the backlight mid-fade. So is
a value an assistant set through the device's tools (``device/tools_api.py``
tells the runtime's tool call listeners); a change the device makes itself (its
buttons) shows at its next connection.
"""

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
import json
import math
from typing import Any, Final, Protocol

from homeassistant.components.number import DOMAIN as NUMBER_DOMAIN
from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er

from ..const import DOMAIN, LOGGER
from ..protocol.mcp import McpClosedError, McpError, McpTimeoutError, McpTool
from .link import DeviceLink
from .runtime import DeviceConfigEntry, DeviceRuntime

STATUS_TOOL: Final = "self.get_device_status"
VOLUME_TOOL: Final = "self.audio_speaker.set_volume"
# py-xiaozhi (src/mcp/tools/volume/register.py): no status tool, a volume getter.
VOLUME_GETTER_TOOL: Final = "self.audio_speaker.get_volume"
BRIGHTNESS_TOOL: Final = "self.screen.set_brightness"
# Entry data: the tool names of the device's last listing, sorted.
CONF_MCP_TOOLS: Final = "mcp_tools"
# Both tools run in the device's main loop at once; a busy device still answers
# well within this.
TOOL_TIMEOUT_S: Final = 10.0


@dataclass(frozen=True, slots=True)
class DeviceSetting:
    """A 0-100 setting of the device: set through one MCP tool, read from its status.

    Attributes:
        key: Names the setting (and its entity's unique id).
        tool: The tool that sets the value.
        argument: The tool's integer argument.
        status_path: Where ``self.get_device_status`` reports the value.
        getter: A tool that reports only this value, for devices without the
            status tool.
    """

    key: str
    tool: str
    argument: str
    status_path: tuple[str, ...]
    getter: str | None = None


VOLUME: Final = DeviceSetting(
    "volume",
    VOLUME_TOOL,
    "volume",
    ("audio_speaker", "volume"),
    getter=VOLUME_GETTER_TOOL,
)
SCREEN_BRIGHTNESS: Final = DeviceSetting(
    "screen_brightness", BRIGHTNESS_TOOL, "brightness", ("screen", "brightness")
)
SETTINGS: Final = (VOLUME, SCREEN_BRIGHTNESS)


class SettingEntity(Protocol):
    """What the controller needs of the entity that shows one setting."""

    @property
    def unique_id(self) -> str | None:
        """Return the entity's unique id."""

    def async_show_value(self, value: int) -> None:
        """Show a value the device reported or confirmed."""


def stored_tool_names(data: Mapping[str, Any]) -> frozenset[str]:
    """Return the tool names kept in a device entry's data (none if absent or bad)."""
    names = data.get(CONF_MCP_TOOLS)
    if not isinstance(names, list):
        return frozenset()
    return frozenset(name for name in names if isinstance(name, str))


def offered_settings(tool_names: Iterable[str]) -> tuple[DeviceSetting, ...]:
    """Return the settings a device with these tools has."""
    names = set(tool_names)
    return tuple(setting for setting in SETTINGS if setting.tool in names)


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
    for setting in SETTINGS:
        value = _integer_at(status, setting.status_path)
        if value is not None:
            values[setting.key] = value
    return values


def parse_getter_reply(text: str, setting: DeviceSetting) -> int | None:
    """Return the value in a setting's getter reply: a bare number, or JSON.

    A JSON object may carry it under the setting's argument name (``volume``) or
    at its status path; anything else is None.
    """
    try:
        reply = json.loads(text)
    except ValueError:
        return None
    if isinstance(reply, Mapping):
        for path in ((setting.argument,), setting.status_path):
            if (value := _integer_at(reply, path)) is not None:
                return value
        return None
    return _integer_at({"value": reply}, ("value",))


def can_read(setting: DeviceSetting, tool_names: Iterable[str]) -> bool:
    """Return whether a device with these tools reports the setting's value."""
    names = set(tool_names)
    return STATUS_TOOL in names or (
        setting.getter is not None and setting.getter in names
    )


class DeviceNumbers[E: SettingEntity]:
    """The setting entities of one device: which exist, their values, their calls.

    The number platform hands in how to add entities and how to create the entity
    of a setting; everything else (the tools the device offers, its connection,
    the calls) is decided here.

    Attributes:
        entities: The entities created, by setting key.
    """

    def __init__(
        self,
        hass: HomeAssistant,
        entry: DeviceConfigEntry,
        add_entities: Callable[[list[E]], None],
        create_entity: Callable[[DeviceNumbers[E], DeviceSetting], E],
    ) -> None:
        """Serve the device of ``entry``; call :meth:`async_start`."""
        self.hass = hass
        self.entry = entry
        self.runtime: DeviceRuntime = entry.runtime_data
        self.entities: dict[str, E] = {}
        self._add_entities = add_entities
        self._create_entity = create_entity
        self._settings: dict[str, DeviceSetting] = {}
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
        unsubscribers = (
            self.runtime.async_add_listener(self._async_device_changed),
            self.runtime.async_add_tool_call_listener(self._async_tool_called),
        )
        self._async_device_changed()

        @callback
        def unsubscribe() -> None:
            for unsubscriber in unsubscribers:
                unsubscriber()

        return unsubscribe

    @callback
    def _async_tool_called(self, tool: str, arguments: Mapping[str, Any]) -> None:
        """Show a value an assistant set through the device's own tool."""
        for key, setting in self._settings.items():
            value = arguments.get(setting.argument)
            entity = self.entities.get(key)
            if (
                setting.tool == tool
                and entity is not None
                and isinstance(value, int)
                and not isinstance(value, bool)
            ):
                entity.async_show_value(value)

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
        if not self.entities or link is None or not self.available:
            return
        if STATUS_TOOL in names:
            link.create_task(self._async_read_status(link), "read status")
            return
        for key in self.entities:
            setting = self._settings[key]
            if setting.getter is not None and setting.getter in names:
                link.create_task(
                    self._async_read_getter(link, setting), f"read {setting.key}"
                )

    def reports_value(self, setting: DeviceSetting) -> bool:
        """Return whether the device can tell the setting's value (else assumed)."""
        names = (
            {tool.name for tool in self.runtime.tools}
            if self.runtime.tools
            else stored_tool_names(self.entry.data)
        )
        return can_read(setting, names)

    @callback
    def _async_sync_entities(self, tool_names: Iterable[str]) -> None:
        wanted = offered_settings(tool_names)
        new = [setting for setting in wanted if setting.key not in self.entities]
        for setting in new:
            self._settings[setting.key] = setting
            self.entities[setting.key] = self._create_entity(self, setting)
        if new:
            self._add_entities([self.entities[setting.key] for setting in new])
        gone = self.entities.keys() - {setting.key for setting in wanted}
        for key in gone:
            self._async_remove_entity(self.entities.pop(key), self._settings[key])

    @callback
    def _async_remove_entity(self, entity: E, setting: DeviceSetting) -> None:
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
                setting.tool,
                entity_id,
            )
            registry.async_remove(entity_id)

    async def _async_read_status(self, link: DeviceLink) -> None:
        try:
            result = await link.tool_client().call_tool(
                STATUS_TOOL, reply_timeout=TOOL_TIMEOUT_S
            )
        except McpError as err:
            LOGGER.debug("Could not read the status of %s: %s", self._name, err)
            return
        if result.is_error:
            LOGGER.debug("%s failed to report its status: %s", self._name, result.text)
            return
        for key, value in parse_device_status(result.text).items():
            if (entity := self.entities.get(key)) is not None:
                entity.async_show_value(value)

    async def _async_read_getter(
        self, link: DeviceLink, setting: DeviceSetting
    ) -> None:
        assert setting.getter is not None
        try:
            result = await link.tool_client().call_tool(
                setting.getter, reply_timeout=TOOL_TIMEOUT_S
            )
        except McpError as err:
            LOGGER.debug(
                "Could not read the %s of %s: %s", setting.key, self._name, err
            )
            return
        value = None if result.is_error else parse_getter_reply(result.text, setting)
        if value is None:
            LOGGER.debug(
                "%s reported no %s: %s", self._name, setting.key, result.text[:200]
            )
            return
        if (entity := self.entities.get(setting.key)) is not None:
            entity.async_show_value(value)

    async def async_set(self, setting: DeviceSetting, value: int) -> None:
        """Set one setting on the device.

        Raises:
            HomeAssistantError: The device is not connected, went away, did not
                answer in time or refused the value.
        """
        link = self.runtime.link
        if link is None or not self.available:
            raise self._error("device_not_connected")
        try:
            result = await link.tool_client().call_tool(
                setting.tool,
                {setting.argument: value},
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
