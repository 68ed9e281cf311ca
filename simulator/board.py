"""What the simulated board says about itself, and the MCP tools it serves.

The firmware's common tools (McpServer::AddCommonTools) that make sense without
hardware: the device status and the speaker volume, so that Home Assistant's tool
discovery and a "turn it down" request work as with a real speaker.
"""

from dataclasses import dataclass
import json
from typing import Any, Final, TypeIs

from .device import SimTool

BOARD_NAME: Final = "xiaozhi-simulator"
FIRMWARE_VERSION: Final = "1.9.2"
CHIP_MODEL: Final = "esp32s3"
FLASH_SIZE: Final = 16 * 1024 * 1024


def _is_integer(value: object) -> TypeIs[int]:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass
class SimBoard:
    """The board's state that its tools read and change."""

    volume: int = 70

    def device_status(self) -> dict[str, Any]:
        """Return what ``self.get_device_status`` answers (an excerpt of the firmware's)."""
        return {
            "audio_speaker": {"volume": self.volume},
            "network": {"type": "wifi", "ssid": "simulator", "signal": "strong"},
        }

    def set_volume(self, arguments: dict[str, Any]) -> bool:
        """Set the volume as ``self.audio_speaker.set_volume`` does.

        Raises:
            ValueError: Missing, non-integer or out-of-range volume.
        """
        volume = arguments.get("volume")
        if not _is_integer(volume) or not 0 <= volume <= 100:
            raise ValueError("Missing valid argument: volume")
        self.volume = volume
        return True

    def tools(self) -> list[SimTool]:
        """Return the MCP tools of the board."""
        return [
            SimTool(
                "self.get_device_status",
                "Provides the real-time information of the device, including the"
                " current status of the audio speaker, screen, battery, network,"
                " etc.\nUse this tool for: \n1. Answering questions about current"
                " condition (e.g. what is the current volume of the audio speaker?)"
                "\n2. As the first step to control the device (e.g. turn up / down"
                " the volume of the audio speaker, etc.)",
                callback=lambda _arguments: json.dumps(
                    self.device_status(), separators=(",", ":")
                ),
            ),
            SimTool(
                "self.audio_speaker.set_volume",
                "Set the volume of the audio speaker. If the current volume is"
                " unknown, you must call `self.get_device_status` tool first and"
                " then call this tool.",
                properties={
                    "volume": {"type": "integer", "minimum": 0, "maximum": 100}
                },
                callback=self.set_volume,
            ),
        ]
