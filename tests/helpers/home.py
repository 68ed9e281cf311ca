"""Home Assistant as the tests run it: its core component and two real lights."""

import pytest

from homeassistant.components import conversation
from homeassistant.components.homeassistant.exposed_entities import async_expose_entity
from homeassistant.core import HomeAssistant
from homeassistant.setup import async_setup_component


@pytest.fixture
async def ha_core(hass: HomeAssistant) -> HomeAssistant:
    """HA with the core component up, as conversation's default agent needs."""
    assert await async_setup_component(hass, "homeassistant", {})
    return hass


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
