"""Pairing of unknown devices by a spoken 6-digit code (pure, no Home Assistant).

An unknown device that checks in gets a code and a challenge; it speaks the code and
polls `/activate`. The person types the code into Home Assistant's discovery flow,
which proves physical access to the device (we cannot verify the eFuse HMAC key the
firmware signs the challenge with). Codes are short-lived, attempts are bounded and
so is the number of pairings waiting at once, so guessing stays hopeless.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
import hmac
import secrets
import time

CODE_TTL_SECONDS = 600.0
MAX_CODE_ATTEMPTS = 5
MAX_PENDING_PAIRINGS = 16


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """What a device tells about itself when it checks in."""

    mac: str
    client_id: str
    board: str = ""
    firmware_version: str = ""
    language: str = ""


@dataclass(slots=True)
class PendingPairing:
    """A code handed to one device and not yet typed in."""

    device: DeviceIdentity
    code: str
    challenge: str
    expires_at: float
    attempts: int = field(default=0)
    # Opens only a pairing session (server/pairing_session.py) until the code is
    # typed, then becomes the device's token.
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))


class PairingError(Exception):
    """The code could not be accepted; `reason` is a config flow error/abort key."""

    def __init__(self, reason: str) -> None:
        """Keep the reason for the flow to show."""
        super().__init__(reason)
        self.reason = reason


class PairingFullError(Exception):
    """Too many pairings are waiting; the device should try again later."""


def new_code() -> str:
    """Return six random digits (the firmware speaks them one by one)."""
    return f"{secrets.randbelow(1_000_000):06d}"


class PairingRegistry:
    """The pairings waiting for a person to type their code."""

    def __init__(
        self,
        *,
        ttl: float = CODE_TTL_SECONDS,
        max_pending: int = MAX_PENDING_PAIRINGS,
        max_attempts: int = MAX_CODE_ATTEMPTS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Set the limits; `clock` is injectable for tests."""
        self._ttl = ttl
        self._max_pending = max_pending
        self._max_attempts = max_attempts
        self._clock = clock
        self._pending: dict[str, PendingPairing] = {}

    def __len__(self) -> int:
        """Return how many pairings are waiting (expired ones excluded)."""
        self._drop_expired()
        return len(self._pending)

    def announce(self, device: DeviceIdentity) -> PendingPairing:
        """Return the device's waiting pairing, making one if it has none.

        The same device keeps its code while it is valid, so the code it speaks does
        not change under the person typing it.
        """
        self._drop_expired()
        pending = self._pending.get(device.mac)
        if pending is not None and pending.device.client_id == device.client_id:
            return pending
        if pending is None and len(self._pending) >= self._max_pending:
            raise PairingFullError
        pending = PendingPairing(
            device=device,
            code=new_code(),
            challenge=secrets.token_hex(16),
            expires_at=self._clock() + self._ttl,
        )
        self._pending[device.mac] = pending
        return pending

    def get(self, mac: str) -> PendingPairing | None:
        """Return the device's valid waiting pairing, if any."""
        self._drop_expired()
        return self._pending.get(mac)

    def verify(self, mac: str, code: str) -> PendingPairing:
        """Check a typed code; consume the pairing when it is right.

        Raises PairingError("invalid_code") for a wrong code while attempts remain,
        PairingError("code_expired") when there is no valid code (expired, used up by
        wrong attempts, or never issued).
        """
        pending = self.get(mac)
        if pending is None:
            raise PairingError("code_expired")
        typed = "".join(code.split())
        if hmac.compare_digest(typed.encode(), pending.code.encode()):
            del self._pending[mac]
            return pending
        pending.attempts += 1
        if pending.attempts >= self._max_attempts:
            del self._pending[mac]
            raise PairingError("code_expired")
        raise PairingError("invalid_code")

    def remaining_seconds(self, pending: PendingPairing) -> float:
        """Return how long the code stays valid."""
        return max(0.0, pending.expires_at - self._clock())

    def discard(self, mac: str) -> None:
        """Forget the device's waiting pairing."""
        self._pending.pop(mac, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for mac in [mac for mac, p in self._pending.items() if p.expires_at <= now]:
            del self._pending[mac]
