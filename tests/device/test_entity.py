"""How a device is described to the device registry."""

from custom_components.xiaozhi.const import CONF_BOARD, CONF_FIRMWARE_VERSION, CONF_MAC
from custom_components.xiaozhi.device.entity import device_registry_info


def test_an_older_entry_with_control_characters_is_shown_cleaned() -> None:
    info = device_registry_info(
        {
            CONF_MAC: "aa:bb:cc:dd:ee:ff",
            CONF_BOARD: "board\nERROR forged\u202e" + "b" * 100,
            CONF_FIRMWARE_VERSION: "1.0\r\n",
        }
    )
    for text in (info["name"], info["model"], info["sw_version"]):
        assert not any(char in text for char in "\n\r\u202e"), text
    assert len(info["model"]) == 64
    assert info["name"] == f"{info['model']} ddeeff"
    assert info["sw_version"] == "1.0\\x0d\\x0a"


def test_a_device_without_board_or_version() -> None:
    info = device_registry_info({CONF_MAC: "aa:bb:cc:dd:ee:ff"})
    assert info["name"] == "Xiaozhi ddeeff"
    assert info["sw_version"] is None
