"""Texts the device shows or speaks, in its own language."""

import pytest

from custom_components.xiaozhi.device.messages import device_message, language_family


@pytest.mark.parametrize(
    ("language", "family"),
    [
        ("zh-CN", "zh"),
        ("zh_TW", "zh"),
        ("en-US", "en"),
        ("", "en"),
        (None, "en"),
        ("-", "en"),
    ],
)
def test_language_family(language: str | None, family: str) -> None:
    assert language_family(language) == family


def test_device_message_falls_back_to_english() -> None:
    assert "Home Assistant" in device_message("activation", "zh-CN")
    assert device_message("activation", "zh-CN").startswith("请")
    assert device_message("activation", "fr-FR") == device_message("activation", "en")
