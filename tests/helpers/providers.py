"""The fake OpenAI-compatible service, and a provider entry on it with its subentries."""

from collections.abc import AsyncGenerator, AsyncIterator
from typing import Any

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.config_entries import ConfigSubentryData
from homeassistant.const import CONF_API_KEY
from homeassistant.core import HomeAssistant

from custom_components.xiaozhi.config_flow import default_subentries
from custom_components.xiaozhi.const import (
    CONF_BASE_URL,
    CONF_ENTRY_KIND,
    CONF_PRESET,
    CONF_SUPPORTS_AUDIO,
    DOMAIN,
    ENTRY_KIND_PROVIDER,
)
from custom_components.xiaozhi.provider.presets import PRESET_CUSTOM
from fake_provider import FakeProvider


@pytest.fixture
async def fake_provider(socket_enabled: None) -> AsyncIterator[FakeProvider]:
    """Yield a started `FakeProvider`; stop it afterwards.

    Requests ``socket_enabled`` because pytest-homeassistant-custom-component
    blocks socket creation; connections stay limited to 127.0.0.1.
    """
    async with FakeProvider() as provider:
        yield provider


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
def provider_subentries(fake_provider: FakeProvider) -> list[ConfigSubentryData]:
    """Return the subentries a new custom provider entry gets."""
    return default_subentries(PRESET_CUSTOM, True, fake_provider.models)


@pytest.fixture
async def provider_entry(
    ha_core: HomeAssistant,
    fake_provider: FakeProvider,
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
