"""The device's "Last reply delay": end of speech → first audio of its last reply."""

from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    mock_restore_cache_with_extra_data,
)

from homeassistant.components.assist_pipeline import Pipeline
from homeassistant.components.sensor import SensorDeviceClass
from homeassistant.const import (
    ATTR_DEVICE_CLASS,
    ATTR_UNIT_OF_MEASUREMENT,
    STATE_UNKNOWN,
    EntityCategory,
    Platform,
    UnitOfTime,
)
from homeassistant.core import HomeAssistant, State
from homeassistant.helpers import entity_registry as er

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.voice.session import VoiceSession
from fake_provider import ChatReply, FakeProvider
from tests.helpers.devices import MAC, DeviceFactory, make_device_entry, runtime_of
from tests.helpers.voice import ANSWER, TRANSCRIPT, answer_messages, say, sentences

UNIQUE_ID = f"{MAC}-last_reply_delay"


def sensor_id(hass: HomeAssistant) -> str:
    entity_id = er.async_get(hass).async_get_entity_id(
        Platform.SENSOR, DOMAIN, UNIQUE_ID
    )
    assert entity_id is not None
    return entity_id


def value_of(hass: HomeAssistant) -> str:
    state = hass.states.get(sensor_id(hass))
    assert state is not None
    return state.state


async def test_the_last_reply_delay_is_shown_after_a_reply(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device_entry: MockConfigEntry,
    devices: DeviceFactory,
) -> None:
    entity_id = sensor_id(ha_core)
    registry_entry = er.async_get(ha_core).async_get(entity_id)
    assert registry_entry is not None
    assert registry_entry.entity_category is EntityCategory.DIAGNOSTIC
    assert registry_entry.translation_key == "last_reply_delay"
    assert value_of(ha_core) == STATE_UNKNOWN
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))
    device = devices(features={})
    await device.open()

    await say(device)
    assert sentences(await answer_messages(device)) == [ANSWER]

    state = ha_core.states.get(entity_id)
    assert state is not None
    assert state.attributes[ATTR_DEVICE_CLASS] == SensorDeviceClass.DURATION
    assert state.attributes[ATTR_UNIT_OF_MEASUREMENT] == UnitOfTime.MILLISECONDS
    # The turn's own clock: end of the utterance → first PCM of the reply.
    session = runtime_of(device_entry).session
    assert session is not None
    handler = session.handler
    assert isinstance(handler, VoiceSession)
    turn = handler.last_turn
    assert turn is not None
    assert turn.speech_ended_at is not None
    assert turn.speech.first_audio_at is not None
    expected = round((turn.speech.first_audio_at - turn.speech_ended_at) * 1000)
    assert int(state.state) == expected
    assert expected >= 0


async def test_the_last_delay_is_kept_across_a_restart(
    ha_core: HomeAssistant,
) -> None:
    entry = make_device_entry()
    mock_restore_cache_with_extra_data(
        ha_core,
        [
            (
                State("sensor.bread_compact_wifi_ddeeff_last_reply_delay", "812"),
                {"native_value": 812, "native_unit_of_measurement": "ms"},
            )
        ],
    )
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()

    assert sensor_id(ha_core) == "sensor.bread_compact_wifi_ddeeff_last_reply_delay"
    assert value_of(ha_core) == "812"
