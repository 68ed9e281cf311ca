"""A real JPEG, as a camera board would send it, and where its photos go."""

import io

from PIL import Image
import pytest

from homeassistant.core import HomeAssistant

# Esp32Camera encodes at quality 80; QVGA is what most camera boards capture.
PHOTO_SIZE = (320, 240)
PHOTO_QUALITY = 80


def jpeg_photo(color: tuple[int, int, int] = (200, 30, 40)) -> bytes:
    """A QVGA JPEG: a coloured square on white."""
    picture = Image.new("RGB", PHOTO_SIZE, (255, 255, 255))
    picture.paste(color, (80, 40, 240, 200))
    out = io.BytesIO()
    picture.save(out, format="JPEG", quality=PHOTO_QUALITY)
    return out.getvalue()


@pytest.fixture
def photo() -> bytes:
    return jpeg_photo()


async def use_test_server_url(hass: HomeAssistant, url: str) -> None:
    """Make the test server Home Assistant's internal URL (the camera posts there)."""
    await hass.config.async_update(internal_url=url.rstrip("/"))
