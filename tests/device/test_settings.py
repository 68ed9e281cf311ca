"""The device settings controller's reading of the device status."""

import json

from hypothesis import given, strategies as st

from custom_components.xiaozhi.device.settings import (
    MAX_VALUE,
    MIN_VALUE,
    parse_device_status,
    read_device_status,
)
from tests.helpers.fuzzing import fuzz


def test_parse_device_status() -> None:
    assert parse_device_status(
        '{"audio_speaker":{"volume":70},"screen":{"brightness":75,"theme":"dark"},'
        '"battery":{"level":80,"charging":false},"network":{"type":"wifi"}}'
    ) == {"volume": 70, "screen_brightness": 75}
    assert parse_device_status('{"audio_speaker":{},"screen":{}}') == {}
    assert parse_device_status('{"audio_speaker":{"volume":69.6}}') == {"volume": 70}
    assert parse_device_status('{"audio_speaker":{"volume":true}}') == {}
    assert parse_device_status('{"audio_speaker":{"volume":"70"}}') == {}
    assert parse_device_status('{"audio_speaker":{"volume":NaN}}') == {}
    assert parse_device_status('{"audio_speaker":[70]}') == {}
    assert parse_device_status("[1, 2]") == {}
    assert parse_device_status("true") == {}
    assert parse_device_status("") == {}
    assert parse_device_status("not json") == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=8), children, max_size=3)
    ),
    max_leaves=10,
)


@fuzz
@given(json_values, json_values)
def test_any_reported_status_gives_levels_in_range_or_nothing(
    volume: object, brightness: object
) -> None:
    text = json.dumps(
        {"audio_speaker": {"volume": volume}, "screen": {"brightness": brightness}}
    )
    status = read_device_status(text)
    for key, value in status.values.items():
        assert type(value) is int
        assert MIN_VALUE <= value <= MAX_VALUE
        assert key not in status.refused
    assert set(status.values) | set(status.refused) == {"volume", "screen_brightness"}
    for shown in status.refused.values():
        assert "\n" not in shown
        assert len(shown) <= 64 + 30
