"""A repair issue for devices whose firmware lacks what the integration builds on."""

from homeassistant.core import CALLBACK_TYPE, HomeAssistant, callback
from homeassistant.helpers import issue_registry as ir

from ..const import CONF_FIRMWARE_VERSION, DOMAIN
from ..protocol.sanitize import clean_field
from .runtime import DeviceConfigEntry

ISSUE_FIRMWARE_WITHOUT_MCP = "firmware_without_mcp"


def firmware_issue_id(entry: DeviceConfigEntry) -> str:
    """Return the repair issue ID of a device entry."""
    return f"{ISSUE_FIRMWARE_WITHOUT_MCP}_{entry.entry_id}"


@callback
def async_track_firmware_features(
    hass: HomeAssistant, entry: DeviceConfigEntry
) -> CALLBACK_TYPE:
    """Raise a repair issue while the device's hello lacks MCP (old firmware).

    Without MCP the device offers no tools: no volume or brightness control, and the
    agent cannot use the device's own functions. Updating the firmware fixes it, which
    the next connection notices and the issue goes away.
    """

    @callback
    def check() -> None:
        link = entry.runtime_data.link
        if link is None or link.hello is None:
            return
        if link.hello.mcp:
            ir.async_delete_issue(hass, DOMAIN, firmware_issue_id(entry))
            return
        ir.async_create_issue(
            hass,
            DOMAIN,
            firmware_issue_id(entry),
            is_fixable=False,
            severity=ir.IssueSeverity.WARNING,
            translation_key=ISSUE_FIRMWARE_WITHOUT_MCP,
            translation_placeholders={
                "device": clean_field(entry.title, 80),
                # Cleaned at check-in; again for entries stored before that.
                "version": clean_field(
                    str(entry.data.get(CONF_FIRMWARE_VERSION) or ""), 32
                )
                or "?",
            },
        )

    return entry.runtime_data.async_add_listener(check)


@callback
def async_forget_firmware_issue(hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
    """Drop the device's repair issue (its entry is being removed)."""
    ir.async_delete_issue(hass, DOMAIN, firmware_issue_id(entry))
