"""The firmware's OTA check and activation endpoints (no HA login: devices have none).

The OTA check tells a paired device where and how to connect: each transport
adds its own section (``websocket``: URL, token, framing version; see
``XiaozhiServer.ota_sections``). The firmware picks MQTT+UDP whenever an
``mqtt`` section is present. An unknown device gets an activation code to speak
and, from the transports that serve pairing sessions
(``XiaozhiServer.pairing_ota_sections``: WebSocket only), a token issued with
the code that opens nothing but a pairing session (``pairing_session.py``); the
firmware activates before it reads the rest, as ``Application::CheckNewVersion``
polls ``/activate`` until the code is typed, then checks in again.
"""

import asyncio
from http import HTTPStatus
import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from aiohttp import web

from homeassistant.config_entries import ConfigEntry, ConfigEntryState
from homeassistant.core import HomeAssistant
from homeassistant.helpers.http import KEY_HASS, HomeAssistantView
from homeassistant.util import dt as dt_util

from ..const import (
    ACTIVATE_PATH,
    CONF_BOARD,
    CONF_CLIENT_ID,
    CONF_FIRMWARE_VERSION,
    LOGGER,
    OTA_PATH,
)
from ..device.messages import device_message
from ..protocol.identity import normalize_mac
from ..protocol.sanitize import clean_field, printable
from .auth import request_value
from .pairing import DeviceIdentity, MacClaimedError, PairingFullError, PendingPairing
from .registry import XiaozhiServer, async_get_server

MAX_OTA_BODY_BYTES = 16 * 1024
# The firmware sends its system info (under 2 KB) at once; a body still coming
# after this long is a peer holding the request open.
BODY_TIMEOUT_S = 10.0


class BodyRefusedError(Exception):
    """The request body is refused; ``status`` (413 or 408) tells the client why."""

    def __init__(self, status: HTTPStatus, message: str) -> None:
        """Keep the status and its text."""
        super().__init__(message)
        self.status = status
        self.message = message


async def read_body(
    request: web.Request,
    limit: int = MAX_OTA_BODY_BYTES,
) -> bytes:
    """Read the whole body, however it is cut into writes, up to ``limit`` bytes.

    Raises:
        BodyRefusedError: 413 once the body (or its Content-Length) is larger
            than ``limit``, before reading the rest; 408 when it takes longer
            than ``BODY_TIMEOUT_S`` to arrive.
    """
    if request.content_length is not None and request.content_length > limit:
        raise BodyRefusedError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large")
    data = bytearray()
    try:
        async with asyncio.timeout(BODY_TIMEOUT_S):
            async for chunk in request.content.iter_any():
                data += chunk
                if len(data) > limit:
                    raise BodyRefusedError(
                        HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "body too large"
                    )
    except TimeoutError:
        raise BodyRefusedError(
            HTTPStatus.REQUEST_TIMEOUT, "body not received in time"
        ) from None
    return bytes(data)


class BadCheckInError(ValueError):
    """The request does not identify a device."""


def parse_body(raw: bytes) -> dict[str, Any]:
    """Return the system-info JSON body, or {} when absent or not an object."""
    if not raw:
        return {}
    try:
        body = json.loads(raw)
    except ValueError, UnicodeDecodeError:
        return {}
    if isinstance(body, dict) and isinstance(body.get("Payload"), dict):
        body = body["Payload"]
    return body if isinstance(body, dict) else {}


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def device_identity(request: web.Request, body: dict[str, Any]) -> DeviceIdentity:
    """Identify the device from its headers, falling back to its system-info body."""
    raw_mac = request_value(request, "Device-Id") or _text(body.get("mac_address"))
    try:
        mac = normalize_mac(raw_mac)
    except ValueError as err:
        raise BadCheckInError("missing or invalid Device-Id") from err
    client_id = request_value(request, "Client-Id") or _text(body.get("uuid"))
    if not client_id:
        raise BadCheckInError("missing Client-Id")
    agent_board, _, agent_version = request_value(request, "User-Agent").partition("/")
    application = body.get("application")
    board = body.get("board")
    firmware = (
        _text(application.get("version")) if isinstance(application, dict) else ""
    )
    board_name = ""
    if isinstance(board, dict):
        board_name = _text(board.get("name")) or _text(board.get("type"))
    language = request_value(request, "Accept-Language") or _text(body.get("language"))
    return DeviceIdentity(
        mac=mac,
        # Compared, never shown: kept as sent (bounded).
        client_id=client_id[:64],
        board=clean_field(board_name or agent_board, 64),
        firmware_version=clean_field(firmware or agent_version, 32),
        language=clean_field(language.split(",")[0], 16),
    )


def public_base_url(hass: HomeAssistant, request: web.Request) -> str:
    """Return HA's configured URL for the host the device used, else that host."""
    host = urlsplit(f"//{request.host}").hostname
    for configured in (hass.config.external_url, hass.config.internal_url):
        if configured and urlsplit(configured).hostname == host:
            return configured.rstrip("/")
    return f"{request.scheme}://{request.host}"


def server_time() -> dict[str, int]:
    """Return the clock the firmware sets itself to (UTC ms and HA's zone offset)."""
    offset = dt_util.now().utcoffset()
    minutes = int(offset.total_seconds() // 60) if offset else 0
    return {"timestamp": int(time.time() * 1000), "timezone_offset": minutes}


def is_paired(entry: ConfigEntry | None, device: DeviceIdentity) -> bool:
    """Return whether this Device-Id + Client-Id pair is the one that was paired."""
    return entry is not None and entry.data.get(CONF_CLIENT_ID) == device.client_id


def rate_limited(server: XiaozhiServer, request: web.Request) -> web.Response | None:
    """Return a 429 answer when this address sends too many requests."""
    address = request.remote or "unknown"
    if server.http_limiter.allow(address):
        return None
    server.refusal_log.log(
        LOGGER,
        logging.WARNING,
        "Too many device requests from %s; answering 429",
        printable(address, 64),
    )
    retry = max(1, round(server.http_limiter.retry_after(address)))
    return web.json_response(
        {"message": "too many requests"},
        status=HTTPStatus.TOO_MANY_REQUESTS,
        headers={"Retry-After": str(retry)},
    )


class OtaView(HomeAssistantView):
    """`/xiaozhi/ota/`: the firmware's version check, which also hands out connection data."""

    url = OTA_PATH
    extra_urls = [OTA_PATH.rstrip("/")]  # noqa: RUF012 (HA declares it a list)
    name = "api:xiaozhi:ota"
    requires_auth = False

    async def get(self, request: web.Request) -> web.Response:
        """Answer a check-in without a body (some clients use GET)."""
        if limited := rate_limited(async_get_server(request.app[KEY_HASS]), request):
            return limited
        return await self._check_in(request, {})

    async def post(self, request: web.Request) -> web.Response:
        """Answer the firmware's check-in with its system-info body."""
        if limited := rate_limited(async_get_server(request.app[KEY_HASS]), request):
            return limited
        try:
            raw = await read_body(request)
        except BodyRefusedError as err:
            return self.json_message(err.message, err.status)
        return await self._check_in(request, parse_body(raw))

    async def _check_in(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.Response:
        hass = request.app[KEY_HASS]
        server = async_get_server(hass)
        try:
            device = device_identity(request, body)
        except BadCheckInError as err:
            LOGGER.info(
                "Rejected OTA check from %s: %s", printable(request.remote), err
            )
            return self.json_message(str(err), HTTPStatus.BAD_REQUEST)
        answer: dict[str, Any] = {
            "server_time": server_time(),
            "firmware": {"version": device.firmware_version, "url": ""},
        }
        entry = server.device_entry(device.mac)
        if is_paired(entry, device):
            assert entry is not None
            if server.pairings.claims(device.mac):
                # The paired device itself is here: claims of its MAC are not it.
                server.async_end_pairing(device.mac)
            _async_refresh_device_info(hass, entry, device)
            for key, section in server.ota_sections.items():
                if (value := section(request, entry)) is not None:
                    answer[key] = value
            return self.json(answer)
        claim = _activation(server, device)
        if claim is None:
            return self.json_message(
                device_message("pairing_busy", device.language),
                HTTPStatus.SERVICE_UNAVAILABLE,
            )
        pending, answer["activation"] = claim
        # Clients that connect with their first answer's settings (xiaozhi-sdk,
        # py-xiaozhi) get a token that opens only a pairing session.
        for key, pairing_section in server.pairing_ota_sections.items():
            answer[key] = pairing_section(request, pending)
        return self.json(answer)


def _activation(
    server: XiaozhiServer, device: DeviceIdentity
) -> tuple[PendingPairing, dict[str, Any]] | None:
    try:
        pending = server.pairings.announce(device)
    except MacClaimedError:
        LOGGER.warning(
            "Device %s has other pairings waiting already; this one must retry",
            device.mac,
        )
        return None
    except PairingFullError:
        LOGGER.warning(
            "Too many devices waiting to be paired; %s must retry", device.mac
        )
        return None
    server.async_request_pairing(device)
    server.pairing_sessions.async_claimed(pending)
    LOGGER.info(
        "Device %s (%s) asks to be paired", device.mac, device.board or "unknown board"
    )
    return pending, {
        "code": pending.code,
        "message": device_message("activation", device.language),
        # The firmware only polls /activate when a challenge is present.
        "challenge": pending.challenge,
        "timeout_ms": int(server.pairings.remaining_seconds(pending) * 1000),
    }


def _async_refresh_device_info(
    hass: HomeAssistant, entry: ConfigEntry, device: DeviceIdentity
) -> None:
    """Keep the stored board and firmware version current (the device page shows them)."""
    updates = {
        key: value
        for key, value in (
            (CONF_BOARD, device.board),
            (CONF_FIRMWARE_VERSION, device.firmware_version),
        )
        if value and entry.data.get(key) != value
    }
    if updates:
        hass.config_entries.async_update_entry(entry, data={**entry.data, **updates})


class ActivateView(HomeAssistantView):
    """`/xiaozhi/ota/activate`: 202 while the code waits to be typed, 200 once paired."""

    url = ACTIVATE_PATH
    name = "api:xiaozhi:activate"
    requires_auth = False

    async def post(self, request: web.Request) -> web.Response:
        """Tell the polling device whether its code has been entered."""
        hass = request.app[KEY_HASS]
        server = async_get_server(hass)
        if limited := rate_limited(server, request):
            return limited
        try:
            raw = await read_body(request)
        except BodyRefusedError as err:
            return self.json_message(err.message, err.status)
        try:
            device = device_identity(request, parse_body(raw))
        except BadCheckInError as err:
            return self.json_message(str(err), HTTPStatus.BAD_REQUEST)
        entry = server.device_entry(device.mac)
        if is_paired(entry, device):
            assert entry is not None
            if entry.state is not ConfigEntryState.LOADED:
                # Just paired and still being set up: its WebSocket would be refused.
                return self.json_message("waiting for setup", HTTPStatus.ACCEPTED)
            return self.json_message("activated", HTTPStatus.OK)
        if server.pairings.get(device.mac, device.client_id) is not None:
            return self.json_message("waiting for the code", HTTPStatus.ACCEPTED)
        return self.json_message(
            "no pairing in progress; check in again", HTTPStatus.NOT_FOUND
        )
