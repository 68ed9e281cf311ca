"""The device server shared by all entries: HTTP views, pairings and live sessions."""

from dataclasses import dataclass
from typing import Final, Protocol

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import discovery_flow
from homeassistant.util.hass_dict import HassKey

from ..const import (
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_DEVICE_LANGUAGE,
    CONF_FIRMWARE_VERSION,
    CONF_MAC,
    DOMAIN,
    LOGGER,
)
from ..device.runtime import is_device_entry
from .pairing import DeviceIdentity, PairingRegistry
from .ratelimit import RateLimiter

# Check-ins and activation polls per client address: a device polls /activate every
# 3 s while its code is shown; this leaves room for several devices behind one NAT.
HTTP_REQUESTS_PER_SECOND = 1.0
HTTP_BURST = 30

# Devices connected at once; one more is refused (close code 4009). A device has one
# session at a time, so only a household with many devices (or a broken proxy) gets
# here; a device replacing its own session is never refused.
MAX_SESSIONS: Final = 32
# Messages a device socket may send per second, sustained and in a burst (else it is
# closed, code 4008). A device sends 17 (60 ms frames) to 50 (20 ms frames) audio
# frames a second plus a few JSON messages; the burst takes frames that Wi-Fi held
# back and delivers at once (4 to 12 s of audio).
MESSAGES_PER_SECOND: Final = 100.0
MESSAGE_BURST: Final = 200
# A send that blocks this long means the device no longer reads (close code 4007).
SEND_TIMEOUT_S: Final = 5.0
# How long closing waits for the device's close frame before dropping the connection.
CLOSE_TIMEOUT_S: Final = 2.0


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on device connections (the close codes are listed in websocket.py).

    Attributes:
        max_sessions: Devices connected at once; more are refused.
        messages_per_second: Sustained rate of messages one socket may send.
        message_burst: Messages one socket may send at once above that rate.
        send_timeout: Seconds a send may block before the device counts as gone.
        close_timeout: Seconds to wait for the device's close frame.
    """

    max_sessions: int = MAX_SESSIONS
    messages_per_second: float = MESSAGES_PER_SECOND
    message_burst: int = MESSAGE_BURST
    send_timeout: float = SEND_TIMEOUT_S
    close_timeout: float = CLOSE_TIMEOUT_S

    def __post_init__(self) -> None:
        """Refuse limits that would refuse every device.

        Raises:
            ValueError: A limit is not positive.
        """
        limits = (
            self.max_sessions,
            self.messages_per_second,
            self.message_burst,
            self.send_timeout,
            self.close_timeout,
        )
        if any(limit <= 0 for limit in limits):
            raise ValueError(f"connection limits must be positive: {self}")


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
        self.limits = ConnectionLimits()

    @callback
    def device_entry(self, mac: str) -> ConfigEntry | None:
        """Return the paired device's entry, if the device is paired."""
        entry = self.hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, mac)
        return entry if entry is not None and is_device_entry(entry) else None

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
