"""The package's entry points, resolved lazily for Home Assistant; entry migration."""

import pytest
from pytest_homeassistant_custom_component.common import MockConfigEntry

from homeassistant.config_entries import ConfigEntryState
from homeassistant.core import HomeAssistant

import custom_components.xiaozhi as package
from custom_components.xiaozhi import integration
from custom_components.xiaozhi.const import DOMAIN
from fake_provider import FakeProvider
from tests.helpers.devices import MAC, device_entry_data
from tests.helpers.providers import provider_entry_data


@pytest.mark.parametrize("name", sorted(package.ENTRY_POINTS))
def test_entry_points_come_from_the_integration_module(name: str) -> None:
    assert getattr(package, name) is getattr(integration, name)


@pytest.mark.parametrize("name", ["setup", "PLATFORM_SCHEMA", "async_setup_platform"])
def test_other_names_are_not_there(name: str) -> None:
    # Home Assistant's loader decides what an integration offers with hasattr.
    assert not hasattr(package, name)
    with pytest.raises(AttributeError, match=f"has no attribute '{name}'"):
        getattr(package, name)


async def test_device_entries_of_version_1_1_drop_the_framing_version(
    ha_core: HomeAssistant,
) -> None:
    entry = MockConfigEntry(
        domain=DOMAIN,
        title="Kitchen speaker",
        unique_id=MAC,
        version=1,
        minor_version=1,
        data={**device_entry_data(), "protocol_version": 1},
    )
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.LOADED
    assert (entry.version, entry.minor_version) == (1, 2)
    assert entry.data == device_entry_data()


async def test_provider_entries_of_version_1_1_keep_their_data(
    ha_core: HomeAssistant, fake_provider: FakeProvider
) -> None:
    data = provider_entry_data(fake_provider)
    entry = MockConfigEntry(domain=DOMAIN, version=1, minor_version=1, data=data)
    entry.add_to_hass(ha_core)
    assert await ha_core.config_entries.async_setup(entry.entry_id)
    assert entry.minor_version == 2
    assert entry.data == data


async def test_entries_of_a_newer_major_version_are_not_loaded(
    ha_core: HomeAssistant,
) -> None:
    entry = MockConfigEntry(domain=DOMAIN, version=2, data=device_entry_data())
    entry.add_to_hass(ha_core)
    assert not await ha_core.config_entries.async_setup(entry.entry_id)
    assert entry.state is ConfigEntryState.MIGRATION_ERROR
