"""The pairing registry: codes, expiry, attempts and bounds."""

import pytest

from custom_components.xiaozhi.server.pairing import (
    MAX_CLAIMS_PER_MAC,
    DeviceIdentity,
    MacClaimedError,
    PairingError,
    PairingFullError,
    PairingRegistry,
)

DEVICE = DeviceIdentity(mac="aa:bb:cc:dd:ee:ff", client_id="uuid-1")


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_same_device_keeps_its_code_until_it_expires() -> None:
    clock = Clock()
    registry = PairingRegistry(ttl=600, clock=clock)
    first = registry.announce(DEVICE)
    assert len(first.code) == 6
    assert first.code.isdigit()
    assert len(first.challenge) == 32
    assert registry.announce(DEVICE) is first
    assert registry.remaining_seconds(first) == 600
    assert registry.next_expiry() == 600
    clock.now += 601
    assert registry.get(DEVICE.mac, DEVICE.client_id) is None
    assert registry.next_expiry() is None
    assert len(registry) == 0
    assert registry.announce(DEVICE) is not first


def test_a_second_claimant_gets_its_own_claim_beside_the_first() -> None:
    registry = PairingRegistry()
    first = registry.announce(DEVICE)
    other = registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id="uuid-2"))
    assert other is not first
    assert other.code != first.code
    assert registry.get(DEVICE.mac, "uuid-1") is first
    assert registry.get(DEVICE.mac, "uuid-2") is other
    assert registry.get(DEVICE.mac, "uuid-3") is None
    assert registry.claims(DEVICE.mac) == (first, other)
    assert (first.mac, first.client_id) == (DEVICE.mac, "uuid-1")


def test_claims_per_mac_are_bounded_and_the_first_keeps_its_claim() -> None:
    clock = Clock()
    registry = PairingRegistry(ttl=10, clock=clock)
    first = registry.announce(DEVICE)
    clock.now += 5
    for n in range(2, MAX_CLAIMS_PER_MAC + 1):
        registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id=f"uuid-{n}"))
    with pytest.raises(MacClaimedError):
        registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id="uuid-x"))
    # Another MAC is not affected; the first claimant keeps its code.
    registry.announce(DeviceIdentity(mac="00:00:00:00:00:01", client_id="a"))
    assert registry.announce(DEVICE) is first
    # The first claim expiring makes room for one more claimant.
    clock.now += 6
    assert registry.get(DEVICE.mac, DEVICE.client_id) is None
    registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id="uuid-x"))


def test_the_code_typed_decides_who_is_paired() -> None:
    registry = PairingRegistry()
    first = registry.announce(DEVICE)
    second = registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id="uuid-2"))
    assert registry.verify(DEVICE.mac, second.code) is second
    # Pairing ends every claim of the MAC.
    assert registry.claims(DEVICE.mac) == ()
    with pytest.raises(PairingError):
        registry.verify(DEVICE.mac, first.code)


def test_wrong_codes_count_per_mac_whoever_claimed_it() -> None:
    registry = PairingRegistry(max_attempts=2)
    first = registry.announce(DEVICE)
    second = registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id="uuid-2"))
    wrong = next(
        f"{n:06d}" for n in range(3) if f"{n:06d}" not in {first.code, second.code}
    )
    with pytest.raises(PairingError):
        registry.verify(DEVICE.mac, wrong)
    with pytest.raises(PairingError) as err:
        registry.verify(DEVICE.mac, wrong)
    assert err.value.reason == "code_expired"
    assert registry.claims(DEVICE.mac) == ()


def test_right_code_is_consumed() -> None:
    registry = PairingRegistry()
    pending = registry.announce(DEVICE)
    spaced = f"{pending.code[:3]} {pending.code[3:]}"
    assert registry.verify(DEVICE.mac, spaced) is pending
    with pytest.raises(PairingError) as err:
        registry.verify(DEVICE.mac, pending.code)
    assert err.value.reason == "code_expired"


def test_wrong_codes_use_up_the_pairing() -> None:
    registry = PairingRegistry(max_attempts=3)
    pending = registry.announce(DEVICE)
    wrong = "000000" if pending.code != "000000" else "111111"
    for _ in range(2):
        with pytest.raises(PairingError) as err:
            registry.verify(DEVICE.mac, wrong)
        assert err.value.reason == "invalid_code"
    with pytest.raises(PairingError) as err:
        registry.verify(DEVICE.mac, wrong)
    assert err.value.reason == "code_expired"
    # Even the right code is useless now.
    with pytest.raises(PairingError):
        registry.verify(DEVICE.mac, pending.code)


def test_unknown_device_has_no_code() -> None:
    with pytest.raises(PairingError) as err:
        PairingRegistry().verify(DEVICE.mac, "123456")
    assert err.value.reason == "code_expired"


def test_pending_pairings_are_bounded_and_expired_ones_make_room() -> None:
    clock = Clock()
    registry = PairingRegistry(max_pending=2, ttl=10, clock=clock)
    registry.announce(DeviceIdentity(mac="00:00:00:00:00:01", client_id="a"))
    registry.announce(DeviceIdentity(mac="00:00:00:00:00:02", client_id="b"))
    with pytest.raises(PairingFullError):
        registry.announce(DeviceIdentity(mac="00:00:00:00:00:03", client_id="c"))
    # A waiting device re-checking in is still answered.
    registry.announce(DeviceIdentity(mac="00:00:00:00:00:01", client_id="a"))
    clock.now += 11
    registry.announce(DeviceIdentity(mac="00:00:00:00:00:03", client_id="c"))
    registry.discard("00:00:00:00:00:03")
    assert len(registry) == 0
