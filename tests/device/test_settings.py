"""The device settings controller's reading of the device status."""

from custom_components.xiaozhi.device.settings import parse_device_status


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
