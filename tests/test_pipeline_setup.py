"""A service with speech gives a fresh Home Assistant a pipeline that can talk."""

import logging
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import (
    MockConfigEntry,
    async_test_home_assistant,
    flush_store,
)

from homeassistant import loader
from homeassistant.components.assist_pipeline import (
    Pipeline,
    async_create_default_pipeline,
    async_get_pipelines,
    async_update_pipeline,
)
from homeassistant.components.assist_pipeline.pipeline import async_get_pipeline
from homeassistant.components.assist_pipeline.runtime import KEY_ASSIST_PIPELINE
from homeassistant.config_entries import ConfigSubentryData, ConfigSubentryDataWithId
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

from custom_components.xiaozhi.const import DOMAIN
from fake_provider import FakeProvider
from tests.helpers.providers import provider_entry_data
from tests.helpers.tts_engines import PlainTTS, setup_tts_entities
from tests.helpers.voice import AGENT_ENTITY, STT_ENTITY, TTS_ENTITY

PLAIN_TTS = "tts.plain"


def preferred(hass: HomeAssistant) -> Pipeline:
    return async_get_pipeline(hass, None)


def speech_of(pipeline: Pipeline) -> tuple[str | None, str | None, str | None]:
    return pipeline.conversation_engine, pipeline.stt_engine, pipeline.tts_engine


def ours(hass: HomeAssistant) -> list[Pipeline]:
    return [
        pipeline
        for pipeline in async_get_pipelines(hass)
        if speech_of(pipeline) == (AGENT_ENTITY, STT_ENTITY, TTS_ENTITY)
    ]


def service_entry(
    provider: FakeProvider,
    subentries: list[ConfigSubentryData] | list[ConfigSubentryDataWithId],
) -> MockConfigEntry:
    return MockConfigEntry(
        domain=DOMAIN,
        title="Fake service",
        unique_id=provider.base_url,
        data=provider_entry_data(provider),
        subentries_data=subentries,
    )


async def set_up(hass: HomeAssistant, entry: MockConfigEntry) -> None:
    entry.add_to_hass(hass)
    assert await hass.config_entries.async_setup(entry.entry_id)
    await hass.async_block_till_done()


async def test_a_fresh_home_gets_a_talking_pipeline(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    provider_subentries: list[ConfigSubentryData],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """HA's first pipeline has no speech; the service's becomes the preferred one."""
    await ha_core.config.async_update(language="zh-Hans")
    assert await async_setup_component(ha_core, "assist_pipeline", {})
    first = preferred(ha_core)
    assert (first.stt_engine, first.tts_engine) == (None, None)
    caplog.set_level(logging.INFO, logger="custom_components.xiaozhi")

    await set_up(ha_core, service_entry(fake_provider, provider_subentries))

    pipeline = preferred(ha_core)
    assert pipeline.id != first.id
    assert pipeline.name == "Fake service"
    assert speech_of(pipeline) == (AGENT_ENTITY, STT_ENTITY, TTS_ENTITY)
    assert pipeline.language == "zh-Hans"
    assert pipeline.stt_language is not None
    assert pipeline.stt_language.startswith("zh")
    assert pipeline.tts_language is not None
    assert pipeline.tts_language.startswith("zh")
    assert pipeline.conversation_language == "zh-Hans"
    assert "Created the Assist pipeline 'Fake service'" in caplog.text
    # HA's own pipeline is still there, only no longer preferred.
    assert first in async_get_pipelines(ha_core)


async def test_reloading_the_entry_makes_no_second_pipeline(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    created = preferred(ha_core)
    assert ours(ha_core) == [created]
    # The user prefers HA's own (text only) pipeline again, on purpose.
    first = next(p for p in async_get_pipelines(ha_core) if p.stt_engine is None)
    ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store.async_set_preferred_item(first.id)

    assert await ha_core.config_entries.async_reload(provider_entry.entry_id)
    await ha_core.async_block_till_done()

    assert ours(ha_core) == [created]
    assert preferred(ha_core).id == first.id


async def test_a_pipeline_that_talks_is_never_replaced(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    provider_subentries: list[ConfigSubentryData],
) -> None:
    await setup_tts_entities(ha_core, [PlainTTS("Plain")])
    assert await async_setup_component(ha_core, "assist_pipeline", {})
    await set_up(ha_core, service_entry(fake_provider, provider_subentries))
    talking = preferred(ha_core)
    # Another voice: the user's own pipeline, with another TTS engine.
    await async_update_pipeline(ha_core, talking, tts_engine=PLAIN_TTS, name="Mine")
    before = [p.id for p in async_get_pipelines(ha_core)]

    entry = ha_core.config_entries.async_entries(DOMAIN)[0]
    assert await ha_core.config_entries.async_reload(entry.entry_id)
    await ha_core.async_block_till_done()

    assert [p.id for p in async_get_pipelines(ha_core)] == before
    assert preferred(ha_core).name == "Mine"


async def test_a_pipeline_whose_engine_is_gone_is_replaced(
    ha_core: HomeAssistant, provider_entry: MockConfigEntry
) -> None:
    """A preferred pipeline with an engine that no longer loads cannot talk."""
    broken = await async_create_default_pipeline(
        ha_core, STT_ENTITY, TTS_ENTITY, "Broken"
    )
    assert broken is not None
    await async_update_pipeline(ha_core, broken, tts_engine="tts.removed")
    ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store.async_set_preferred_item(broken.id)
    # The user deleted the pipeline the entry made.
    assert len(ours(ha_core)) == 1
    for pipeline in ours(ha_core):
        await ha_core.data[KEY_ASSIST_PIPELINE].pipeline_store.async_delete_item(
            pipeline.id
        )

    assert await ha_core.config_entries.async_reload(provider_entry.entry_id)
    await ha_core.async_block_till_done()

    pipeline = preferred(ha_core)
    assert pipeline.id != broken.id
    assert speech_of(pipeline) == (AGENT_ENTITY, STT_ENTITY, TTS_ENTITY)


async def test_a_service_without_speech_makes_no_pipeline(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
    provider_subentries: list[ConfigSubentryData],
) -> None:
    chat_only = [s for s in provider_subentries if s["subentry_type"] == "conversation"]
    assert await async_setup_component(ha_core, "assist_pipeline", {})
    first = preferred(ha_core)

    await set_up(ha_core, service_entry(fake_provider, chat_only))

    assert [p.id for p in async_get_pipelines(ha_core)] == [first.id]


async def test_a_restart_makes_no_second_pipeline(
    hass: HomeAssistant,
    hass_storage: dict[str, Any],
    fake_provider: FakeProvider,
    provider_subentries: list[ConfigSubentryData],
) -> None:
    """The second run of Home Assistant finds the pipeline the first one made."""
    assert await async_setup_component(hass, "homeassistant", {})
    subentries = [
        ConfigSubentryDataWithId(**subentry, subentry_id=f"sub{index}")
        for index, subentry in enumerate(provider_subentries)
    ]
    entry = service_entry(fake_provider, subentries)
    await set_up(hass, entry)
    created = preferred(hass)
    assert speech_of(created) == (AGENT_ENTITY, STT_ENTITY, TTS_ENTITY)
    await flush_store(hass.data[KEY_ASSIST_PIPELINE].pipeline_store.store)
    stored = hass_storage["assist_pipeline.pipelines"]["data"]

    async with async_test_home_assistant(config_dir=hass.config.config_dir) as again:
        again.data.pop(loader.DATA_CUSTOM_COMPONENTS)
        assert await async_setup_component(again, "homeassistant", {})
        await set_up(again, service_entry(fake_provider, subentries))

        assert [p.id for p in async_get_pipelines(again)] == [
            item["id"] for item in stored["items"]
        ]
        assert preferred(again).id == created.id
        await again.config_entries.async_unload(
            again.config_entries.async_entries(DOMAIN)[0].entry_id
        )
        await again.async_stop(force=True)
