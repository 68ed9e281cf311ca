"""The last photo of a paired device's camera, as an image entity.

A device gets the entity when it first lists ``self.camera.take_photo``, and
keeps it at every start (the entity registry remembers it); a listing without
the tool removes it. The entity stays available while the device is away: its
photo is still the last one. Photos are kept in memory only
(``device/camera.py``): after a restart the entity has no image until the
device takes the next photo.
"""

from homeassistant.components.image import ImageEntity, ImageEntityDescription
from homeassistant.const import Platform
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers import entity_registry as er
from homeassistant.helpers.entity_platform import AddConfigEntryEntitiesCallback

from .const import DOMAIN, LOGGER
from .device.camera import LAST_PHOTO_KEY, Photo, has_camera, last_photo_unique_id
from .device.entity import XiaozhiDeviceEntity
from .device.runtime import DeviceConfigEntry

PARALLEL_UPDATES = 0


async def async_setup_entry(
    hass: HomeAssistant,
    entry: DeviceConfigEntry,
    async_add_entities: AddConfigEntryEntitiesCallback,
) -> None:
    """Add the image entity once the device has a camera; remove it when it has none."""
    runtime = entry.runtime_data
    registry = er.async_get(hass)
    unique_id = last_photo_unique_id(runtime.mac)
    added = False

    @callback
    def follow_tools() -> None:
        nonlocal added
        registered = registry.async_get_entity_id(Platform.IMAGE, DOMAIN, unique_id)
        if runtime.tools and not has_camera(runtime.tools):
            if registered is not None:
                LOGGER.info(
                    "%s has no camera any more: removing %s", entry.title, registered
                )
                registry.async_remove(registered)
            added = False
            return
        if not added and (has_camera(runtime.tools) or registered is not None):
            added = True
            async_add_entities([LastPhotoImage(hass, entry)])

    follow_tools()
    entry.async_on_unload(runtime.async_add_listener(follow_tools))


class LastPhotoImage(XiaozhiDeviceEntity, ImageEntity):
    """The last photo the device's camera took, with the question it answered."""

    entity_description = ImageEntityDescription(
        key=LAST_PHOTO_KEY, translation_key=LAST_PHOTO_KEY
    )
    _attr_content_type = "image/jpeg"

    def __init__(self, hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
        """Show the photos of the device of ``entry``."""
        XiaozhiDeviceEntity.__init__(self, entry, LAST_PHOTO_KEY)
        ImageEntity.__init__(self, hass)
        self._photo: Photo | None = None
        self._show(self.runtime.camera.last_photo)

    def _show(self, photo: Photo | None) -> None:
        self._photo = photo
        self._attr_image_last_updated = photo.taken_at if photo is not None else None

    async def async_image(self) -> bytes | None:
        """Return the photo's JPEG, or None before the first photo."""
        return None if self._photo is None else self._photo.jpeg

    @callback
    def _async_device_changed(self) -> None:
        """Show a new photo; other changes of the device do not change the image."""
        photo = self.runtime.camera.last_photo
        if photo is self._photo:
            return
        self._show(photo)
        self.async_write_ha_state()
