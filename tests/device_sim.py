"""The simulated Xiaozhi device of the tests: re-exported from ``simulator.device``.

The device lives in the command-line simulator's package (``simulator/``), so the
tests and ``scripts/simulate-device`` exercise the same code.
"""

from simulator.device import (
    DEFAULT_CLIENT_ID,
    DEFAULT_MAC,
    FIRMWARE_TOOLS_PAGE_BYTES,
    ChannelClosedError,
    DeviceObserver,
    SimTool,
    SimulatedDevice,
    ToolCallback,
    firmware_result_text,
)

__all__ = [
    "DEFAULT_CLIENT_ID",
    "DEFAULT_MAC",
    "FIRMWARE_TOOLS_PAGE_BYTES",
    "ChannelClosedError",
    "DeviceObserver",
    "SimTool",
    "SimulatedDevice",
    "ToolCallback",
    "firmware_result_text",
]
