"""The Assist pipeline and "finished speaking" selects of a paired device.

They are Home Assistant's own selects from assist_pipeline, attached to the
device: their unique ids are ``<mac>-pipeline`` and ``<mac>-vad_sensitivity``,
which is how the device's assist satellite (and assist_pipeline's
``get_chosen_pipeline`` / ``get_vad_sensitivity``) find them in the entity
registry. Their choice is restored across restarts by the base classes and works
whether or not the device is connected.
"""

from homeassistant.components.assist_pipeline import (
    AssistPipelineSelect,
    VadSensitivitySelect,
)
from homeassistant.core import HomeAssistant

from .const import CONF_MAC, DOMAIN
from .device.entity import (
    PIPELINE_KEY,
    VAD_SENSITIVITY_KEY,
    XiaozhiDeviceEntity,
    device_platform,
)
from .device.runtime import DeviceConfigEntry

# Choosing an option only stores it; nothing is sent to the device.
PARALLEL_UPDATES = 0


class XiaozhiPipelineSelect(XiaozhiDeviceEntity, AssistPipelineSelect):
    """Which Assist pipeline the device's voice requests run through."""

    def __init__(self, hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
        """Attach assist_pipeline's pipeline select to the device of ``entry``."""
        XiaozhiDeviceEntity.__init__(self, entry, PIPELINE_KEY)
        AssistPipelineSelect.__init__(self, hass, DOMAIN, entry.data[CONF_MAC])


class XiaozhiVadSensitivitySelect(XiaozhiDeviceEntity, VadSensitivitySelect):
    """How soon a pause ends the person's request."""

    def __init__(self, hass: HomeAssistant, entry: DeviceConfigEntry) -> None:
        """Attach assist_pipeline's VAD sensitivity select to the device of ``entry``."""
        XiaozhiDeviceEntity.__init__(self, entry, VAD_SENSITIVITY_KEY)
        VadSensitivitySelect.__init__(self, hass, entry.data[CONF_MAC])


# The device's pipeline and VAD sensitivity selects.
async_setup_entry = device_platform(
    lambda hass, entry: [
        XiaozhiPipelineSelect(hass, entry),
        XiaozhiVadSensitivitySelect(hass, entry),
    ]
)
