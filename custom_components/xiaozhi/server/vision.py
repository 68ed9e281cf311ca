"""``/xiaozhi/vision``: where a device's camera posts its photo and the question about it.

The firmware's ``self.camera.take_photo`` (main/boards/common/esp32_camera.cc)
posts ``multipart/form-data``, chunked: a ``question`` field, then the file
``camera.jpg`` (``image/jpeg``), with ``Device-Id``, ``Client-Id`` and
``Authorization: Bearer <token>``, URL and token from our MCP ``initialize``
(``device/camera.py``). It needs HTTP 200, and speaks the body as the tool's
result. So every answer about a photo is 200 with JSON, ``{"success": true,
"answer": ...}``, or ``{"success": false, "message": ...}`` when no model can
see or the model failed: the assistant then hears why. Other statuses refuse
what is not a photo call of a paired device (the device reports "Failed to
upload photo", the assistant a tool error):

====  ====================================================================
429   Too many requests from this address (the OTA endpoints' budget).
401   Not a paired, enabled device; another Client-Id; a wrong or no token.
409   No ``take_photo`` call of this device is waiting for a photo.
413   A question over 2 KiB or a photo over 4 MiB (a Content-Length over
      their sum is refused before anything is read).
400   Not multipart, the parts missing or in another order, not a JPEG.
408   The body did not arrive within 30 s (``PHOTO_BODY_TIMEOUT_S``).
====  ====================================================================

The photo becomes the device's last photo (its image entity) before the
question is answered, so an AI task can read it from there. Who answers is the
integration's choice per device, handed in as a :class:`PhotoAnswerer`
(``photo_answers.py``: this layer does not know the providers).
"""

import asyncio
from collections.abc import Awaitable, Callable
import hmac
from http import HTTPStatus
from typing import Final

from aiohttp import BodyPartReader, MultipartReader, web

from homeassistant.config_entries import ConfigEntryState
from homeassistant.const import CONF_TOKEN
from homeassistant.core import HomeAssistant
from homeassistant.exceptions import HomeAssistantError
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView
from homeassistant.helpers.json import json_dumps
from homeassistant.util import dt as dt_util

from ..const import CONF_CLIENT_ID, LOGGER, VISION_PATH
from ..device.camera import Photo, vision_token
from ..device.runtime import DeviceConfigEntry, DeviceRuntime
from ..protocol.identity import normalize_mac
from .auth import request_value
from .ota import rate_limited
from .registry import XiaozhiServer, async_get_server

MAX_QUESTION_BYTES: Final = 2 * 1024
MAX_PHOTO_BYTES: Final = 4 * 1024 * 1024
# The parts' headers and boundaries of the firmware's body are well below this.
MAX_FORM_OVERHEAD_BYTES: Final = 1024
# The device gives up after 30 s without an answer (its HTTP client's timeout).
ANSWER_TIMEOUT_S: Final = 20.0
# The firmware posts a JPEG of some 100 KB at once; a 4 MiB one over a slow
# Wi-Fi still fits, a body trickled to hold the request open does not.
PHOTO_BODY_TIMEOUT_S = 30.0
JPEG_START: Final = b"\xff\xd8\xff"

type PhotoAnswerer = Callable[[HomeAssistant, DeviceConfigEntry, Photo], Awaitable[str]]
"""Answers the photo's question; raises ``HomeAssistantError`` saying why it cannot."""


class PhotoRefusedError(Exception):
    """The request is not a photo the endpoint takes; the status says why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        """Keep the HTTP status and the text that goes with it."""
        super().__init__(message)
        self.status = status
        self.message = message


def _answer(success: bool, key: str, text: str) -> web.Response:
    # UTF-8 as it is: the device hands the body on as its tool's result.
    return web.json_response({"success": success, key: text}, dumps=json_dumps)


def photo_caller(
    server: XiaozhiServer, request: web.Request
) -> tuple[DeviceConfigEntry, DeviceRuntime]:
    """Return the paired, loaded device that posts, whose take_photo call waits.

    Raises:
        PhotoRefusedError: 401 for anything that is not exactly that device
            (Device-Id, Client-Id, vision token); 409 when no call waits.
    """
    refused = PhotoRefusedError(HTTPStatus.UNAUTHORIZED, "unauthorized")
    try:
        mac = normalize_mac(request_value(request, "Device-Id"))
    except ValueError:
        raise refused from None
    entry = server.device_entry(mac)
    runtime = getattr(entry, "runtime_data", None)
    if (
        entry is None
        or entry.state is not ConfigEntryState.LOADED
        or not isinstance(runtime, DeviceRuntime)
    ):
        raise refused
    token = request_value(request, "Authorization").removeprefix("Bearer ").strip()
    expected = vision_token(str(entry.data.get(CONF_TOKEN, "")))
    client_id = request_value(request, "Client-Id")
    if client_id != entry.data.get(CONF_CLIENT_ID) or not hmac.compare_digest(
        token.encode(), expected.encode()
    ):
        raise refused
    if not runtime.camera.expects_photo:
        raise PhotoRefusedError(HTTPStatus.CONFLICT, "no photo was asked for")
    return entry, runtime


async def _read_part(part: BodyPartReader, limit: int, what: str) -> bytes:
    """Read one part whole, refusing it once it grows past ``limit`` bytes."""
    data = bytearray()
    while chunk := await part.read_chunk():
        data += chunk
        if len(data) > limit:
            raise PhotoRefusedError(
                HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                f"the {what} is larger than {limit} bytes",
            )
    return bytes(data)


async def _next_part(reader: MultipartReader, name: str) -> BodyPartReader:
    part = await reader.next()
    if not isinstance(part, BodyPartReader) or part.name != name:
        raise PhotoRefusedError(HTTPStatus.BAD_REQUEST, f"expected the {name!r} part")
    return part


async def read_photo(request: web.Request) -> tuple[str, bytes]:
    """Return the question and the JPEG of the firmware's multipart body.

    Raises:
        PhotoRefusedError: 413 for oversized parts, 400 for anything else that is wrong.
    """
    limit = MAX_QUESTION_BYTES + MAX_PHOTO_BYTES + MAX_FORM_OVERHEAD_BYTES
    if request.content_length is not None and request.content_length > limit:
        raise PhotoRefusedError(
            HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "the body is too large"
        )
    if request.content_type != "multipart/form-data":
        raise PhotoRefusedError(HTTPStatus.BAD_REQUEST, "expected multipart/form-data")
    try:
        reader = await request.multipart()
        question = await _read_part(
            await _next_part(reader, "question"), MAX_QUESTION_BYTES, "question"
        )
        jpeg = await _read_part(
            await _next_part(reader, "file"), MAX_PHOTO_BYTES, "photo"
        )
    except ValueError as err:  # aiohttp: a body that is not well-formed multipart
        raise PhotoRefusedError(
            HTTPStatus.BAD_REQUEST, f"malformed body: {err}"
        ) from err
    if not jpeg.startswith(JPEG_START):
        raise PhotoRefusedError(HTTPStatus.BAD_REQUEST, "the photo is not a JPEG")
    return question.decode(errors="replace").strip(), jpeg


async def _read_photo_in_time(request: web.Request) -> tuple[str, bytes]:
    """Read the photo as :func:`read_photo`, within ``PHOTO_BODY_TIMEOUT_S``.

    Raises:
        PhotoRefusedError: As :func:`read_photo`; 408 when the body is too slow.
    """
    try:
        async with asyncio.timeout(PHOTO_BODY_TIMEOUT_S):
            return await read_photo(request)
    except TimeoutError:
        raise PhotoRefusedError(
            HTTPStatus.REQUEST_TIMEOUT, "the body did not arrive in time"
        ) from None


class VisionView(HomeAssistantView):
    """``/xiaozhi/vision``: a device's photo and question in, the answer out."""

    url = VISION_PATH
    name = "api:xiaozhi:vision"
    requires_auth = False  # devices authenticate with their vision token

    def __init__(self, answerer: PhotoAnswerer) -> None:
        """Answer photos' questions with ``answerer``."""
        self._answerer = answerer

    async def post(self, request: web.Request) -> web.Response:
        """Take a photo of a device whose take_photo call waits, and answer it."""
        hass = request.app[KEY_HASS]
        server = async_get_server(hass)
        if limited := rate_limited(server, request):
            return limited
        try:
            entry, runtime = photo_caller(server, request)
            question, jpeg = await _read_photo_in_time(request)
        except PhotoRefusedError as refusal:
            LOGGER.info("Refused a photo from %s: %s", request.remote, refusal.message)
            return self.json_message(refusal.message, refusal.status)
        photo = Photo(jpeg=jpeg, taken_at=dt_util.utcnow(), question=question)
        runtime.camera.async_photo_taken(photo)
        return await self._async_answer(hass, entry, photo)

    async def _async_answer(
        self, hass: HomeAssistant, entry: DeviceConfigEntry, photo: Photo
    ) -> web.Response:
        try:
            async with asyncio.timeout(ANSWER_TIMEOUT_S):
                text = await self._answerer(hass, entry, photo)
        except TimeoutError:
            LOGGER.warning(
                "No answer about the photo of %s within %g s",
                entry.title,
                ANSWER_TIMEOUT_S,
            )
            message = f"The vision model did not answer within {ANSWER_TIMEOUT_S:g} s"
            return _answer(False, "message", message)
        except HomeAssistantError as err:
            LOGGER.warning("Cannot answer about the photo of %s: %s", entry.title, err)
            return _answer(False, "message", str(err))
        return _answer(True, "answer", text)
