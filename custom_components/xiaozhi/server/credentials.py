"""The MQTT credentials of a paired device: handed out by OTA, checked at CONNECT.

Each OTA check-in of a device on MQTT hands it a fresh random password (the
firmware stores whatever its answer says); only its SHA-256 digest is kept, in the
device's entry, next to the previous one, which stays valid until the device logs
in with the new (an answer lost on the way must not lock the device out). The
password is a 192-bit random token, so a fast digest is as good as a slow one.
Removing the device removes its entry, and the credentials with it.

A password is valid only with its own device's username and client id: both are
derived from the MAC, and the client id is checked, so one device's credentials
never let another device (or another client id) in.
"""

import hashlib
import hmac
import secrets
from typing import Final

from homeassistant.config_entries import ConfigEntry
from homeassistant.core import HomeAssistant, callback

from ..const import CONF_MQTT_PASSWORD_HASHES
from ..protocol.identity import normalize_mac
from ..protocol.mqtt import Connect
from ..transport.base import EndReason
from .auth import AdmissionError, AuthenticatedDevice, loaded_device
from .registry import XiaozhiServer

PASSWORD_BYTES: Final = 24
# The digests kept: the newest and the one before it.
KEPT_PASSWORDS: Final = 2


def client_id_of(mac: str) -> str:
    """Return the MQTT client id a device is handed (and must connect with)."""
    return f"xiaozhi-{mac.replace(':', '')}"


def username_of(mac: str) -> str:
    """Return the MQTT username of a device: its MAC."""
    return mac


def publish_topic_of(mac: str) -> str:
    """Return the topic the device publishes on (the firmware sends nothing without one)."""
    return f"xiaozhi/{mac.replace(':', '')}/up"


def device_topic_of(mac: str) -> str:
    """Return the topic we publish to the device on (current firmware ignores it)."""
    return f"xiaozhi/{mac.replace(':', '')}/down"


def password_digest(password: bytes) -> str:
    """Return the digest a password is stored as."""
    return hashlib.sha256(password).hexdigest()


def stored_digests(entry: ConfigEntry) -> list[str]:
    """Return the digests of the passwords the device may log in with, newest first."""
    digests = entry.data.get(CONF_MQTT_PASSWORD_HASHES, [])
    if not isinstance(digests, list):
        return []
    return [digest for digest in digests if isinstance(digest, str)]


@callback
def async_issue_password(hass: HomeAssistant, entry: ConfigEntry) -> str:
    """Create the device's next password; only its digest is stored."""
    password = secrets.token_urlsafe(PASSWORD_BYTES)
    digests = [password_digest(password.encode()), *stored_digests(entry)]
    hass.config_entries.async_update_entry(
        entry,
        data={**entry.data, CONF_MQTT_PASSWORD_HASHES: digests[:KEPT_PASSWORDS]},
    )
    return password


@callback
def async_check_password(
    hass: HomeAssistant, entry: ConfigEntry, password: bytes
) -> bool:
    """Return whether ``password`` is one of the device's; a newer one retires the rest."""
    offered = password_digest(password)
    digests = stored_digests(entry)
    matched = [
        index
        for index, digest in enumerate(digests)
        if hmac.compare_digest(offered, digest)
    ]
    if not matched:
        return False
    if matched[0] == 0 and len(digests) > 1:
        hass.config_entries.async_update_entry(
            entry, data={**entry.data, CONF_MQTT_PASSWORD_HASHES: digests[:1]}
        )
    return True


@callback
def async_authenticate_mqtt(
    server: XiaozhiServer, connect: Connect
) -> AuthenticatedDevice:
    """Check a CONNECT's username, client id and password against the paired devices.

    Raises:
        AdmissionError: BAD_HANDSHAKE for a username that is not a MAC or the
            wrong client id; UNAUTHORIZED for an unpaired device, a missing or
            wrong password, or a device whose entry is not loaded.
    """
    try:
        mac = normalize_mac(connect.username or "")
    except ValueError:
        raise AdmissionError(
            EndReason.UNAUTHORIZED, "the username is not a paired device's"
        ) from None
    entry = server.device_entry(mac)
    if entry is None:
        raise AdmissionError(
            EndReason.UNAUTHORIZED, "device not paired: check in through OTA first"
        )
    if connect.client_id != client_id_of(mac):
        raise AdmissionError(
            EndReason.BAD_HANDSHAKE, "the client id is not this device's"
        )
    if not connect.password or not async_check_password(
        server.hass, entry, connect.password
    ):
        raise AdmissionError(EndReason.UNAUTHORIZED, "invalid password")
    return loaded_device(entry, mac)
