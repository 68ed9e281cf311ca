"""The transport select: MQTT+UDP or WebSocket, and a connected device reboots."""

from collections.abc import Callable
from typing import Any

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from custom_components.xiaozhi.const import DOMAIN
from tests.helpers.devices import MAC, runtime_of, wait_until
from tests.helpers.mqtt import MqttDevice, check_in


def transport_select(hass: HomeAssistant) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        "select", DOMAIN, f"{MAC}-transport"
    )
    assert entity_id is not None
    return entity_id


async def select(hass: HomeAssistant, entity_id: str, option: str) -> None:
    await hass.services.async_call(
        "select",
        "select_option",
        {"entity_id": entity_id, "option": option},
        blocking=True,
    )


async def test_switching_to_websocket_reboots_the_device_and_changes_its_ota(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    entity_id = transport_select(ha_core)
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == "mqtt"
    assert state.attributes["options"] == ["mqtt", "websocket"]
    client = await hass_client_no_auth()
    device = MqttDevice((await check_in(client))["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Success"
    runtime = runtime_of(mqtt_entry)
    await wait_until(runtime, lambda: runtime.connected)

    await select(ha_core, entity_id, "websocket")
    reboot = await device.next_message("system")
    assert reboot["command"] == "reboot"
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == "websocket"
    answer = await check_in(client)
    assert "mqtt" not in answer
    assert "websocket" in answer

    # Back to MQTT while the device is away: nothing to reboot, OTA says MQTT.
    await device.close()
    await wait_until(runtime, lambda: runtime.link is None)
    await select(ha_core, entity_id, "mqtt")
    assert "mqtt" in await check_in(client)
    # Choosing what is chosen already does nothing.
    await select(ha_core, entity_id, "mqtt")
    assert [m["type"] for m in device.received].count("system") == 1
