"""The device server shared by all entries: pairings, live links, transports' offers.

One :class:`XiaozhiServer` lives in ``hass.data`` from the integration's setup
on. Transports register their live links here (one per device: the newest
wins) and what they add to the OTA answer (how a device reaches them); the OTA
view and the config flow find paired devices and pairings here, and Home
Assistant stopping closes every link, of any transport.

A discovery flow lives as long as its device has a claim: when the last claim of
its MAC expires, is used up by wrong codes or ends because the device paired (or
its paired Client-Id checked in again), the flow is aborted, so no flow stays
open for a code nobody can type any more.
"""

import asyncio
from collections.abc import Callable
from datetime import datetime
from typing import Any

from aiohttp import web

from homeassistant.config_entries import SOURCE_INTEGRATION_DISCOVERY, ConfigEntry
from homeassistant.core import CALLBACK_TYPE, Event, HomeAssistant, callback
from homeassistant.helpers import discovery_flow
from homeassistant.helpers.event import async_call_later
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
from .limits import (
    HTTP_BURST,
    HTTP_REQUESTS_PER_SECOND,
    REFUSAL_LOG_BURST,
    REFUSAL_LOG_LINES_PER_SECOND,
    ConnectionLimits,
)
from .pairing import DeviceIdentity, PairingRegistry, PendingPairing
from .pairing_session import PairingSessions
from .ratelimit import LogThrottle, RateLimiter

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
        limits: Bounds on device connections of every transport (the rate
            limiters follow it when it is replaced).
        refusal_log: Throttles the log lines about refused requests and
            connections, of every endpoint and transport.
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
        self.refusal_log = LogThrottle(REFUSAL_LOG_LINES_PER_SECOND, REFUSAL_LOG_BURST)
        self._expiry_timer: CALLBACK_TYPE | None = None
        self._limiters: dict[str, tuple[ConnectionLimits, RateLimiter]] = {}

    def _limiter(self, name: str, rate: float, burst: int) -> RateLimiter:
        cached = self._limiters.get(name)
        if cached is None or cached[0] is not self.limits:
            cached = self._limiters[name] = (self.limits, RateLimiter(rate, burst))
        return cached[1]

    @property
    def message_limiter(self) -> RateLimiter:
        """Return the message budget of each device (by MAC), over its connections."""
        limits = self.limits
        return self._limiter(
            "messages", limits.messages_per_second, limits.message_burst
        )

    @property
    def connection_limiter(self) -> RateLimiter:
        """Return the connection budget of each device (by MAC)."""
        limits = self.limits
        return self._limiter(
            "connections", limits.connections_per_second, limits.connection_burst
        )

    @property
    def refusal_limiter(self) -> RateLimiter:
        """Return the budget of refused connections of each client address."""
        limits = self.limits
        return self._limiter(
            "refusals", limits.refusals_per_second, limits.refusal_burst
        )

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
        self._async_schedule_expiry()

    @callback
    def async_end_pairing(self, mac: str) -> None:
        """Drop every claim of ``mac`` and abort its discovery flow."""
        self.pairings.discard(mac)
        self.pairing_sessions.async_void(mac)
        self.async_abort_stale_flows()

    @callback
    def async_abort_stale_flows(self) -> None:
        """Abort the discovery flows of MACs that have no valid claim left."""
        flows = self.hass.config_entries.flow
        for flow in flows.async_progress_by_handler(DOMAIN, include_uninitialized=True):
            context = flow["context"]
            if context.get("source") != SOURCE_INTEGRATION_DISCOVERY:
                continue
            mac = context.get("unique_id")
            if isinstance(mac, str) and not self.pairings.claims(mac):
                LOGGER.debug("Ending the pairing flow of %s: no code is valid", mac)
                flows.async_abort(flow["flow_id"])

    @callback
    def _async_schedule_expiry(self) -> None:
        """Wake up when the next claim expires (one timer for all of them)."""
        if self._expiry_timer is not None:
            self._expiry_timer()
            self._expiry_timer = None
        delay = self.pairings.next_expiry()
        if delay is not None:
            self._expiry_timer = async_call_later(self.hass, delay, self._async_expired)

    @callback
    def _async_expired(self, _now: datetime) -> None:
        self._expiry_timer = None
        self.async_abort_stale_flows()
        self._async_schedule_expiry()

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
        if self._expiry_timer is not None:
            self._expiry_timer()
            self._expiry_timer = None
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
