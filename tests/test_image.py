"""The image entity of a device's last photo: there with a camera, gone without one."""

from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.const import STATE_UNKNOWN, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.device.camera import last_photo_unique_id
from custom_components.xiaozhi.device.runtime import DeviceRuntime
from simulator.board import OttoBoard, SimBoard
from simulator.device import SimCamera
from tests.helpers.devices import MAC, DeviceFactory, runtime_of, wait_until


def image_entity(hass: HomeAssistant) -> str | None:
    return er.async_get(hass).async_get_entity_id(
        Platform.IMAGE, DOMAIN, last_photo_unique_id(MAC)
    )


async def test_a_device_with_a_camera_gets_the_entity(
    ha_core: HomeAssistant,
    runtime: DeviceRuntime,
    devices: DeviceFactory,
    photo: bytes,
) -> None:
    assert image_entity(ha_core) is None
    device = devices(tools=OttoBoard().tools(), camera=SimCamera(photo))

    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    await ha_core.async_block_till_done()

    entity_id = image_entity(ha_core)
    assert entity_id is not None
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == STATE_UNKNOWN  # no photo yet
    assert state.attributes["friendly_name"].endswith("Last photo")


async def test_a_device_without_a_camera_gets_none(
    ha_core: HomeAssistant, runtime: DeviceRuntime, devices: DeviceFactory
) -> None:
    device = devices(tools=SimBoard().tools())

    await device.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    await ha_core.async_block_till_done()

    assert image_entity(ha_core) is None


async def test_the_entity_is_there_at_start_and_goes_with_the_camera(
    ha_core: HomeAssistant,
    device_entry: MockConfigEntry,
    devices: DeviceFactory,
    photo: bytes,
) -> None:
    camera_robot = devices(tools=OttoBoard().tools(), camera=SimCamera(photo))
    await camera_robot.open()
    await wait_until(
        runtime_of(device_entry), lambda: bool(runtime_of(device_entry).tools)
    )
    await camera_robot.close()
    await ha_core.async_block_till_done()

    # After a restart (a reload), before the device connects: the entity is back.
    assert await ha_core.config_entries.async_reload(device_entry.entry_id)
    await ha_core.async_block_till_done()
    entity_id = image_entity(ha_core)
    assert entity_id is not None
    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.state == STATE_UNKNOWN

    # Another firmware without the camera: the entity leaves.
    runtime = runtime_of(device_entry)
    plain = devices(tools=SimBoard().tools())
    await plain.open()
    await wait_until(runtime, lambda: bool(runtime.tools))
    await ha_core.async_block_till_done()
    assert image_entity(ha_core) is None
    assert ha_core.states.get(entity_id) is None
