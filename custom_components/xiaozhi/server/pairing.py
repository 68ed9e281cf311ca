"""Pairing of unknown devices by a spoken 6-digit code (pure, no Home Assistant).

An unknown device that checks in gets a code and a challenge; it speaks the code and
polls `/activate`. The person types the code into Home Assistant's discovery flow,
which proves physical access to the device (we cannot verify the eFuse HMAC key the
firmware signs the challenge with). Codes are short-lived, attempts are bounded and
so is the number of pairings waiting at once, so guessing stays hopeless.

A claim belongs to one (MAC, Client-Id) pair. A MAC is public (stickers, the
LAN), so a second claimant of the same MAC (someone spoofing it, or the device
after erasing its flash) gets a claim of its own beside the first, never in its
place: the first claimant's code still pairs it and its `/activate` poll still
waits. At most three claims wait per MAC; a fourth claimant is refused until one
expires (dropping the oldest instead would let three check-ins evict the real
device). The code typed decides which claimant is paired.

Each claim also carries a token, issued with the code: it opens only a pairing
session (``pairing_session.py``) for clients that connect before they are
paired, and it becomes the device's token when the code is typed.
"""

from collections.abc import Callable
from dataclasses import dataclass, field
import hmac
import secrets
import time

CODE_TTL_SECONDS = 600.0
MAX_CODE_ATTEMPTS = 5
MAX_PENDING_PAIRINGS = 16
MAX_CLAIMS_PER_MAC = 3


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
    """A claim: a code handed to one (MAC, Client-Id) pair and not yet typed in.

    Attributes:
        device: Who claimed (its ``mac`` and ``client_id`` key the claim).
        code: The six digits the device speaks.
        challenge: What the firmware signs when it polls ``/activate``.
        expires_at: When the code stops working (the registry's clock).
        token: Opens only a pairing session (server/pairing_session.py) until
            the code is typed, then becomes the device's token.
    """

    device: DeviceIdentity
    code: str
    challenge: str
    expires_at: float
    token: str = field(default_factory=lambda: secrets.token_urlsafe(32))

    @property
    def mac(self) -> str:
        """Return the claimed MAC."""
        return self.device.mac

    @property
    def client_id(self) -> str:
        """Return the claimant's Client-Id."""
        return self.device.client_id


class PairingError(Exception):
    """The code could not be accepted; `reason` is a config flow error/abort key."""

    def __init__(self, reason: str) -> None:
        """Keep the reason for the flow to show."""
        super().__init__(reason)
        self.reason = reason


class PairingFullError(Exception):
    """Too many pairings are waiting; the device should try again later."""


class MacClaimedError(PairingFullError):
    """Too many claimants wait for this MAC; the device should try again later."""


def new_code() -> str:
    """Return six random digits (the firmware speaks them one by one)."""
    return f"{secrets.randbelow(1_000_000):06d}"


class PairingRegistry:
    """The claims waiting for a person to type their code."""

    def __init__(
        self,
        *,
        ttl: float = CODE_TTL_SECONDS,
        max_pending: int = MAX_PENDING_PAIRINGS,
        max_attempts: int = MAX_CODE_ATTEMPTS,
        max_claims_per_mac: int = MAX_CLAIMS_PER_MAC,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """Set the limits; `clock` is injectable for tests."""
        self._ttl = ttl
        self._max_pending = max_pending
        self._max_attempts = max_attempts
        self._max_claims = max_claims_per_mac
        self._clock = clock
        # The claims of each MAC, oldest first; the wrong codes typed for it.
        self._claims: dict[str, list[PendingPairing]] = {}
        self._attempts: dict[str, int] = {}

    def __len__(self) -> int:
        """Return how many claims are waiting (expired ones excluded)."""
        self._drop_expired()
        return sum(len(claims) for claims in self._claims.values())

    def announce(self, device: DeviceIdentity) -> PendingPairing:
        """Return the device's waiting claim, making one if it has none.

        The same (MAC, Client-Id) keeps its code while it is valid, so the code it
        speaks does not change under the person typing it; another Client-Id gets
        a claim of its own.

        Raises:
            MacClaimedError: The MAC has ``max_claims_per_mac`` claims already.
            PairingFullError: ``max_pending`` claims wait already.
        """
        self._drop_expired()
        claims = self._claims.get(device.mac, [])
        for claim in claims:
            if claim.client_id == device.client_id:
                return claim
        if len(claims) >= self._max_claims:
            raise MacClaimedError
        if len(self) >= self._max_pending:
            raise PairingFullError
        taken = {claim.code for claim in claims}
        code = new_code()
        while code in taken:
            code = new_code()
        claim = PendingPairing(
            device=device,
            code=code,
            challenge=secrets.token_hex(16),
            expires_at=self._clock() + self._ttl,
        )
        self._claims.setdefault(device.mac, []).append(claim)
        return claim

    def get(self, mac: str, client_id: str) -> PendingPairing | None:
        """Return the valid claim of this (MAC, Client-Id), if any."""
        for claim in self.claims(mac):
            if claim.client_id == client_id:
                return claim
        return None

    def claims(self, mac: str) -> tuple[PendingPairing, ...]:
        """Return the valid claims of a MAC, oldest first."""
        self._drop_expired()
        return tuple(self._claims.get(mac, ()))

    def verify(self, mac: str, code: str) -> PendingPairing:
        """Check a typed code against the MAC's claims; the right one pairs.

        A right code returns its claim and ends every claim of the MAC (the device
        is paired). Wrong codes count per MAC, whoever claimed it.

        Raises:
            PairingError: ``invalid_code`` for a wrong code while attempts remain,
                ``code_expired`` when there is no valid code (expired, used up by
                wrong attempts, or never issued).
        """
        claims = self.claims(mac)
        if not claims:
            raise PairingError("code_expired")
        typed = "".join(code.split()).encode()
        matches = [
            claim for claim in claims if hmac.compare_digest(typed, claim.code.encode())
        ]
        if matches:
            self.discard(mac)
            return matches[0]
        attempts = self._attempts[mac] = self._attempts.get(mac, 0) + 1
        if attempts >= self._max_attempts:
            self.discard(mac)
            raise PairingError("code_expired")
        raise PairingError("invalid_code")

    def remaining_seconds(self, pending: PendingPairing) -> float:
        """Return how long the code stays valid."""
        return max(0.0, pending.expires_at - self._clock())

    def next_expiry(self) -> float | None:
        """Return the seconds until the next claim expires (None without claims)."""
        self._drop_expired()
        ends = [
            claim.expires_at for claims in self._claims.values() for claim in claims
        ]
        return max(0.0, min(ends) - self._clock()) if ends else None

    def discard(self, mac: str) -> None:
        """Forget every claim of the MAC."""
        self._claims.pop(mac, None)
        self._attempts.pop(mac, None)

    def _drop_expired(self) -> None:
        now = self._clock()
        for mac in list(self._claims):
            valid = [claim for claim in self._claims[mac] if claim.expires_at > now]
            if valid:
                self._claims[mac] = valid
            else:
                self.discard(mac)
