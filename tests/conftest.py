"""Fixtures shared by the whole suite."""

from collections.abc import AsyncGenerator
from pathlib import Path
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.components import conversation, tts
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component

# Imported at module import time so HA resolves `custom_components` to this repo's folder.
import custom_components.xiaozhi  # noqa: F401
from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_ENTRY_KIND,
    CONF_PRESET,
    CONF_SUPPORTS_AUDIO,
    DOMAIN,
    ENTRY_KIND_PROVIDER,
    PRESET_CUSTOM,
)
from fake_provider import FakeProvider

from .device_fixtures import client, device_entry, devices, runtime  # noqa: F401
from .helpers.provider import fake_provider  # noqa: F401


@pytest.fixture(autouse=True)
def auto_enable_custom_integrations(enable_custom_integrations: None) -> None:
    """Let HA load this repo's integration in every test."""


@pytest.fixture(autouse=True)
def isolated_tts_cache(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Keep HA's TTS file cache per test (its default lies in the shared test config)."""
    monkeypatch.setattr(tts, "DEFAULT_CACHE_DIR", str(tmp_path / "tts"))


@pytest.fixture
async def ha_core(hass: HomeAssistant) -> HomeAssistant:
    """HA with the core component up, as conversation's default agent needs."""
    assert await async_setup_component(hass, "homeassistant", {})
    return hass


def provider_entry_data(
    provider: FakeProvider, *, audio: bool = True
) -> dict[str, Any]:
    """Return the data of a provider entry pointing at the fake service."""
    return {
        CONF_ENTRY_KIND: ENTRY_KIND_PROVIDER,
        CONF_PRESET: PRESET_CUSTOM,
        CONF_BASE_URL: provider.base_url,
        CONF_API_KEY: provider.api_key,
        CONF_SUPPORTS_AUDIO: audio,
    }


@pytest.fixture
def provider_subentries(fake_provider: FakeProvider) -> list[ConfigSubentryData]:  # noqa: F811
    """Return the subentries a new custom provider entry gets."""
    return default_subentries(PRESET_CUSTOM, True, fake_provider.models)


@pytest.fixture
async def provider_entry(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,  # noqa: F811
    provider_subentries: list[ConfigSubentryData],
) -> AsyncGenerator[MockConfigEntry]:
    """A loaded provider entry on the fake service with all three subentries."""
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Fake service",
        unique_id=fake_provider.base_url,
        data=provider_entry_data(fake_provider),
        subentries_data=provider_subentries,
    )
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    await ha_core.async_block_till_done()
    yield entry
    await ha_core.async_block_till_done()
    await ha_core.config_entries.async_unload(entry.entry_id)


@pytest.fixture
async def lights(ha_core: HomeAssistant) -> list[str]:
    """Two real (template, optimistic) lights, off and exposed to Assist."""
    assert await async_setup_component(
        ha_core,
        "template",
        {
            "template": [
                {
                    "light": [
                        {"name": name, "turn_on": [], "turn_off": []}
                        for name in ("Kitchen", "Hall")
                    ]
                }
            ]
        },
    )
    await ha_core.async_block_till_done()
    entity_ids = ["light.kitchen", "light.hall"]
    for entity_id in entity_ids:
        async_expose_entity(ha_core, conversation.DOMAIN, entity_id, True)
    await ha_core.services.async_call(
        "light", "turn_off", {"entity_id": entity_ids}, blocking=True
    )
    return entity_ids
