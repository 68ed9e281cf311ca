"""The entities of a paired device: selects, connectivity, volume and brightness.

A simulated device connects over a real WebSocket and serves the firmware's MCP
tools (main/mcp_server.cc), so every value read and set goes over the wire.
"""

import asyncio
from collections.abc import Iterable
from datetime import timedelta
import json
import logging
from pathlib import Path
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_fire_time_changed,
)

from homeassistant.components.assist_pipeline import OPTION_PREFERRED, VadSensitivity
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.assist_pipeline.select import (
    get_chosen_pipeline,
    get_vad_sensitivity,
)
from homeassistant.components.number import DOMAIN as NUMBER_DOMAIN
from homeassistant.components.number.const import ATTR_VALUE, SERVICE_SET_VALUE
from homeassistant.components.select import (
    ATTR_OPTION,
    ATTR_OPTIONS,
    DOMAIN as SELECT_DOMAIN,
    SERVICE_SELECT_OPTION,
)
from homeassistant.const import (
    ATTR_ASSUMED_STATE,
    ATTR_ENTITY_ID,
    STATE_OFF,
    STATE_ON,
    STATE_UNAVAILABLE,
    STATE_UNKNOWN,
    EntityCategory,
    Platform,
)
from homeassistant.core import Event, EventStateChangedData, HomeAssistant, callback
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import device_registry as dr, entity_registry as er
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.event import async_track_state_change_event
from homeassistant.util import dt as dt_util

import custom_components.xiaozhi
from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.device.entity import (
    pipeline_select_unique_id,
    vad_sensitivity_select_unique_id,
)
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from custom_components.xiaozhi.device.settings import (
    BRIGHTNESS_TOOL,
    CONF_MCP_TOOLS,
    STATUS_TOOL,
    VOLUME,
    VOLUME_GETTER_TOOL,
    VOLUME_TOOL,
    DeviceNumbers,
    parse_getter_reply,
    stored_tool_names,
)
from custom_components.xiaozhi.number import XiaozhiNumber, new_number, offered_numbers
from simulator.device import SimTool, SimulatedDevice
from tests.helpers.devices import (
    MAC,
    DeviceFactory,
    assert_link_gone,
    assert_session_gone,
    make_device_entry,
    runtime_of,
    session_tasks,
    wait_until,
)

# ---------------------------------------------------------------- the firmware


class Firmware:
    """The device side of the common tools, as AddCommonTools builds them."""

    def __init__(
        self, *, volume: int = 40, brightness: int | None = None, extra: int = 0
    ) -> None:
        self.volume = volume
        self.brightness = brightness
        self.extra = extra
        self.status_error: str | None = None

    def tools(self) -> list[SimTool]:
        tools = [
            SimTool(STATUS_TOOL, "device status", callback=self.status),
            SimTool(
                VOLUME_TOOL,
                "set the volume",
                {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                callback=self.set_volume,
            ),
        ]
        if self.brightness is not None:
            tools.append(
                SimTool(
                    BRIGHTNESS_TOOL,
                    "set the brightness",
                    {"brightness": {"type": "integer", "minimum": 0, "maximum": 100}},
                    callback=self.set_brightness,
                )
            )
        tools.extend(SimTool(f"self.board.tool_{n}") for n in range(self.extra))
        return tools

    def status(self, _: dict[str, Any]) -> dict[str, Any]:
        if self.status_error is not None:
            raise ValueError(self.status_error)
        screen = {} if self.brightness is None else {"brightness": self.brightness}
        return {
            "audio_speaker": {"volume": self.volume},
            "screen": screen,
            "network": {"type": "wifi", "ssid": "home", "signal": "strong"},
        }

    @staticmethod
    def _checked(arguments: dict[str, Any], name: str) -> int:
        # DoToolCall: a missing argument, then Property::set_value's range check.
        value = arguments.get(name)
        if not isinstance(value, int):
            raise ValueError(f"Missing valid argument: {name}")  # noqa: TRY004
        if value < 0:
            raise ValueError("Value is below minimum allowed: 0")
        if value > 100:
            raise ValueError("Value exceeds maximum allowed: 100")
        return value

    def set_volume(self, arguments: dict[str, Any]) -> bool:
        self.volume = self._checked(arguments, "volume")
        return True

    def set_brightness(self, arguments: dict[str, Any]) -> bool:
        self.brightness = self._checked(arguments, "brightness")
        return True


# ---------------------------------------------------------------- helpers


def entity_id_of(hass: HomeAssistant, platform: str, key: str) -> str | None:
    return er.async_get(hass).async_get_entity_id(platform, DOMAIN, f"{MAC}-{key}")


def required_entity_id(hass: HomeAssistant, platform: str, key: str) -> str:
    entity_id = entity_id_of(hass, platform, key)
    assert entity_id is not None, f"no {platform} {key}"
    return entity_id


def state_of(hass: HomeAssistant, entity_id: str) -> str:
    state = hass.states.get(entity_id)
    assert state is not None, entity_id
    return state.state


async def wait_for_state(
    hass: HomeAssistant, entity_id: str, expected: str, timeout: float = 10.0
) -> None:
    """Wait until the entity's state is ``expected`` (as state changes arrive)."""
    reached = asyncio.Event()

    @callback
    def changed(event: Event[EventStateChangedData]) -> None:
        new_state = event.data["new_state"]
        if new_state is not None and new_state.state == expected:
            reached.set()

    unsubscribe = async_track_state_change_event(hass, [entity_id], changed)
    try:
        current = hass.states.get(entity_id)
        if current is None or current.state != expected:
            async with asyncio.timeout(timeout):
                await reached.wait()
    finally:
        unsubscribe()


def tool_calls(device: SimulatedDevice, name: str) -> list[dict[str, Any]]:
    """The arguments of every call of tool ``name`` the device received."""
    return [
        request["params"]["arguments"]
        for request in device.mcp_requests
        if request.get("method") == "tools/call" and request["params"]["name"] == name
    ]


async def status_reads_done() -> None:
    """Wait for the status reads under way (the device got the request)."""
    reads = {t for t in session_tasks() if t.get_name().endswith("read status")}
    if reads:
        await asyncio.wait(reads)


async def wait_for_calls(device: SimulatedDevice, name: str, count: int) -> None:
    """Wait until the device received ``count`` calls of tool ``name``."""
    for _ in range(1000):
        if len(tool_calls(device, name)) >= count:
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{name} was not called {count} times")


async def wait_for_request(device: SimulatedDevice, method: str) -> None:
    """Wait until the device received an MCP request of ``method``."""
    for _ in range(1000):
        if any(r.get("method") == method for r in device.mcp_requests):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no {method} request")


def number_entity(hass: HomeAssistant, entity_id: str) -> XiaozhiNumber:
    entity = hass.data["entity_components"][NUMBER_DOMAIN].get_entity(entity_id)
    assert isinstance(entity, XiaozhiNumber)
    return entity


async def set_number(hass: HomeAssistant, entity_id: str, value: float) -> None:
    await hass.services.async_call(
        NUMBER_DOMAIN,
        SERVICE_SET_VALUE,
        {ATTR_ENTITY_ID: entity_id, ATTR_VALUE: value},
        blocking=True,
    )


async def connect(
    hass: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    firmware: Firmware,
) -> SimulatedDevice:
    """Connect a device serving ``firmware``; return once its tools are handled."""
    device = devices(tools=firmware.tools())
    await device.open()
    expected = len(firmware.tools())
    await wait_until(runtime, lambda: len(runtime.tools) == expected)
    await hass.async_block_till_done()
    return device


async def disconnect(runtime: DeviceRuntime, device: SimulatedDevice) -> None:
    link = runtime.link
    await device.close()
    await wait_until(runtime, lambda: not runtime.connected)
    if link is not None:
        await link.async_wait_closed()


# ---------------------------------------------------------------- fixtures


@pytest.fixture
def entry_data_extra() -> dict[str, Any]:
    """Data to add to the device entry before it is set up."""
    return {}


@pytest.fixture
async def device_entry(
    ha_core: HomeAssistant, entry_data_extra: dict[str, Any]
) -> MockConfigEntry:
    entry = make_device_entry()
    entry.add_to_hass(ha_core)
    ha_core.config_entries.async_update_entry(
        entry, data={**entry.data, **entry_data_extra}
    )
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()
    return entry


# ---------------------------------------------------------------- the satellite


async def test_the_satellite_is_named_after_its_device(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    """The device's main feature: assist_satellite.<device>, named as the device."""
    entity_id = er.async_get(ha_core).async_get_entity_id(
        "assist_satellite", DOMAIN, f"{MAC}-assist_satellite"
    )
    device = dr.async_get(ha_core).async_get_device_by_identifier(
        (DOMAIN, MAC), device_entry.entry_id
    )
    assert device is not None
    assert device.name == "bread-compact-wifi ddeeff"
    assert entity_id == "assist_satellite.bread_compact_wifi_ddeeff"
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.attributes["friendly_name"] == device.name


def test_the_integration_is_added_as_a_service() -> None:
    """HA's integration page then offers "Add service", not "Add hub"."""
    manifest = json.loads(
        (Path(custom_components.xiaozhi.__file__).parent / "manifest.json").read_text()
    )
    assert manifest["integration_type"] == "service"


# ---------------------------------------------------------------- selects


async def test_pipeline_and_vad_selects_belong_to_the_device(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    registry = er.async_get(ha_core)
    device = dr.async_get(ha_core).async_get_device_by_identifier(
        (DOMAIN, MAC), device_entry.entry_id
    )
    assert device is not None
    for unique_id in (
        pipeline_select_unique_id(MAC),
        vad_sensitivity_select_unique_id(MAC),
    ):
        entity_id = registry.async_get_entity_id(SELECT_DOMAIN, DOMAIN, unique_id)
        assert entity_id is not None
        registry_entry = registry.async_get(entity_id)
        assert registry_entry is not None
        assert registry_entry.device_id == device.id
        assert registry_entry.entity_category is EntityCategory.CONFIG
        assert registry_entry.config_entry_id == device_entry.entry_id
    assert pipeline_select_unique_id(MAC) == f"{MAC}-pipeline"
    assert vad_sensitivity_select_unique_id(MAC) == f"{MAC}-vad_sensitivity"
    # assist_pipeline knows the device, for its debug view.
    assert device.id in ha_core.data[KEY_ASSIST_PIPELINE].pipeline_devices


async def test_pipeline_select_offers_pipelines_and_is_resolved(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    entity_id = required_entity_id(ha_core, SELECT_DOMAIN, "pipeline")
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == OPTION_PREFERRED
    assert state.attributes[ATTR_OPTIONS][0] == OPTION_PREFERRED
    assert get_chosen_pipeline(ha_core, DOMAIN, MAC) is None

    store = ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store
    pipeline = await store.async_create_item(
        {
            "conversation_engine": "conversation.home_assistant",
            "conversation_language": "en",
            "language": "en",
            "name": "Kitchen assistant",
            "stt_engine": None,
            "stt_language": None,
            "tts_engine": None,
            "tts_language": None,
            "tts_voice": None,
            "wake_word_entity": None,
            "wake_word_id": None,
        }
    )
    await ha_core.async_block_till_done()
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert "Kitchen assistant" in state.attributes[ATTR_OPTIONS]

    await ha_core.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: entity_id, ATTR_OPTION: "Kitchen assistant"},
        blocking=True,
    )
    assert state_of(ha_core, entity_id) == "Kitchen assistant"
    assert get_chosen_pipeline(ha_core, DOMAIN, MAC) == pipeline.id


async def test_vad_sensitivity_select_is_resolved_and_restored_on_reload(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    entity_id = required_entity_id(ha_core, SELECT_DOMAIN, "vad_sensitivity")
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == VadSensitivity.DEFAULT
    assert set(state.attributes[ATTR_OPTIONS]) == {v.value for v in VadSensitivity}
    await ha_core.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: entity_id, ATTR_OPTION: VadSensitivity.RELAXED},
        blocking=True,
    )
    assert get_vad_sensitivity(ha_core, DOMAIN, MAC) is VadSensitivity.RELAXED

    assert await ha_core.config_entries.async_reload(device_entry.entry_id)
    await ha_core.async_block_till_done()
    assert state_of(ha_core, entity_id) == VadSensitivity.RELAXED


# ---------------------------------------------------------------- connectivity


async def test_connectivity_follows_the_session(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    entity_id = required_entity_id(ha_core, Platform.BINARY_SENSOR, "connectivity")
    registry_entry = er.async_get(ha_core).async_get(entity_id)
    assert registry_entry is not None
    assert registry_entry.entity_category is EntityCategory.DIAGNOSTIC
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == STATE_OFF
    assert state.attributes["device_class"] == "connectivity"

    device = devices(features={})
    await device.connect()
    await wait_until(runtime, lambda: runtime.link is not None)
    link = runtime.link
    assert link is not None
    assert state_of(ha_core, entity_id) == STATE_OFF  # no hello yet
    await device.hello()
    assert state_of(ha_core, entity_id) == STATE_ON

    await disconnect(runtime, device)
    assert state_of(ha_core, entity_id) == STATE_OFF
    await assert_link_gone(ha_core, link)


# ---------------------------------------------------------------- volume and brightness


async def test_volume_appears_with_the_tools_and_shows_the_device_status(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "volume") is None
    assert CONF_MCP_TOOLS not in device_entry.data
    firmware = Firmware(volume=40)
    device = await connect(ha_core, runtime, devices, firmware)

    entity_id = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, entity_id, "40")
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.attributes["min"] == 0
    assert state.attributes["max"] == 100
    assert state.attributes["step"] == 1
    assert state.attributes["unit_of_measurement"] == "%"
    assert state.attributes["mode"] == "slider"
    registry_entry = er.async_get(ha_core).async_get(entity_id)
    assert registry_entry is not None
    assert registry_entry.entity_category is EntityCategory.CONFIG
    assert registry_entry.translation_key == "volume"
    assert tool_calls(device, STATUS_TOOL) == [{}]
    # No backlight: no brightness.
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "screen_brightness") is None
    assert device_entry.data[CONF_MCP_TOOLS] == sorted([STATUS_TOOL, VOLUME_TOOL])


async def test_setting_the_volume_calls_the_device_tool(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    firmware = Firmware(volume=40)
    device = await connect(ha_core, runtime, devices, firmware)
    entity_id = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, entity_id, "40")

    await set_number(ha_core, entity_id, 55)
    assert tool_calls(device, VOLUME_TOOL) == [{"volume": 55}]
    assert type(tool_calls(device, VOLUME_TOOL)[0]["volume"]) is int
    assert firmware.volume == 55
    assert state_of(ha_core, entity_id) == "55"
    # The value shown is the one the device took; the status is not re-read.
    assert len(tool_calls(device, STATUS_TOOL)) == 1


async def test_brightness_exists_only_where_the_device_has_a_backlight(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    firmware = Firmware(volume=70, brightness=75)
    device = await connect(ha_core, runtime, devices, firmware)
    brightness = required_entity_id(ha_core, NUMBER_DOMAIN, "screen_brightness")
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, brightness, "75")
    assert state_of(ha_core, volume) == "70"
    # One status read serves both numbers.
    assert len(tool_calls(device, STATUS_TOOL)) == 1

    await set_number(ha_core, brightness, 20.4)
    assert tool_calls(device, BRIGHTNESS_TOOL) == [{"brightness": 20}]
    assert firmware.brightness == 20
    assert state_of(ha_core, brightness) == "20"
    assert BRIGHTNESS_TOOL in device_entry.data[CONF_MCP_TOOLS]


async def test_numbers_are_unavailable_while_disconnected_and_refresh_on_connect(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    firmware = Firmware(volume=40, brightness=60)
    device = await connect(ha_core, runtime, devices, firmware)
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, volume, "40")
    session = runtime.session
    assert session is not None

    caplog.set_level(logging.INFO, logger="custom_components.xiaozhi")
    caplog.clear()
    await disconnect(runtime, device)
    assert state_of(ha_core, volume) == STATE_UNAVAILABLE
    assert (
        state_of(
            ha_core, required_entity_id(ha_core, NUMBER_DOMAIN, "screen_brightness")
        )
        == STATE_UNAVAILABLE
    )
    unavailable = [r for r in caplog.records if "is not connected" in r.getMessage()]
    assert len(unavailable) == 1  # once for the device, not once per entity
    assert unavailable[0].levelno == logging.INFO
    await assert_session_gone(ha_core, session)
    assert session_tasks() == []

    # Changed on the device while away (say, by its buttons).
    firmware.volume = 25
    caplog.clear()
    device = await connect(ha_core, runtime, devices, firmware)
    await wait_for_state(ha_core, volume, "25")
    back = [r for r in caplog.records if "is connected" in r.getMessage()]
    assert len(back) == 1
    assert back[0].levelno == logging.INFO
    assert len(tool_calls(device, STATUS_TOOL)) == 1


async def test_setting_a_value_fails_with_translated_errors(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    firmware = Firmware(volume=40)
    device = await connect(ha_core, runtime, devices, firmware)
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, volume, "40")
    entity = number_entity(ha_core, volume)

    # The device refuses the value (its range check).
    with pytest.raises(HomeAssistantError) as refused:
        await entity.async_set_native_value(101)
    assert refused.value.translation_key == "device_error"
    assert refused.value.translation_domain == DOMAIN
    assert refused.value.translation_placeholders == {
        "device": "Kitchen speaker",
        "error": "Value exceeds maximum allowed: 100",
    }
    assert firmware.volume == 40
    assert state_of(ha_core, volume) == "40"

    # The device does not answer.
    device.answer_mcp = False
    call = asyncio.create_task(set_number(ha_core, volume, 30))
    await wait_for_calls(device, VOLUME_TOOL, 2)
    async_fire_time_changed(ha_core, dt_util.utcnow() + timedelta(seconds=11))
    with pytest.raises(HomeAssistantError) as timed_out:
        await call
    assert timed_out.value.translation_key == "device_timeout"
    assert state_of(ha_core, volume) == "40"
    assert runtime.connected

    # The device goes away while the call waits.
    call = asyncio.create_task(set_number(ha_core, volume, 30))
    await wait_for_calls(device, VOLUME_TOOL, 3)
    await device.close()
    with pytest.raises(HomeAssistantError) as gone:
        await call
    assert gone.value.translation_key == "device_not_connected"
    await wait_until(runtime, lambda: not runtime.connected)

    # Called while disconnected (the service skips unavailable entities; a
    # direct call still must not pretend).
    with pytest.raises(HomeAssistantError) as offline:
        await entity.async_set_native_value(30)
    assert offline.value.translation_key == "device_not_connected"
    assert offline.value.translation_placeholders == {"device": "Kitchen speaker"}
    assert state_of(ha_core, volume) == STATE_UNAVAILABLE


async def test_a_tool_reporting_an_error_result_fails_the_set(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    firmware = Firmware(volume=40)
    device = await connect(ha_core, runtime, devices, firmware)
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, volume, "40")
    device.answer_mcp = False
    call = asyncio.create_task(set_number(ha_core, volume, 30))
    await wait_for_calls(device, VOLUME_TOOL, 1)
    request = next(
        r
        for r in device.mcp_requests
        if r.get("method") == "tools/call" and r["params"]["name"] == VOLUME_TOOL
    )
    await device.mcp_reply(
        request["id"],
        result={"content": [{"type": "text", "text": "codec busy"}], "isError": True},
    )
    with pytest.raises(HomeAssistantError) as failed:
        await call
    assert failed.value.translation_key == "device_error"
    assert failed.value.translation_placeholders == {
        "device": "Kitchen speaker",
        "error": "codec busy",
    }
    assert state_of(ha_core, volume) == "40"


async def test_a_failed_status_read_leaves_the_value_unknown(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="custom_components.xiaozhi")
    firmware = Firmware(volume=40)
    firmware.status_error = "status unavailable"
    device = await connect(ha_core, runtime, devices, firmware)
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_calls(device, STATUS_TOOL, 1)
    await status_reads_done()
    assert "Could not read the status of Kitchen speaker" in caplog.text
    assert state_of(ha_core, volume) == STATE_UNKNOWN
    # Still settable.
    await set_number(ha_core, volume, 10)
    assert state_of(ha_core, volume) == "10"


async def test_a_status_reported_as_an_error_result_is_ignored(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="custom_components.xiaozhi")
    firmware = Firmware(volume=40)
    device = devices(tools=firmware.tools())
    device.answer_mcp = False
    await device.open()
    # Answer discovery by hand, then report the status as failed.
    await wait_for_request(device, "initialize")
    await device.mcp_reply(device.mcp_requests[0]["id"], result={})
    await wait_for_request(device, "tools/list")
    listing = next(r for r in device.mcp_requests if r["method"] == "tools/list")
    await device.mcp_reply(
        listing["id"],
        result={"tools": [{"name": tool.name} for tool in firmware.tools()]},
    )
    await wait_for_calls(device, STATUS_TOOL, 1)
    await ha_core.async_block_till_done()
    (read,) = [t for t in session_tasks() if t.get_name().endswith("read status")]
    status = next(
        r
        for r in device.mcp_requests
        if r.get("method") == "tools/call" and r["params"]["name"] == STATUS_TOOL
    )
    await device.mcp_reply(
        status["id"],
        result={"content": [{"type": "text", "text": "no"}], "isError": True},
    )
    await asyncio.wait({read})
    assert "failed to report its status: no" in caplog.text
    assert state_of(ha_core, required_entity_id(ha_core, NUMBER_DOMAIN, "volume")) == (
        STATE_UNKNOWN
    )


async def test_status_values_without_their_tool_are_ignored(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    # A status that reports a brightness, from a device that offers no tool for it.
    firmware = Firmware(volume=40, brightness=60)
    tools = [tool for tool in firmware.tools() if tool.name != BRIGHTNESS_TOOL]
    device = devices(tools=tools)
    await device.open()
    await wait_for_calls(device, STATUS_TOOL, 1)
    await status_reads_done()
    await ha_core.async_block_till_done()
    assert state_of(ha_core, required_entity_id(ha_core, NUMBER_DOMAIN, "volume")) == (
        "40"
    )
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "screen_brightness") is None


async def test_a_device_without_settable_tools_is_not_asked_its_status(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    device = devices(tools=[SimTool(STATUS_TOOL), SimTool("self.lamp.turn_on")])
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == 2)
    await ha_core.async_block_till_done()
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "volume") is None
    assert tool_calls(device, STATUS_TOOL) == []
    # The tools are still remembered.
    assert device_entry.data[CONF_MCP_TOOLS] == sorted(
        [STATUS_TOOL, "self.lamp.turn_on"]
    )


async def test_a_device_without_mcp_gets_no_numbers(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    device = devices(features={})
    await device.open()
    await ha_core.async_block_till_done()
    assert runtime.connected
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "volume") is None
    assert CONF_MCP_TOOLS not in device_entry.data
    assert device.mcp_requests == []


# ---------------------------------------------------------------- persistence


async def test_numbers_survive_a_reload_unavailable_until_the_device_connects(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    firmware = Firmware(volume=40, brightness=75)
    device = await connect(ha_core, runtime, devices, firmware)
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    brightness = required_entity_id(ha_core, NUMBER_DOMAIN, "screen_brightness")
    await wait_for_state(ha_core, brightness, "75")

    assert await ha_core.config_entries.async_reload(device_entry.entry_id)
    await ha_core.async_block_till_done()
    await device.wait_closed()
    # Same entities, not recreated under new ids; unavailable with no device.
    assert required_entity_id(ha_core, NUMBER_DOMAIN, "volume") == volume
    assert state_of(ha_core, volume) == STATE_UNAVAILABLE
    assert state_of(ha_core, brightness) == STATE_UNAVAILABLE

    runtime = runtime_of(device_entry)
    firmware.volume = 35
    await connect(ha_core, runtime, devices, firmware)
    await wait_for_state(ha_core, volume, "35")
    assert state_of(ha_core, brightness) == "75"


@pytest.mark.parametrize(
    "entry_data_extra", [{CONF_MCP_TOOLS: sorted([STATUS_TOOL, VOLUME_TOOL])}]
)
async def test_stored_tools_create_the_numbers_at_setup(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    assert state_of(ha_core, volume) == STATE_UNAVAILABLE
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "screen_brightness") is None


@pytest.mark.parametrize(
    "entry_data_extra",
    [{CONF_MCP_TOOLS: sorted([STATUS_TOOL, VOLUME_TOOL, BRIGHTNESS_TOOL])}],
)
async def test_a_tool_the_device_no_longer_offers_loses_its_entity(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "screen_brightness") is not None
    firmware = Firmware(volume=40, extra=2)  # reflashed for a board without backlight
    await connect(ha_core, runtime, devices, firmware)
    assert entity_id_of(ha_core, NUMBER_DOMAIN, "screen_brightness") is None
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, volume, "40")
    assert device_entry.data[CONF_MCP_TOOLS] == sorted(
        tool.name for tool in firmware.tools()
    )


async def test_an_empty_listing_changes_nothing(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    firmware = Firmware(volume=40)
    device = await connect(ha_core, runtime, devices, firmware)
    volume = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await disconnect(runtime, device)
    stored = device_entry.data[CONF_MCP_TOOLS]

    empty = devices(tools=[])
    await empty.open()
    await wait_for_request(empty, "tools/list")
    await ha_core.async_block_till_done()
    assert device_entry.data[CONF_MCP_TOOLS] == stored
    assert required_entity_id(ha_core, NUMBER_DOMAIN, "volume") == volume


# ---------------------------------------------------------------- pure helpers


async def test_a_value_reported_before_the_entity_is_added_is_kept(
    ha_core: HomeAssistant, device_entry: MockConfigEntry
) -> None:
    def add_entities(
        new_entities: Iterable[Entity],
        update_before_add: bool = False,
        *,
        config_subentry_id: str | None = None,
    ) -> None:
        raise AssertionError("nothing is added before async_start")

    numbers = DeviceNumbers(ha_core, device_entry, add_entities, new_number)
    (volume,) = offered_numbers([VOLUME_TOOL])
    entity = XiaozhiNumber(numbers, volume)
    entity.async_show_value(33)
    assert entity.native_value == 33
    assert entity.unique_id == f"{MAC}-volume"
    assert not entity.available


def test_stored_tool_names_and_offered_numbers() -> None:
    assert stored_tool_names({}) == frozenset()
    assert stored_tool_names({CONF_MCP_TOOLS: "self.x"}) == frozenset()
    assert stored_tool_names({CONF_MCP_TOOLS: ["a", 3, None, "b"]}) == {"a", "b"}
    assert [d.key for d in offered_numbers([STATUS_TOOL])] == []
    assert [d.key for d in offered_numbers([VOLUME_TOOL, "self.x"])] == ["volume"]
    assert [d.key for d in offered_numbers([BRIGHTNESS_TOOL, VOLUME_TOOL])] == [
        "volume",
        "screen_brightness",
    ]


# ---------------------------------------------------------------- clients without a status


class PyXiaozhi:
    """py-xiaozhi's volume tools (src/mcp/tools/volume/register.py): no status tool."""

    def __init__(self, volume: int, *, getter: bool = True) -> None:
        self.volume = volume
        self.getter = getter

    def tools(self) -> list[SimTool]:
        tools = [
            SimTool(
                VOLUME_TOOL,
                "set the volume",
                {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                callback=self.set_volume,
            )
        ]
        if self.getter:
            # Its get_volume returns the volume as a bare integer.
            tools.append(SimTool(VOLUME_GETTER_TOOL, callback=lambda _: self.volume))
        return tools

    def set_volume(self, arguments: dict[str, Any]) -> bool:
        self.volume = int(arguments["volume"])
        return True


async def test_a_volume_getter_serves_a_device_without_the_status_tool(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    client = PyXiaozhi(volume=65)
    device = devices(tools=client.tools())
    await device.open()
    await wait_for_calls(device, VOLUME_GETTER_TOOL, 1)
    entity_id = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    await wait_for_state(ha_core, entity_id, "65")
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert ATTR_ASSUMED_STATE not in state.attributes
    assert tool_calls(device, STATUS_TOOL) == []


async def test_a_volume_nobody_can_read_is_assumed_and_kept_across_reloads(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
) -> None:
    client = PyXiaozhi(volume=65, getter=False)
    device = await connect_tools(ha_core, runtime, devices, client.tools())
    entity_id = required_entity_id(ha_core, NUMBER_DOMAIN, "volume")
    state = ha_core.states.get(entity_id)
    assert state is not None
    # Nothing to read: an assumed state, never a call the device cannot answer.
    assert state.attributes[ATTR_ASSUMED_STATE] is True
    assert device.mcp_requests[-1]["method"] == "tools/list"

    await set_number(ha_core, entity_id, 30)
    assert client.volume == 30
    assert state_of(ha_core, entity_id) == "30"

    # After a reload (or restart), what was set is shown again once connected.
    assert await ha_core.config_entries.async_reload(device_entry.entry_id)
    await ha_core.async_block_till_done()
    await device.wait_closed()
    assert state_of(ha_core, entity_id) == STATE_UNAVAILABLE
    await connect_tools(ha_core, runtime_of(device_entry), devices, client.tools())
    await wait_for_state(ha_core, entity_id, "30")
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.attributes[ATTR_ASSUMED_STATE] is True


async def connect_tools(
    hass: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    tools: list[SimTool],
) -> SimulatedDevice:
    device = devices(tools=tools)
    await device.open()
    await wait_until(runtime, lambda: len(runtime.tools) == len(tools))
    await hass.async_block_till_done()
    return device


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("65", 65),
        ("65.4", 65),
        ('{"volume": 30, "muted": false}', 30),
        ('{"audio_speaker": {"volume": 12}}', 12),
        ('{"muted": true}', None),
        ("loud", None),
        ("true", None),
        ("[1]", None),
    ],
)
def test_getter_replies(text: str, value: int | None) -> None:
    assert parse_getter_reply(text, VOLUME) == value
