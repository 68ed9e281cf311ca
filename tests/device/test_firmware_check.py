"""The repair issue for firmware without MCP follows the device's hello."""

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.core import HomeAssistant
from homeassistant.helpers import issue_registry as ir

from custom_components.xiaozhi.const import CONF_FIRMWARE_VERSION, DOMAIN
from custom_components.xiaozhi.device.firmware_check import firmware_issue_id
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from tests.helpers.devices import DeviceFactory, wait_until


async def test_old_firmware_gets_a_repair_issue_until_it_has_mcp(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    issues = ir.async_get(ha_core)
    issue_id = firmware_issue_id(device_entry)

    old = devices(features={})
    await old.open()
    await wait_until(runtime, lambda: runtime.connected)
    issue = issues.async_get_issue(DOMAIN, issue_id)
    assert issue is not None
    assert issue.translation_key == "firmware_without_mcp"
    assert issue.translation_placeholders == {
        "device": device_entry.title,
        "version": "1.9.2",
    }
    await old.close()
    await wait_until(runtime, lambda: not runtime.connected)
    # Disconnecting says nothing about the firmware: the issue stays.
    assert issues.async_get_issue(DOMAIN, issue_id) is not None

    updated = devices()
    await updated.open()
    await wait_until(runtime, lambda: runtime.connected)
    assert issues.async_get_issue(DOMAIN, issue_id) is None
    await updated.close()


async def test_removing_the_device_removes_its_issue(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    old = devices(features={})
    await old.open()
    await wait_until(runtime, lambda: runtime.connected)
    issue_id = firmware_issue_id(device_entry)
    assert ir.async_get(ha_core).async_get_issue(DOMAIN, issue_id) is not None
    await old.close()
    assert await ha_core.config_entries.async_remove(device_entry.entry_id)
    assert ir.async_get(ha_core).async_get_issue(DOMAIN, issue_id) is None


async def test_the_repair_shows_an_older_entrys_version_cleaned(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    ha_core.config_entries.async_update_entry(
        device_entry,
        data={**device_entry.data, CONF_FIRMWARE_VERSION: "1.0\nERROR forged"},
    )
    old = devices(features={})
    await old.open()
    await wait_until(runtime, lambda: runtime.connected)
    issue = ir.async_get(ha_core).async_get_issue(
        DOMAIN, firmware_issue_id(device_entry)
    )
    assert issue is not None
    assert issue.translation_placeholders is not None
    assert issue.translation_placeholders["version"] == "1.0\\x0aERROR forged"
    await old.close()
