"""Diagnostics of provider and device entries never contain secrets."""

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.const import CONF_API_KEY, CONF_TOKEN
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.const import CONF_CLIENT_ID
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.diagnostics import async_get_config_entry_diagnostics
from simulator.device import SimTool
from tests.helpers.devices import TOKEN, DeviceFactory, wait_until


async def test_provider_diagnostics_redact_the_key(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    diagnostics = await async_get_config_entry_diagnostics(ha_core, provider_entry)
    assert diagnostics["data"][CONF_API_KEY] == "**REDACTED**"
    assert provider_entry.data[CONF_API_KEY] not in str(diagnostics)
    assert len(diagnostics["subentries"]) == 3
    assert "device" not in diagnostics


async def test_device_diagnostics_show_the_session_not_the_token(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    offline = await async_get_config_entry_diagnostics(ha_core, device_entry)
    assert offline["device"] == {"connected": False, "tools": []}

    device = devices(
        protocol_version=2,
        tools=[SimTool("self.audio_speaker.set_volume", "Set the volume")],
    )
    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))

    diagnostics = await async_get_config_entry_diagnostics(ha_core, device_entry)
    text = str(diagnostics)
    assert TOKEN not in text
    assert device_entry.data[CONF_CLIENT_ID] not in text
    assert diagnostics["data"][CONF_TOKEN] == "**REDACTED**"
    info = diagnostics["device"]
    assert info["connected"] is True
    assert info["tools"] == ["self.audio_speaker.set_volume"]
    session = info["session"]
    assert session["protocol_version"] == 2
    assert session["hello"]["audio_params"]["sample_rate"] == 16000
    assert session["hello"]["features"]["mcp"] is True
    assert session["downlink"]["frames_sent"] == 0
    assert session["listening"] is False
