"""The firmware's OTA check-in and activation, against Home Assistant.

As Ota::CheckVersion, Ota::Activate and Application::CheckNewVersion do
(main/ota.cc, main/application.cc of github:78/xiaozhi-esp32): POST the system
info with the firmware's headers to the OTA URL; an ``activation`` answer means
"show and speak this code, then poll ``<ota url>activate``" every 3 s while it
answers 202, up to 10 times, checking in again afterwards (and at once when it
answers 200); a ``websocket`` answer says where to connect.

One deviation: our server answers 404 from ``activate`` when the device has no
pairing in progress (its code expired); the simulator then checks in at once for a
new code instead of retrying for 100 s as the firmware would.
"""

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from http import HTTPStatus
import json
from typing import Any, Final

import aiohttp

from .board import BOARD_NAME, CHIP_MODEL, FIRMWARE_VERSION, FLASH_SIZE
from .errors import SimulatorError
from .state import DeviceState, WebsocketSettings

OTA_PATH: Final = "/xiaozhi/ota/"
# Application::CheckNewVersion: 10 activation attempts per code shown, 3 s apart
# while pending, 10 s apart after an error.
ACTIVATION_ATTEMPTS: Final = 10
ACTIVATION_POLL_S: Final = 3.0
ACTIVATION_RETRY_S: Final = 10.0
HTTP_TIMEOUT_S: Final = 15.0


def ota_url(ha_url: str) -> str:
    """Return the OTA URL of a Home Assistant base URL (the firmware's OTA setting)."""
    return ha_url.rstrip("/") + OTA_PATH


def activate_url(check_url: str) -> str:
    """Return the activation URL, built as Ota::Activate builds it."""
    return check_url + ("activate" if check_url.endswith("/") else "/activate")


def firmware_headers(state: DeviceState, language: str) -> dict[str, str]:
    """Return the headers Ota::SetupHttp sends (a board without eFuse serial)."""
    return {
        "Activation-Version": "1",
        "Device-Id": state.mac,
        "Client-Id": state.client_id,
        "User-Agent": f"{BOARD_NAME}/{FIRMWARE_VERSION}",
        "Accept-Language": language,
        "Content-Type": "application/json",
    }


def system_info(state: DeviceState, language: str) -> dict[str, Any]:
    """Return the body Board::GetSystemInfoJson builds (its essential fields)."""
    return {
        "version": 2,
        "language": language,
        "flash_size": FLASH_SIZE,
        # A string in the firmware too.
        "minimum_free_heap_size": "8234567",
        "mac_address": state.mac,
        "uuid": state.client_id,
        "chip_model_name": CHIP_MODEL,
        "application": {"name": "xiaozhi", "version": FIRMWARE_VERSION},
        "ota": {"label": "ota_0"},
        "board": {"type": BOARD_NAME, "name": BOARD_NAME},
    }


@dataclass(frozen=True, slots=True)
class Activation:
    """The ``activation`` section of an OTA answer."""

    code: str
    message: str = ""
    challenge: str | None = None


@dataclass(frozen=True, slots=True)
class OtaAnswer:
    """What an OTA check-in answered."""

    websocket: WebsocketSettings | None
    activation: Activation | None
    mqtt: dict[str, Any] | None = None
    """The ``mqtt`` section as sent: the firmware copies every key into NVS."""


def _text(section: dict[str, Any], key: str) -> str | None:
    value = section.get(key)
    return value if isinstance(value, str) else None


def parse_ota_answer(body: Any) -> OtaAnswer:
    """Read an OTA answer as Ota::CheckVersion does (sections of other types ignored).

    Raises:
        SimulatorError: Not a JSON object, or an unusable ``websocket`` section.
    """
    if not isinstance(body, dict):
        raise SimulatorError(f"the OTA answer is not a JSON object: {body!r:.200}")
    websocket = None
    if isinstance(section := body.get("websocket"), dict):
        try:
            websocket = WebsocketSettings.from_json(section)
        except ValueError as err:
            raise SimulatorError(f"unusable OTA answer: {err}") from None
    activation = None
    if isinstance(section := body.get("activation"), dict):
        code = _text(section, "code")
        challenge = _text(section, "challenge")
        if code is not None or challenge is not None:
            activation = Activation(
                code=code or "",
                message=_text(section, "message") or "",
                challenge=challenge,
            )
    mqtt = body.get("mqtt") if isinstance(body.get("mqtt"), dict) else None
    return OtaAnswer(websocket=websocket, activation=activation, mqtt=mqtt)


class HttpStatusError(SimulatorError):
    """Home Assistant answered with an unexpected HTTP status."""

    def __init__(self, message: str, status: int, retry_after: float | None) -> None:
        """Keep the status and the Retry-After delay (for 429)."""
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after


def _retry_after(response: aiohttp.ClientResponse) -> float | None:
    try:
        return max(0.0, float(response.headers.get("Retry-After", "")))
    except ValueError:
        return None


async def _error_text(response: aiohttp.ClientResponse) -> str:
    text = (await response.text(errors="replace")).strip()
    try:
        body = json.loads(text)
    except ValueError:
        return text[:200]
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return text[:200]


class OtaClient:
    """Checks in and activates one device at one OTA URL."""

    def __init__(
        self,
        http: aiohttp.ClientSession,
        check_url: str,
        state: DeviceState,
        language: str,
    ) -> None:
        """Prepare requests for ``state`` at ``check_url``."""
        self._http = http
        self.check_url = check_url
        self._headers = firmware_headers(state, language)
        self._body = system_info(state, language)
        self._timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)

    async def check_in(self) -> OtaAnswer:
        """POST the system info; return the answer.

        Raises:
            HttpStatusError: Any status but 200 (the firmware's condition).
            SimulatorError: Home Assistant cannot be reached, or the answer is
                not an OTA answer.
        """
        try:
            async with self._http.post(
                self.check_url,
                headers=self._headers,
                json=self._body,
                timeout=self._timeout,
            ) as response:
                if response.status != HTTPStatus.OK:
                    raise HttpStatusError(
                        _check_in_failure(response.status, await _error_text(response)),
                        response.status,
                        _retry_after(response),
                    )
                try:
                    body = await response.json(content_type=None)
                except ValueError as err:
                    raise SimulatorError(
                        f"the OTA answer of {self.check_url} is not JSON: {err}"
                    ) from None
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SimulatorError(
                f"cannot reach Home Assistant at {self.check_url}: {err or type(err).__name__}"
            ) from None
        return parse_ota_answer(body)

    async def activate(self) -> int:
        """POST to the activation URL (body ``{}``: no eFuse key); return the status.

        Raises:
            SimulatorError: Home Assistant cannot be reached.
        """
        url = activate_url(self.check_url)
        try:
            async with self._http.post(
                url, headers=self._headers, data=b"{}", timeout=self._timeout
            ) as response:
                await response.read()
                return response.status
        except (aiohttp.ClientError, TimeoutError) as err:
            raise SimulatorError(
                f"cannot reach Home Assistant at {url}: {err or type(err).__name__}"
            ) from None


def _check_in_failure(status: int, text: str) -> str:
    hint = ""
    if status == HTTPStatus.NOT_FOUND:
        hint = (
            " (is the Xiaozhi integration installed and set up in this Home Assistant?)"
        )
    return f"the OTA check-in was answered with HTTP {status}: {text}{hint}"


type CodeCallback = Callable[[Activation], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class PairingTiming:
    """Delays of the pairing loop (the firmware's by default)."""

    poll_s: float = ACTIVATION_POLL_S
    retry_s: float = ACTIVATION_RETRY_S
    attempts: int = ACTIVATION_ATTEMPTS


async def obtain_websocket(
    client: OtaClient,
    on_code: CodeCallback,
    *,
    timing: PairingTiming | None = None,
) -> WebsocketSettings:
    """Check in until Home Assistant hands out WebSocket settings.

    While the device is not paired: ``on_code`` is awaited whenever a new code is
    handed out (to show and speak it), then activation is polled.

    Raises:
        SimulatorError: Home Assistant is unreachable, refuses the check-in, or
            answers with neither a code nor WebSocket settings.
    """
    timing = timing or PairingTiming()
    shown: Activation | None = None
    while True:
        try:
            answer = await client.check_in()
        except HttpStatusError as err:
            if err.status != HTTPStatus.TOO_MANY_REQUESTS:
                raise
            await asyncio.sleep(err.retry_after or timing.retry_s)
            continue
        # As Application::CheckNewVersion: a code is activated first, even when
        # the answer has WebSocket settings too (they open only a pairing session).
        if answer.websocket is not None and answer.activation is None:
            return answer.websocket
        if answer.activation is None:
            raise SimulatorError(
                f"{client.check_url} answered neither a code nor WebSocket settings"
                " (is it a Xiaozhi server that uses MQTT?)"
            )
        if answer.activation != shown:
            shown = answer.activation
            await on_code(answer.activation)
        if answer.activation.challenge is None:
            # Ota::Activate refuses to run without a challenge; check in later.
            await asyncio.sleep(timing.retry_s)
            continue
        await _poll_activation(client, timing)


async def _poll_activation(client: OtaClient, timing: PairingTiming) -> None:
    """Poll until activated, told to check in again, or out of attempts."""
    for _ in range(timing.attempts):
        status = await client.activate()
        if status in (HTTPStatus.OK, HTTPStatus.NOT_FOUND):
            return
        await asyncio.sleep(
            timing.poll_s if status == HTTPStatus.ACCEPTED else timing.retry_s
        )
