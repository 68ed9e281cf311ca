"""A device whose pipeline cannot talk shows an alert, and HA a repair issue, until fixed.

A simulated device talks over a real WebSocket to its satellite; the pipeline is
HA's own, changed the way the voice assistant settings change it.
"""

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components.assist_pipeline import Pipeline, async_update_pipeline
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.components.select import (
    ATTR_OPTION,
    DOMAIN as SELECT_DOMAIN,
    SERVICE_SELECT_OPTION,
)
from homeassistant.const import ATTR_ENTITY_ID, Platform
from homeassistant.core import HomeAssistant
from homeassistant.helpers import entity_registry as er, issue_registry as ir
from homeassistant.helpers.translation import async_get_translations

from custom_components.xiaozhi.const import DOMAIN
from custom_components.xiaozhi.device.entity import pipeline_select_unique_id
from custom_components.xiaozhi.device.messages import device_message
from custom_components.xiaozhi.voice.pipeline import PipelineProblem
from custom_components.xiaozhi.voice.pipeline_check import (
    VOICE_ASSISTANTS_URL,
    issue_translation_key,
    pipeline_issue_id,
)
from fake_provider import ChatReply, FakeProvider
from simulator.device import SimulatedDevice
from tests.helpers.devices import MAC, DeviceFactory
from tests.helpers.voice import (
    ANSWER,
    STT_ENTITY,
    TIMEOUT,
    TRANSCRIPT,
    answer_messages,
    say,
    sentences,
)


@pytest.fixture
async def device(pipeline: Pipeline, devices: DeviceFactory) -> SimulatedDevice:
    sim = devices(features={})
    await sim.open()
    return sim


def issue(hass: HomeAssistant, entry: MockConfigEntry) -> ir.IssueEntry | None:
    return ir.async_get(hass).async_get_issue(DOMAIN, pipeline_issue_id(entry.entry_id))


async def cannot_talk(device: SimulatedDevice) -> dict[str, str]:
    """Start a turn; return the alert the device shows, after it hung up."""
    await say(device)
    alert = await device.next_message("alert", timeout=TIMEOUT)
    code, reason = await device.wait_closed(timeout=TIMEOUT)
    assert (code, reason) == (1000, "the conversation is over")
    return alert


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        ({"tts_engine": None}, PipelineProblem.NO_TTS),
        ({"tts_engine": "tts.removed"}, PipelineProblem.TTS_MISSING),
        ({"stt_engine": None}, PipelineProblem.NO_STT),
        ({"stt_engine": "stt.removed"}, PipelineProblem.STT_MISSING),
    ],
)
async def test_a_pipeline_that_cannot_talk_alerts_and_raises_an_issue_until_fixed(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device_entry: MockConfigEntry,
    device: SimulatedDevice,
    devices: DeviceFactory,
    change: dict[str, str | None],
    problem: PipelineProblem,
) -> None:
    await async_update_pipeline(ha_core, pipeline, **change)  # type: ignore[arg-type]

    alert = await cannot_talk(device)

    # On the device's screen, in its language (zh-CN).
    assert alert["message"] == device_message("pipeline_cannot_talk", "zh-CN")
    assert alert["status"] == device_message("error_title", "zh-CN")
    assert alert["emotion"]
    assert fake_provider.transcriptions == []
    # In HA: a repair issue naming the device and pointing to the settings.
    raised = issue(ha_core, device_entry)
    assert raised is not None
    assert raised.translation_key == issue_translation_key(problem)
    assert raised.translation_placeholders == {
        "device": "Kitchen speaker",
        "pipeline": "Xiaozhi",
    }
    assert raised.learn_more_url == VOICE_ASSISTANTS_URL
    assert raised.severity is ir.IssueSeverity.ERROR

    # Fixed in the settings: the next turn talks, and the issue is gone.
    await async_update_pipeline(
        ha_core, pipeline, stt_engine=STT_ENTITY, tts_engine="tts.xiaozhi_tts"
    )
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))
    again = devices(features={})
    await again.open()
    await say(again)
    assert sentences(await answer_messages(again)) == [ANSWER]
    assert issue(ha_core, device_entry) is None


async def test_a_missing_pipeline_alerts_and_raises_an_issue(
    ha_core: HomeAssistant, device_entry: MockConfigEntry, device: SimulatedDevice
) -> None:
    # A preferred pipeline that no longer exists (HA itself refuses to set one).
    ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store._preferred_item = "gone"

    alert = await cannot_talk(device)

    assert alert["message"] == device_message("pipeline_cannot_talk", "zh-CN")
    raised = issue(ha_core, device_entry)
    assert raised is not None
    assert raised.translation_key == "pipeline_not_found"
    assert raised.translation_placeholders == {
        "device": "Kitchen speaker",
        "pipeline": "?",
    }


async def test_choosing_a_pipeline_that_talks_for_the_device_clears_the_issue(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    pipeline: Pipeline,
    device_entry: MockConfigEntry,
    device: SimulatedDevice,
    devices: DeviceFactory,
) -> None:
    """The preferred pipeline stays mute; the device's own select picks another."""
    await async_update_pipeline(ha_core, pipeline, tts_engine=None)
    await cannot_talk(device)
    assert issue(ha_core, device_entry) is not None
    talking = next(
        p
        for p in ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store.async_items()
        if p.name == "Fake service"
    )
    select = er.async_get(ha_core).async_get_entity_id(
        Platform.SELECT, DOMAIN, pipeline_select_unique_id(MAC)
    )
    await ha_core.services.async_call(
        SELECT_DOMAIN,
        SERVICE_SELECT_OPTION,
        {ATTR_ENTITY_ID: select, ATTR_OPTION: talking.name},
        blocking=True,
    )
    fake_provider.add_transcript(TRANSCRIPT)
    fake_provider.add_reply(ChatReply.text(ANSWER))

    again = devices(features={})
    await again.open()
    await say(again)

    assert sentences(await answer_messages(again)) == [ANSWER]
    assert issue(ha_core, device_entry) is None


async def test_removing_the_device_drops_its_issue(
    ha_core: HomeAssistant,
    pipeline: Pipeline,
    device_entry: MockConfigEntry,
    device: SimulatedDevice,
) -> None:
    await async_update_pipeline(ha_core, pipeline, tts_engine=None)
    await cannot_talk(device)
    assert issue(ha_core, device_entry) is not None

    assert await ha_core.config_entries.async_remove(device_entry.entry_id)

    assert issue(ha_core, device_entry) is None


@pytest.mark.parametrize("problem", list(PipelineProblem))
@pytest.mark.parametrize("language", ["en", "zh-Hans"])
async def test_every_issue_is_translated(
    ha_core: HomeAssistant, problem: PipelineProblem, language: str
) -> None:
    texts = await async_get_translations(ha_core, language, "issues", [DOMAIN])
    prefix = f"component.{DOMAIN}.issues.{issue_translation_key(problem)}"
    for part in ("title", "description"):
        assert "{device}" in texts[f"{prefix}.{part}"]
    assert "{pipeline}" in texts[f"{prefix}.description"]
