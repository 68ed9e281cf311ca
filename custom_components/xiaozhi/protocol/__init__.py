"""The Xiaozhi wire protocol: messages, framing, audio codecs, MCP, pacing.

Nothing here imports Home Assistant or the OpenAI SDK, and modules import only
each other (tests/test_architecture.py enforces both): the simulator, the
benchmarks and other programs use this package without Home Assistant.
"""


class ProtocolError(ValueError):
    """Base class of the errors of the protocol's framing and message model."""
