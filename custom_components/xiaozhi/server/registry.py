"""The device server shared by all entries: pairings, live links, transports' offers.

One :class:`XiaozhiServer` lives in ``hass.data`` from the integration's setup
on. Transports register their live links here (one per device: the newest
wins) and what they add to the OTA answer (how a device reaches them); the OTA
view and the config flow find paired devices and pairings here, and Home
Assistant stopping closes every link, of any transport.
"""

import asyncio
from collections.abc import Callable
from typing import Any

from aiohttp import web

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.core import Event, HomeAssistant, callback
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
from ..device.link import DeviceLink
from ..device.runtime import is_device_entry
from ..transport.base import EndReason
from .limits import HTTP_BURST, HTTP_REQUESTS_PER_SECOND, ConnectionLimits
from .pairing import DeviceIdentity, PairingRegistry, PendingPairing
from .pairing_session import PairingSessions
from .ratelimit import RateLimiter

type OtaSection = Callable[[web.Request, ConfigEntry], dict[str, Any] | None]
"""Builds a transport's section of the OTA answer for a paired device's entry.

None leaves the section out (the device is not to use that transport).
"""

type PairingOtaSection = Callable[[web.Request, PendingPairing], dict[str, Any]]
"""Builds a transport's section of the OTA answer for a device waiting to be paired."""


class XiaozhiServer:
    """State of the device server, one per Home Assistant instance.

    Attributes:
        pairings: The pairings waiting for a person to type their code.
        http_limiter: Rate limit of the device-facing HTTP endpoints.
        links: The live link of each connected device, by MAC.
        limits: Bounds on device connections of every transport.
        ota_sections: What each transport adds to a paired device's OTA answer,
            by the answer's key (``websocket``, ``mqtt``).
        pairing_ota_sections: What a transport that serves pairing sessions adds
            to an unpaired device's OTA answer (``websocket``).
        pairing_sessions: Connections of unpaired devices, which hear their code.
    """

    def __init__(self, hass: HomeAssistant) -> None:
        """Start with no pairings, links or transports."""
        self.hass = hass
        self.pairings = PairingRegistry()
        self.http_limiter = RateLimiter(HTTP_REQUESTS_PER_SECOND, HTTP_BURST)
        self.links: dict[str, DeviceLink] = {}
        self.limits = ConnectionLimits()
        self.ota_sections: dict[str, OtaSection] = {}
        self.pairing_ota_sections: dict[str, PairingOtaSection] = {}
        self.pairing_sessions = PairingSessions()

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

    @callback
    def async_register_link(self, link: DeviceLink) -> None:
        """Make ``link`` its device's live link; an older one of the device ends."""
        previous = link.runtime.link
        if previous is not None:
            previous.end(
                EndReason.REPLACED, "replaced by a new connection of the device"
            )
        link.runtime.async_attach(link)
        self.links[link.mac] = link

    @callback
    def async_unregister_link(self, link: DeviceLink) -> None:
        """Forget ``link`` unless a newer link of the device replaced it."""
        if self.links.get(link.mac) is link:
            del self.links[link.mac]

    async def async_disconnect(self, mac: str, reason: str) -> None:
        """Close the device's live link, if it has one."""
        link = self.links.pop(mac, None)
        if link is not None:
            LOGGER.debug("Closing connection of %s: %s", mac, reason)
            await link.async_close(reason)

    async def async_shutdown(self, event: Event) -> None:
        """Close every link as Home Assistant stops; returns once all are closed."""
        links = list(self.links.values())
        for link in links:
            link.end(EndReason.SERVER_SHUTDOWN, "Home Assistant is stopping")
        pairing = self.pairing_sessions.end_all(
            EndReason.SERVER_SHUTDOWN, "Home Assistant is stopping"
        )
        await asyncio.gather(
            *(link.async_wait_closed() for link in links),
            *(session.async_wait_closed() for session in pairing),
        )


DATA_SERVER: HassKey[XiaozhiServer] = HassKey(DOMAIN)


@callback
def async_get_server(hass: HomeAssistant) -> XiaozhiServer:
    """Return the device server (created by the integration's async_setup)."""
    return hass.data[DATA_SERVER]
