"""A device's camera as Home Assistant sees it: where it posts, the call in flight, its last photo.

Boards with a camera offer ``self.camera.take_photo {question}``. The firmware
(main/boards/common/esp32_camera.cc) captures a JPEG and posts it, with the
question, to the URL that our MCP ``initialize`` gave it in
``capabilities.vision`` (kept in the device's RAM, so it goes into every
``initialize``), then returns whatever that endpoint answers as the tool's
result. The endpoint is ``server/vision.py``; this module holds what the device
and the endpoint share:

* the endpoint's URL: Home Assistant's own URL (internal first, an IP address
  allowed: devices reach HA on the local network, and the firmware's HTTPS
  client trusts public certificates only), and the device's vision token, an
  HMAC of its device token, so a leaked photo token opens nothing else;
* whether a ``take_photo`` call is in flight: the endpoint takes a photo only
  then, so nothing can post photos at other times;
* the last photo, for the device's image entity. Photos live in memory only:
  Home Assistant keeps no pictures of the home on disk for this.
"""

from collections.abc import Callable, Iterable, Iterator
import contextlib
from dataclasses import dataclass
from datetime import datetime
import hashlib
import hmac
from typing import Any, Final

from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant, callback
from homeassistant.helpers.network import NoURLAvailableError, get_url

from ..const import DOMAIN, VISION_PATH
from ..protocol.mcp import McpTool

PHOTO_TOOL: Final = "self.camera.take_photo"
# The device's image entity of its last photo (unique id: "<mac>-last_photo").
LAST_PHOTO_KEY: Final = "last_photo"
_VISION_TOKEN_PURPOSE: Final = b"xiaozhi-vision"


def last_photo_unique_id(mac: str) -> str:
    """Return the unique id of the image entity of the device with ``mac``."""
    return f"{mac}-{LAST_PHOTO_KEY}"


def has_camera(tools: Iterable[McpTool]) -> bool:
    """Return whether a device with these tools takes photos."""
    return any(tool.name == PHOTO_TOOL for tool in tools)


def vision_token(device_token: str) -> str:
    """Return the token a device's camera posts with, derived from its device token."""
    return hmac.new(
        device_token.encode(), _VISION_TOKEN_PURPOSE, hashlib.sha256
    ).hexdigest()


def vision_url(hass: HomeAssistant) -> str:
    """Return the URL of the camera endpoint, or "" when HA knows no URL of its own."""
    try:
        base = get_url(hass, allow_ip=True, prefer_external=False, allow_cloud=False)
    except NoURLAvailableError:
        return ""
    return f"{base.rstrip('/')}{VISION_PATH}"


@callback
def mcp_capabilities(hass: HomeAssistant, mac: str) -> dict[str, Any]:
    """Return what MCP ``initialize`` offers the device: the camera endpoint.

    Without a URL the firmware's camera tool fails with "Image explain URL or
    token is not set", which the model then hears.
    """
    entry = hass.config_entries.async_entry_for_domain_unique_id(DOMAIN, mac)
    token = str(entry.data.get(CONF_TOKEN, "")) if entry is not None else ""
    url = vision_url(hass) if token else ""
    return {"vision": {"url": url, "token": vision_token(token) if url else ""}}


@dataclass(frozen=True, slots=True)
class Photo:
    """A photo the device took.

    Attributes:
        jpeg: The JPEG as the device sent it.
        taken_at: When it arrived.
        question: What the device was asked about it.
    """

    jpeg: bytes
    taken_at: datetime
    question: str


class DeviceCamera:
    """The camera of one device: its photo calls in flight and its last photo.

    Attributes:
        last_photo: The last photo received since Home Assistant started.
    """

    def __init__(self, on_change: Callable[[], None]) -> None:
        """Call ``on_change`` whenever a photo arrives."""
        self.last_photo: Photo | None = None
        self._on_change = on_change
        self._calls_in_flight = 0

    @property
    def expects_photo(self) -> bool:
        """Return whether a ``take_photo`` call is waiting for its photo."""
        return self._calls_in_flight > 0

    @contextlib.contextmanager
    def photo_call(self) -> Iterator[None]:
        """Accept photos while the ``take_photo`` call inside runs."""
        self._calls_in_flight += 1
        try:
            yield
        finally:
            self._calls_in_flight -= 1

    @callback
    def async_photo_taken(self, photo: Photo) -> None:
        """Keep ``photo`` as the last one and tell the device's listeners."""
        self.last_photo = photo
        self._on_change()
