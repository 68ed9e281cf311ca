"""Diagnostics of provider and device entries never contain secrets."""

from collections.abc import Callable
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.const import CONF_API_KEY, CONF_TOKEN
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.const import CONF_CLIENT_ID, CONF_MQTT_PASSWORD_HASHES
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.diagnostics import async_get_config_entry_diagnostics
from simulator.device import SimTool
from tests.helpers.devices import TOKEN, DeviceFactory, wait_until
from tests.helpers.mqtt import MqttDevice, check_in


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


async def test_mqtt_device_diagnostics_redact_the_password_digests(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    device = MqttDevice((await check_in(await hass_client_no_auth()))["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Success"
    runtime = mqtt_entry.runtime_data
    await wait_until(runtime, lambda: runtime.connected)
    await device.hello()
    await wait_until(runtime, lambda: runtime.session is not None)
    diagnostics = await async_get_config_entry_diagnostics(ha_core, mqtt_entry)
    assert diagnostics["data"][CONF_MQTT_PASSWORD_HASHES] == "**REDACTED**"
    digest = mqtt_entry.data[CONF_MQTT_PASSWORD_HASHES][0]
    assert digest not in str(diagnostics)
    assert device.section["password"] not in str(diagnostics)
    session = diagnostics["device"]["session"]
    assert session["transport"] == "mqtt"
    assert session["audio_channel"] is True
    assert "127.0.0.1" not in str(diagnostics)
