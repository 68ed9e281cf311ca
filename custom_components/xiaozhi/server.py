"""The device server shared by all entries: HTTP views, pairings and live sessions."""

from typing import Protocol

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import discovery_flow
from homeassistant.util.hass_dict import HassKey

from .const import (
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_DEVICE_LANGUAGE,
    CONF_ENTRY_KIND,
    CONF_FIRMWARE_VERSION,
    CONF_MAC,
    DOMAIN,
    ENTRY_KIND_DEVICE,
    LOGGER,
)
from .pairing import DeviceIdentity, PairingRegistry
from .ratelimit import RateLimiter

# Check-ins and activation polls per client address: a device polls /activate every
# 3 s while its code is shown; this leaves room for several devices behind one NAT.
HTTP_REQUESTS_PER_SECOND = 1.0
HTTP_BURST = 30


class DeviceConnection(Protocol):
    """What the server needs of a live device connection."""

    async def async_close(self, reason: str) -> None:
        """Close the connection, telling the device why where possible."""


class XiaozhiServer:
    """State of the device server, one per Home Assistant instance."""

    def __init__(self, hass: HomeAssistant) -> None:
        """Start with no pairings and no connections."""
        self.hass = hass
        self.pairings = PairingRegistry()
        self.http_limiter = RateLimiter(HTTP_REQUESTS_PER_SECOND, HTTP_BURST)
        self.connections: dict[str, DeviceConnection] = {}

    @callback
    def device_entry(self, mac: str) -> ConfigEntry | None:
        """Return the paired device's entry, if the device is paired."""
        for entry in self.hass.config_entries.async_entries(DOMAIN):
            if entry.data.get(CONF_ENTRY_KIND) == ENTRY_KIND_DEVICE and (
                entry.unique_id == mac
            ):
                return entry
        return None

    @callback
    def async_request_pairing(self, device: DeviceIdentity) -> None:
        """Show the device as discovered so a person can type its code.

        HA ignores a second flow for the same device while one is open, so calling
        this on every check-in is fine.
        """
        discovery_flow.async_create_flow(
            self.hass,
            DOMAIN,
            context={"source": SOURCE_INTEGRATION_DISCOVERY},
            data={
                CONF_MAC: device.mac,
                CONF_CLIENT_ID: device.client_id,
                CONF_BOARD: device.board,
                CONF_FIRMWARE_VERSION: device.firmware_version,
                CONF_DEVICE_LANGUAGE: device.language,
            },
        )

    async def async_disconnect(self, mac: str, reason: str) -> None:
        """Close the device's live connection, if it has one."""
        connection = self.connections.pop(mac, None)
        if connection is not None:
            LOGGER.debug("Closing connection of %s: %s", mac, reason)
            await connection.async_close(reason)


DATA_SERVER: HassKey[XiaozhiServer] = HassKey(DOMAIN)


@callback
def async_get_server(hass: HomeAssistant) -> XiaozhiServer:
    """Return the device server (created by the integration's async_setup)."""
    return hass.data[DATA_SERVER]
