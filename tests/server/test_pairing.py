"""The pairing registry: codes, expiry, attempts and bounds."""

import pytest

from custom_components.xiaozhi.server.pairing import (
    DeviceIdentity,
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
    clock.now += 601
    assert registry.get(DEVICE.mac) is None
    assert len(registry) == 0
    assert registry.announce(DEVICE) is not first


def test_new_client_id_gets_a_new_code() -> None:
    registry = PairingRegistry()
    first = registry.announce(DEVICE)
    other = registry.announce(DeviceIdentity(mac=DEVICE.mac, client_id="uuid-2"))
    assert other is not first
    assert registry.get(DEVICE.mac) is other


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
