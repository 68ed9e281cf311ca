"""Limits on what devices may ask of the server, whatever their transport.

Limits of one transport only live with it (``transport/websocket.py``: send and
close timeouts, the largest WebSocket message).
"""

from dataclasses import dataclass
from typing import Final

# Check-ins and activation polls per client address: a device polls /activate every
# 3 s while its code is shown; this leaves room for several devices behind one NAT.
HTTP_REQUESTS_PER_SECOND: Final = 1.0
HTTP_BURST: Final = 30

# Devices connected at once; one more is refused (SERVER_BUSY). A device has one
# connection at a time, so only a household with many devices (or a broken proxy)
# gets here; a device replacing its own connection is never refused.
MAX_SESSIONS: Final = 32
# Messages a device may send per second, sustained and in a burst (else it is
# closed, RATE_LIMITED). A device sends 17 (60 ms frames) to 50 (20 ms frames)
# audio frames a second plus a few JSON messages; the burst takes frames that
# Wi-Fi held back and delivers at once (4 to 12 s of audio).
# The budget is the device's, not its connection's: reconnecting does not refill it.
MESSAGES_PER_SECOND: Final = 100.0
MESSAGE_BURST: Final = 200
# Connections a device may open, sustained and in a burst (else it is refused,
# RATE_LIMITED). The firmware opens one per conversation; each costs a hello
# and an MCP discovery.
CONNECTIONS_PER_SECOND: Final = 0.5
CONNECTION_BURST: Final = 10
# Refused connections per client address (wrong token, unknown device...):
# once spent, that address's refused handshakes get a plain 429 before any
# upgrade and no log line. Paired devices are never refused for it (they are
# authenticated first), even behind the same address.
REFUSALS_PER_SECOND: Final = 0.2
REFUSAL_BURST: Final = 10
# Log lines about refusals (WebSocket and HTTP, all addresses together); the
# next line logged says how many were left out.
REFUSAL_LOG_LINES_PER_SECOND: Final = 0.1
REFUSAL_LOG_BURST: Final = 5


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """Bounds on device connections of any transport.

    Attributes:
        max_sessions: Devices connected at once; more are refused.
        messages_per_second: Sustained rate of messages one device may send,
            over all its connections.
        message_burst: Messages one device may send at once above that rate.
        connections_per_second: Sustained rate of connections of one device.
        connection_burst: Connections one device may open at once.
        refusals_per_second: Sustained rate of refused connections per address.
        refusal_burst: Refused connections per address at once.
    """

    max_sessions: int = MAX_SESSIONS
    messages_per_second: float = MESSAGES_PER_SECOND
    message_burst: int = MESSAGE_BURST
    connections_per_second: float = CONNECTIONS_PER_SECOND
    connection_burst: int = CONNECTION_BURST
    refusals_per_second: float = REFUSALS_PER_SECOND
    refusal_burst: int = REFUSAL_BURST

    def __post_init__(self) -> None:
        """Refuse limits that would refuse every device.

        Raises:
            ValueError: A limit is not positive.
        """
        limits = (
            self.max_sessions,
            self.messages_per_second,
            self.message_burst,
            self.connections_per_second,
            self.connection_burst,
            self.refusals_per_second,
            self.refusal_burst,
        )
        if any(limit <= 0 for limit in limits):
            raise ValueError(f"connection limits must be positive: {self}")
