"""Who answers a question about a device's photo.

The device's camera endpoint (``server/vision.py``) asks this; the answer is
spoken by the device as its camera tool's result. In this order:

1. The device's pipeline agent is one of ours and has a model for photos (its
   ``vision_model``; new agents get their service's, where the preset knows
   one): that model, on the same service.
2. Home Assistant's preferred AI task entity (Settings > System > General), if
   it takes attachments: the photo goes from the device's image entity. An agent
   of another integration, or ours without a model for photos, lands here.
3. The device's pipeline agent is ours: its chat model (many see images).
4. Nothing: the assistant hears that no model here sees photos.
"""

from typing import Final

from homeassistant.components import ai_task
from homeassistant.components.assist_pipeline import (
    OPTION_PREFERRED,
    Pipeline,
    async_get_pipelines,
)
from homeassistant.components.select import DOMAIN as SELECT_DOMAIN
from homeassistant.config_entries import ConfigSubentry
from homeassistant.const import ATTR_SUPPORTED_FEATURES, Platform
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers import entity_registry as er

from . import ha_internals
from .const import CONF_MODEL, CONF_VISION_MODEL, DOMAIN
from .device.camera import Photo, last_photo_unique_id
from .device.entity import pipeline_select_unique_id
from .device.runtime import DeviceConfigEntry
from .provider.client import ProviderRuntime
from .provider.vision import VISION_INSTRUCTIONS, async_describe_photo

NO_VISION_MODEL: Final = (
    "No model in Home Assistant can see photos: give the Xiaozhi conversation agent"
    " a model for photos, or set up an AI task"
)


def device_pipeline(hass: HomeAssistant, entry: DeviceConfigEntry) -> Pipeline:
    """Return the pipeline the device's pipeline select names (else the preferred)."""
    select = er.async_get(hass).async_get_entity_id(
        SELECT_DOMAIN, DOMAIN, pipeline_select_unique_id(entry.runtime_data.mac)
    )
    state = hass.states.get(select) if select is not None else None
    if state is not None and state.state != OPTION_PREFERRED:
        for pipeline in async_get_pipelines(hass):
            if pipeline.name == state.state:
                return pipeline
    return ha_internals.pipeline_by_id(hass, None)


def our_agent(
    hass: HomeAssistant, agent: str | None
) -> tuple[ProviderRuntime, ConfigSubentry] | None:
    """Return the service and subentry of a conversation entity of ours."""
    registered = er.async_get(hass).async_get(agent) if agent else None
    if (
        registered is None
        or registered.platform != DOMAIN
        or registered.config_entry_id is None
        or registered.config_subentry_id is None
    ):
        return None
    entry = hass.config_entries.async_get_entry(registered.config_entry_id)
    runtime = getattr(entry, "runtime_data", None)
    if entry is None or not isinstance(runtime, ProviderRuntime):
        return None
    subentry = entry.subentries.get(registered.config_subentry_id)
    return None if subentry is None else (runtime, subentry)


async def async_answer_photo(
    hass: HomeAssistant, entry: DeviceConfigEntry, photo: Photo
) -> str:
    """Answer the photo's question (see the module docstring for who does).

    Raises:
        HomeAssistantError: No model can, or the one asked failed.
    """
    ours = our_agent(hass, device_pipeline(hass, entry).conversation_engine)
    if ours is not None and (vision_model := ours[1].data.get(CONF_VISION_MODEL)):
        return await async_describe_photo(
            ours[0].client, vision_model, photo.question, photo.jpeg
        )
    if (task := _ai_task_for_photos(hass)) is not None:
        return await _async_ask_ai_task(hass, task, entry, photo)
    if ours is not None:
        return await async_describe_photo(
            ours[0].client, ours[1].data[CONF_MODEL], photo.question, photo.jpeg
        )
    raise HomeAssistantError(NO_VISION_MODEL)


def _ai_task_for_photos(hass: HomeAssistant) -> str | None:
    """Return the preferred AI task entity, if it can take a photo."""
    entity_id = ha_internals.preferred_ai_task_entity(hass)
    state = hass.states.get(entity_id) if entity_id else None
    features = state.attributes.get(ATTR_SUPPORTED_FEATURES, 0) if state else 0
    if not features & ai_task.AITaskEntityFeature.SUPPORT_ATTACHMENTS:
        return None
    return entity_id


async def _async_ask_ai_task(
    hass: HomeAssistant, task: str, entry: DeviceConfigEntry, photo: Photo
) -> str:
    image_entity = er.async_get(hass).async_get_entity_id(
        Platform.IMAGE, DOMAIN, last_photo_unique_id(entry.runtime_data.mac)
    )
    if image_entity is None:
        raise HomeAssistantError(f"{entry.title} has no image entity for its photos")
    result = await ai_task.async_generate_data(
        hass,
        task_name=f"{entry.title}: question about a photo",
        entity_id=task,
        instructions=f"{VISION_INSTRUCTIONS}\n\n{photo.question}",
        attachments=[
            {
                "media_content_id": f"media-source://{Platform.IMAGE}/{image_entity}",
                "media_content_type": "image/jpeg",
            }
        ],
    )
    return str(result.data)
