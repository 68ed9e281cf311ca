"""Base for the entities a provider subentry creates (conversation, STT, TTS)."""

from collections.abc import Callable, Coroutine
from typing import Any

import openai

from homeassistant.config_entries import ConfigSubentry
from homeassistant.core import HomeAssistant
from homeassistant.helpers import device_registry as dr
from homeassistant.helpers.entity import Entity
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from ..const import CONF_BASE_URL, CONF_MODEL, CONF_PRESET, DOMAIN
from .client import ProviderConfigEntry, provider_title


class ProviderSubentryEntity(Entity):
    """An entity backed by one subentry of an OpenAI-compatible service.

    Each subentry is its own service device, named after the subentry, so several
    agents or voices on one service are told apart in the UI.
    """

    _attr_has_entity_name = True
    _attr_name = None
    _attr_should_poll = False

    def __init__(self, entry: ProviderConfigEntry, subentry: ConfigSubentry) -> None:
        """Describe the entity and its device from the subentry."""
        self.entry = entry
        self.subentry = subentry
        self._attr_unique_id = subentry.subentry_id
        self._attr_device_info = dr.DeviceInfo(
            identifiers={(DOMAIN, subentry.subentry_id)},
            name=subentry.title,
            manufacturer=provider_title(
                entry.data[CONF_PRESET], entry.data[CONF_BASE_URL]
            ),
            model=subentry.data.get(CONF_MODEL),
            entry_type=dr.DeviceEntryType.SERVICE,
        )

    @property
    def client(self) -> openai.AsyncOpenAI:
        """Return the provider's client (shared by all entities of the entry)."""
        return self.entry.runtime_data.client


type PlatformSetup = Callable[
    [HomeAssistant, ProviderConfigEntry, AddConfigEntryEntitiesCallback],
    Coroutine[Any, Any, None],
]


def subentry_platform(
    subentry_type: str,
    create: Callable[[ProviderConfigEntry, ConfigSubentry], Entity],
) -> PlatformSetup:
    """Return a platform's ``async_setup_entry``: an entity per subentry of a type.

    Each entity is tied to its subentry, so removing the subentry removes it.
    """

    async def async_setup_entry(
        hass: HomeAssistant,
        entry: ProviderConfigEntry,
        async_add_entities: AddConfigEntryEntitiesCallback,
    ) -> None:
        """Add one entity per subentry of the platform's type."""
        for subentry in entry.subentries.values():
            if subentry.subentry_type == subentry_type:
                async_add_entities(
                    [create(entry, subentry)], config_subentry_id=subentry.subentry_id
                )

    return async_setup_entry
