"""Diagnostics for Xiaozhi config entries, with secrets redacted."""

from dataclasses import asdict
from typing import Any

from homeassistant.components.diagnostics import async_redact_data
from homeassistant.config_entries import ConfigEntry
from homeassistant.const import CONF_API_KEY, CONF_TOKEN
from homeassistant.core import HomeAssistant

from .const import CONF_CLIENT_ID, CONF_MQTT_PASSWORD_HASHES
from .device.runtime import DeviceRuntime, is_device_entry

# The device token is its password; the Client-Id is half of what the token is handed
# out for, so neither leaves Home Assistant in a diagnostics file; nor do the digests
# of its MQTT passwords.
TO_REDACT = {CONF_API_KEY, CONF_TOKEN, CONF_CLIENT_ID, CONF_MQTT_PASSWORD_HASHES}


async def async_get_config_entry_diagnostics(
    hass: HomeAssistant, entry: ConfigEntry
) -> dict[str, Any]:
    """Return the entry's settings without secrets, and a device's live session."""
    diagnostics: dict[str, Any] = {
        "title": entry.title,
        "data": async_redact_data(entry.data, TO_REDACT),
        "options": async_redact_data(entry.options, TO_REDACT),
        "subentries": {
            subentry.subentry_id: {
                "title": subentry.title,
                "subentry_type": subentry.subentry_type,
                "data": async_redact_data(subentry.data, TO_REDACT),
            }
            for subentry in entry.subentries.values()
        },
    }
    runtime = getattr(entry, "runtime_data", None)
    if is_device_entry(entry) and isinstance(runtime, DeviceRuntime):
        diagnostics["device"] = device_diagnostics(runtime)
    return diagnostics


def device_diagnostics(runtime: DeviceRuntime) -> dict[str, Any]:
    """Describe a device's connection state (nothing secret is kept in a link)."""
    link = runtime.link
    info: dict[str, Any] = {
        "connected": runtime.connected,
        "tools": [tool.name for tool in runtime.tools],
    }
    if (photo := runtime.camera.last_photo) is not None:
        # When and how big: never the picture of someone's home.
        info["last_photo"] = {
            "taken_at": photo.taken_at.isoformat(),
            "bytes": len(photo.jpeg),
        }
    if link is None:
        return info
    hello = link.hello
    session = link.session
    info["session"] = {
        **link.transport.diagnostics(),
        "hello": None
        if hello is None
        else {
            "version": hello.version,
            "features": dict(hello.features),
            "audio_params": asdict(hello.audio_params),
        },
        "listening": session is not None and session.listening,
        "listen_mode": None if session is None else session.listen_mode,
        "speaking": session is not None and session.speaking,
        "bad_input": dict(link.bad_input),
        "downlink": None
        if session is None
        else asdict(session.playback.downlink.stats),
    }
    return info
