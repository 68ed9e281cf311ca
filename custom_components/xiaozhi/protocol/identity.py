"""How a device names itself and proves who it is: its MAC and its token.

Pure code: the OTA check-in, the WebSocket handshake and the simulator read them
the same way.
"""

import re
from typing import Final

_MAC_RE: Final = re.compile(r"^[0-9a-f]{2}([:-]?)[0-9a-f]{2}(\1[0-9a-f]{2}){4}$")


def normalize_mac(value: str) -> str:
    """Return a MAC as lowercase ``aa:bb:cc:dd:ee:ff`` (as the firmware sends it).

    Accepts colons, dashes or no separators, in either case.

    Raises:
        ValueError: Not a MAC address.
    """
    mac = value.strip().lower()
    if not _MAC_RE.match(mac):
        raise ValueError(f"not a MAC address: {value!r}")
    digits = re.sub(r"[^0-9a-f]", "", mac)
    return ":".join(digits[i : i + 2] for i in range(0, 12, 2))


def bearer_token(value: str) -> str:
    """Return the token of an Authorization value; the ``Bearer`` prefix is optional.

    The firmware omits the prefix when the token contains a space.
    """
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() == "bearer":
        return rest.strip()
    return value.strip()
