"""What the simulated boards say about themselves, and the MCP tools they serve.

`SimBoard`: the firmware's common tools (McpServer::AddCommonTools) that make
sense without hardware: the device status and the speaker volume, so that Home
Assistant's tool discovery and a "turn it down" request work as with a real
speaker.

`OttoBoard`: the Otto robot (main/boards/otto-robot), the richest tool set of the
firmware: the common tools with a screen, its movement tools with the firmware's
exact schemas (names, types, defaults, ranges; required exactly where there is no
default), a tool that takes it off its Wi-Fi and a user-only one. Descriptions
say what the firmware's say, in our own words; like the firmware's, one is
longer than 1024 characters and one names another tool. Its camera (the
``self.camera.take_photo`` tool) is the device's: `simulator.device.SimCamera`.
"""

from collections.abc import Mapping
from dataclasses import dataclass, field
import json
from typing import Any, Final, TypeIs

from .device import SimTool, ToolCallError

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


def _integer(default: int, minimum: int, maximum: int) -> dict[str, Any]:
    """An integer property as the firmware's Property(..., default, min, max) writes it."""
    return {
        "type": "integer",
        "default": default,
        "minimum": minimum,
        "maximum": maximum,
    }


OTTO_ACTIONS: Final = (
    "walk",
    "turn",
    "jump",
    "swing",
    "moonwalk",
    "bend",
    "shake_leg",
    "updown",
    "whirlwind_leg",
    "sit",
    "showcase",
    "home",
    "hands_up",
    "hands_down",
    "hand_wave",
    "windmill",
    "takeoff",
    "fitness",
    "greeting",
    "shy",
    "radio_calisthenics",
    "magic_circle",
)
_HAND_ACTIONS: Final = frozenset(OTTO_ACTIONS[OTTO_ACTIONS.index("hands_up") :])

_ACTION_DESCRIPTION: Final = (
    "Make the robot perform a movement. action names the movement; give the"
    " parameters it uses: direction (1 forward or left, -1 backward or right, 0 both"
    " sides), steps (1-100), speed (100-3000, smaller is faster), amount (0-170,"
    " how far it moves), arm_swing (0-170). Moving: walk and turn (steps, speed,"
    " direction, arm_swing), jump (steps, speed), swing (steps, speed, amount),"
    " moonwalk (steps, speed, direction, amount), bend and shake_leg (steps, speed,"
    " direction), updown and whirlwind_leg (steps, speed, amount). Poses: sit,"
    " showcase, home. With arm servos only: hands_up and hands_down (speed,"
    " direction), hand_wave (direction), windmill, takeoff and fitness (steps,"
    " speed, amount), greeting and shy (direction, steps), radio_calisthenics,"
    " magic_circle. The movement is queued: the call returns at once."
)
_SEQUENCE_DESCRIPTION: Final = (
    "Program a movement of your own, one servo sequence per call; for more than"
    " five sequences call this tool several times in a row, the robot queues them"
    " and plays them in order. Two modes: moving servos to positions, and"
    " oscillating them. The robot can raise and lower both arms, open and close"
    " both legs, and tilt both feet. Servos: ll is the left leg (0 fully open, 90"
    " neutral, 180 fully closed); rl the right leg (0 fully closed, 90 neutral, 180"
    " fully open); lf the left foot (0 fully up, 90 level, 180 fully down); rf the"
    " right foot (0 fully down, 90 level, 180 fully up); lh the left arm (0 fully"
    " down, 90 level, 180 fully up); rh the right arm (0 fully up, 90 level, 180"
    " fully down). sequence is the JSON text of one object: 'a' is the list of"
    " steps and 'd' an optional pause in milliseconds after the whole sequence."
    " A step either moves: 's' maps servos to angles (0-180), 'v' is the time the"
    " move takes in milliseconds (100-3000, default 1000) and 'd' a pause after it"
    " (default 0); or oscillates: 'osc' holds 'a' (the amplitude of each servo,"
    " 10-90 degrees, default 20), 'o' (the centre angle of each servo, 0-180,"
    " default 90), 'ph' (the phase of each servo in degrees, 0-360, default 0), 'p'"
    " (the period, 100-3000 ms, default 500) and 'c' (how many periods, 0.1-20,"
    " default 5). Careful: while the legs or feet oscillate, one foot must stay at"
    " 90 degrees, or the robot is damaged. After several sequences, bring the robot"
    " back with self.otto.action and action home, in a call of its own, instead of"
    ' resetting it inside a sequence. Example of a move: {"a":[{"s":{"ll":100},'
    '"v":1000}],"d":500}. Example of both arms swinging together:'
    ' {"a":[{"osc":{"a":{"lh":30,"rh":30},"o":{"lh":90,"rh":-90},'
    '"p":500,"c":5.0}}],"d":0}. Example of the legs in turn, like a wave:'
    ' {"a":[{"osc":{"a":{"ll":20,"rl":20},"o":{"ll":90,"rl":-90},'
    '"ph":{"rl":180},"p":600,"c":3.0}}],"d":0}.'
)


@dataclass
class OttoBoard:
    """The Otto robot's state, and the tools its firmware serves.

    Attributes:
        volume: The speaker volume.
        brightness: The screen's backlight.
        theme: The screen's theme.
        has_hands: Arm servos are fitted (the hand actions need them).
        actions: Every movement queued, as the arguments the tool received.
        moving: What ``self.otto.get_status`` says.
        battery: The battery level in percent.
    """

    volume: int = 70
    brightness: int = 80
    theme: str = "light"
    has_hands: bool = True
    actions: list[dict[str, Any]] = field(default_factory=list)
    moving: bool = False
    battery: int = 76
    trims: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            (
                "left_leg",
                "right_leg",
                "left_foot",
                "right_foot",
                "left_hand",
                "right_hand",
            ),
            0,
        )
    )

    def device_status(self) -> dict[str, Any]:
        """Return what ``self.get_device_status`` answers on this board."""
        return {
            "audio_speaker": {"volume": self.volume},
            "screen": {"brightness": self.brightness, "theme": self.theme},
            "battery": {"level": self.battery, "charging": False},
            "network": {"type": "wifi", "ssid": "simulator", "signal": "strong"},
        }

    def _set_percentage(self, arguments: Mapping[str, Any], name: str) -> int:
        value = arguments.get(name)
        if not _is_integer(value):
            raise ToolCallError(f"Missing valid argument: {name}")
        if value > 100:
            raise ToolCallError("Value exceeds maximum allowed: 100")
        if value < 0:
            raise ToolCallError("Value is below minimum allowed: 0")
        return value

    def set_volume(self, arguments: dict[str, Any]) -> bool:
        """Set the speaker volume as the firmware does."""
        self.volume = self._set_percentage(arguments, "volume")
        return True

    def set_brightness(self, arguments: dict[str, Any]) -> bool:
        """Set the backlight as the firmware does."""
        self.brightness = self._set_percentage(arguments, "brightness")
        return True

    def set_theme(self, arguments: dict[str, Any]) -> bool:
        """Set the theme; the firmware knows light and dark."""
        theme = arguments.get("theme")
        if not isinstance(theme, str):
            raise ToolCallError("Missing valid argument: theme")
        self.theme = theme
        return True

    def action(self, arguments: dict[str, Any]) -> bool | str:
        """Queue a movement; a movement the robot cannot do is a successful error text."""
        action = arguments.get("action", "sit")
        if action not in OTTO_ACTIONS:
            return "Error: unknown action. Known actions: " + ", ".join(OTTO_ACTIONS)
        if action in _HAND_ACTIONS and not self.has_hands:
            return "Error: this action needs the arm servos"
        self.actions.append(dict(arguments))
        self.moving = True
        return True

    def stop(self, _arguments: dict[str, Any]) -> bool:
        """Stop at once and stand straight."""
        self.moving = False
        return True

    def set_trim(self, arguments: dict[str, Any]) -> str:
        """Store one servo's trim (the firmware keeps it across reboots)."""
        servo = arguments.get("servo_type", "left_leg")
        value = arguments.get("trim_value", 0)
        if servo not in self.trims:
            return "Error: unknown servo_type"
        self.trims[servo] = value
        return f"Trim of {servo} set to {value} degrees and saved"

    def tools(self) -> list[SimTool]:
        """Return the robot's tools in the firmware's order (common tools first)."""
        return [
            *self._common_tools(),
            *self._motion_tools(),
            SimTool(
                "self.battery.get_level",
                "Battery level and charging state.",
                callback=lambda _a: {"level": self.battery, "charging": False},
            ),
            SimTool(
                "self.otto.get_ip",
                "The robot's Wi-Fi IP address.",
                callback=lambda _a: {"ip": "192.168.1.23", "connected": True},
            ),
            SimTool(
                "self.system.reconfigure_wifi",
                "End the conversation and go into Wi-Fi setup mode. Ask the user to"
                " confirm first.",
            ),
            SimTool("self.reboot", "Reboot the device.", user_only=True),
        ]

    def _common_tools(self) -> list[SimTool]:
        return [
            SimTool(
                "self.get_device_status",
                "The device's current state: speaker, screen, battery and network."
                " Use it to answer questions about them, and before changing one.",
                callback=lambda _arguments: self.device_status(),
            ),
            SimTool(
                "self.audio_speaker.set_volume",
                "Set the speaker volume. When the current volume is not known, call"
                " self.get_device_status first.",
                {"volume": {"type": "integer", "minimum": 0, "maximum": 100}},
                callback=self.set_volume,
            ),
            SimTool(
                "self.screen.set_brightness",
                "Set the brightness of the screen.",
                {"brightness": {"type": "integer", "minimum": 0, "maximum": 100}},
                callback=self.set_brightness,
            ),
            SimTool(
                "self.screen.set_theme",
                "Set the screen's theme: light or dark.",
                {"theme": {"type": "string"}},
                callback=self.set_theme,
            ),
        ]

    def _motion_tools(self) -> list[SimTool]:
        return [
            SimTool(
                "self.otto.action",
                _ACTION_DESCRIPTION,
                {
                    "action": {"type": "string", "default": "sit"},
                    "steps": _integer(3, 1, 100),
                    "speed": _integer(700, 100, 3000),
                    "direction": _integer(1, -1, 1),
                    "amount": _integer(30, 0, 170),
                    "arm_swing": _integer(50, 0, 170),
                },
                callback=self.action,
            ),
            SimTool(
                "self.otto.servo_sequences",
                _SEQUENCE_DESCRIPTION,
                {
                    "sequence": {
                        "type": "string",
                        "default": '{"a":[{"s":{"ll":90,"rl":90},"v":1000}]}',
                    }
                },
                callback=lambda _arguments: True,
            ),
            SimTool(
                "self.otto.stop",
                "Stop every movement at once and stand straight.",
                callback=self.stop,
            ),
            SimTool(
                "self.otto.set_trim",
                "Calibrate one servo: the trim adjusts the robot's standing pose and"
                " is kept for good. servo_type: left_leg, right_leg, left_foot,"
                " right_foot, left_hand or right_hand; trim_value: -50 to 50 degrees.",
                {
                    "servo_type": {"type": "string", "default": "left_leg"},
                    "trim_value": _integer(0, -50, 50),
                },
                callback=self.set_trim,
            ),
            SimTool(
                "self.otto.get_trims",
                "The servos' current trims.",
                callback=lambda _a: dict(self.trims),
            ),
            SimTool(
                "self.otto.get_status",
                "Whether the robot moves: moving or idle.",
                callback=lambda _a: "moving" if self.moving else "idle",
            ),
        ]
