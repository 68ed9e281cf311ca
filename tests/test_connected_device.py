"""What a device on MQTT+UDP gives while idle: connectivity, settings, notify,
reboot, announcements shown on its screen."""

import asyncio
from collections.abc import Callable
import logging
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry
from pytest_homeassistant_custom_component.typing import WebSocketGenerator

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.components.assist_satellite import DOMAIN as SATELLITE_DOMAIN
from homeassistant.const import ATTR_ENTITY_ID, STATE_OFF, STATE_ON, STATE_UNAVAILABLE
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import DOMAIN
from tests.helpers.devices import MAC, runtime_of, wait_until
from tests.helpers.mqtt import MqttDevice, check_in

TOOLS = [
    {
        "name": "self.audio_speaker.set_volume",
        "description": "Set the volume",
        "inputSchema": {
            "type": "object",
            "properties": {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
            "required": ["volume"],
        },
    }
]


def entity(hass: HomeAssistant, platform: str, key: str) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{MAC}-{key}")
    assert entity_id is not None, f"no {platform} {key}"
    return entity_id


def state(hass: HomeAssistant, entity_id: str) -> str:
    current = hass.states.get(entity_id)
    assert current is not None
    return current.state


async def online(
    hass_client_no_auth: Callable[[], Any], mqtt_devices: list[MqttDevice]
) -> MqttDevice:
    device = MqttDevice((await check_in(await hass_client_no_auth()))["mqtt"])
    mqtt_devices.append(device)
    assert str(await device.connect()) == "Success"
    initialize = await device.next_message("mcp")
    device.publish(
        {
            "type": "mcp",
            "payload": {
                "jsonrpc": "2.0",
                "id": initialize["payload"]["id"],
                "result": {"serverInfo": {"name": "board", "version": "2.0.0"}},
            },
        }
    )
    while (listing := await device.next_message("mcp"))["payload"].get(
        "method"
    ) != "tools/list":
        pass
    device.publish(
        {
            "type": "mcp",
            "payload": {
                "jsonrpc": "2.0",
                "id": listing["payload"]["id"],
                "result": {"tools": TOOLS},
            },
        }
    )
    return device


async def test_an_idle_device_is_connected_and_its_entities_available(
    ha_core: HomeAssistant,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
) -> None:
    connectivity = entity(ha_core, "binary_sensor", "connectivity")
    notify = entity(ha_core, "notify", "alert")
    reboot = entity(ha_core, "button", "reboot")
    assert state(ha_core, connectivity) == STATE_OFF
    assert state(ha_core, notify) == STATE_UNAVAILABLE
    assert state(ha_core, reboot) == STATE_UNAVAILABLE

    device = await online(hass_client_no_auth, mqtt_devices)
    runtime = runtime_of(mqtt_entry)
    await wait_until(runtime, lambda: bool(runtime.tools))
    await ha_core.async_block_till_done()
    volume = entity(ha_core, "number", "volume")  # made for the listed tool
    # No conversation, yet connected: its settings and screen are reachable.
    assert runtime.session is None
    assert state(ha_core, connectivity) == STATE_ON
    assert state(ha_core, volume) != STATE_UNAVAILABLE
    assert state(ha_core, notify) != STATE_UNAVAILABLE
    assert state(ha_core, reboot) != STATE_UNAVAILABLE

    await ha_core.services.async_call(
        "notify",
        "send_message",
        {ATTR_ENTITY_ID: notify, "message": "Dinner is ready", "title": "Kitchen"},
        blocking=True,
    )
    alert = await device.next_message("alert")
    assert (alert["status"], alert["message"]) == ("Kitchen", "Dinner is ready")
    await ha_core.services.async_call(
        "notify",
        "send_message",
        {ATTR_ENTITY_ID: notify, "message": "Hi"},
        blocking=True,
    )
    alert = await device.next_message("alert")
    assert (alert["status"], alert["message"]) == ("通知", "Hi")  # zh-CN device

    await ha_core.services.async_call(
        "button", "press", {ATTR_ENTITY_ID: reboot}, blocking=True
    )
    assert (await device.next_message("system"))["command"] == "reboot"

    await device.close()
    await wait_until(runtime, lambda: runtime.link is None)
    await ha_core.async_block_till_done()
    assert state(ha_core, connectivity) == STATE_OFF
    assert state(ha_core, notify) == STATE_UNAVAILABLE
    with pytest.raises(HomeAssistantError, match="not connected"):
        await runtime_entity_press(ha_core, reboot)
    with pytest.raises(HomeAssistantError, match="not connected"):
        await entity_object(ha_core, "notify", notify).async_send_message("Hi")


def entity_object(hass: HomeAssistant, platform: str, entity_id: str) -> Any:
    """The entity itself, to call it as HA would while it is unavailable."""
    return hass.data["entity_components"][platform].get_entity(entity_id)


async def runtime_entity_press(hass: HomeAssistant, entity_id: str) -> None:
    """Press the button the way its entity does when HA calls it (bypassing availability)."""
    component = hass.data["entity_components"]["button"]
    button = component.get_entity(entity_id)
    await button.async_press()


async def test_an_announcement_to_an_idle_device_is_shown_with_its_chime(
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    caplog: pytest.LogCaptureFixture,
) -> None:
    device = await online(hass_client_no_auth, mqtt_devices)
    runtime = runtime_of(mqtt_entry)
    await wait_until(runtime, lambda: runtime.connected)
    caplog.set_level(logging.INFO)
    await ha_core.services.async_call(
        SATELLITE_DOMAIN,
        "announce",
        {
            ATTR_ENTITY_ID: entity(ha_core, SATELLITE_DOMAIN, "assist_satellite"),
            "message": "The washing machine is done",
            "preannounce": False,
        },
        blocking=True,
    )
    alert = await device.next_message("alert")
    assert alert["message"] == "The washing machine is done"
    assert alert["status"] == "通知"
    assert "shown on the screen of Kitchen speaker with its chime" in caplog.text
    # Nothing was to be spoken: no audio channel was opened.
    assert runtime.session is None
    assert not any(m["type"] in {"hello", "tts"} for m in device.received)


@pytest.fixture
async def websocket_api(ha_core: HomeAssistant) -> None:
    """HA's websocket API, registered before a test client freezes the router."""
    assert await async_setup_component(ha_core, "websocket_api", {})


async def test_the_wizards_connection_test_passes_on_an_idle_device(
    websocket_api: None,
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    mqtt_entry: MockConfigEntry,
    hass_client_no_auth: Callable[[], Any],
    mqtt_devices: list[MqttDevice],
    hass_ws_client: WebSocketGenerator,
) -> None:
    """HA's satellite wizard, right after pairing: the idle link is the connection."""
    client = await hass_client_no_auth()
    ha_core.config.internal_url = str(client.make_url("/")).rstrip("/")
    device = await online(hass_client_no_auth, mqtt_devices)
    runtime = runtime_of(mqtt_entry)
    await wait_until(runtime, lambda: runtime.connected)
    ws = await hass_ws_client(ha_core)
    await ws.send_json_auto_id(
        {
            "type": "assist_satellite/test_connection",
            "entity_id": entity(ha_core, SATELLITE_DOMAIN, "assist_satellite"),
        }
    )
    async with asyncio.timeout(30):
        response = await ws.receive_json()
    assert response["success"], response
    # HA's own check: its test sound was fetched from Home Assistant.
    assert response["result"] == {"status": "success"}
    alert = await device.next_message("alert")
    assert alert["message"] == "已连接到 Home Assistant"
    # No audio channel was opened for it.
    assert runtime.session is None
    assert not any(m["type"] in {"hello", "tts"} for m in device.received)
