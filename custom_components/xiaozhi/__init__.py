"""The Xiaozhi integration: Home Assistant as the server for Xiaozhi voice devices.

This package holds two kinds of code. The Home Assistant integration proper
(``integration.py``, the platforms, ``device/``, ``server/``, ``transport/``,
``voice/``, ``provider/``), and the device protocol (``protocol/``, ``sentences/``),
which imports neither Home Assistant nor the OpenAI SDK. HACS ships only this
folder, so the protocol code lives here, and the simulator, the benchmarks and
other programs import it without Home Assistant installed. That is why this
module imports nothing: Home Assistant's entry points are looked up in
``integration.py`` when Home Assistant asks for them (PEP 562 ``__getattr__``;
its loader only uses ``hasattr``/``getattr`` on the integration's module).

Inside a running Home Assistant, ``integration.py`` is imported right away all
the same: the loader imports this package in its import executor, and the first
``hasattr`` comes later, from the event loop, where importing the integration
(PyAV, the device server) would block it.
"""

import sys
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from .integration import (
        CONFIG_SCHEMA as CONFIG_SCHEMA,
        async_migrate_entry as async_migrate_entry,
        async_remove_entry as async_remove_entry,
        async_setup as async_setup,
        async_setup_entry as async_setup_entry,
        async_unload_entry as async_unload_entry,
    )

# What Home Assistant looks up on an integration's module (and we define).
ENTRY_POINTS: Final = frozenset(
    {
        "CONFIG_SCHEMA",
        "async_setup",
        "async_setup_entry",
        "async_unload_entry",
        "async_remove_entry",
        "async_migrate_entry",
    }
)


def __getattr__(name: str) -> Any:
    """Return one of Home Assistant's entry points, importing the integration."""
    if name in ENTRY_POINTS:
        from . import integration

        return getattr(integration, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if "homeassistant.core" in sys.modules:
    from . import integration as integration
