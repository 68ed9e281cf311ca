"""Whether a paired device is connected to Home Assistant right now.

On MQTT+UDP (the default once the MQTT endpoint is up) a device keeps its
connection for its whole uptime: the sensor means "powered and connected". On
WebSocket a device opens its socket when a voice session starts and keeps it
until either side closes it after a while of silence, so the sensor is off most
of the time between conversations; that is normal, not a fault.
"""

from homeassistant.components.binary_sensor import BinarySensorEntity
from homeassistant.const import EntityCategory

from .device.entity import XiaozhiDeviceEntity, device_platform
from .device.runtime import DeviceConfigEntry
from .ha_internals import BinarySensorDeviceClass

# Nothing is polled or sent: the state comes from the device's session.
PARALLEL_UPDATES = 0


class XiaozhiConnectivitySensor(XiaozhiDeviceEntity, BinarySensorEntity):
    """On while the device has a link: MQTT connected, or a WebSocket after its hello.

    Always available: being disconnected is exactly what it reports. Named after
    its device class ("Connectivity"), which Home Assistant translates itself.
    """

    _attr_device_class = BinarySensorDeviceClass.CONNECTIVITY
    _attr_entity_category = EntityCategory.DIAGNOSTIC

    def __init__(self, entry: DeviceConfigEntry) -> None:
        """Describe the sensor of the device of ``entry``."""
        super().__init__(entry, "connectivity")

    @property
    def is_on(self) -> bool:
        """Return whether the device is connected."""
        return self.runtime.connected


# The device's connectivity sensor.
async_setup_entry = device_platform(
    lambda _hass, entry: [XiaozhiConnectivitySensor(entry)]
)
