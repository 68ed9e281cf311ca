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

from http import HTTPStatus
import json
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
from .auth import request_value
from .pairing import DeviceIdentity, PairingFullError, PendingPairing
from .registry import XiaozhiServer, async_get_server

MAX_OTA_BODY_BYTES = 16 * 1024


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
        client_id=client_id[:64],
        board=(board_name or agent_board)[:64],
        firmware_version=(firmware or agent_version)[:32],
        language=language.split(",")[0][:16],
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
    LOGGER.warning("Too many device requests from %s; answering 429", address)
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
        raw = await request.content.read(MAX_OTA_BODY_BYTES + 1)
        if len(raw) > MAX_OTA_BODY_BYTES:
            return self.json_message(
                "body too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            )
        return await self._check_in(request, parse_body(raw))

    async def _check_in(
        self, request: web.Request, body: dict[str, Any]
    ) -> web.Response:
        hass = request.app[KEY_HASS]
        server = async_get_server(hass)
        try:
            device = device_identity(request, body)
        except BadCheckInError as err:
            LOGGER.info("Rejected OTA check from %s: %s", request.remote, err)
            return self.json_message(str(err), HTTPStatus.BAD_REQUEST)
        answer: dict[str, Any] = {
            "server_time": server_time(),
            "firmware": {"version": device.firmware_version, "url": ""},
        }
        entry = server.device_entry(device.mac)
        if is_paired(entry, device):
            assert entry is not None
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
    except PairingFullError:
        LOGGER.warning(
            "Too many devices waiting to be paired; %s must retry", device.mac
        )
        return None
    server.async_request_pairing(device)
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
        raw = await request.content.read(MAX_OTA_BODY_BYTES + 1)
        if len(raw) > MAX_OTA_BODY_BYTES:
            return self.json_message(
                "body too large", HTTPStatus.REQUEST_ENTITY_TOO_LARGE
            )
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
        pending = server.pairings.get(device.mac)
        if pending is not None and pending.device.client_id == device.client_id:
            return self.json_message("waiting for the code", HTTPStatus.ACCEPTED)
        return self.json_message(
            "no pairing in progress; check in again", HTTPStatus.NOT_FOUND
        )
