"""What the simulated device keeps between runs, as the firmware keeps it in NVS.

The MAC address and Client-Id identify the device to Home Assistant, so they must
survive restarts for a paired device to stay paired; the WebSocket settings of the
last OTA answer (``url``, ``token``, ``version``) let a run connect without
checking in (``--skip-ota``). Everything lives in one JSON file, readable only by
its owner since it holds the device's token.
"""

import asyncio
from dataclasses import dataclass, replace
import json
import os
from pathlib import Path
import secrets
from typing import Any, Final, Self
import uuid

from custom_components.xiaozhi.protocol.identity import normalize_mac

STATE_FORMAT: Final = 1


class StateFileError(ValueError):
    """The state file exists but is not one of ours."""


class InvalidSettingsError(ValueError):
    """WebSocket settings without a URL, or with fields of the wrong type."""


def random_mac() -> str:
    """Return a random locally administered unicast MAC (no real NIC has one)."""
    octets = bytearray(secrets.token_bytes(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{octet:02x}" for octet in octets)


@dataclass(frozen=True, slots=True)
class WebsocketSettings:
    """The ``websocket`` section of an OTA answer."""

    url: str
    token: str = ""
    version: int = 1

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read an OTA ``websocket`` section (or our own saved copy).

        The firmware copies every key; an absent or zero ``version`` keeps v1.

        Raises:
            InvalidSettingsError: No URL, or fields of the wrong type.
        """
        if not isinstance(data, dict):
            raise InvalidSettingsError(
                f"websocket settings are not an object: {data!r}"
            )
        url, token = data.get("url"), data.get("token", "")
        version = data.get("version") or 1
        if not isinstance(url, str) or not url:
            raise InvalidSettingsError(f"websocket settings without a URL: {data!r}")
        if not isinstance(token, str):
            raise InvalidSettingsError(f"websocket token is not a string: {token!r}")
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidSettingsError(
                f"websocket version is not a number: {version!r}"
            )
        return cls(url=url, token=token, version=version)

    def to_json(self) -> dict[str, Any]:
        """Return the settings as saved."""
        return {"url": self.url, "token": self.token, "version": self.version}


@dataclass(frozen=True, slots=True)
class DeviceState:
    """The simulated device's identity and its last connection settings.

    Attributes:
        mac: The Device-Id.
        client_id: The Client-Id (Board::GetUuid, a UUID kept in NVS).
        ota_url: The OTA URL the settings came from.
        websocket: The last ``websocket`` section received, if any.
    """

    mac: str
    client_id: str
    ota_url: str = ""
    websocket: WebsocketSettings | None = None

    @classmethod
    def new(cls, mac: str | None = None) -> Self:
        """Return a new identity: the given (or a random) MAC and a fresh Client-Id."""
        return cls(mac=mac or random_mac(), client_id=str(uuid.uuid4()))

    @classmethod
    def from_json(cls, data: Any) -> Self:
        """Read a saved state.

        Raises:
            StateFileError: Not a state of this format.
        """
        if not isinstance(data, dict) or data.get("format") != STATE_FORMAT:
            raise StateFileError("not a state file of the Xiaozhi simulator")
        try:
            mac = normalize_mac(_saved_text(data, "mac"))
            saved = data.get("websocket")
            websocket = None if saved is None else WebsocketSettings.from_json(saved)
        except ValueError as err:
            raise StateFileError(f"invalid state file: {err}") from None
        return cls(
            mac=mac,
            client_id=_saved_text(data, "client_id"),
            ota_url=_saved_text(data, "ota_url", required=False),
            websocket=websocket,
        )

    def to_json(self) -> dict[str, Any]:
        """Return the state as saved."""
        return {
            "format": STATE_FORMAT,
            "mac": self.mac,
            "client_id": self.client_id,
            "ota_url": self.ota_url,
            "websocket": None if self.websocket is None else self.websocket.to_json(),
        }


def _saved_text(data: dict[str, Any], key: str, *, required: bool = True) -> str:
    value = data.get(key, None if required else "")
    if not isinstance(value, str) or (required and not value):
        raise StateFileError(f"invalid state file: bad {key} {value!r}")
    return value


def resolve_identity(
    saved: DeviceState | None, mac: str | None, ota_url: str
) -> DeviceState:
    """Return the device to simulate at ``ota_url``.

    The saved device, unless another MAC is asked for (a new device, with a new
    Client-Id). Saved WebSocket settings of another server are dropped: that server
    paired the device, this one will have to.
    """
    if saved is None or (mac is not None and mac != saved.mac):
        return replace(DeviceState.new(mac), ota_url=ota_url)
    if saved.ota_url != ota_url:
        return replace(saved, ota_url=ota_url, websocket=None)
    return saved


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.tmp")
    # Created owner-only: the file holds the device's token.
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(text)
    temporary.replace(path)


async def load_state(path: Path) -> DeviceState | None:
    """Return the state saved at ``path``, or None when there is none.

    Raises:
        StateFileError: The file is not a state file of the simulator.
        OSError: The file cannot be read.
    """
    text = await asyncio.to_thread(_read, path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError as err:
        raise StateFileError(f"invalid state file: {err}") from None
    return DeviceState.from_json(data)


async def save_state(path: Path, state: DeviceState) -> None:
    """Save ``state`` at ``path`` (atomically, owner-only).

    Raises:
        OSError: The file cannot be written.
    """
    text = json.dumps(state.to_json(), indent=2, ensure_ascii=False) + "\n"
    await asyncio.to_thread(_write, path, text)
