"""Who a connecting device says it is, and whether it may in: for every transport.

A transport reads the device's claims its own way (WebSocket: headers or query
parameters), then asks :func:`authenticate` whether the MAC and token belong to
a paired, loaded device and :func:`admit` whether it may connect now. Refusals
raise :class:`AdmissionError` with a neutral reason the transport tells the
device. The token is compared in constant time and never logged.
"""

from dataclasses import dataclass
import hmac

from aiohttp import web

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant

from ..device.runtime import DeviceRuntime
from ..protocol.identity import normalize_mac
from ..transport.base import EndReason
from .registry import XiaozhiServer


class AdmissionError(Exception):
    """A connection is refused; ``reason`` and ``detail`` go to the device."""

    def __init__(
        self, reason: EndReason, detail: str, *, credentials: bool = False
    ) -> None:
        """Keep the reason and its text.

        ``credentials``: the claims themselves are wrong (unknown device, missing
        or wrong token), rather than the device not being allowed in right now.
        """
        super().__init__(detail)
        self.reason = reason
        self.detail = detail
        self.credentials = credentials


@dataclass(frozen=True, slots=True)
class AuthenticatedDevice:
    """A connection that proved to be a paired, loaded device."""

    mac: str
    runtime: DeviceRuntime
    name: str


def request_value(request: web.Request, name: str) -> str:
    """Return a header, or the same-named query parameter some clients send instead."""
    return (
        request.headers.get(name)
        or request.query.get(name.lower())
        or request.query.get(name)
        or ""
    ).strip()


def device_mac(device_id: str) -> str:
    """Return the MAC a device names itself by.

    Raises:
        AdmissionError: Missing or not a MAC (BAD_HANDSHAKE).
    """
    try:
        return normalize_mac(device_id)
    except ValueError:
        raise AdmissionError(
            EndReason.BAD_HANDSHAKE, "missing or invalid Device-Id"
        ) from None


def authenticate(server: XiaozhiServer, mac: str, token: str) -> AuthenticatedDevice:
    """Check a device's MAC and token against the paired devices.

    Raises:
        AdmissionError: Not paired, no or a wrong token, or the device's entry is
            not loaded (UNAUTHORIZED).
    """
    entry = server.device_entry(mac)
    if entry is None:
        raise AdmissionError(
            EndReason.UNAUTHORIZED,
            "device not paired: check in through OTA first",
            credentials=True,
        )
    if not token:
        raise AdmissionError(EndReason.UNAUTHORIZED, "missing token", credentials=True)
    expected = str(entry.data.get(CONF_TOKEN, ""))
    if not expected or not hmac.compare_digest(token.encode(), expected.encode()):
        raise AdmissionError(EndReason.UNAUTHORIZED, "invalid token", credentials=True)
    return loaded_device(entry, mac)


def loaded_device(entry: ConfigEntry, mac: str) -> AuthenticatedDevice:
    """Return the device of an entry whose credentials were checked.

    Raises:
        AdmissionError: The entry is not loaded (UNAUTHORIZED).
    """
    runtime = getattr(entry, "runtime_data", None)
    if entry.state is not ConfigEntryState.LOADED or not isinstance(
        runtime, DeviceRuntime
    ):
        raise AdmissionError(
            EndReason.UNAUTHORIZED, "device is not enabled in Home Assistant"
        )
    return AuthenticatedDevice(mac=mac, runtime=runtime, name=entry.title or mac)


def admit(hass: HomeAssistant, server: XiaozhiServer, mac: str) -> None:
    """Check that an authenticated device may connect now.

    Raises:
        AdmissionError: Home Assistant is stopping (SERVER_SHUTDOWN), or
            ``max_sessions`` other devices are connected (SERVER_BUSY; the
            device's own old connection does not count: the new one replaces it).
    """
    if hass.is_stopping:
        raise AdmissionError(EndReason.SERVER_SHUTDOWN, "Home Assistant is stopping")
    limit = server.limits.max_sessions
    if mac not in server.links and len(server.links) >= limit:
        raise AdmissionError(
            EndReason.SERVER_BUSY, f"too many devices connected (limit {limit})"
        )


def admit_pairing(hass: HomeAssistant) -> None:
    """Check that an unpaired device with its check-in token may connect now.

    Pairing sessions are bounded by the pairings waiting (one each), not by
    ``max_sessions``.

    Raises:
        AdmissionError: Home Assistant is stopping (SERVER_SHUTDOWN).
    """
    if hass.is_stopping:
        raise AdmissionError(EndReason.SERVER_SHUTDOWN, "Home Assistant is stopping")
